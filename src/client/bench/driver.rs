//! One benchmark connection: a sender thread and a receiver thread.
//!
//! ```text
//!  sender ── insert(id → times) ──▶ Window (Mutex + Condvar) ◀── take(id) ── receiver
//!    │  writes request frames              ▲ waits for a slot          │ reads reply frames,
//!    ▼                                     │ (closed loop)             ▼ records latencies
//!  socket ─────────────────────────────── server ─────────────────────────▶ socket
//! ```
//!
//! - **Closed loop**: the sender waits until fewer than `pipeline` requests
//!   are in flight, then sends the next one at once. A reply frees a slot.
//! - **Open loop**: the sender sends request *k* at `start + offset + k ×
//!   interval`, whatever the replies are doing. If it falls behind (the server
//!   pushes back), the delay still counts: latency is measured from the
//!   scheduled time, so coordinated omission is corrected.
//!
//! The parts, one file each: the shared [`super::window`], the
//! [`super::sender`] (schedule, closed-loop feeder, open-loop sender thread)
//! and the [`super::receiver`]; this file wires them together for one
//! connection.

use crate::transport::Transport;
use std::sync::Arc;
use std::thread;

use super::options::Pacing;
use super::receiver::Receiver;
use super::recorder::Recorder;
use super::sender::{send_on_schedule, Feeder, Schedule};
use super::window::{describe_io_error, Window};
use super::{Plan, RunSinks};

/// What a connection hands back when it is done.
pub(crate) struct ConnectionResult {
    /// Its measurements.
    pub(crate) recorder: Recorder,
    /// Why it stopped early, if it did.
    pub(crate) error: Option<String>,
}

/// Runs connection `index` of the plan to completion on the calling thread.
///
/// A closed loop needs only this thread: it fills the window, writes the
/// new requests in one system call, reads replies, and fills the window
/// again — no hand-off between threads per request. An open loop adds a
/// sender thread that keeps the schedule whatever the replies are doing.
pub(crate) fn run_connection(
    index: usize,
    plan: Arc<Plan>,
    stream: Arc<Transport>,
    sinks: RunSinks,
) -> ConnectionResult {
    let window = Arc::new(Window::default());
    // A server that stops reading for longer than --timeout fails the
    // connection instead of blocking the sender forever.
    if let Err(e) = stream.set_write_timeout(Some(plan.options.timeout)) {
        return ConnectionResult {
            recorder: Recorder::default(),
            error: Some(describe_io_error(index, &plan, "configuring the socket", &e)),
        };
    }
    let fail = |e: std::io::Error| ConnectionResult {
        recorder: Recorder::default(),
        error: Some(format!("connection {index}: cannot start its sender: {e}")),
    };
    // Both halves share the transport (and, over TLS, its session).
    let write_half = Arc::clone(&stream);
    let (sender, feeder) = match plan.options.pacing {
        Pacing::Open { .. } | Pacing::Staged(_) => {
            let (window, plan, sinks) = (Arc::clone(&window), Arc::clone(&plan), sinks.clone());
            let spawned = thread::Builder::new()
                .name(format!("bench-send-{index}"))
                .spawn(move || send_on_schedule(index, &plan, write_half, &window, &sinks));
            match spawned {
                Ok(handle) => (Some(handle), None),
                Err(e) => return fail(e),
            }
        }
        Pacing::Closed { pipeline } => (
            None,
            Some(Feeder { schedule: Schedule::new(index, &plan), stream: write_half, pipeline, index }),
        ),
    };
    // All connections begin together, at the plan's start.
    if window.wait_until(plan.start) {
        let mut receiver = Receiver::new(index, &plan, &window, &sinks);
        receiver.run(stream, feeder);
        let recorder = receiver.finish();
        if let Some(sender) = sender {
            let _ = sender.join();
        }
        let error = window.lock().error.clone();
        return ConnectionResult { recorder, error };
    }
    let error = window.lock().error.clone();
    ConnectionResult { recorder: Recorder::default(), error }
}
