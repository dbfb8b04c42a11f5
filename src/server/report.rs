//! The bodies of the `stats` and `health` replies.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use std::sync::atomic::Ordering;

use super::Farm;
use crate::protocol::Mode;
use crate::runtime::pool::WorkerInfo;
use crate::server::stats::{ConnectionCounts, FrameMemoryReport, Percentiles};

/// The `result` of a `stats` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StatsReport {
    /// Random id of this server run.
    pub(crate) instance: Uuid,
    /// Seconds since start.
    pub(crate) uptime_s: f64,
    /// `"processes"` or `"threads"`.
    pub(crate) mode: Mode,
    /// Workers configured and alive.
    pub(crate) workers: WorkerCounts,
    /// Every worker's id, pid, state, jobs done and restarts.
    pub(crate) worker_list: Vec<WorkerInfo>,
    /// Connections open now and accepted since start.
    pub(crate) connections: ConnectionCounts,
    /// Requests by command (including those answered with an error).
    pub(crate) requests: std::collections::BTreeMap<String, u64>,
    /// Error frames by code (replies, and connections refused at
    /// `--max-connections`).
    pub(crate) errors: std::collections::BTreeMap<String, u64>,
    /// Replies by command and outcome (`"OK"` or the error code), zeros
    /// left out; `"unknown"` collects frames with no recognisable command.
    #[serde(default)]
    pub(crate) replies: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
    /// Job counts.
    pub(crate) jobs: JobCounts,
    /// Queue wait and service time percentiles, in microseconds.
    pub(crate) latency_us: LatencyReport,
    /// Where the jobs' time went, hop by hop, since the start: thread mode
    /// `queue`, `run`, `reply`; process mode adds the crossings to and from
    /// the worker process (see `runtime::pool::hops`).
    #[serde(default)]
    pub(crate) hops: Vec<crate::runtime::pool::hops::HopReport>,
    /// Result cache counters (`null` without `--cache-entries`).
    pub(crate) cache: Option<crate::server::jobs::cache::CacheStats>,
    /// Whether a shutdown is under way.
    pub(crate) draining: bool,
    /// The global lock of `--gil` (`null` without it).
    pub(crate) gil: Option<GilReport>,
    /// The model being served (its name), if any.
    #[serde(default)]
    pub(crate) model: Option<String>,
    /// What runs it (`onnxruntime (LIBRARY)`, `tract`, `ndarray`) and, for
    /// ONNX models, why that engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) engine_reason: Option<String>,
    /// The accelerator mutex.
    #[serde(default)]
    pub(crate) mutex: Option<crate::server::lock::LockSnapshot>,
    /// The worker hosts of a gateway (`--nats`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hosts: Option<Vec<crate::server::gateway_status::HostReport>>,
    /// A gateway's NATS counters (`--nats`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) remote: Option<crate::server::gateway_status::RemoteReport>,
}

/// What `stats` and `health` show as the mutex's holder without
/// `--auth-token`: anyone may read them, and a name is enough to act as
/// an IdentyFire client.
pub(crate) const HIDDEN_HOLDER: &str = "(hidden: the server has no --auth-token)";

/// The GIL's state in `stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GilReport {
    /// `--switch-interval`, in milliseconds.
    pub(crate) switch_interval_ms: f64,
    /// Times the lock has been taken (a measure of how often threads took turns).
    pub(crate) switches: u64,
}

/// Workers configured and alive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerCounts {
    /// `--workers`.
    pub(crate) configured: usize,
    /// Up right now.
    pub(crate) alive: usize,
    /// Slots waiting for the restart budget (`--max-restarts`).
    pub(crate) throttled: usize,
    /// Worker threads written off after a job timeout (thread mode).
    pub(crate) abandoned_threads: u64,
}

/// Where the jobs are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobCounts {
    /// Accepted and not yet answered (queued or running).
    pub(crate) in_flight: usize,
    /// Waiting in the queue for a worker.
    pub(crate) queued: usize,
    /// Room in the queue (`--queue-capacity`).
    pub(crate) queue_capacity: usize,
    /// Run to completion.
    pub(crate) completed: u64,
    /// Skipped because the client left before they started.
    pub(crate) cancelled: u64,
    /// Sent to another worker after their worker crashed.
    pub(crate) retried: u64,
    /// Answered `TIMEOUT` after running past `--job-timeout`.
    #[serde(default)]
    pub(crate) timed_out: u64,
    /// Finished, but the client had left: reply dropped.
    pub(crate) replies_dropped: u64,
}

/// Latency split into its server-side parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LatencyReport {
    /// Time waiting for a free worker.
    pub(crate) queue_wait: Percentiles,
    /// Time running on a worker.
    pub(crate) service: Percentiles,
}

/// The `result` of a `health` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HealthReport {
    /// `"ok"` (all workers up), `"degraded"` (some down), `"down"` (none
    /// up), or `"draining"` (shutting down).
    pub(crate) status: String,
    /// `"processes"` or `"threads"`.
    pub(crate) mode: Mode,
    /// Workers up right now.
    pub(crate) workers_alive: usize,
    /// `--workers`.
    pub(crate) workers_configured: usize,
    /// Whether worker replacements are being held back by `--max-restarts`.
    pub(crate) restarts_throttled: bool,
}

impl HealthReport {
    /// Classifies the pool by how many of its workers are up.
    pub(crate) fn new(mode: Mode, workers_alive: usize, workers_configured: usize) -> Self {
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

/// The body of `/readyz`: whether the server should be sent work now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Readiness {
    /// `"ready"` or `"not_ready"`.
    pub(crate) status: String,
    /// Why not, one sentence each (empty when ready).
    pub(crate) reasons: Vec<String>,
    /// Workers up right now.
    pub(crate) workers_alive: usize,
    /// `--workers`.
    pub(crate) workers_configured: usize,
    /// Jobs waiting for a worker.
    pub(crate) queue_depth: usize,
    /// `--queue-capacity`.
    pub(crate) queue_capacity: usize,
    /// What an operator should know even when ready (e.g. a farm without
    /// a key); left out when there is nothing.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub(crate) warnings: Vec<String>,
}

impl Readiness {
    /// Ready when no worker is missing altogether, the queue has room and
    /// no shutdown is under way. A pool with *some* workers down is still
    /// ready (it serves, more slowly; `health` calls that "degraded"), so a
    /// single worker being replaced does not flap the load balancer.
    pub(crate) fn assess(
        workers_alive: usize,
        workers_configured: usize,
        queue_depth: usize,
        queue_capacity: usize,
        draining: bool,
    ) -> Self {
        let mut reasons = Vec::new();
        if workers_alive == 0 {
            reasons.push(format!("no worker is up (0 of {workers_configured})"));
        }
        if queue_depth >= queue_capacity {
            reasons.push(format!(
                "the job queue is full ({queue_depth} of {queue_capacity}): new jobs get BUSY"
            ));
        }
        if draining {
            reasons.push("the server is shutting down".to_string());
        }
        Readiness {
            status: if reasons.is_empty() { "ready" } else { "not_ready" }.to_string(),
            reasons,
            workers_alive,
            workers_configured,
            queue_depth,
            queue_capacity,
            warnings: Vec::new(),
        }
    }

    /// Whether the server should be sent work.
    pub(crate) fn is_ready(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// The builders: each report is read from the live state on demand.
impl Farm {
    /// The `result` of a `stats` reply (and what `/metrics` reads).
    pub(super) fn stats_report(&self) -> StatsReport {
        let counters = self.stats.counters();
        let model = self.models.current();
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
            connections: ConnectionCounts {
                frame_memory: FrameMemoryReport {
                    bytes: self.frame_memory.used() as u64,
                    limit: self.frame_memory.limit() as u64,
                    refused: self.frame_memory.refused(),
                },
                ..counters.connections
            },
            requests: counters.requests,
            errors: counters.errors,
            replies: counters.replies,
            jobs: JobCounts {
                in_flight: self.jobs.in_flight(),
                queued: self.jobs.queue_depth(),
                queue_capacity: self.jobs.queue_capacity(),
                completed: counters.jobs_completed,
                cancelled: counters.jobs_cancelled,
                retried: counters.jobs_retried,
                timed_out: counters.jobs_timed_out,
                replies_dropped: counters.replies_dropped,
            },
            cache: self.jobs.cache_stats(),
            gil: self.gil.as_ref().map(|gil| GilReport {
                switch_interval_ms: gil.switch_interval().as_secs_f64() * 1000.0,
                switches: gil.switches(),
            }),
            draining: self.draining.load(Ordering::SeqCst),
            model: model.as_ref().map(|m| m.name.clone()),
            engine: model.as_ref().map(|m| m.engine.clone()),
            engine_reason: model.and_then(|m| m.engine_reason),
            mutex: Some(self.lock_for_readers()),
            hosts: self.remote.as_ref().map(|remote| remote.hosts.report()),
            remote: self.remote.as_ref().map(|remote| remote.report()),
            latency_us: LatencyReport { queue_wait: counters.queue_wait_us, service: counters.service_us },
            hops: self.board.hops().report(),
        }
    }

    /// The mutex as `stats` and `health` show it. In IdentyFire's dialect a
    /// name is enough to release a lock, so the holder's name is shown only
    /// to authenticated readers (`--auth-token`); others see that it is held.
    fn lock_for_readers(&self) -> crate::server::lock::LockSnapshot {
        let mut lock = self.lock.snapshot();
        if self.config.auth_token.is_none() {
            lock.owner = lock.owner.map(|_| HIDDEN_HOLDER.to_owned());
        }
        lock
    }

    /// IdentyFire's `health_check` answer, in its field names.
    pub(super) fn identyfire_health(&self) -> serde_json::Value {
        let model = self.models.current();
        let lock = self.lock_for_readers();
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
    pub(super) fn readiness(&self) -> Readiness {
        // A gateway's workers are its local ones plus those of its live hosts.
        let host_slots = self.remote.as_ref().map_or(0, |remote| remote.hosts.capacity());
        let mut readiness = Readiness::assess(
            self.board.alive() + host_slots,
            self.board.configured() + host_slots,
            self.jobs.queue_depth(),
            self.jobs.queue_capacity(),
            self.draining.load(Ordering::SeqCst),
        );
        if let Some(remote) = &self.remote {
            if !remote.link.is_up() {
                readiness.reasons.push("the connection to NATS is down (reconnecting)".to_string());
                readiness.status = "not_ready".to_string();
            }
            if remote.in_start_grace() {
                readiness.reasons.push(
                    "the gateway has just started or reconnected and is waiting for the worker hosts' heartbeats"
                        .to_string(),
                );
                readiness.status = "not_ready".to_string();
            }
            if !remote.farm_key {
                readiness.warnings.push(crate::remote::envelope::NO_KEY_WARNING.to_string());
            }
            readiness.warnings.extend(remote.key_trouble.recent());
        }
        readiness
    }

    /// The `result` of a `health` reply.
    pub(super) fn health_report(&self) -> HealthReport {
        let mut report = HealthReport::new(self.config.mode, self.board.alive(), self.board.configured());
        report.restarts_throttled = self.board.throttled() > 0;
        if self.draining.load(Ordering::SeqCst) {
            report.status = "draining".into();
        }
        report
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

    #[test]
    fn readiness_needs_a_worker_room_in_the_queue_and_no_shutdown() {
        assert!(Readiness::assess(1, 4, 9, 10, false).is_ready(), "degraded is still ready");
        let full = Readiness::assess(4, 4, 10, 10, false);
        assert_eq!((full.status.as_str(), full.reasons.len()), ("not_ready", 1));
        assert!(full.reasons[0].contains("queue is full"), "{:?}", full.reasons);
        assert!(!Readiness::assess(0, 4, 0, 10, false).is_ready());
        assert_eq!(Readiness::assess(0, 4, 10, 10, true).reasons.len(), 3);
    }
}
