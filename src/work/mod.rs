//! **Worker side** — what runs a job, and nothing else: it knows nothing of
//! sockets, connections or who asked. A worker process needs only this; the
//! worker pool that drives it ([`crate::runtime::pool`]) runs in `tc-server`
//! and `tc-worker` alike.
//!
//! | module | owns |
//! |---|---|
//! | [`job`] | a job's kinds, its result, and [`job::execute`], *the* job code |
//! | [`compute`] | the original ThreadCenter CPU-bound function |
//! | [`model`] | the fire-detection network: weights file, image decoding, forward pass |
//! | [`gil`] | a CPython-style global interpreter lock, for thread-mode demos |
//! | [`worker_process`] | the inside of a worker process: its IPC messages and loop |

pub mod compute;
pub(crate) mod gil;
pub(crate) mod job;
pub(crate) mod model;
pub mod worker_process;

/// How many workers a farm runs when not told: one per core (a compute job
/// keeps one core busy). The server's default and `tc-client --embedded`'s.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
