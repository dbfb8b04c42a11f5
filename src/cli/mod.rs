//! Command-line front ends: flag definitions (clap) and the functions the
//! binaries call. Everything here turns flags into the library's typed
//! configurations; the work itself happens in [`crate::server`] and
//! [`crate::client`].

pub mod client;
pub mod server;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines look (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors (Loki, Elasticsearch,
    /// `jq`): `{"timestamp","level","fields":{"message",...},"target"}`.
    Json,
}

/// Sets up logging to stderr. `--log-level` wins; otherwise `RUST_LOG`;
/// otherwise `info`. Accepts anything `RUST_LOG` accepts (`debug`,
/// `threadcenter=debug,warn`, ...).
///
/// # Errors
/// When the level text cannot be parsed.
pub fn init_logging(level: Option<&str>, format: LogFormat) -> anyhow::Result<()> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level)
            .map_err(|e| anyhow::anyhow!("--log-level {level:?} is not a valid level or filter: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // The JSON lines carry the thread name too: "worker-3-driver" or
        // "acceptor" says where an event happened.
        LogFormat::Json => builder.json().with_thread_names(true).init(),
    }
    Ok(())
}
