//! The compute farm server: acceptor, connections, dispatcher, worker pool.
//!
//! ```text
//!             ┌──────────┐ accept  ┌────────────────────┐ frames ┌───────────┐
//!  clients ──▶│ acceptor │───────▶│ reader (1/conn)    │───────▶│ dispatcher│
//!             └──────────┘        │ ping/stats/errors ─┼─┐      └─────┬─────┘
//!                                 └────────────────────┘ │ insert(id→conn)│ bounded queue
//!                                                        │      ┌────────▼────────┐
//!             ┌────────────────┐   reply frames          │      │ Registry (Mutex)│
//!  clients ◀──│ writer (1/conn)│◀────────────────────────┘      └────────▲────────┘
//!             └────────────────┘◀── sink.send ── Completer ── take(id) ──┘
//!                                                   ▲
//!                                    worker threads │ or worker processes (ipc-channel)
//! ```
//!
//! [`Server::start`] takes an already-bound listener (tests bind port 0),
//! starts the pool, then the acceptor thread. [`ShutdownHandle::trigger`]
//! stops it; [`Server::wait`] returns once everything has stopped.

mod connections;
mod handler;
mod http;
mod images;
mod listener;
pub mod metrics;
mod models;
mod rate_limit;
mod report;

pub use report::{GilReport, HealthReport, JobCounts, LatencyReport, Readiness, StatsReport, WorkerCounts};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use connections::Connections;
use http::MetricsEndpoint;
use rate_limit::RateLimiter;

use crate::cache::ResultCache;
use crate::compute::DEFAULT_N;
use crate::dispatch::Dispatcher;
use crate::error::{Error, Result};
use crate::frame::DEFAULT_MAX_FRAME;
use crate::lock::LockCoordinator;
use crate::pool::{Mode, PoolConfig, WorkerBoard, WorkerCommand, WorkerPool};
use crate::protocol::ErrorCode;
use crate::protocol::Limits;
use crate::registry::Registry;
use crate::stats::Stats;

/// How long [`Server::wait`] waits for connections to wind down.
const CONNECTION_GRACE: Duration = Duration::from_secs(5);
/// How long [`Server::wait`] waits for workers to stop.
const POOL_GRACE: Duration = Duration::from_secs(5);

/// Everything that shapes a server, already validated by the caller (the CLI
/// turns flags into this).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Threads or processes.
    pub mode: Mode,
    /// Number of workers.
    pub workers: usize,
    /// Largest frame payload accepted, in bytes.
    pub max_frame: usize,
    /// Largest `n` of a compute job.
    pub max_n: u64,
    /// Jobs that may wait for a worker before new ones get `BUSY`.
    pub queue_capacity: usize,
    /// Replies a single connection may owe before the server stops reading it.
    pub max_inflight: usize,
    /// How long a worker process may take to start and connect back.
    pub spawn_timeout: Duration,
    /// What to run as a worker process; `None` re-executes this binary.
    pub worker_command: Option<WorkerCommand>,
    /// How long a started frame may take to arrive completely.
    pub read_timeout: Duration,
    /// How long one job may run before `TIMEOUT` and a new worker.
    pub job_timeout: Duration,
    /// Extra workers a job may be tried on after its worker crashed (for
    /// jobs that may safely run twice).
    pub retries: u32,
    /// Worker replacements allowed per `restart_window`.
    pub max_restarts: u32,
    /// The window of `max_restarts`.
    pub restart_window: Duration,
    /// Connections open at once; more get `BUSY` and are closed.
    pub max_connections: usize,
    /// Requests per second per client address (`None`: unlimited).
    pub rate_limit: Option<f64>,
    /// Results kept in the LRU result cache (0: no cache).
    pub cache_entries: usize,
    /// How long a shutdown waits for jobs in flight before failing them.
    pub drain_timeout: Duration,
    /// Accept the fault-injection commands (crash, hang, sleep, panic).
    pub allow_chaos: bool,
    /// Shared secret every connection must present first (`None`: open).
    pub auth_token: Option<String>,
    /// Thread mode: a CPython-style global lock with this switch interval.
    pub gil_switch_interval: Option<Duration>,
    /// The model file to serve (`--model`); `None` starts without a model
    /// (predictions get `MODEL_UNAVAILABLE` until `load_model`).
    pub model: Option<PathBuf>,
    /// The only directory `load_model` may read from (`--models-dir`).
    pub models_dir: PathBuf,
    /// `fire_detected = raw_score > threshold` (`--threshold`).
    pub threshold: f32,
    /// Largest image accepted, in bytes after base64 decoding (`--max-image-bytes`).
    pub max_image_bytes: usize,
    /// The accelerator mutex's lease (`--lock-timeout`).
    pub lock_timeout: Duration,
    /// ThreadCenter `predict` requires holding the mutex (`--predict-lock`);
    /// IdentyFire's predictions always do.
    pub predict_lock: bool,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (`--metrics-addr`;
    /// `None`: nowhere).
    pub metrics_addr: Option<SocketAddr>,
    /// Jobs running longer than this on a worker are logged at WARN
    /// (`--slow-ms`; `None`: never).
    pub slow_job: Option<Duration>,
}

/// Default `--max-image-bytes`: 10 MiB.
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            mode: Mode::Processes,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
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
            max_connections: 4096,
            rate_limit: None,
            cache_entries: 0,
            drain_timeout: Duration::from_secs(10),
            allow_chaos: false,
            auth_token: None,
            gil_switch_interval: None,
            // The shipped model, when the source tree is where it was built.
            model: Some(crate::model::default_models_dir().join(crate::model::DEFAULT_MODEL_FILE))
                .filter(|path| path.is_file()),
            models_dir: crate::model::default_models_dir(),
            threshold: 0.5,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            lock_timeout: Duration::from_secs(30),
            predict_lock: false,
            metrics_addr: None,
            slow_job: None,
        }
    }
}

impl ServerConfig {
    /// Bounds on request arguments.
    pub fn limits(&self) -> Limits {
        Limits { max_n: self.max_n, allow_chaos: self.allow_chaos }
    }

    /// Checks that every value is usable.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first value out of range.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("--workers", self.workers),
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
        if self.max_frame > u32::MAX as usize {
            return Err(Error::Config(format!("--max-frame must be at most {} bytes", u32::MAX)));
        }
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
            if !rate.is_finite() || rate <= 0.0 {
                return Err(Error::Config(format!(
                    "--rate-limit must be a positive number of requests per second, not {rate}"
                )));
            }
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
}

/// What every connection thread shares.
struct Farm {
    config: ServerConfig,
    dispatcher: Dispatcher,
    stats: Stats,
    board: Arc<WorkerBoard>,
    connections: Connections,
    rate_limiter: Option<RateLimiter>,
    gil: Option<Arc<crate::gil::Gil>>,
    /// The model being served, and where `load_model` may look.
    models: models::ModelCatalog,
    /// The accelerator mutex.
    lock: LockCoordinator,
    /// Set when a shutdown begins: new requests get `SHUTTING_DOWN`.
    draining: AtomicBool,
}

impl Farm {
    fn stats_report(&self) -> StatsReport {
        let counters = self.stats.counters();
        StatsReport {
            instance: self.stats.instance(),
            uptime_s: self.stats.uptime_s(),
            mode: self.config.mode,
            workers: WorkerCounts {
                configured: self.board.configured(),
                alive: self.board.alive(),
                throttled: self.board.throttled(),
                abandoned_threads: self.board.abandoned_threads(),
            },
            worker_list: self.board.snapshot(),
            connections: counters.connections,
            requests: counters.requests,
            errors: counters.errors,
            replies: counters.replies,
            jobs: JobCounts {
                in_flight: self.dispatcher.in_flight(),
                queued: self.dispatcher.queue_depth(),
                queue_capacity: self.dispatcher.queue_capacity(),
                completed: counters.jobs_completed,
                cancelled: counters.jobs_cancelled,
                retried: counters.jobs_retried,
                timed_out: counters.jobs_timed_out,
                replies_dropped: counters.replies_dropped,
            },
            cache: self.dispatcher.cache().map(|c| c.stats()),
            gil: self.gil.as_ref().map(|gil| GilReport {
                switch_interval_ms: gil.switch_interval().as_secs_f64() * 1000.0,
                switches: gil.switches(),
            }),
            draining: self.draining.load(Ordering::SeqCst),
            model: self.models.current().map(|m| m.name),
            mutex: Some(self.lock.snapshot()),
            latency_us: LatencyReport { queue_wait: counters.queue_wait_us, service: counters.service_us },
        }
    }

    /// IdentyFire's `health_check` answer, in its field names.
    fn identyfire_health(&self) -> serde_json::Value {
        let model = self.models.current();
        let lock = self.lock.snapshot();
        let counters = self.stats.counters();
        let status = if self.draining.load(Ordering::SeqCst) { "draining" } else { "online" };
        serde_json::json!({
            "status": status,
            "model_loaded": model.is_some(),
            "model_name": model.map(|m| m.name),
            "uptime": self.stats.uptime_s(),
            "mutex_locked": lock.locked,
            "mutex_owner": lock.owner,
            "stats": {
                "requests": counters.requests,
                "errors": counters.errors,
                "jobs_completed": counters.jobs_completed,
                "workers_alive": self.board.alive(),
                "workers_configured": self.board.configured(),
                "mode": self.config.mode,
                "mutex_queue_length": lock.queue_length,
                "mutex_grants": lock.grants,
            },
        })
    }

    /// What `/readyz` answers.
    fn readiness(&self) -> Readiness {
        Readiness::assess(
            self.board.alive(),
            self.board.configured(),
            self.dispatcher.queue_depth(),
            self.dispatcher.queue_capacity(),
            self.draining.load(Ordering::SeqCst),
        )
    }

    fn health_report(&self) -> HealthReport {
        let mut report = HealthReport::new(self.config.mode, self.board.alive(), self.board.configured());
        report.restarts_throttled = self.board.throttled() > 0;
        if self.draining.load(Ordering::SeqCst) {
            report.status = "draining".into();
        }
        report
    }
}

/// Stops a running server from any thread (a signal handler, a test).
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    wake: SocketAddr,
}

impl ShutdownHandle {
    /// Asks the server to stop. The acceptor sits in a blocking `accept`, so
    /// after setting the flag we connect to the server once ourselves: that
    /// connection wakes it up, it sees the flag, and it stops.
    pub fn trigger(&self) {
        if !self.flag.swap(true, Ordering::SeqCst) {
            let _ = TcpStream::connect_timeout(&self.wake, Duration::from_secs(1));
        }
    }

    /// Whether a stop was asked for.
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    shutdown: ShutdownHandle,
    acceptor: JoinHandle<()>,
    farm: Arc<Farm>,
    pool: WorkerPool,
    metrics: Option<MetricsEndpoint>,
}

impl Server {
    /// Starts the worker pool, then accepts connections on `listener` in a
    /// new thread. When this returns the server is ready to serve.
    ///
    /// # Errors
    /// An invalid configuration, or workers that cannot be started.
    pub fn start(listener: TcpListener, config: ServerConfig) -> Result<Server> {
        config.validate()?;
        let addr = listener.local_addr().map_err(|e| Error::io("reading the listener's address", e))?;
        let stats = Stats::new();
        let cache = NonZeroUsize::new(config.cache_entries).map(|n| Arc::new(ResultCache::new(n)));
        // Bind the metrics address first: a port already in use fails the
        // start before any worker has been spawned.
        let metrics_listener = match config.metrics_addr {
            Some(metrics_addr) => Some(
                TcpListener::bind(metrics_addr)
                    .map_err(|e| Error::io(format!("listening for metrics on {metrics_addr}"), e))?,
            ),
            None => None,
        };
        let (dispatcher, queues) =
            Dispatcher::new(config.queue_capacity, config.retries, Registry::new(), stats.clone(), cache);
        let dispatcher = dispatcher.warn_slow_jobs(config.slow_job);
        let catalog = models::ModelCatalog::start(config.models_dir.clone(), config.model.as_deref())
            .map_err(Error::Config)?;
        let worker_command = match &config.worker_command {
            Some(command) => command.clone(),
            None => WorkerCommand::current_exe()?,
        };
        let pool = WorkerPool::start(
            &PoolConfig {
                mode: config.mode,
                workers: config.workers,
                worker_command,
                spawn_timeout: config.spawn_timeout,
                job_timeout: config.job_timeout,
                max_restarts: config.max_restarts,
                restart_window: config.restart_window,
                gil_switch_interval: config.gil_switch_interval,
                model: catalog.current().map(|info| info.path),
            },
            queues,
            dispatcher.completer(),
        )?;
        let farm = Arc::new(Farm {
            gil: pool.gil(),
            board: pool.board(),
            rate_limiter: config.rate_limit.map(RateLimiter::new),
            models: catalog,
            lock: LockCoordinator::new(config.lock_timeout),
            config,
            dispatcher,
            stats,
            connections: Connections::default(),
            draining: AtomicBool::new(false),
        });
        let metrics = match metrics_listener {
            Some(listener) => Some(MetricsEndpoint::start(listener, Arc::clone(&farm))?),
            None => None,
        };
        let shutdown = ShutdownHandle { flag: Arc::new(AtomicBool::new(false)), wake: wake_address(addr) };
        let acceptor = {
            let farm = Arc::clone(&farm);
            let flag = Arc::clone(&shutdown.flag);
            thread::Builder::new()
                .name("acceptor".into())
                .spawn(move || listener::accept_loop(listener, farm, flag))
                .map_err(|e| Error::io("starting the acceptor thread", e))?
        };
        tracing::info!(
            %addr,
            mode = farm.config.mode.as_str(),
            workers = farm.config.workers,
            max_n = farm.config.max_n,
            max_frame = farm.config.max_frame,
            queue_capacity = farm.config.queue_capacity,
            max_inflight = farm.config.max_inflight,
            max_connections = farm.config.max_connections,
            job_timeout = ?farm.config.job_timeout,
            read_timeout = ?farm.config.read_timeout,
            retries = farm.config.retries,
            rate_limit = ?farm.config.rate_limit,
            cache_entries = farm.config.cache_entries,
            allow_chaos = farm.config.allow_chaos,
            auth = farm.config.auth_token.is_some(),
            model = farm.models.current().map(|m| m.path.display().to_string()),
            models_dir = %farm.config.models_dir.display(),
            threshold = farm.config.threshold,
            max_image_bytes = farm.config.max_image_bytes,
            lock_timeout = ?farm.config.lock_timeout,
            predict_lock = farm.config.predict_lock,
            metrics_addr = metrics.as_ref().map(|m| m.local_addr().to_string()),
            slow_ms = farm.config.slow_job.map(|d| d.as_secs_f64() * 1000.0),
            "server started"
        );
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "listening on a non-loopback address: anyone who can reach it can submit jobs");
        }
        if let Some(metrics_addr) = metrics.as_ref().map(MetricsEndpoint::local_addr) {
            if !metrics_addr.ip().is_loopback() {
                tracing::warn!(%metrics_addr, "metrics on a non-loopback address: keep it on a private network");
            }
        }
        Ok(Server { addr, shutdown, acceptor, farm, pool, metrics })
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsEndpoint::local_addr)
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops this server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Blocks until a shutdown is triggered, then stops in order, losing
    /// nothing that was accepted:
    /// 1. stop accepting connections;
    /// 2. drain: new requests get `SHUTTING_DOWN`, jobs in flight run to the
    ///    end and deliver their replies, for up to `--drain-timeout`;
    /// 3. answer whatever is still in flight with `SHUTTING_DOWN`;
    /// 4. stop reading, let writers deliver the last replies, close;
    /// 5. stop the workers (reaping every worker process);
    /// 6. stop the metrics endpoint, which until then answers `/readyz`
    ///    with 503 so load balancers stop sending work.
    pub fn wait(self) {
        let Server { acceptor, farm, mut pool, metrics, .. } = self;
        let _ = acceptor.join();

        farm.draining.store(true, Ordering::SeqCst);
        farm.lock.close(); // clients waiting for the mutex get their answer now
        let deadline = Instant::now() + farm.config.drain_timeout;
        let in_flight = farm.dispatcher.in_flight();
        if in_flight > 0 {
            tracing::info!(in_flight, timeout = ?farm.config.drain_timeout, "draining jobs in flight");
        }
        while farm.dispatcher.in_flight() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let failed = farm.dispatcher.fail_all(
            ErrorCode::ShuttingDown,
            "the server stopped before the job finished (--drain-timeout ran out)",
        );
        if failed > 0 {
            tracing::warn!(failed, "jobs still running at the end of the drain were answered SHUTTING_DOWN");
        }

        farm.connections.close_reads();
        if !farm.connections.wait_until_empty(CONNECTION_GRACE) {
            // Clients that do not read their last replies: cut them off.
            farm.connections.close_all();
            if !farm.connections.wait_until_empty(CONNECTION_GRACE) {
                tracing::warn!(open = farm.connections.len(), "some connections did not close in time");
            }
        }
        pool.stop(POOL_GRACE);
        if let Some(metrics) = metrics {
            metrics.stop();
        }
        tracing::info!("server stopped");
    }
}

/// The address to connect to in order to wake the acceptor: the bound
/// address, or loopback when bound to "any" (0.0.0.0 / ::).
fn wake_address(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bound.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), bound.port()),
        _ => bound,
    }
}
