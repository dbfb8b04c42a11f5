//! `tc-worker`: a worker host's flags, and running one from them.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use super::nats::NatsAuthArgs;
use super::pool::PoolArgs;
use super::LogFormat;
use crate::host::HostConfig;
use crate::protocol::Mode;
use crate::runtime::pool::{PoolConfig, WorkerCommand};
use crate::units::{parse_duration, parse_whole_number};

/// A ThreadCenter worker host: joins a farm over NATS JetStream and runs its
/// jobs on a local pool of worker processes or threads.
#[derive(Debug, Parser)]
#[command(name = "tc-worker", version, long_about = None)]
pub struct WorkerArgs {
    /// The NATS server (with JetStream) the farm's gateways use, e.g.
    /// nats://10.0.0.5:4222.
    #[arg(long, env = "THREADCENTER_NATS")]
    pub(crate) nats: String,

    /// This host's name in heartbeats, results and logs [default: the
    /// machine's host name and this process's id].
    #[arg(long, env = "THREADCENTER_WORKER_NAME")]
    pub(crate) name: Option<String>,

    /// Run jobs in worker subprocesses of this host (processes, over
    /// ipc-channel) or in worker threads inside this tc-worker process
    /// (threads).
    #[arg(long, env = "THREADCENTER_MODE", value_enum, default_value_t = Mode::Processes, hide_possible_values = true)]
    pub(crate) mode: Mode,

    /// Number of workers, and so of jobs this host takes at once [default:
    /// number of CPUs].
    #[arg(long, env = "THREADCENTER_WORKERS", value_parser = parse_whole_number::<usize>, allow_negative_numbers = true)]
    pub(crate) workers: Option<usize>,

    /// How workers are run and supervised (the same flags as tc-server's).
    #[command(flatten)]
    pub(crate) pool: PoolArgs,

    /// The model file the workers load at start-up (predict jobs name the
    /// model they need; it must exist here too).
    #[arg(long, env = "THREADCENTER_MODEL")]
    pub(crate) model: Option<std::path::PathBuf>,

    /// Largest `n` a compute job may ask for on this host; a larger one is
    /// answered BAD_REQUEST (the host re-checks every job, whatever its
    /// gateway allowed).
    #[arg(long, env = "THREADCENTER_MAX_N", default_value_t = 100_000_000, value_parser = parse_whole_number::<u64>, allow_negative_numbers = true)]
    pub(crate) max_n: u64,

    /// Run fault-injection jobs (crash, hang, sleep, panic) on this host;
    /// without it they are refused, whatever the gateway allowed.
    #[arg(long, env = "THREADCENTER_ALLOW_CHAOS")]
    pub(crate) allow_chaos: bool,

    /// The directory a predict job's model is looked up in, by file name
    /// only (never the path in the message), and checked by SHA-256
    /// against the gateway's.
    #[arg(long, env = "THREADCENTER_MODELS_DIR", default_value_os_t = crate::work::model::default_models_dir(), hide_default_value = true)]
    pub(crate) models_dir: std::path::PathBuf,

    /// On SIGTERM, how long held jobs may take to finish before they are
    /// handed back to NATS for another host.
    #[arg(long, env = "THREADCENTER_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub(crate) drain_timeout: Duration,

    /// Serve /metrics, /healthz and /readyz on this address (e.g.
    /// 127.0.0.1:9465; port 0 picks a free one, printed on stdout). Off when
    /// not given.
    #[arg(long, env = "THREADCENTER_METRICS_ADDR", value_parser = super::metrics::parse_socket_address)]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,

    /// The metrics endpoint's token, connection cap and timeout.
    #[command(flatten)]
    pub(crate) metrics_http: super::metrics::MetricsHttpArgs,

    /// Serve the metrics endpoint over HTTPS with this PEM certificate
    /// (chain allowed); needs --metrics-tls-key.
    #[arg(long, env = "THREADCENTER_METRICS_TLS_CERT", requires = "metrics_tls_key", value_name = "FILE")]
    pub(crate) metrics_tls_cert: Option<std::path::PathBuf>,

    /// The PEM private key of --metrics-tls-cert.
    #[arg(long, env = "THREADCENTER_METRICS_TLS_KEY", requires = "metrics_tls_cert", value_name = "FILE")]
    pub(crate) metrics_tls_key: Option<std::path::PathBuf>,

    /// NATS authentication and TLS.
    #[command(flatten)]
    pub(crate) auth: NatsAuthArgs,

    /// Log level (error, warn, info, debug, trace) or a RUST_LOG filter.
    #[arg(long, env = "THREADCENTER_LOG_LEVEL")]
    pub(crate) log_level: Option<String>,

    /// Log lines as human-readable text or JSON.
    #[arg(long, env = "THREADCENTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

impl WorkerArgs {
    /// The host configuration these flags describe.
    ///
    /// # Errors
    /// A value out of range, naming the flag.
    pub(crate) fn config(&self) -> anyhow::Result<HostConfig> {
        let workers = self.workers.unwrap_or_else(crate::work::default_workers);
        anyhow::ensure!(workers >= 1, "--workers must be at least 1");
        let model_bytes = crate::machine::model_file_bytes(self.model.as_deref());
        crate::machine::Machine::read()
            .check_workers("--workers", workers, self.mode.into(), model_bytes)
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(!self.pool.gil || self.mode == Mode::Threads, "--gil applies to --mode threads");
        let name = self.name.clone().unwrap_or_else(|| {
            let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok());
            // Kept within the host-name rule: at most 48 bytes of the
            // machine's name (any other character as '-'), then the pid.
            let host: String = host
                .unwrap_or_else(|| "host".into())
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_') { c } else { '-' })
                .take(48)
                .collect();
            format!("{host}-{}", std::process::id())
        });
        // The gateways' host table refuses any other name (see remote::limits).
        if let Some(problem) = crate::remote::limits::host_name_problem(&name) {
            anyhow::bail!("--name {name:?} cannot be used: {problem}; choose another --name");
        }
        anyhow::ensure!(
            workers <= crate::remote::limits::MAX_HOST_SLOTS,
            "--workers must be at most {}",
            crate::remote::limits::MAX_HOST_SLOTS
        );
        Ok(HostConfig {
            nats: self.auth.options(&self.nats),
            name,
            pool: PoolConfig {
                mode: self.mode,
                workers,
                worker_command: WorkerCommand::current_exe()?,
                spawn_timeout: self.pool.spawn_timeout,
                job_timeout: self.pool.job_timeout,
                max_restarts: self.pool.max_restarts,
                restart_window: self.pool.restart_window,
                gil_switch_interval: self.pool.gil_switch_interval(),
                model: self.model.clone(),
            },
            limits: crate::host::HostLimits {
                max_n: self.max_n,
                allow_chaos: self.allow_chaos,
                models_dir: self.models_dir.clone(),
                job_timeout: self.pool.job_timeout,
            },
            drain_timeout: self.drain_timeout,
            metrics_addr: self.metrics_addr,
            metrics_tls: match (&self.metrics_tls_cert, &self.metrics_tls_key) {
                (Some(cert), Some(key)) => {
                    Some(crate::tls::TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: None })
                }
                _ => None,
            },
            metrics_limits: self.metrics_http.limits(),
        })
    }
}

/// Runs `tc-worker` until SIGINT or SIGTERM, then drains and stops.
///
/// # Errors
/// A bad flag value, NATS unreachable, workers that cannot start.
pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    super::init_logging(args.log_level.as_deref(), args.log_format)?;
    // The engine first: the default model depends on it.
    args.pool.load_onnxruntime()?;
    // A setting that cannot work is a usage error (exit 2), as on tc-server.
    let config = args.config().map_err(|e| crate::Error::Config(format!("{e:#}")))?;
    config.nats.check()?;
    let metrics = crate::host::MetricsSetup::open(&config)?;
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    super::on_stop_signals(move || {
        tracing::info!("stop signal received; draining (a second signal exits at once)");
        let _ = stop_tx.try_send(());
    })?;
    crate::host::run(config, metrics, stop_rx).context("the worker host failed")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flag_definitions_are_consistent() {
        WorkerArgs::command().debug_assert();
    }
}
