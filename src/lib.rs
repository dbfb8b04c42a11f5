//! # ThreadCenter
//!
//! A thread-and-process compute farm and its client, compatible on the wire
//! with the original Python ThreadCenter.
//!
//! Where things live (each module owns one concept):
//!
//! | module | owns |
//! |---|---|
//! | [`frame`] | bytes ↔ frames (4-byte big-endian length + payload); no I/O of its own |
//! | [`protocol`] | typed requests and replies, error codes; no sockets |
//! | [`connection`] | one client socket: its reader side and its single writer thread |
//! | [`server`] | the acceptor, the per-connection handler, start-up and shutdown |
//! | [`dispatch`] | request → queued job, finished job → reply |
//! | [`registry`] | the id→connection map of jobs in flight, behind a `Mutex` |
//! | [`pool`] | worker threads and worker processes (ipc-channel), timeouts, restarts |
//! | [`cache`] | the optional LRU result cache |
//! | [`mod@bench`] | the load generator behind `tc-client` |
//! | [`report`] | benchmark reports: summary, CSV, `.hgrm`, interval log, JSON |
//! | [`job`], [`compute`] | the work itself, shared by both pool modes |
//! | [`model`] | the fire-detection network: weights file, image decoding, forward pass |
//! | [`lock`] | the accelerator mutex: FIFO queue, leases, fencing tokens |
//! | [`stats`] | counters and latency histograms behind `stats` |
//! | [`client`] | a blocking client connection and the one-shot `call` |
//! | [`cli`] | flags of the binaries and the functions they call |
//!
//! The path of one `compute` request: the [`server`]'s acceptor hands the
//! socket to a reader thread, which reads a [`frame`], parses it with
//! [`protocol`], and gives the job to the [`dispatch`]er. The dispatcher
//! records *who asked* in the [`registry`] and queues the job; a [`pool`]
//! worker runs it and hands the result back; the registry says which
//! [`connection`] gets the reply, and that connection's writer sends it.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod error;
pub mod frame;
pub mod protocol;
pub mod server;
pub mod units;
pub mod work;

pub use error::{Error, Result};
