//! The outgoing half of the gateway: the **forwarder** thread takes jobs
//! from the server's queues while the hosts have room, publishes them
//! (signed) to the jobs stream, and keeps a record of every job out until
//! its result comes back or its deadline passes — then it answers the job
//! itself.
//!
//! **Parcels.** NATS's costs are per message, not per byte: a JetStream
//! publish and its acknowledgement, a pull, a delivery, a result and its
//! acknowledgements cost the broker about the same for a job of one
//! microsecond as for one of a second. So `compute` jobs that are short
//! (their cost per step is learnt from their results) and waiting together
//! travel several to a message, up to `--nats-max-parcel` jobs (64) or
//! [`PARCEL_WORK`] of estimated work; every other job, and any job while
//! its cost is unknown, travels alone. A parcel is one message to JetStream
//! and to the hosts (delivered, redelivered and acknowledged whole); its
//! jobs keep their own ids, tokens and results, so exactly one reply per
//! job holds as before (docs/WORKER_HOSTS.md, "Parcels").

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishError, context::PublishErrorKind as Kind};
use crossbeam_channel::{select, Receiver};

use super::{job_deadline, GatewaySettings, API_WAIT, OUTAGE_PATIENCE};
use crate::protocol::{ErrorCode, ReplyError};
use crate::remote::bridge::Bridge;
use crate::remote::envelope::{now_ms, Signer};
use crate::remote::wire::{self, JobParcel, JobToken, ParcelJob};
use crate::remote::{self as nats, JOBS_SUBJECT};
use crate::runtime::pool::{JobOutcomes, JobQueues, JobReport, QueuedJob, Waited};
use crate::server::gateway_status::{no_host_error, GatewayStatus};
use crate::server::jobs::Completer;
use crate::units::micros;
use crate::work::job::{JobId, JobKind};

/// The longest the forwarder waits for room before it looks again: room
/// opens when a result comes back (which wakes it at once) or when a new
/// host's heartbeat raises the capacity (seen within this).
const NO_ROOM_RECHECK: Duration = Duration::from_millis(50);
/// Messages (parcels) a gateway keeps out per live host slot: one running
/// and one waiting in the stream, so a slot that frees up finds its next
/// work without a round trip through this gateway.
const PARCELS_OUT_PER_SLOT: usize = 2;
/// The most estimated work one parcel carries: short, so a parcel never
/// holds a host's slot for long nor gives one host much more than another
/// (a host takes one parcel per free slot).
const PARCEL_WORK: Duration = Duration::from_millis(2);
/// How long a parcel being packed waits for more short jobs, while the
/// hosts are busy with others (never when nothing is out: a lone job
/// leaves at once).
const PARCEL_LINGER: Duration = Duration::from_micros(150);
/// How often the gateway looks for jobs past their deadline.
const DEADLINE_CHECK_EVERY: Duration = Duration::from_millis(250);
/// The pause between two tries of a publish while the link is down.
const PUBLISH_RETRY: Duration = Duration::from_millis(250);

/// One job this gateway has sent and not yet had a result for.
#[derive(Debug)]
pub(super) struct Outstanding {
    token: JobToken,
    deadline: Instant,
    /// The parcel it travels in (the id of that parcel's first job).
    parcel: JobId,
    /// Where its parcel is in the jobs stream (from JetStream's
    /// acknowledgement of the publish), to delete it if the deadline passes.
    pub(super) stream_seq: Option<u64>,
    /// The whole deadline, for the message that says it passed.
    allowed: Duration,
    accepted_at: Instant,
    attempt: u32,
    /// A `compute` job's steps, so its result teaches what a step costs.
    pub(super) steps: Option<u64>,
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

/// A job out, by its id.
type JobOut = (JobId, Outstanding);

/// The jobs out, and how many of each parcel are still unanswered.
#[derive(Debug, Default)]
struct JobsOut {
    jobs: HashMap<JobId, Outstanding>,
    parcels: HashMap<JobId, usize>,
}

impl JobsOut {
    /// Removes one job, and its parcel once the parcel has no job left.
    fn remove(&mut self, job: JobId) -> Option<Outstanding> {
        let outstanding = self.jobs.remove(&job)?;
        if let Some(left) = self.parcels.get_mut(&outstanding.parcel) {
            *left -= 1;
            if *left == 0 {
                self.parcels.remove(&outstanding.parcel);
            }
        }
        Some(outstanding)
    }
}

/// Jobs this gateway has sent and not yet had a result for, and what a
/// `compute` step costs on the hosts (learnt from the results).
#[derive(Debug, Default)]
pub(super) struct Forwarded {
    out: Mutex<JobsOut>,
    pub(super) step_cost: StepCost,
}

impl Forwarded {
    fn lock(&self) -> std::sync::MutexGuard<'_, JobsOut> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parcels with a job still unanswered: what the room is counted in.
    fn parcels_out(&self) -> usize {
        self.lock().parcels.len()
    }

    /// Records a parcel's jobs as out (before it is published: a result may
    /// come back at once).
    fn insert_parcel(&self, parcel: JobId, jobs: Vec<JobOut>) {
        let mut out = self.lock();
        out.parcels.insert(parcel, jobs.len());
        out.jobs.extend(jobs);
    }

    /// Notes where a parcel's jobs are in the stream.
    fn placed(&self, jobs: &[QueuedJob], seq: u64) {
        let mut out = self.lock();
        for job in jobs {
            if let Some(outstanding) = out.jobs.get_mut(&job.id) {
                outstanding.stream_seq = Some(seq);
            }
        }
    }

    /// Takes back the jobs of a parcel that was not published (those not
    /// answered meanwhile).
    fn withdraw(&self, jobs: &[QueuedJob]) -> Vec<JobId> {
        let mut out = self.lock();
        jobs.iter().filter_map(|job| out.remove(job.id).map(|_| job.id)).collect()
    }

    /// Takes the job a result is for, if it is outstanding and the token is
    /// its own (a result with the right id and a wrong token is a forgery).
    pub(super) fn take(&self, job: JobId, token: JobToken) -> Option<Outstanding> {
        let mut out = self.lock();
        match out.jobs.get(&job) {
            Some(outstanding) if outstanding.token == token => out.remove(job),
            _ => None,
        }
    }

    /// Takes every job past its deadline.
    fn take_expired(&self, now: Instant) -> Vec<JobOut> {
        let mut out = self.lock();
        let expired: Vec<JobId> =
            out.jobs.iter().filter(|(_, o)| o.deadline <= now).map(|(id, _)| *id).collect();
        expired.into_iter().filter_map(|id| out.remove(id).map(|o| (id, o))).collect()
    }

    /// Takes every job out (the gateway stops).
    pub(super) fn take_all(&self) -> Vec<JobOut> {
        let mut out = self.lock();
        out.parcels.clear();
        out.jobs.drain().collect()
    }
}

/// What one `compute` step costs on the hosts, in nanoseconds: a moving
/// average over results (each weighs 1/8), unknown until the first one.
/// Stored as `f64` bits in an atomic: written by the results task, read by
/// the forwarder, and a stale read only sizes one parcel a little off.
#[derive(Debug, Default)]
pub(super) struct StepCost {
    ns_bits: AtomicU64,
}

impl StepCost {
    /// Learns from one result: `steps` took `service_us`.
    pub(super) fn observe(&self, steps: u64, service_us: u64) {
        if steps == 0 {
            return;
        }
        let sample = service_us as f64 * 1000.0 / steps as f64;
        let next = match self.estimate() {
            Some(old) => old + (sample - old) / 8.0,
            None => sample,
        };
        // Never exactly 0.0, whose bits mean "unknown".
        self.ns_bits.store(next.max(f64::MIN_POSITIVE).to_bits(), Relaxed);
    }

    /// Nanoseconds per step, once a result has said.
    fn estimate(&self) -> Option<f64> {
        let bits = self.ns_bits.load(Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }

    /// The estimated work of a job that may be packed: a `compute` job
    /// whose cost is known and within [`PARCEL_WORK`]; `None` otherwise
    /// (it travels alone).
    fn packable_work(&self, kind: &JobKind) -> Option<f64> {
        let JobKind::Compute { n } = kind else { return None };
        let work = self.estimate()? * *n as f64;
        (work <= PARCEL_WORK.as_nanos() as f64).then_some(work)
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
            if self.forwarded.parcels_out() >= PARCELS_OUT_PER_SLOT * self.status.hosts.capacity() {
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
                Waited::Job(job) => self.forward_waiting(job, queues, stop),
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
        // A parcel's jobs share one message (and one deadline).
        sequences.sort_unstable();
        sequences.dedup();
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

    /// Sends `first` to the worker hosts, packed with the jobs waiting
    /// behind it when they are all short `compute` jobs (see the module's
    /// doc). At most two parcels per call, so the room is counted again
    /// soon: the one packed, and the job that did not fit in it.
    fn forward_waiting(&self, first: QueuedJob, queues: &JobQueues, stop: &Receiver<()>) {
        let mut parcel = vec![first];
        let mut work = self.forwarded.step_cost.packable_work(&parcel[0].kind);
        // While the hosts have parcels to work on already, a short wait
        // lets the jobs arriving together travel together (a closed loop's
        // clients answer a parcel's replies with a burst of new requests) —
        // for jobs short enough that another one like them would fit.
        let room_for_more = work.is_some_and(|w| w <= PARCEL_WORK.as_nanos() as f64 / 2.0);
        let linger_until =
            (room_for_more && self.forwarded.parcels_out() > 0).then(|| Instant::now() + PARCEL_LINGER);
        while let Some(so_far) = work {
            if parcel.len() >= self.settings.max_parcel {
                break;
            }
            let next = match (queues.try_next(), linger_until) {
                (Some(job), _) => job,
                (None, Some(until)) if Instant::now() < until => {
                    match queues.wait_next(stop, Some(until.saturating_duration_since(Instant::now()))) {
                        Waited::Job(job) => job,
                        Waited::Stop | Waited::Nothing => break,
                    }
                }
                (None, _) => break,
            };
            match self.forwarded.step_cost.packable_work(&next.kind) {
                Some(more) if so_far + more <= PARCEL_WORK.as_nanos() as f64 => {
                    parcel.push(next);
                    work = Some(so_far + more);
                }
                _ => {
                    self.forward(std::mem::replace(&mut parcel, vec![next]));
                    break;
                }
            }
        }
        self.forward(parcel);
    }

    /// Sends one parcel to the worker hosts: the signed message, its jobs
    /// registered as outstanding, published to the stream (so a full stream
    /// is a `BUSY` reply now, not a lost job).
    fn forward(&self, jobs: Vec<QueuedJob>) {
        let (bytes, outstanding) = match self.message_for(&jobs) {
            Ok(message) => message,
            Err(error) if jobs.len() > 1 => {
                // Too large together (a tiny max_payload): each alone.
                tracing::debug!(error = %error.message, "a parcel too large for NATS: sending its jobs alone");
                return jobs.into_iter().for_each(|job| self.forward(vec![job]));
            }
            Err(error) => return jobs.iter().for_each(|job| self.fail(job, error.clone())),
        };
        let parcel = jobs[0].id;
        // Registered before publishing: the results may come back at once.
        self.forwarded.insert_parcel(parcel, outstanding);
        match self.publish(parcel, bytes) {
            Ok(seq) => {
                self.forwarded.placed(&jobs, seq);
                let counters = &self.status.counters;
                counters.forwarded.fetch_add(jobs.len() as u64, Relaxed);
                counters.parcels.fetch_add(1, Relaxed);
                counters.largest_parcel.fetch_max(jobs.len() as u64, Relaxed);
            }
            Err(e) => {
                // Not taken by the stream (or its acknowledgement was lost:
                // then a host may still run them, and their results are
                // dropped). Jobs answered meanwhile are not answered again.
                let withdrawn = self.forwarded.withdraw(&jobs);
                let message = if self.status.link.is_up() {
                    format!("the farm's NATS job queue refused the job ({e}); retry later")
                } else {
                    format!(
                        "this gateway has lost its connection to NATS at {} and is reconnecting, so the job \
                         could not be queued ({e}); retry later",
                        self.status.link.url
                    )
                };
                for job in jobs.iter().filter(|job| withdrawn.contains(&job.id)) {
                    self.status.counters.refused.fetch_add(1, Relaxed);
                    self.fail(job, ReplyError::new(ErrorCode::Busy, message.clone()));
                }
            }
        }
    }

    /// The parcel's message as the hosts read it, and the record here of
    /// each of its jobs; or the reason it cannot be sent (larger than NATS
    /// carries). All its jobs have one deadline and one attempt limit
    /// (only `compute` jobs are packed, and they are all retried alike).
    fn message_for(&self, jobs: &[QueuedJob]) -> std::result::Result<(Vec<u8>, Vec<JobOut>), ReplyError> {
        let first = &jobs[0];
        let max_attempts =
            if first.kind.is_idempotent() { self.settings.retries.saturating_add(1) } else { 1 };
        let deadline = job_deadline(self.settings.job_timeout, max_attempts);
        let expires_ms = now_ms().saturating_add(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX));
        let tokens: Vec<JobToken> = jobs.iter().map(|_| wire::new_token()).collect();
        let message = JobParcel {
            gateway: self.gateway.clone(),
            expires_ms,
            reply_to: self.reply_to.clone(),
            max_attempts,
            jobs: jobs
                .iter()
                .zip(&tokens)
                .map(|(job, token)| ParcelJob::new(job.id, *token, job.kind.clone()))
                .collect(),
        };
        let bytes =
            wire::encode(&message).map_err(|e| ReplyError::new(ErrorCode::Internal, e.to_string()))?;
        if bytes.len() > self.max_payload {
            let code = if matches!(first.kind, JobKind::Predict(_)) {
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
            if jobs.len() == 1 {
                self.status.counters.refused.fetch_add(1, Relaxed);
            }
            return Err(ReplyError::new(code, message));
        }
        let outstanding = jobs
            .iter()
            .zip(tokens)
            .map(|(job, token)| {
                let steps = match job.kind {
                    JobKind::Compute { n } => Some(n),
                    _ => None,
                };
                let record = Outstanding {
                    token,
                    deadline: Instant::now() + deadline,
                    parcel: first.id,
                    allowed: deadline,
                    stream_seq: None,
                    accepted_at: job.accepted_at,
                    attempt: job.attempt,
                    steps,
                };
                (job.id, record)
            })
            .collect();
        Ok((bytes, outstanding))
    }

    /// Publishes a parcel's message and waits for JetStream's
    /// acknowledgement: its place in the stream, or why it was not taken.
    /// Its `Nats-Msg-Id` is the gateway's and its first job's id: unique,
    /// since each job travels in one parcel.
    fn publish(&self, parcel: JobId, bytes: Vec<u8>) -> std::result::Result<u64, PublishError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{}-{}", self.gateway, parcel).as_str());
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
