//! The worker pool: who runs the jobs, and who keeps the workers alive.
//!
//! Two modes run the very same job code ([`crate::work::job::execute`]):
//! - [`Mode::Processes`] (the default, as in the original): one subprocess per
//!   worker, fed over ipc-channel ([`processes`] on the server side, a
//!   child started, stopped and reaped by [`child`],
//!   [`crate::work::worker_process`] inside the child). A crash or a hang takes down one
//!   worker, which is killed and replaced; the server carries on.
//! - [`Mode::Threads`]: worker threads inside the server ([`threads`]).
//!   Cheaper to talk to, but they share the server's fate: a hung thread
//!   cannot be killed, only written off and replaced.
//!
//! Either way every worker takes jobs from the shared queues as soon as it
//! is free (retries first), every job has a deadline (`--job-timeout`), and
//! replacements are limited by a [`RestartBudget`].

pub(crate) mod board;
mod child;
pub(crate) mod hops;
pub(crate) mod processes;
pub(crate) mod queue;
pub(crate) mod supervision;
pub(crate) mod threads;

use board::SlotState;
pub(crate) use board::{WorkerBoard, WorkerInfo};
pub(crate) use queue::{JobQueues, JobReport, QueuedJob, Waited};

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::error::Result;
use crate::protocol::ReplyError;
use crate::protocol::{ErrorCode, Mode};
use crate::units::micros;
use crate::work::job::JobId;
use crate::work::model::ModelSlot;
pub(crate) use supervision::RestartBudget;

/// Where the pool reports what became of each job, and asks whether a job
/// may run (again). In `tc-server` this is the [`crate::server::jobs::Completer`]
/// (replies go back to the asking connection); in a worker host it is the
/// host's link to NATS (results go back to the gateway that asked). The pool
/// itself only runs jobs and keeps workers alive: it never knows who asked.
pub(crate) trait JobOutcomes: Send + Sync {
    /// Whether the job's asker still waits for it; a job that is not wanted
    /// must not be run.
    fn still_wanted(&self, job: JobId) -> bool;

    /// After the worker running `job` crashed: arranges for it to run again
    /// elsewhere when it may, and returns `true`; `false` means the pool
    /// answers it with `WORKER_CRASHED`.
    fn retry(&self, job: &QueuedJob) -> bool;

    /// Puts back a job that a dead worker had been handed but not started,
    /// without charging an attempt; `false` means the pool answers it.
    fn requeue(&self, job: &QueuedJob) -> bool;

    /// Delivers a finished job's result (or failure).
    fn finish(&self, report: JobReport);

    /// Answers a job that no worker can run: none is up, and replacements
    /// are held back by the restart budget.
    fn refuse_no_worker(&self, job: &QueuedJob, worker: usize);
}

/// The program a worker process runs: by default the current executable,
/// which turns into a worker when it sees [`crate::work::worker_process::WORKER_ARG`].
#[derive(Debug, Clone)]
pub(crate) struct WorkerCommand {
    /// Path of the executable.
    pub(crate) program: PathBuf,
    /// Arguments placed before the worker arguments.
    pub(crate) args: Vec<OsString>,
    /// The model file the worker loads at start-up (passed in [`crate::work::worker_process::MODEL_ENV`]);
    /// the pool sets it from [`PoolConfig::model`].
    pub(super) model: Option<PathBuf>,
    /// Threads for each worker process's rayon pool: the cores shared out
    /// among the workers (the pool sets it).
    pub(super) threads_each: usize,
}

impl WorkerCommand {
    /// Re-executes the running binary in worker mode.
    ///
    /// # Errors
    /// If the path of the running executable cannot be found.
    pub(crate) fn current_exe() -> Result<Self> {
        let program = std::env::current_exe()
            .map_err(|e| crate::Error::io("finding the server's own executable to spawn workers", e))?;
        Ok(WorkerCommand { program, args: Vec::new(), model: None, threads_each: 1 })
    }
}

/// Everything the pool needs to start.
#[derive(Debug, Clone)]
pub(crate) struct PoolConfig {
    /// Threads or processes.
    pub(crate) mode: Mode,
    /// Number of workers.
    pub(crate) workers: usize,
    /// What to execute for a worker process (process mode only).
    pub(crate) worker_command: WorkerCommand,
    /// How long a new worker process may take to connect back.
    pub(crate) spawn_timeout: Duration,
    /// How long one job may run before it is answered with `TIMEOUT` and its
    /// worker replaced.
    pub(crate) job_timeout: Duration,
    /// Replacements allowed per `restart_window` (all slots together).
    pub(crate) max_restarts: u32,
    /// The window of `max_restarts`.
    pub(crate) restart_window: Duration,
    /// Thread mode only: make worker threads share one global lock while
    /// they compute, handed over every this-long, as CPython's GIL does.
    pub(crate) gil_switch_interval: Option<Duration>,
    /// The model file every worker loads at start-up (`--model`), if any.
    pub(crate) model: Option<PathBuf>,
}

/// What every worker loop shares.
#[derive(Clone)]
struct PoolShared {
    queues: Arc<JobQueues>,
    stop: Receiver<()>,
    completer: Arc<dyn JobOutcomes>,
    board: Arc<WorkerBoard>,
    budget: Arc<RestartBudget>,
    job_timeout: Duration,
    /// The global lock of `--gil` (thread mode).
    gil: Option<Arc<crate::work::gil::Gil>>,
    /// Thread mode: the model, loaded once and shared by every worker thread.
    models: Arc<ModelSlot>,
}

/// What a free worker received.
enum Next {
    /// A job to run.
    Job(QueuedJob),
    /// The pool is stopping (or every dispatcher is gone).
    Stop,
}

impl PoolShared {
    /// Waits for the next job, retries first, or for the pool to stop.
    fn next_job(&self) -> Next {
        match self.queues.wait_next(&self.stop, None) {
            Waited::Job(job) => Next::Job(job),
            Waited::Stop | Waited::Nothing => Next::Stop,
        }
    }

    /// Answers a job that produced no result.
    fn fail(&self, job: &QueuedJob, worker: usize, started: Instant, code: ErrorCode, message: String) {
        let error = ReplyError { code, message };
        self.completer.finish(JobReport::failed(
            job,
            worker,
            job.waited_us(started),
            micros(started.elapsed()),
            error,
        ));
    }

    /// After a worker died mid-job: retry the job elsewhere if allowed,
    /// otherwise answer it with `WORKER_CRASHED`.
    fn crashed(&self, job: &QueuedJob, worker: usize, started: Instant, what: String) {
        if !self.completer.retry(job) {
            self.fail(job, worker, started, ErrorCode::WorkerCrashed, what);
        }
    }

    /// Waits until the restart budget allows one more replacement for slot
    /// `id` (marking it throttled meanwhile). Returns `false` if the pool
    /// stops first. While *no* worker at all is up, jobs that arrive are
    /// answered with `BUSY` rather than left waiting for a worker that may
    /// never come.
    fn wait_for_restart(&self, id: usize) -> bool {
        loop {
            let wait = match self.budget.try_take(Instant::now()) {
                Ok(()) => return true,
                Err(wait) => wait,
            };
            self.board.set(id, SlotState::Throttled);
            tracing::warn!(worker = id, retry_in = ?wait, "restart limit reached; not replacing the worker yet");
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if self.board.alive() > 0 {
                    if self.stop.recv_timeout(left) != Err(crossbeam_channel::RecvTimeoutError::Timeout) {
                        return false;
                    }
                    continue;
                }
                match self.queues.wait_next(&self.stop, Some(left)) {
                    Waited::Job(job) => self.completer.refuse_no_worker(&job, id),
                    Waited::Stop => return false,
                    Waited::Nothing => {}
                }
            }
        }
    }
}

/// A running pool. Stop it with [`WorkerPool::stop`].
pub(crate) struct WorkerPool {
    gil: Option<Arc<crate::work::gil::Gil>>,
    threads: Vec<JoinHandle<()>>,
    // Dropping this sender closes the stop channel every worker listens to.
    stop: Option<Sender<()>>,
    // Thread mode: the current thread of each slot (replaced ones are detached).
    slot_threads: Option<threads::SlotThreads>,
}

impl WorkerPool {
    /// Starts the workers. In process mode every worker process has completed
    /// its handshake when this returns, so the pool is ready to serve.
    ///
    /// # Errors
    /// If a worker thread or process cannot be started.
    pub(crate) fn start(
        config: &PoolConfig,
        queues: JobQueues,
        completer: Arc<dyn JobOutcomes>,
        board: Arc<WorkerBoard>,
    ) -> Result<WorkerPool> {
        if config.workers == 0 || board.configured() != config.workers {
            return Err(crate::Error::Config(
                "the pool needs at least one worker, and one board slot each".into(),
            ));
        }
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let shared = PoolShared {
            queues: Arc::new(queues),
            stop: stop_rx,
            completer,
            board,
            budget: Arc::new(RestartBudget::new(config.max_restarts, config.restart_window)),
            job_timeout: config.job_timeout,
            gil: config.gil_switch_interval.map(|interval| Arc::new(crate::work::gil::Gil::new(interval))),
            models: Arc::new(ModelSlot::new()),
        };
        // Threads share the server's memory, so one copy of the weights
        // serves them all; each worker process loads its own (see
        // `worker_process`).
        if let (Mode::Threads, Some(path)) = (config.mode, &config.model) {
            shared.models.preload(path)?;
        }
        let gil = shared.gil.clone();
        let mut pool = WorkerPool { gil, threads: Vec::new(), stop: Some(stop_tx), slot_threads: None };
        let started = match config.mode {
            Mode::Threads => threads::start(shared, config.workers).map(|(watchdog, slots)| {
                pool.threads.push(watchdog);
                pool.slot_threads = Some(slots);
            }),
            Mode::Processes => processes::start(shared, config).map(|drivers| pool.threads = drivers),
        };
        if let Err(e) = started {
            pool.stop(Duration::from_secs(5));
            return Err(e);
        }
        Ok(pool)
    }

    /// The GIL of `--gil`, when on.
    pub(crate) fn gil(&self) -> Option<Arc<crate::work::gil::Gil>> {
        self.gil.clone()
    }

    /// Tells every worker to stop and waits up to `grace` for them. Worker
    /// processes are stopped and reaped by their driver threads. A thread
    /// still busy after `grace` is left to finish on its own (a running
    /// thread cannot be killed); it exits as soon as its job is done.
    pub(crate) fn stop(&mut self, grace: Duration) {
        drop(self.stop.take());
        let deadline = Instant::now() + grace;
        let mut handles: Vec<JoinHandle<()>> = self.threads.drain(..).collect();
        if let Some(slots) = &self.slot_threads {
            handles.extend(
                slots.lock().unwrap_or_else(PoisonError::into_inner).iter_mut().filter_map(Option::take),
            );
        }
        for handle in handles {
            // Poll: std's `JoinHandle` has no join with a timeout, and a
            // thread stuck in a job must not hold the shutdown for ever.
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
