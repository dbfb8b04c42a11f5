//! One home for a job's life, from the request that asks for it to the
//! reply that answers it.
//!
//! ```text
//!  reader ──submit_or_cached──▶ cache hit? ──▶ reply at once
//!                 │ miss
//!                 ▼
//!        Registry.insert (id → connection) ──▶ bounded queue ──▶ worker
//!                                                 ▲ retry queue   │
//!                                                 └───(crash)─────┤
//!  writer ◀──sink.send── Registry.take ◀──── Completer.finish ◀───┘
//! ```
//!
//! Two handles, one per side:
//! - [`Jobs`], for the reader threads: [`Jobs::submit_or_cached`] answers a
//!   job from the cache, refuses it, or registers and queues it;
//! - [`Completer`], for the worker pool: `still_wanted`, `retry`/`requeue`
//!   after a crash, and `finish`, which routes the reply back.
//!
//! Behind them: the [`registry`] (the id→connection map behind a `Mutex`),
//! the [`cache`] (results of repeated compute requests), and the queues
//! into the pool ([`crate::runtime::pool::queue`]).

pub(crate) mod cache;
pub(crate) mod completer;
pub(crate) mod registry;
pub(crate) mod rejection;

pub(crate) use completer::{no_worker_error, Completer};
pub(crate) use rejection::Rejection;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use cache::{CacheStats, ResultCache};
pub(crate) use registry::PendingReply;
use registry::{ConnId, Registry};

use crate::protocol::{encode_job_reply, ClientId, ReplyError, ReplyExtras};
use crate::runtime::pool::{JobQueues, QueuedJob};
use crate::server::stats::Stats;
use crate::work::job::JobKind;

/// What became of a job request handed to [`Jobs::submit_or_cached`].
pub(crate) enum Submitted {
    /// Queued: a worker will run it and the [`Completer`] will reply.
    Queued,
    /// Answered from the cache: this frame is the reply.
    Cached(Vec<u8>),
    /// Not accepted: answer the client (this id) with this error.
    Refused(ClientId, ReplyError),
}

/// The reader threads' side: accepts jobs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Jobs {
    /// The bounded queue into the pool (its receivers are the workers').
    queue: Sender<QueuedJob>,
    /// Its room, for the `BUSY` message and `stats`.
    capacity: usize,
    /// Who asked for each job in flight: the reader inserts, the completer takes.
    registry: Registry,
    /// Results of repeated compute requests, when the cache is on: the
    /// reader reads it, the completer fills it.
    cache: Option<Arc<ResultCache>>,
    /// The workers' side of the same jobs, handed to the pool.
    completer: Completer,
}

impl Jobs {
    /// Creates the jobs handle and the receiving ends of its queues (for the
    /// worker pool), with room for `capacity` waiting jobs. A job may be
    /// tried by up to `1 + retries` workers when its worker crashes.
    pub(crate) fn new(
        capacity: usize,
        retries: u32,
        registry: Registry,
        stats: Stats,
        cache: Option<Arc<ResultCache>>,
    ) -> (Jobs, JobQueues) {
        let (queue, jobs) = crossbeam_channel::bounded(capacity);
        let (retry_queue, retry_jobs) = crossbeam_channel::unbounded();
        let completer = Completer::new(
            registry.clone(),
            stats,
            cache.clone(),
            retry_queue,
            retries.saturating_add(1),
            None,
        );
        (Jobs { queue, capacity, registry, cache, completer }, JobQueues { jobs, retries: retry_jobs })
    }

    /// Logs a warning for every job that runs longer than `threshold` on
    /// its worker (`--slow-ms`). Call before handing out completers.
    pub(crate) fn warn_slow_jobs(mut self, threshold: Option<Duration>) -> Self {
        self.completer = self.completer.warn_slow_jobs(threshold);
        self
    }

    /// The same jobs, each recorded in `watch` when answered (the dashboard).
    pub(crate) fn watched_by(mut self, watch: Option<Arc<crate::server::watch::Watch>>) -> Self {
        self.completer = self.completer.watched_by(watch);
        self
    }

    /// The handle workers use to deliver results.
    pub(crate) fn completer(&self) -> Completer {
        self.completer.clone()
    }

    /// The result cache's counters, when the cache is on.
    pub(crate) fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(|cache| cache.stats())
    }

    /// What the reader thread calls for every job request: answers it from
    /// the cache when it can (`cacheable` is the request's payload, for jobs
    /// whose result depends on it alone), refuses it when no worker can run
    /// it (`refusal`: the server's answer when no local worker is up and none
    /// may be restarted yet, and no worker host is connected either), and
    /// otherwise registers and queues it — its reply then comes later, from
    /// the [`Completer`].
    pub(crate) fn submit_or_cached(
        &self,
        mut request: PendingReply,
        kind: JobKind,
        cacheable: Option<&[u8]>,
        refusal: Option<ReplyError>,
    ) -> Submitted {
        if let (Some(cache), Some(payload)) = (&self.cache, cacheable) {
            if let Some(key) = cache.key_for(payload) {
                if let Some(output) = cache.get(&key) {
                    let extras = ReplyExtras { cached: true, ..ReplyExtras::default() };
                    return Submitted::Cached(encode_job_reply(
                        &request.client_id,
                        &output,
                        extras,
                        request.command,
                        request.dialect,
                    ));
                }
                request.cache_key = Some(key);
            }
        }
        if let Some(error) = refusal {
            return Submitted::Refused(request.client_id, error);
        }
        match self.submit(request, kind) {
            Ok(()) => Submitted::Queued,
            Err((rejection, id)) => Submitted::Refused(id, rejection.to_error(self.capacity)),
        }
    }

    /// Registers a job and queues it for the next free worker (no cache, no
    /// check of the workers: see [`Jobs::submit_or_cached`]).
    ///
    /// # Errors
    /// The job is not accepted when the queue is full or closed; the client's
    /// id is handed back so the caller can answer with an error.
    pub(crate) fn submit(&self, request: PendingReply, kind: JobKind) -> Result<(), (Rejection, ClientId)> {
        let accepted_at = Instant::now();
        let registry = &self.registry;
        // Register first: once the job is in the queue a worker may finish it
        // at any moment, and it must find the entry when it does.
        let id = registry.insert(request);
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
    pub(crate) fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Room in the queue.
    pub(crate) fn queue_capacity(&self) -> usize {
        self.capacity
    }

    /// Jobs accepted and not yet answered (queued or running).
    pub(crate) fn in_flight(&self) -> usize {
        self.registry.len()
    }

    /// Forgets the jobs of a connection that closed (see
    /// [`Registry::cancel_connection`]); returns how many there were.
    pub(crate) fn cancel_connection(&self, conn: ConnId) -> usize {
        self.registry.cancel_connection(conn)
    }

    /// Answers every job still in flight with `error` (used when a drain at
    /// shutdown runs out of time). Returns how many there were.
    pub(crate) fn fail_all(&self, error: &ReplyError) -> usize {
        self.completer.fail_all(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CommandKind, Dialect, ErrorCode, JobOutput};
    use crate::runtime::pool::JobOutcomes;
    use crate::runtime::pool::JobReport;
    use crate::server::replies::ReplySink;
    use serde_json::value::RawValue;

    fn client_id(text: &str) -> ClientId {
        ClientId::from_json(&RawValue::from_string(text.into()).unwrap()).unwrap()
    }

    fn payload(frame: &[u8]) -> &str {
        std::str::from_utf8(&frame[4..]).unwrap()
    }

    fn request(id: &str, timing: bool, sink: &ReplySink) -> PendingReply {
        PendingReply {
            conn: 7,
            client_id: client_id(id),
            command: CommandKind::Compute,
            dialect: Dialect::ThreadCenter,
            timing,
            cache_key: None,
            sink: sink.clone(),
            received_at: Instant::now(),
            size: 2,
        }
    }

    #[test]
    fn a_full_queue_rejects_with_busy_and_leaves_nothing_behind() {
        let (jobs, _queues) = Jobs::new(1, 1, Registry::new(), Stats::new(), None);
        let (sink, _rx) = ReplySink::detached(8);
        let job = JobKind::Compute { n: 1 };
        assert!(jobs.submit(request("1", false, &sink), job.clone()).is_ok());
        let (rejection, id) = jobs.submit(request("2", false, &sink), job).unwrap_err();
        assert_eq!(rejection, Rejection::Busy);
        assert_eq!(id.as_json(), "2");
        assert_eq!(jobs.in_flight(), 1);
    }

    #[test]
    fn finish_replies_once_to_the_right_client_and_drops_unknown_jobs() {
        let (jobs, queues) = Jobs::new(4, 1, Registry::new(), Stats::new(), None);
        let (sink, replies) = ReplySink::detached(8);
        jobs.submit(request("\"x\"", true, &sink), JobKind::Compute { n: 2 }).unwrap();
        let queued = queues.jobs.try_recv().unwrap();
        let completer = jobs.completer();
        assert!(completer.still_wanted(queued.id));
        let report = |job| JobReport {
            job,
            worker: 3,
            host: None,
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
        assert_eq!(jobs.in_flight(), 0);
    }

    #[test]
    fn idempotent_jobs_are_retried_until_the_attempts_run_out() {
        let (jobs, queues) = Jobs::new(4, 1, Registry::new(), Stats::new(), None);
        let (sink, _rx) = ReplySink::detached(8);
        jobs.submit(request("1", false, &sink), JobKind::Compute { n: 2 }).unwrap();
        let completer = jobs.completer();
        let first = queues.jobs.try_recv().unwrap();
        assert!(completer.retry(&first), "attempt 1 of 2 crashed: retry");
        let second = queues.retries.try_recv().unwrap();
        assert_eq!(second.attempt, 2);
        assert!(!completer.retry(&second), "attempt 2 of 2 crashed: give up");

        jobs.submit(request("2", false, &sink), JobKind::Chaos(crate::protocol::Chaos::Crash)).unwrap();
        let chaos = queues.jobs.try_recv().unwrap();
        assert!(!completer.retry(&chaos), "injected faults are never retried");
    }

    #[test]
    fn a_job_that_never_started_goes_back_without_costing_an_attempt() {
        let (jobs, queues) = Jobs::new(4, 1, Registry::new(), Stats::new(), None);
        let (sink, _rx) = ReplySink::detached(8);
        jobs.submit(request("1", false, &sink), JobKind::Compute { n: 2 }).unwrap();
        let completer = jobs.completer();
        let queued = queues.jobs.try_recv().unwrap();
        assert!(completer.requeue(&queued));
        assert_eq!(queues.retries.try_recv().unwrap().attempt, 1, "not charged an attempt");

        jobs.submit(request("2", false, &sink), JobKind::Chaos(crate::protocol::Chaos::Panic)).unwrap();
        let chaos = queues.jobs.try_recv().unwrap();
        assert!(!completer.requeue(&chaos), "an injected fault never runs twice");
    }

    #[test]
    fn fail_all_answers_everything_in_flight() {
        let (jobs, _queues) = Jobs::new(4, 1, Registry::new(), Stats::new(), None);
        let (sink, replies) = ReplySink::detached(8);
        for id in ["1", "2"] {
            jobs.submit(request(id, false, &sink), JobKind::Compute { n: 2 }).unwrap();
        }
        assert_eq!(jobs.fail_all(&ReplyError::new(ErrorCode::ShuttingDown, "stopping")), 2);
        assert_eq!(jobs.in_flight(), 0);
        let codes: Vec<String> = replies.try_iter().map(|f| payload(&f).to_string()).collect();
        assert_eq!(codes.len(), 2);
        assert!(codes.iter().all(|c| c.contains("SHUTTING_DOWN")));
    }
}
