//! Connecting to NATS with the options the engine supports: credentials
//! file, user and password, token, TLS with a CA file; reconnecting with
//! back-off (async-nats's own); and saying in the logs when the link drops
//! and comes back.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// How to reach NATS.
#[derive(Debug, Clone, Default)]
pub(crate) struct NatsOptions {
    /// `nats://host:4222` (several, comma-separated, for a cluster).
    pub(crate) url: String,
    /// A `.creds` file (JWT + nkey seed).
    pub(crate) creds: Option<PathBuf>,
    /// User name (with `password`).
    pub(crate) user: Option<String>,
    /// Password (with `user`).
    pub(crate) password: Option<String>,
    /// Token authentication.
    pub(crate) token: Option<String>,
    /// CA certificate (PEM) to verify a TLS NATS server; implies TLS.
    pub(crate) tls_ca: Option<PathBuf>,
}

/// Whether the link to NATS is up, as health checks and `/readyz` see it.
/// Set by the connection's event callback; `Relaxed`, since it guards no
/// data and a reader a moment late is fine.
#[derive(Debug, Default)]
pub(crate) struct LinkState {
    up: AtomicBool,
}

impl LinkState {
    /// Whether the connection is up right now.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// Connects, naming this program `name` on the server (it shows in
/// `nats server report connections`).
///
/// # Errors
/// NATS cannot be reached, or refuses the credentials.
pub(crate) async fn connect(
    options: &NatsOptions,
    name: &str,
) -> Result<(async_nats::Client, Arc<LinkState>)> {
    let link = Arc::new(LinkState::default());
    let events = Arc::clone(&link);
    let mut connect = async_nats::ConnectOptions::new()
        .name(name)
        // Keep trying for ever, with async-nats's growing back-off: a farm
        // whose NATS restarts must come back by itself.
        .max_reconnects(None)
        .event_callback(move |event| {
            let events = Arc::clone(&events);
            async move {
                match event {
                    async_nats::Event::Connected => {
                        events.up.store(true, Ordering::Relaxed);
                        tracing::info!("connected to NATS");
                    }
                    async_nats::Event::Disconnected => {
                        events.up.store(false, Ordering::Relaxed);
                        tracing::warn!("lost the connection to NATS; reconnecting");
                    }
                    other => tracing::info!(event = %other, "NATS"),
                }
            }
        });
    if let Some(path) = &options.creds {
        connect = connect
            .credentials_file(path)
            .await
            .map_err(|e| Error::Remote(format!("--nats-creds {}: {e}", path.display())))?;
    }
    if let (Some(user), Some(password)) = (&options.user, &options.password) {
        connect = connect.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &options.token {
        connect = connect.token(token.clone());
    }
    if let Some(ca) = &options.tls_ca {
        connect = connect.add_root_certificates(ca.clone()).require_tls(true);
    }
    let client = connect
        .connect(options.url.as_str())
        .await
        .map_err(|e| Error::Remote(format!("cannot connect to NATS at {}: {e}", options.url)))?;
    link.up.store(true, Ordering::Relaxed);
    Ok((client, link))
}
