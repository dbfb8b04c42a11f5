//! # ThreadCenter
//!
//! A thread-and-process compute farm and its benchmark client, compatible on
//! the wire with the original Python ThreadCenter and with IdentyFire.
//!
//! ## Which side am I on?
//!
//! The folders say which process a line of code runs in. Every module is
//! listed once:
//!
//! | module | runs in | what it owns |
//! |---|---|---|
//! | [`frame`], [`protocol`], [`error`], [`units`], [`machine`] | **all** (shared) | bytes ↔ frames; typed requests, replies and error codes (both dialects); the library's error; durations and sizes; what this machine holds (every count a user types is checked against it) |
//! | [`transport`], [`tls`] | **all** (shared) | one connection's bytes, plain or TLS; PEM files, CAs and the server-side TLS configurations |
//! | [`work`] | **worker processes**, and the pool's threads | what runs a job and nothing else: [`work::job`], [`work::compute`], [`work::model`], [`work::gil`], and the inside of a worker process ([`work::worker_process`]) |
//! | [`runtime`] | **`tc-server` and `tc-worker`** | what both run around their jobs: the worker pool ([`runtime::pool`]), the operator's HTTP endpoint ([`runtime::http`]), the OpenMetrics writer ([`runtime::metrics`]) |
//! | [`server`] | **`tc-server`** | listener, connections, commands, a job's life, the gateway, stats, the server's metrics and dashboard |
//! | [`remote`] | **`tc-server --nats` and `tc-worker`** | the farm past one machine on NATS JetStream: subjects, messages, signing, connecting, the bridge thread to async-nats |
//! | `host` | **`tc-worker`** (feature `nats`) | pulling jobs by free slots, results, heartbeats; it uses nothing of [`server`] |
//! | [`client`] | **`tc-client`** | a connection, the shell, the load generator, reports, sweeps, charts |
//! | [`cli`] | **each binary's start** | the binaries' flags; `bin/` parses them and calls one function |
//!
//! `scripts/check_layers.py` checks that no side reaches up or across.
//!
//! ## The server, file by file
//!
//! See [`server`]'s own map; the modules a newcomer meets first:
//!
//! | module | owns |
//! |---|---|
//! | [`server::listener`], [`server::reader`] | the acceptor thread (one connection, one reader thread); a connection's read loop and the gates (auth, rate limit, drain) |
//! | [`server::cmd`] | the commands, one file per family (compute, predict, models, mutex, auth, stats/health) |
//! | [`server::session`], [`server::replies`] | answering a command inline; every path a reply takes to its socket ([`server::replies::ReplySink`]), with flow control |
//! | [`server::jobs`] | a job's life: submit or answer from the cache ([`server::jobs::Jobs`]), the id→connection [`server::jobs::registry`], the [`server::jobs::completer`] that routes each reply back |
//! | [`runtime::pool`] | the workers: the [`runtime::pool::board`], [`runtime::pool::threads`], [`runtime::pool::processes`] (one child started and reaped by `runtime::pool::child`), restart budget |
//!
//! ## The path of one `compute` request
//!
//! 1. [`server::listener`] accepts the socket and starts a reader thread
//!    ([`server::reader`]), which reads a [`frame`] ([`server::connection`])
//!    and parses it with [`protocol::parse`] (its arguments read by the
//!    command table's reader, [`protocol::request::args`]).
//! 2. After the gates, [`server::cmd::compute`] builds the job's one record
//!    of who asked ([`server::jobs::PendingReply`]: connection, client id,
//!    reply sink) and hands it to [`server::jobs::Jobs::submit_or_cached`]:
//!    a cache hit is answered at once; otherwise the record goes into the
//!    [`server::jobs::registry`] — the id→connection map behind a `Mutex` —
//!    and the job ([`runtime::pool::QueuedJob`]) into the bounded queue.
//! 3. A [`runtime::pool`] worker (a thread, or the driver of a worker
//!    process) takes it and runs [`work::job::execute`] — the same code in
//!    both modes — and reports a [`runtime::pool::JobReport`].
//! 4. **Replies are routed back** by [`server::jobs::completer`]: it takes
//!    the job's record out of the registry (so each job is answered at most
//!    once), encodes the reply in the asker's dialect
//!    ([`protocol::reply::encode_job_reply`]) and sends it on that
//!    connection's [`server::replies::ReplySink`].

#![deny(unsafe_code)]
#![warn(missing_docs)]
// The documentation is built with every private item (see .cargo/config.toml):
// links from the module map to crate-private modules are meant, and resolve.
#![allow(rustdoc::private_intra_doc_links)]

pub mod cli;
pub mod client;
pub mod error;
pub mod frame;
#[cfg(feature = "nats")]
pub(crate) mod host;
pub(crate) mod machine;
pub mod protocol;
pub(crate) mod remote;
pub(crate) mod runtime;
pub(crate) mod server;
pub(crate) mod tls;
pub(crate) mod transport;
pub(crate) mod units;
pub mod work;

pub use error::{Error, Result};
