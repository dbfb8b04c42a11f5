//! **Worker host side** — everything `tc-worker` runs: the same local pool as
//! the server (same job code, supervision, restart budget, job timeouts,
//! GIL option, model loading), fed from NATS JetStream instead of a socket.
//!
//! ```text
//!  consumer "tc-workers" ──fetch(free slots)──▶ held jobs ──▶ pool (threads/processes)
//!        ▲   "in progress" every ACK_WAIT/3 ◀──┘    │               │ finish
//!        └──────────── ack ◀── publish result to the gateway ◀──────┘
//! ```
//!
//! A host pulls **only as many jobs as it has free slots**: a job it holds is
//! one no other host can run, so it never prefetches. While a job runs the
//! host tells JetStream it is still in progress, so a long job is not taken
//! for a lost one; if the host dies, hangs or is cut off, those signals stop
//! and the job goes to another host after [`crate::remote::ACK_WAIT`].
//!
//! Every job carries the gateway's attempt limit (`1 + --retries`, 1 for an
//! injected fault): a job delivered more often than that is answered
//! `WORKER_CRASHED` without running again, so a job that kills its workers
//! cannot go round the hosts for ever.

mod outcomes;
mod pages;
mod service;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use crossbeam_channel::Receiver;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::protocol::{ErrorCode, ReplyError};
use crate::remote::bridge::Bridge;
use crate::remote::connect::{connect, NatsOptions};
use crate::remote::wire::{self, Heartbeat, RemoteJob, RemoteResult};
use crate::remote::{self as nats, ACK_WAIT, HEARTBEAT_EVERY, HEARTBEAT_SUBJECT};
use crate::server::http::MetricsEndpoint;
use crate::server::pool::{JobQueues, PoolConfig, QueuedJob, WorkerBoard, WorkerPool};
use crate::work::job::JobId;
use outcomes::{HostEvent, HostOutcomes};

/// How long one pull request waits in JetStream for jobs before it expires
/// (the host then asks again).
const FETCH_WAIT: Duration = Duration::from_secs(2);
/// How long after its expiry a pull request still counts as out.
const PULL_GRACE: Duration = Duration::from_secs(1);
/// The longest the fetcher sleeps before it looks again (a delivery or a
/// freed slot wakes it at once; this only bounds a missed wake-up).
const FULL_RECHECK: Duration = Duration::from_millis(100);

/// Everything that shapes a worker host.
#[derive(Debug, Clone)]
pub(crate) struct HostConfig {
    /// How to reach NATS.
    pub(crate) nats: NatsOptions,
    /// This host's name (`--name`): in heartbeats, results and logs.
    pub(crate) name: String,
    /// The local pool.
    pub(crate) pool: PoolConfig,
    /// On SIGTERM, how long to let held jobs finish before handing them back.
    pub(crate) drain_timeout: Duration,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (`--metrics-addr`),
    /// already bound so a busy address fails before anything starts.
    pub(crate) metrics: Option<Arc<std::net::TcpListener>>,
    /// The metrics endpoint's cap, timeout and token.
    pub(crate) metrics_limits: crate::server::http::HttpLimits,
}

/// A job the host holds: the JetStream message (to acknowledge it), and
/// where its result goes.
#[derive(Debug)]
struct Held {
    message: jetstream::Message,
    job: JobId,
    reply_to: String,
    attempts: u32,
}

/// The jobs a host holds, by their local id. A std `Mutex` held only for
/// map operations (never across an `.await`: entries are `Arc`s taken out
/// first), shared by the pool's threads and the bridge's tasks.
#[derive(Debug, Default)]
pub(crate) struct HeldJobs {
    jobs: Mutex<HashMap<JobId, Arc<Held>>>,
    /// Wakes the fetcher when a slot frees up, so a host never sits idle
    /// while jobs wait in the stream.
    freed: tokio::sync::Notify,
}

impl HeldJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Arc<Held>>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
    fn contains(&self, id: JobId) -> bool {
        self.lock().contains_key(&id)
    }
    fn insert(&self, id: JobId, held: Held) {
        self.lock().insert(id, Arc::new(held));
    }
    fn take(&self, id: JobId) -> Option<Arc<Held>> {
        let taken = self.lock().remove(&id);
        if taken.is_some() {
            // `notify_one` stores a permit when nobody waits yet, so a slot
            // freed just before the fetcher starts waiting is not missed.
            self.freed.notify_one();
        }
        taken
    }
    fn all(&self) -> Vec<Arc<Held>> {
        self.lock().values().cloned().collect()
    }
}

/// Runs a worker host until `stop` fires (SIGTERM), then drains: it stops
/// pulling, lets held jobs finish for up to `drain_timeout`, and hands back
/// whatever is left (a "not now" to JetStream, which redelivers it at once
/// to another host).
///
/// # Errors
/// NATS cannot be reached or has no JetStream; the pool cannot start.
pub(crate) fn run(config: HostConfig, stop: Receiver<()>) -> Result<()> {
    let bridge = Bridge::start("nats-bridge")?;
    let (client, link) = bridge.run(connect(&config.nats, &format!("tc-worker {}", config.name)))?;
    let (js, consumer) = bridge.run(async {
        // Created inside the runtime: the context starts a task of its own.
        let js = jetstream::new(client.clone());
        let stream = nats::jobs_stream(&js, None).await?;
        nats::workers_consumer(&stream).await.map(|consumer| (js, consumer))
    })?;

    // The pool's queues: the fetcher puts jobs in, the workers take them.
    let slots = config.pool.workers;
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<QueuedJob>(slots);
    let (retries_tx, retries_rx) = crossbeam_channel::unbounded::<QueuedJob>();
    let (events_tx, events_rx) = mpsc::unbounded_channel::<HostEvent>();
    let held = Arc::new(HeldJobs::default());
    let outcomes = HostOutcomes::new(events_tx, retries_tx, {
        let held = Arc::clone(&held);
        move |id| held.contains(id)
    });
    let board = Arc::new(WorkerBoard::new(slots));
    let mut pool = WorkerPool::start(
        &config.pool,
        JobQueues { jobs: jobs_rx, retries: retries_rx },
        Arc::new(outcomes),
        Arc::clone(&board),
    )?;
    tracing::info!(
        name = %config.name,
        mode = config.pool.mode.as_str(),
        workers = slots,
        nats = %config.nats.url,
        "worker host started"
    );

    let state = Arc::new(pages::HostState {
        name: config.name.clone(),
        mode: config.pool.mode.as_str(),
        board: Arc::clone(&board),
        held: Arc::clone(&held),
        link,
        started: Instant::now(),
        draining: AtomicBool::new(false),
    });
    let endpoint = match &config.metrics {
        Some(listener) => {
            let listener =
                listener.try_clone().map_err(|e| crate::error::Error::io("using --metrics-addr", e))?;
            let endpoint = MetricsEndpoint::serve(
                listener,
                Arc::new(pages::HostPages::new(Arc::clone(&state))),
                config.metrics_limits.clone(),
            )?;
            // Scripts and tests read this line to find the port.
            let scheme = if config.metrics_limits.tls.is_some() { "https" } else { "http" };
            println!("metrics on {scheme}://{}/metrics", endpoint.local_addr());
            Some(endpoint)
        }
        None => None,
    };

    let pulling = Arc::new(AtomicBool::new(true));
    let fetcher = Fetcher {
        client: client.clone(),
        js,
        consumer,
        held: Arc::clone(&held),
        jobs: jobs_tx,
        slots,
        pulling: Arc::clone(&pulling),
    };
    let fetcher = bridge.spawn(fetch_jobs(fetcher, {
        let (client, name) = (client.clone(), config.name.clone());
        move |held: Held, error: ReplyError| {
            let (client, name) = (client.clone(), name.clone());
            async move { answer(&client, &name, &held, 0, 0, 0, Err(error)).await }
        }
    }));
    let reporter =
        bridge.spawn(report_results(client.clone(), config.name.clone(), Arc::clone(&held), events_rx));
    let status = Arc::new(Mutex::new(heartbeat(&config, &held, &board)));
    // NATS's own tools see the host: `nats micro ls`, `$SRV.PING/INFO/STATS`.
    let service = bridge.run(service::register(&client, &config, Arc::clone(&status)))?;
    let keeper = bridge.spawn(keep_alive(
        client.clone(),
        Arc::clone(&held),
        Arc::clone(&board),
        config.clone(),
        status,
    ));

    // Wait for SIGTERM (the sender is dropped or sends).
    let _ = stop.recv();
    tracing::info!(held = held.len(), "draining: no new jobs; letting held jobs finish");
    // `SeqCst` for once-per-run flags (cost irrelevant, reasoning simplest).
    pulling.store(false, Ordering::SeqCst);
    state.draining.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + config.drain_timeout;
    // Poll: held jobs leave the map from the reporter task; a 10 ms poll on
    // a once-per-run drain is simpler than a notification on every job.
    while held.len() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = held.all();
    if !left.is_empty() {
        tracing::warn!(jobs = left.len(), "drain timeout: handing held jobs back for another host");
    }
    bridge.run(async {
        for job in left {
            let _ = job.message.ack_with(AckKind::Nak(None)).await;
        }
        let _ = client.flush().await;
    });
    fetcher.abort();
    keeper.abort();
    service.abort();
    pool.stop(Duration::from_secs(5));
    reporter.abort();
    if let Some(endpoint) = endpoint {
        endpoint.stop();
    }
    tracing::info!("worker host stopped");
    Ok(())
}

/// What the fetch task needs: the NATS handles, the held jobs and the
/// pool's queue.
struct Fetcher {
    client: async_nats::Client,
    js: jetstream::Context,
    consumer: jetstream::consumer::PullConsumer,
    held: Arc<HeldJobs>,
    jobs: crossbeam_channel::Sender<QueuedJob>,
    slots: usize,
    pulling: Arc<AtomicBool>,
}

/// The pull request this host has out: its token, how many jobs it may
/// still bring, and when the host stops counting on it (the server's expiry
/// plus a grace, in case its "request timeout" status was lost with a
/// connection).
struct Pull {
    token: u64,
    wanted: usize,
    forget_at: tokio::time::Instant,
}

/// Pulls jobs, never more than the free slots, while `pulling`; after that
/// (draining) hands back anything a request still out brings.
///
/// One subscription serves every pull request, each with its own reply
/// subject `<inbox>.<n>`: a fetch per request would subscribe and
/// unsubscribe for every job, which costs the NATS server more than the
/// job's own messages. Only one request is out at a time, so every
/// delivery belongs to it and `held + asked <= slots` holds exactly (a
/// delivery carries the job's own subject, not the request's; a status —
/// 408 expired, 409 refused — carries the request's, hence the token).
/// With jobs waiting in the stream a request is answered at once, so one
/// at a time costs nothing; a slot that frees while a request waits on an
/// empty stream asks as soon as that request ends.
async fn fetch_jobs<F, Fut>(fetcher: Fetcher, refuse: F)
where
    F: Fn(Held, ReplyError) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Fetcher { client, js, consumer, held, jobs, slots, pulling } = fetcher;
    let inbox = client.new_inbox();
    let mut deliveries = loop {
        match client.subscribe(format!("{inbox}.*")).await {
            Ok(subscription) => break subscription,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe for jobs; retrying");
                tokio::time::sleep(FETCH_WAIT).await;
            }
        }
    };
    let mut pull: Option<Pull> = None;
    let mut next_token: u64 = 0;
    let mut next_id: JobId = 0;
    loop {
        let now = tokio::time::Instant::now();
        if pull.as_ref().is_some_and(|pull| pull.forget_at <= now) {
            pull = None;
        }
        let free = slots.saturating_sub(held.len());
        if pull.is_none() && free > 0 && pulling.load(Ordering::SeqCst) {
            next_token += 1;
            let request = jetstream::consumer::pull::BatchConfig {
                batch: free,
                expires: Some(FETCH_WAIT),
                ..Default::default()
            };
            match consumer.request_batch(request, format!("{inbox}.{next_token}").into()).await {
                Ok(()) => {
                    let forget_at = now + FETCH_WAIT + PULL_GRACE;
                    pull = Some(Pull { token: next_token, wanted: free, forget_at });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot pull jobs from NATS; retrying");
                    tokio::time::sleep(FETCH_WAIT).await;
                    continue;
                }
            }
        }
        // Wake for a delivery, a freed slot, or the request to forget.
        let wake_at = pull.as_ref().map_or(now + FULL_RECHECK, |pull| pull.forget_at.min(now + FULL_RECHECK));
        let message = tokio::select! {
            message = deliveries.next() => message,
            _ = held.freed.notified() => continue,
            _ = tokio::time::sleep_until(wake_at) => continue,
        };
        let Some(message) = message else {
            tracing::warn!("the job subscription ended");
            return;
        };
        match message.status {
            None | Some(async_nats::StatusCode::OK) => {
                if let Some(current) = pull.as_mut() {
                    current.wanted = current.wanted.saturating_sub(1);
                    if current.wanted == 0 {
                        pull = None;
                    }
                }
            }
            Some(async_nats::StatusCode::IDLE_HEARTBEAT) => continue,
            Some(status) => {
                // 408: the request expired; 409: refused or ended (e.g. the
                // consumer's limit of waiting requests). Either way it is over.
                if status != async_nats::StatusCode::TIMEOUT {
                    tracing::debug!(%status, description = ?message.description, "pull request ended");
                }
                let token = message.subject.rsplit('.').next().and_then(|n| n.parse::<u64>().ok());
                if pull.as_ref().is_some_and(|pull| Some(pull.token) == token) {
                    pull = None;
                }
                continue;
            }
        }
        let message = jetstream::Message { message, context: js.clone() };
        if !pulling.load(Ordering::SeqCst) || held.len() >= slots {
            // Draining, or a late delivery for a request already forgotten:
            // straight back to the stream, for another host.
            let _ = message.ack_with(AckKind::Nak(None)).await;
            continue;
        }
        let attempts = message.info().map(|info| info.delivered as u32).unwrap_or(1);
        let job: RemoteJob = match wire::decode(&message.payload) {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!(error = %e, "dropping a message that is not a job");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            }
        };
        let held_job = Held { message, job: job.job, reply_to: job.reply_to, attempts };
        if attempts > job.max_attempts {
            let error = ReplyError::new(
                ErrorCode::WorkerCrashed,
                format!(
                    "the job was delivered {attempts} times and its worker host died or hung each time \
                     (at most {} allowed, --retries)",
                    job.max_attempts
                ),
            );
            refuse(held_job, error).await;
            continue;
        }
        next_id += 1;
        held.insert(next_id, held_job);
        let queued =
            QueuedJob { id: next_id, kind: job.kind, accepted_at: Instant::now(), attempt: attempts };
        if jobs.try_send(queued).is_err() {
            // Cannot happen while free slots are counted right; hand it back.
            if let Some(held_job) = held.take(next_id) {
                let _ = held_job.message.ack_with(AckKind::Nak(None)).await;
            }
        }
    }
}

/// Publishes each finished job's result to its gateway, then acknowledges it;
/// hands back jobs the pool could not run.
async fn report_results(
    client: async_nats::Client,
    name: String,
    held: Arc<HeldJobs>,
    mut events: mpsc::UnboundedReceiver<HostEvent>,
) {
    while let Some(event) = events.recv().await {
        match event {
            HostEvent::Done(report) => {
                let Some(job) = held.take(report.job) else { continue };
                answer(
                    &client,
                    &name,
                    &job,
                    report.worker,
                    report.queue_us,
                    report.service_us,
                    report.result,
                )
                .await;
            }
            HostEvent::HandBack(id) => {
                if let Some(job) = held.take(id) {
                    // Redelivered at once, to whichever host asks next.
                    let _ = job.message.ack_with(AckKind::Nak(None)).await;
                }
            }
        }
    }
}

/// Sends one job's result to the gateway that asked, then acknowledges the
/// job. The result goes first: if the host dies between the two, the job is
/// run again and the gateway drops the second result — never a lost reply.
async fn answer(
    client: &async_nats::Client,
    name: &str,
    job: &Held,
    worker: usize,
    queue_us: u64,
    service_us: u64,
    result: crate::protocol::JobResult,
) {
    let message = RemoteResult {
        job: job.job,
        host: name.to_string(),
        worker,
        queue_us,
        service_us,
        attempts: job.attempts,
        result,
    };
    let published = match wire::encode(&message) {
        Ok(bytes) => client.publish(job.reply_to.clone(), bytes.into()).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match published {
        Ok(()) => {
            let _ = job.message.ack().await;
        }
        Err(e) => tracing::warn!(error = %e, job = job.job, "cannot send a result; the job will run again"),
    }
}

/// What this host says about itself now.
fn heartbeat(config: &HostConfig, held: &HeldJobs, board: &WorkerBoard) -> Heartbeat {
    let workers = board.snapshot();
    Heartbeat {
        name: config.name.clone(),
        slots: config.pool.workers,
        busy: held.len(),
        jobs_done: workers.iter().map(|w| w.jobs_done).sum(),
        restarts: workers.iter().map(|w| w.restarts).sum(),
        mode: config.pool.mode.as_str().to_string(),
    }
}

/// Every third of the ack wait, tells JetStream the held jobs are still in
/// progress; every [`HEARTBEAT_EVERY`], says who this host is and how busy
/// (and keeps `status`, which the NATS service answers with, up to date).
async fn keep_alive(
    client: async_nats::Client,
    held: Arc<HeldJobs>,
    board: Arc<WorkerBoard>,
    config: HostConfig,
    status: Arc<Mutex<Heartbeat>>,
) {
    let mut progress = tokio::time::interval(ACK_WAIT / 3);
    let mut beating = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            _ = progress.tick() => {
                for job in held.all() {
                    let _ = job.message.ack_with(AckKind::Progress).await;
                }
            }
            _ = beating.tick() => {
                let beat = heartbeat(&config, &held, &board);
                *status.lock().unwrap_or_else(PoisonError::into_inner) = beat.clone();
                if let Ok(bytes) = serde_json::to_vec(&beat) {
                    let _ = client.publish(HEARTBEAT_SUBJECT, bytes.into()).await;
                }
            }
        }
    }
}
