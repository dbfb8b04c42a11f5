//! The gateway: `tc-server --nats URL` sends jobs to worker hosts over NATS
//! JetStream, instead of (`--workers 0`) or as well as its local pool.
//!
//! The TCP front door, the protocol, the id→connection registry and the
//! completer are the server's own; only *who runs the job* changes. A
//! **forwarder** thread takes jobs from the same queues as the local
//! workers and publishes them, signed, to the jobs stream; a **results**
//! task takes the hosts' results from this gateway's own consumer of the
//! results stream and hands them to the completer, which routes each reply
//! to the connection that asked — and drops a second result for the same
//! job (at-least-once delivery, exactly one reply).
//!
//! **Every job has a deadline.** A job may wait in the stream about one
//! job's time, and each of its attempts may take `--job-timeout` plus the
//! ack wait (the time to notice a dead host). Past the sum, the gateway
//! answers the job itself (`TIMEOUT`), deletes it from the stream if it is
//! still there, and a result that comes later is a duplicate. Hosts do not
//! start a job past its deadline (it travels with the job), nor one whose
//! gateway has gone silent (gateways beat on `tc.gateways` every second).
//!
//! **Sharing the queue fairly.** Local workers and remote hosts take jobs
//! from one queue, each only when it has room: a local worker when it is
//! idle, the forwarder while this gateway has fewer jobs out than twice the
//! live hosts' workers (from their heartbeats: one running and one waiting
//! per slot). So only a slot's worth of jobs waits in the stream while hosts
//! are busy, and local workers are never starved.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream::Stream};
use crossbeam_channel::{select, Receiver, Sender};
use futures_util::StreamExt;

use crate::error::{Error, Result};
use crate::protocol::{ErrorCode, ReplyError};
use crate::remote::bridge::Bridge;
use crate::remote::connect::{connect, NatsOptions, Role};
use crate::remote::envelope::{self, now_ms, KeyMismatch, KeyTrouble, ReplayGuard, Signer, Verifier};
use crate::remote::wire::{self, GatewayBeat, Heartbeat, JobToken, RemoteJob, RemoteResult};
use crate::remote::{
    self as nats, ACK_WAIT, GATEWAYS_SUBJECT, HEARTBEAT_EVERY, HEARTBEAT_SUBJECT, HOST_TIMEOUT, JOBS_SUBJECT,
};
use crate::runtime::pool::{JobOutcomes, JobQueues, JobReport, QueuedJob, Waited};
use crate::server::jobs::Completer;
use crate::units::micros;
use crate::work::job::{JobId, JobKind};

mod status;

use status::GatewayCounters;
pub(crate) use status::{GatewayStatus, HostReport, HostTable, RemoteReport};

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
/// How often a gateway removes job messages JetStream has acknowledged but
/// kept (a broker killed at the wrong moment can leave some behind).
const JANITOR_EVERY: Duration = Duration::from_secs(10);
/// On a stop, the longest the gateway waits for NATS (answering what it
/// still holds is local and immediate): a stop after the server's drain
/// ends within this, whatever NATS does.
pub(crate) const STOP_NATS_WAIT: Duration = Duration::from_secs(2);
/// How long jobs wait for a lost NATS link to come back before they are
/// refused `BUSY` (naming the link): a broker restart of a few seconds
/// costs no client an error, a longer outage does not hold them for ever.
pub(crate) const OUTAGE_PATIENCE: Duration = Duration::from_secs(15);
/// The pause between two tries of a publish while the link is down.
const PUBLISH_RETRY: Duration = Duration::from_millis(250);
/// The longest one call to JetStream's API (delete, purge, info) may take.
const API_WAIT: Duration = Duration::from_secs(2);

/// The refusal for a job when no host is connected and there is no local
/// worker (`--workers 0`): it says whether the hosts or NATS are missing.
pub(crate) fn no_host_error(status: &GatewayStatus) -> ReplyError {
    let link = &status.link;
    let key_trouble = status.key_trouble.recent();
    let message = if link.is_up() && !key_trouble.is_empty() {
        // Hosts may well be running: their heartbeats were dropped.
        format!("no worker host this gateway can trust is connected: {}", key_trouble.join("; "))
    } else if link.is_up() {
        "no worker host is connected to this gateway: start one with tc-worker --nats URL; retry later"
            .to_string()
    } else {
        format!(
            "this gateway has lost its connection to NATS at {} and is reconnecting: worker hosts cannot be \
             reached until it is back; retry later",
            link.url
        )
    };
    ReplyError::new(ErrorCode::Busy, message)
}

/// The deadline of a job with `max_attempts` attempts of at most
/// `job_timeout` each: a wait in the stream of one job, then each attempt's
/// run plus the ack wait that notices a dead host.
pub(crate) fn job_deadline(job_timeout: Duration, max_attempts: u32) -> Duration {
    (job_timeout + ACK_WAIT) * (max_attempts + 1)
}

/// One job this gateway has sent and not yet had a result for.
#[derive(Debug)]
struct Outstanding {
    token: JobToken,
    deadline: Instant,
    /// Where it is in the jobs stream (from JetStream's acknowledgement of
    /// the publish), to delete it if the deadline passes.
    stream_seq: Option<u64>,
    /// The whole deadline, for the message that says it passed.
    allowed: Duration,
    accepted_at: Instant,
    attempt: u32,
}

/// Jobs this gateway has sent and not yet had a result for.
#[derive(Debug, Default)]
struct Forwarded {
    jobs: Mutex<HashMap<JobId, Outstanding>>,
}

impl Forwarded {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Outstanding>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the job a result is for, if it is outstanding and the token is
    /// its own (a result with the right id and a wrong token is a forgery).
    fn take(&self, job: JobId, token: JobToken) -> Option<Outstanding> {
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

/// What shapes a gateway, from the server's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GatewaySettings {
    /// `--retries`: a job runs at most `1 + retries` times.
    pub(crate) retries: u32,
    /// `--workers`: local workers beside the hosts (0: a pure gateway).
    pub(crate) local_workers: usize,
    /// `--nats-max-jobs`: the jobs stream's bound.
    pub(crate) max_jobs: i64,
    /// `--job-timeout`: the longest one attempt may take (hosts should have
    /// the same; the job's deadline is built from it).
    pub(crate) job_timeout: Duration,
}

/// A running gateway.
pub(crate) struct Gateway {
    bridge: Arc<Bridge>,
    status: Arc<GatewayStatus>,
    client: async_nats::Client,
    forwarded: Arc<Forwarded>,
    completer: Completer,
    results: Option<(Stream, String)>,
    /// Dropping it stops the forwarder.
    stop: Option<Sender<()>>,
    forwarder: Option<JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Connects to NATS, makes sure the streams exist, listens for results
    /// and heartbeats, and starts forwarding jobs from `queues`.
    ///
    /// # Errors
    /// NATS cannot be reached or has no JetStream; the farm key cannot be read.
    pub(crate) fn start(
        options: &NatsOptions,
        queues: JobQueues,
        completer: Completer,
        settings: GatewaySettings,
    ) -> Result<Gateway> {
        let key = envelope::load_farm_key(options.farm_key.as_deref())?;
        let signer = Arc::new(Signer::new(key.clone()));
        let verifier = Verifier::new(key);
        let bridge = Arc::new(Bridge::start("nats-bridge")?);
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let (client, link) =
            bridge.run(connect(options, &format!("tc-server gateway {id}"), Role::Gateway))?;
        let (js, results_stream, results_consumer) = bridge.run(link.set_up(async {
            // Created inside the runtime: the context starts a task of its own.
            let js = jetstream::new(client.clone());
            nats::jobs_stream(&js, Some(settings.max_jobs)).await?;
            let results = nats::results_stream(&js).await?;
            let consumer = nats::gateway_results_consumer(&results, &id).await?;
            Ok::<_, Error>((js, results, consumer))
        }))?;
        let heartbeats = bridge
            .run(client.subscribe(HEARTBEAT_SUBJECT))
            .map_err(|e| Error::Remote(format!("cannot subscribe to {HEARTBEAT_SUBJECT}: {e}")))?;

        let status = Arc::new(GatewayStatus {
            hosts: HostTable::default(),
            link,
            counters: GatewayCounters::default(),
            id: id.clone(),
            started: Instant::now(),
            farm_key: verifier.has_key(),
            key_trouble: KeyTrouble::default(),
        });
        let forwarded = Arc::new(Forwarded::default());
        // One pending wake-up is enough: the forwarder re-counts on waking.
        let (room_tx, room_rx) = crossbeam_channel::bounded::<()>(1);
        let tasks = vec![
            bridge.spawn(take_results(
                results_consumer,
                (completer.clone(), verifier.clone()),
                Arc::clone(&forwarded),
                Arc::clone(&status),
                room_tx,
            )),
            bridge.spawn(listen_to_hosts(heartbeats, verifier, Arc::clone(&status))),
            bridge.spawn(beat(client.clone(), id.clone(), Arc::clone(&signer), Arc::clone(&status))),
            bridge.spawn(janitor(js.clone(), Arc::clone(&status))),
        ];

        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let forwarder = {
            let forwarder = Forwarder {
                bridge: Arc::clone(&bridge),
                js,
                signer,
                max_payload: client.server_info().max_payload,
                gateway: id.clone(),
                reply_to: nats::results_subject(&id),
                settings,
                status: Arc::clone(&status),
                forwarded: Arc::clone(&forwarded),
                completer: completer.clone(),
                room: room_rx,
            };
            thread::Builder::new()
                .name("nats-forwarder".into())
                .spawn(move || forwarder.run(&queues, &stop_rx))
                .map_err(|e| Error::io("starting the NATS forwarder thread", e))?
        };
        tracing::info!(gateway = %id, nats = %options.url, farm_key = status.farm_key, "gateway connected to NATS");
        Ok(Gateway {
            bridge,
            status,
            client,
            forwarded,
            completer,
            results: Some((results_stream, format!("tc-gateway-{id}"))),
            stop: Some(stop_tx),
            forwarder: Some(forwarder),
            tasks,
        })
    }

    /// The hosts, the link and the counters, for the rest of the server.
    pub(crate) fn status(&self) -> Arc<GatewayStatus> {
        Arc::clone(&self.status)
    }

    /// Stops forwarding and listening (after the server's drain). Jobs
    /// still out get their one reply now (`SHUTTING_DOWN`); this gateway's
    /// results consumer is removed. Whatever NATS does, this returns within
    /// [`STOP_NATS_WAIT`] after the forwarder has stopped.
    pub(crate) fn stop(mut self) {
        drop(self.stop.take());
        if let Some(forwarder) = self.forwarder.take() {
            let _ = forwarder.join();
        }
        let left: Vec<(JobId, Outstanding)> = self.forwarded.lock().drain().collect();
        if !left.is_empty() {
            tracing::warn!(
                jobs = left.len(),
                "stopping with jobs still out on worker hosts: answering them SHUTTING_DOWN"
            );
        }
        let mut sequences = Vec::new();
        for (job, outstanding) in left {
            sequences.extend(outstanding.stream_seq);
            self.completer.finish(JobReport {
                job,
                worker: 0,
                host: None,
                queue_us: micros(outstanding.accepted_at.elapsed()),
                service_us: 0,
                attempts: outstanding.attempt,
                result: Err(ReplyError::new(
                    ErrorCode::ShuttingDown,
                    "the gateway stopped before a worker host answered this job; send it again",
                )),
            });
        }
        let client = self.client.clone();
        let results = self.results.take();
        let tidy = async move {
            // Created inside the runtime: the context starts a task of its own.
            let js = jetstream::new(client.clone());
            // The answered jobs need not run; this consumer has no reader left.
            if let Ok(jobs) = js.get_stream(nats::STREAM).await {
                for seq in sequences {
                    let _ = jobs.delete_message(seq).await;
                }
            }
            if let Some((stream, consumer)) = results {
                let _ = stream.delete_consumer(&consumer).await;
            }
            let _ = client.flush().await;
        };
        let tidied = self.bridge.run(async { tokio::time::timeout(STOP_NATS_WAIT, tidy).await.is_ok() });
        if !tidied {
            tracing::warn!("NATS did not answer in time while stopping; the farm cleans up after itself (job deadlines, the results stream's max age)");
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

/// The forwarder thread's state.
struct Forwarder {
    bridge: Arc<Bridge>,
    js: jetstream::Context,
    signer: Arc<Signer>,
    max_payload: usize,
    gateway: String,
    reply_to: String,
    settings: GatewaySettings,
    status: Arc<GatewayStatus>,
    forwarded: Arc<Forwarded>,
    completer: Completer,
    /// Signalled by the results task when a job comes back (room to send).
    room: Receiver<()>,
}

impl Forwarder {
    fn run(&self, queues: &JobQueues, stop: &Receiver<()>) {
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
            let allowed = outstanding.allowed;
            self.completer.finish(JobReport {
                job,
                worker: 0,
                host: None,
                queue_us: micros(outstanding.accepted_at.elapsed()),
                service_us: 0,
                attempts: outstanding.attempt,
                result: Err(ReplyError::new(
                    ErrorCode::Timeout,
                    format!(
                        "no worker host answered within {:.0}s (the job's deadline: its attempts' --job-timeout \
                         and the time to notice a lost host); the hosts or NATS may be down",
                        allowed.as_secs_f64()
                    ),
                )),
            });
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

    /// Publishes one job to the stream and waits for JetStream's
    /// acknowledgement (so a full stream is a `BUSY` reply now).
    fn forward(&self, job: QueuedJob) {
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
        let bytes = match wire::encode(&message) {
            Ok(bytes) => bytes,
            Err(e) => return self.fail(&job, ReplyError::new(ErrorCode::Internal, e.to_string())),
        };
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
            return self.fail(&job, ReplyError::new(code, message));
        }
        // Registered before publishing: the result may come back at once.
        let outstanding = Outstanding {
            token,
            deadline: Instant::now() + deadline,
            allowed: deadline,
            stream_seq: None,
            accepted_at: job.accepted_at,
            attempt: job.attempt,
        };
        self.forwarded.lock().insert(job.id, outstanding);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{}-{}", self.gateway, job.id).as_str());
        self.signer.sign(JOBS_SUBJECT, &mut headers, &bytes);
        // Tried again while the link is down (for at most OUTAGE_PATIENCE):
        // the same Nats-Msg-Id makes JetStream keep one copy however many
        // tries reach it.
        let bytes = bytes::Bytes::from(bytes);
        let first_try = Instant::now();
        let published = loop {
            let published = self.bridge.run(async {
                match self.js.publish_with_headers(JOBS_SUBJECT, headers.clone(), bytes.clone()).await {
                    Ok(ack) => ack.await.map(|ack| ack.sequence),
                    Err(e) => Err(e),
                }
            });
            // Lost in a broker restart (no answer, a broken link, the stream
            // not there yet while JetStream recovers): try again. A refusal
            // (the stream is full) is final.
            use async_nats::jetstream::context::PublishErrorKind as Kind;
            match published {
                Err(e)
                    if matches!(e.kind(), Kind::TimedOut | Kind::BrokenPipe | Kind::StreamNotFound)
                        && first_try.elapsed() < OUTAGE_PATIENCE =>
                {
                    std::thread::sleep(PUBLISH_RETRY);
                }
                other => break other.map_err(|e| e.to_string()),
            }
        };
        match published {
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

    /// Answers a job that was not sent.
    fn fail(&self, job: &QueuedJob, error: ReplyError) {
        self.completer.finish(JobReport::failed(job, 0, job.waited_us(Instant::now()), 0, error));
    }
}

/// Takes this gateway's results from its consumer and hands each to the
/// completer, which replies once per job; acknowledges each once handed
/// over. The consumer is durable, so a broker restart loses nothing: after
/// one, the pull loop starts again where it was.
async fn take_results(
    consumer: jetstream::consumer::PullConsumer,
    (completer, verifier): (Completer, Verifier),
    forwarded: Arc<Forwarded>,
    status: Arc<GatewayStatus>,
    room: Sender<()>,
) {
    loop {
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(e) => {
                tracing::debug!(error = %e, "cannot pull results yet; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::debug!(error = %e, "the results pull ended; starting it again");
                    break;
                }
            };
            take_one(&message, (&completer, &verifier), &forwarded, &status, &room);
            let _ = message.ack().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks and routes one result.
fn take_one(
    message: &jetstream::Message,
    (completer, verifier): (&Completer, &Verifier),
    forwarded: &Forwarded,
    status: &GatewayStatus,
    room: &Sender<()>,
) {
    if let Err(why) = verifier.verify(message.subject.as_str(), message.headers.as_ref(), &message.payload) {
        status.counters.rejected.fetch_add(1, Relaxed);
        match KeyMismatch::of(&why) {
            Some(mismatch) => status.key_trouble.noticed(mismatch, "a result on the results stream"),
            None => tracing::warn!(%why, "dropping a message on the results stream"),
        }
        return;
    }
    if verifier.signed_without_key(message.headers.as_ref()) {
        status.key_trouble.noticed(KeyMismatch::OnlySenderHasOne, "a result on the results stream");
    }
    let result: RemoteResult = match wire::decode(&message.payload) {
        Ok(result) => result,
        Err(e) => {
            status.counters.rejected.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, "dropping a message on the results stream");
            return;
        }
    };
    let Some(_outstanding) = forwarded.take(result.job, result.token) else {
        status.counters.duplicates.fetch_add(1, Relaxed);
        tracing::debug!(job = %wire::token_hex(result.token), host = %result.host, "duplicate or unknown result dropped");
        return;
    };
    let _ = room.try_send(());
    if result.attempts > 1 {
        status.counters.redelivered.fetch_add(1, Relaxed);
        tracing::info!(job = %wire::token_hex(result.token), host = %result.host, attempts = result.attempts, "a redelivered job answered");
    }
    completer.finish(JobReport {
        job: result.job,
        worker: result.worker,
        host: Some(result.host.clone()),
        queue_us: result.queue_us,
        service_us: result.service_us,
        attempts: result.attempts,
        result: result.result,
    });
}

/// Keeps the table of hosts from their heartbeats (signed, each newer than
/// its sender's last).
async fn listen_to_hosts(
    mut heartbeats: async_nats::Subscriber,
    verifier: Verifier,
    status: Arc<GatewayStatus>,
) {
    let guard = ReplayGuard::default();
    while let Some(message) = heartbeats.next().await {
        let checked = verifier
            .verify(message.subject.as_str(), message.headers.as_ref(), &message.payload)
            .and_then(|signed| guard.check(&signed, now_ms()));
        if let Err(why) = checked {
            status.counters.rejected.fetch_add(1, Relaxed);
            match KeyMismatch::of(&why) {
                Some(mismatch) => status.key_trouble.noticed(mismatch, &heartbeat_sender(&message.payload)),
                None => tracing::debug!(%why, "ignoring a heartbeat"),
            }
            continue;
        }
        if verifier.signed_without_key(message.headers.as_ref()) {
            // A host with a key refuses this gateway's unsigned jobs: it is
            // no capacity, and counting it would leave clients waiting for
            // the job deadline instead of hearing why at once.
            status.counters.rejected.fetch_add(1, Relaxed);
            status.key_trouble.noticed(KeyMismatch::OnlySenderHasOne, &heartbeat_sender(&message.payload));
            continue;
        }
        match serde_json::from_slice::<Heartbeat>(&message.payload) {
            Ok(beat) => status.count_heartbeat(status.hosts.heard(beat, std::time::Instant::now())),
            Err(e) => tracing::debug!(error = %e, "ignoring a message on the heartbeat subject"),
        }
    }
}

/// "a heartbeat from host NAME", the name as the (unverified) message says.
fn heartbeat_sender(payload: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    match serde_json::from_slice::<Named>(payload) {
        Ok(named) => format!("a heartbeat from host {}", envelope::untrusted_name(&named.name)),
        Err(_) => "a heartbeat".to_string(),
    }
}

/// Says every second that this gateway is alive (hosts skip the jobs of a
/// silent one), and logs hosts joining and being lost.
async fn beat(client: async_nats::Client, gateway: String, signer: Arc<Signer>, status: Arc<GatewayStatus>) {
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    let mut alive: BTreeSet<String> = BTreeSet::new();
    loop {
        every.tick().await;
        if let Ok(bytes) = serde_json::to_vec(&GatewayBeat { gateway: gateway.clone() }) {
            let mut headers = async_nats::HeaderMap::new();
            signer.sign(GATEWAYS_SUBJECT, &mut headers, &bytes);
            let _ = client.publish_with_headers(GATEWAYS_SUBJECT, headers, bytes.into()).await;
        }
        // Judged only while the link is up: during an outage every host
        // falls silent, and that is NATS's absence, not theirs.
        if !status.link.is_up() {
            continue;
        }
        let hosts = status.hosts.report();
        let now: BTreeSet<String> = hosts.iter().filter(|h| h.alive).map(|h| h.name.clone()).collect();
        for gone in alive.difference(&now) {
            if hosts.iter().any(|h| &h.name == gone && h.left) {
                tracing::info!(host = %gone, "worker host left (it stopped)");
            } else {
                tracing::warn!(host = %gone, "worker host lost: no heartbeat for {}s", HOST_TIMEOUT.as_secs());
            }
        }
        for joined in now.difference(&alive) {
            tracing::info!(host = %joined, "worker host joined");
        }
        alive = now;
    }
}

/// Removes job messages that every host has acknowledged but the stream
/// still keeps. On a work-queue stream an acknowledged message is deleted;
/// a broker killed between the two can restart with the acknowledgement
/// recorded and the message still there — never delivered again, yet
/// counted against `--nats-max-jobs` for ever. Everything at or below the
/// consumer's acknowledgement floor has been acknowledged, so purging up to
/// it removes exactly those.
async fn janitor(js: jetstream::Context, status: Arc<GatewayStatus>) {
    let mut every = tokio::time::interval(JANITOR_EVERY);
    loop {
        every.tick().await;
        let _ = tokio::time::timeout(API_WAIT, async {
            let mut stream = js.get_stream(nats::STREAM).await.ok()?;
            let first = stream.info().await.ok()?.state.first_sequence;
            let mut consumer: jetstream::consumer::PullConsumer =
                stream.get_consumer(nats::CONSUMER).await.ok()?;
            let floor = consumer.info().await.ok()?.ack_floor.stream_sequence;
            if first == 0 || first > floor {
                return Some(());
            }
            let purged = stream.purge().sequence(floor + 1).await.ok()?;
            if purged.purged > 0 {
                status.counters.stale_removed.fetch_add(purged.purged, Relaxed);
                tracing::warn!(
                    messages = purged.purged,
                    "removed acknowledged jobs the stream had kept (after a broker crash)"
                );
            }
            Some(())
        })
        .await;
    }
}
