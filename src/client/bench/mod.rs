//! The load generator behind `tc-client`: connections, pacing, measurement.
//!
//! [`run`] takes a validated [`BenchOptions`], optionally starts an embedded
//! server, asks the server what it is (mode, workers), opens every
//! connection, and drives each one on its own threads ([`driver`]). Each
//! connection records into its own [`Recorder`]; the recorders are merged
//! when the threads have joined. Per-request rows and interval histograms are
//! streamed out while the run goes ([`RunSinks`]), so nothing grows with the
//! length of the run.

pub mod driver;
pub mod lock_cycle;
pub mod mix;
pub mod options;
pub mod recorder;
pub mod sweep;

use std::net::TcpListener;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::connection::ServerConnection;
use crate::error::{Error, Result};
use crate::server::{Server, ServerConfig};
pub use driver::{RequestOutcome, RequestRecord};
pub use options::BenchOptions;
use options::{LoadModel, Target};
pub use recorder::Recorder;
use recorder::{latency_histogram, record_us};

/// How long to wait for connections and the server-info request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The plan every connection works from.
pub struct Plan {
    /// The validated options.
    pub options: BenchOptions,
    /// `host:port` of the server, for messages.
    pub address: String,
    /// When the run (warm-up included) starts; schedules count from here.
    pub start: Instant,
    /// With `--verify`, the expected compute result for `--size`.
    pub expected_compute: Option<u64>,
}

/// Live counters for the progress bar.
#[derive(Debug, Default)]
pub struct ProgressCounters {
    /// Requests written.
    pub sent: AtomicU64,
    /// Requests settled (reply, timeout or missing).
    pub done: AtomicU64,
    /// Settled with anything but a good result.
    pub problems: AtomicU64,
}

/// One connection's histogram for one interval of the interval log.
#[derive(Debug)]
pub enum IntervalMessage {
    /// Interval `index` is over for `connection`; `None` when it recorded nothing.
    Interval {
        /// Connection index.
        connection: usize,
        /// Interval number since the start of the run.
        index: u64,
        /// Latencies (from schedule, µs) of the interval's good replies.
        histogram: Option<Box<Histogram<u64>>>,
    },
    /// The connection has finished; expect nothing more from it.
    Finished {
        /// Connection index.
        connection: usize,
    },
}

/// Where connections stream what they measure while the run goes.
#[derive(Clone, Default)]
pub struct RunSinks {
    /// Progress counters.
    pub progress: Arc<ProgressCounters>,
    /// Per-request rows (`--requests-csv`), when wanted.
    pub requests: Option<Sender<RequestRecord>>,
    /// Interval histograms (`--hdr-log`), when wanted.
    pub intervals: Option<Sender<IntervalMessage>>,
}

/// Cuts one connection's latencies into fixed intervals for the interval log.
pub struct IntervalRecorder {
    connection: usize,
    start: Instant,
    length: Duration,
    index: u64,
    histogram: Histogram<u64>,
}

impl IntervalRecorder {
    /// Intervals of `length` from `start`.
    pub fn new(connection: usize, start: Instant, length: Duration) -> Self {
        IntervalRecorder { connection, start, length, index: 0, histogram: latency_histogram() }
    }

    fn index_at(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start);
        (elapsed.as_nanos() / self.length.as_nanos().max(1)) as u64
    }

    /// Hands every interval that ended before `now` to the sink.
    pub fn advance(&mut self, now: Instant, sink: &Option<Sender<IntervalMessage>>) {
        let Some(sink) = sink else { return };
        let target = self.index_at(now);
        while self.index < target {
            let histogram = (!self.histogram.is_empty())
                .then(|| Box::new(std::mem::replace(&mut self.histogram, latency_histogram())));
            let _ = sink.send(IntervalMessage::Interval {
                connection: self.connection,
                index: self.index,
                histogram,
            });
            self.index += 1;
        }
    }

    /// Records one latency at time `now`.
    pub fn record(&mut self, now: Instant, us: u64, sink: &Option<Sender<IntervalMessage>>) {
        if sink.is_some() {
            self.advance(now, sink);
            record_us(&mut self.histogram, us);
        }
    }

    /// Sends the last, partial interval and says this connection is done.
    pub fn finish(mut self, sink: &Option<Sender<IntervalMessage>>) {
        let Some(tx) = sink else { return };
        let now = Instant::now();
        self.advance(now, sink);
        let histogram = (!self.histogram.is_empty()).then(|| Box::new(self.histogram));
        let _ =
            tx.send(IntervalMessage::Interval { connection: self.connection, index: self.index, histogram });
        let _ = tx.send(IntervalMessage::Finished { connection: self.connection });
    }
}

/// What the server said about itself before the run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServerInfo {
    /// `host:port`.
    pub address: String,
    /// `processes` or `threads`.
    pub mode: String,
    /// Workers configured.
    pub workers: u64,
    /// The server run's id.
    pub instance: String,
    /// Whether this client started it (`--embedded`).
    pub embedded: bool,
    /// Whether its worker threads share a GIL (`--gil`).
    pub gil: bool,
}

/// A finished run: the plan, the server, and the merged measurements.
pub struct BenchRun {
    /// What was asked for.
    pub options: BenchOptions,
    /// The server measured.
    pub server: ServerInfo,
    /// Wall-clock start, for reports.
    pub started_at: SystemTime,
    /// Merged measurements of every connection.
    pub recorder: Recorder,
    /// From the start of the run to the last reply, warm-up included.
    pub wall_time: Duration,
    /// Why connections stopped early (one line each).
    pub connection_errors: Vec<String>,
}

impl BenchRun {
    /// Length of the measured part (first measured send to last measured reply).
    pub fn measured_time(&self) -> Duration {
        self.recorder.measured_span()
    }

    /// Measured replies (results and errors) per second of measured time.
    pub fn throughput(&self) -> f64 {
        let seconds = self.measured_time().as_secs_f64();
        if seconds > 0.0 {
            self.recorder.counts.answered() as f64 / seconds
        } else {
            0.0
        }
    }

    /// Whether anything went wrong (the exit code is non-zero then).
    pub fn failed(&self) -> bool {
        self.recorder.counts.problems() > 0 || !self.connection_errors.is_empty()
    }
}

/// A server to measure, and how to stop it afterwards.
struct ServerUnderTest {
    host: String,
    port: u16,
    embedded: Option<Server>,
}

impl ServerUnderTest {
    fn start(options: &BenchOptions) -> Result<Self> {
        Self::start_with(options, false)
    }

    /// As `start`; an embedded server requires the mutex for `predict` when
    /// `predict_lock` is set (`--cmd lock-cycle`).
    fn start_with(options: &BenchOptions, predict_lock: bool) -> Result<Self> {
        match &options.target {
            Target::Remote { host, port } => {
                Ok(ServerUnderTest { host: host.clone(), port: *port, embedded: None })
            }
            Target::Embedded { mode, workers, gil } => {
                let listener = TcpListener::bind("127.0.0.1:0")
                    .map_err(|e| Error::io("binding a loopback port for the embedded server", e))?;
                // Room for every request the client can have in flight, so a
                // closed-loop run never sees BUSY from its own server.
                let window = match options.load {
                    LoadModel::Closed { pipeline } => options.concurrency.saturating_mul(pipeline),
                    LoadModel::Open { .. } => 0,
                };
                let defaults = ServerConfig::default();
                let config = ServerConfig {
                    mode: *mode,
                    workers: *workers,
                    queue_capacity: defaults.queue_capacity.max(window),
                    auth_token: options.auth_token.clone(),
                    gil_switch_interval: *gil,
                    predict_lock,
                    ..defaults
                };
                let server = Server::start(listener, config)?;
                let addr = server.local_addr();
                Ok(ServerUnderTest { host: addr.ip().to_string(), port: addr.port(), embedded: Some(server) })
            }
        }
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Opens a connection, authenticating when a token is given.
    fn connect(&self, token: Option<&str>) -> Result<ServerConnection> {
        let mut connection = ServerConnection::connect(&self.host, self.port, CONNECT_TIMEOUT)?;
        if let Some(token) = token {
            connection.authenticate(token)?;
        }
        Ok(connection)
    }

    /// Asks the server for its mode and worker count.
    fn info(&self, token: Option<&str>) -> Result<ServerInfo> {
        let mut connection = self.connect(token)?;
        connection.send(br#"{"id":"tc-client-info","cmd":"stats"}"#)?;
        let reply: serde_json::Value = serde_json::from_slice(connection.receive()?)
            .map_err(|e| Error::Protocol(format!("{}: the stats reply is not JSON: {e}", self.address())))?;
        let stats = &reply["result"];
        let mode = stats["mode"].as_str().ok_or_else(|| {
            Error::Protocol(format!(
                "{}: the server did not describe itself (stats reply: {reply})",
                self.address()
            ))
        })?;
        Ok(ServerInfo {
            address: self.address(),
            mode: mode.to_string(),
            workers: stats["workers"]["configured"].as_u64().unwrap_or(0),
            instance: stats["instance"].as_str().unwrap_or_default().to_string(),
            embedded: self.embedded.is_some(),
            gil: !stats["gil"].is_null(),
        })
    }

    fn stop(self) {
        if let Some(server) = self.embedded {
            server.shutdown_handle().trigger();
            server.wait();
        }
    }
}

/// Runs a benchmark to completion.
///
/// # Errors
/// Only failures before the first request (no server, bad address, an
/// embedded server that cannot start). Trouble during the run is counted and
/// reported in the returned [`BenchRun`] instead, so what was measured is
/// never lost.
pub fn run(options: BenchOptions, sinks: RunSinks) -> Result<BenchRun> {
    options.validate().map_err(Error::Config)?;
    let server = ServerUnderTest::start(&options)?;
    let result = run_against(&server, options, sinks);
    server.stop();
    result
}

fn run_against(server: &ServerUnderTest, options: BenchOptions, sinks: RunSinks) -> Result<BenchRun> {
    let token = options.auth_token.as_deref();
    let info = server.info(token)?;
    // Every connection is opened before the clock starts, so a refused
    // connection fails the run at once and connecting is not measured.
    let mut streams = Vec::with_capacity(options.concurrency);
    for _ in 0..options.concurrency {
        streams.push(server.connect(token)?.into_stream());
    }
    let expected_compute = options.verify.then(|| crate::work::compute::compute(options.size));
    let started_at = SystemTime::now();
    let plan = Arc::new(Plan {
        options,
        address: info.address.clone(),
        // A short lead so every connection's thread is up before request 0.
        start: Instant::now() + Duration::from_millis(5),
        expected_compute,
    });

    let handles: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(index, stream)| {
            let plan = Arc::clone(&plan);
            let sinks = sinks.clone();
            thread::Builder::new()
                .name(format!("bench-conn-{index}"))
                .spawn(move || driver::run_connection(index, plan, stream, sinks))
                .map_err(|e| Error::io("starting a connection thread", e))
        })
        .collect::<Result<_>>()?;

    let mut recorder = Recorder::default();
    let mut connection_errors = Vec::new();
    for handle in handles {
        match handle.join() {
            Ok(result) => {
                recorder.merge(&result.recorder);
                connection_errors.extend(result.error);
            }
            Err(_) => connection_errors.push("a connection thread panicked".into()),
        }
    }
    let wall_time = plan.start.elapsed();
    let options = Arc::try_unwrap(plan).map(|p| p.options).unwrap_or_else(|p| p.options.clone());
    Ok(BenchRun { options, server: info, started_at, recorder, wall_time, connection_errors })
}
