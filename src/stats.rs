//! Server-wide counters and latency histograms, and the `stats` reply built
//! from them.
//!
//! Counters are atomics, bumped without any lock from whichever thread sees
//! the event. The two latency histograms (queue wait and service time, in
//! microseconds) share one short-held `Mutex`: recording is a few array
//! updates, and nothing else happens under the lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::{CommandKind, ErrorCode};

/// Largest latency the histograms track exactly: one hour, in microseconds.
/// Larger values are clamped to it rather than lost.
const MAX_TRACKED_US: u64 = 3_600_000_000;

/// Cheap-to-clone handle to the server's counters.
#[derive(Clone)]
pub struct Stats {
    inner: Arc<Inner>,
}

struct Inner {
    instance: Uuid,
    started: Instant,
    requests: [AtomicU64; CommandKind::ALL.len()],
    errors: [AtomicU64; ErrorCode::ALL.len()],
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    jobs_completed: AtomicU64,
    jobs_cancelled: AtomicU64,
    jobs_retried: AtomicU64,
    replies_dropped: AtomicU64,
    connections_rejected: AtomicU64,
    latency: Mutex<Latency>,
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
    pub fn new() -> Self {
        let histogram =
            || Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("constant histogram bounds are valid");
        Stats {
            inner: Arc::new(Inner {
                instance: Uuid::new_v4(),
                started: Instant::now(),
                requests: Default::default(),
                errors: Default::default(),
                connections_open: AtomicU64::new(0),
                connections_total: AtomicU64::new(0),
                jobs_completed: AtomicU64::new(0),
                jobs_cancelled: AtomicU64::new(0),
                jobs_retried: AtomicU64::new(0),
                replies_dropped: AtomicU64::new(0),
                connections_rejected: AtomicU64::new(0),
                latency: Mutex::new(Latency { queue_wait_us: histogram(), service_us: histogram() }),
            }),
        }
    }

    /// A random id for this server run, so clients can tell restarts apart.
    pub fn instance(&self) -> Uuid {
        self.inner.instance
    }

    /// Seconds since the server started, to the millisecond.
    pub fn uptime_s(&self) -> f64 {
        self.inner.started.elapsed().as_millis() as f64 / 1000.0
    }

    /// Counts one request for a recognised command.
    pub fn request(&self, command: CommandKind) {
        self.inner.requests[command.index()].fetch_add(1, Relaxed);
    }

    /// Counts one error reply.
    pub fn error(&self, code: ErrorCode) {
        self.inner.errors[code.index()].fetch_add(1, Relaxed);
    }

    /// Counts a connection that was accepted.
    pub fn connection_opened(&self) {
        self.inner.connections_open.fetch_add(1, Relaxed);
        self.inner.connections_total.fetch_add(1, Relaxed);
    }

    /// Counts a connection that ended.
    pub fn connection_closed(&self) {
        self.inner.connections_open.fetch_sub(1, Relaxed);
    }

    /// Records a finished job's queue wait and service time.
    pub fn job_completed(&self, queue_us: u64, service_us: u64) {
        self.inner.jobs_completed.fetch_add(1, Relaxed);
        let mut latency = self.inner.latency.lock().unwrap_or_else(PoisonError::into_inner);
        latency.queue_wait_us.saturating_record(queue_us.max(1));
        latency.service_us.saturating_record(service_us.max(1));
    }

    /// Counts jobs whose client left before they started (they were skipped).
    pub fn jobs_cancelled(&self, count: u64) {
        self.inner.jobs_cancelled.fetch_add(count, Relaxed);
    }

    /// Counts a job sent to another worker after its worker crashed.
    pub fn job_retried(&self) {
        self.inner.jobs_retried.fetch_add(1, Relaxed);
    }

    /// Counts a connection turned away (over `--max-connections`, or not
    /// authenticated).
    pub fn connection_rejected(&self) {
        self.inner.connections_rejected.fetch_add(1, Relaxed);
    }

    /// Counts a finished job whose reply had nowhere to go (client gone).
    pub fn reply_dropped(&self) {
        self.inner.replies_dropped.fetch_add(1, Relaxed);
    }

    /// The counters' current values.
    pub fn counters(&self) -> Counters {
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
            connections: ConnectionCounts {
                open: inner.connections_open.load(Relaxed),
                total: inner.connections_total.load(Relaxed),
                rejected: inner.connections_rejected.load(Relaxed),
            },
            jobs_completed: inner.jobs_completed.load(Relaxed),
            jobs_cancelled: inner.jobs_cancelled.load(Relaxed),
            jobs_retried: inner.jobs_retried.load(Relaxed),
            replies_dropped: inner.replies_dropped.load(Relaxed),
            queue_wait_us: Percentiles::of(&latency.queue_wait_us),
            service_us: Percentiles::of(&latency.service_us),
        }
    }
}

/// A snapshot of the counters (part of the `stats` reply).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counters {
    /// Requests by command name.
    pub requests: std::collections::BTreeMap<String, u64>,
    /// Error replies by error code.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Connections open now and accepted since start.
    pub connections: ConnectionCounts,
    /// Jobs run to completion.
    pub jobs_completed: u64,
    /// Jobs skipped because their client had gone before they started.
    pub jobs_cancelled: u64,
    /// Jobs sent to another worker after a crash.
    pub jobs_retried: u64,
    /// Finished jobs whose reply was dropped because the client had gone.
    pub replies_dropped: u64,
    /// Time jobs waited for a worker.
    pub queue_wait_us: Percentiles,
    /// Time jobs ran on a worker.
    pub service_us: Percentiles,
}

/// Open and total connection counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionCounts {
    /// Open now.
    pub open: u64,
    /// Accepted since the server started.
    pub total: u64,
    /// Turned away: over `--max-connections`, or failed authentication.
    pub rejected: u64,
}

/// Summary of one latency histogram, in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Number of values recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest value.
    pub max: u64,
    /// Mean.
    pub mean: f64,
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
        stats.error(ErrorCode::Busy);
        stats.connection_opened();
        stats.connection_opened();
        stats.connection_closed();
        for us in 1..=100 {
            stats.job_completed(us, 1000 + us);
        }
        let c = stats.counters();
        assert_eq!(c.requests["compute"], 2);
        assert_eq!(c.requests["ping"], 0);
        assert_eq!(c.errors["BUSY"], 1);
        assert_eq!((c.connections.open, c.connections.total), (1, 2));
        assert_eq!(c.jobs_completed, 100);
        assert_eq!(c.queue_wait_us.count, 100);
        assert_eq!(c.queue_wait_us.p50, 50);
        assert_eq!(c.queue_wait_us.max, 100);
        assert_eq!(c.service_us.p99, 1099);
    }
}
