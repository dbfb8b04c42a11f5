//! `tc-server`: flags, and turning them into a running server.

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use super::units::{parse_duration, parse_size};
use crate::pool::Mode;
use crate::server::{Server, ServerConfig};

/// The ThreadCenter compute farm: framed JSON requests over TCP, run by a pool
/// of worker processes or threads.
#[derive(Debug, Parser)]
#[command(name = "tc-server", version, about, long_about = None)]
pub struct ServerArgs {
    /// Address to listen on. Anything but loopback is reachable by others.
    #[arg(long, env = "THREADCENTER_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on; 0 picks a free one. The bound address is printed
    /// on stdout as `listening on HOST:PORT`.
    #[arg(long, env = "THREADCENTER_PORT", default_value_t = 5050)]
    pub port: u16,

    /// Run jobs in worker subprocesses (ipc-channel) or in worker threads.
    #[arg(long, env = "THREADCENTER_MODE", value_enum, default_value_t = Mode::Processes)]
    pub mode: Mode,

    /// Number of workers [default: number of CPUs].
    #[arg(long, env = "THREADCENTER_WORKERS")]
    pub workers: Option<usize>,

    /// Largest `n` a compute request may ask for; larger is BAD_REQUEST.
    #[arg(long, env = "THREADCENTER_MAX_N", default_value_t = 100_000_000)]
    pub max_n: u64,

    /// Largest frame payload accepted (bytes, or 64KiB, 16MiB...). A larger
    /// frame gets FRAME_TOO_LARGE and its connection is closed.
    #[arg(long, env = "THREADCENTER_MAX_FRAME", default_value = "16MiB", value_parser = parse_size)]
    pub max_frame: usize,

    /// Jobs that may wait for a free worker; past that, requests get BUSY.
    #[arg(long, env = "THREADCENTER_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,

    /// Replies one connection may owe before the server stops reading from
    /// it until it catches up (TCP backpressure).
    #[arg(long, env = "THREADCENTER_MAX_INFLIGHT", default_value_t = 1024)]
    pub max_inflight: usize,

    /// How long a worker process may take to start and connect back
    /// (seconds, or 500ms, 10s, 1m...).
    #[arg(long, env = "THREADCENTER_SPAWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub spawn_timeout: Duration,

    /// Log level or filter (error, warn, info, debug, trace, or a RUST_LOG
    /// filter) [default: RUST_LOG, else info].
    #[arg(long, env = "THREADCENTER_LOG_LEVEL")]
    pub log_level: Option<String>,
}

impl ServerArgs {
    /// The server configuration these flags describe.
    pub fn config(&self) -> ServerConfig {
        let defaults = ServerConfig::default();
        ServerConfig {
            mode: self.mode,
            workers: self.workers.unwrap_or(defaults.workers),
            max_frame: self.max_frame,
            max_n: self.max_n,
            queue_capacity: self.queue_capacity,
            max_inflight: self.max_inflight,
            spawn_timeout: self.spawn_timeout,
            worker_command: None,
        }
    }
}

/// Runs `tc-server` until SIGINT or SIGTERM, then stops cleanly.
///
/// # Errors
/// A bad flag value, an address that cannot be bound, workers that cannot
/// start.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    super::init_logging(args.log_level.as_deref())?;
    let config = args.config();
    config.validate()?;
    let address = format!("{}:{}", args.host, args.port);
    let listener = TcpListener::bind(&address).with_context(|| format!("cannot listen on {address}"))?;
    let server = Server::start(listener, config).context("cannot start the server")?;

    // SIGINT (Ctrl-C) and SIGTERM both ask for a clean stop.
    let shutdown = server.shutdown_handle();
    ctrlc::set_handler(move || {
        tracing::info!("stop signal received; shutting down");
        shutdown.trigger();
    })
    .context("cannot install the signal handler")?;

    // Scripts and tests read this line to find the port (useful with --port 0).
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", server.local_addr())?;
    stdout.flush()?;
    drop(stdout);

    server.wait();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flag_definitions_are_consistent() {
        ServerArgs::command().debug_assert();
    }
}
