//! The dispatcher: from an accepted request to a queued job, and from a
//! finished job back to the connection that asked.
//!
//! ```text
//!  reader ──submit──▶ Registry.insert ──▶ bounded job queue ──▶ worker
//!                     (id → connection)          ▲ retry queue   │
//!                                                └───(crash)─────┤
//!  writer ◀──sink.send── Registry.take ◀────── Completer.finish ◀┘
//! ```
//!
//! The queue is a bounded crossbeam channel shared by all workers, so a job
//! goes to whichever worker is free first. When the queue is full, `submit`
//! fails at once and the client gets `BUSY`: the server never buffers more
//! work than `--queue-capacity` jobs.
//!
//! A job whose worker process crashed may be tried again (`--retries`) when
//! running it twice is harmless. It goes to a separate retry queue that every
//! free worker checks before the main queue, so it is picked up next — by
//! another worker, since the crashed one is being replaced. The retry queue
//! holds at most one job per worker (only a worker's own job can need a
//! retry), so it needs no capacity limit of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::cache::{CacheKey, ResultCache};
use crate::connection::ReplySink;
use crate::job::{JobFailure, JobId, JobKind, JobOutput, JobResult};
use crate::protocol::{
    encode_error_in, encode_predictions, encode_result, ClientId, CommandKind, Dialect, ErrorCode,
    ReplyExtras, Timing,
};
use crate::registry::{ConnId, PendingReply, Registry};
use crate::stats::{Outcome, Stats};

/// A job waiting in the queue for a worker.
#[derive(Debug)]
pub struct QueuedJob {
    /// The job's registry id.
    pub id: JobId,
    /// What to run.
    pub kind: JobKind,
    /// When it was accepted; the worker measures the queue wait from here.
    pub accepted_at: Instant,
    /// 1 for the first try, 2 for the first retry, ...
    pub attempt: u32,
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
            Rejection::Closed => {
                (ErrorCode::ShuttingDown, "the server is shutting down and takes no new jobs".into())
            }
        }
    }
}

/// What a job needs besides its kind: who asked, and how to answer.
pub struct JobRequest<'a> {
    /// The asking connection.
    pub conn: ConnId,
    /// The client's id.
    pub client_id: ClientId,
    /// The command (for counters and the reply's shape).
    pub command: CommandKind,
    /// Which protocol to answer in.
    pub dialect: Dialect,
    /// Whether timing fields were asked for.
    pub timing: bool,
    /// Where to store the result, when the cache is on and the job cacheable.
    pub cache_key: Option<CacheKey>,
    /// The connection's reply path.
    pub sink: &'a ReplySink,
    /// When the request's frame was read (the start of its latency).
    pub received_at: Instant,
}

/// The reader threads' side: accepts jobs. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    queue: Sender<QueuedJob>,
    capacity: usize,
    completer: Completer,
}

/// The workers' side: decides whether a job is still wanted, retries it, and
/// delivers results. Cheap to clone.
#[derive(Clone)]
pub struct Completer {
    registry: Registry,
    stats: Stats,
    cache: Option<Arc<ResultCache>>,
    retry_queue: Sender<QueuedJob>,
    max_attempts: u32,
    /// Jobs whose service time is over this are logged at WARN (`--slow-ms`).
    slow_job: Option<Duration>,
}

/// The receiving ends for the worker pool.
pub struct JobQueues {
    /// New jobs.
    pub jobs: Receiver<QueuedJob>,
    /// Jobs to try again after a crash; workers take these first.
    pub retries: Receiver<QueuedJob>,
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
    /// Workers that tried it (1 unless it was retried).
    pub attempts: u32,
    /// Its result or failure.
    pub result: JobResult,
}

impl Dispatcher {
    /// Creates the dispatcher and the receiving ends of its queues (for the
    /// worker pool), with room for `capacity` waiting jobs. A job may be
    /// tried by up to `1 + retries` workers when its worker crashes.
    pub fn new(
        capacity: usize,
        retries: u32,
        registry: Registry,
        stats: Stats,
        cache: Option<Arc<ResultCache>>,
    ) -> (Dispatcher, JobQueues) {
        let (queue, jobs) = crossbeam_channel::bounded(capacity);
        let (retry_queue, retry_jobs) = crossbeam_channel::unbounded();
        let completer = Completer {
            registry,
            stats,
            cache,
            retry_queue,
            max_attempts: retries.saturating_add(1),
            slow_job: None,
        };
        (Dispatcher { queue, capacity, completer }, JobQueues { jobs, retries: retry_jobs })
    }

    /// Logs a warning for every job that runs longer than `threshold` on
    /// its worker (`--slow-ms`). Call before handing out completers.
    pub fn warn_slow_jobs(mut self, threshold: Option<Duration>) -> Self {
        self.completer.slow_job = threshold;
        self
    }

    /// The handle workers use to deliver results.
    pub fn completer(&self) -> Completer {
        self.completer.clone()
    }

    /// The result cache, when enabled.
    pub fn cache(&self) -> Option<&Arc<ResultCache>> {
        self.completer.cache.as_ref()
    }

    /// Registers a job and queues it for the next free worker.
    ///
    /// # Errors
    /// The job is not accepted when the queue is full or closed; the client's
    /// id is handed back so the caller can answer with an error.
    pub fn submit(&self, request: JobRequest<'_>, kind: JobKind) -> Result<(), (Rejection, ClientId)> {
        let accepted_at = Instant::now();
        let registry = &self.completer.registry;
        // Register first: once the job is in the queue a worker may finish it
        // at any moment, and it must find the entry when it does.
        let id = registry.insert(PendingReply {
            conn: request.conn,
            client_id: request.client_id,
            command: request.command,
            dialect: request.dialect,
            timing: request.timing,
            cache_key: request.cache_key,
            sink: request.sink.clone(),
            received_at: request.received_at,
            size: kind.size(),
        });
        let rejection = match self.queue.try_send(QueuedJob { id, kind, accepted_at, attempt: 1 }) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(_)) => Rejection::Busy,
            Err(TrySendError::Disconnected(_)) => Rejection::Closed,
        };
        // Not queued, so no worker can know this id: take the entry back.
        let pending = registry.take(id).expect("an unqueued job cannot have been answered");
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

    /// Answers every job still in flight with `code` (used when a drain at
    /// shutdown runs out of time). Returns how many there were.
    pub fn fail_all(&self, code: ErrorCode, message: &str) -> usize {
        let pending = self.completer.registry.drain_all();
        let count = pending.len();
        for (_, reply) in pending {
            let outcome = Outcome::Error(code);
            self.completer.stats.replied(Some(reply.command), outcome, reply.received_at.elapsed());
            reply.sink.send(encode_error_in(reply.dialect, Some(&reply.client_id), code, message, None));
        }
        count
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

    /// After the worker running `job` crashed: queues it for another worker
    /// when it may be retried and has attempts left, and returns `true`.
    /// Otherwise returns `false` and the caller answers the job.
    pub fn retry(&self, job: &QueuedJob) -> bool {
        if !job.kind.is_idempotent() || job.attempt >= self.max_attempts || !self.registry.is_wanted(job.id) {
            return false;
        }
        self.stats.job_retried();
        let next = QueuedJob {
            id: job.id,
            kind: job.kind.clone(),
            accepted_at: job.accepted_at,
            attempt: job.attempt + 1,
        };
        self.retry_queue.send(next).is_ok()
    }

    /// Puts back a job that a dead worker had queued but not started, with
    /// its attempt count unchanged. Returns `false` (and the caller answers
    /// the job) when it must not run on another worker: an injected fault.
    pub fn requeue(&self, job: &QueuedJob) -> bool {
        if !job.kind.is_idempotent() {
            return false;
        }
        if !self.registry.is_wanted(job.id) {
            return true; // nobody waits for it any more
        }
        let again = QueuedJob {
            id: job.id,
            kind: job.kind.clone(),
            accepted_at: job.accepted_at,
            attempt: job.attempt,
        };
        self.retry_queue.send(again).is_ok()
    }

    /// Delivers a finished job's reply to the connection that asked, if it is
    /// still there, records its timings, and fills the cache.
    pub fn finish(&self, report: JobReport) {
        if let Err(JobFailure { code: ErrorCode::Timeout, .. }) = &report.result {
            self.stats.job_timed_out();
        }
        let pending = self.registry.take(report.job);
        let command = pending.as_ref().map(|p| p.command);
        self.stats.job_completed(command, report.queue_us, report.service_us);
        let Some(pending) = pending else {
            // Already answered, or the client hung up: drop it, never misdeliver.
            self.stats.reply_dropped();
            return;
        };
        let outcome = match &report.result {
            Ok(_) => Outcome::Ok,
            Err(failure) => Outcome::Error(failure.code),
        };
        self.warn_if_slow(&report, &pending, outcome);
        let extras = ReplyExtras {
            timing: pending.timing.then_some(Timing {
                worker: report.worker,
                queue_us: report.queue_us,
                service_us: report.service_us,
            }),
            attempts: (report.attempts > 1).then_some(report.attempts),
            cached: false,
        };
        let frame = match report.result {
            Ok(output) => {
                let frame =
                    encode_output(&pending.client_id, &output, extras, pending.command, pending.dialect);
                if let (Some(cache), Some(key)) = (&self.cache, pending.cache_key) {
                    cache.insert(key, output);
                }
                frame
            }
            Err(JobFailure { code, message }) => {
                encode_error_in(pending.dialect, Some(&pending.client_id), code, &message, extras.attempts)
            }
        };
        self.stats.replied(Some(pending.command), outcome, pending.received_at.elapsed());
        pending.sink.send(frame);
    }

    /// `--slow-ms`: one WARN line per job that ran longer than the
    /// threshold, with what an operator needs to find it again.
    fn warn_if_slow(&self, report: &JobReport, pending: &PendingReply, outcome: Outcome) {
        let Some(threshold) = self.slow_job else { return };
        if report.service_us <= threshold.as_micros() as u64 {
            return;
        }
        tracing::warn!(
            command = pending.command.as_str(),
            size = pending.size,
            id = pending.client_id.as_json(),
            conn = pending.conn,
            worker = report.worker,
            attempts = report.attempts,
            outcome = outcome.as_str(),
            service_ms = millis(report.service_us),
            queue_ms = millis(report.queue_us),
            total_ms = millis(pending.received_at.elapsed().as_micros() as u64),
            threshold_ms = millis(threshold.as_micros() as u64),
            "slow job"
        );
    }
}

/// Microseconds as milliseconds to 3 decimals, for log lines.
fn millis(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The reply frame of a successful job, shaped for its command and dialect.
pub fn encode_output(
    id: &ClientId,
    output: &JobOutput,
    extras: ReplyExtras,
    command: CommandKind,
    dialect: Dialect,
) -> Vec<u8> {
    match output {
        JobOutput::Compute(value) => encode_result(id, value, extras),
        JobOutput::Slept(ms) => encode_result(id, &serde_json::json!({ "slept_ms": ms }), extras),
        JobOutput::Predictions(outcomes) => {
            encode_predictions(id, outcomes, command == CommandKind::Predict, dialect, extras)
        }
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

    fn request<'a>(id: &str, timing: bool, sink: &'a ReplySink) -> JobRequest<'a> {
        JobRequest {
            conn: 7,
            client_id: client_id(id),
            command: CommandKind::Compute,
            dialect: Dialect::ThreadCenter,
            timing,
            cache_key: None,
            sink,
            received_at: Instant::now(),
        }
    }

    #[test]
    fn a_full_queue_rejects_with_busy_and_leaves_nothing_behind() {
        let (dispatcher, _queues) = Dispatcher::new(1, 1, Registry::new(), Stats::new(), None);
        let (sink, _rx) = ReplySink::detached(8);
        let job = JobKind::Compute { n: 1 };
        assert!(dispatcher.submit(request("1", false, &sink), job.clone()).is_ok());
        let (rejection, id) = dispatcher.submit(request("2", false, &sink), job).unwrap_err();
        assert_eq!(rejection, Rejection::Busy);
        assert_eq!(id.as_json(), "2");
        assert_eq!(dispatcher.in_flight(), 1);
    }

    #[test]
    fn finish_replies_once_to_the_right_client_and_drops_unknown_jobs() {
        let (dispatcher, queues) = Dispatcher::new(4, 1, Registry::new(), Stats::new(), None);
        let (sink, replies) = ReplySink::detached(8);
        dispatcher.submit(request("\"x\"", true, &sink), JobKind::Compute { n: 2 }).unwrap();
        let queued = queues.jobs.try_recv().unwrap();
        let completer = dispatcher.completer();
        assert!(completer.still_wanted(queued.id));
        let report = |job| JobReport {
            job,
            worker: 3,
            queue_us: 5,
            service_us: 9,
            attempts: 1,
            result: Ok(JobOutput::Compute(113)),
        };
        completer.finish(report(queued.id));
        completer.finish(report(queued.id)); // a late duplicate must be dropped
        let frame = replies.try_recv().unwrap();
        assert_eq!(payload(&frame), r#"{"id":"x","result":113,"worker":3,"queue_us":5,"service_us":9}"#);
        assert!(replies.try_recv().is_err(), "exactly one reply");
        assert_eq!(dispatcher.in_flight(), 0);
    }

    #[test]
    fn idempotent_jobs_are_retried_until_the_attempts_run_out() {
        let (dispatcher, queues) = Dispatcher::new(4, 1, Registry::new(), Stats::new(), None);
        let (sink, _rx) = ReplySink::detached(8);
        dispatcher.submit(request("1", false, &sink), JobKind::Compute { n: 2 }).unwrap();
        let completer = dispatcher.completer();
        let first = queues.jobs.try_recv().unwrap();
        assert!(completer.retry(&first), "attempt 1 of 2 crashed: retry");
        let second = queues.retries.try_recv().unwrap();
        assert_eq!(second.attempt, 2);
        assert!(!completer.retry(&second), "attempt 2 of 2 crashed: give up");

        dispatcher.submit(request("2", false, &sink), JobKind::Chaos(crate::job::Chaos::Crash)).unwrap();
        let chaos = queues.jobs.try_recv().unwrap();
        assert!(!completer.retry(&chaos), "injected faults are never retried");
    }

    #[test]
    fn a_job_that_never_started_goes_back_without_costing_an_attempt() {
        let (dispatcher, queues) = Dispatcher::new(4, 1, Registry::new(), Stats::new(), None);
        let (sink, _rx) = ReplySink::detached(8);
        dispatcher.submit(request("1", false, &sink), JobKind::Compute { n: 2 }).unwrap();
        let completer = dispatcher.completer();
        let queued = queues.jobs.try_recv().unwrap();
        assert!(completer.requeue(&queued));
        assert_eq!(queues.retries.try_recv().unwrap().attempt, 1, "not charged an attempt");

        dispatcher.submit(request("2", false, &sink), JobKind::Chaos(crate::job::Chaos::Panic)).unwrap();
        let chaos = queues.jobs.try_recv().unwrap();
        assert!(!completer.requeue(&chaos), "an injected fault never runs twice");
    }

    #[test]
    fn fail_all_answers_everything_in_flight() {
        let (dispatcher, _queues) = Dispatcher::new(4, 1, Registry::new(), Stats::new(), None);
        let (sink, replies) = ReplySink::detached(8);
        for id in ["1", "2"] {
            dispatcher.submit(request(id, false, &sink), JobKind::Compute { n: 2 }).unwrap();
        }
        assert_eq!(dispatcher.fail_all(ErrorCode::ShuttingDown, "stopping"), 2);
        assert_eq!(dispatcher.in_flight(), 0);
        let codes: Vec<String> = replies.try_iter().map(|f| payload(&f).to_string()).collect();
        assert_eq!(codes.len(), 2);
        assert!(codes.iter().all(|c| c.contains("SHUTTING_DOWN")));
    }
}
