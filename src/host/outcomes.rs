//! The host's side of the pool's [`JobOutcomes`]: results and hand-backs go
//! to the bridge's reporter task, which talks to NATS.

use crossbeam_channel::Sender;
use tokio::sync::mpsc::UnboundedSender;

use crate::runtime::pool::{JobOutcomes, JobReport, QueuedJob};
use crate::work::job::JobId;

/// What the pool tells the reporter task.
pub(crate) enum HostEvent {
    /// A job finished (or failed): send its result, then acknowledge it.
    Done(JobReport),
    /// A job this host cannot run after all (its worker died mid-job, or no
    /// worker is up): give it back to JetStream for another host.
    HandBack(JobId),
}

/// The pool's outcomes on a worker host.
pub(crate) struct HostOutcomes<F> {
    /// To the reporter task (an unbounded tokio channel: `send` never blocks
    /// a worker thread; it holds at most one event per held job).
    events: UnboundedSender<HostEvent>,
    /// The pool's own retry queue, for jobs handed to a worker that died
    /// before starting them.
    retries: Sender<QueuedJob>,
    /// Whether the host still holds a job.
    holds: F,
}

impl<F: Fn(JobId) -> bool> HostOutcomes<F> {
    pub(crate) fn new(events: UnboundedSender<HostEvent>, retries: Sender<QueuedJob>, holds: F) -> Self {
        HostOutcomes { events, retries, holds }
    }
}

impl<F: Fn(JobId) -> bool + Send + Sync> JobOutcomes for HostOutcomes<F> {
    fn still_wanted(&self, job: JobId) -> bool {
        (self.holds)(job)
    }

    /// A worker died mid-job: the job goes back to JetStream, which counts
    /// the delivery; the next host enforces the attempt limit.
    fn retry(&self, job: &QueuedJob) -> bool {
        self.events.send(HostEvent::HandBack(job.id)).is_ok()
    }

    /// Not started yet: run it here on the next free worker.
    fn requeue(&self, job: &QueuedJob) -> bool {
        self.retries.send(job.again(job.attempt)).is_ok()
    }

    fn finish(&self, report: JobReport) {
        let _ = self.events.send(HostEvent::Done(report));
    }

    /// No worker can run it here: another host may.
    fn refuse_no_worker(&self, job: &QueuedJob, _worker: usize) {
        let _ = self.events.send(HostEvent::HandBack(job.id));
    }
}
