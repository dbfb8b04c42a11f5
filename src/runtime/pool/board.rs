//! The worker board: each worker slot's live state (idle, busy, down,
//! throttled), its pid and its counters.
//!
//! Workers write their own slot; `stats`, `/metrics`, `/readyz` and the
//! reader threads (is any worker up?) read all of them. Every field is an
//! atomic read and written with `Relaxed` ordering: each value is a
//! self-contained counter or state that no other memory depends on, so a
//! reader may see one slot a moment late, never a torn value — which is all
//! a status report needs. Nothing synchronises *through* the board.
//!
//! The one exception is [`Hops`]: per-worker histograms of where a job's
//! time went, each behind a lock only its own worker takes while jobs run.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use super::hops::Hops;

/// A worker slot's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum SlotState {
    Down = 0,
    Idle = 1,
    Busy = 2,
    /// Down, and waiting for the restart budget.
    Throttled = 3,
}

impl SlotState {
    fn name(self) -> &'static str {
        match self {
            SlotState::Down => "down",
            SlotState::Idle => "idle",
            SlotState::Busy => "busy",
            SlotState::Throttled => "throttled",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => SlotState::Idle,
            2 => SlotState::Busy,
            3 => SlotState::Throttled,
            _ => SlotState::Down,
        }
    }
}

/// Live state of every worker, written by the workers and read by `stats`.
#[derive(Debug)]
pub(crate) struct WorkerBoard {
    slots: Vec<WorkerSlot>,
    pub(super) abandoned_threads: AtomicU64,
    hops: Hops,
}

#[derive(Debug, Default)]
struct WorkerSlot {
    pid: AtomicU32,
    state: AtomicU8,
    jobs_done: AtomicU64,
    restarts: AtomicU64,
}

/// One worker's state, as reported in `stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct WorkerInfo {
    /// Worker number, 0-based.
    pub(crate) id: usize,
    /// Process id (process mode), `null` in thread mode.
    pub(crate) pid: Option<u32>,
    /// `"busy"`, `"idle"`, `"down"` (being replaced) or `"throttled"`
    /// (waiting for the restart budget).
    pub(crate) state: String,
    /// Jobs run to completion.
    pub(crate) jobs_done: u64,
    /// Times the worker was replaced after dying, hanging or being written off.
    pub(crate) restarts: u64,
}

impl WorkerBoard {
    /// A board of `workers` slots, all down until their workers start.
    pub(crate) fn new(workers: usize) -> Self {
        WorkerBoard {
            slots: (0..workers).map(|_| WorkerSlot::default()).collect(),
            abandoned_threads: AtomicU64::new(0),
            hops: Hops::new(workers),
        }
    }

    /// Where the jobs' time went, hop by hop (`stats` → `hops`).
    pub(crate) fn hops(&self) -> &Hops {
        &self.hops
    }

    pub(super) fn set(&self, id: usize, state: SlotState) {
        self.slots[id].state.store(state as u8, Relaxed);
    }

    pub(super) fn set_up(&self, id: usize, pid: Option<u32>) {
        self.slots[id].pid.store(pid.unwrap_or(0), Relaxed);
        self.set(id, SlotState::Idle);
    }

    pub(super) fn job_done(&self, id: usize) {
        self.slots[id].jobs_done.fetch_add(1, Relaxed);
    }

    pub(super) fn restarted(&self, id: usize) {
        self.slots[id].restarts.fetch_add(1, Relaxed);
    }

    /// Workers configured.
    pub(crate) fn configured(&self) -> usize {
        self.slots.len()
    }

    /// Workers up right now (idle or busy).
    pub(crate) fn alive(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                matches!(SlotState::from_u8(s.state.load(Relaxed)), SlotState::Idle | SlotState::Busy)
            })
            .count()
    }

    /// Workers up and waiting for a job.
    pub(crate) fn idle(&self) -> usize {
        self.slots.iter().filter(|s| SlotState::from_u8(s.state.load(Relaxed)) == SlotState::Idle).count()
    }

    /// Slots waiting for the restart budget.
    pub(crate) fn throttled(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| SlotState::from_u8(s.state.load(Relaxed)) == SlotState::Throttled)
            .count()
    }

    /// Whether no job can run now: no worker is up, and replacements are
    /// held back by the restart budget (the reader threads then refuse jobs
    /// at once: see [`crate::server::jobs::no_worker_error`]).
    pub(crate) fn none_can_run(&self) -> bool {
        self.alive() == 0 && self.throttled() > 0
    }

    /// Worker threads written off after a job timeout (thread mode).
    pub(crate) fn abandoned_threads(&self) -> u64 {
        self.abandoned_threads.load(Relaxed)
    }

    /// A snapshot of every worker.
    pub(crate) fn snapshot(&self) -> Vec<WorkerInfo> {
        self.slots
            .iter()
            .enumerate()
            .map(|(id, slot)| {
                let pid = slot.pid.load(Relaxed);
                WorkerInfo {
                    id,
                    pid: (pid != 0).then_some(pid),
                    state: SlotState::from_u8(slot.state.load(Relaxed)).name().to_string(),
                    jobs_done: slot.jobs_done.load(Relaxed),
                    restarts: slot.restarts.load(Relaxed),
                }
            })
            .collect()
    }
}
