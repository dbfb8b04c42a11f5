//! **Server side** — everything inside `tc-server` that a worker host does
//! not share: the listener, each connection's reader and reply path, the
//! commands, a job's life, the gateway, stats and metrics.
//!
//! ```text
//!             ┌──────────┐ accept  ┌────────────────────┐ frames ┌──────────────┐
//!  clients ──▶│ listener │───────▶│ reader (1/conn)    │───────▶│ cmd/ → jobs  │
//!             └──────────┘        │ ping/stats/errors ─┼─┐      └──────┬───────┘
//!                                 └────────────────────┘ │ insert(id→conn)│ bounded queue
//!                                                        │      ┌────────▼────────┐
//!             ┌────────────────┐   reply frames          │      │ registry (Mutex)│
//!  clients ◀──│ replies        │◀────────────────────────┘      └────────▲────────┘
//!             └────────────────┘◀── sink.send ── completer ── take(id) ──┘
//!                                                   ▲
//!                                  pool: worker threads │ or worker processes (ipc-channel)
//! ```
//!
//! Every module of the server, once:
//!
//! | module | owns |
//! |---|---|
//! | [`listener`] | the acceptor thread: one connection, one reader thread |
//! | [`connection`] | the read side of a client socket: frames in, with a deadline for a frame that never completes |
//! | [`reader`] | a connection's read loop and its gates (auth, rate limit, drain) |
//! | [`session`] | what a command sees of its connection: the one way to answer it inline |
//! | [`replies`] | the write side of a client socket: every path a reply takes, and flow control |
//! | [`connection_table`] | the open connections: closed all at shutdown, counted per address |
//! | [`cmd`] | the commands, one file per family |
//! | [`admission`] | whether any worker or worker host can take a job at all |
//! | [`jobs`] | a job's life: submit or cached, the registry, the completer, the cache |
//! | [`gateway`] | `--nats` (the `nats` feature): forwarding jobs to worker hosts, taking their results back |
//! | [`gateway_status`] | what stats and probes read of a gateway: its hosts, its link, its counters |
//! | [`config`] | the server's settings |
//! | [`stats`], [`report`] | counters and histograms; the `stats` / `health` / `/readyz` bodies |
//! | [`metrics`], [`pages`], [`watch`] | the server's `/metrics`; its pages on the operator endpoint; the dashboard's frames |
//! | [`lock`] | the accelerator mutex (IdentyFire's) |
//! | [`models`], [`images`] | the served model and `load_model`; base64 images into job buffers |
//! | [`rate_limit`] | per-client request budgets (`--rate-limit`) |
//!
//! The worker pool and the operator's HTTP endpoint are not here: a worker
//! host runs them too, so they live in [`crate::runtime`].
//!
//! [`Server::start`] takes an already-bound listener (tests bind port 0),
//! starts the pool, then the listener thread. [`ShutdownHandle::trigger`]
//! stops it; [`Server::wait`] returns once everything has stopped.

pub(crate) mod admission;
pub(crate) mod cmd;
pub(crate) mod config;
pub(crate) mod connection;
pub(crate) mod connection_table;
#[cfg(feature = "nats")]
pub(crate) mod gateway;
pub(crate) mod gateway_status;
pub(crate) mod images;
pub(crate) mod jobs;
pub(crate) mod listener;
pub(crate) mod lock;
pub(crate) mod metrics;
pub(crate) mod models;
pub(crate) mod pages;
pub(crate) mod rate_limit;
pub(crate) mod reader;
pub(crate) mod replies;
pub(crate) mod report;
pub(crate) mod session;
pub(crate) mod stats;
pub(crate) mod watch;

pub(crate) use config::ServerConfig;
pub(crate) use report::StatsReport;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::runtime::http::{EventHub, Greeter, MetricsEndpoint};
use connection_table::ConnectionTable;
use rate_limit::RateLimiter;

use crate::error::{Error, Result};
use crate::protocol::{ErrorCode, ReplyError};
use crate::runtime::http::HttpLimits;
use crate::runtime::pool::{JobQueues, PoolConfig, WorkerBoard, WorkerCommand, WorkerPool};
#[cfg(feature = "nats")]
use crate::server::gateway::{Gateway, GatewaySettings};
use crate::server::gateway_status::GatewayStatus;
use crate::server::jobs::cache::ResultCache;
use crate::server::jobs::registry::Registry;
use crate::server::jobs::Jobs;
use crate::server::lock::LockCoordinator;
use crate::server::stats::Stats;

/// How long [`Server::wait`] waits for connections to wind down.
const CONNECTION_GRACE: Duration = Duration::from_secs(5);
/// How long [`Server::wait`] waits for workers to stop.
const POOL_GRACE: Duration = Duration::from_secs(5);

/// What every connection thread shares: built once by [`Server::start`],
/// then held in an `Arc` by the acceptor, every reader, the metrics
/// endpoint and the dashboard's frame thread. Nothing here is behind a lock
/// of the farm's own; each field brings its own concurrency, said below.
pub(crate) struct Farm {
    /// The settings it was started with. Read-only.
    config: ServerConfig,
    /// Where readers submit jobs (and look the cache up); the pool holds
    /// the completer end. Internally a bounded channel and the registry's
    /// `Mutex`.
    jobs: Jobs,
    /// Counters and histograms: atomics, bumped by every thread, read by
    /// `stats`, `/metrics` and the dashboard.
    stats: Stats,
    /// What each worker is doing: written by the pool's threads, read by
    /// admission, `stats` and the dashboard (atomics per slot).
    board: Arc<WorkerBoard>,
    /// The table of open connections: the acceptor adds, readers remove, a
    /// shutdown closes them all (a `Mutex`ed map and a condvar to wait on).
    connections: ConnectionTable,
    /// Per-client request budgets (`--rate-limit`), checked by readers.
    rate_limiter: Option<RateLimiter>,
    /// The GIL of a thread-mode demo (`--gil`): taken by worker threads,
    /// read by `stats` and the dashboard.
    gil: Option<Arc<crate::work::gil::Gil>>,
    /// The model being served, and where `load_model` may look: swapped by
    /// `load_model` (an `RwLock`), read by `model` and predictions.
    models: models::ModelCatalog,
    /// The accelerator mutex (IdentyFire's): its own `Mutex` and condvar,
    /// used by the mutex commands and predictions under `--predict-lock`.
    lock: LockCoordinator,
    /// The worker hosts, the NATS link and the gateway's counters
    /// (`--nats`): written by the gateway's tasks, read by admission and
    /// `stats`.
    remote: Option<Arc<GatewayStatus>>,
    /// The job port's TLS (`--tls-cert`), or `None` for plain TCP. Read-only;
    /// each accepted connection starts its session from it.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The memory budget of frames still arriving (`--max-frame-memory`),
    /// shared by every connection's read buffer.
    frame_memory: Arc<crate::frame::FrameMemory>,
    /// Set when a shutdown begins: new requests get `SHUTTING_DOWN`.
    /// `SeqCst`, like the acceptor's stop flag: these flags change once per
    /// run, so their cost is nothing, and the strongest ordering keeps the
    /// reasoning simple — once `wait` has stored it, every reader that
    /// admits a request afterwards sees it.
    draining: AtomicBool,
}

/// Stops a running server from any thread (a signal handler, a test).
#[derive(Clone, Debug)]
pub(crate) struct ShutdownHandle {
    /// `SeqCst` (see `Farm::draining`): the acceptor must see it set once the
    /// wake-up connection arrives, which the connect/accept pair already
    /// orders; the strongest ordering costs nothing on a once-per-run flag.
    flag: Arc<AtomicBool>,
    wake: SocketAddr,
}

impl ShutdownHandle {
    /// Asks the server to stop. The acceptor sits in a blocking `accept`, so
    /// after setting the flag we connect to the server once ourselves: that
    /// connection wakes it up, it sees the flag, and it stops.
    pub(crate) fn trigger(&self) {
        if !self.flag.swap(true, Ordering::SeqCst) {
            let _ = TcpStream::connect_timeout(&self.wake, Duration::from_secs(1));
        }
    }
}

/// A running server.
pub(crate) struct Server {
    addr: SocketAddr,
    shutdown: ShutdownHandle,
    acceptor: JoinHandle<()>,
    farm: Arc<Farm>,
    pool: Option<WorkerPool>,
    #[cfg(feature = "nats")]
    gateway: Option<Gateway>,
    metrics: Option<MetricsEndpoint>,
    /// The dashboard's frame thread, and what stops it.
    frames: Option<JoinHandle<()>>,
    frames_stop: Arc<AtomicBool>,
}

impl Server {
    /// Starts the worker pool, then accepts connections on `listener` in a
    /// new thread. When this returns the server is ready to serve.
    ///
    /// # Errors
    /// An invalid configuration, or workers that cannot be started.
    pub(crate) fn start(listener: TcpListener, config: ServerConfig) -> Result<Server> {
        // 1. Every value, and every count against what the machine holds: a
        //    connection or worker the machine cannot give threads or memory
        //    to would abort the process (and lose every job in flight) later.
        config.validate()?;
        let addr = listener.local_addr().map_err(|e| Error::io("reading the listener's address", e))?;
        // 2. Certificates read and the metrics port bound: a missing file or
        //    a port in use fails the start before any worker is spawned.
        let opened = Opened::open(&config)?;
        // 3. A job's bookkeeping: the bounded queues, the registry of who
        //    asked, the cache, and (with an endpoint to show it on) the
        //    dashboard's record of every answered job.
        let stats = Stats::new();
        let cache = NonZeroUsize::new(config.cache_entries).map(|n| Arc::new(ResultCache::new(n)));
        let (jobs, queues) =
            Jobs::new(config.queue_capacity, config.retries, Registry::new(), stats.clone(), cache);
        let watch = opened.metrics.as_ref().map(|_| Arc::new(watch::Watch::new()));
        let jobs = jobs.warn_slow_jobs(config.slow_job).watched_by(watch.clone());
        // 4. Who runs the jobs: the local pool (unless this is a pure
        //    gateway, `--workers 0`) and, past one machine, the worker hosts
        //    fed from the same queues.
        let catalog = models::ModelCatalog::start(config.models_dir.clone(), config.model.as_deref())?;
        // One board, shared: the pool's workers write it; the readers (is any
        // worker up?) and the reports read it.
        let board = Arc::new(WorkerBoard::new(config.workers));
        let pool = start_pool(&config, &catalog, &queues, &jobs, &board)?;
        #[cfg(feature = "nats")]
        let gateway = start_gateway(&config, queues, &jobs)?;
        #[cfg(feature = "nats")]
        let remote = gateway.as_ref().map(Gateway::status);
        // Built without `nats`, `--nats` was refused by `validate`.
        #[cfg(not(feature = "nats"))]
        let remote = None;
        // 5. What every connection shares.
        let farm = Arc::new(Farm {
            gil: pool.as_ref().and_then(WorkerPool::gil),
            remote,
            tls: opened.tls,
            board,
            rate_limiter: config.rate_limit.map(RateLimiter::new),
            models: catalog,
            lock: LockCoordinator::new(config.lock_timeout),
            frame_memory: Arc::new(crate::frame::FrameMemory::new(config.max_frame_memory)),
            config,
            jobs,
            stats,
            connections: ConnectionTable::default(),
            draining: AtomicBool::new(false),
        });
        // 6. The operator endpoint and the dashboard's frames.
        let frames_stop = Arc::new(AtomicBool::new(false));
        let (metrics, frames) = match (opened.metrics, watch) {
            (Some((listener, limits)), Some(watch)) => {
                let (endpoint, frames) = serve_dashboard(&farm, listener, limits, watch, &frames_stop)?;
                (Some(endpoint), Some(frames))
            }
            _ => (None, None),
        };
        // 7. Accept connections: from here on the server answers.
        let shutdown = ShutdownHandle { flag: Arc::new(AtomicBool::new(false)), wake: wake_address(addr) };
        let acceptor = {
            let farm = Arc::clone(&farm);
            let flag = Arc::clone(&shutdown.flag);
            thread::Builder::new()
                .name("acceptor".into())
                .spawn(move || listener::accept_loop(listener, farm, flag))
                .map_err(|e| Error::io("starting the acceptor thread", e))?
        };
        warn_if_reachable(addr, metrics.as_ref().map(MetricsEndpoint::local_addr));
        Ok(Server {
            addr,
            shutdown,
            acceptor,
            farm,
            pool,
            #[cfg(feature = "nats")]
            gateway,
            metrics,
            frames,
            frames_stop,
        })
    }

    /// Logs the settings the server runs with (one INFO line, "server
    /// started"). Not part of [`Server::start`]: `tc-server` logs it after
    /// printing its `listening on` line, so on a terminal that line is not
    /// lost among the settings.
    pub(crate) fn log_settings(&self) {
        tracing::info!(
            addr = %self.addr,
            mode = self.farm.config.mode.as_str(),
            workers = self.farm.config.workers,
            max_n = self.farm.config.max_n,
            max_frame = self.farm.config.max_frame,
            queue_capacity = self.farm.config.queue_capacity,
            max_inflight = self.farm.config.max_inflight,
            max_connections = self.farm.config.max_connections,
            job_timeout = ?self.farm.config.job_timeout,
            read_timeout = ?self.farm.config.read_timeout,
            retries = self.farm.config.retries,
            rate_limit = ?self.farm.config.rate_limit,
            cache_entries = self.farm.config.cache_entries,
            allow_chaos = self.farm.config.allow_chaos,
            auth = self.farm.config.auth_token.is_some(),
            model = self.farm.models.current().map(|m| m.path.display().to_string()),
            models_dir = %self.farm.config.models_dir.display(),
            threshold = self.farm.config.threshold,
            max_image_bytes = self.farm.config.max_image_bytes,
            lock_timeout = ?self.farm.config.lock_timeout,
            predict_lock = self.farm.config.predict_lock,
            metrics_addr = self.metrics.as_ref().map(|m| m.local_addr().to_string()),
            slow_ms = self.farm.config.slow_job.map(|d| d.as_secs_f64() * 1000.0),
            "server started"
        );
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub(crate) fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsEndpoint::local_addr)
    }

    /// The address actually bound (useful with port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops this server.
    pub(crate) fn shutdown_handle(&self) -> ShutdownHandle {
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
    pub(crate) fn wait(self) {
        let Server {
            acceptor,
            farm,
            pool,
            #[cfg(feature = "nats")]
            gateway,
            metrics,
            frames,
            frames_stop,
            ..
        } = self;
        let _ = acceptor.join();

        farm.draining.store(true, Ordering::SeqCst);
        farm.lock.close(); // clients waiting for the mutex get their answer now
        let deadline = Instant::now() + farm.config.drain_timeout;
        let in_flight = farm.jobs.in_flight();
        if in_flight > 0 {
            tracing::info!(in_flight, timeout = ?farm.config.drain_timeout, "draining jobs in flight");
        }
        // Poll: the registry has no "became empty" notification, and adding
        // one would put a condvar signal on every finished job's path to
        // serve this once-per-run wait. 5 ms adds at most 5 ms to a stop.
        while farm.jobs.in_flight() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let failed = farm.jobs.fail_all(&ReplyError::new(
            ErrorCode::ShuttingDown,
            "the server stopped before the job finished (--drain-timeout ran out)",
        ));
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
        #[cfg(feature = "nats")]
        if let Some(gateway) = gateway {
            gateway.stop();
        }
        if let Some(mut pool) = pool {
            pool.stop(POOL_GRACE);
        }
        frames_stop.store(true, Ordering::SeqCst);
        if let Some(frames) = frames {
            let _ = frames.join();
        }
        if let Some(metrics) = metrics {
            metrics.stop();
        }
        tracing::info!("server stopped");
    }
}

/// What [`Server::start`] opens before it starts anything: the files and the
/// port whose failure should stop the start while nothing runs yet.
struct Opened {
    /// The job port's TLS configuration (`--tls-cert`).
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The operator endpoint's bound port and its limits (`--metrics-addr`).
    metrics: Option<(TcpListener, HttpLimits)>,
}

impl Opened {
    fn open(config: &ServerConfig) -> Result<Opened> {
        let tls = config.tls.as_ref().map(crate::tls::server_config).transpose()?;
        let Some(metrics_addr) = config.metrics_addr else {
            return Ok(Opened { tls, metrics: None });
        };
        let mut limits = config.metrics_limits.clone();
        if config.metrics_tls {
            // The job port's certificate, without its client-certificate
            // check: scrapers and probes authenticate with the bearer token.
            let files =
                config.tls.as_ref().map(|files| crate::tls::TlsFiles { client_ca: None, ..files.clone() });
            limits.tls = files.as_ref().map(crate::tls::server_config).transpose()?;
        }
        let listener = TcpListener::bind(metrics_addr)
            .map_err(|e| Error::io(format!("listening for metrics on {metrics_addr}"), e))?;
        Ok(Opened { tls, metrics: Some((listener, limits)) })
    }
}

/// The local worker pool, or `None` for a pure gateway (`--workers 0`).
fn start_pool(
    config: &ServerConfig,
    catalog: &models::ModelCatalog,
    queues: &JobQueues,
    jobs: &Jobs,
    board: &Arc<WorkerBoard>,
) -> Result<Option<WorkerPool>> {
    if config.workers == 0 {
        return Ok(None);
    }
    let worker_command = match &config.worker_command {
        Some(command) => command.clone(),
        None => WorkerCommand::current_exe()?,
    };
    let pool_config = PoolConfig {
        mode: config.mode,
        workers: config.workers,
        worker_command,
        spawn_timeout: config.spawn_timeout,
        job_timeout: config.job_timeout,
        max_restarts: config.max_restarts,
        restart_window: config.restart_window,
        gil_switch_interval: config.gil_switch_interval,
        model: catalog.current().map(|info| info.path),
    };
    let pool =
        WorkerPool::start(&pool_config, queues.clone(), Arc::new(jobs.completer()), Arc::clone(board))?;
    Ok(Some(pool))
}

/// The gateway to worker hosts over NATS (`--nats`), or `None`.
#[cfg(feature = "nats")]
fn start_gateway(config: &ServerConfig, queues: JobQueues, jobs: &Jobs) -> Result<Option<Gateway>> {
    let Some(nats) = &config.nats else { return Ok(None) };
    let settings = GatewaySettings {
        retries: config.retries,
        local_workers: config.workers,
        max_jobs: config.nats_max_jobs,
        max_parcel: config.nats_max_parcel,
        job_timeout: config.job_timeout,
    };
    Gateway::start(nats, queues, jobs.completer(), settings).map(Some)
}

/// Serves the operator endpoint with the server's pages, and starts the
/// thread that turns the farm's state into the dashboard's frames.
fn serve_dashboard(
    farm: &Arc<Farm>,
    listener: TcpListener,
    limits: HttpLimits,
    watch: Arc<watch::Watch>,
    stop: &Arc<AtomicBool>,
) -> Result<(MetricsEndpoint, JoinHandle<()>)> {
    let hub = EventHub::new(limits.max_streams);
    let builder = watch::frames::FrameBuilder::new(Arc::clone(farm), watch, Arc::clone(&hub));
    let frames =
        builder.start(Arc::clone(stop)).map_err(|e| Error::io("starting the dashboard's frame thread", e))?;
    let greeter: Arc<dyn Greeter> = builder;
    let pages = pages::ServerPages::new(Arc::clone(farm), Some((hub, greeter)));
    let endpoint = MetricsEndpoint::serve(listener, Arc::new(pages), limits)?;
    Ok((endpoint, frames))
}

/// A port anyone on the network can reach is worth a line in the log.
fn warn_if_reachable(addr: SocketAddr, metrics_addr: Option<SocketAddr>) {
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "listening on a non-loopback address: anyone who can reach it can submit jobs");
    }
    if let Some(metrics_addr) = metrics_addr.filter(|a| !a.ip().is_loopback()) {
        tracing::warn!(%metrics_addr, "metrics on a non-loopback address: keep it on a private network");
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
