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
    /// The farm key file (`--farm-key`): every message between gateways and
    /// hosts is signed with it, and unsigned ones are dropped.
    pub(crate) farm_key: Option<PathBuf>,
}

/// Which side of the farm a connection is: each has its own reply inbox
/// prefix, so NATS permissions can keep one side out of the other's
/// replies (docs/WORKER_HOSTS.md, "NATS permissions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Gateway,
    Host,
}

impl Role {
    /// The prefix of this side's reply subjects (JetStream API replies and
    /// pulled messages come back on them).
    pub(crate) fn inbox_prefix(self) -> &'static str {
        match self {
            Role::Gateway => "_INBOX_TC_GATEWAY",
            Role::Host => "_INBOX_TC_HOST",
        }
    }
}

/// How often a repeated connection event (a reconnect attempt failing, a
/// client error) may be logged: the first one at once, then a summary at
/// most this often, so an outage is a few lines, not one per attempt.
const REPEAT_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether the link to NATS is up, as health checks and `/readyz` see it.
/// Set by the connection's event callback; `Relaxed`, since it guards no
/// data and a reader a moment late is fine.
#[derive(Debug)]
pub(crate) struct LinkState {
    up: AtomicBool,
    /// The URL, for messages that say which link is down.
    pub(crate) url: String,
    /// When the link last came up (or went down), for "it has been stable
    /// for a while" judgements; behind a mutex, read rarely.
    changed: std::sync::Mutex<std::time::Instant>,
    /// Repeated events not logged yet, and when one was last logged.
    repeats: std::sync::Mutex<(u64, Option<std::time::Instant>)>,
}

impl LinkState {
    fn new(url: &str) -> LinkState {
        LinkState {
            up: AtomicBool::new(false),
            url: url.to_string(),
            changed: std::sync::Mutex::new(std::time::Instant::now()),
            repeats: std::sync::Mutex::new((0, None)),
        }
    }

    /// Whether the connection is up right now.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// How long the link has been up without a break (zero while down).
    pub(crate) fn up_for(&self) -> std::time::Duration {
        if !self.is_up() {
            return std::time::Duration::ZERO;
        }
        self.changed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).elapsed()
    }

    /// How long the link has been down (zero while up).
    pub(crate) fn down_for(&self) -> std::time::Duration {
        if self.is_up() {
            return std::time::Duration::ZERO;
        }
        self.changed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).elapsed()
    }

    fn set(&self, up: bool) {
        let was = self.up.swap(up, Ordering::Relaxed);
        if was != up {
            *self.changed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                std::time::Instant::now();
        }
    }

    /// Logs a repeated event the first time and then at most every
    /// [`REPEAT_LOG_EVERY`], with how many were not logged in between.
    fn log_repeated(&self, event: &async_nats::Event) {
        let mut repeats = self.repeats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = repeats.1.is_none_or(|last| last.elapsed() >= REPEAT_LOG_EVERY);
        if due {
            tracing::info!(event = %event, similar_not_logged = repeats.0, "NATS");
            *repeats = (0, Some(std::time::Instant::now()));
        } else {
            repeats.0 += 1;
        }
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
    role: Role,
) -> Result<(async_nats::Client, Arc<LinkState>)> {
    let link = Arc::new(LinkState::new(&options.url));
    let events = Arc::clone(&link);
    let mut connect = async_nats::ConnectOptions::new()
        .name(name)
        .custom_inbox_prefix(role.inbox_prefix())
        // Keep trying for ever, with async-nats's growing back-off: a farm
        // whose NATS restarts must come back by itself.
        .max_reconnects(None)
        .event_callback(move |event| {
            let events = Arc::clone(&events);
            async move {
                // One line when the link drops and one when it is back;
                // anything else that repeats is rate-limited.
                match event {
                    async_nats::Event::Connected => {
                        let down_for = events.changed.lock().map(|t| t.elapsed()).unwrap_or_default();
                        events.set(true);
                        tracing::info!(url = %events.url, down_s = down_for.as_secs_f64(), "connected to NATS again");
                    }
                    async_nats::Event::Disconnected => {
                        events.set(false);
                        tracing::warn!(url = %events.url, "lost the connection to NATS; reconnecting");
                    }
                    other => events.log_repeated(&other),
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
    link.set(true);
    Ok((client, link))
}
