//! Thread mode: each worker is a thread of the server that runs jobs itself.
//!
//! A thread cannot be killed, so a job that hangs is handled by a
//! **watchdog** thread: when a job has run longer than `--job-timeout`, the
//! watchdog answers it with `TIMEOUT`, *writes off* the stuck thread (bumps
//! its slot's generation, so when — if ever — the thread returns it sees it
//! has been replaced and exits quietly), and starts a new thread in its slot.
//! `stats` counts the threads written off.
//!
//! A written-off thread running a `compute` job notices within one chunk of
//! the kernel (~20 µs, [`CHUNK`] steps) and stops: it checks its slot's
//! generation between chunks, so no job outlives `--job-timeout` by more
//! than the watchdog's tick, whatever its `n`. Other jobs have bounds of
//! their own: a prediction is one forward pass over at most a batch's worth
//! of images (bounded by the image and batch limits), a `sleep` is bounded by
//! `--job-timeout` where chaos is allowed at all. Only `hang` (chaos, off
//! unless `--allow-chaos`) holds its thread for ever: it is there to show
//! what a stuck thread costs, the price of threads that process mode, which
//! kills the process, does not pay.
//!
//! Each slot's running job sits behind the slot's own `Mutex`, which the
//! worker and the watchdog take for a moment to hand the job over; whoever
//! takes it answers it, so the job is answered exactly once.

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use super::hops::{nanos, Hop};
use super::{JobReport, QueuedJob};
use super::{Next, PoolShared, SlotState};
use crate::error::{Error, Result};
use crate::protocol::ErrorCode;
use crate::protocol::{JobOutput, JobResult, ReplyError};
use crate::units::micros;
use crate::work::compute::compute_in_chunks;
use crate::work::gil::CHUNK;
use crate::work::job::{execute, JobKind};

/// The current thread of each slot.
pub(super) type SlotThreads = Arc<Mutex<Vec<Option<JoinHandle<()>>>>>;

/// A slot: which generation of thread owns it, and the job it is running.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotInner>,
    /// `SlotInner::generation`, readable without the mutex: a running
    /// compute job loads it between chunks to learn it was written off.
    /// Relaxed: a flag polled in a loop, guarding no other data (the job's
    /// handover goes through the mutex).
    generation_now: AtomicU64,
}

#[derive(Default)]
struct SlotInner {
    generation: u64,
    running: Option<Running>,
    /// The thread was written off and no replacement could start yet.
    vacant: bool,
}

struct Running {
    job: QueuedJob,
    started: Instant,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotInner> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts `workers` threads and their watchdog. Every worker counts as up
/// when this returns, so a `health` request right after start-up sees the
/// whole pool.
pub(super) fn start(shared: PoolShared, workers: usize) -> Result<(JoinHandle<()>, SlotThreads)> {
    let slots: Arc<Vec<Slot>> = Arc::new((0..workers).map(|_| Slot::default()).collect());
    let threads: SlotThreads = Arc::new(Mutex::new((0..workers).map(|_| None).collect()));
    for id in 0..workers {
        let handle = spawn_worker(&shared, &slots, id, 0)?;
        threads.lock().unwrap_or_else(PoisonError::into_inner)[id] = Some(handle);
    }
    let watchdog = {
        let (shared, slots, threads) = (shared.clone(), Arc::clone(&slots), Arc::clone(&threads));
        thread::Builder::new()
            .name("worker-watchdog".into())
            .spawn(move || watch(&shared, &slots, &threads))
            .map_err(|e| Error::io("starting the worker watchdog thread", e))?
    };
    Ok((watchdog, threads))
}

fn spawn_worker(
    shared: &PoolShared,
    slots: &Arc<Vec<Slot>>,
    id: usize,
    generation: u64,
) -> Result<JoinHandle<()>> {
    shared.board.set_up(id, None);
    let (shared, slots) = (shared.clone(), Arc::clone(slots));
    let handle = thread::Builder::new()
        .name(format!("worker-{id}"))
        .spawn(move || serve(&shared, &slots[id], id, generation))
        .map_err(|e| Error::io(format!("starting worker thread {id}"), e))?;
    if generation == 0 {
        tracing::info!(worker = id, "worker thread started");
    } else {
        tracing::info!(worker = id, generation, "worker thread replaced");
    }
    Ok(handle)
}

/// A worker thread: takes jobs until the pool stops or it is written off.
fn serve(shared: &PoolShared, slot: &Slot, id: usize, generation: u64) {
    while let Next::Job(job) = shared.next_job() {
        if !shared.completer.still_wanted(job.id) {
            continue;
        }
        let started = Instant::now();
        let queue_us = job.waited_us(started);
        let queued = started.saturating_duration_since(job.accepted_at);
        let (job_id, attempts, kind) = (job.id, job.attempt, job.kind.clone());
        {
            let mut inner = slot.lock();
            if inner.generation != generation {
                return;
            }
            inner.running = Some(Running { job, started });
        }
        shared.board.set(id, SlotState::Busy);
        let still_mine = || slot.generation_now.load(Ordering::Relaxed) == generation;
        // A panic in a job must not take the worker (or the server) down:
        // catch it and answer the job with INTERNAL.
        let result =
            catch_unwind(AssertUnwindSafe(|| run(shared, id, &kind, still_mine))).unwrap_or_else(|_| {
                Err(ReplyError {
                    code: ErrorCode::Internal,
                    message: format!("the job panicked on worker thread {id}; the worker goes on serving"),
                })
            });
        let ran = started.elapsed();
        let service_us = micros(ran);
        {
            let mut inner = slot.lock();
            if inner.generation != generation {
                // The watchdog answered this job (TIMEOUT) and gave the slot
                // to a new thread while we were stuck: leave quietly.
                tracing::info!(
                    worker = id,
                    job = job_id,
                    "a written-off worker thread left its job and ended"
                );
                return;
            }
            inner.running = None;
        }
        shared.board.set(id, SlotState::Idle);
        shared.board.job_done(id);
        let finishing = Instant::now();
        shared.completer.finish(JobReport {
            job: job_id,
            worker: id,
            host: None,
            queue_us,
            service_us,
            attempts,
            result,
        });
        let hops =
            [(Hop::Queue, nanos(queued)), (Hop::Run, nanos(ran)), (Hop::Reply, nanos(finishing.elapsed()))];
        shared.board.hops().record_all(id, &hops);
    }
    if slot.lock().generation == generation {
        shared.board.set(id, SlotState::Down);
        tracing::info!(worker = id, "worker thread stopped");
    }
}

/// Runs a job; with `--gil`, computing only while holding the global lock.
/// (Sleeping does not need the lock: CPython releases the GIL around I/O
/// and sleeps too.) A compute job stops between two chunks once
/// `still_mine` says the watchdog wrote this thread off.
fn run(shared: &PoolShared, worker: usize, kind: &JobKind, still_mine: impl Fn() -> bool) -> JobResult {
    let go_on = || if still_mine() { ControlFlow::Continue(()) } else { ControlFlow::Break(()) };
    let computed = match (&shared.gil, kind) {
        (Some(gil), JobKind::Compute { n }) => {
            let mut guard = gil.acquire(worker);
            compute_in_chunks(*n, CHUNK, || {
                guard.checkpoint();
                go_on()
            })
        }
        (None, JobKind::Compute { n }) => compute_in_chunks(*n, CHUNK, go_on),
        _ => return execute(kind, &shared.models),
    };
    computed.map(JobOutput::Compute).ok_or_else(|| ReplyError {
        // Never sent: the watchdog has answered the job already (TIMEOUT),
        // and `serve` drops what a written-off thread returns.
        code: ErrorCode::Timeout,
        message: "stopped: the job ran past --job-timeout".to_string(),
    })
}

/// The watchdog: every tick, answers jobs past their deadline and replaces
/// the threads running them. It polls (a tenth of `--job-timeout`, 5–250 ms)
/// because a running thread cannot be interrupted or waited on with a
/// deadline: looking at the clock is the only way to see a job overrun.
fn watch(shared: &PoolShared, slots: &Arc<Vec<Slot>>, threads: &SlotThreads) {
    let tick = (shared.job_timeout / 10).clamp(Duration::from_millis(5), Duration::from_millis(250));
    loop {
        match shared.stop.recv_timeout(tick) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        for (id, slot) in slots.iter().enumerate() {
            let overdue = {
                let mut inner = slot.lock();
                match &inner.running {
                    Some(r) if r.started.elapsed() >= shared.job_timeout => {
                        inner.generation += 1;
                        slot.generation_now.store(inner.generation, Ordering::Relaxed);
                        inner.vacant = true;
                        inner.running.take()
                    }
                    _ => None,
                }
            };
            if let Some(Running { job, started }) = overdue {
                // `Relaxed`: a counter for reports, guarding nothing (see the board).
                shared.board.abandoned_threads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(worker = id, job = job.id, timeout = ?shared.job_timeout,
                    "job timed out; writing off its thread and starting a new one");
                let message = format!(
                    "the job ran longer than --job-timeout ({:?}); worker thread {id} was written off and replaced",
                    shared.job_timeout
                );
                shared.fail(&job, id, started, ErrorCode::Timeout, message);
            }
            replace_if_vacant(shared, slots, threads, id);
        }
    }
}

/// Starts a new thread in a written-off slot, if the restart budget allows.
fn replace_if_vacant(shared: &PoolShared, slots: &Arc<Vec<Slot>>, threads: &SlotThreads, id: usize) {
    let generation = {
        let inner = slots[id].lock();
        if !inner.vacant {
            return;
        }
        inner.generation
    };
    if shared.budget.try_take(Instant::now()).is_err() {
        shared.board.set(id, SlotState::Throttled);
        return; // try again on a later tick
    }
    match spawn_worker(shared, slots, id, generation) {
        Ok(handle) => {
            slots[id].lock().vacant = false;
            shared.board.restarted(id);
            // The stuck thread's handle is dropped: that thread is detached.
            threads.lock().unwrap_or_else(PoisonError::into_inner)[id] = Some(handle);
        }
        Err(e) => {
            shared.board.set(id, SlotState::Down);
            tracing::error!(worker = id, error = %e, "cannot start a replacement worker thread");
        }
    }
}
