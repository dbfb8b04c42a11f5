//! The gateway: `tc-server --nats URL` sends jobs to worker hosts over NATS
//! JetStream, instead of (`--workers 0`) or as well as its local pool.
//!
//! The TCP front door, the protocol, the id→connection registry and the
//! completer are the server's own; only *who runs the job* changes. A
//! **forwarder** thread takes jobs from the same queues as the local
//! workers and publishes them, signed, to the jobs stream; a **results**
//! task takes the hosts' results (requests on this gateway's own subject,
//! each confirmed with a signed receipt) and hands them to the completer,
//! which routes each reply to the connection that asked — and drops a
//! second result for the same job (at-least-once delivery, exactly one
//! reply).
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
//! idle, the forwarder while this gateway has fewer messages out than twice
//! the live hosts' workers (from their heartbeats: one running and one
//! waiting per slot; a message is one job, or a parcel of short ones). So
//! only a slot's worth of work waits in the stream while hosts are busy,
//! and local workers are never starved.
//!
//! | file | owns |
//! |---|---|
//! | this one | start and a bounded stop; the deadline and the "no host" refusal |
//! | [`forward`] | the forwarder thread and the record of every job out |
//! | [`results`] | the results task: check, route once, count duplicates |
//! | [`heartbeats`] | the hosts' beats in, the gateway's beat out, hosts joining and lost |
//! | [`janitor`] | removing acknowledged jobs (and its results) a broker crash left in the streams |
//!
//! What `stats`, `/metrics` and `/readyz` read of a gateway — its hosts, its
//! link, its counters — is [`crate::server::gateway_status`], built without
//! the `nats` feature too, so a server's reports are one type.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use crossbeam_channel::Sender;

use crate::error::{Error, Result};
use crate::protocol::{ErrorCode, ReplyError};
use crate::remote::bridge::Bridge;
use crate::remote::connect::{connect, NatsOptions, Role};
use crate::remote::envelope::{self, KeyTrouble, RefusalLog, Signer, Verifier};
use crate::remote::{self as nats, ACK_WAIT, HEARTBEAT_SUBJECT};
use crate::runtime::pool::{JobOutcomes, JobQueues};
use crate::server::jobs::Completer;
use crate::work::job::JobId;
use forward::{Forwarded, Forwarder, Outstanding};

mod forward;
mod heartbeats;
mod janitor;
mod results;

use crate::server::gateway_status::{GatewayCounters, GatewayStatus, HostTable};

/// On a stop, the longest the gateway waits for NATS (answering what it
/// still holds is local and immediate): a stop after the server's drain
/// ends within this, whatever NATS does.
pub(crate) const STOP_NATS_WAIT: Duration = Duration::from_secs(2);
/// How long jobs wait for a lost NATS link to come back before they are
/// refused `BUSY` (naming the link): a broker restart of a few seconds
/// costs no client an error, a longer outage does not hold them for ever.
pub(crate) const OUTAGE_PATIENCE: Duration = Duration::from_secs(15);
/// The longest one call to JetStream's API (delete, purge, info) may take.
const API_WAIT: Duration = Duration::from_secs(2);

/// The deadline of a job with `max_attempts` attempts of at most
/// `job_timeout` each: a wait in the stream of one job, then each attempt's
/// run plus the ack wait that notices a dead host.
pub(crate) fn job_deadline(job_timeout: Duration, max_attempts: u32) -> Duration {
    (job_timeout + ACK_WAIT) * (max_attempts + 1)
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
    /// `--nats-max-parcel`: the most jobs packed into one message.
    pub(crate) max_parcel: usize,
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
        // 1. The key, then the link to NATS and the streams.
        let key = envelope::load_farm_key(options.farm_key.as_deref())?;
        let signer = Arc::new(Signer::new(key.clone()));
        let verifier = Verifier::new(key);
        let Attached { bridge, id, client, link, js, results, heartbeats } = attach(options, &settings)?;

        let status = Arc::new(GatewayStatus {
            hosts: HostTable::default(),
            link,
            counters: GatewayCounters::default(),
            id: id.clone(),
            started: Instant::now(),
            farm_key: verifier.has_key(),
            key_trouble: KeyTrouble::default(),
            refusals: RefusalLog::default(),
        });
        let forwarded = Arc::new(Forwarded::default());
        // 3. The listeners: results, hosts' heartbeats, our own heartbeat,
        //    the janitor. One pending wake-up is enough for the forwarder:
        //    it re-counts on waking.
        let (room_tx, room_rx) = crossbeam_channel::bounded::<()>(1);
        let tasks = vec![
            bridge.spawn(results::take_results(
                results,
                results::ResultsDesk {
                    client: client.clone(),
                    completer: completer.clone(),
                    verifier: verifier.clone(),
                    signer: Arc::clone(&signer),
                },
                Arc::clone(&forwarded),
                Arc::clone(&status),
                room_tx,
            )),
            bridge.spawn(heartbeats::listen_to_hosts(heartbeats, verifier, Arc::clone(&status))),
            bridge.spawn(heartbeats::beat(
                client.clone(),
                id.clone(),
                Arc::clone(&signer),
                Arc::clone(&status),
            )),
            bridge.spawn(janitor::janitor(js.clone(), Arc::clone(&status))),
        ];

        // 4. The forwarder thread: jobs from the queues into the stream.
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
    /// still out get their one reply now (`SHUTTING_DOWN`). Whatever NATS does, this returns within
    /// [`STOP_NATS_WAIT`] after the forwarder has stopped.
    pub(crate) fn stop(mut self) {
        drop(self.stop.take());
        if let Some(forwarder) = self.forwarder.take() {
            let _ = forwarder.join();
        }
        let left: Vec<(JobId, Outstanding)> = self.forwarded.take_all();
        if !left.is_empty() {
            tracing::warn!(
                jobs = left.len(),
                "stopping with jobs still out on worker hosts: answering them SHUTTING_DOWN"
            );
        }
        let mut sequences = Vec::new();
        for (job, outstanding) in left {
            sequences.extend(outstanding.stream_seq);
            let error = ReplyError::new(
                ErrorCode::ShuttingDown,
                "the gateway stopped before a worker host answered this job; send it again",
            );
            self.completer.finish(outstanding.answered_here(job, error));
        }
        sequences.sort_unstable();
        sequences.dedup();
        let client = self.client.clone();
        let tidy = async move {
            // Created inside the runtime: the context starts a task of its own.
            let js = jetstream::new(client.clone());
            // The answered jobs need not run.
            if let Ok(jobs) = js.get_stream(nats::STREAM).await {
                for seq in sequences {
                    let _ = jobs.delete_message(seq).await;
                }
            }
            let _ = client.flush().await;
        };
        let tidied = self.bridge.run(async { tokio::time::timeout(STOP_NATS_WAIT, tidy).await.is_ok() });
        if !tidied {
            tracing::warn!(
                "NATS did not answer in time while stopping; the farm cleans up after itself (job deadlines)"
            );
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

/// A gateway's link to NATS, made sure of before anything is started.
struct Attached {
    bridge: Arc<Bridge>,
    /// This gateway's id: its results subject and consumer are named by it.
    id: String,
    client: async_nats::Client,
    link: Arc<crate::remote::connect::LinkState>,
    js: jetstream::Context,
    /// This gateway's results subject, subscribed before any job is sent.
    results: async_nats::Subscriber,
    heartbeats: async_nats::Subscriber,
}

/// Connects to NATS (on a bridge runtime of its own), makes sure the jobs
/// stream exists, and subscribes to this gateway's results and the hosts'
/// heartbeats.
fn attach(options: &NatsOptions, settings: &GatewaySettings) -> Result<Attached> {
    let bridge = Arc::new(Bridge::start("nats-bridge")?);
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let (client, link) = bridge.run(connect(options, &format!("tc-server gateway {id}"), Role::Gateway))?;
    let js = bridge.run(link.set_up(async {
        // Created inside the runtime: the context starts a task of its own.
        let js = jetstream::new(client.clone());
        nats::jobs_stream(&js, Some(settings.max_jobs)).await?;
        Ok::<_, Error>(js)
    }))?;
    let results_subject = nats::results_subject(&id);
    let results = bridge
        .run(client.subscribe(results_subject.clone()))
        .map_err(|e| Error::Remote(format!("cannot subscribe to {results_subject}: {e}")))?;
    let heartbeats = bridge
        .run(client.subscribe(HEARTBEAT_SUBJECT))
        .map_err(|e| Error::Remote(format!("cannot subscribe to {HEARTBEAT_SUBJECT}: {e}")))?;
    Ok(Attached { bridge, id, client, link, js, results, heartbeats })
}
