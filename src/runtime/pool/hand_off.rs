//! Process mode: a reader thread hands a new job straight to an idle worker
//! process, instead of queueing it for the worker's driver thread.
//!
//! Through the queue, a job on an idle farm waits for the driver to wake up
//! (a futex wake-up, ~20 µs on two busy cores: `stats` → `hops` → `queue`)
//! before the driver's ipc message wakes the worker process. Handed off, the
//! reader writes that ipc message itself, so the worker starts at once; the
//! driver is told too, and wakes up *while the job runs*, off the job's path,
//! to read its result.
//!
//! The driver stays the only one that reads its worker's results and keeps
//! the list of jobs sent to it, in the order sent — results come back in that
//! order, and the driver checks each against it. So exactly one thread may
//! send to a worker at a time, and the job list must learn of a handed-off
//! job before the driver sends anything after it:
//!
//! - An idle driver *opens* its slot, then waits on the queues and on its
//!   `handed` channel at once.
//! - A reader *claims* an open slot (compare-and-swap open → closed, so two
//!   readers never both win), sends the job to the worker, and then passes
//!   it to the driver on `handed`.
//! - A driver that wakes for anything else first *closes* its slot the same
//!   way. If it loses, a reader has claimed it: the driver waits for that
//!   job on `handed` (it is already on its way to the worker) before it
//!   sends one of its own.
//!
//! Nothing depends on a hand-off happening: every open driver still waits on
//! the queues, so a job that is queued instead is taken as before. Readers
//! only hand off while the queue is empty, so a new job never overtakes
//! waiting ones. Thread mode never opens a slot.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use ipc_channel::ipc::IpcSender;

use super::hops::{nanos, Hop};
use super::{QueuedJob, WorkerBoard};
use crate::work::worker_process::{monotonic_ns, ToWorker, WorkItem};

/// A job a reader handed to a worker, as its driver learns of it.
pub(super) struct Handed {
    /// The job.
    pub(super) job: QueuedJob,
    /// When it was sent to the worker (the start of its `--job-timeout`).
    pub(super) sent_at: Instant,
    /// Whether the worker took the message. `false` when it had died: the
    /// driver then sends the job itself, as it would have, and deals with
    /// the dead worker as it always does.
    pub(super) delivered: bool,
}

/// Every worker's hand-off slot. Shared by the readers (through
/// [`super::JobQueues`]) and the drivers; empty until process mode starts.
#[derive(Default)]
pub(crate) struct HandOffs {
    slots: OnceLock<Slots>,
    /// Jobs handed off so far (`stats` → `jobs.handed_off`).
    handed: AtomicU64,
}

struct Slots {
    each: Vec<Slot>,
    /// Where the handed jobs' queue waits are recorded.
    board: Arc<WorkerBoard>,
    /// The slot the next claim tries first, so that hand-offs go round the
    /// workers rather than always to the first idle one.
    next: AtomicUsize,
}

struct Slot {
    /// Whether the driver is idle and takes a hand-off.
    open: AtomicBool,
    /// The current worker's job channel (replaced with the worker).
    worker: Mutex<Option<IpcSender<ToWorker>>>,
    /// Handed-off jobs, to the driver. Room for one: a slot is claimed at
    /// most once per opening.
    handed: Sender<Handed>,
}

impl HandOffs {
    /// Slots for `workers` drivers, each with the receiving end its driver
    /// waits on. Called once, when process mode starts; later calls get none.
    pub(super) fn install(&self, workers: usize, board: Arc<WorkerBoard>) -> Vec<Receiver<Handed>> {
        let (each, ends): (Vec<Slot>, Vec<Receiver<Handed>>) = (0..workers)
            .map(|_| {
                let (handed, end) = crossbeam_channel::bounded(1);
                (Slot { open: AtomicBool::new(false), worker: Mutex::new(None), handed }, end)
            })
            .unzip();
        match self.slots.set(Slots { each, board, next: AtomicUsize::new(0) }) {
            Ok(()) => ends,
            Err(_) => Vec::new(),
        }
    }

    /// Jobs that went straight to a worker process so far.
    pub(crate) fn handed_off(&self) -> u64 {
        self.handed.load(Ordering::Relaxed)
    }

    fn slot(&self, id: usize) -> Option<&Slot> {
        self.slots.get().and_then(|slots| slots.each.get(id))
    }

    /// The driver of `id` has a new worker: hand-offs go to its channel.
    pub(super) fn attach(&self, id: usize, worker: &IpcSender<ToWorker>) {
        if let Some(slot) = self.slot(id) {
            *slot.worker.lock().unwrap_or_else(PoisonError::into_inner) = Some(worker.clone());
        }
    }

    /// The driver of `id` is idle: readers may hand it a job.
    pub(super) fn open(&self, id: usize) {
        if let Some(slot) = self.slot(id) {
            slot.open.store(true, Ordering::Release);
        }
    }

    /// The driver of `id` is about to send or stop: no hand-off may start
    /// from now on. `false` means one already has: its job is on `handed`
    /// (or about to be), and must be taken in before the driver sends.
    pub(super) fn close(&self, id: usize) -> bool {
        self.slot(id).is_none_or(|slot| slot.open.swap(false, Ordering::AcqRel))
    }

    /// Hands `job` to an idle worker process (`None`), or gives it back when
    /// none is idle (then it goes to the queue as usual). Call only while
    /// the queue is empty.
    pub(crate) fn try_hand(&self, job: QueuedJob) -> Option<QueuedJob> {
        let Some(slots) = self.slots.get() else { return Some(job) };
        let count = slots.each.len();
        let first = slots.next.fetch_add(1, Ordering::Relaxed);
        for id in (0..count).map(|i| (first + i) % count) {
            let slot = &slots.each[id];
            // Cheap look first; the swap decides (only one claimer wins).
            if !slot.open.load(Ordering::Relaxed) || !slot.open.swap(false, Ordering::AcqRel) {
                continue;
            }
            let sent_ns = monotonic_ns();
            let item = WorkItem { job: job.id, kind: job.kind.clone(), sent_ns };
            let delivered = slot
                .worker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .is_some_and(|worker| worker.send(ToWorker::Run { jobs: vec![item] }).is_ok());
            if delivered {
                slots.board.hops().record_all(id, &[(Hop::Queue, nanos(job.accepted_at.elapsed()))]);
                self.handed.fetch_add(1, Ordering::Relaxed);
            }
            // An error means the driver is gone (the pool is stopping): the
            // job is given back, to be queued like any other.
            return slot
                .handed
                .send(Handed { job, sent_at: Instant::now(), delivered })
                .err()
                .map(|e| e.into_inner().job);
        }
        Some(job)
    }
}
