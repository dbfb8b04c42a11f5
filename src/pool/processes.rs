//! Process mode, server side: one driver thread per worker process.
//!
//! The driver owns its child completely — spawning it, sending it jobs,
//! reaping it, replacing it — so no other thread ever touches a worker's
//! channels. A second small "pump" thread per child turns the blocking
//! `IpcReceiver::recv` into a crossbeam channel, so the driver can wait on
//! "a job arrived", "the worker answered or died" and "the pool is stopping"
//! at once with `select!`. That is how a crash is noticed the moment it
//! happens, even while the worker is idle.
//!
//! ipc-channel's ROUTER thread is deliberately not used: it unwraps on IPC
//! errors, and a worker that crashes produces exactly such errors.
//!
//! Each driver spawns its own children, so the child's `PR_SET_PDEATHSIG`
//! (see [`super::worker_process`]) is tied to the driver thread, which lives
//! as long as the pool. A job that runs past `--job-timeout` gets its worker
//! killed (SIGKILL) and replaced, and the client gets `TIMEOUT`.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, RecvTimeoutError};
use ipc_channel::ipc::{IpcOneShotServer, IpcSender};

use super::worker_process::{FromWorker, ToWorker, WORKER_ARG};
use super::{micros_between, PoolConfig, PoolShared, SlotState, WorkerCommand};
use crate::dispatch::{JobReport, QueuedJob};
use crate::error::{Error, Result};
use crate::protocol::ErrorCode;

/// How long a worker gets to exit by itself once its job channel closes.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Failed spawns back off from this delay...
const RESPAWN_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// ...up to this one.
const RESPAWN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A running worker process and its two channels.
struct WorkerProcess {
    child: Child,
    jobs: IpcSender<ToWorker>,
    /// Messages from the worker; disconnected once the worker has exited.
    events: Receiver<FromWorker>,
    pump: JoinHandle<()>,
}

/// Starts one driver thread per worker. Each spawns its first worker
/// process and reports back; this returns once every worker has completed
/// its handshake, or with the first failure.
pub(super) fn start(shared: PoolShared, config: &PoolConfig) -> Result<Vec<JoinHandle<()>>> {
    let (ready_tx, ready) = crossbeam_channel::bounded::<Result<()>>(config.workers);
    let mut drivers = Vec::with_capacity(config.workers);
    for id in 0..config.workers {
        let (shared, ready_tx) = (shared.clone(), ready_tx.clone());
        let (command, spawn_timeout) = (config.worker_command.clone(), config.spawn_timeout);
        let driver = thread::Builder::new()
            .name(format!("worker-{id}-driver"))
            .spawn(move || match spawn(id, &command, spawn_timeout) {
                Ok(worker) => {
                    shared.board.set_up(id, Some(worker.child.id()));
                    tracing::info!(worker = id, pid = worker.child.id(), "worker process started");
                    let _ = ready_tx.send(Ok(()));
                    drive(&shared, id, worker, &command, spawn_timeout);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| Error::io(format!("starting the driver thread of worker {id}"), e))?;
        drivers.push(driver);
    }
    drop(ready_tx);
    for _ in 0..config.workers {
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::Protocol("a worker driver ended before reporting".into())),
        }
    }
    Ok(drivers)
}

/// Starts a child and completes the ipc-channel handshake with it.
///
/// `IpcOneShotServer::accept` blocks until somebody connects, and would block
/// forever if the child died first. So `accept` runs on a helper thread while
/// this one watches the child; if the child exits or the timeout passes, we
/// connect to our own one-shot server with [`FromWorker::Abandoned`], which
/// lets the helper's `accept` return and the helper thread end.
fn spawn(id: usize, command: &WorkerCommand, timeout: Duration) -> Result<WorkerProcess> {
    let fail = |message: String| Error::WorkerSpawn { worker: id, message };
    let (one_shot, name) =
        IpcOneShotServer::<FromWorker>::new().map_err(|e| fail(format!("cannot open an IPC server: {e}")))?;
    let mut child = Command::new(&command.program)
        .args(&command.args)
        .arg(WORKER_ARG)
        .arg(&name)
        .arg(id.to_string())
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null()) // stdout belongs to the server (it prints its address there)
        // Its own process group: a Ctrl-C in the terminal reaches the server
        // only, and the server decides when its workers stop.
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", command.program.display())))?;

    let (accepted_tx, accepted) = crossbeam_channel::bounded(1);
    thread::Builder::new()
        .name(format!("worker-{id}-accept"))
        .spawn(move || {
            let _ = accepted_tx.send(one_shot.accept());
        })
        .map_err(|e| fail(format!("cannot start the handshake thread: {e}")))?;

    let deadline = Instant::now() + timeout;
    let handshake = loop {
        match accepted.recv_timeout(Duration::from_millis(20)) {
            Ok(result) => break result,
            Err(RecvTimeoutError::Timeout) => {
                let exited = child.try_wait().ok().flatten();
                if exited.is_none() && Instant::now() < deadline {
                    continue;
                }
                if let Ok(unblock) = IpcSender::<FromWorker>::connect(name.clone()) {
                    let _ = unblock.send(FromWorker::Abandoned);
                }
                kill_and_reap(&mut child);
                return Err(fail(match exited {
                    Some(status) => format!("the worker process exited ({status}) before connecting"),
                    None => format!("the worker process did not connect within {timeout:?}"),
                }));
            }
            Err(RecvTimeoutError::Disconnected) => {
                kill_and_reap(&mut child);
                return Err(fail("the handshake thread ended without a result".into()));
            }
        }
    };
    let (receiver, hello) = match handshake {
        Ok((receiver, FromWorker::Hello { jobs })) => (receiver, jobs),
        Ok((_, other)) => {
            kill_and_reap(&mut child);
            return Err(fail(format!("expected a handshake, got {other:?}")));
        }
        Err(e) => {
            kill_and_reap(&mut child);
            return Err(fail(format!("handshake failed: {e}")));
        }
    };

    // The pump: blocking IPC receive → crossbeam channel. It ends when the
    // worker's sending end closes, i.e. when the worker process is gone.
    let (events_tx, events) = crossbeam_channel::unbounded();
    let pump = thread::Builder::new()
        .name(format!("worker-{id}-pump"))
        .stack_size(128 * 1024)
        .spawn(move || {
            while let Ok(message) = receiver.recv() {
                if events_tx.send(message).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| fail(format!("cannot start the IPC pump thread: {e}")))?;

    Ok(WorkerProcess { child, jobs: hello, events, pump })
}

/// The driver loop of one worker slot: feed jobs to the process, deliver its
/// results, and replace it when it dies or hangs, until the pool stops.
fn drive(
    shared: &PoolShared,
    id: usize,
    first: WorkerProcess,
    command: &WorkerCommand,
    spawn_timeout: Duration,
) {
    let mut worker = Some(first);
    let mut backoff = RESPAWN_BACKOFF_MIN;
    loop {
        let Some(current) = worker.as_mut() else {
            // The slot is empty: replace the worker, within the restart
            // budget, backing off after failed spawns.
            if !shared.wait_for_restart(id) {
                break;
            }
            match spawn(id, command, spawn_timeout) {
                Ok(replacement) => {
                    tracing::info!(worker = id, pid = replacement.child.id(), "worker process replaced");
                    shared.board.set_up(id, Some(replacement.child.id()));
                    shared.board.restarted(id);
                    worker = Some(replacement);
                    backoff = RESPAWN_BACKOFF_MIN;
                }
                Err(e) => {
                    shared.board.set(id, SlotState::Down);
                    tracing::error!(worker = id, error = %e, retry_in = ?backoff, "cannot replace worker");
                    // Sleep, but wake at once if the pool stops.
                    if shared.stop.recv_timeout(backoff) != Err(RecvTimeoutError::Timeout) {
                        break;
                    }
                    backoff = (backoff * 2).min(RESPAWN_BACKOFF_MAX);
                }
            }
            continue;
        };

        // Idle: a crash now is noticed at once through the events channel.
        if let Ok(job) = shared.queues.retries.try_recv() {
            if !run_job(shared, id, current, job) {
                retire(shared, id, worker.take());
            }
            continue;
        }
        let job = select! {
            recv(shared.stop) -> _ => break,
            recv(current.events) -> event => {
                if event.is_err() {
                    tracing::warn!(worker = id, "worker process died while idle");
                    retire(shared, id, worker.take());
                }
                continue; // a stray message from an idle worker is ignored
            },
            recv(shared.queues.retries) -> job => match job { Ok(job) => job, Err(_) => break },
            recv(shared.queues.jobs) -> job => match job { Ok(job) => job, Err(_) => break },
        };
        if !run_job(shared, id, current, job) {
            retire(shared, id, worker.take());
        }
    }
    if let Some(worker) = worker {
        stop_worker(worker);
    }
    shared.board.set(id, SlotState::Down);
}

/// Sends one job to the worker and waits for its answer, at most
/// `--job-timeout`. Returns `false` when the worker must be replaced: it
/// died (the job was retried or answered `WORKER_CRASHED`), it hung (killed,
/// `TIMEOUT`), or the pool is stopping (`SHUTTING_DOWN`).
fn run_job(shared: &PoolShared, id: usize, worker: &mut WorkerProcess, job: QueuedJob) -> bool {
    if !shared.completer.still_wanted(job.id) {
        return true;
    }
    let pid = worker.child.id();
    let started = Instant::now();
    let deadline = started + shared.job_timeout;
    shared.board.set(id, SlotState::Busy);
    let crash_message = || format!("worker {id} (pid {pid}) died while running the job");
    if worker.jobs.send(ToWorker::Run { job: job.id, kind: job.kind.clone() }).is_err() {
        shared.crashed(&job, id, started, crash_message());
        return false;
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        select! {
            recv(worker.events) -> event => match event {
                Ok(FromWorker::Done { job: done, service_us, result }) if done == job.id => {
                    shared.board.set(id, SlotState::Idle);
                    shared.board.job_done(id);
                    shared.completer.finish(JobReport {
                        job: job.id,
                        worker: id,
                        queue_us: micros_between(job.accepted_at, started),
                        service_us,
                        attempts: job.attempt,
                        result,
                    });
                    return true;
                }
                Ok(other) => tracing::warn!(worker = id, ?other, "unexpected message from worker"),
                Err(_) => {
                    tracing::warn!(worker = id, pid, job = job.id, "worker process died while running a job");
                    shared.crashed(&job, id, started, crash_message());
                    return false;
                }
            },
            recv(shared.stop) -> _ => {
                shared.fail(&job, id, started, ErrorCode::ShuttingDown, "the server stopped before the job finished".into());
                return false;
            },
            default(left) => {
                tracing::warn!(worker = id, pid, job = job.id, timeout = ?shared.job_timeout, "job timed out; killing the worker");
                kill_and_reap(&mut worker.child);
                let message = format!(
                    "the job ran longer than --job-timeout ({:?}); worker {id} (pid {pid}) was killed and replaced",
                    shared.job_timeout
                );
                shared.fail(&job, id, started, ErrorCode::Timeout, message);
                return false;
            },
        }
    }
}

/// Takes a dead (or abandoned) worker out of service and reaps it.
fn retire(shared: &PoolShared, id: usize, worker: Option<WorkerProcess>) {
    shared.board.set(id, SlotState::Down);
    if let Some(worker) = worker {
        stop_worker(worker);
    }
}

/// Closes the worker's job channel (its signal to exit), waits briefly for it
/// to do so, then kills it if needed. Always reaps, so no zombie is left.
fn stop_worker(worker: WorkerProcess) {
    let WorkerProcess { mut child, jobs, events, pump } = worker;
    drop(jobs);
    let deadline = Instant::now() + EXIT_GRACE;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                kill_and_reap(&mut child);
                break;
            }
        }
    }
    // The child is gone, so its end of the IPC channel is closed and the
    // pump's `recv` has returned (or will at once).
    drop(events);
    let _ = pump.join();
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
