//! The server's configuration: every setting, its default, and the checks
//! that make a configuration usable. The CLI ([`crate::cli::server`]) turns
//! flags into a [`ServerConfig`]; tests and `tc-client --embedded` build one
//! directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::frame::DEFAULT_MAX_FRAME;
use crate::machine::{bytes, Machine};
use crate::protocol::{Limits, Mode, DEFAULT_N};
use crate::remote::connect::NatsOptions;
use crate::runtime::pool::WorkerCommand;

/// Everything that shapes a server, already validated by the caller (the CLI
/// turns flags into this).
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    /// Threads or processes.
    pub(crate) mode: Mode,
    /// Number of workers.
    pub(crate) workers: usize,
    /// Largest frame payload accepted, in bytes.
    pub(crate) max_frame: usize,
    /// Largest `n` of a compute job.
    pub(crate) max_n: u64,
    /// Jobs that may wait for a worker before new ones get `BUSY`.
    pub(crate) queue_capacity: usize,
    /// Replies a single connection may owe before the server stops reading it.
    pub(crate) max_inflight: usize,
    /// How long a worker process may take to start and connect back.
    pub(crate) spawn_timeout: Duration,
    /// What to run as a worker process; `None` re-executes this binary.
    pub(crate) worker_command: Option<WorkerCommand>,
    /// How long a started frame may take to arrive completely.
    pub(crate) read_timeout: Duration,
    /// How long one job may run before `TIMEOUT` and a new worker.
    pub(crate) job_timeout: Duration,
    /// Extra workers a job may be tried on after its worker crashed (for
    /// jobs that may safely run twice).
    pub(crate) retries: u32,
    /// Worker replacements allowed per `restart_window`.
    pub(crate) max_restarts: u32,
    /// The window of `max_restarts`.
    pub(crate) restart_window: Duration,
    /// Connections open at once; more get `BUSY` and are closed.
    pub(crate) max_connections: usize,
    /// Connections one client address may hold at once (`None`: no cap
    /// below `max_connections`); more get `BUSY` and are closed.
    pub(crate) max_connections_per_ip: Option<usize>,
    /// A connection that owes nothing and sends nothing for this long is
    /// closed with an `IDLE_TIMEOUT` frame (`None`: never).
    pub(crate) idle_timeout: Option<Duration>,
    /// Memory all connections together may hold in frames that have not
    /// fully arrived (`--max-frame-memory`); past it a connection whose
    /// frame needs more gets `BUSY` and is closed.
    pub(crate) max_frame_memory: usize,
    /// Requests per second per client address (`None`: unlimited).
    pub(crate) rate_limit: Option<f64>,
    /// Results kept in the LRU result cache (0: no cache).
    pub(crate) cache_entries: usize,
    /// How long a shutdown waits for jobs in flight before failing them.
    pub(crate) drain_timeout: Duration,
    /// Accept the fault-injection commands (crash, hang, sleep, panic).
    pub(crate) allow_chaos: bool,
    /// Shared secret every connection must present first (`None`: open).
    pub(crate) auth_token: Option<String>,
    /// Thread mode: a CPython-style global lock with this switch interval.
    pub(crate) gil_switch_interval: Option<Duration>,
    /// The model file to serve (`--model`); `None` starts without a model
    /// (predictions get `MODEL_UNAVAILABLE` until `load_model`).
    pub(crate) model: Option<PathBuf>,
    /// The only directory `load_model` may read from (`--models-dir`).
    pub(crate) models_dir: PathBuf,
    /// `fire_detected = raw_score > threshold` (`--threshold`).
    pub(crate) threshold: f32,
    /// Largest image accepted, in bytes after base64 decoding (`--max-image-bytes`).
    pub(crate) max_image_bytes: usize,
    /// The accelerator mutex's lease (`--lock-timeout`).
    pub(crate) lock_timeout: Duration,
    /// ThreadCenter `predict` requires holding the mutex (`--predict-lock`);
    /// IdentyFire's predictions always do.
    pub(crate) predict_lock: bool,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (`--metrics-addr`;
    /// `None`: nowhere).
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// The metrics endpoint's cap, timeout and token.
    pub(crate) metrics_limits: crate::runtime::http::HttpLimits,
    /// Serve the metrics endpoint over HTTPS with the job port's certificate.
    pub(crate) metrics_tls: bool,
    /// TLS on the job port (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
    pub(crate) tls: Option<crate::tls::TlsFiles>,
    /// Jobs running longer than this on a worker are logged at WARN
    /// (`--slow-ms`; `None`: never).
    pub(crate) slow_job: Option<Duration>,
    /// Be a gateway: send jobs to worker hosts over NATS (`--nats`).
    pub(crate) nats: Option<NatsOptions>,
    /// The most jobs the NATS stream holds (`--nats-max-jobs`).
    pub(crate) nats_max_jobs: i64,
    /// The most jobs packed into one NATS message (`--nats-max-parcel`).
    pub(crate) nats_max_parcel: usize,
}

/// Default `--max-image-bytes`: 10 MiB.
pub(crate) const DEFAULT_MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            mode: Mode::Processes,
            workers: crate::work::default_workers(),
            max_frame: DEFAULT_MAX_FRAME,
            max_n: 100 * DEFAULT_N,
            queue_capacity: 1024,
            max_inflight: 1024,
            spawn_timeout: Duration::from_secs(10),
            worker_command: None,
            read_timeout: Duration::from_secs(30),
            job_timeout: Duration::from_secs(60),
            retries: 1,
            max_restarts: 10,
            restart_window: Duration::from_secs(10),
            max_connections: default_max_connections(),
            max_connections_per_ip: None,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_frame_memory: default_max_frame_memory(),
            rate_limit: None,
            cache_entries: 0,
            drain_timeout: Duration::from_secs(10),
            allow_chaos: false,
            auth_token: None,
            gil_switch_interval: None,
            // The shipped model, when the source tree is where it was built.
            model: Some(
                crate::work::model::default_models_dir().join(crate::work::model::default_model_file()),
            )
            .filter(|path| path.is_file()),
            models_dir: crate::work::model::default_models_dir(),
            threshold: 0.5,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            lock_timeout: Duration::from_secs(30),
            predict_lock: false,
            metrics_addr: None,
            metrics_limits: crate::runtime::http::HttpLimits::default(),
            metrics_tls: false,
            tls: None,
            slow_job: None,
            nats: None,
            nats_max_jobs: crate::remote::STREAM_MAX_MESSAGES,
            nats_max_parcel: crate::remote::limits::MAX_PARCEL_JOBS,
        }
    }
}

/// Default `--idle-timeout`: five minutes, long enough for a person at a
/// shell prompt, short enough that abandoned connections do not pile up.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Most requests per second `--rate-limit` may allow: far past what one
/// server answers, so a larger number is a typing mistake, not a limit.
pub(crate) const MAX_RATE_LIMIT: f64 = 1e9;

/// Most jobs `--nats-max-jobs` may let the stream hold.
pub(crate) const MAX_NATS_JOBS: i64 = 10_000_000;

/// Memory a queued job takes at least (its record in the queue and the
/// registry), whatever its payload: the unit `--queue-capacity` is checked in.
const QUEUED_JOB_MEMORY: u64 = 1024;
/// Memory a cached result takes at least (its key, the request body minus
/// its id, and its value): the unit `--cache-entries` is checked in.
const CACHED_RESULT_MEMORY: u64 = 256;
/// Memory one owed reply takes at least: the unit `--max-inflight` ×
/// `--max-connections` is checked in.
const OWED_REPLY_MEMORY: u64 = 64;

/// `--max-connections` when not given: 4,096, or fewer when this machine
/// cannot hold that many (see [`crate::machine`]).
pub(crate) fn default_max_connections() -> usize {
    4096.min(Machine::read().connections().connections).max(1)
}

/// `--max-frame-memory` when not given: 1 GiB, or an eighth of the memory
/// available when that is less — but never below one largest frame.
pub(crate) fn default_max_frame_memory() -> usize {
    let eighth = usize::try_from(Machine::read().memory / 8).unwrap_or(usize::MAX);
    (1usize << 30).min(eighth).max(DEFAULT_MAX_FRAME)
}

impl ServerConfig {
    /// Bounds on request arguments.
    pub(crate) fn limits(&self) -> Limits {
        Limits { max_n: self.max_n, allow_chaos: self.allow_chaos }
    }

    /// Checks that every value is usable.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first value out of range.
    pub(crate) fn validate(&self) -> Result<()> {
        self.check_sizes_and_workers()?;
        self.check_times_and_rates()?;
        self.check_frames_gil_and_models()?;
        self.check_against(&Machine::read())
    }

    /// Counts and sizes at least 1, the workers (or a gateway's hosts) and
    /// the NATS link.
    fn check_sizes_and_workers(&self) -> Result<()> {
        let positive = [
            ("--max-frame", self.max_frame),
            ("--queue-capacity", self.queue_capacity),
            ("--max-inflight", self.max_inflight),
            ("--max-connections", self.max_connections),
        ];
        for (flag, value) in positive {
            if value == 0 {
                return Err(Error::Config(format!("{flag} must be at least 1")));
            }
        }
        // With --nats, the workers may all be remote: --workers 0 is a pure
        // gateway.
        if self.workers == 0 && self.nats.is_none() {
            return Err(Error::Config(
                "--workers must be at least 1 (0 only for a gateway to worker hosts, with --nats)".into(),
            ));
        }
        if let Some(nats) = &self.nats {
            if !cfg!(feature = "nats") {
                return Err(Error::Config(crate::remote::NEEDS_NATS_FEATURE.into()));
            }
            nats.check()?;
        }
        if !(1..=MAX_NATS_JOBS).contains(&self.nats_max_jobs) {
            return Err(Error::Config(format!(
                "--nats-max-jobs must be from 1 to {MAX_NATS_JOBS} (the stream keeps every job on the NATS \
                 server until a host answers it; a deeper queue only hides overload), not {}",
                self.nats_max_jobs
            )));
        }
        let most = crate::remote::limits::MAX_PARCEL_JOBS;
        if !(1..=most).contains(&self.nats_max_parcel) {
            return Err(Error::Config(format!(
                "--nats-max-parcel must be from 1 (every job alone) to {most} (what worker hosts take in one \
                 message), not {}",
                self.nats_max_parcel
            )));
        }
        if self.max_frame > u32::MAX as usize {
            return Err(Error::Config(format!("--max-frame must be at most {} bytes", u32::MAX)));
        }
        Ok(())
    }

    /// Timeouts longer than 0, the rate limit and the per-address cap.
    fn check_times_and_rates(&self) -> Result<()> {
        for (flag, value) in [
            ("--read-timeout", self.read_timeout),
            ("--job-timeout", self.job_timeout),
            ("--restart-window", self.restart_window),
            ("--lock-timeout", self.lock_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::Config(format!("{flag} must be longer than 0")));
            }
        }
        if let Some(rate) = self.rate_limit {
            if !rate.is_finite() || rate <= 0.0 || rate > MAX_RATE_LIMIT {
                return Err(Error::Config(format!(
                    "--rate-limit must be a positive number of requests per second up to {MAX_RATE_LIMIT:e}, \
                     not {rate}"
                )));
            }
        }
        if self.max_connections_per_ip.is_some_and(|cap| cap == 0 || cap > self.max_connections) {
            return Err(Error::Config(format!(
                "--max-connections-per-ip must be from 1 to --max-connections ({}), not {}",
                self.max_connections,
                self.max_connections_per_ip.unwrap_or(0)
            )));
        }
        if self.idle_timeout.is_some_and(|d| d < self.read_timeout) {
            return Err(Error::Config(format!(
                "--idle-timeout ({:?}) must be at least --read-timeout ({:?}), or 0 for never",
                self.idle_timeout.unwrap_or_default(),
                self.read_timeout
            )));
        }
        Ok(())
    }

    /// Flags that must agree with each other: frames and their memory, the
    /// GIL and the mode, the model's threshold and image size, the token.
    fn check_frames_gil_and_models(&self) -> Result<()> {
        if self.max_frame > self.max_frame_memory {
            return Err(Error::Config(format!(
                "--max-frame {} is larger than --max-frame-memory {}: such a frame could never be read; \
                 raise --max-frame-memory or lower --max-frame",
                bytes(self.max_frame as u64),
                bytes(self.max_frame_memory as u64)
            )));
        }
        if self.gil_switch_interval.is_some() && self.mode != Mode::Threads {
            return Err(Error::Config(
                "--gil applies to --mode threads (worker processes have no shared interpreter lock)".into(),
            ));
        }
        if self.gil_switch_interval.is_some_and(|d| d.is_zero()) {
            return Err(Error::Config("--switch-interval must be longer than 0".into()));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(Error::Config(format!(
                "--threshold must be between 0 and 1, not {}",
                self.threshold
            )));
        }
        // An image larger than a frame cannot arrive anyway: --max-frame is
        // the outer bound, --max-image-bytes the one for a decoded image.
        if self.max_image_bytes == 0 {
            return Err(Error::Config("--max-image-bytes must be at least 1".into()));
        }
        if self.auth_token.as_deref() == Some("") {
            return Err(Error::Config("--auth-token must not be empty".into()));
        }
        Ok(())
    }

    /// Checks every count against what `machine` holds: a count it cannot
    /// hold would take the machine down or abort the server later, under
    /// load, instead of now with a sentence.
    ///
    /// # Errors
    /// [`Error::Config`] naming the flag, the most the machine holds, and why.
    pub(crate) fn check_against(&self, machine: &Machine) -> Result<()> {
        let capacity = machine.connections();
        if self.max_connections > capacity.connections {
            return Err(Error::Config(format!(
                "--max-connections {} is more than this machine can hold: {capacity}; each connection takes \
                 2 threads (8 memory maps) and 1 open file. Lower --max-connections, or raise the limit \
                 (e.g. sysctl -w vm.max_map_count=262144, ulimit -n)",
                self.max_connections
            )));
        }
        let model_bytes = crate::machine::model_file_bytes(self.model.as_deref());
        machine
            .check_workers("--workers", self.workers, self.mode.into(), model_bytes)
            .map_err(Error::Config)?;
        let owed = self.max_connections as u64 * OWED_REPLY_MEMORY;
        let checks = [
            ("--queue-capacity", self.queue_capacity as u64, QUEUED_JOB_MEMORY, "queued jobs"),
            ("--cache-entries", self.cache_entries as u64, CACHED_RESULT_MEMORY, "cached results"),
            ("--max-inflight", self.max_inflight as u64, owed, "replies owed on each of --max-connections"),
            ("--max-frame-memory", self.max_frame_memory as u64, 1, "bytes of partly received frames"),
        ];
        for (flag, count, each, what) in checks {
            machine.check_memory(flag, count, each, what).map_err(Error::Config)?;
        }
        Ok(())
    }
}
