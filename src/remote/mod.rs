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
//!  completer ◀── tc.answers.<gateway> ◀── request: the results (signed)
//!  (drops duplicates) ──── receipt (signed) ───▶ then ack the job
//!  tc.gateways ── gateway heartbeat ─▶ hosts     tc.hosts ◀── host heartbeat every second
//! ```
//!
//! | file | owns |
//! |---|---|
//! | [`wire`] | the messages: a job, its result, the heartbeats |
//! | [`envelope`] | the farm key: signing and checking every message |
//! | [`connect`] | connecting to NATS with the engine's own options |
//! | [`bridge`] | the one thread that runs async-nats's tokio runtime |
//! | `streams` | creating the streams and consumers |
//! | this file | names (streams, subjects, consumers) and their settings |
//!
//! Delivery is at least once. Jobs are stored by JetStream, so a broker
//! restart loses none; results travel over core NATS as a request to their
//! gateway, and a host acknowledges a job only after the gateway's receipt
//! — until then the job is still in the stream and the host tries again,
//! so a restart loses no result either. A host that dies, hangs
//! or is cut off stops acknowledging, and after [`ACK_WAIT`] the job is
//! delivered to another host. A long job does not look dead: its host sends
//! "in progress" every third of `ACK_WAIT`. The gateway answers each job
//! once — a second result for the same job finds nothing in its registry and
//! is counted as a duplicate — and answers it itself if no result comes by
//! the job's deadline. docs/WORKER_HOSTS.md walks through every case.
//!
//! **Built without the `nats` feature**, only what a server reports and
//! checks is here (the names, the limits, the messages, the key, the
//! link's state — `stats` and `/readyz` read them), and nothing makes one;
//! talking to NATS ([`bridge`], [`connect()`](connect::connect), the
//! streams) needs the feature.

// Without `nats` nothing builds a gateway or a host, so what only they use
// is unused there; it is compiled all the same, so stats stay one type.
#![cfg_attr(not(feature = "nats"), allow(dead_code))]

#[cfg(feature = "nats")]
pub(crate) mod bridge;
pub(crate) mod connect;
pub(crate) mod envelope;
pub(crate) mod limits;
#[cfg(feature = "nats")]
mod streams;
pub(crate) mod wire;

#[cfg(feature = "nats")]
pub(crate) use streams::{jobs_stream, workers_consumer};

use std::time::Duration;

/// The JetStream stream every gateway publishes jobs to.
pub(crate) const STREAM: &str = "TC_JOBS";
/// The subject of that stream.
pub(crate) const JOBS_SUBJECT: &str = "tc.jobs";
/// The durable pull consumer every worker host pulls from (one shared
/// consumer: each job goes to exactly one host at a time).
pub(crate) const CONSUMER: &str = "tc-workers";
/// Results go to `tc.answers.<gateway id>`, one subject per gateway, as
/// core NATS requests the gateway answers with a receipt. (Not
/// `tc.results`: a farm that ran an earlier version may still have the
/// `TC_RESULTS` stream, which would capture that subject and answer
/// instead of the gateway; `nats stream rm TC_RESULTS` removes it.)
pub(crate) const RESULTS_PREFIX: &str = "tc.answers";
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

/// The likely cause of a JetStream call that fails at start, said after it.
pub(crate) const NO_JETSTREAM_HINT: &str = "; is nats-server running with JetStream (-js)?";

/// What `--nats` says in a build without the `nats` feature.
pub(crate) const NEEDS_NATS_FEATURE: &str = "--nats: this tc-server was built without worker hosts, which \
    are the `nats` feature; build it with them: cargo build --release --features nats (or cargo run \
    --release --features nats --bin tc-server -- --nats URL ...)";

/// The subject a gateway's results come back on.
pub(crate) fn results_subject(gateway: &str) -> String {
    format!("{RESULTS_PREFIX}.{gateway}")
}
