//! A global interpreter lock, as CPython has, so thread mode can show why the
//! original Python farm needed processes (`--mode threads --gil`).
//!
//! In CPython only the thread holding the GIL runs Python code. A thread that
//! wants it waits up to the *switch interval* (5 ms by default); if the
//! holder has not let go by then, the waiter sets a *drop request*. The
//! holder checks for that request between bytecodes, releases the lock, and
//! waits until another thread has actually taken it before queueing again
//! ("forced switching"), so the lock changes hands instead of being grabbed
//! straight back. CPU-bound threads therefore take turns on one core's worth
//! of work, however many cores the machine has.
//!
//! Here the "bytecodes" are chunks of the compute kernel: a worker computes
//! [`CHUNK`] steps, then calls [`GilGuard::checkpoint`].
//!
//! So that the live dashboard can show the lock changing hands, the GIL can
//! keep a log of its holds ([`Gil::keep_holds`]): who held it, from when
//! to when, the newest [`HOLDS_KEPT`]. Each hold is written before the lock
//! is let go, and its start after it is taken, so two holds never overlap.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Kernel steps between two checks for a drop request (~20 µs of work).
pub(crate) const CHUNK: u64 = 10_000;

/// Holds kept for the dashboard (at CPython's 5 ms switch interval and
/// two threads, the last ~40 s; with short jobs, fewer seconds).
pub(crate) const HOLDS_KEPT: usize = 8_192;

/// One time a worker held the GIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GilHold {
    /// Its number in the log (1, 2, 3, …).
    pub(crate) seq: u64,
    pub(crate) worker: usize,
    pub(crate) start: Instant,
    pub(crate) end: Instant,
}

/// The newest holds, numbered.
#[derive(Debug, Default)]
struct HoldLog {
    holds: VecDeque<GilHold>,
    newest: u64,
}

/// The lock itself. Share it by reference (`Arc<Gil>`).
#[derive(Debug)]
pub(crate) struct Gil {
    state: Mutex<GilState>,
    changed: Condvar,
    switch_interval: Duration,
    /// Set by a waiter whose interval ran out; read without the mutex by the
    /// holder at every checkpoint, so checking costs one atomic load.
    /// Release/Acquire: the holder that sees the request then takes the
    /// mutex anyway, which orders everything else; the pair only makes the
    /// request itself visible promptly and in order with the reset in `take`.
    drop_request: AtomicBool,
    /// Threads inside the lock right now; must never exceed 1 (tests check).
    /// AcqRel on the counters so that the test's reading of `most_holders`
    /// sees every increment made by threads it has joined.
    holders: AtomicUsize,
    most_holders: AtomicUsize,
    /// Whether holds are logged (a dashboard is served). Relaxed: a hold
    /// logged a moment before or after it is switched on does not matter.
    keeping: AtomicBool,
    log: Mutex<HoldLog>,
}

#[derive(Debug, Default)]
struct GilState {
    held: bool,
    /// Counts every acquisition, so a waiter can tell whether the lock
    /// changed hands while it waited.
    switches: u64,
}

impl Gil {
    /// A GIL with CPython's rule: a waiter asks the holder to let go after
    /// `switch_interval`.
    pub(crate) fn new(switch_interval: Duration) -> Self {
        Gil {
            state: Mutex::new(GilState::default()),
            changed: Condvar::new(),
            switch_interval,
            drop_request: AtomicBool::new(false),
            holders: AtomicUsize::new(0),
            most_holders: AtomicUsize::new(0),
            keeping: AtomicBool::new(false),
            log: Mutex::default(),
        }
    }

    /// From now on, logs every hold (one short lock per hold).
    pub(crate) fn keep_holds(&self) {
        self.keeping.store(true, Ordering::Relaxed);
    }

    /// The holds numbered after `after`, and the newest number.
    pub(crate) fn holds_after(&self, after: u64) -> (Vec<GilHold>, u64) {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let older = log.holds.partition_point(|hold| hold.seq <= after);
        (log.holds.range(older..).copied().collect(), log.newest)
    }

    /// Logs a hold that ends now (called before the lock is let go).
    fn log_hold(&self, worker: usize, start: Instant) {
        if !self.keeping.load(Ordering::Relaxed) {
            return;
        }
        let end = Instant::now();
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.newest += 1;
        let seq = log.newest;
        if log.holds.len() == HOLDS_KEPT {
            log.holds.pop_front();
        }
        log.holds.push_back(GilHold { seq, worker, start, end });
    }

    fn lock(&self) -> MutexGuard<'_, GilState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the GIL and takes it, for `worker` (named in the log).
    pub(crate) fn acquire(&self, worker: usize) -> GilGuard<'_> {
        self.take();
        GilGuard { gil: self, worker, since: Instant::now() }
    }

    /// Waits for the GIL and marks it held (the guard is the caller's job).
    fn take(&self) {
        let mut state = self.lock();
        while state.held {
            let seen = state.switches;
            let (next, waited) = self
                .changed
                .wait_timeout(state, self.switch_interval)
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            // A whole interval passed and the lock did not change hands:
            // ask the holder to let go at its next checkpoint.
            if waited.timed_out() && state.held && state.switches == seen {
                self.drop_request.store(true, Ordering::Release);
            }
        }
        state.held = true;
        state.switches += 1;
        self.drop_request.store(false, Ordering::Release);
        drop(state);
        let now = self.holders.fetch_add(1, Ordering::AcqRel) + 1;
        self.most_holders.fetch_max(now, Ordering::AcqRel);
    }

    fn release(&self) {
        self.holders.fetch_sub(1, Ordering::AcqRel);
        let mut state = self.lock();
        state.held = false;
        drop(state);
        self.changed.notify_all();
    }

    /// How many times the lock has been taken.
    pub(crate) fn switches(&self) -> u64 {
        self.lock().switches
    }

    /// The most threads ever inside the lock at once (1 if it works).
    #[cfg(test)]
    pub(crate) fn most_holders(&self) -> usize {
        self.most_holders.load(Ordering::Acquire)
    }

    /// The switch interval.
    pub(crate) fn switch_interval(&self) -> Duration {
        self.switch_interval
    }
}

/// Holding the GIL. Dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct GilGuard<'a> {
    gil: &'a Gil,
    worker: usize,
    /// When this turn began.
    since: Instant,
}

impl GilGuard<'_> {
    /// Called between chunks of work: if a waiter has asked for the lock,
    /// hand it over, wait until someone else has taken it, and queue again.
    pub(crate) fn checkpoint(&mut self) {
        if !self.gil.drop_request.load(Ordering::Acquire) {
            return;
        }
        let gil = self.gil;
        let before = gil.lock().switches;
        gil.log_hold(self.worker, self.since);
        gil.release();
        // Forced switching: do not grab the lock straight back.
        let deadline = Instant::now() + gil.switch_interval;
        let mut state = gil.lock();
        while state.switches == before && Instant::now() < deadline {
            state = gil
                .changed
                .wait_timeout(state, deadline - Instant::now())
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(state);
        // Queue again, for a new turn.
        gil.take();
        self.since = Instant::now();
    }
}

impl Drop for GilGuard<'_> {
    fn drop(&mut self) {
        self.gil.log_hold(self.worker, self.since);
        self.gil.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn never_two_holders_and_every_thread_finishes() {
        let gil = Arc::new(Gil::new(Duration::from_millis(1)));
        gil.keep_holds();
        let threads: Vec<_> = (0..4)
            .map(|worker| {
                let gil = Arc::clone(&gil);
                std::thread::spawn(move || {
                    let mut guard = gil.acquire(worker);
                    let mut sum = 0u64;
                    for i in 0..200_000u64 {
                        sum = sum.wrapping_add(i * i);
                        if i % 1000 == 0 {
                            guard.checkpoint();
                        }
                    }
                    sum
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(gil.most_holders(), 1, "mutual exclusion");
        assert!(gil.switches() >= 4, "each thread took the lock at least once");
        assert!(!gil.state.lock().unwrap().held, "released at the end");
        // The log: every turn, in order, none overlapping the next.
        let (holds, newest) = gil.holds_after(0);
        assert_eq!(holds.len() as u64, newest);
        assert!(holds.len() >= 4 && holds.len() as u64 <= gil.switches());
        assert!((0..4).all(|w| holds.iter().any(|h| h.worker == w)), "every thread's turns are logged");
        for pair in holds.windows(2) {
            assert!(pair[0].start <= pair[0].end && pair[0].end <= pair[1].start, "{pair:?}");
        }
        assert_eq!(gil.holds_after(newest).0.len(), 0);
    }
}
