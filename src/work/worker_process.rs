//! The inside of a worker process, and the messages it exchanges with the
//! server.
//!
//! Handshake (ipc-channel's `IpcOneShotServer`, no `fork()`):
//! 1. the server opens a one-shot server, gets its name, and spawns
//!    `<program> --tc-worker <name> <worker-id>`;
//! 2. the child connects to that name, creates its own job channel, and sends
//!    [`FromWorker::Hello`] carrying the job channel's sending end;
//! 3. the server now holds the child's job sender, and the child holds the
//!    sender of the one-shot channel for its results.
//!
//! From then on each side only ever *sends* on one channel and *receives* on
//! the other, and a job is sent only when the worker is idle, so neither side
//! can block the other.
//!
//! A worker never outlives its server, two ways: when the server goes away —
//! even by SIGKILL — its end of the job channel closes, `recv` fails, and an
//! idle worker exits; and the worker asks the kernel (`PR_SET_PDEATHSIG`) to
//! kill it when its parent thread dies, which also covers a worker that is
//! busy or stuck in a job.

use std::ffi::OsString;
use std::time::Instant;

use ipc_channel::ipc::{self, IpcSender};
use serde::{Deserialize, Serialize};

use crate::protocol::JobResult;
use crate::units::micros;
use crate::work::job::{execute, JobId, JobKind};
use crate::work::model::ModelSlot;

/// First argument that turns a ThreadCenter binary into a worker process.
pub(crate) const WORKER_ARG: &str = "--tc-worker";

/// The environment variable that tells a worker process which model file to
/// load before it connects back.
pub(crate) const MODEL_ENV: &str = "TC_WORKER_MODEL";

/// Server → worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// Run these jobs, in order, and report them with [`FromWorker::Done`].
    /// Sending several jobs in one message saves a round trip per job when
    /// jobs are short.
    Run {
        /// The jobs.
        jobs: Vec<WorkItem>,
    },
}

/// One job as the worker sees it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkItem {
    /// The job's registry id, echoed in the result.
    pub(crate) job: JobId,
    /// The work.
    pub(crate) kind: JobKind,
    /// When the driver sent it (`CLOCK_MONOTONIC` ns, the same clock in
    /// both processes): the start of its hop to the worker.
    pub(crate) sent_ns: u64,
}

/// One finished job, as the worker reports it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JobDone {
    /// The job's registry id.
    pub(crate) job: JobId,
    /// Microseconds the job ran, measured inside the worker.
    pub(crate) service_us: u64,
    /// Its result.
    pub(crate) result: JobResult,
    /// When the worker read the message that carried it, started it and
    /// finished it (`CLOCK_MONOTONIC` ns), and when the driver sent it
    /// (echoed): where its time went (`stats` → `hops`).
    pub(crate) clock: JobClock,
}

/// A job's readings of `CLOCK_MONOTONIC` across the process boundary.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct JobClock {
    pub(crate) sent_ns: u64,
    pub(crate) received_ns: u64,
    pub(crate) started_ns: u64,
    pub(crate) done_ns: u64,
}

/// Nanoseconds on `CLOCK_MONOTONIC`: the same clock in every process of a
/// machine, so the driver's send and the worker's receive are two readings
/// of one clock. It lives here, with the messages that carry its readings,
/// so that the worker side needs nothing from the pool above it.
pub(crate) fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}

/// Results of short jobs are held back at most this long, to be sent
/// together with the next ones; a long job's result goes out at once.
const HOLD_RESULTS: std::time::Duration = std::time::Duration::from_micros(200);

/// Worker → server.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    /// The handshake: where to send jobs.
    Hello {
        /// The worker's job channel.
        jobs: IpcSender<ToWorker>,
    },
    /// Jobs are done, in the order they were sent.
    Done {
        /// Their results.
        results: Vec<JobDone>,
        /// When this message was sent (`CLOCK_MONOTONIC` ns).
        sent_ns: u64,
    },
    /// Sent by the *server* to its own one-shot server to unblock `accept()`
    /// when a child died before connecting (see `processes::spawn`).
    Abandoned,
}

/// If this process was started as a worker (`argv[1] == --tc-worker`), runs
/// the worker loop and exits; otherwise returns at once. Every binary that can
/// host a process pool calls this first thing in `main`.
pub fn run_if_requested() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).map(|a| a == WORKER_ARG) != Some(true) {
        return;
    }
    let server_name = args.get(2).and_then(|s| s.to_str()).map(str::to_owned);
    let worker_id = args.get(3).and_then(|s| s.to_str()).unwrap_or("?").to_owned();
    let parent = args.get(4).and_then(|s| s.to_str()).and_then(|s| s.parse::<i32>().ok());
    if let Err(message) = die_with_parent(parent) {
        eprintln!("tc worker {worker_id} (pid {}): {message}", std::process::id());
        std::process::exit(1);
    }
    let code = match server_name {
        Some(name) => match serve(name) {
            Ok(()) => 0,
            Err(message) => {
                eprintln!("tc worker {worker_id} (pid {}): {message}", std::process::id());
                1
            }
        },
        None => {
            eprintln!(
                "usage: {WORKER_ARG} <ipc-server-name> <worker-id> (started by tc-server, not by hand)"
            );
            2
        }
    };
    std::process::exit(code);
}

/// Asks the kernel to SIGKILL this process when the thread that spawned it
/// dies, then checks that the parent is still the server: if it died between
/// our spawn and this call, the request came too late and we leave at once.
fn die_with_parent(expected_parent: Option<i32>) -> Result<(), WorkerError> {
    use nix::sys::signal::Signal;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(WorkerError::DeathSignal)?;
    match expected_parent {
        Some(pid) if nix::unistd::getppid().as_raw() != pid => Err(WorkerError::ServerGone),
        _ => Ok(()),
    }
}

/// Why a worker process cannot serve: printed on its standard error (the
/// server's log), and the process exits with 1.
#[derive(Debug, thiserror::Error)]
enum WorkerError {
    #[error("cannot set the parent-death signal: {0}")]
    DeathSignal(nix::Error),
    #[error("the server is already gone")]
    ServerGone,
    #[error("cannot connect to the server: {0}")]
    Connect(std::io::Error),
    #[error("cannot create the job channel: {0}")]
    Channel(std::io::Error),
    #[error("handshake failed: {0}")]
    Handshake(ipc_channel::IpcError),
    #[error(transparent)]
    Engine(crate::error::Error),
}

/// Connects back to the server and runs jobs until the server goes away.
fn serve(server_name: String) -> Result<(), WorkerError> {
    let to_server = IpcSender::<FromWorker>::connect(server_name).map_err(WorkerError::Connect)?;
    let (jobs_tx, jobs) = ipc::channel::<ToWorker>().map_err(WorkerError::Channel)?;
    // Load the model before saying hello, so a worker that is up is ready
    // to predict. This process's copy of the weights is its own: worker
    // processes share no memory with the server or each other.
    crate::work::model::choose_engine_as_told().map_err(WorkerError::Engine)?;
    let models = ModelSlot::new();
    if let Some(path) = std::env::var_os(MODEL_ENV) {
        if let Err(e) = models.preload(std::path::Path::new(&path)) {
            eprintln!("tc worker (pid {}): {e}; predictions will report it", std::process::id());
        }
    }
    to_server.send(FromWorker::Hello { jobs: jobs_tx }).map_err(WorkerError::Handshake)?;

    // `recv` fails once the server's sending end is closed: time to go.
    while let Ok(ToWorker::Run { jobs: batch }) = jobs.recv() {
        let received_ns = monotonic_ns();
        let count = batch.len();
        let mut results = Vec::with_capacity(count);
        let mut held_since: Option<Instant> = None;
        for (position, WorkItem { job, kind, sent_ns }) in batch.into_iter().enumerate() {
            let started = Instant::now();
            let started_ns = monotonic_ns();
            let result = execute(&kind, &models);
            let service_us = micros(started.elapsed());
            let clock = JobClock { sent_ns, received_ns, started_ns, done_ns: monotonic_ns() };
            results.push(JobDone { job, service_us, result, clock });
            let held = *held_since.get_or_insert(started);
            // Send at the end of the batch, or once results have waited long
            // enough: short jobs go back together, long ones one by one.
            if position + 1 == count || held.elapsed() >= HOLD_RESULTS {
                let done =
                    FromWorker::Done { results: std::mem::take(&mut results), sent_ns: monotonic_ns() };
                if to_server.send(done).is_err() {
                    return Ok(()); // the server is gone
                }
                held_since = None;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_monotonic_and_in_nanoseconds() {
        let a = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = monotonic_ns();
        assert!(b - a >= 2_000_000, "{a} {b}");
    }
}
