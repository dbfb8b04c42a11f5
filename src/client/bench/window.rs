//! The window: what a connection's sender and receiver share — the requests
//! in flight, keyed by id, behind one `Mutex`, and a `Condvar` that wakes the
//! sender when a slot frees up or the connection closes.
//!
//! The lock is held only to insert, take or count entries; no socket I/O
//! happens under it.

use std::collections::HashMap;
use std::io;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::mix::BenchCommand;
use super::Plan;

/// How often a sleeping sender checks for Ctrl-C.
const INTERRUPT_POLL: Duration = Duration::from_millis(50);

/// A request waiting for its reply.
#[derive(Debug, Clone, Copy)]
pub(super) struct InFlight {
    pub(super) scheduled: Instant,
    pub(super) sent: Instant,
    pub(super) command: BenchCommand,
    pub(super) measured: bool,
}

/// State shared by a connection's sender and receiver.
#[derive(Default)]
pub(super) struct Window {
    pub(super) state: Mutex<WindowState>,
    pub(super) changed: Condvar,
}

#[derive(Default)]
pub(super) struct WindowState {
    pub(super) in_flight: HashMap<u64, InFlight>,
    /// The sender has sent everything it will send.
    pub(super) sending_done: bool,
    /// The connection is finished or broken: the sender must stop.
    pub(super) closed: bool,
    /// Why the connection broke, if it did.
    pub(super) error: Option<String>,
}

impl Window {
    /// The state, locked (a poisoned lock is still used: the state stays
    /// consistent because every update is a single assignment or insert).
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, WindowState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps until `due`, waking early if the connection closes (returns
    /// `false`) or the run is interrupted (returns `true` at once: the
    /// schedule then ends the run). Sleeps in short slices so a slow open
    /// loop still notices Ctrl-C promptly.
    pub(super) fn wait_until(&self, due: Instant) -> bool {
        let mut state = self.lock();
        loop {
            if state.closed {
                return false;
            }
            let now = Instant::now();
            if now >= due || crate::client::interrupt::requested() {
                return true;
            }
            let slice = (due - now).min(INTERRUPT_POLL);
            state = self.changed.wait_timeout(state, slice).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Marks the connection finished (or broken, with why) and wakes the sender.
    pub(super) fn close(&self, error: Option<String>) {
        let mut state = self.lock();
        state.closed = true;
        if state.error.is_none() {
            state.error = error;
        }
        self.changed.notify_all();
    }
}

/// One line naming the connection, the server and what went wrong.
pub(super) fn describe_io_error(index: usize, plan: &Plan, doing: &str, error: &io::Error) -> String {
    let what = match error.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
            "the server closed the connection".to_string()
        }
        _ => error.to_string(),
    };
    format!("connection {index} to {}: {what} while {doing}", plan.address)
}
