//! **Command line** — the binaries' flags (clap), and logging set-up.
//!
//! [`server`] defines `tc-server`'s flags and runs the server from them;
//! [`client`] defines `tc-client`'s flags only: the client side reads them
//! ([`crate::client::bench::options`]) and runs them ([`crate::client::run()`]).

pub mod client;
pub(crate) mod metrics;
pub(crate) mod nats;
pub(crate) mod pool;
pub mod server;
#[cfg(feature = "nats")]
pub mod worker;

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines look (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One human-readable line per event, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors (Loki, Elasticsearch,
    /// `jq`): `{"timestamp","level","fields":{"message",...},"target"}`.
    Json,
}

/// Sets up logging to stderr. `--log-level` wins; otherwise `RUST_LOG`;
/// otherwise `info`. Accepts a level (`debug`) or levels by target
/// (`threadcenter=debug,warn`), as `RUST_LOG` does; not `RUST_LOG`'s span
/// and field filters, whose matching would bring a regex engine into every
/// build.
///
/// # Errors
/// When the level text cannot be parsed.
pub(crate) fn init_logging(level: Option<&str>, format: LogFormat) -> crate::Result<()> {
    // async-nats logs every connection event itself, at info; ours say the
    // same once (and rate-limit repeats), so at the plain levels its own are
    // kept to warnings. A filter (`async_nats=debug`) or debug/trace shows all.
    let quiet_nats = |level: &str| match level {
        "error" | "warn" | "info" => format!("{level},async_nats=warn"),
        other => other.to_string(),
    };
    let filter: Targets = match level {
        Some(level) => quiet_nats(level).parse().map_err(|e| {
            crate::Error::Usage(format!(
                "--log-level {level:?} is not a valid level or filter ({e}); give error, warn, info, debug, \
                 trace, or levels by target such as threadcenter=debug,warn"
            ))
        })?,
        // A RUST_LOG that cannot be read is left aside, as before.
        None => std::env::var("RUST_LOG")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| quiet_nats("info").parse().unwrap_or_default()),
    };
    // The builder's own ceiling (INFO unless told) would cut debug and trace
    // before the filter sees them: the filter alone decides.
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).finish().with(filter).init(),
        // The JSON lines carry the thread name too: "worker-3-driver" or
        // "acceptor" says where an event happened.
        LogFormat::Json => builder.json().with_thread_names(true).finish().with(filter).init(),
    }
    Ok(())
}

/// The exit code for an error a binary ends with: the library's
/// [`crate::Error::exit_code`] when the error (or one of its causes) is the
/// library's, otherwise [`crate::error::EXIT_FAILED`].
pub fn exit_code_of(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<crate::Error>())
        .map_or(crate::error::EXIT_FAILED, crate::Error::exit_code)
}

/// The exit code after a second stop signal (128 + SIGINT, as shells use).
pub(crate) const EXIT_ON_SECOND_SIGNAL: i32 = 130;

/// Calls `first` on the first SIGINT/SIGTERM (a clean stop begins); a
/// second one exits at once, for an operator who will not wait for the
/// drain (whatever is in flight is then lost, which is what they asked).
///
/// # Errors
/// The handler cannot be installed.
pub(crate) fn on_stop_signals(first: impl Fn() + Send + 'static) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stopping = AtomicBool::new(false);
    ctrlc::set_handler(move || {
        // SeqCst: a once-per-run flag, read by this handler thread only.
        if stopping.swap(true, Ordering::SeqCst) {
            tracing::warn!("second stop signal: exiting now, without waiting for the drain");
            std::process::exit(EXIT_ON_SECOND_SIGNAL);
        }
        first();
    })
    .map_err(|e| anyhow::anyhow!("cannot install the signal handler: {e}"))
}
