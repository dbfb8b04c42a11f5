//! The outgoing half of the gateway: the **forwarder** thread takes jobs
//! from the server's queues while the hosts have room, publishes each
//! (signed) to the jobs stream, and keeps a record of every job out until
//! its result comes back or its deadline passes — then it answers the job
//! itself.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishError, context::PublishErrorKind as Kind};
use crossbeam_channel::{select, Receiver};

use super::{job_deadline, no_host_error, GatewaySettings, GatewayStatus, API_WAIT, OUTAGE_PATIENCE};
use crate::protocol::{ErrorCode, ReplyError};
use crate::remote::bridge::Bridge;
use crate::remote::envelope::{now_ms, Signer};
use crate::remote::wire::{self, JobToken, RemoteJob};
use crate::remote::{self as nats, JOBS_SUBJECT};
use crate::runtime::pool::{JobOutcomes, JobQueues, JobReport, QueuedJob, Waited};
use crate::server::jobs::Completer;
use crate::units::micros;
use crate::work::job::{JobId, JobKind};

/// The longest the forwarder waits for room before it looks again: room
/// opens when a result comes back (which wakes it at once) or when a new
/// host's heartbeat raises the capacity (seen within this).
const NO_ROOM_RECHECK: Duration = Duration::from_millis(50);
/// Jobs a gateway keeps out per live host slot: one running and one waiting
/// in the stream, so a slot that frees up finds its next job without a round
/// trip through this gateway.
const JOBS_OUT_PER_SLOT: usize = 2;
/// How often the gateway looks for jobs past their deadline.
const DEADLINE_CHECK_EVERY: Duration = Duration::from_millis(250);
/// The pause between two tries of a publish while the link is down.
const PUBLISH_RETRY: Duration = Duration::from_millis(250);

/// One job this gateway has sent and not yet had a result for.
#[derive(Debug)]
pub(super) struct Outstanding {
    token: JobToken,
    deadline: Instant,
    /// Where it is in the jobs stream (from JetStream's acknowledgement of
    /// the publish), to delete it if the deadline passes.
    pub(super) stream_seq: Option<u64>,
    /// The whole deadline, for the message that says it passed.
    allowed: Duration,
    accepted_at: Instant,
    attempt: u32,
}

impl Outstanding {
    /// The one reply to this job when the gateway answers it itself (its
    /// deadline passed, or the gateway stops).
    pub(super) fn answered_here(&self, job: JobId, error: ReplyError) -> JobReport {
        JobReport {
            job,
            worker: 0,
            host: None,
            queue_us: micros(self.accepted_at.elapsed()),
            service_us: 0,
            attempts: self.attempt,
            result: Err(error),
        }
    }
}

/// Jobs this gateway has sent and not yet had a result for.
#[derive(Debug, Default)]
pub(super) struct Forwarded {
    jobs: Mutex<HashMap<JobId, Outstanding>>,
}

impl Forwarded {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Outstanding>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the job a result is for, if it is outstanding and the token is
    /// its own (a result with the right id and a wrong token is a forgery).
    pub(super) fn take(&self, job: JobId, token: JobToken) -> Option<Outstanding> {
        let mut jobs = self.lock();
        match jobs.get(&job) {
            Some(outstanding) if outstanding.token == token => jobs.remove(&job),
            _ => None,
        }
    }

    /// Takes every job past its deadline.
    fn take_expired(&self, now: Instant) -> Vec<(JobId, Outstanding)> {
        let mut jobs = self.lock();
        let expired: Vec<JobId> = jobs.iter().filter(|(_, o)| o.deadline <= now).map(|(id, _)| *id).collect();
        expired.into_iter().filter_map(|id| jobs.remove(&id).map(|o| (id, o))).collect()
    }
}

/// The forwarder thread's state: owned by that one thread, except the
/// shared pieces said below.
pub(super) struct Forwarder {
    /// The gateway's tokio runtime: publishes run on it, the thread waits.
    pub(super) bridge: Arc<Bridge>,
    /// JetStream, to publish jobs and delete expired ones.
    pub(super) js: jetstream::Context,
    /// Signs every job with the farm key (shared with the heartbeat task).
    pub(super) signer: Arc<Signer>,
    /// The NATS server's largest message: a larger job is refused here.
    pub(super) max_payload: usize,
    /// This gateway's id, in every job's `Nats-Msg-Id` and message.
    pub(super) gateway: String,
    /// Where hosts send this gateway's results.
    pub(super) reply_to: String,
    /// Retries, local workers, the stream's bound, the job timeout.
    pub(super) settings: GatewaySettings,
    /// The hosts (capacity), the link and the counters: written by the
    /// gateway's tasks, read and counted into here.
    pub(super) status: Arc<GatewayStatus>,
    /// Jobs out: inserted here, taken by the results task (a `Mutex`ed map).
    pub(super) forwarded: Arc<Forwarded>,
    /// Answers the jobs the gateway answers itself (refused, expired).
    pub(super) completer: Completer,
    /// Signalled by the results task when a job comes back (room to send).
    pub(super) room: Receiver<()>,
}

impl Forwarder {
    pub(super) fn run(&self, queues: &JobQueues, stop: &Receiver<()>) {
        let mut next_deadline_check = Instant::now();
        loop {
            if Instant::now() >= next_deadline_check {
                self.answer_expired();
                next_deadline_check = Instant::now() + DEADLINE_CHECK_EVERY;
            }
            // While the link is down, jobs wait in the queue (for at most
            // OUTAGE_PATIENCE, then they are refused naming the link).
            if !self.status.link.is_up() {
                if self.status.link.down_for() >= OUTAGE_PATIENCE {
                    self.refuse_queued(queues);
                }
                select! {
                    recv(stop) -> _ => return,
                    default(NO_ROOM_RECHECK) => {},
                }
                continue;
            }
            // Wait for room: a result coming back wakes us at once; a new
            // host's heartbeat is noticed within NO_ROOM_RECHECK.
            if self.forwarded.lock().len() >= JOBS_OUT_PER_SLOT * self.status.hosts.capacity() {
                if self.nobody_to_run_jobs() {
                    self.refuse_queued(queues);
                }
                select! {
                    recv(stop) -> _ => return,
                    recv(self.room) -> _ => {},
                    default(NO_ROOM_RECHECK) => {},
                }
                continue;
            }
            match queues.wait_next(stop, Some(NO_ROOM_RECHECK)) {
                Waited::Job(job) => self.forward(job),
                Waited::Stop => return,
                Waited::Nothing => continue,
            }
        }
    }

    /// No local worker, and no host heard from (the start grace over).
    fn nobody_to_run_jobs(&self) -> bool {
        self.settings.local_workers == 0 && self.status.hosts.alive() == 0 && !self.status.in_start_grace()
    }

    /// Answers every queued job: nobody can run it.
    fn refuse_queued(&self, queues: &JobQueues) {
        while let Some(job) = queues.try_next() {
            self.fail(&job, no_host_error(&self.status));
        }
    }

    /// Answers the jobs past their deadline, and removes them from the
    /// stream if they are still there (nobody should run them now).
    fn answer_expired(&self) {
        let expired = self.forwarded.take_expired(Instant::now());
        if expired.is_empty() {
            return;
        }
        let mut sequences = Vec::new();
        for (job, outstanding) in expired {
            self.status.counters.deadline_passed.fetch_add(1, Relaxed);
            tracing::warn!(
                job = %wire::token_hex(outstanding.token),
                link_up = self.status.link.is_up(),
                "no worker host answered a job by its deadline; answering it TIMEOUT"
            );
            sequences.extend(outstanding.stream_seq);
            let error = ReplyError::new(
                ErrorCode::Timeout,
                format!(
                    "no worker host answered within {:.0}s (the job's deadline: its attempts' --job-timeout and \
                     the time to notice a lost host); the hosts or NATS may be down",
                    outstanding.allowed.as_secs_f64()
                ),
            );
            self.completer.finish(outstanding.answered_here(job, error));
        }
        let _ = self.room.try_recv(); // room opened; the loop re-counts anyway
        let js = self.js.clone();
        self.bridge.spawn(async move {
            let _ = tokio::time::timeout(API_WAIT, async {
                if let Ok(stream) = js.get_stream(nats::STREAM).await {
                    for seq in sequences {
                        let _ = stream.delete_message(seq).await;
                    }
                }
            })
            .await;
        });
    }

    /// Sends one job to the worker hosts: the signed message, registered as
    /// outstanding, published to the stream (so a full stream is a `BUSY`
    /// reply now, not a lost job).
    fn forward(&self, job: QueuedJob) {
        let (bytes, outstanding) = match self.message_for(&job) {
            Ok(message) => message,
            Err(error) => return self.fail(&job, error),
        };
        // Registered before publishing: the result may come back at once.
        self.forwarded.lock().insert(job.id, outstanding);
        match self.publish(job.id, bytes) {
            Ok(seq) => {
                if let Some(outstanding) = self.forwarded.lock().get_mut(&job.id) {
                    outstanding.stream_seq = Some(seq);
                }
                self.status.counters.forwarded.fetch_add(1, Relaxed);
            }
            Err(e) => {
                // Not taken by the stream (or its acknowledgement was lost:
                // then a host may still run it, and its result is dropped).
                if self.forwarded.lock().remove(&job.id).is_none() {
                    return; // answered meanwhile (its result came back)
                }
                self.status.counters.refused.fetch_add(1, Relaxed);
                let message = if self.status.link.is_up() {
                    format!("the farm's NATS job queue refused the job ({e}); retry later")
                } else {
                    format!(
                        "this gateway has lost its connection to NATS at {} and is reconnecting, so the job \
                         could not be queued ({e}); retry later",
                        self.status.link.url
                    )
                };
                self.fail(&job, ReplyError::new(ErrorCode::Busy, message));
            }
        }
    }

    /// The job's message as the hosts read it, and its record here; or the
    /// reason it cannot be sent (larger than NATS carries).
    fn message_for(&self, job: &QueuedJob) -> std::result::Result<(Vec<u8>, Outstanding), ReplyError> {
        let max_attempts = if job.kind.is_idempotent() { self.settings.retries.saturating_add(1) } else { 1 };
        let deadline = job_deadline(self.settings.job_timeout, max_attempts);
        let token = wire::new_token();
        let expires_ms = now_ms().saturating_add(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX));
        let message = RemoteJob::new(
            (job.id, token),
            (self.gateway.clone(), self.reply_to.clone()),
            expires_ms,
            max_attempts,
            job.kind.clone(),
        );
        let bytes =
            wire::encode(&message).map_err(|e| ReplyError::new(ErrorCode::Internal, e.to_string()))?;
        if bytes.len() > self.max_payload {
            let code = if matches!(job.kind, JobKind::Predict(_)) {
                ErrorCode::ImageTooLarge
            } else {
                ErrorCode::BadRequest
            };
            let message = format!(
                "the job is {} bytes, over the NATS server's max_payload of {} bytes; raise max_payload in \
                 nats-server's configuration (e.g. max_payload: 8MB) or send smaller images",
                bytes.len(),
                self.max_payload
            );
            self.status.counters.refused.fetch_add(1, Relaxed);
            return Err(ReplyError::new(code, message));
        }
        let outstanding = Outstanding {
            token,
            deadline: Instant::now() + deadline,
            allowed: deadline,
            stream_seq: None,
            accepted_at: job.accepted_at,
            attempt: job.attempt,
        };
        Ok((bytes, outstanding))
    }

    /// Publishes a job's message and waits for JetStream's acknowledgement:
    /// its place in the stream, or why it was not taken.
    fn publish(&self, job: JobId, bytes: Vec<u8>) -> std::result::Result<u64, PublishError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{}-{}", self.gateway, job).as_str());
        self.signer.sign(JOBS_SUBJECT, &mut headers, &bytes);
        // Tried again while the link is down (for at most OUTAGE_PATIENCE):
        // the same Nats-Msg-Id makes JetStream keep one copy however many
        // tries reach it.
        let bytes = bytes::Bytes::from(bytes);
        let first_try = Instant::now();
        loop {
            let published = self.bridge.run(async {
                match self.js.publish_with_headers(JOBS_SUBJECT, headers.clone(), bytes.clone()).await {
                    Ok(ack) => ack.await.map(|ack| ack.sequence),
                    Err(e) => Err(e),
                }
            });
            // Lost in a broker restart (no answer, a broken link, the stream
            // not there yet while JetStream recovers): try again. A refusal
            // (the stream is full) is final.
            match published {
                Err(e)
                    if matches!(e.kind(), Kind::TimedOut | Kind::BrokenPipe | Kind::StreamNotFound)
                        && first_try.elapsed() < OUTAGE_PATIENCE =>
                {
                    std::thread::sleep(PUBLISH_RETRY);
                }
                other => return other,
            }
        }
    }

    /// Answers a job that was not sent.
    fn fail(&self, job: &QueuedJob, error: ReplyError) {
        self.completer.finish(JobReport::failed(job, 0, job.waited_us(Instant::now()), 0, error));
    }
}
