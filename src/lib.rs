//! # ThreadCenter
//!
//! A thread-and-process compute farm and its benchmark client, compatible on
//! the wire with the original Python ThreadCenter and with IdentyFire.
//!
//! ## Which side am I on?
//!
//! The folders say which process a line of code runs in:
//!
//! | folder | side | what it owns |
//! |---|---|---|
//! | [`frame`], [`protocol`], [`error`], [`units`], [`machine`] | **shared** | bytes ↔ frames; typed requests, replies and error codes (both dialects); the library's error; durations and sizes; what this machine holds (every count a user types is checked against it) |
//! | [`work`] | **worker** | what runs a job and nothing else: [`work::job`], [`work::compute`], [`work::model`], [`work::gil`], and the inside of a worker process ([`work::worker_process`]). This is all a worker process — or a remote worker host — needs. |
//! | [`server`] | **server** | everything inside `tc-server`: listener, connections, commands, a job's life, the worker pool, stats, metrics |
//! | [`client`] | **client** | everything inside `tc-client`: a connection, the shell, the load generator, reports, sweeps, charts |
//! | [`remote`] | **gateways and worker hosts** | the farm past one machine on NATS JetStream: subjects, messages, connecting, the bridge thread to async-nats |
//! | [`host`] | **worker host** | everything inside `tc-worker`: pulling jobs by free slots, acknowledging, heartbeats; it runs the server's [`runtime::pool`] |
//! | [`cli`] | **command line** | the binaries' flags; `bin/` parses them and calls one function |
//!
//! ## The server, file by file
//!
//! | module | owns |
//! |---|---|
//! | [`server::listener`] | the acceptor thread: one connection, one reader thread |
//! | [`server::reader`] | a connection's read loop and the gates (auth, rate limit, drain) |
//! | [`server::session`] | what a command sees of its connection: the one way to answer |
//! | [`server::cmd`] | the commands, one file per family (compute, predict, models, mutex, auth, stats/health) |
//! | [`server::connection`], [`server::replies`] | one client socket: reading frames; and every path a reply takes to it ([`server::replies::ReplySink`]), with flow control |
//! | [`server::jobs`] | a job's life: submit or answer from the cache ([`server::jobs::Jobs`]), the id→connection [`server::jobs::registry`], the [`server::jobs::completer`] that routes each reply back |
//! | [`runtime::pool`] | the workers: the [`runtime::pool::board`], [`runtime::pool::threads`], [`runtime::pool::processes`], restart budget |
//! | [`server::config`], [`server::stats`], [`server::lock`], [`server::metrics`] | settings; counters and histograms; the accelerator mutex; `/metrics` |
//! | [`server::gateway`] | `--nats`: forwarding jobs to worker hosts, taking their results back |
//!
//! ## The path of one `compute` request
//!
//! 1. [`server::listener`] accepts the socket and starts a reader thread
//!    ([`server::reader`]), which reads a [`frame`] and parses it with
//!    [`protocol::parse`].
//! 2. After the gates, [`server::cmd::compute`] hands the job to
//!    [`server::jobs::Jobs::submit_or_cached`]: a cache hit is answered at
//!    once; otherwise the job's *who asked* (connection, client id, reply
//!    sink) goes into the [`server::jobs::registry`] — the id→connection
//!    map behind a `Mutex` — and the job into the bounded queue.
//! 3. A [`runtime::pool`] worker (a thread, or the driver of a worker
//!    process) takes it and runs [`work::job::execute`] — the same code in
//!    both modes.
//! 4. **Replies are routed back** by [`server::jobs::completer`]: it takes
//!    the job's entry out of the registry (so each job is answered at most
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
