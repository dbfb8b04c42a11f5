//! The gateway: `tc-server --nats URL` sends jobs to worker hosts over NATS
//! JetStream, instead of (`--workers 0`) or as well as its local pool.
//!
//! The TCP front door, the protocol, the id→connection registry and the
//! completer are the server's own; only *who runs the job* changes. A
//! **forwarder** thread takes jobs from the same queues as the local
//! workers and publishes them to the jobs stream; a **results** task takes
//! the hosts' results off this gateway's own subject and hands them to the
//! completer, which routes each reply to the connection that asked — and
//! drops a second result for the same job (at-least-once delivery, exactly
//! one reply).
//!
//! **Sharing the queue fairly.** Local workers and remote hosts take jobs
//! from one queue, each only when it has room: a local worker when it is
//! idle, the forwarder while this gateway has fewer jobs out than twice the
//! live hosts' workers (from their heartbeats: one running and one waiting
//! per slot). So only a slot's worth of jobs waits in the stream while hosts
//! are busy, and local workers are never starved.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use crossbeam_channel::{select, Receiver, Sender};
use futures_util::StreamExt;

use crate::error::{Error, Result};
use crate::protocol::{ErrorCode, ReplyError};
use crate::remote::bridge::Bridge;
use crate::remote::connect::{connect, NatsOptions};
use crate::remote::wire::{self, Heartbeat, RemoteJob, RemoteResult};
use crate::remote::{self as nats, HEARTBEAT_SUBJECT, HOST_TIMEOUT, JOBS_SUBJECT};
use crate::server::jobs::Completer;
use crate::server::pool::{JobQueues, JobReport, QueuedJob};
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

/// The refusal for a job when no host is connected and there is no local
/// worker (`--workers 0`).
pub(crate) fn no_host_error() -> ReplyError {
    ReplyError::new(
        ErrorCode::Busy,
        "no worker host is connected to this gateway: start one with tc-worker --nats URL; retry later",
    )
}

/// Jobs this gateway has sent and not yet had a result for.
#[derive(Debug, Default)]
struct Forwarded {
    jobs: Mutex<HashSet<JobId>>,
}

impl Forwarded {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<JobId>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running gateway.
pub(crate) struct Gateway {
    bridge: Arc<Bridge>,
    status: Arc<GatewayStatus>,
    client: async_nats::Client,
    /// Dropping it stops the forwarder.
    stop: Option<Sender<()>>,
    forwarder: Option<JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Connects to NATS, makes sure the stream exists, listens for results
    /// and heartbeats, and starts forwarding jobs from `queues`.
    ///
    /// # Errors
    /// NATS cannot be reached or has no JetStream.
    pub(crate) fn start(
        options: &NatsOptions,
        queues: JobQueues,
        completer: Completer,
        retries: u32,
        local_workers: usize,
        max_jobs: i64,
    ) -> Result<Gateway> {
        let bridge = Arc::new(Bridge::start("nats-bridge")?);
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let (client, link) = bridge.run(connect(options, &format!("tc-server gateway {id}")))?;
        let js = bridge.run(async {
            // Created inside the runtime: the context starts a task of its own.
            let js = jetstream::new(client.clone());
            nats::jobs_stream(&js, Some(max_jobs)).await.map(|_| js)
        })?;
        let reply_to = nats::results_subject(&id);
        let (results, heartbeats) = bridge.run(async {
            let results = client.subscribe(reply_to.clone()).await;
            let heartbeats = client.subscribe(HEARTBEAT_SUBJECT).await;
            (results, heartbeats)
        });
        let results = results.map_err(|e| Error::Remote(format!("cannot subscribe to {reply_to}: {e}")))?;
        let heartbeats =
            heartbeats.map_err(|e| Error::Remote(format!("cannot subscribe to {HEARTBEAT_SUBJECT}: {e}")))?;

        let status = Arc::new(GatewayStatus {
            hosts: HostTable::default(),
            link,
            counters: GatewayCounters::default(),
        });
        let forwarded = Arc::new(Forwarded::default());
        // One pending wake-up is enough: the forwarder re-counts on waking.
        let (room_tx, room_rx) = crossbeam_channel::bounded::<()>(1);
        let tasks = vec![
            bridge.spawn(take_results(
                results,
                completer.clone(),
                Arc::clone(&forwarded),
                Arc::clone(&status),
                room_tx,
            )),
            bridge.spawn(listen_to_hosts(heartbeats, Arc::clone(&status))),
        ];

        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let forwarder = {
            let forwarder = Forwarder {
                bridge: Arc::clone(&bridge),
                js,
                max_payload: client.server_info().max_payload,
                gateway: id.clone(),
                reply_to,
                retries,
                local_workers,
                status: Arc::clone(&status),
                forwarded,
                completer,
                started: Instant::now(),
                room: room_rx,
            };
            thread::Builder::new()
                .name("nats-forwarder".into())
                .spawn(move || forwarder.run(&queues, &stop_rx))
                .map_err(|e| Error::io("starting the NATS forwarder thread", e))?
        };
        tracing::info!(gateway = %id, nats = %options.url, "gateway connected to NATS");
        Ok(Gateway { bridge, status, client, stop: Some(stop_tx), forwarder: Some(forwarder), tasks })
    }

    /// The hosts, the link and the counters, for the rest of the server.
    pub(crate) fn status(&self) -> Arc<GatewayStatus> {
        Arc::clone(&self.status)
    }

    /// Stops forwarding and listening (after the server's drain).
    pub(crate) fn stop(mut self) {
        drop(self.stop.take());
        if let Some(forwarder) = self.forwarder.take() {
            let _ = forwarder.join();
        }
        let client = self.client.clone();
        self.bridge.run(async move {
            let _ = client.flush().await;
        });
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

/// The forwarder thread's state.
struct Forwarder {
    bridge: Arc<Bridge>,
    js: jetstream::Context,
    max_payload: usize,
    gateway: String,
    reply_to: String,
    retries: u32,
    local_workers: usize,
    status: Arc<GatewayStatus>,
    forwarded: Arc<Forwarded>,
    completer: Completer,
    started: Instant,
    /// Signalled by the results task when a job comes back (room to send).
    room: Receiver<()>,
}

impl Forwarder {
    fn run(&self, queues: &JobQueues, stop: &Receiver<()>) {
        loop {
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
            let job = select! {
                recv(stop) -> _ => return,
                recv(queues.retries) -> job => job,
                recv(queues.jobs) -> job => job,
                default(NO_ROOM_RECHECK) => continue,
            };
            let Ok(job) = job else { return };
            self.forward(job);
        }
    }

    /// No local worker, and no host heard from for a whole host timeout.
    fn nobody_to_run_jobs(&self) -> bool {
        self.local_workers == 0 && self.status.hosts.alive() == 0 && self.started.elapsed() >= HOST_TIMEOUT
    }

    /// Answers every queued job: nobody can run it.
    fn refuse_queued(&self, queues: &JobQueues) {
        while let Ok(job) = queues.retries.try_recv().or_else(|_| queues.jobs.try_recv()) {
            self.fail(&job, no_host_error());
        }
    }

    /// Publishes one job to the stream and waits for JetStream's
    /// acknowledgement (so a full stream is a `BUSY` reply now).
    fn forward(&self, job: QueuedJob) {
        let max_attempts = if job.kind.is_idempotent() { self.retries.saturating_add(1) } else { 1 };
        let message = RemoteJob::new(job.id, self.reply_to.clone(), max_attempts, job.kind.clone());
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
        self.forwarded.lock().insert(job.id);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{}-{}", self.gateway, job.id).as_str());
        let published = self.bridge.run(async {
            match self.js.publish_with_headers(JOBS_SUBJECT, headers, bytes.into()).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        });
        if let Err(e) = published {
            self.status.counters.refused.fetch_add(1, Relaxed);
            self.forwarded.lock().remove(&job.id);
            let message = format!("the farm's NATS job queue refused the job ({e}); retry later");
            self.fail(&job, ReplyError::new(ErrorCode::Busy, message));
        } else {
            self.status.counters.forwarded.fetch_add(1, Relaxed);
        }
    }

    /// Answers a job that was not sent.
    fn fail(&self, job: &QueuedJob, error: ReplyError) {
        self.completer.finish(JobReport {
            job: job.id,
            worker: 0,
            queue_us: micros(job.accepted_at.elapsed()),
            service_us: 0,
            attempts: job.attempt,
            result: Err(error),
        });
    }
}

/// Hands each result to the completer, which replies once per job.
async fn take_results(
    mut results: async_nats::Subscriber,
    completer: Completer,
    forwarded: Arc<Forwarded>,
    status: Arc<GatewayStatus>,
    room: Sender<()>,
) {
    while let Some(message) = results.next().await {
        let result: RemoteResult = match wire::decode(&message.payload) {
            Ok(result) => result,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a message on the results subject");
                continue;
            }
        };
        let first = forwarded.lock().remove(&result.job);
        if !first {
            status.counters.duplicates.fetch_add(1, Relaxed);
            tracing::debug!(job = result.job, host = %result.host, "duplicate result dropped");
        } else {
            let _ = room.try_send(());
            if result.attempts > 1 {
                status.counters.redelivered.fetch_add(1, Relaxed);
            }
        }
        completer.finish(JobReport {
            job: result.job,
            worker: result.worker,
            queue_us: result.queue_us,
            service_us: result.service_us,
            attempts: result.attempts,
            result: result.result,
        });
    }
}

/// Keeps the table of hosts from their heartbeats.
async fn listen_to_hosts(mut heartbeats: async_nats::Subscriber, status: Arc<GatewayStatus>) {
    while let Some(message) = heartbeats.next().await {
        match serde_json::from_slice::<Heartbeat>(&message.payload) {
            Ok(beat) => status.count_heartbeat(status.hosts.heard(beat, std::time::Instant::now())),
            Err(e) => tracing::debug!(error = %e, "ignoring a message on the heartbeat subject"),
        }
    }
}
