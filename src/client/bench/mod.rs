//! The load generator behind `tc-client`: connections, pacing, measurement.
//!
//! [`run`] takes a validated [`BenchOptions`], optionally starts an embedded
//! server, asks the server what it is (mode, workers), opens every
//! connection, and drives each one on its own threads ([`driver`]). Each
//! connection records into its own [`Recorder`]; the recorders are merged
//! when the threads have joined. Per-request rows and interval histograms are
//! streamed out while the run goes ([`RunSinks`]), so nothing grows with the
//! length of the run.
//!
//! The files: [`options`] (the plan, validated once), [`stages`] (a rate
//! that changes within the run), [`mix`] (which command next), [`driver`],
//! [`sender`], [`receiver`] and [`window`] (one connection's threads and
//! what they share), [`recorder`] (histograms and counts), [`intervals`]
//! (the run second by second, for the reports), [`thresholds`] (pass/fail
//! criteria, exit 99), [`embedded`] (the farm `--embedded` starts) and
//! [`lock_cycle`] (`--cmd lock-cycle`).

pub(crate) mod driver;
pub(crate) mod embedded;
pub(crate) mod intervals;
pub(crate) mod lock_cycle;
pub(crate) mod mix;
pub(crate) mod options;
pub(crate) mod receiver;
pub(crate) mod recorder;
pub(crate) mod sender;
pub(crate) mod stages;
pub(crate) mod thresholds;
pub(crate) mod window;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::units::count;
use embedded::ServerUnderTest;
pub(crate) use options::BenchOptions;
pub(crate) use receiver::RequestRecord;
pub(crate) use recorder::Recorder;
use recorder::{latency_histogram, record_us};

/// Bits of a wire id that hold the request's number on its connection; the
/// bits above hold the connection's index.
const SEQ_BITS: u32 = 40;
/// The most connections a run may have: wire ids must stay below 2^53, the
/// largest integer every JSON reader (JavaScript, Python's float) keeps exact.
pub(crate) const MAX_CONNECTIONS: usize = 1 << (53 - SEQ_BITS);

/// The id request `seq` of connection `index` travels with. Ids are unique
/// across the run's connections, not just within one: a server that keeps
/// one id → connection map for all connections (the Python original does)
/// would otherwise send one connection's reply to another.
pub(crate) fn wire_id(index: usize, seq: u64) -> u64 {
    ((index as u64) << SEQ_BITS) | (seq & ((1 << SEQ_BITS) - 1))
}

/// The request number of a reply's wire id, if it belongs to connection `index`.
pub(crate) fn seq_of(index: usize, wire: u64) -> Option<u64> {
    (wire >> SEQ_BITS == index as u64).then_some(wire & ((1 << SEQ_BITS) - 1))
}

/// The plan every connection works from.
pub(crate) struct Plan {
    /// The validated options.
    pub(crate) options: BenchOptions,
    /// `host:port` of the server, for messages.
    pub(crate) address: String,
    /// When the run (warm-up included) starts; schedules count from here.
    pub(crate) start: Instant,
    /// With `--verify`, the expected compute result for `--size`.
    pub(crate) expected_compute: Option<u64>,
}

/// Live counters for the progress bar. Connections bump them and the bar
/// reads them with `Relaxed` ordering: they are only shown to a person, a
/// bar a few requests behind is still right, and nothing is published
/// through them (the measurements travel in each connection's recorder).
#[derive(Debug, Default)]
pub(crate) struct ProgressCounters {
    /// Requests written.
    pub(crate) sent: AtomicU64,
    /// Requests settled (reply, timeout or missing).
    pub(crate) done: AtomicU64,
    /// Settled with anything but a good result.
    pub(crate) problems: AtomicU64,
    /// Measured requests settled, error replies and timeouts among them:
    /// what `--abort-on-fail` reads of the counts while the run goes.
    pub(crate) measured: AtomicU64,
    pub(crate) error_replies: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    /// Measured ok replies so far.
    pub(crate) ok: AtomicU64,
    /// Measured error replies by code, for `--metrics-addr`, `--live` and
    /// `--abort-on-fail` (locked only on an error reply and by a reader).
    pub(crate) errors_by_code: std::sync::Mutex<std::collections::BTreeMap<String, ErrorTally>>,
    /// The run's latency so far, interval by interval.
    pub(crate) so_far: intervals::SoFar,
    /// The server measured, once the run has it (an embedded farm's port
    /// is picked when it starts): what `--live` polls for `stats`.
    pub(crate) server: std::sync::Mutex<Option<embedded::ServerEndpoint>>,
}

/// The error replies of one code so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorTally {
    /// How many.
    pub(crate) count: u64,
    /// The first one's message, as the server wrote it.
    pub(crate) first_message: Option<String>,
}

/// One interval's latencies of good replies (µs), in both rows: the gap
/// between them is coordinated omission, what `--live` shows.
#[derive(Debug, Clone)]
pub(crate) struct IntervalLatencies {
    /// From the scheduled send: what the interval log holds.
    pub(crate) from_schedule: Histogram<u64>,
    /// From the actual send.
    pub(crate) from_send: Histogram<u64>,
}

impl Default for IntervalLatencies {
    fn default() -> Self {
        IntervalLatencies { from_schedule: latency_histogram(), from_send: latency_histogram() }
    }
}

impl IntervalLatencies {
    /// Records one good reply's two latencies.
    pub(crate) fn record(&mut self, sample: recorder::Sample) {
        record_us(&mut self.from_schedule, sample.corrected_us);
        record_us(&mut self.from_send, sample.uncorrected_us);
    }

    /// Adds another interval's (another connection's) latencies.
    pub(crate) fn add(&mut self, other: &IntervalLatencies) {
        // Every histogram here has the same bounds and saturates, so
        // adding cannot fail.
        let _ = self.from_schedule.add(&other.from_schedule);
        let _ = self.from_send.add(&other.from_send);
    }

    fn is_empty(&self) -> bool {
        self.from_schedule.is_empty()
    }
}

/// One connection's latencies for one interval of the interval log.
#[derive(Debug)]
pub(crate) enum IntervalMessage {
    /// Interval `index` is over for `connection`; `None` when it recorded nothing.
    Interval {
        /// Connection index.
        connection: usize,
        /// Interval number since the start of the run.
        index: u64,
        /// The interval's good replies' latencies.
        latencies: Option<Box<IntervalLatencies>>,
    },
    /// The connection has finished; expect nothing more from it.
    Finished {
        /// Connection index.
        connection: usize,
    },
}

/// Where connections stream what they measure while the run goes.
#[derive(Clone, Default)]
pub(crate) struct RunSinks {
    /// Progress counters.
    pub(crate) progress: Arc<ProgressCounters>,
    /// Per-request rows (`--requests-csv`), when wanted.
    pub(crate) requests: Option<Sender<RequestRecord>>,
    /// Interval histograms (`--hdr-log`), when wanted.
    pub(crate) intervals: Option<Sender<IntervalMessage>>,
}

/// Cuts one connection's latencies into fixed intervals for the interval log.
pub(crate) struct IntervalRecorder {
    connection: usize,
    start: Instant,
    length: Duration,
    index: u64,
    latencies: IntervalLatencies,
}

impl IntervalRecorder {
    /// Intervals of `length` from `start`.
    pub(crate) fn new(connection: usize, start: Instant, length: Duration) -> Self {
        IntervalRecorder { connection, start, length, index: 0, latencies: IntervalLatencies::default() }
    }

    fn index_at(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start);
        (elapsed.as_nanos() / self.length.as_nanos().max(1)) as u64
    }

    /// Hands every interval that ended before `now` to the sink.
    pub(crate) fn advance(&mut self, now: Instant, sink: &Option<Sender<IntervalMessage>>) {
        let Some(sink) = sink else { return };
        let target = self.index_at(now);
        while self.index < target {
            let latencies =
                (!self.latencies.is_empty()).then(|| Box::new(std::mem::take(&mut self.latencies)));
            let _ = sink.send(IntervalMessage::Interval {
                connection: self.connection,
                index: self.index,
                latencies,
            });
            self.index += 1;
        }
    }

    /// Records one good reply's latencies at time `now`.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        sample: recorder::Sample,
        sink: &Option<Sender<IntervalMessage>>,
    ) {
        if sink.is_some() {
            self.advance(now, sink);
            self.latencies.record(sample);
        }
    }

    /// Sends the last, partial interval and says this connection is done.
    pub(crate) fn finish(mut self, sink: &Option<Sender<IntervalMessage>>) {
        let Some(tx) = sink else { return };
        let now = Instant::now();
        self.advance(now, sink);
        let latencies = (!self.latencies.is_empty()).then(|| Box::new(self.latencies));
        let _ =
            tx.send(IntervalMessage::Interval { connection: self.connection, index: self.index, latencies });
        let _ = tx.send(IntervalMessage::Finished { connection: self.connection });
    }
}

/// What the server said about itself before the run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct ServerInfo {
    /// `host:port`.
    pub(crate) address: String,
    /// `processes` or `threads`; `None` for a server that does not answer
    /// `stats` (the Python original, for one).
    pub(crate) mode: Option<String>,
    /// Workers configured; `None` when unknown.
    pub(crate) workers: Option<u64>,
    /// The server run's id.
    pub(crate) instance: String,
    /// Whether this client started it (`--embedded`).
    pub(crate) embedded: bool,
    /// Whether its worker threads share a GIL (`--gil`); `None` when unknown.
    pub(crate) gil: Option<bool>,
    /// Whether the run's connections used TLS (`--tls`).
    #[serde(default)]
    pub(crate) tls: bool,
    /// A gateway's live worker hosts (`tc-server --nats`); `None` for a
    /// server that runs every job on its own pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hosts: Option<FarmHosts>,
}

/// The worker hosts behind a gateway, as its `stats` listed them at the
/// start of the run — or at its end, if more were alive then (a host that
/// joined during the run ran jobs too).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub(crate) struct FarmHosts {
    /// Hosts alive (at the start, or at the end if more).
    pub(crate) alive: u64,
    /// Their workers (slots), together.
    pub(crate) workers: u64,
    /// Their pools' modes, each once (`processes`, `threads`), sorted.
    pub(crate) modes: Vec<String>,
}

impl ServerInfo {
    /// What ran the jobs, for a report's first line ([`farm_text`]); `None`
    /// for a server that did not say.
    pub(crate) fn farm(&self) -> Option<String> {
        Some(farm_text(self.mode.as_deref()?, self.workers?, self.gil, self.hosts.as_ref()))
    }
}

/// "processes, GIL on, 2 workers", or for a gateway "gateway, no local
/// workers; 1 host: 2 workers, processes" — a gateway's own mode says
/// nothing about the jobs its hosts run. `workers` counts every worker,
/// the gateway's own and its hosts'.
pub(crate) fn farm_text(mode: &str, workers: u64, gil: Option<bool>, hosts: Option<&FarmHosts>) -> String {
    // A teacher's demo run: the GIL changes everything, say it first.
    let gil = if gil == Some(true) { ", GIL on" } else { "" };
    let Some(hosts) = hosts else {
        return format!("{mode}{gil}, {}", count(workers, "worker", "workers"));
    };
    let local = match workers.saturating_sub(hosts.workers) {
        0 => "no local workers".to_string(),
        local => format!("{} ({mode}{gil})", count(local, "local worker", "local workers")),
    };
    let remote = match hosts.alive {
        0 => "no live host".to_string(),
        alive => format!(
            "{}: {}, {}",
            count(alive, "host", "hosts"),
            count(hosts.workers, "worker", "workers"),
            hosts.modes.join(" and ")
        ),
    };
    format!("gateway, {local}; {remote}")
}

/// A finished run: the plan, the server, and the merged measurements.
pub(crate) struct BenchRun {
    /// What was asked for.
    pub(crate) options: BenchOptions,
    /// The server measured.
    pub(crate) server: ServerInfo,
    /// Wall-clock start, for reports.
    pub(crate) started_at: SystemTime,
    /// Merged measurements of every connection.
    pub(crate) recorder: Recorder,
    /// From the start of the run to the last reply, warm-up included.
    pub(crate) wall_time: Duration,
    /// Why connections stopped early (one line each).
    pub(crate) connection_errors: Vec<String>,
    /// Whether Ctrl-C (or SIGTERM) cut the run short.
    pub(crate) interrupted: bool,
    /// The run interval by interval (`--hdr-log-interval`), merged over the
    /// connections; filled in once the interval thread has ended, empty
    /// when no one collected them (a sweep's runs).
    pub(crate) intervals: Vec<crate::client::bench::intervals::IntervalFigures>,
    /// `--abort-on-fail` stopped the run: the threshold crossed, and when.
    pub(crate) aborted: Option<String>,
    /// The measured part — first measured send to last measured reply — as
    /// offsets from the start of the run; `None` when nothing was measured.
    pub(crate) measured_window: Option<(Duration, Duration)>,
}

impl BenchRun {
    /// Length of the measured part (first measured send to last measured reply).
    pub(crate) fn measured_time(&self) -> Duration {
        self.recorder.measured_span()
    }

    /// Good replies (results) per second of measured time: the throughput.
    /// Error replies are cheap for a server to send and are not work done.
    pub(crate) fn throughput(&self) -> f64 {
        self.per_second(self.recorder.counts.ok)
    }

    /// Every measured reply (results and errors) per second of measured time.
    pub(crate) fn replies_per_second(&self) -> f64 {
        self.per_second(self.recorder.counts.answered())
    }

    fn per_second(&self, count: u64) -> f64 {
        let seconds = self.measured_time().as_secs_f64();
        if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        }
    }

    /// Whether anything went wrong (the exit code is non-zero then).
    pub(crate) fn failed(&self) -> bool {
        self.recorder.counts.problems() > 0 || !self.connection_errors.is_empty()
    }
}

/// Runs a benchmark to completion.
///
/// # Errors
/// Only failures before the first request (no server, bad address, an
/// embedded server that cannot start). Trouble during the run is counted and
/// reported in the returned [`BenchRun`] instead, so what was measured is
/// never lost.
pub(crate) fn run(options: BenchOptions, sinks: RunSinks) -> Result<BenchRun> {
    options.validate()?;
    let server = ServerUnderTest::start(&options)?;
    *sinks.progress.server.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
        Some(server.endpoint());
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
    // A gateway's hosts may have joined while the run went on (one started
    // just before the client, say): then the end's count is what ran jobs.
    let info = match &info.hosts {
        Some(hosts) => match server.info(plan.options.auth_token.as_deref()) {
            Ok(later) if later.hosts.as_ref().is_some_and(|l| l.alive > hosts.alive) => later,
            _ => info,
        },
        None => info,
    };
    let since_start = |at: Instant| at.saturating_duration_since(plan.start);
    let measured_window =
        recorder.first_measured.zip(recorder.last_measured).map(|(a, b)| (since_start(a), since_start(b)));
    let options = Arc::try_unwrap(plan).map(|p| p.options).unwrap_or_else(|p| p.options.clone());
    // A stop asked by --abort-on-fail is not an interruption: the run is
    // reported as aborted (and exits 99), not as cut short by Ctrl-C.
    let interrupted = crate::client::interrupt::requested() && crate::client::interrupt::aborted().is_none();
    Ok(BenchRun {
        options,
        server: info,
        started_at,
        recorder,
        wall_time,
        connection_errors,
        interrupted,
        intervals: Vec::new(),
        aborted: crate::client::interrupt::aborted(),
        measured_window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_ids_are_unique_across_connections_and_map_back() {
        assert_eq!(wire_id(0, 7), 7);
        assert_ne!(wire_id(1, 7), wire_id(2, 7));
        assert_eq!(seq_of(3, wire_id(3, 12_345)), Some(12_345));
        assert_eq!(seq_of(2, wire_id(3, 12_345)), None, "another connection's reply is not ours");
        assert!(wire_id(MAX_CONNECTIONS - 1, (1 << SEQ_BITS) - 1) < 1 << 53, "exact in every JSON reader");
    }
}
