//! Server-wide counters and latency histograms, and the `stats` reply built
//! from them.
//!
//! Counters are atomics, bumped without any lock from whichever thread sees
//! the event. The two latency histograms (queue wait and service time, in
//! microseconds) share one short-held `Mutex`: recording is a few array
//! updates, and nothing else happens under the lock.
//!
//! Two views are read from the same numbers, so they cannot disagree: the
//! `stats` reply ([`Stats::counters`]) and the Prometheus exposition at
//! `--metrics-addr` (see `server::metrics`). The Prometheus histograms
//! ([`LatencyHistograms`], fixed buckets in seconds, by command) sit beside
//! the HdrHistograms, which give `stats` its exact percentiles. They are
//! created up front, one per command, so recording a request is an array
//! index and a short lock, never a map lookup.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use std::sync::atomic::AtomicBool;

use prometheus_client::metrics::histogram::Histogram as BucketHistogram;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::{CommandKind, ErrorCode};

/// Largest latency the histograms track exactly: one hour, in microseconds.
/// Larger values are clamped to it rather than lost.
const MAX_TRACKED_US: u64 = 3_600_000_000;

/// Upper bounds of the Prometheus latency buckets, in seconds: 50 µs (a
/// ping on loopback) to 60 s (the default `--job-timeout`), about three per
/// decade, so a quantile estimated from them is off by at most ~2.5×
/// between neighbours and usually far less.
pub(crate) const LATENCY_BUCKETS_S: [f64; 19] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The `command` label of requests whose command is unknown (a frame that
/// was not JSON, or named no known command).
pub(crate) const UNKNOWN_COMMAND: &str = "unknown";

/// How a request was answered: `OK`, or the error code of its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyOutcome {
    /// A result.
    Ok,
    /// An error reply with this code.
    Error(ErrorCode),
}

impl ReplyOutcome {
    /// Every outcome, in counter order.
    fn all() -> impl Iterator<Item = ReplyOutcome> {
        std::iter::once(ReplyOutcome::Ok).chain(ErrorCode::ALL.into_iter().map(ReplyOutcome::Error))
    }

    /// `"OK"` or the error code (`"BUSY"`, ...): the `code` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReplyOutcome::Ok => "OK",
            ReplyOutcome::Error(code) => code.as_str(),
        }
    }

    fn index(self) -> usize {
        match self {
            ReplyOutcome::Ok => 0,
            ReplyOutcome::Error(code) => 1 + code.index(),
        }
    }
}

/// Rows of the per-command tables: every command, plus "unknown".
const COMMAND_ROWS: usize = 1 + CommandKind::ALL.len();

/// ReplyOutcome counters: one row per command plus one for unknown commands,
/// one column per outcome.
type OutcomeTable = [[AtomicU64; 1 + ErrorCode::ALL.len()]; COMMAND_ROWS];

/// Row of a per-command table (`None`: unknown).
fn command_row(command: Option<CommandKind>) -> usize {
    command.map_or(CommandKind::ALL.len(), CommandKind::index)
}

/// Name of a per-command row.
fn command_name(row: usize) -> &'static str {
    CommandKind::ALL.get(row).map_or(UNKNOWN_COMMAND, |kind| kind.as_str())
}

/// One Prometheus histogram per command (and one for unknown commands).
/// A command shows up in the exposition once it has been observed, so a
/// scrape is not padded with dozens of empty histograms.
#[derive(Debug)]
pub(crate) struct HistogramByCommand {
    histograms: [BucketHistogram; COMMAND_ROWS],
    /// Set once per row, read by every scrape, both `Relaxed`: the flag
    /// guards no data (the histogram has its own lock), so a scrape that
    /// misses a flag just set shows that row one scrape later.
    observed: [AtomicBool; COMMAND_ROWS],
}

impl HistogramByCommand {
    fn new() -> Self {
        HistogramByCommand {
            histograms: std::array::from_fn(|_| BucketHistogram::new(LATENCY_BUCKETS_S)),
            observed: Default::default(),
        }
    }

    fn observe(&self, command: Option<CommandKind>, seconds: f64) {
        let row = command_row(command);
        self.histograms[row].observe(seconds);
        // Read before writing: after the first observation this stays a
        // shared read, and the cache line is not bounced between cores.
        if !self.observed[row].load(Relaxed) {
            self.observed[row].store(true, Relaxed);
        }
    }

    /// The histograms observed so far, with their command's name.
    pub(crate) fn observed(&self) -> impl Iterator<Item = (&'static str, &BucketHistogram)> {
        (0..COMMAND_ROWS)
            .filter(|&row| self.observed[row].load(Relaxed))
            .map(|row| (command_name(row), &self.histograms[row]))
    }
}

/// Prometheus histograms of request latency, queue wait and service time,
/// in seconds, by command.
#[derive(Debug)]
pub(crate) struct LatencyHistograms {
    /// From the moment a request's frame was read to the moment its reply
    /// was handed to the connection's writer.
    pub(crate) request: HistogramByCommand,
    /// Jobs only: from acceptance to a worker starting it.
    pub(crate) queue_wait: HistogramByCommand,
    /// Jobs only: time running on the worker.
    pub(crate) service: HistogramByCommand,
}

/// Cheap-to-clone handle to the server's counters.
#[derive(Clone)]
pub(crate) struct Stats {
    inner: Arc<Inner>,
}

/// Every counter here is bumped and read with `Relaxed` ordering: each one
/// is a self-contained number that no other memory depends on, so a reader
/// needs only *a* recent value of each, never a moment when all of them
/// agree (a `stats` reply taken mid-request may count a request whose reply
/// it does not count yet, which is true at that instant). `Relaxed` keeps
/// each bump a single uncontended atomic add on the request path.
struct Inner {
    instance: Uuid,
    started: Instant,
    requests: [AtomicU64; CommandKind::ALL.len()],
    errors: [AtomicU64; ErrorCode::ALL.len()],
    outcomes: OutcomeTable,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    jobs_completed: AtomicU64,
    jobs_cancelled: AtomicU64,
    jobs_retried: AtomicU64,
    jobs_timed_out: AtomicU64,
    replies_dropped: AtomicU64,
    connections_rejected: AtomicU64,
    connections_tls_failed: AtomicU64,
    connections_rejected_per_ip: AtomicU64,
    connections_idle_closed: AtomicU64,
    latency: Mutex<Latency>,
    histograms: LatencyHistograms,
}

struct Latency {
    queue_wait_us: Histogram<u64>,
    service_us: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Fresh counters; the uptime clock starts now.
    pub(crate) fn new() -> Self {
        let histogram =
            || Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("constant histogram bounds are valid");
        Stats {
            inner: Arc::new(Inner {
                instance: Uuid::new_v4(),
                started: Instant::now(),
                requests: Default::default(),
                errors: Default::default(),
                outcomes: Default::default(),
                connections_open: AtomicU64::new(0),
                connections_total: AtomicU64::new(0),
                jobs_completed: AtomicU64::new(0),
                jobs_cancelled: AtomicU64::new(0),
                jobs_retried: AtomicU64::new(0),
                jobs_timed_out: AtomicU64::new(0),
                replies_dropped: AtomicU64::new(0),
                connections_rejected: AtomicU64::new(0),
                connections_tls_failed: AtomicU64::new(0),
                connections_rejected_per_ip: AtomicU64::new(0),
                connections_idle_closed: AtomicU64::new(0),
                latency: Mutex::new(Latency { queue_wait_us: histogram(), service_us: histogram() }),
                histograms: LatencyHistograms {
                    request: HistogramByCommand::new(),
                    queue_wait: HistogramByCommand::new(),
                    service: HistogramByCommand::new(),
                },
            }),
        }
    }

    /// A random id for this server run, so clients can tell restarts apart.
    pub(crate) fn instance(&self) -> Uuid {
        self.inner.instance
    }

    /// Seconds since the server started, to the millisecond.
    pub(crate) fn uptime_s(&self) -> f64 {
        self.inner.started.elapsed().as_millis() as f64 / 1000.0
    }

    /// Counts one request for a recognised command, when it arrives.
    pub(crate) fn request(&self, command: CommandKind) {
        self.inner.requests[command.index()].fetch_add(1, Relaxed);
    }

    /// Counts one reply to a request (`command` is `None` when the request
    /// named no known command) and records how long the request took, from
    /// its frame being read to its reply being queued for writing. Error
    /// replies are also counted by code.
    pub(crate) fn replied(&self, command: Option<CommandKind>, outcome: ReplyOutcome, latency: Duration) {
        if let ReplyOutcome::Error(code) = outcome {
            self.error(code);
        }
        self.inner.outcomes[command_row(command)][outcome.index()].fetch_add(1, Relaxed);
        self.inner.histograms.request.observe(command, latency.as_secs_f64());
    }

    /// Counts one error frame sent outside any request: a connection
    /// refused at `--max-connections`. (Error replies to requests are
    /// counted by [`Stats::replied`].)
    pub(crate) fn error(&self, code: ErrorCode) {
        self.inner.errors[code.index()].fetch_add(1, Relaxed);
    }

    /// The Prometheus latency histograms.
    pub(crate) fn histograms(&self) -> &LatencyHistograms {
        &self.inner.histograms
    }

    /// Counts a connection that was accepted.
    pub(crate) fn connection_opened(&self) {
        self.inner.connections_open.fetch_add(1, Relaxed);
        self.inner.connections_total.fetch_add(1, Relaxed);
    }

    /// Counts a connection that ended.
    pub(crate) fn connection_closed(&self) {
        self.inner.connections_open.fetch_sub(1, Relaxed);
    }

    /// Records a finished job's queue wait and service time. `command` is
    /// `None` when nobody waited for the reply any more (an entry that was
    /// already answered or whose client left): such a job still counts as
    /// completed, but stays out of the per-command Prometheus histograms.
    pub(crate) fn job_completed(&self, command: Option<CommandKind>, queue_us: u64, service_us: u64) {
        self.inner.jobs_completed.fetch_add(1, Relaxed);
        if command.is_some() {
            let histograms = &self.inner.histograms;
            histograms.queue_wait.observe(command, queue_us as f64 / 1e6);
            histograms.service.observe(command, service_us as f64 / 1e6);
        }
        let mut latency = self.inner.latency.lock().unwrap_or_else(PoisonError::into_inner);
        latency.queue_wait_us.saturating_record(queue_us.max(1));
        latency.service_us.saturating_record(service_us.max(1));
    }

    /// Counts a job answered `TIMEOUT` because it ran past `--job-timeout`.
    pub(crate) fn job_timed_out(&self) {
        self.inner.jobs_timed_out.fetch_add(1, Relaxed);
    }

    /// Counts jobs whose client left before they started (they were skipped).
    pub(crate) fn jobs_cancelled(&self, count: u64) {
        self.inner.jobs_cancelled.fetch_add(count, Relaxed);
    }

    /// Counts a job sent to another worker after its worker crashed.
    pub(crate) fn job_retried(&self) {
        self.inner.jobs_retried.fetch_add(1, Relaxed);
    }

    /// A connection whose TLS handshake failed or did not finish in time
    /// (including plain text sent to a TLS port).
    pub(crate) fn connection_tls_failed(&self) {
        self.inner.connections_tls_failed.fetch_add(1, Relaxed);
    }

    /// Counts a connection turned away because its address already held
    /// `--max-connections-per-ip` (it is counted as rejected too).
    pub(crate) fn connection_rejected_per_ip(&self) {
        self.inner.connections_rejected_per_ip.fetch_add(1, Relaxed);
        self.connection_rejected();
    }

    /// Counts a connection closed by `--idle-timeout`.
    pub(crate) fn connection_idle_closed(&self) {
        self.inner.connections_idle_closed.fetch_add(1, Relaxed);
    }

    /// Counts a connection turned away (over `--max-connections`, or not
    /// authenticated).
    pub(crate) fn connection_rejected(&self) {
        self.inner.connections_rejected.fetch_add(1, Relaxed);
    }

    /// Counts a finished job whose reply had nowhere to go (client gone).
    pub(crate) fn reply_dropped(&self) {
        self.inner.replies_dropped.fetch_add(1, Relaxed);
    }

    /// The counters' current values.
    pub(crate) fn counters(&self) -> Counters {
        let inner = &self.inner;
        let latency = inner.latency.lock().unwrap_or_else(PoisonError::into_inner);
        Counters {
            requests: CommandKind::ALL
                .iter()
                .map(|kind| (kind.as_str().to_string(), inner.requests[kind.index()].load(Relaxed)))
                .collect(),
            errors: ErrorCode::ALL
                .iter()
                .map(|code| (code.as_str().to_string(), inner.errors[code.index()].load(Relaxed)))
                .collect(),
            replies: self.replies(),
            connections: ConnectionCounts {
                open: inner.connections_open.load(Relaxed),
                total: inner.connections_total.load(Relaxed),
                rejected: inner.connections_rejected.load(Relaxed),
                tls_failed: inner.connections_tls_failed.load(Relaxed),
                rejected_per_ip: inner.connections_rejected_per_ip.load(Relaxed),
                idle_closed: inner.connections_idle_closed.load(Relaxed),
                // The frame budget lives with the connections; the report fills it in.
                frame_memory: FrameMemoryReport::default(),
            },
            jobs_completed: inner.jobs_completed.load(Relaxed),
            jobs_cancelled: inner.jobs_cancelled.load(Relaxed),
            jobs_retried: inner.jobs_retried.load(Relaxed),
            jobs_timed_out: inner.jobs_timed_out.load(Relaxed),
            replies_dropped: inner.replies_dropped.load(Relaxed),
            queue_wait_us: Percentiles::of(&latency.queue_wait_us),
            service_us: Percentiles::of(&latency.service_us),
        }
    }

    /// Replies by command and outcome, leaving out the zeros.
    fn replies(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let commands = CommandKind::ALL.into_iter().map(Some).chain([None]);
        commands
            .filter_map(|command| {
                let row = &self.inner.outcomes[command_row(command)];
                let counts: BTreeMap<String, u64> = ReplyOutcome::all()
                    .map(|outcome| (outcome.as_str().to_string(), row[outcome.index()].load(Relaxed)))
                    .filter(|(_, n)| *n > 0)
                    .collect();
                let name = command.map_or(UNKNOWN_COMMAND, CommandKind::as_str);
                (!counts.is_empty()).then(|| (name.to_string(), counts))
            })
            .collect()
    }
}

/// A snapshot of the counters (part of the `stats` reply).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Counters {
    /// Requests by command name, counted on arrival.
    pub(crate) requests: BTreeMap<String, u64>,
    /// Error frames by error code.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Replies by command (`"unknown"` when none was recognised) and
    /// outcome (`"OK"` or the error code); zeros left out.
    pub(crate) replies: BTreeMap<String, BTreeMap<String, u64>>,
    /// Connections open now and accepted since start.
    pub(crate) connections: ConnectionCounts,
    /// Jobs run to completion.
    pub(crate) jobs_completed: u64,
    /// Jobs skipped because their client had gone before they started.
    pub(crate) jobs_cancelled: u64,
    /// Jobs sent to another worker after a crash.
    pub(crate) jobs_retried: u64,
    /// Jobs answered `TIMEOUT` after running past `--job-timeout`.
    pub(crate) jobs_timed_out: u64,
    /// Finished jobs whose reply was dropped because the client had gone.
    pub(crate) replies_dropped: u64,
    /// Time jobs waited for a worker.
    pub(crate) queue_wait_us: Percentiles,
    /// Time jobs ran on a worker.
    pub(crate) service_us: Percentiles,
}

/// Open and total connection counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ConnectionCounts {
    /// Open now.
    pub(crate) open: u64,
    /// Accepted since the server started.
    pub(crate) total: u64,
    /// Turned away: over `--max-connections`, or failed authentication.
    pub(crate) rejected: u64,
    /// Closed because their TLS handshake failed or did not finish in time
    /// (plain text on a TLS port, a refused client certificate).
    #[serde(default)]
    pub(crate) tls_failed: u64,
    /// Turned away because their address already held
    /// `--max-connections-per-ip` (also counted in `rejected`).
    #[serde(default)]
    pub(crate) rejected_per_ip: u64,
    /// Closed by `--idle-timeout`: nothing owed, nothing sent for that long.
    #[serde(default)]
    pub(crate) idle_closed: u64,
    /// The memory of frames still arriving, against `--max-frame-memory`.
    #[serde(default)]
    pub(crate) frame_memory: FrameMemoryReport,
}

/// The memory that frames still arriving hold, all connections together.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FrameMemoryReport {
    /// Bytes held now (beyond each connection's small idle buffer).
    pub(crate) bytes: u64,
    /// `--max-frame-memory`.
    pub(crate) limit: u64,
    /// Connections refused because their frame needed more than was left.
    pub(crate) refused: u64,
}

/// Summary of one latency histogram, in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Percentiles {
    /// Number of values recorded.
    pub(crate) count: u64,
    /// Median.
    pub(crate) p50: u64,
    /// 99th percentile.
    pub(crate) p99: u64,
    /// Largest value.
    pub(crate) max: u64,
    /// Mean.
    pub(crate) mean: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        Percentiles {
            count: histogram.len(),
            p50: histogram.value_at_quantile(0.50),
            p99: histogram.value_at_quantile(0.99),
            max: histogram.max(),
            mean: histogram.mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_and_percentiles_follow_the_data() {
        let stats = Stats::new();
        stats.request(CommandKind::Compute);
        stats.request(CommandKind::Compute);
        stats.replied(Some(CommandKind::Compute), ReplyOutcome::Ok, Duration::from_millis(1));
        stats.replied(Some(CommandKind::Compute), ReplyOutcome::Error(ErrorCode::Busy), Duration::ZERO);
        stats.replied(None, ReplyOutcome::Error(ErrorCode::BadJson), Duration::ZERO);
        stats.connection_opened();
        stats.connection_opened();
        stats.connection_closed();
        for us in 1..=100 {
            stats.job_completed(Some(CommandKind::Compute), us, 1000 + us);
        }
        let c = stats.counters();
        assert_eq!(c.requests["compute"], 2);
        assert_eq!(c.requests["ping"], 0);
        assert_eq!(c.errors["BUSY"], 1);
        assert_eq!(c.errors["BAD_JSON"], 1);
        assert_eq!(c.replies["compute"]["OK"], 1);
        assert_eq!(c.replies["compute"]["BUSY"], 1);
        assert_eq!(c.replies["unknown"]["BAD_JSON"], 1);
        assert!(!c.replies.contains_key("ping"), "commands never answered are left out");
        assert_eq!((c.connections.open, c.connections.total), (1, 2));
        assert_eq!(c.jobs_completed, 100);
        assert_eq!(c.queue_wait_us.count, 100);
        assert_eq!(c.queue_wait_us.p50, 50);
        assert_eq!(c.queue_wait_us.max, 100);
        assert_eq!(c.service_us.p99, 1099);

        // The Prometheus histograms: only what was observed, as a scrape
        // would show it.
        let histograms = stats.histograms();
        let names: Vec<&str> = histograms.request.observed().map(|(name, _)| name).collect();
        assert_eq!(names, ["compute", "unknown"]);
        let mut registry = prometheus_client::registry::Registry::default();
        for (family, by_command) in [("service", &histograms.service), ("request", &histograms.request)] {
            for (command, histogram) in by_command.observed() {
                registry.register(format!("{family}_{command}"), "", histogram.clone());
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "service_compute_count 100",
            "request_compute_count 2",
            "request_compute_sum 0.001",
            "request_unknown_count 1",
            // 1 ms lands in the 1 ms bucket (bounds are inclusive), 0 in the first.
            r#"request_compute_bucket{le="0.00005"} 1"#,
            r#"request_compute_bucket{le="0.001"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
