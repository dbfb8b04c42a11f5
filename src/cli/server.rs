//! `tc-server`: flags, and turning them into a running server.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use super::metrics::MetricsHttpArgs;
use super::nats::NatsAuthArgs;
use super::pool::PoolArgs;
use super::LogFormat;
use crate::protocol::Mode;
use crate::server::{Server, ServerConfig};
use crate::units::{parse_duration, parse_size, parse_whole_number};

/// The ThreadCenter compute farm: framed JSON requests over TCP, run by a pool
/// of worker processes or threads.
#[derive(Debug, Parser)]
#[command(name = "tc-server", version, long_about = None, args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    /// `gen-cert`; without one, serve.
    #[command(subcommand)]
    pub(crate) command: Option<ServerCommand>,

    /// Address to listen on. Anything but loopback is reachable by others.
    #[arg(help_heading = "Network", long, env = "THREADCENTER_HOST", default_value = "127.0.0.1")]
    pub(crate) host: String,

    /// Port to listen on; 0 picks a free one. The bound address is printed
    /// on stdout as `listening on HOST:PORT`.
    #[arg(help_heading = "Network", long, env = "THREADCENTER_PORT", default_value_t = 5050, value_parser = parse_whole_number::<u16>, allow_negative_numbers = true)]
    pub(crate) port: u16,

    /// Run jobs in worker subprocesses (ipc-channel) or in worker threads.
    #[arg(help_heading = "Workers", long, env = "THREADCENTER_MODE", value_enum, default_value_t = Mode::Processes)]
    pub(crate) mode: Mode,

    /// Number of workers [default: number of CPUs].
    #[arg(help_heading = "Workers", long, env = "THREADCENTER_WORKERS", value_parser = parse_whole_number::<usize>, allow_negative_numbers = true)]
    pub(crate) workers: Option<usize>,

    /// Largest `n` a compute request may ask for; larger is BAD_REQUEST.
    #[arg(help_heading = "Limits", long, env = "THREADCENTER_MAX_N", default_value_t = 100_000_000, value_parser = parse_whole_number::<u64>, allow_negative_numbers = true)]
    pub(crate) max_n: u64,

    /// Largest frame payload accepted (bytes, or 64KiB, 16MiB...). A larger
    /// frame gets FRAME_TOO_LARGE and its connection is closed.
    #[arg(help_heading = "Limits", long, env = "THREADCENTER_MAX_FRAME", default_value = "16MiB", value_parser = parse_size, allow_negative_numbers = true)]
    pub(crate) max_frame: usize,

    /// Jobs that may wait for a free worker; past that, requests get BUSY.
    #[arg(help_heading = "Limits", long, env = "THREADCENTER_QUEUE_CAPACITY", default_value_t = 1024, value_parser = parse_whole_number::<usize>, allow_negative_numbers = true)]
    pub(crate) queue_capacity: usize,

    /// Replies one connection may owe before the server stops reading from
    /// it until it catches up (TCP backpressure).
    #[arg(help_heading = "Limits", long, env = "THREADCENTER_MAX_INFLIGHT", default_value_t = 1024, value_parser = parse_whole_number::<usize>, allow_negative_numbers = true)]
    pub(crate) max_inflight: usize,

    /// How workers are run and supervised (the same flags as tc-worker's).
    #[command(flatten)]
    pub(crate) pool: PoolArgs,

    /// How long a frame that has started arriving may take to complete; a
    /// client that sends half a frame and stalls is cut off after it.
    #[arg(help_heading = "Network", long, env = "THREADCENTER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub(crate) read_timeout: Duration,

    /// When a worker process crashes mid-job, try the job on this many more
    /// workers (compute only: it is safe to run twice).
    #[arg(help_heading = "Reliability", long, env = "THREADCENTER_RETRIES", default_value_t = 1, value_parser = parse_whole_number::<u32>, allow_negative_numbers = true)]
    pub(crate) retries: u32,

    /// Connections open at once; one more gets a BUSY error and is closed.
    /// At most what the machine can hold (threads, memory maps, open files:
    /// a higher value is refused at start) [default: 4096, or that capacity
    /// when lower].
    #[arg(help_heading = "Network", long, env = "THREADCENTER_MAX_CONNECTIONS", value_parser = parse_whole_number::<usize>, allow_negative_numbers = true)]
    pub(crate) max_connections: Option<usize>,

    /// Connections one client address may hold at once; one more gets a
    /// BUSY error and is closed [default: no cap below --max-connections].
    #[arg(help_heading = "Network", long, env = "THREADCENTER_MAX_CONNECTIONS_PER_IP", value_parser = parse_whole_number::<usize>, allow_negative_numbers = true)]
    pub(crate) max_connections_per_ip: Option<usize>,

    /// Close a connection that owes no reply and has sent nothing for this
    /// long, with an IDLE_TIMEOUT frame saying why (0: never).
    #[arg(help_heading = "Network", long, env = "THREADCENTER_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub(crate) idle_timeout: Duration,

    /// Memory all connections together may hold in frames still arriving
    /// (e.g. 512MiB); a connection whose frame needs more gets BUSY and is
    /// closed [default: 1GiB, or an eighth of the available memory].
    #[arg(help_heading = "Limits", long, env = "THREADCENTER_MAX_FRAME_MEMORY", value_parser = parse_size, allow_negative_numbers = true)]
    pub(crate) max_frame_memory: Option<usize>,

    /// Requests per second allowed per client address (token bucket, burst
    /// of one second), e.g. 100 or 100/s; excess requests get RATE_LIMITED.
    #[arg(help_heading = "Network", long, env = "THREADCENTER_RATE_LIMIT", value_parser = parse_rate, allow_negative_numbers = true)]
    pub(crate) rate_limit: Option<f64>,

    /// Keep this many results in an LRU cache keyed by the request body minus
    /// its id; cached replies say "cached": true (0 keeps none).
    #[arg(help_heading = "Limits", long, env = "THREADCENTER_CACHE_ENTRIES", default_value_t = 0, value_parser = parse_whole_number::<usize>, allow_negative_numbers = true)]
    pub(crate) cache_entries: usize,

    /// On SIGINT/SIGTERM, how long jobs in flight may take to finish before
    /// they are answered SHUTTING_DOWN.
    #[arg(help_heading = "Reliability", long, env = "THREADCENTER_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub(crate) drain_timeout: Duration,

    /// Accept the fault-injection commands crash, hang, sleep and panic
    /// (for demos and tests; without it they are UNKNOWN_COMMAND).
    #[arg(help_heading = "Reliability", long, env = "THREADCENTER_ALLOW_CHAOS")]
    pub(crate) allow_chaos: bool,

    /// Require every connection to send {"cmd":"auth","token":TOKEN} first;
    /// others get UNAUTHORIZED and are closed.
    #[arg(help_heading = "Security", long, env = "THREADCENTER_AUTH_TOKEN", hide_env_values = true)]
    pub(crate) auth_token: Option<String>,

    /// The image classifier to serve (.onnx, or ThreadCenter's .safetensors).
    /// Default: the shipped model, models/fire-cnn.onnx, when it is there.
    #[arg(help_heading = "Predictions", long, env = "THREADCENTER_MODEL")]
    pub(crate) model: Option<PathBuf>,

    /// The only directory `load_model` may load models from [default: the
    /// models/ directory of the source tree tc-server was built from].
    #[arg(help_heading = "Predictions", long, env = "THREADCENTER_MODELS_DIR", default_value_os_t = crate::work::model::default_models_dir(), hide_default_value = true)]
    pub(crate) models_dir: PathBuf,

    /// fire_detected = raw_score > THRESHOLD.
    #[arg(help_heading = "Predictions", long, env = "THREADCENTER_THRESHOLD", default_value_t = 0.5)]
    pub(crate) threshold: f32,

    /// Largest image accepted, after base64 decoding (e.g. 10MiB).
    #[arg(help_heading = "Limits", long, env = "THREADCENTER_MAX_IMAGE_BYTES", default_value = "10MiB", value_parser = parse_size, allow_negative_numbers = true)]
    pub(crate) max_image_bytes: usize,

    /// Lease of the accelerator mutex: the owner loses it this long after its
    /// last acquire or predict, and a queued client that has not asked again
    /// within it leaves the queue.
    #[arg(help_heading = "Predictions", long, env = "THREADCENTER_LOCK_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub(crate) lock_timeout: Duration,

    /// Make ThreadCenter-style `predict` require holding the mutex, as
    /// IdentyFire's `predict_image` always does.
    #[arg(help_heading = "Predictions", long, env = "THREADCENTER_PREDICT_LOCK")]
    pub(crate) predict_lock: bool,

    /// Log level or filter (error, warn, info, debug, trace, or a RUST_LOG
    /// filter) [default: RUST_LOG, else info].
    #[arg(help_heading = "Observability", long, env = "THREADCENTER_LOG_LEVEL")]
    pub(crate) log_level: Option<String>,

    /// Log lines as human-readable text or as one JSON object per line.
    #[arg(help_heading = "Observability", long, env = "THREADCENTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,

    /// Serve Prometheus metrics at http://ADDR/metrics, /healthz and /readyz
    /// beside them, and the live dashboard at http://ADDR/ (e.g.
    /// 127.0.0.1:9464; port 0 picks a free one, printed on stdout as
    /// `metrics on http://ADDR/metrics`, then `dashboard on http://ADDR/`).
    /// Off unless given.
    #[arg(help_heading = "Observability", long, env = "THREADCENTER_METRICS_ADDR", value_parser = super::metrics::parse_socket_address)]
    pub(crate) metrics_addr: Option<SocketAddr>,

    /// The metrics endpoint's token, connection cap and timeout.
    #[command(flatten)]
    pub(crate) metrics_http: MetricsHttpArgs,

    /// Serve the job port over TLS (1.2 and 1.3) with this PEM certificate
    /// (chain allowed); needs --tls-key.
    #[arg(
        help_heading = "Security",
        long,
        env = "THREADCENTER_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub(crate) tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(
        help_heading = "Security",
        long,
        env = "THREADCENTER_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub(crate) tls_key: Option<PathBuf>,

    /// Serve the metrics endpoint over HTTPS too, with the job port's
    /// certificate (--tls-cert, --tls-key).
    #[arg(help_heading = "Security", long, env = "THREADCENTER_METRICS_TLS", requires = "tls_cert")]
    pub(crate) metrics_tls: bool,

    /// Mutual TLS: refuse, during the handshake, clients without a
    /// certificate signed by this PEM CA.
    #[arg(
        help_heading = "Security",
        long,
        env = "THREADCENTER_TLS_CLIENT_CA",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub(crate) tls_client_ca: Option<PathBuf>,

    /// Log a WARN line for every job that runs longer than this many
    /// milliseconds on its worker, with its command, size and timings.
    #[arg(help_heading = "Observability", long, env = "THREADCENTER_SLOW_MS", value_parser = parse_whole_number::<u64>, allow_negative_numbers = true)]
    pub(crate) slow_ms: Option<u64>,

    /// Be a gateway to worker hosts: send jobs over this NATS server (with
    /// JetStream), e.g. nats://127.0.0.1:4222; `tc-worker --nats` hosts run
    /// them. With --workers 0, every job goes to the hosts. Needs a build with
    /// the `nats` feature (cargo build --release --features nats).
    #[arg(help_heading = "Worker hosts (NATS)", long, env = "THREADCENTER_NATS")]
    pub(crate) nats: Option<String>,

    /// With --nats: the most jobs the NATS stream holds, running ones
    /// included; past it, requests get BUSY.
    #[arg(help_heading = "Worker hosts (NATS)", long, env = "THREADCENTER_NATS_MAX_JOBS", default_value_t = 10_000, requires = "nats", value_parser = parse_whole_number::<i64>, allow_negative_numbers = true)]
    pub(crate) nats_max_jobs: i64,

    /// With --nats: the most short compute jobs packed into one NATS
    /// message (1 sends every job alone). Jobs are packed only while
    /// several wait and their cost, learnt from results, is small.
    #[arg(help_heading = "Worker hosts (NATS)", long, env = "THREADCENTER_NATS_MAX_PARCEL", default_value_t = 64, requires = "nats", value_parser = parse_whole_number::<usize>)]
    pub(crate) nats_max_parcel: usize,

    /// NATS authentication and TLS (with --nats).
    #[command(flatten)]
    pub(crate) nats_auth: NatsAuthArgs,
}

/// Parses `--rate-limit`: `100` or `100/s`.
fn parse_rate(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches("/s");
    match number.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a rate; use requests per second, e.g. 100 or 100/s")),
    }
}

/// What `tc-server` can do besides serving.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ServerCommand {
    /// Make a local CA, a server certificate and a client certificate (PEM)
    /// for TLS tests, demos and small private farms.
    GenCert(GenCertArgs),
}

/// Flags of `tc-server gen-cert`.
#[derive(Debug, clap::Args)]
pub(crate) struct GenCertArgs {
    /// Directory to write ca.pem, ca.key, server.pem, server.key,
    /// client.pem and client.key into (created if needed).
    #[arg(long, default_value = "certs")]
    pub(crate) out: PathBuf,

    /// A name the server's certificate is valid for (DNS name or IP
    /// address); repeat for several.
    #[arg(long = "name", default_values = ["localhost", "127.0.0.1"])]
    pub(crate) names: Vec<String>,
}

/// `tc-server gen-cert`: writes the files and says how to use them.
fn gen_cert(args: &GenCertArgs) -> anyhow::Result<()> {
    let made = crate::tls::make_certificates(&args.out, &args.names)?;
    println!("wrote, in {} (valid for {}):", args.out.display(), args.names.join(", "));
    println!("  CA:     {}  (and ca.key: keep it private)", made.ca.display());
    println!("  server: {} {}", made.server.cert.display(), made.server.key.display());
    println!("  client: {} {}", made.client_cert.display(), made.client_key.display());
    println!(
        "serve:   tc-server --tls-cert {} --tls-key {} [--tls-client-ca {}]",
        made.server.cert.display(),
        made.server.key.display(),
        made.ca.display()
    );
    println!(
        "connect: tc-client --tls --tls-ca {} [--tls-cert {} --tls-key {}] ...",
        made.ca.display(),
        made.client_cert.display(),
        made.client_key.display()
    );
    Ok(())
}

impl ServerArgs {
    /// The server configuration these flags describe.
    pub(crate) fn config(&self) -> ServerConfig {
        let defaults = ServerConfig::default();
        ServerConfig {
            mode: self.mode,
            workers: self.workers.unwrap_or(defaults.workers),
            max_frame: self.max_frame,
            max_n: self.max_n,
            queue_capacity: self.queue_capacity,
            max_inflight: self.max_inflight,
            spawn_timeout: self.pool.spawn_timeout,
            worker_command: None,
            read_timeout: self.read_timeout,
            job_timeout: self.pool.job_timeout,
            retries: self.retries,
            max_restarts: self.pool.max_restarts,
            restart_window: self.pool.restart_window,
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            max_connections_per_ip: self.max_connections_per_ip,
            idle_timeout: Some(self.idle_timeout).filter(|d| !d.is_zero()),
            max_frame_memory: self.max_frame_memory.unwrap_or(defaults.max_frame_memory),
            rate_limit: self.rate_limit,
            cache_entries: self.cache_entries,
            drain_timeout: self.drain_timeout,
            allow_chaos: self.allow_chaos,
            auth_token: self.auth_token.clone(),
            gil_switch_interval: self.pool.gil_switch_interval(),
            model: self.model.clone().or_else(|| {
                Some(self.models_dir.join(crate::work::model::default_model_file())).filter(|p| p.is_file())
            }),
            models_dir: self.models_dir.clone(),
            threshold: self.threshold,
            max_image_bytes: self.max_image_bytes,
            lock_timeout: self.lock_timeout,
            predict_lock: self.predict_lock,
            metrics_addr: self.metrics_addr,
            metrics_limits: self.metrics_http.limits(),
            metrics_tls: self.metrics_tls,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                }),
                _ => None,
            },
            nats: self.nats.as_deref().map(|url| self.nats_auth.options(url)),
            nats_max_jobs: self.nats_max_jobs,
            nats_max_parcel: self.nats_max_parcel,
            slow_job: self.slow_ms.map(Duration::from_millis),
        }
    }
}

/// Raises the open-files limit to its maximum: every connection is a file
/// descriptor, and the default soft limit (often 1024) is below what
/// `--max-connections` allows.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            tracing::debug!(from = soft, to = hard, "raised the open-files limit");
        }
    }
}

/// Runs `tc-server` until SIGINT or SIGTERM, then stops cleanly.
///
/// # Errors
/// A bad flag value, an address that cannot be bound, workers that cannot
/// start.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    if let Some(ServerCommand::GenCert(gen)) = &args.command {
        return gen_cert(gen);
    }
    super::init_logging(args.log_level.as_deref(), args.log_format)?;
    // The engine first: the default model depends on it.
    args.pool.load_onnxruntime()?;
    let config = args.config();
    config.validate()?;
    raise_open_files_limit();
    let address = format!("{}:{}", args.host, args.port);
    let listener = TcpListener::bind(&address).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            "; another process is listening on that port: stop it, pick another with --port, \
             or use --port 0 for any free port (the port is printed on the first line)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot listen on {address}: {e}{hint}")
    })?;
    let server = Server::start(listener, config).context("cannot start the server")?;

    // SIGINT (Ctrl-C) and SIGTERM both ask for a clean stop.
    let shutdown = server.shutdown_handle();
    super::on_stop_signals(move || {
        tracing::info!("stop signal received; shutting down (a second signal exits at once)");
        shutdown.trigger();
    })?;

    // Scripts and tests read this line to find the port (useful with --port 0).
    // One write: a script that reads the first line and closes the pipe
    // must not find the later lines failing (and the server stopping) on
    // a broken pipe; the server serves whether or not anyone reads this.
    let mut lines = format!("listening on {}\n", server.local_addr());
    if let Some(metrics) = server.metrics_addr() {
        let scheme = if args.metrics_tls { "https" } else { "http" };
        lines.push_str(&format!("metrics on {scheme}://{metrics}/metrics\n"));
        // A browser cannot send a Bearer header: with a token, the page
        // takes it in its address.
        let how = if args.metrics_http.metrics_token.is_some() {
            "open it in a browser, adding ?token=YOUR_METRICS_TOKEN"
        } else {
            "open it in a browser"
        };
        lines.push_str(&format!("dashboard on {scheme}://{metrics}/ ({how})\n"));
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(lines.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            tracing::debug!("nobody reads stdout: the address lines were not printed");
        }
        other => other?,
    }
    drop(stdout);
    // The settings line comes after `listening on`, so on a terminal the
    // address is not buried under ~25 settings (the log goes to stderr).
    server.log_settings();

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

    #[test]
    fn rate_limits_take_a_number_or_a_number_per_second() {
        assert_eq!(parse_rate("100"), Ok(100.0));
        assert_eq!(parse_rate("2.5/s"), Ok(2.5));
        for bad in ["", "0", "-1", "fast", "inf"] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
    }
}
