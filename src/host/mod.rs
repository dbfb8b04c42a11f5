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
//! A host pulls **only as many messages as it has free slots**: a job it
//! holds is one no other host can run, so it never prefetches. A message is
//! one job, or a parcel of short `compute` jobs a gateway packed together
//! ([`held`] says how a parcel is settled and answered). While a job runs the
//! host tells JetStream it is still in progress, so a long job is not taken
//! for a lost one; if the host dies, hangs or is cut off, those signals stop
//! and the job goes to another host after [`crate::remote::ACK_WAIT`].
//!
//! | file | owns |
//! |---|---|
//! | this file | [`HostConfig`] and [`run`]: the start-up and the drain, step by step |
//! | [`held`] | the jobs the host holds, by local id |
//! | [`fetch`] | pulling by free slots, and the checks a delivered job passes |
//! | [`results`] | storing each result, then acknowledging its job |
//! | [`mod@keep_alive`] | "in progress" for held jobs, and the host's heartbeat |
//! | [`listen`] | hearing the gateways and the other hosts ([`peers`]) |
//! | [`admission`] | the host's own limits (`--max-n`, `--allow-chaos`, `--models-dir`) |
//! | [`outcomes`] | the pool's outcomes here: results and hand-backs to the reporter |
//! | [`pages`], [`service`] | `--metrics-addr`; NATS's services protocol (`nats micro`) |
//!
//! Every job carries the gateway's attempt limit (`1 + --retries`, 1 for an
//! injected fault): a job delivered more often than that is answered
//! `WORKER_CRASHED` without running again, so a job that kills its workers
//! cannot go round the hosts for ever.

pub(crate) mod admission;
pub(crate) mod fetch;
pub(crate) mod held;
pub(crate) mod keep_alive;
pub(crate) mod listen;
pub(crate) mod outcomes;
pub(crate) mod pages;
pub(crate) mod peers;
pub(crate) mod results;
pub(crate) mod service;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use crossbeam_channel::Receiver;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::remote::bridge::Bridge;
use crate::remote::connect::{connect, LinkState, NatsOptions, Role};
use crate::remote::envelope::{self, JobReplays, Signer, Verifier};
use crate::remote::wire::Heartbeat;
use crate::remote::{self as nats, HEARTBEAT_SUBJECT};
use crate::runtime::http::{HttpLimits, MetricsEndpoint};
use crate::runtime::pool::{JobQueues, PoolConfig, QueuedJob, WorkerBoard, WorkerPool};
pub(crate) use admission::HostLimits;
use fetch::{fetch_jobs, Fetcher, JobChecks};
use held::{HeldJobs, Parcel};
use keep_alive::{heartbeat, keep_alive};
use listen::{listen_to_farm, FarmEars};
use outcomes::{HostEvent, HostOutcomes};
use pages::HostCounters;
use peers::Peers;
use results::{report_results, Answerer};

/// On a stop, the longest the last messages (hand-backs) may take to go
/// out: a stop ends within `--drain-timeout` plus this, whatever NATS does.
pub(crate) const STOP_FLUSH_WAIT: Duration = Duration::from_secs(2);
/// Recent jobs remembered to spot one published twice (a replay).
const JOB_REPLAYS_REMEMBERED: usize = 100_000;
/// How long the pool's workers get to finish at the very end.
const POOL_STOP_WAIT: Duration = Duration::from_secs(5);

/// Everything that shapes a worker host: plain values, converted from the
/// flags without touching the machine (see [`MetricsSetup::open`] for the
/// one step that binds and reads files, before anything starts).
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
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (`--metrics-addr`).
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// The endpoint's certificate (`--metrics-tls-cert`, `--metrics-tls-key`).
    pub(crate) metrics_tls: Option<crate::tls::TlsFiles>,
    /// The metrics endpoint's cap, timeout and token.
    pub(crate) metrics_limits: HttpLimits,
}

/// The metrics endpoint, ready to serve: its address bound and its
/// certificate read, so a busy port or a bad file stops the host before it
/// connects to NATS or starts a worker.
#[derive(Debug)]
pub(crate) struct MetricsSetup {
    listener: TcpListener,
    limits: HttpLimits,
}

impl MetricsSetup {
    /// Binds `--metrics-addr` and reads its certificate; `None` without
    /// `--metrics-addr`.
    ///
    /// # Errors
    /// [`Error::Config`]: the address cannot be bound, or a certificate file
    /// cannot be used (the message names it).
    pub(crate) fn open(config: &HostConfig) -> Result<Option<MetricsSetup>> {
        let Some(addr) = config.metrics_addr else { return Ok(None) };
        let tls = config.metrics_tls.as_ref().map(crate::tls::server_config).transpose()?;
        let listener = TcpListener::bind(addr)
            .map_err(|e| Error::Config(format!("cannot serve metrics on {addr}: {e}")))?;
        Ok(Some(MetricsSetup { listener, limits: HttpLimits { tls, ..config.metrics_limits.clone() } }))
    }

    /// Serves the host's pages, and says where on stdout.
    fn serve(self, state: &Arc<pages::HostState>) -> Result<MetricsEndpoint> {
        let scheme = if self.limits.tls.is_some() { "https" } else { "http" };
        let pages = Arc::new(pages::HostPages::new(Arc::clone(state)));
        let endpoint = MetricsEndpoint::serve(self.listener, pages, self.limits)?;
        // Scripts and tests read this line to find the port. Not println!,
        // which panics when nobody reads stdout any more.
        let line = format!("metrics on {scheme}://{}/metrics\n", endpoint.local_addr());
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), line.as_bytes());
        Ok(endpoint)
    }
}

/// Runs a worker host until `stop` fires (SIGTERM), then drains: it stops
/// pulling, lets held jobs finish for up to `drain_timeout`, and hands back
/// whatever is left (a "not now" to JetStream, which redelivers it at once
/// to another host).
///
/// # Errors
/// NATS cannot be reached or has no JetStream; the pool cannot start.
pub(crate) fn run(config: HostConfig, metrics: Option<MetricsSetup>, stop: Receiver<()>) -> Result<()> {
    let host = RunningHost::start(config, metrics)?;
    // 5. Wait for SIGTERM (the sender is dropped or sends).
    let _ = stop.recv();
    host.drain();
    Ok(())
}

/// The link to the farm: NATS connected, the streams and the workers'
/// consumer there, and the farm key's two halves.
struct FarmLink {
    bridge: Bridge,
    client: async_nats::Client,
    link: Arc<LinkState>,
    js: jetstream::Context,
    consumer: PullConsumer,
    signer: Arc<Signer>,
    verifier: Verifier,
}

impl FarmLink {
    /// The farm key, then NATS (the streams and the consumer created if this
    /// is the farm's first process).
    fn connect(config: &HostConfig) -> Result<FarmLink> {
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
            nats::workers_consumer(&stream).await.map(|consumer| (js, consumer))
        }))?;
        Ok(FarmLink { bridge, client, link, js, consumer, signer, verifier })
    }
}

/// The tasks a host runs on the bridge, each stopped at its step of the drain.
struct HostTasks {
    /// Pulls jobs by free slots.
    fetcher: JoinHandle<()>,
    /// Hands each parcel's results to its gateway, then acknowledges it.
    reporter: JoinHandle<()>,
    /// What the reporter sends through: the drain waits for its sends.
    answerer: Arc<Answerer>,
    /// Hears the gateways and the other hosts.
    listener: JoinHandle<()>,
    /// Answers NATS's services protocol (`nats micro`).
    service: JoinHandle<()>,
    /// "In progress" for held jobs, and the heartbeat.
    keeper: JoinHandle<()>,
}

/// A started host: everything its drain stops, in order.
struct RunningHost {
    config: HostConfig,
    farm: FarmLink,
    /// The jobs held, shared with the fetcher, the reporter and the keeper.
    held: Arc<HeldJobs>,
    board: Arc<WorkerBoard>,
    /// What the pages show; the drain sets its `draining`.
    state: Arc<pages::HostState>,
    /// Cleared by the drain: the fetcher stops asking for jobs.
    pulling: Arc<AtomicBool>,
    pool: WorkerPool,
    endpoint: Option<MetricsEndpoint>,
    tasks: HostTasks,
}

impl RunningHost {
    fn start(config: HostConfig, metrics: Option<MetricsSetup>) -> Result<RunningHost> {
        // 1. The farm key, then NATS.
        let farm = FarmLink::connect(&config)?;

        // 2. The pool, fed by the fetcher through a queue with room for a
        //    full parcel per slot (a host takes one message per free slot);
        //    what the pool reports goes to the reporter task.
        let slots = config.pool.workers;
        let (jobs_tx, jobs_rx) =
            crossbeam_channel::bounded::<QueuedJob>(slots.saturating_mul(nats::limits::MAX_PARCEL_JOBS));
        let (retries_tx, retries_rx) = crossbeam_channel::unbounded::<QueuedJob>();
        let (events_tx, events_rx) = mpsc::unbounded_channel::<HostEvent>();
        let held = Arc::new(HeldJobs::default());
        let outcomes = HostOutcomes::new(events_tx, retries_tx, {
            let held = Arc::clone(&held);
            move |id| held.contains(id)
        });
        let board = Arc::new(WorkerBoard::new(slots));
        let pool = WorkerPool::start(
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

        // 3. What the host's pages show, and the endpoint that shows them.
        let counters = Arc::new(HostCounters::default());
        let state = Arc::new(pages::HostState {
            name: config.name.clone(),
            mode: config.pool.mode.as_str(),
            board: Arc::clone(&board),
            held: Arc::clone(&held),
            link: Arc::clone(&farm.link),
            started: Instant::now(),
            draining: AtomicBool::new(false),
            counters: Arc::clone(&counters),
            farm_key: farm.verifier.has_key(),
        });
        let endpoint = metrics.map(|metrics| metrics.serve(&state)).transpose()?;

        // 4. The tasks on the bridge.
        let pulling = Arc::new(AtomicBool::new(true));
        let tasks = spawn_tasks(&farm, &config, (&held, &board, &counters, &pulling), jobs_tx, events_rx)?;
        Ok(RunningHost { config, farm, held, board, state, pulling, pool, endpoint, tasks })
    }

    /// The drain, in order.
    fn drain(mut self) {
        let RunningHost { config, farm, held, board, state, pulling, tasks, .. } = &self;
        // 6. No new jobs: the fetcher stops asking, and hands back at once
        //    anything a request still out brings.
        tracing::info!(held = held.len(), "draining: no new jobs; letting held jobs finish");
        // `SeqCst` for once-per-run flags (cost irrelevant, reasoning simplest).
        pulling.store(false, Ordering::SeqCst);
        state.draining.store(true, Ordering::SeqCst);
        // 7. Held jobs finish and their results reach their gateways, up to
        //    --drain-timeout; the keeper (and, for results waiting on their
        //    gateway, the answerer) still tells JetStream they are in
        //    progress, so none is redelivered meanwhile.
        let deadline = Instant::now() + config.drain_timeout;
        // Poll: held jobs leave the map from the reporter task; a 10 ms poll
        // on a once-per-run drain is simpler than a notification on every job.
        while (held.len() > 0 || tasks.answerer.sending()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // 8. The keeper stops before the last heartbeat, so none comes after it.
        tasks.keeper.abort();
        // 9. What is left goes back to the stream, and the host says it
        //    leaves: bounded by STOP_FLUSH_WAIT whatever NATS does.
        hand_back_and_leave(
            &farm.bridge,
            &farm.client,
            &farm.signer,
            heartbeat(config, held, board),
            &held.parcels_held(),
        );
        // 10. The other tasks that talk to NATS.
        tasks.fetcher.abort();
        tasks.listener.abort();
        tasks.service.abort();
        // 11. The pool: a worker still running a handed-back job is stopped;
        //     its report, if any, reaches a reporter that no longer holds it.
        self.pool.stop(POOL_STOP_WAIT);
        // 12. The reporter, once nothing can report any more; then the endpoint.
        self.tasks.reporter.abort();
        if let Some(endpoint) = self.endpoint.take() {
            endpoint.stop();
        }
        tracing::info!("worker host stopped");
    }
}

/// Starts the host's tasks: fetching, reporting results, listening to the
/// farm, the NATS service, and keeping held jobs and the host alive.
fn spawn_tasks(
    farm: &FarmLink,
    config: &HostConfig,
    (held, board, counters, pulling): (
        &Arc<HeldJobs>,
        &Arc<WorkerBoard>,
        &Arc<HostCounters>,
        &Arc<AtomicBool>,
    ),
    jobs: crossbeam_channel::Sender<QueuedJob>,
    events: mpsc::UnboundedReceiver<HostEvent>,
) -> Result<HostTasks> {
    let FarmLink { bridge, client, link, js, consumer, signer, verifier } = farm;
    let (js, consumer, signer, verifier) =
        (js.clone(), consumer.clone(), Arc::clone(signer), verifier.clone());
    let peers = Arc::new(Peers::default());
    let answerer = Arc::new(Answerer {
        client: client.clone(),
        signer: Arc::clone(&signer),
        verifier: verifier.clone(),
        peers: Arc::clone(&peers),
        link: Arc::clone(link),
        name: config.name.clone(),
        sending: std::sync::atomic::AtomicUsize::new(0),
    });
    let fetcher = Fetcher {
        client: client.clone(),
        js,
        consumer,
        held: Arc::clone(held),
        jobs,
        slots: config.pool.workers,
        pulling: Arc::clone(pulling),
        answerer: Arc::clone(&answerer),
        checks: JobChecks {
            verifier: verifier.clone(),
            replays: JobReplays::new(JOB_REPLAYS_REMEMBERED),
            peers: Arc::clone(&peers),
            link: Arc::clone(link),
            counters: Arc::clone(counters),
            name: config.name.clone(),
            admission: admission::Admission::new(config.limits.clone()),
        },
    };
    let fetcher = bridge.spawn(fetch_jobs(fetcher));
    let reporter = bridge.spawn(report_results(Arc::clone(&answerer), Arc::clone(held), events));
    let status = Arc::new(Mutex::new(heartbeat(config, held, board)));
    // A gateway new to this host hears from it at once (see `listen_to_farm`).
    let beat_now = Arc::new(tokio::sync::Notify::new());
    let ears = FarmEars { verifier, peers, counters: Arc::clone(counters), beat_now: Arc::clone(&beat_now) };
    let listener = bridge.spawn(listen_to_farm(client.clone(), ears));
    // NATS's own tools see the host: `nats micro ls`, `$SRV.PING/INFO/STATS`.
    let service = bridge.run(service::register(client, config, Arc::clone(&status)))?;
    let keeper = bridge.spawn(keep_alive(
        client.clone(),
        Arc::clone(held),
        Arc::clone(board),
        config.clone(),
        status,
        (signer, beat_now),
    ));
    Ok(HostTasks { fetcher, reporter, answerer, listener, service, keeper })
}

/// Hands `left` back to JetStream (redelivered at once to another host) and
/// sends the last heartbeat, `leaving`, so gateways count this host gone now
/// rather than after its heartbeats have been missing for the host timeout.
/// Bounded by [`STOP_FLUSH_WAIT`]: with NATS away the hand-backs cannot go
/// out, and JetStream redelivers the jobs after the ack wait anyway.
fn hand_back_and_leave(
    bridge: &Bridge,
    client: &async_nats::Client,
    signer: &Signer,
    now: Heartbeat,
    left: &[Arc<Parcel>],
) {
    if !left.is_empty() {
        tracing::warn!(messages = left.len(), "drain timeout: handing held jobs back for another host");
    }
    let last = Heartbeat { leaving: true, busy: 0, holding: Vec::new(), ..now };
    let handed_back = bridge.run(async {
        tokio::time::timeout(STOP_FLUSH_WAIT, async {
            for parcel in left {
                let _ = parcel.message.ack_with(AckKind::Nak(None)).await;
            }
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
            messages = left.len(),
            "NATS did not take the hand-backs in time; JetStream gives the jobs to another host after its ack wait"
        );
    }
}
