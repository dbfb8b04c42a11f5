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

use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};

use crate::protocol::{JobResult, ReplyError};
use crate::units::micros;
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

    /// Microseconds it waited, from its acceptance until `started` (the
    /// queue wait every report carries).
    pub(crate) fn waited_us(&self, started: Instant) -> u64 {
        micros(started.saturating_duration_since(self.accepted_at))
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

/// What a worker waiting on the queues got (see [`JobQueues::wait_next`]).
pub(crate) enum Waited {
    /// The next job.
    Job(QueuedJob),
    /// Told to stop, or every sender is gone.
    Stop,
    /// Nothing came within the wait.
    Nothing,
}

impl JobQueues {
    /// The next job if one waits — a retry first — without blocking.
    pub(crate) fn try_next(&self) -> Option<QueuedJob> {
        self.retries.try_recv().or_else(|_| self.jobs.try_recv()).ok()
    }

    /// Jobs waiting in both queues.
    pub(crate) fn waiting(&self) -> usize {
        self.jobs.len() + self.retries.len()
    }

    /// Waits for the next job (a retry first), for `stop`, or — when
    /// `at_most` is set — until that much time has passed.
    pub(crate) fn wait_next<T>(&self, stop: &Receiver<T>, at_most: Option<Duration>) -> Waited {
        if let Some(job) = self.try_next() {
            return Waited::Job(job);
        }
        // `select!` picks at random among ready arms; both queues being
        // ready at once is rare, and the retry is taken first next time.
        let got = |job: Result<QueuedJob, _>| job.map_or(Waited::Stop, Waited::Job);
        match at_most {
            None => select! {
                recv(stop) -> _ => Waited::Stop,
                recv(self.retries) -> job => got(job),
                recv(self.jobs) -> job => got(job),
            },
            Some(wait) => select! {
                recv(stop) -> _ => Waited::Stop,
                recv(self.retries) -> job => got(job),
                recv(self.jobs) -> job => got(job),
                default(wait) => Waited::Nothing,
            },
        }
    }
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

impl JobReport {
    /// The report of `job` that ends in `error` on `worker`, after waiting
    /// `queue_us` and running `service_us` (0 when it never started).
    pub(crate) fn failed(
        job: &QueuedJob,
        worker: usize,
        queue_us: u64,
        service_us: u64,
        error: ReplyError,
    ) -> Self {
        JobReport {
            job: job.id,
            worker,
            host: None,
            queue_us,
            service_us,
            attempts: job.attempt,
            result: Err(error),
        }
    }
}
