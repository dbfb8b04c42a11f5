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
mod listener;
mod report;

pub use report::{HealthReport, JobCounts, LatencyReport, StatsReport, WorkerCounts};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use connections::Connections;

use crate::compute::DEFAULT_N;
use crate::dispatch::Dispatcher;
use crate::error::{Error, Result};
use crate::frame::DEFAULT_MAX_FRAME;
use crate::pool::{Mode, PoolConfig, WorkerBoard, WorkerCommand, WorkerPool};
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
}

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
        }
    }
}

impl ServerConfig {
    /// Bounds on request arguments.
    pub fn limits(&self) -> Limits {
        Limits { max_n: self.max_n }
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
        ];
        for (flag, value) in positive {
            if value == 0 {
                return Err(Error::Config(format!("{flag} must be at least 1")));
            }
        }
        if self.max_frame > u32::MAX as usize {
            return Err(Error::Config(format!(
                "--max-frame must be at most {} bytes",
                u32::MAX
            )));
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
            },
            worker_list: self.board.snapshot(),
            connections: counters.connections,
            requests: counters.requests,
            errors: counters.errors,
            jobs: JobCounts {
                in_flight: self.dispatcher.in_flight(),
                queued: self.dispatcher.queue_depth(),
                queue_capacity: self.dispatcher.queue_capacity(),
                completed: counters.jobs_completed,
                cancelled: counters.jobs_cancelled,
                replies_dropped: counters.replies_dropped,
            },
            latency_us: LatencyReport {
                queue_wait: counters.queue_wait_us,
                service: counters.service_us,
            },
        }
    }

    fn health_report(&self) -> HealthReport {
        HealthReport::new(self.config.mode, self.board.alive(), self.board.configured())
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
}

impl Server {
    /// Starts the worker pool, then accepts connections on `listener` in a
    /// new thread. When this returns the server is ready to serve.
    ///
    /// # Errors
    /// An invalid configuration, or workers that cannot be started.
    pub fn start(listener: TcpListener, config: ServerConfig) -> Result<Server> {
        config.validate()?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the listener's address", e))?;
        let stats = Stats::new();
        let (dispatcher, jobs) = Dispatcher::new(config.queue_capacity, Registry::new(), stats.clone());
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
            },
            jobs,
            dispatcher.completer(),
        )?;
        let farm = Arc::new(Farm {
            board: pool.board(),
            config,
            dispatcher,
            stats,
            connections: Connections::default(),
        });
        let shutdown = ShutdownHandle {
            flag: Arc::new(AtomicBool::new(false)),
            wake: wake_address(addr),
        };
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
            "server started"
        );
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "listening on a non-loopback address: anyone who can reach it can submit jobs");
        }
        Ok(Server {
            addr,
            shutdown,
            acceptor,
            farm,
            pool,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops this server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Blocks until a shutdown is triggered, then stops in order: no more
    /// accepts, close every connection, stop the workers (reaping every
    /// worker process).
    pub fn wait(self) {
        let Server {
            acceptor,
            farm,
            mut pool,
            ..
        } = self;
        let _ = acceptor.join();
        farm.connections.close_all();
        if !farm.connections.wait_until_empty(CONNECTION_GRACE) {
            tracing::warn!(
                open = farm.connections.len(),
                "some connections did not close in time"
            );
        }
        pool.stop(POOL_GRACE);
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
