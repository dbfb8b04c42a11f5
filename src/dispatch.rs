//! The dispatcher: from an accepted request to a queued job, and from a
//! finished job back to the connection that asked.
//!
//! ```text
//!  reader ──submit──▶ Registry.insert ──▶ bounded job queue ──▶ worker
//!                     (id → connection)                          │
//!  writer ◀──sink.send── Registry.take ◀────── Completer.finish ◀┘
//! ```
//!
//! The queue is a bounded crossbeam channel shared by all workers, so a job
//! goes to whichever worker is free first. When the queue is full, `submit`
//! fails at once and the client gets `BUSY`: the server never buffers more
//! work than `--queue-capacity` jobs.

use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::connection::ReplySink;
use crate::job::{JobFailure, JobId, JobKind, JobOutput, JobResult};
use crate::protocol::{encode_error, encode_result, ClientId, CommandKind, ErrorCode, Timing};
use crate::registry::{ConnId, PendingReply, Registry};
use crate::stats::Stats;

/// A job waiting in the queue for a worker.
#[derive(Debug)]
pub struct QueuedJob {
    /// The job's registry id.
    pub id: JobId,
    /// What to run.
    pub kind: JobKind,
    /// When it was accepted; the worker measures the queue wait from here.
    pub accepted_at: Instant,
}

/// Why a job was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The queue is full (`BUSY`).
    Busy,
    /// The worker pool has stopped (`SHUTTING_DOWN`).
    Closed,
}

impl Rejection {
    /// The error code and message the client gets.
    pub fn to_error(self, capacity: usize) -> (ErrorCode, String) {
        match self {
            Rejection::Busy => (
                ErrorCode::Busy,
                format!("the job queue is full ({capacity} jobs waiting); retry later or lower the load"),
            ),
            Rejection::Closed => (
                ErrorCode::ShuttingDown,
                "the server is shutting down and takes no new jobs".into(),
            ),
        }
    }
}

/// The reader threads' side: accepts jobs. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    queue: Sender<QueuedJob>,
    capacity: usize,
    completer: Completer,
}

/// The workers' side: decides whether a job is still wanted and delivers
/// results. Cheap to clone.
#[derive(Clone)]
pub struct Completer {
    registry: Registry,
    stats: Stats,
}

/// A finished job, as a worker reports it.
#[derive(Debug)]
pub struct JobReport {
    /// The job's registry id.
    pub job: JobId,
    /// The worker that ran it.
    pub worker: usize,
    /// Microseconds it waited in the queue.
    pub queue_us: u64,
    /// Microseconds it ran on the worker.
    pub service_us: u64,
    /// Its result or failure.
    pub result: JobResult,
}

impl Dispatcher {
    /// Creates the dispatcher and the receiving end of its job queue (for the
    /// worker pool), with room for `capacity` waiting jobs.
    pub fn new(capacity: usize, registry: Registry, stats: Stats) -> (Dispatcher, Receiver<QueuedJob>) {
        let (queue, jobs) = crossbeam_channel::bounded(capacity);
        let completer = Completer { registry, stats };
        (
            Dispatcher {
                queue,
                capacity,
                completer,
            },
            jobs,
        )
    }

    /// The handle workers use to deliver results.
    pub fn completer(&self) -> Completer {
        self.completer.clone()
    }

    /// Registers a job and queues it for the next free worker.
    ///
    /// # Errors
    /// The job is not accepted when the queue is full or closed; the client's
    /// id is handed back so the caller can answer with an error.
    pub fn submit(
        &self,
        conn: ConnId,
        client_id: ClientId,
        command: CommandKind,
        kind: JobKind,
        timing: bool,
        sink: &ReplySink,
    ) -> Result<(), (Rejection, ClientId)> {
        let accepted_at = Instant::now();
        let registry = &self.completer.registry;
        // Register first: once the job is in the queue a worker may finish it
        // at any moment, and it must find the entry when it does.
        let id = registry.insert(PendingReply {
            conn,
            client_id,
            command,
            timing,
            sink: sink.clone(),
            accepted_at,
        });
        let rejection = match self.queue.try_send(QueuedJob {
            id,
            kind,
            accepted_at,
        }) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(_)) => Rejection::Busy,
            Err(TrySendError::Disconnected(_)) => Rejection::Closed,
        };
        // Not queued, so no worker can know this id: take the entry back.
        let pending = registry
            .take(id)
            .expect("an unqueued job cannot have been answered");
        Err((rejection, pending.client_id))
    }

    /// Jobs waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Room in the queue.
    pub fn queue_capacity(&self) -> usize {
        self.capacity
    }

    /// Jobs accepted and not yet answered (queued or running).
    pub fn in_flight(&self) -> usize {
        self.completer.registry.len()
    }

    /// Forgets the jobs of a connection that closed (see
    /// [`Registry::cancel_connection`]); returns how many there were.
    pub fn cancel_connection(&self, conn: ConnId) -> usize {
        self.completer.registry.cancel_connection(conn)
    }
}

impl Completer {
    /// Whether the job's client still waits for it. A job that is not wanted
    /// is counted as cancelled and must not be run.
    pub fn still_wanted(&self, job: JobId) -> bool {
        let wanted = self.registry.is_wanted(job);
        if !wanted {
            self.stats.jobs_cancelled(1);
        }
        wanted
    }

    /// Delivers a finished job's reply to the connection that asked, if it is
    /// still there, and records its timings.
    pub fn finish(&self, report: JobReport) {
        self.stats.job_completed(report.queue_us, report.service_us);
        let Some(pending) = self.registry.take(report.job) else {
            // Already answered, or the client hung up: drop it, never misdeliver.
            self.stats.reply_dropped();
            return;
        };
        let timing = pending.timing.then_some(Timing {
            worker: report.worker,
            queue_us: report.queue_us,
            service_us: report.service_us,
        });
        let frame = match &report.result {
            Ok(JobOutput::Compute(value)) => encode_result(&pending.client_id, value, timing),
            Err(JobFailure { code, message }) => {
                self.stats.error(*code);
                encode_error(Some(&pending.client_id), *code, message)
            }
        };
        pending.sink.send(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn client_id(text: &str) -> ClientId {
        ClientId::from_json(&RawValue::from_string(text.into()).unwrap()).unwrap()
    }

    fn payload(frame: &[u8]) -> &str {
        std::str::from_utf8(&frame[4..]).unwrap()
    }

    #[test]
    fn a_full_queue_rejects_with_busy_and_leaves_nothing_behind() {
        let (dispatcher, _jobs) = Dispatcher::new(1, Registry::new(), Stats::new());
        let (sink, _rx) = ReplySink::detached(8);
        let job = JobKind::Compute { n: 1 };
        assert!(dispatcher
            .submit(1, client_id("1"), CommandKind::Compute, job.clone(), false, &sink)
            .is_ok());
        let (rejection, id) = dispatcher
            .submit(1, client_id("2"), CommandKind::Compute, job, false, &sink)
            .unwrap_err();
        assert_eq!(rejection, Rejection::Busy);
        assert_eq!(id.as_json(), "2");
        assert_eq!(dispatcher.in_flight(), 1);
    }

    #[test]
    fn finish_replies_once_to_the_right_client_and_drops_unknown_jobs() {
        let (dispatcher, jobs) = Dispatcher::new(4, Registry::new(), Stats::new());
        let (sink, replies) = ReplySink::detached(8);
        dispatcher
            .submit(
                7,
                client_id("\"x\""),
                CommandKind::Compute,
                JobKind::Compute { n: 2 },
                true,
                &sink,
            )
            .unwrap();
        let queued = jobs.try_recv().unwrap();
        let completer = dispatcher.completer();
        assert!(completer.still_wanted(queued.id));
        let report = |job| JobReport {
            job,
            worker: 3,
            queue_us: 5,
            service_us: 9,
            result: Ok(JobOutput::Compute(113)),
        };
        completer.finish(report(queued.id));
        completer.finish(report(queued.id)); // a late duplicate must be dropped
        let frame = replies.try_recv().unwrap();
        assert_eq!(
            payload(&frame),
            r#"{"id":"x","result":113,"worker":3,"queue_us":5,"service_us":9}"#
        );
        assert!(replies.try_recv().is_err(), "exactly one reply");
        assert_eq!(dispatcher.in_flight(), 0);
    }
}
