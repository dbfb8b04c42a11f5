//! Command-line front ends: flag definitions (clap) and the functions the
//! binaries call. Everything here turns flags into the library's typed
//! configurations; the work itself happens in [`crate::server`] and
//! [`crate::client`].

pub mod client;
pub mod server;
pub mod units;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Sets up logging to stderr. `--log-level` wins; otherwise `RUST_LOG`;
/// otherwise `info`. Accepts anything `RUST_LOG` accepts (`debug`,
/// `threadcenter=debug,warn`, ...).
///
/// # Errors
/// When the level text cannot be parsed.
pub fn init_logging(level: Option<&str>) -> anyhow::Result<()> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level)
            .map_err(|e| anyhow::anyhow!("--log-level {level:?} is not a valid level or filter: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}
