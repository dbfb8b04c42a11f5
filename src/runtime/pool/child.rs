//! One worker process, as its driver sees it: started with the ipc-channel
//! handshake, stopped with a grace period, always reaped.
//!
//! Only the process's own driver thread ([`super::processes`]) calls these,
//! so nothing here is shared.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use ipc_channel::ipc::{IpcOneShotServer, IpcReceiver, IpcSender};

use super::WorkerCommand;
use crate::error::{Error, Result};
use crate::work::model::{onnxruntime_library, ONNXRUNTIME_ENV};
use crate::work::worker_process::{FromWorker, ToWorker, MODEL_ENV, WORKER_ARG};

/// How long a worker gets to exit by itself once its job channel closes.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// A running worker process and its two channels.
pub(super) struct WorkerProcess {
    pub(super) child: Child,
    pub(super) jobs: IpcSender<ToWorker>,
    /// Results from the worker; disconnected once the worker has exited.
    pub(super) results: IpcReceiver<FromWorker>,
}

/// Starts a child and completes the ipc-channel handshake with it.
///
/// `IpcOneShotServer::accept` blocks until somebody connects, and would block
/// forever if the child died first. So `accept` runs on a helper thread while
/// this one watches the child; if the child exits or the timeout passes, we
/// connect to our own one-shot server with [`FromWorker::Abandoned`], which
/// lets the helper's `accept` return and the helper thread end.
pub(super) fn spawn(id: usize, command: &WorkerCommand, timeout: Duration) -> Result<WorkerProcess> {
    let fail = |message: String| Error::WorkerSpawn { worker: id, message };
    let (one_shot, name) =
        IpcOneShotServer::<FromWorker>::new().map_err(|e| fail(format!("cannot open an IPC server: {e}")))?;
    let mut child = Command::new(&command.program)
        .args(&command.args)
        .arg(WORKER_ARG)
        .arg(&name)
        .arg(id.to_string())
        .arg(std::process::id().to_string())
        .envs(command.model.iter().map(|path| (MODEL_ENV, path)))
        // The engine the server chose, never a search of the worker's own.
        .env_remove(ONNXRUNTIME_ENV)
        .envs(onnxruntime_library().map(|library| (ONNXRUNTIME_ENV, library)))
        // The cores, shared out: each worker process's rayon pool (batch
        // decoding, the network's batch parts) gets cores / workers threads,
        // unless the user chose RAYON_NUM_THREADS.
        .envs(
            std::env::var_os("RAYON_NUM_THREADS")
                .is_none()
                .then(|| ("RAYON_NUM_THREADS", command.threads_each.to_string())),
        )
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
    // Wait for the handshake in 20 ms steps rather than one long wait, to
    // notice at once a child that died before connecting (`try_wait`).
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

    Ok(WorkerProcess { child, jobs: hello, results: receiver })
}

/// Closes the worker's job channel (its signal to exit), waits briefly for it
/// to do so, then kills it if needed. Always reaps, so no zombie is left,
/// and logs how it ended (an exit code, or the signal that killed it).
pub(super) fn stop_worker(id: usize, worker: WorkerProcess) {
    let WorkerProcess { mut child, jobs, results } = worker;
    let pid = child.id();
    drop(jobs);
    let deadline = Instant::now() + EXIT_GRACE;
    // Poll: std's `Child` has no wait with a timeout; 5 ms steps up to
    // EXIT_GRACE, then the kill.
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => break kill_and_reap(&mut child),
        }
    };
    match status {
        Some(status) => tracing::info!(worker = id, pid, %status, "worker process exited"),
        None => tracing::warn!(worker = id, pid, "worker process could not be reaped"),
    }
    drop(results);
}

/// Kills a worker (if it still runs) and reaps it; returns how it ended.
pub(super) fn kill_and_reap(child: &mut Child) -> Option<std::process::ExitStatus> {
    let _ = child.kill();
    child.wait().ok()
}
