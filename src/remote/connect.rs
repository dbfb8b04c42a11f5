//! Connecting to NATS with the options the engine supports: credentials
//! file, user and password, token, TLS with a CA file; reconnecting with
//! back-off (async-nats's own); and saying in the logs when the link drops
//! and comes back. What is not async-nats's (the options, the link's state
//! that `stats` reads) is built without the `nats` feature too.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(feature = "nats")]
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

/// The URL schemes async-nats connects with.
const NATS_SCHEMES: [&str; 4] = ["nats", "tls", "ws", "wss"];

impl NatsOptions {
    /// Checks what can be checked before anything starts: each `--nats`
    /// address has a NATS scheme (or none), and the `--farm-key` file is a
    /// usable key. A setting that cannot work stops the start (exit 2)
    /// before any worker is spawned or NATS is asked.
    ///
    /// # Errors
    /// [`Error::Config`] naming the flag.
    pub(crate) fn check(&self) -> Result<()> {
        for address in self.url.split(',').map(str::trim) {
            if address.is_empty() {
                return Err(Error::Config(format!(
                    "--nats {:?}: an address is empty; give nats://HOST:PORT (several separated by commas)",
                    self.url
                )));
            }
            if let Some((scheme, _)) = address.split_once("://") {
                if !NATS_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
                    return Err(Error::Config(format!(
                        "--nats {address}: {scheme}:// is not a NATS address; give nats://HOST:PORT \
                         (nats-server's client port, 4222 by default), or tls://, ws://, wss://"
                    )));
                }
            }
        }
        if let Some(path) = &self.farm_key {
            crate::remote::envelope::FarmKey::from_file(path)?;
        }
        Ok(())
    }
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
    /// "gateway" or "worker host", for messages.
    role_name: &'static str,
    up: AtomicBool,
    /// The URL, for messages that say which link is down.
    pub(crate) url: String,
    /// When the link last came up (or went down), for "it has been stable
    /// for a while" judgements; behind a mutex, read rarely.
    changed: std::sync::Mutex<std::time::Instant>,
    /// Repeated events not logged yet, and when one was last logged.
    repeats: std::sync::Mutex<(u64, Option<std::time::Instant>)>,
    /// Whether the link has ever dropped (so "connected again" is said
    /// only after a loss, not at the first connect).
    ever_lost: AtomicBool,
    /// The last "Permissions Violation" NATS sent this connection, and how
    /// many came since one was logged: a user without the permissions its
    /// side needs (e.g. the gateways' and hosts' users swapped) shows only
    /// as requests that time out, so it is said, and repeated in errors.
    refused: std::sync::Mutex<(Option<String>, u64, Option<std::time::Instant>)>,
    /// Woken when NATS refuses this side its own reply inbox: then no
    /// JetStream call can ever be answered, and a start fails at once
    /// instead of after the JetStream timeout.
    inbox_refused: tokio::sync::Notify,
    role: Role,
}

impl LinkState {
    fn new(url: &str, role: Role) -> LinkState {
        LinkState {
            role_name: match role {
                Role::Gateway => "gateway",
                Role::Host => "worker host",
            },
            up: AtomicBool::new(false),
            url: url.to_string(),
            changed: std::sync::Mutex::new(std::time::Instant::now()),
            repeats: std::sync::Mutex::new((0, None)),
            ever_lost: AtomicBool::new(false),
            refused: std::sync::Mutex::new((None, 0, None)),
            inbox_refused: tokio::sync::Notify::new(),
            role,
        }
    }

    /// Runs `setup` (the JetStream calls of a start) unless NATS refuses
    /// this side its reply inbox first, and explains a failure with
    /// [`LinkState::explain`].
    ///
    /// # Errors
    /// `setup`'s error, or the refusal.
    pub(crate) async fn set_up<T>(&self, setup: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let result = tokio::select! {
            result = setup => result,
            () = self.inbox_refused.notified() => Err(Error::Remote(format!(
                "NATS does not let this {} receive replies on {}.>", self.role_name, self.role.inbox_prefix()
            ))),
        };
        result.map_err(|e| self.explain(e))
    }

    /// The last permission NATS refused this connection, if any.
    pub(crate) fn permission_refused(&self) -> Option<String> {
        self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.clone()
    }

    /// `error`, with the permission NATS refused if there was one: then
    /// that, not a missing JetStream, is the likely cause.
    pub(crate) fn explain(&self, error: Error) -> Error {
        match self.permission_refused() {
            // The refusal is the cause; the "is JetStream on?" guess is not.
            Some(refused) => Error::Remote(format!(
                "NATS refused this connection a permission ({refused}): the NATS user given here lacks what \
                 a {} needs (were the gateways' and hosts' users swapped? docs/WORKER_HOSTS.md, \"NATS \
                 permissions\"); what failed: {}",
                self.role_name,
                error.to_string().replace(crate::remote::NO_JETSTREAM_HINT, "")
            )),
            None => error,
        }
    }

    /// Notes and (rate-limited) logs a permission NATS refused.
    fn note_refusal(&self, description: &str) {
        let mut refused = self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        refused.0 = Some(description.chars().take(300).collect());
        // Woken after the refusal is stored: the start's error repeats it.
        if description.contains(self.role.inbox_prefix()) {
            self.inbox_refused.notify_one();
        }
        if refused.2.is_none_or(|last| last.elapsed() >= REPEAT_LOG_EVERY) {
            tracing::warn!(
                similar_not_logged = refused.1,
                "NATS refused a permission: {description}; the NATS user given to this {} lacks a permission \
                 its side needs (docs/WORKER_HOSTS.md, \"NATS permissions\")",
                self.role_name
            );
            refused.1 = 0;
            refused.2 = Some(std::time::Instant::now());
        } else {
            refused.1 += 1;
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
    #[cfg(feature = "nats")]
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

/// The longest pause between two tries to reconnect.
///
/// async-nats doubles its pause from 1 ms up to 4 s. Capped at 1 s, every
/// member of a farm is back within about a second of its broker, so a
/// gateway heard again soon after a host is back is not taken for dead
/// (hosts wait `GATEWAY_GONE_AFTER` for that) — at one try a second per
/// client against a broker that is down, a load nobody notices.
const RECONNECT_DELAY_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// The pause before reconnect try number `attempts` (from 1): none for the
/// first, then doubling from 2 ms up to [`RECONNECT_DELAY_MAX`].
fn reconnect_delay(attempts: usize) -> std::time::Duration {
    let exp = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX).min(20);
    if attempts <= 1 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::from_millis(2u64.pow(exp)).min(RECONNECT_DELAY_MAX)
}

/// Connects, naming this program `name` on the server (it shows in
/// `nats server report connections`).
///
/// # Errors
/// NATS cannot be reached, or refuses the credentials.
#[cfg(feature = "nats")]
pub(crate) async fn connect(
    options: &NatsOptions,
    name: &str,
    role: Role,
) -> Result<(async_nats::Client, Arc<LinkState>)> {
    let link = Arc::new(LinkState::new(&options.url, role));
    let events = Arc::clone(&link);
    let mut connect = async_nats::ConnectOptions::new()
        .name(name)
        .custom_inbox_prefix(role.inbox_prefix())
        // Keep trying for ever: a farm whose NATS restarts must come back by
        // itself.
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let events = Arc::clone(&events);
            async move {
                // One line when the link drops and one when it is back;
                // anything else that repeats is rate-limited.
                match event {
                    async_nats::Event::Connected => {
                        let down_for = events.changed.lock().map(|t| t.elapsed()).unwrap_or_default();
                        events.set(true);
                        if events.ever_lost.load(Ordering::Relaxed) {
                            tracing::info!(url = %events.url, down_s = down_for.as_secs_f64(), "connected to NATS again");
                        } else {
                            tracing::info!(url = %events.url, "connected to NATS");
                        }
                    }
                    async_nats::Event::Disconnected => {
                        events.set(false);
                        events.ever_lost.store(true, Ordering::Relaxed);
                        tracing::warn!(url = %events.url, "lost the connection to NATS; reconnecting");
                    }
                    async_nats::Event::ServerError(async_nats::ServerError::Other(description))
                        if description.to_ascii_lowercase().contains("permissions violation") =>
                    {
                        events.note_refusal(&description);
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
    let client = connect.connect(options.url.as_str()).await.map_err(|e| {
        let hint = match e.kind() {
            async_nats::ConnectErrorKind::Io => {
                " (nothing accepts connections there: start nats-server with JetStream first, \
                 nats-server -js, or give --nats its address)"
            }
            async_nats::ConnectErrorKind::TimedOut => {
                " (something accepted the connection but did not greet as a NATS server does: is this \
                 nats-server's client port, 4222 by default, and not a ThreadCenter or HTTP port?)"
            }
            _ => "",
        };
        Error::Remote(format!("cannot connect to NATS at {}: {e}{hint}", options.url))
    })?;
    link.set(true);
    Ok((client, link))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_pauses_double_and_never_pass_a_second() {
        assert_eq!(reconnect_delay(1), std::time::Duration::ZERO, "the first try at once");
        assert_eq!(reconnect_delay(2), std::time::Duration::from_millis(2));
        assert_eq!(reconnect_delay(3), std::time::Duration::from_millis(4));
        for attempts in [11, 12, 100, usize::MAX] {
            assert_eq!(reconnect_delay(attempts), RECONNECT_DELAY_MAX, "try {attempts}");
        }
    }
}
