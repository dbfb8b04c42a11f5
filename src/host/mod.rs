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

mod admission;
mod outcomes;
mod pages;
mod peers;
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
use crate::remote::connect::{connect, LinkState, NatsOptions, Role};
use crate::remote::envelope::{self, now_ms, JobReplays, KeyMismatch, ReplayGuard, Signer, Verifier};
use crate::remote::wire::{self, GatewayBeat, Heartbeat, JobToken, RemoteJob, RemoteResult};
use crate::remote::{self as nats, ACK_WAIT, GATEWAYS_SUBJECT, HEARTBEAT_EVERY, HEARTBEAT_SUBJECT};
use crate::runtime::http::MetricsEndpoint;
use crate::runtime::pool::{JobQueues, PoolConfig, QueuedJob, WorkerBoard, WorkerPool};
use crate::work::job::JobId;
pub(crate) use admission::HostLimits;
use outcomes::{HostEvent, HostOutcomes};
use pages::HostCounters;
use peers::{Peers, JUDGE_AFTER};

/// How long one pull request waits in JetStream for jobs before it expires
/// (the host then asks again).
const FETCH_WAIT: Duration = Duration::from_secs(2);
/// How long after its expiry a pull request still counts as out.
const PULL_GRACE: Duration = Duration::from_secs(1);
/// The longest the fetcher sleeps before it looks again (a delivery or a
/// freed slot wakes it at once; this only bounds a missed wake-up).
const FULL_RECHECK: Duration = Duration::from_millis(100);
/// How long one try to store a result (or acknowledge a job) may wait for
/// JetStream before it is tried again.
const STORE_WAIT: Duration = Duration::from_secs(2);
/// The pause between two tries to store a result while NATS is away.
const STORE_RETRY: Duration = Duration::from_millis(500);
/// On a stop, the longest the last messages (hand-backs) may take to go
/// out: a stop ends within `--drain-timeout` plus this, whatever NATS does.
pub(crate) const STOP_FLUSH_WAIT: Duration = Duration::from_secs(2);
/// How long a signed job this keyless host cannot use waits before it is
/// delivered again (to a host with the key, if there is one).
const KEYLESS_NAK_DELAY: Duration = Duration::from_secs(1);
/// Recent jobs remembered to spot one published twice (a replay).
const JOB_REPLAYS_REMEMBERED: usize = 100_000;

/// Everything that shapes a worker host.
#[derive(Debug, Clone)]
pub(crate) struct HostConfig {
    /// How to reach NATS.
    pub(crate) nats: NatsOptions,
    /// This host's name (`--name`): in heartbeats, results and logs.
    pub(crate) name: String,
    /// The local pool.
    pub(crate) pool: PoolConfig,
    /// What this host accepts of a job (`--max-n`, `--allow-chaos`, `--models-dir`).
    pub(crate) limits: HostLimits,
    /// On SIGTERM, how long to let held jobs finish before handing them back.
    pub(crate) drain_timeout: Duration,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (`--metrics-addr`),
    /// already bound so a busy address fails before anything starts.
    pub(crate) metrics: Option<Arc<std::net::TcpListener>>,
    /// The metrics endpoint's cap, timeout and token.
    pub(crate) metrics_limits: crate::runtime::http::HttpLimits,
}

/// A job the host holds: the JetStream message (to acknowledge it), and
/// where its result goes.
#[derive(Debug)]
struct Held {
    message: jetstream::Message,
    job: JobId,
    token: JobToken,
    reply_to: String,
    attempts: u32,
    /// The gateway's deadline: after it nobody waits for the result.
    expires_ms: u64,
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
    /// The tokens of the held jobs, for the heartbeat.
    fn tokens(&self) -> Vec<String> {
        self.lock().values().map(|held| wire::token_hex(held.token)).collect()
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
    let key = envelope::load_farm_key(config.nats.farm_key.as_deref())?;
    let signer = Arc::new(Signer::new(key.clone()));
    let verifier = Verifier::new(key);
    let bridge = Bridge::start("nats-bridge")?;
    let (client, link) =
        bridge.run(connect(&config.nats, &format!("tc-worker {}", config.name), Role::Host))?;
    let (js, consumer) = bridge.run(link.set_up(async {
        // Created inside the runtime: the context starts a task of its own.
        let js = jetstream::new(client.clone());
        let stream = nats::jobs_stream(&js, None).await?;
        nats::results_stream(&js).await?;
        nats::workers_consumer(&stream).await.map(|consumer| (js, consumer))
    }))?;
    let counters = Arc::new(HostCounters::default());
    let peers = Arc::new(Peers::default());

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
        link: Arc::clone(&link),
        started: Instant::now(),
        draining: AtomicBool::new(false),
        counters: Arc::clone(&counters),
        farm_key: verifier.has_key(),
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
            // Not println!, which panics when nobody reads stdout any more.
            let line = format!("metrics on {scheme}://{}/metrics\n", endpoint.local_addr());
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), line.as_bytes());
            Some(endpoint)
        }
        None => None,
    };

    let pulling = Arc::new(AtomicBool::new(true));
    let answerer =
        Arc::new(Answerer { js: js.clone(), signer: Arc::clone(&signer), name: config.name.clone() });
    let fetcher = Fetcher {
        client: client.clone(),
        js,
        consumer,
        held: Arc::clone(&held),
        jobs: jobs_tx,
        slots,
        pulling: Arc::clone(&pulling),
        checks: JobChecks {
            verifier: verifier.clone(),
            replays: JobReplays::new(JOB_REPLAYS_REMEMBERED),
            peers: Arc::clone(&peers),
            link: Arc::clone(&link),
            counters: Arc::clone(&counters),
            name: config.name.clone(),
            admission: admission::Admission::new(config.limits.clone()),
        },
    };
    let fetcher = bridge.spawn(fetch_jobs(fetcher, {
        let answerer = Arc::clone(&answerer);
        move |held: Held, error: ReplyError| {
            let answerer = Arc::clone(&answerer);
            async move { answerer.answer(Arc::new(held), (0, 0, 0), Err(error)).await }
        }
    }));
    let reporter = bridge.spawn(report_results(Arc::clone(&answerer), Arc::clone(&held), events_rx));
    let status = Arc::new(Mutex::new(heartbeat(&config, &held, &board)));
    // A gateway new to this host hears from it at once (see `listen_to_farm`).
    let beat_now = Arc::new(tokio::sync::Notify::new());
    let listener = bridge.spawn(listen_to_farm(
        client.clone(),
        FarmEars {
            verifier,
            peers: Arc::clone(&peers),
            counters: Arc::clone(&counters),
            beat_now: Arc::clone(&beat_now),
        },
    ));
    // NATS's own tools see the host: `nats micro ls`, `$SRV.PING/INFO/STATS`.
    let service = bridge.run(service::register(&client, &config, Arc::clone(&status)))?;
    let keeper = bridge.spawn(keep_alive(
        client.clone(),
        Arc::clone(&held),
        Arc::clone(&board),
        config.clone(),
        status,
        (Arc::clone(&signer), beat_now),
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
    // Bounded whatever NATS does: with NATS away the hand-backs cannot go
    // out, and JetStream redelivers the jobs after the ack wait anyway.
    let handed_back = bridge.run(async {
        tokio::time::timeout(STOP_FLUSH_WAIT, async {
            for job in &left {
                let _ = job.message.ack_with(AckKind::Nak(None)).await;
            }
            // The last word: gateways count this host gone now, not after
            // its heartbeats have been missing for the host timeout.
            let last = Heartbeat {
                leaving: true,
                busy: 0,
                holding: Vec::new(),
                ..heartbeat(&config, &held, &board)
            };
            if let Ok(bytes) = serde_json::to_vec(&last) {
                let mut headers = async_nats::HeaderMap::new();
                signer.sign(HEARTBEAT_SUBJECT, &mut headers, &bytes);
                let _ = client.publish_with_headers(HEARTBEAT_SUBJECT, headers, bytes.into()).await;
            }
            client.flush().await.is_ok()
        })
        .await
        .unwrap_or(false)
    });
    if !left.is_empty() && !handed_back {
        tracing::warn!(
            jobs = left.len(),
            "NATS did not take the hand-backs in time; JetStream gives the jobs to another host after its ack wait"
        );
    }
    fetcher.abort();
    keeper.abort();
    listener.abort();
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
    checks: JobChecks,
}

/// What a delivered job is checked against before it may run.
struct JobChecks {
    verifier: Verifier,
    replays: Arc<JobReplays>,
    peers: Arc<Peers>,
    link: Arc<LinkState>,
    counters: Arc<HostCounters>,
    name: String,
    admission: admission::Admission,
}

/// What to do with a delivered job.
enum Verdict {
    /// Run it.
    Run,
    /// Answer it with this error, unrun.
    Refuse(ReplyError),
    /// Drop it unrun and unanswered (the reason is logged and counted):
    /// nobody could use an answer, or it is not ours.
    Drop,
}

impl JobChecks {
    /// The farm key's check of a message, before it is even decoded; when
    /// it fails, what to tell the stream: a message that is not ours ends
    /// there, a signed one this keyless host cannot use goes back (after a
    /// pause) for a host that has the key.
    fn signed(&self, message: &async_nats::Message) -> Result<envelope::Signed, AckKind> {
        if self.verifier.signed_without_key(message.headers.as_ref()) {
            // Its gateway would drop this host's result (unsigned).
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            self.counters.key_trouble.noticed(KeyMismatch::OnlySenderHasOne, "a job from the jobs stream");
            return Err(AckKind::Nak(Some(KEYLESS_NAK_DELAY)));
        }
        self.verifier.verify(message.subject.as_str(), message.headers.as_ref(), &message.payload).map_err(
            |why| {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                match KeyMismatch::of(&why) {
                    Some(mismatch) => {
                        self.counters.key_trouble.noticed(mismatch, "a job from the jobs stream")
                    }
                    None => tracing::warn!(subject = %message.subject, %why, "dropping a job message"),
                }
                AckKind::Term
            },
        )
    }

    /// Whether a decoded, signed job may run, is answered unrun, or dropped.
    fn judge(&self, job: &RemoteJob, signed: &envelope::Signed, stream_seq: u64, attempts: u32) -> Verdict {
        let now = now_ms();
        let token = wire::token_hex(job.token);
        if let Err(why) = self.replays.check(signed, stream_seq, job.expires_ms, now) {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(job = %token, %why, "dropping a job");
            return Verdict::Drop;
        }
        if now > job.expires_ms {
            self.counters.expired.fetch_add(1, Ordering::Relaxed);
            tracing::info!(job = %token, gateway = %job.gateway, "dropping a job past its deadline: its gateway has answered it");
            return Verdict::Drop;
        }
        // Judged only on a link up long enough to have heard every gateway.
        let judging = self.link.up_for() >= JUDGE_AFTER;
        if judging && self.peers.gateway_silent(&job.gateway, Instant::now()) {
            self.counters.orphaned.fetch_add(1, Ordering::Relaxed);
            tracing::info!(job = %token, gateway = %job.gateway, "dropping a job of a gateway gone silent: nobody would read its result");
            return Verdict::Drop;
        }
        if attempts > 1 {
            tracing::info!(job = %token, delivery = attempts, "a job delivered again");
        }
        if attempts <= job.max_attempts {
            return Verdict::Run;
        }
        let holder = self.peers.held_elsewhere(&self.name, &token, Instant::now());
        if !judging || holder.is_some() {
            // The broker redelivered a job its holder still works on (or
            // this host cannot tell yet): not a crash. Run it; the gateway
            // keeps the first result.
            self.counters.redeliveries_excused.fetch_add(1, Ordering::Relaxed);
            tracing::info!(job = %token, delivery = attempts, holder = ?holder, "redelivered past the attempt limit, but its holder is alive or the link just came back: not counted as a crash");
            return Verdict::Run;
        }
        Verdict::Refuse(ReplyError::new(
            ErrorCode::WorkerCrashed,
            format!(
                "the job was delivered {attempts} times and its worker host died or hung each time \
                 (at most {} allowed, --retries)",
                job.max_attempts
            ),
        ))
    }
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
    let Fetcher { client, js, consumer, held, jobs, slots, pulling, checks } = fetcher;
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
        let (attempts, stream_seq) =
            message.info().map(|info| (info.delivered as u32, info.stream_sequence)).unwrap_or((1, 0));
        let signed = match checks.signed(&message) {
            Ok(signed) => signed,
            Err(answer) => {
                let _ = message.ack_with(answer).await;
                continue;
            }
        };
        let job: RemoteJob = match wire::decode(&message.payload) {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!(error = %e, "dropping a message that is not a job");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            }
        };
        let mut verdict = checks.judge(&job, &signed, stream_seq, attempts);
        // Then the host's own limits, as a gateway checks a request.
        let kind = match checks.admission.admit(job.kind) {
            Ok(kind) => Some(kind),
            Err(error) => {
                if matches!(verdict, Verdict::Run) {
                    tracing::warn!(job = %wire::token_hex(job.token), error = %error.message, "refusing a job");
                    verdict = Verdict::Refuse(error);
                }
                None
            }
        };
        let held_job = Held {
            message,
            job: job.job,
            token: job.token,
            reply_to: job.reply_to,
            attempts,
            expires_ms: job.expires_ms,
        };
        let kind = match (verdict, kind) {
            (Verdict::Run, Some(kind)) => kind,
            (Verdict::Run, None) => continue, // cannot happen: a refusal is a Refuse verdict
            (Verdict::Drop, _) => {
                let _ = held_job.message.ack_with(AckKind::Term).await;
                continue;
            }
            (Verdict::Refuse(error), _) => {
                refuse(held_job, error).await;
                continue;
            }
        };
        next_id += 1;
        held.insert(next_id, held_job);
        let queued = QueuedJob { id: next_id, kind, accepted_at: Instant::now(), attempt: attempts };
        if jobs.try_send(queued).is_err() {
            // Cannot happen while free slots are counted right; hand it back.
            if let Some(held_job) = held.take(next_id) {
                let _ = held_job.message.ack_with(AckKind::Nak(None)).await;
            }
        }
    }
}

/// Stores each finished job's result, then acknowledges the job; hands back
/// jobs the pool could not run. Each result is sent by a task of its own,
/// so one waiting for NATS to come back does not hold up the others (at
/// most one per held job, so as many as the slots).
async fn report_results(
    answerer: Arc<Answerer>,
    held: Arc<HeldJobs>,
    mut events: mpsc::UnboundedReceiver<HostEvent>,
) {
    while let Some(event) = events.recv().await {
        match event {
            HostEvent::Done(report) => {
                let Some(job) = held.take(report.job) else { continue };
                let answerer = Arc::clone(&answerer);
                tokio::spawn(async move {
                    let timings = (report.worker, report.queue_us, report.service_us);
                    answerer.answer(job, timings, report.result).await;
                });
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

/// Sends results: signed, into the results stream.
struct Answerer {
    js: jetstream::Context,
    signer: Arc<Signer>,
    name: String,
}

impl Answerer {
    /// Stores one job's result in JetStream, then acknowledges the job.
    ///
    /// The order is the whole argument for exactly one reply: the job leaves
    /// the jobs stream only once its result is stored (and so survives a
    /// broker restart). While NATS is away the result is tried again until
    /// the job's deadline (after it the gateway has answered the job itself);
    /// the result's `Nats-Msg-Id` makes a second store of it a no-op. If the
    /// host dies between the two steps, the job runs again elsewhere and the
    /// gateway drops the second result.
    async fn answer(
        &self,
        job: Arc<Held>,
        (worker, queue_us, service_us): (usize, u64, u64),
        result: crate::protocol::JobResult,
    ) {
        let message = RemoteResult {
            job: job.job,
            token: job.token,
            host: self.name.clone(),
            worker,
            queue_us,
            service_us,
            attempts: job.attempts,
            result,
        };
        let bytes = match wire::encode(&message) {
            Ok(bytes) => bytes,
            Err(e) => return tracing::warn!(error = %e, job = job.job, "cannot encode a result"),
        };
        let token = wire::token_hex(job.token);
        let mut tries = 0u32;
        loop {
            tries += 1;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("r-{token}").as_str());
            self.signer.sign(&job.reply_to, &mut headers, &bytes);
            let stored = tokio::time::timeout(STORE_WAIT, async {
                let ack = self
                    .js
                    .publish_with_headers(job.reply_to.clone(), headers, bytes.clone().into())
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map(|_| ()).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|_| Err("no acknowledgement from JetStream in time".into()));
            match stored {
                Ok(()) => break,
                Err(e) if now_ms() > job.expires_ms => {
                    return tracing::warn!(job = %token, error = %e, tries, "cannot store a result before the job's deadline; its gateway has answered it");
                }
                Err(e) => {
                    if tries == 1 {
                        tracing::warn!(job = %token, error = %e, "cannot store a result yet; trying again until the job's deadline");
                    }
                    tokio::time::sleep(STORE_RETRY).await;
                }
            }
        }
        // The result is safe; now the job may leave the stream. A lost
        // acknowledgement only means the job runs again and the gateway drops
        // the duplicate.
        let _ = tokio::time::timeout(STORE_WAIT, job.message.double_ack()).await;
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
        holding: held.tokens(),
        leaving: false,
    }
}

/// Every third of the ack wait, tells JetStream the held jobs are still in
/// progress; every [`HEARTBEAT_EVERY`] (and at once when a new gateway
/// appears), says who this host is, how busy, and which jobs it holds (and
/// keeps `status`, which the NATS service answers with, up to date).
async fn keep_alive(
    client: async_nats::Client,
    held: Arc<HeldJobs>,
    board: Arc<WorkerBoard>,
    config: HostConfig,
    status: Arc<Mutex<Heartbeat>>,
    (signer, beat_now): (Arc<Signer>, Arc<tokio::sync::Notify>),
) {
    let mut progress = tokio::time::interval(ACK_WAIT / 3);
    let mut beating = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            _ = progress.tick() => {
                for job in held.all() {
                    let _ = job.message.ack_with(AckKind::Progress).await;
                }
                continue;
            }
            _ = beating.tick() => {}
            () = beat_now.notified() => {}
        }
        let beat = heartbeat(&config, &held, &board);
        *status.lock().unwrap_or_else(PoisonError::into_inner) = beat.clone();
        if let Ok(bytes) = serde_json::to_vec(&beat) {
            let mut headers = async_nats::HeaderMap::new();
            signer.sign(HEARTBEAT_SUBJECT, &mut headers, &bytes);
            let _ = client.publish_with_headers(HEARTBEAT_SUBJECT, headers, bytes.into()).await;
        }
    }
}

/// What [`listen_to_farm`] keeps up to date.
struct FarmEars {
    verifier: Verifier,
    peers: Arc<Peers>,
    counters: Arc<HostCounters>,
    beat_now: Arc<tokio::sync::Notify>,
}

/// Whose heartbeat a message is, for a key mismatch's report.
fn heartbeat_sender(message: &async_nats::Message) -> &'static str {
    if message.subject.as_str() == GATEWAYS_SUBJECT {
        "a gateway's heartbeat"
    } else {
        "another host's heartbeat"
    }
}

/// Listens to the other hosts' and the gateways' heartbeats (signed, each
/// sender's newer than its last), for [`Peers`].
async fn listen_to_farm(client: async_nats::Client, ears: FarmEars) {
    let (hosts, gateways) = loop {
        match (client.subscribe(HEARTBEAT_SUBJECT).await, client.subscribe(GATEWAYS_SUBJECT).await) {
            (Ok(hosts), Ok(gateways)) => break (hosts, gateways),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot listen to the farm's heartbeats; retrying");
                tokio::time::sleep(FETCH_WAIT).await;
            }
        }
    };
    let guard = ReplayGuard::default();
    let mut beats = futures_util::stream::select(hosts, gateways);
    while let Some(message) = beats.next().await {
        let signed = ears
            .verifier
            .verify(message.subject.as_str(), message.headers.as_ref(), &message.payload)
            .and_then(|signed| guard.check(&signed, now_ms()).map(|()| signed));
        if let Err(why) = signed {
            ears.counters.rejected.fetch_add(1, Ordering::Relaxed);
            match KeyMismatch::of(&why) {
                Some(mismatch) => ears.counters.key_trouble.noticed(mismatch, heartbeat_sender(&message)),
                None => tracing::debug!(subject = %message.subject, %why, "ignoring a heartbeat"),
            }
            continue;
        }
        if ears.verifier.signed_without_key(message.headers.as_ref()) {
            ears.counters.key_trouble.noticed(KeyMismatch::OnlySenderHasOne, heartbeat_sender(&message));
        }
        let now = Instant::now();
        if message.subject.as_str() == GATEWAYS_SUBJECT {
            if let Ok(beat) = serde_json::from_slice::<GatewayBeat>(&message.payload) {
                if ears.peers.gateway_heard(&beat.gateway, now) {
                    tracing::info!(gateway = %beat.gateway, "a gateway joined the farm");
                    ears.beat_now.notify_one();
                }
            }
        } else if let Ok(beat) = serde_json::from_slice::<Heartbeat>(&message.payload) {
            ears.peers.host_heard(&beat.name, &beat.holding, now);
        }
    }
}
