//! The job queues between the reader threads and the workers, and what
//! travels on them.
//!
//! The main queue is a bounded crossbeam channel shared by all workers, so a
//! job goes to whichever worker is free first. When it is full, a new job is
//! refused at once with `BUSY`: the server never buffers more work than
//! `--queue-capacity` jobs.
//!
//! A job whose worker crashed may be tried again (`--retries`). It goes to a
//! separate retry queue that every free worker checks before the main queue,
//! so it is picked up next — by another worker, since the crashed one is
//! being replaced. The retry queue holds at most one job per worker (only a
//! worker's own jobs can need a retry), so it needs no capacity of its own.

use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::protocol::{ErrorCode, ReplyError};
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

/// Why a job was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The queue is full (`BUSY`).
    Busy,
    /// The worker pool has stopped (`SHUTTING_DOWN`).
    Closed,
}

impl Rejection {
    /// The error the client gets.
    pub(crate) fn to_error(self, capacity: usize) -> ReplyError {
        match self {
            Rejection::Busy => ReplyError::new(
                ErrorCode::Busy,
                format!("the job queue is full ({capacity} jobs waiting); retry later or lower the load"),
            ),
            Rejection::Closed => {
                ReplyError::new(ErrorCode::ShuttingDown, "the server is shutting down and takes no new jobs")
            }
        }
    }
}

/// The receiving ends for the worker pool.
pub(crate) struct JobQueues {
    /// New jobs.
    pub(crate) jobs: Receiver<QueuedJob>,
    /// Jobs to try again after a crash; workers take these first.
    pub(crate) retries: Receiver<QueuedJob>,
}
