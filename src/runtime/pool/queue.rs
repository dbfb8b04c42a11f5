//! What travels from the jobs' side to the workers and back: the queued job,
//! the two queues every worker takes from, and the report of a finished job.
//!
//! The main queue is a bounded crossbeam channel shared by all workers, so a
//! job goes to whichever worker is free first. When it is full, a new job is
//! refused at once with `BUSY`: nothing buffers more work than the queue's
//! capacity.
//!
//! A job whose worker crashed may be tried again (`--retries`). It goes to a
//! separate retry queue that every free worker checks before the main queue,
//! so it is picked up next — by another worker, since the crashed one is
//! being replaced. The retry queue holds at most one job per worker (only a
//! worker's own jobs can need a retry), so it needs no capacity of its own.

use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::protocol::JobResult;
use crate::work::job::{JobId, JobKind};

/// A job waiting in the queue for a worker.
#[derive(Debug)]
pub(crate) struct QueuedJob {
    /// The job's registry id.
    pub(crate) id: JobId,
    /// What to run.
    pub(crate) kind: JobKind,
    /// When it was accepted; the worker measures the queue wait from here.
    pub(crate) accepted_at: Instant,
    /// 1 for the first try, 2 for the first retry, ...
    pub(crate) attempt: u32,
}

impl QueuedJob {
    /// The same job again, as attempt number `attempt` (a retry counts one
    /// more; a job put back before it started keeps its count).
    pub(crate) fn again(&self, attempt: u32) -> QueuedJob {
        QueuedJob { id: self.id, kind: self.kind.clone(), accepted_at: self.accepted_at, attempt }
    }
}

/// The receiving ends for the worker pool (clones take from the same
/// queues: a gateway's forwarder competes with the local workers).
#[derive(Clone)]
pub(crate) struct JobQueues {
    /// New jobs.
    pub(crate) jobs: Receiver<QueuedJob>,
    /// Jobs to try again after a crash; workers take these first.
    pub(crate) retries: Receiver<QueuedJob>,
}

/// A finished job, as a worker reports it.
#[derive(Debug)]
pub(crate) struct JobReport {
    /// The job's registry id.
    pub(crate) job: JobId,
    /// The worker that ran it.
    pub(crate) worker: usize,
    /// The worker host it ran on (gateways; `None` for a local worker).
    pub(crate) host: Option<String>,
    /// Microseconds it waited in the queue.
    pub(crate) queue_us: u64,
    /// Microseconds it ran on the worker.
    pub(crate) service_us: u64,
    /// Workers that tried it (1 unless it was retried).
    pub(crate) attempts: u32,
    /// Its result or failure.
    pub(crate) result: JobResult,
}
