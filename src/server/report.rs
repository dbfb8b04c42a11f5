//! The bodies of the `stats` and `health` replies.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::pool::{Mode, WorkerInfo};
use crate::stats::{ConnectionCounts, Percentiles};

/// The `result` of a `stats` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsReport {
    /// Random id of this server run.
    pub instance: Uuid,
    /// Seconds since start.
    pub uptime_s: f64,
    /// `"processes"` or `"threads"`.
    pub mode: Mode,
    /// Workers configured and alive.
    pub workers: WorkerCounts,
    /// Every worker's id, pid, state, jobs done and restarts.
    pub worker_list: Vec<WorkerInfo>,
    /// Connections open now and accepted since start.
    pub connections: ConnectionCounts,
    /// Requests by command (including those answered with an error).
    pub requests: std::collections::BTreeMap<String, u64>,
    /// Error replies by code.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Job counts.
    pub jobs: JobCounts,
    /// Queue wait and service time percentiles, in microseconds.
    pub latency_us: LatencyReport,
    /// Result cache counters (`null` without `--cache-entries`).
    pub cache: Option<crate::cache::CacheStats>,
    /// Whether a shutdown is under way.
    pub draining: bool,
    /// The global lock of `--gil` (`null` without it).
    pub gil: Option<GilReport>,
    /// The model being served (its name), if any.
    #[serde(default)]
    pub model: Option<String>,
    /// The accelerator mutex.
    #[serde(default)]
    pub mutex: Option<crate::lock::LockSnapshot>,
}

/// The GIL's state in `stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GilReport {
    /// `--switch-interval`, in milliseconds.
    pub switch_interval_ms: f64,
    /// Times the lock has been taken (a measure of how often threads took turns).
    pub switches: u64,
}

/// Workers configured and alive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerCounts {
    /// `--workers`.
    pub configured: usize,
    /// Up right now.
    pub alive: usize,
    /// Slots waiting for the restart budget (`--max-restarts`).
    pub throttled: usize,
    /// Worker threads written off after a job timeout (thread mode).
    pub abandoned_threads: u64,
}

/// Where the jobs are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobCounts {
    /// Accepted and not yet answered (queued or running).
    pub in_flight: usize,
    /// Waiting in the queue for a worker.
    pub queued: usize,
    /// Room in the queue (`--queue-capacity`).
    pub queue_capacity: usize,
    /// Run to completion.
    pub completed: u64,
    /// Skipped because the client left before they started.
    pub cancelled: u64,
    /// Sent to another worker after their worker crashed.
    pub retried: u64,
    /// Finished, but the client had left: reply dropped.
    pub replies_dropped: u64,
}

/// Latency split into its server-side parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyReport {
    /// Time waiting for a free worker.
    pub queue_wait: Percentiles,
    /// Time running on a worker.
    pub service: Percentiles,
}

/// The `result` of a `health` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthReport {
    /// `"ok"` (all workers up), `"degraded"` (some down), `"down"` (none
    /// up), or `"draining"` (shutting down).
    pub status: String,
    /// `"processes"` or `"threads"`.
    pub mode: Mode,
    /// Workers up right now.
    pub workers_alive: usize,
    /// `--workers`.
    pub workers_configured: usize,
    /// Whether worker replacements are being held back by `--max-restarts`.
    pub restarts_throttled: bool,
}

impl HealthReport {
    /// Classifies the pool by how many of its workers are up.
    pub fn new(mode: Mode, workers_alive: usize, workers_configured: usize) -> Self {
        let status = match workers_alive {
            0 => "down",
            n if n < workers_configured => "degraded",
            _ => "ok",
        };
        HealthReport {
            status: status.into(),
            mode,
            workers_alive,
            workers_configured,
            restarts_throttled: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_status_follows_the_workers_alive() {
        assert_eq!(HealthReport::new(Mode::Threads, 4, 4).status, "ok");
        assert_eq!(HealthReport::new(Mode::Threads, 3, 4).status, "degraded");
        assert_eq!(HealthReport::new(Mode::Processes, 0, 4).status, "down");
    }
}
