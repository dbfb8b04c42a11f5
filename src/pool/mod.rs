//! The worker pool: who runs the jobs.
//!
//! Two modes run the very same job code ([`crate::job::execute`]):
//! - [`Mode::Processes`] (the default, as in the original): one subprocess per
//!   worker, spawned once at start-up and fed over ipc-channel
//!   ([`processes`] on the server side, [`worker_process`] inside the child).
//!   A crash takes down one worker, never the server.
//! - [`Mode::Threads`]: worker threads inside the server ([`threads`]).
//!   Cheaper to talk to, but they share the server's fate.
//!
//! Either way every worker takes jobs from the one shared queue as soon as it
//! is free, and stops when the pool's stop channel closes.

pub mod processes;
pub mod threads;
pub mod worker_process;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use crate::dispatch::{Completer, QueuedJob};
use crate::error::Result;

/// How workers are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Worker subprocesses connected with ipc-channel.
    Processes,
    /// Worker threads inside the server.
    Threads,
}

impl Mode {
    /// The mode's name as used by `--mode` and in `stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Processes => "processes",
            Mode::Threads => "threads",
        }
    }
}

/// The program a worker process runs: by default the current executable,
/// which turns into a worker when it sees [`worker_process::WORKER_ARG`].
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// Path of the executable.
    pub program: PathBuf,
    /// Arguments placed before the worker arguments.
    pub args: Vec<OsString>,
}

impl WorkerCommand {
    /// Re-executes the running binary in worker mode.
    ///
    /// # Errors
    /// If the path of the running executable cannot be found.
    pub fn current_exe() -> Result<Self> {
        let program = std::env::current_exe()
            .map_err(|e| crate::Error::io("finding the server's own executable to spawn workers", e))?;
        Ok(WorkerCommand {
            program,
            args: Vec::new(),
        })
    }
}

/// Everything the pool needs to start.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Threads or processes.
    pub mode: Mode,
    /// Number of workers.
    pub workers: usize,
    /// What to execute for a worker process (process mode only).
    pub worker_command: WorkerCommand,
    /// How long a new worker process may take to connect back.
    pub spawn_timeout: Duration,
}

/// Live state of every worker, written by the workers and read by `stats`.
#[derive(Debug)]
pub struct WorkerBoard {
    slots: Vec<WorkerSlot>,
}

#[derive(Debug, Default)]
struct WorkerSlot {
    pid: AtomicU32,
    alive: AtomicBool,
    busy: AtomicBool,
    jobs_done: AtomicU64,
    restarts: AtomicU64,
}

/// One worker's state, as reported in `stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Worker number, 0-based.
    pub id: usize,
    /// Process id (process mode), `null` in thread mode.
    pub pid: Option<u32>,
    /// `"busy"`, `"idle"` or `"down"` (a process being replaced).
    pub state: String,
    /// Jobs run to completion.
    pub jobs_done: u64,
    /// Times the worker was replaced after dying.
    pub restarts: u64,
}

impl WorkerBoard {
    fn new(workers: usize) -> Self {
        WorkerBoard {
            slots: (0..workers).map(|_| WorkerSlot::default()).collect(),
        }
    }

    fn set_up(&self, id: usize, pid: Option<u32>) {
        self.slots[id].pid.store(pid.unwrap_or(0), Relaxed);
        self.slots[id].alive.store(true, Relaxed);
    }

    fn set_down(&self, id: usize) {
        self.slots[id].alive.store(false, Relaxed);
        self.slots[id].busy.store(false, Relaxed);
    }

    fn set_busy(&self, id: usize, busy: bool) {
        self.slots[id].busy.store(busy, Relaxed);
    }

    fn job_done(&self, id: usize) {
        self.slots[id].jobs_done.fetch_add(1, Relaxed);
    }

    fn restarted(&self, id: usize) {
        self.slots[id].restarts.fetch_add(1, Relaxed);
    }

    /// Workers configured.
    pub fn configured(&self) -> usize {
        self.slots.len()
    }

    /// Workers up right now.
    pub fn alive(&self) -> usize {
        self.slots.iter().filter(|s| s.alive.load(Relaxed)).count()
    }

    /// A snapshot of every worker.
    pub fn snapshot(&self) -> Vec<WorkerInfo> {
        self.slots
            .iter()
            .enumerate()
            .map(|(id, slot)| {
                let state = if !slot.alive.load(Relaxed) {
                    "down"
                } else if slot.busy.load(Relaxed) {
                    "busy"
                } else {
                    "idle"
                };
                let pid = slot.pid.load(Relaxed);
                WorkerInfo {
                    id,
                    pid: (pid != 0).then_some(pid),
                    state: state.to_string(),
                    jobs_done: slot.jobs_done.load(Relaxed),
                    restarts: slot.restarts.load(Relaxed),
                }
            })
            .collect()
    }
}

/// A running pool. Stop it with [`WorkerPool::stop`].
pub struct WorkerPool {
    board: Arc<WorkerBoard>,
    threads: Vec<JoinHandle<()>>,
    // Dropping this sender closes the stop channel every worker listens to.
    stop: Option<Sender<()>>,
}

/// What every worker loop is given.
struct WorkerContext {
    id: usize,
    jobs: Receiver<QueuedJob>,
    stop: Receiver<()>,
    completer: Completer,
    board: Arc<WorkerBoard>,
}

impl WorkerPool {
    /// Starts the workers. In process mode every worker process has completed
    /// its handshake when this returns, so the pool is ready to serve.
    ///
    /// # Errors
    /// If a worker thread or process cannot be started.
    pub fn start(config: &PoolConfig, jobs: Receiver<QueuedJob>, completer: Completer) -> Result<WorkerPool> {
        if config.workers == 0 {
            return Err(crate::Error::Config("the pool needs at least one worker".into()));
        }
        let board = Arc::new(WorkerBoard::new(config.workers));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let mut pool = WorkerPool {
            board: Arc::clone(&board),
            threads: Vec::with_capacity(config.workers),
            stop: Some(stop_tx),
        };
        for id in 0..config.workers {
            let context = WorkerContext {
                id,
                jobs: jobs.clone(),
                stop: stop_rx.clone(),
                completer: completer.clone(),
                board: Arc::clone(&board),
            };
            let started = match config.mode {
                Mode::Threads => threads::start(context),
                Mode::Processes => processes::start(context, config),
            };
            match started {
                Ok(handle) => pool.threads.push(handle),
                Err(e) => {
                    pool.stop(Duration::from_secs(5));
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    /// The workers' live state.
    pub fn board(&self) -> Arc<WorkerBoard> {
        Arc::clone(&self.board)
    }

    /// Tells every worker to stop and waits up to `grace` for them. Worker
    /// processes are stopped and reaped by their driver threads. A thread
    /// still busy after `grace` is left to finish on its own (a running
    /// thread cannot be killed); it exits as soon as its job is done.
    pub fn stop(&mut self, grace: Duration) {
        drop(self.stop.take());
        let deadline = Instant::now() + grace;
        for handle in self.threads.drain(..) {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                tracing::warn!("a worker was still busy at shutdown; not waiting for it");
            }
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Microseconds since `since`, saturating.
fn micros_since(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}
