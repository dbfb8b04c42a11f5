//! The workers' side of a job's life: is it still wanted, may it run again
//! after a crash, and where does its reply go once it is done.
//!
//! The pool holds a [`Completer`] and calls nothing else of the jobs module:
//! `still_wanted` before starting a job, `retry` / `requeue` after a worker
//! died, and `finish` with the result. `finish` takes the job's entry out of
//! the registry (so each job is answered at most once), shapes the reply for
//! the asking connection's dialect, fills the cache, and hands the frame to
//! that connection's [`crate::server::replies::ReplySink`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::cache::ResultCache;
use super::registry::{PendingReply, Registry};
use crate::protocol::{encode_error_in, encode_job_reply, ErrorCode, ReplyError, ReplyExtras, Timing};
use crate::runtime::pool::{JobOutcomes, JobReport, QueuedJob};
use crate::server::stats::{ReplyOutcome, Stats};
use crate::units::micros;
use crate::work::job::JobId;

/// The workers' side: decides whether a job is still wanted, retries it, and
/// delivers results. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Completer {
    registry: Registry,
    stats: Stats,
    cache: Option<Arc<ResultCache>>,
    retry_queue: Sender<QueuedJob>,
    max_attempts: u32,
    /// Jobs whose service time is over this are logged at WARN (`--slow-ms`).
    slow_job: Option<Duration>,
    /// Where answered jobs are recorded for the dashboard, when there is one.
    watch: Option<Arc<crate::server::watch::Watch>>,
}

impl Completer {
    /// The completer of jobs registered in `registry`: retries go to
    /// `retry_queue`, up to `max_attempts` tries in all; results are cached
    /// in `cache` when there is one; jobs slower than `slow_job` are logged.
    pub(super) fn new(
        registry: Registry,
        stats: Stats,
        cache: Option<Arc<ResultCache>>,
        retry_queue: Sender<QueuedJob>,
        max_attempts: u32,
        slow_job: Option<Duration>,
    ) -> Self {
        Completer { registry, stats, cache, retry_queue, max_attempts, slow_job, watch: None }
    }

    /// The same completer, recording every answered job in `watch`.
    pub(super) fn watched_by(self, watch: Option<Arc<crate::server::watch::Watch>>) -> Self {
        Completer { watch, ..self }
    }

    /// The same completer, logging jobs slower than `threshold`.
    pub(super) fn warn_slow_jobs(self, threshold: Option<Duration>) -> Self {
        Completer { slow_job: threshold, ..self }
    }

    /// `--slow-ms`: one WARN line per job that ran longer than the
    /// threshold, with what an operator needs to find it again.
    fn warn_if_slow(&self, report: &JobReport, pending: &PendingReply, outcome: ReplyOutcome) {
        let Some(threshold) = self.slow_job else { return };
        if report.service_us <= micros(threshold) {
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
            total_ms = millis(micros(pending.received_at.elapsed())),
            threshold_ms = millis(micros(threshold)),
            "slow job"
        );
    }
    /// Answers every job still in flight with `error` (used when a drain at
    /// shutdown runs out of time). Returns how many there were.
    pub(crate) fn fail_all(&self, error: &ReplyError) -> usize {
        let pending = self.registry.drain_all();
        let count = pending.len();
        for (_, reply) in pending {
            let outcome = ReplyOutcome::Error(error.code);
            self.stats.replied(Some(reply.command), outcome, reply.received_at.elapsed());
            reply.sink.send(encode_error_in(reply.dialect, Some(&reply.client_id), error, None));
        }
        count
    }
}

/// The refusal for a job that no worker can run: none is up, and
/// replacements are held back by the restart budget. A worker being replaced
/// is normal (jobs queue for a few ms), but with the budget spent a job could
/// wait a whole `--restart-window`: say so at once instead. Both the reader
/// ([`super::Jobs::submit_or_cached`]) and the pool use this one answer.
pub(crate) fn no_worker_error() -> ReplyError {
    ReplyError::new(
        ErrorCode::Busy,
        "no worker is running: workers keep failing and replacements are rate-limited (--max-restarts); \
         retry later",
    )
}

/// Microseconds as milliseconds to 3 decimals, for log lines.
fn millis(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// What the worker pool calls (see [`JobOutcomes`]): is a job still
/// wanted, may it run again after a crash, and its reply.
impl JobOutcomes for Completer {
    /// Whether the job's client still waits for it. A job that is not wanted
    /// is counted as cancelled and must not be run.
    fn still_wanted(&self, job: JobId) -> bool {
        let wanted = self.registry.is_wanted(job);
        if !wanted {
            self.stats.jobs_cancelled(1);
        }
        wanted
    }

    /// After the worker running `job` crashed: queues it for another worker
    /// when it may be retried and has attempts left, and returns `true`.
    /// Otherwise returns `false` and the caller answers the job.
    fn retry(&self, job: &QueuedJob) -> bool {
        if !job.kind.is_idempotent() || job.attempt >= self.max_attempts || !self.registry.is_wanted(job.id) {
            return false;
        }
        self.stats.job_retried();
        self.retry_queue.send(job.again(job.attempt + 1)).is_ok()
    }

    /// Puts back a job that a dead worker had queued but not started, with
    /// its attempt count unchanged. Returns `false` (and the caller answers
    /// the job) when it must not run on another worker: an injected fault.
    fn requeue(&self, job: &QueuedJob) -> bool {
        if !job.kind.is_idempotent() {
            return false;
        }
        if !self.registry.is_wanted(job.id) {
            return true; // nobody waits for it any more
        }
        self.retry_queue.send(job.again(job.attempt)).is_ok()
    }

    /// Delivers a finished job's reply to the connection that asked, if it is
    /// still there, records its timings, and fills the cache.
    fn finish(&self, report: JobReport) {
        if let Err(ReplyError { code: ErrorCode::Timeout, .. }) = &report.result {
            self.stats.job_timed_out();
        }
        // Who asked, first: taking the entry is what makes this the job's
        // one reply. A gateway drops a duplicate result before it gets here
        // (its table of forwarded jobs has let go of it), so what finds no
        // entry is a job that ran for a client that has since hung up: its
        // work is counted, its reply dropped, never misdelivered.
        let Some(pending) = self.registry.take(report.job) else {
            self.stats.job_completed(None, report.queue_us, report.service_us);
            self.stats.reply_dropped();
            return;
        };
        self.stats.job_completed(Some(pending.command), report.queue_us, report.service_us);
        let outcome = match &report.result {
            Ok(_) => ReplyOutcome::Ok,
            Err(failure) => ReplyOutcome::Error(failure.code),
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
                    encode_job_reply(&pending.client_id, &output, extras, pending.command, pending.dialect);
                if let (Some(cache), Some(key)) = (&self.cache, pending.cache_key) {
                    cache.insert(key, output);
                }
                frame
            }
            Err(error) => encode_error_in(pending.dialect, Some(&pending.client_id), &error, extras.attempts),
        };
        self.stats.replied(Some(pending.command), outcome, pending.received_at.elapsed());
        if let Some(watch) = &self.watch {
            watch.job_finished(crate::server::watch::Finished {
                worker: report.worker,
                host: report.host.as_deref(),
                id: pending.client_id.as_json(),
                cmd: pending.command.as_str(),
                queue_us: report.queue_us,
                service_us: report.service_us,
                outcome: match outcome {
                    ReplyOutcome::Ok => "ok",
                    ReplyOutcome::Error(code) => code.as_str(),
                },
                attempts: report.attempts,
            });
        }
        pending.sink.send(frame);
    }

    /// Answers a job that was queued while no worker can run it (see
    /// [`no_worker_error`]): the pool calls this for jobs that were already
    /// queued when the last worker died.
    fn refuse_no_worker(&self, job: &QueuedJob, worker: usize) {
        self.finish(JobReport::failed(job, worker, job.waited_us(Instant::now()), 0, no_worker_error()));
    }
}
