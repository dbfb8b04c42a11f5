//! **Shared by gateways and worker hosts** — the farm past one machine, on
//! NATS JetStream (an existing distributed engine, not a protocol of ours).
//!
//! ```text
//!  gateway (tc-server --nats)                       worker host (tc-worker)
//!  ──────────────────────────                       ───────────────────────
//!  job queue ─▶ forwarder ─publish─▶ stream TC_JOBS ─▶ consumer "tc-workers"
//!                (signed; Nats-Msg-Id   (work queue,      │ pulled only as many
//!                 = gateway-job)         DiscardNew)      ▼ as the host has free slots
//!                                                      local pool (threads/processes)
//!  completer ◀─ consumer ◀── stream TC_RESULTS ◀── publish the result (signed), then ack the job
//!  (drops duplicates) "tc-gateway-<id>" (tc.results.<gateway>)
//!  tc.gateways ── gateway heartbeat ─▶ hosts     tc.hosts ◀── host heartbeat every second
//! ```
//!
//! | file | owns |
//! |---|---|
//! | [`wire`] | the messages: a job, its result, the heartbeats |
//! | [`envelope`] | the farm key: signing and checking every message |
//! | [`connect`] | connecting to NATS with the engine's own options |
//! | [`bridge`] | the one thread that runs async-nats's tokio runtime |
//! | this file | names (streams, subjects, consumers), their settings, and creating them |
//!
//! Delivery is at least once, and both directions are stored by JetStream,
//! so a broker restart loses neither a job nor a result: a host acknowledges
//! a job only after JetStream has stored its result. A host that dies, hangs
//! or is cut off stops acknowledging, and after [`ACK_WAIT`] the job is
//! delivered to another host. A long job does not look dead: its host sends
//! "in progress" every third of `ACK_WAIT`. The gateway answers each job
//! once — a second result for the same job finds nothing in its registry and
//! is counted as a duplicate — and answers it itself if no result comes by
//! the job's deadline. docs/WORKER_HOSTS.md walks through every case.

pub(crate) mod bridge;
pub(crate) mod connect;
pub(crate) mod envelope;
pub(crate) mod limits;
pub(crate) mod wire;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::error::{Error, Result};

/// The JetStream stream every gateway publishes jobs to.
pub(crate) const STREAM: &str = "TC_JOBS";
/// The subject of that stream.
pub(crate) const JOBS_SUBJECT: &str = "tc.jobs";
/// The durable pull consumer every worker host pulls from (one shared
/// consumer: each job goes to exactly one host at a time).
pub(crate) const CONSUMER: &str = "tc-workers";
/// Results go to `tc.results.<gateway id>`, one subject per gateway.
pub(crate) const RESULTS_PREFIX: &str = "tc.results";
/// The JetStream stream results travel in, so a result survives a broker
/// restart as the job did.
pub(crate) const RESULTS_STREAM: &str = "TC_RESULTS";
/// Its subjects: `tc.results.<gateway id>`.
const RESULTS_SUBJECTS: &str = "tc.results.*";
/// A result not taken by its gateway within this is dropped (its gateway
/// is gone: it had answered the job itself by its deadline, or died), and
/// so is a dead gateway's consumer: nothing stays in the stream for ever.
pub(crate) const RESULTS_MAX_AGE: Duration = Duration::from_secs(600);
/// The most results the stream holds (oldest dropped first).
const RESULTS_MAX_MESSAGES: i64 = 100_000;
/// Gateways announce themselves here every [`HEARTBEAT_EVERY`], so hosts can
/// skip the jobs of a gateway that is gone.
pub(crate) const GATEWAYS_SUBJECT: &str = "tc.gateways";
/// Hosts announce themselves here every [`HEARTBEAT_EVERY`].
pub(crate) const HEARTBEAT_SUBJECT: &str = "tc.hosts";
/// How often a host sends its heartbeat.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// A host not heard from for this long is taken for gone.
pub(crate) const HOST_TIMEOUT: Duration = Duration::from_secs(3);
/// A delivered job not acknowledged (done, or "in progress") within this is
/// delivered again, to another host: the time to notice a dead host. It does
/// not grow with the job's length (long jobs send "in progress").
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(5);
/// The most jobs the stream holds by default (a gateway's `--nats-max-jobs`
/// sets it); past this a publish is refused and the client gets `BUSY`
/// (DiscardPolicy::New), so nothing buffers without bound. A job counts
/// from its publish to its host's acknowledgement, running ones included.
pub(crate) const STREAM_MAX_MESSAGES: i64 = 10_000;
/// The consumer's own redelivery limit: none (-1). Each job carries its
/// gateway's limit (`1 + --retries`), and the first host that receives it
/// past that limit answers `WORKER_CRASHED` and acknowledges it — so no job
/// can stay in the stream for ever, and no max-deliveries advisory (which
/// would leave the message behind) is needed.
pub(crate) const CONSUMER_MAX_DELIVER: i64 = -1;

/// The jobs stream's settings, holding at most `max_jobs`.
fn stream_config(max_jobs: i64) -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        subjects: vec![JOBS_SUBJECT.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        max_messages: max_jobs,
        ..Default::default()
    }
}

/// `get_or_create_stream`, with the race of two processes creating the
/// stream at once settled: both see no stream, both create it, and the
/// second's create fails (nats-server 2.9 says "subjects overlap") — then
/// the stream it lost to is the one to use.
async fn open_stream(js: &jetstream::Context, config: stream::Config) -> Result<stream::Stream, String> {
    let name = config.name.clone();
    match js.get_or_create_stream(config).await {
        Ok(stream) => Ok(stream),
        Err(lost) => js.get_stream(&name).await.map_err(|_| lost.to_string()),
    }
}

/// The likely cause of a JetStream call that fails at start, said after it.
pub(crate) const NO_JETSTREAM_HINT: &str = "; is nats-server running with JetStream (-js)?";

/// The jobs stream, created if it does not exist yet (by whichever gateway
/// or host comes first). A gateway passes its `--nats-max-jobs` as
/// `max_jobs` and sets the bound of an existing stream to it; a host passes
/// `None` and leaves an existing stream as it is.
///
/// # Errors
/// NATS has no JetStream (start nats-server with `-js`), or refuses the
/// settings.
pub(crate) async fn jobs_stream(js: &jetstream::Context, max_jobs: Option<i64>) -> Result<stream::Stream> {
    let unusable = |e: &dyn std::fmt::Display| {
        Error::Remote(format!("cannot open the JetStream stream {STREAM} ({e}){NO_JETSTREAM_HINT}"))
    };
    let mut stream = open_stream(js, stream_config(max_jobs.unwrap_or(STREAM_MAX_MESSAGES)))
        .await
        .map_err(|e| unusable(&e))?;
    if let Some(max_jobs) = max_jobs {
        let current = stream.info().await.map_err(|e| unusable(&e))?.config.max_messages;
        if current != max_jobs {
            js.update_stream(stream_config(max_jobs)).await.map_err(|e| unusable(&e))?;
            tracing::info!(from = current, to = max_jobs, "set the jobs stream's bound (--nats-max-jobs)");
        }
    }
    Ok(stream)
}

/// The shared pull consumer of the worker hosts.
///
/// # Errors
/// As [`jobs_stream`].
pub(crate) async fn workers_consumer(stream: &stream::Stream) -> Result<consumer::PullConsumer> {
    stream
        .get_or_create_consumer(
            CONSUMER,
            consumer::pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_deliver: CONSUMER_MAX_DELIVER,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Error::Remote(format!("cannot open the JetStream consumer {CONSUMER}: {e}")))
}

/// The results stream, created if it does not exist yet.
///
/// # Errors
/// As [`jobs_stream`].
pub(crate) async fn results_stream(js: &jetstream::Context) -> Result<stream::Stream> {
    open_stream(
        js,
        stream::Config {
            name: RESULTS_STREAM.into(),
            subjects: vec![RESULTS_SUBJECTS.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::Old,
            max_messages: RESULTS_MAX_MESSAGES,
            max_age: RESULTS_MAX_AGE,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| {
        Error::Remote(format!("cannot open the JetStream stream {RESULTS_STREAM} ({e}){NO_JETSTREAM_HINT}"))
    })
}

/// A gateway's own consumer of the results stream: only its subject, kept
/// by the server across restarts, and removed by the server once the
/// gateway has been gone for [`RESULTS_MAX_AGE`].
///
/// # Errors
/// As [`jobs_stream`].
pub(crate) async fn gateway_results_consumer(
    stream: &stream::Stream,
    gateway: &str,
) -> Result<consumer::PullConsumer> {
    let name = format!("tc-gateway-{gateway}");
    stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: results_subject(gateway),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                inactive_threshold: RESULTS_MAX_AGE,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Error::Remote(format!("cannot open the JetStream consumer {name}: {e}")))
}

/// The subject a gateway's results come back on.
pub(crate) fn results_subject(gateway: &str) -> String {
    format!("{RESULTS_PREFIX}.{gateway}")
}
