//! Process mode, server side: one driver thread per worker process.
//!
//! The driver owns its child completely — spawning it, sending it jobs,
//! reading its results, reaping it, replacing it — so no other thread ever
//! touches a worker's channels. ipc-channel's ROUTER thread is deliberately
//! not used: it unwraps on IPC errors, and a worker that crashes produces
//! exactly such errors.
//!
//! The driver reads the worker's results itself (`try_recv_timeout`), so a
//! job's round trip costs no extra thread hop. A busy driver may keep more
//! jobs *queued inside its worker* while the current one runs, so the worker
//! starts the next job the moment it finishes one instead of waiting for the
//! driver's round trip: one job for long jobs, up to 16 for jobs shorter than
//! a millisecond (where the round trip would cost more than the job). It
//! takes only the surplus — jobs beyond what idle workers can take right now
//! — so prefetching never holds a job back from a free worker.
//!
//! A worker's death is noticed as its result channel closing: at once while
//! it runs a job, and within [`IDLE_CHECK`] while it is idle. Each driver
//! spawns its own children, so the child's `PR_SET_PDEATHSIG` (see
//! [`crate::work::worker_process`]) is tied to the driver thread, which lives as
//! long as the pool ([`super::child`] starts, stops and reaps one child).
//! A job that runs past `--job-timeout` gets its worker
//! killed (SIGKILL) and replaced, and the client gets `TIMEOUT`.

use std::collections::VecDeque;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, TryRecvError};
use ipc_channel::TryRecvError as IpcTryRecvError;

use super::child::{kill_and_reap, spawn, stop_worker, WorkerProcess};
use super::hops::{nanos, Hop};
use super::{JobReport, QueuedJob, Waited};
use super::{PoolConfig, PoolShared, SlotState, WorkerCommand};
use crate::error::{Error, Result};
use crate::protocol::ErrorCode;
use crate::work::worker_process::{monotonic_ns, FromWorker, JobDone, ToWorker, WorkItem};

/// Failed spawns back off from this delay...
const RESPAWN_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// ...up to this one.
const RESPAWN_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often an idle driver checks that its worker is still alive. It must
/// poll: an idle driver waits on the job queues (crossbeam), while a dead
/// worker shows up on its IPC channel (ipc-channel), and no one `select`
/// spans both kinds of channel.
pub(crate) const IDLE_CHECK: Duration = Duration::from_millis(50);
/// How often a busy driver looks up from its worker to check for a stop and
/// the job's deadline (the same two-kinds-of-channel reason as above).
const BUSY_TICK: Duration = Duration::from_millis(50);
/// Jobs a driver may have sent to its worker at once when jobs are long:
/// the running one and one waiting behind it.
const SENT_LONG_JOBS: usize = 2;
/// ... and when jobs are short, where the driver's round trip would
/// otherwise cost more than the job itself.
const SENT_SHORT_JOBS: usize = 16;
/// Jobs whose recent service time is below this count as short.
const SHORT_JOB_US: f64 = 1000.0;

/// Starts one driver thread per worker. Each spawns its first worker
/// process and reports back; this returns once every worker has completed
/// its handshake, or with the first failure.
pub(super) fn start(shared: PoolShared, config: &PoolConfig) -> Result<Vec<JoinHandle<()>>> {
    let (ready_tx, ready) = crossbeam_channel::bounded::<Result<()>>(config.workers);
    let mut drivers = Vec::with_capacity(config.workers);
    for id in 0..config.workers {
        let (shared, ready_tx) = (shared.clone(), ready_tx.clone());
        let (mut command, spawn_timeout) = (config.worker_command.clone(), config.spawn_timeout);
        command.model.clone_from(&config.model);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        command.threads_each = (cores / config.workers.max(1)).max(1);
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
    for reported in 0..config.workers {
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            // Every driver is gone and `reported` of them had said they were up.
            Err(_) => {
                let message = format!("a driver thread ended before reporting ({reported} had started)");
                return Err(Error::WorkerSpawn { worker: reported, message });
            }
        }
    }
    Ok(drivers)
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
    let mut sent = Sent::default();
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
        let step = if sent.jobs.is_empty() {
            idle(shared, id, current, &mut sent)
        } else {
            busy(shared, id, current, &mut sent)
        };
        match step {
            Step::Continue => {}
            Step::ReplaceWorker => {
                shared.board.set(id, SlotState::Down);
                if let Some(dead) = worker.take() {
                    stop_worker(id, dead);
                }
            }
            Step::Stop => break,
        }
    }
    if let Some(worker) = worker {
        stop_worker(id, worker);
    }
    shared.board.set(id, SlotState::Down);
}

/// Jobs sent to the worker, the running one first.
#[derive(Default)]
struct Sent {
    jobs: VecDeque<QueuedJob>,
    /// When the job at the front started running.
    head_since: Option<Instant>,
    /// Recent service time (exponentially weighted mean), microseconds.
    service_us: f64,
}

impl Sent {
    /// How many jobs the worker may hold now.
    fn limit(&self) -> usize {
        if self.service_us < SHORT_JOB_US {
            SENT_SHORT_JOBS
        } else {
            SENT_LONG_JOBS
        }
    }

    fn observe(&mut self, service_us: u64) {
        self.service_us = 0.8 * self.service_us + 0.2 * service_us as f64;
    }
}

/// Tops the worker up from the queues (retries first) while it may hold
/// more jobs, taking only the surplus: jobs beyond what the idle workers can
/// take right now. Returns `false` if the worker is gone.
fn feed(shared: &PoolShared, id: usize, worker: &mut WorkerProcess, sent: &mut Sent) -> bool {
    let mut batch = Vec::new();
    while sent.jobs.len() + batch.len() < sent.limit() && shared.queues.waiting() > shared.board.idle() {
        let Some(next) = shared.queues.try_next() else { break };
        batch.push(next);
    }
    send_batch(shared, id, worker, sent, batch)
}

/// What the driver loop does next.
enum Step {
    Continue,
    ReplaceWorker,
    Stop,
}

/// No job on the worker: wait for one (retries first) or for the pool to
/// stop, checking every [`IDLE_CHECK`] that the worker is still alive.
fn idle(shared: &PoolShared, id: usize, worker: &mut WorkerProcess, sent: &mut Sent) -> Step {
    shared.board.set(id, SlotState::Idle);
    let job = match shared.queues.wait_next(&shared.stop, Some(IDLE_CHECK)) {
        Waited::Job(job) => job,
        Waited::Stop => return Step::Stop,
        Waited::Nothing => {
            return match worker.results.try_recv() {
                Err(IpcTryRecvError::IpcError(_)) => {
                    tracing::warn!(worker = id, "worker process died while idle");
                    Step::ReplaceWorker
                }
                _ => Step::Continue,
            };
        }
    };
    if send(shared, id, worker, sent, job) && feed(shared, id, worker, sent) {
        Step::Continue
    } else {
        Step::ReplaceWorker
    }
}

/// Sends a job to the worker (unless its client has gone). Returns `false`
/// if the worker is gone (its jobs have then been retried or answered).
fn send(shared: &PoolShared, id: usize, worker: &mut WorkerProcess, sent: &mut Sent, job: QueuedJob) -> bool {
    send_batch(shared, id, worker, sent, vec![job])
}

/// Sends jobs to the worker in one message, skipping those whose client has
/// gone. Returns `false` if the worker is gone (every job sent to it has then
/// been retried or answered).
fn send_batch(
    shared: &PoolShared,
    id: usize,
    worker: &mut WorkerProcess,
    sent: &mut Sent,
    jobs: Vec<QueuedJob>,
) -> bool {
    let wanted: Vec<QueuedJob> =
        jobs.into_iter().filter(|job| shared.completer.still_wanted(job.id)).collect();
    if wanted.is_empty() {
        return true;
    }
    let now = Instant::now();
    let sent_ns = monotonic_ns();
    let waits: Vec<(Hop, u64)> = wanted
        .iter()
        .map(|job| (Hop::Queue, nanos(now.saturating_duration_since(job.accepted_at))))
        .collect();
    shared.board.hops().record_all(id, &waits);
    let items = wanted.iter().map(|job| WorkItem { job: job.id, kind: job.kind.clone(), sent_ns }).collect();
    sent.jobs.extend(wanted);
    if sent.head_since.is_none() {
        sent.head_since = Some(Instant::now());
    }
    shared.board.set(id, SlotState::Busy);
    if worker.jobs.send(ToWorker::Run { jobs: items }).is_err() {
        crashed(shared, id, worker, sent);
        return false;
    }
    true
}

/// Jobs on the worker: wait for a result, the running job's deadline, or a
/// stop; after each result, keep the worker fed.
fn busy(shared: &PoolShared, id: usize, worker: &mut WorkerProcess, sent: &mut Sent) -> Step {
    let started = sent.head_since.unwrap_or_else(Instant::now);
    let deadline = started + shared.job_timeout;
    let wait = deadline.saturating_duration_since(Instant::now()).min(BUSY_TICK);
    match worker.results.try_recv_timeout(wait) {
        Ok(FromWorker::Done { results, sent_ns }) => {
            let arrived = Arrived { results, sent_ns, read_ns: monotonic_ns() };
            results_arrived(shared, id, worker, sent, started, arrived)
        }
        Ok(other) => {
            tracing::warn!(worker = id, ?other, "unexpected message from worker");
            Step::Continue
        }
        Err(IpcTryRecvError::Empty) => nothing_arrived(shared, id, worker, sent, started, deadline),
        Err(IpcTryRecvError::IpcError(_)) => {
            tracing::warn!(worker = id, pid = worker.child.id(), "worker process died while running a job");
            crashed(shared, id, worker, sent);
            Step::ReplaceWorker
        }
    }
}

/// A results message from the worker, and when it was sent and read.
struct Arrived {
    results: Vec<JobDone>,
    sent_ns: u64,
    read_ns: u64,
}

/// Results came: each is answered, then the worker is fed again.
fn results_arrived(
    shared: &PoolShared,
    id: usize,
    worker: &mut WorkerProcess,
    sent: &mut Sent,
    started: Instant,
    arrived: Arrived,
) -> Step {
    // Results come in the order the jobs were sent; each job started
    // when the one before it finished.
    let mut started = started;
    let Arrived { results, sent_ns, read_ns } = arrived;
    for JobDone { job, service_us, result, clock } in results {
        let Some(head) = sent.jobs.pop_front().filter(|head| head.id == job) else {
            tracing::error!(worker = id, job, "worker answered a job it was not running; replacing it");
            crashed(shared, id, worker, sent);
            return Step::ReplaceWorker;
        };
        sent.observe(service_us);
        shared.board.job_done(id);
        let finishing = Instant::now();
        shared.completer.finish(JobReport {
            job: head.id,
            worker: id,
            host: None,
            queue_us: head.waited_us(started),
            service_us,
            attempts: head.attempt,
            result,
        });
        let gap = |from: u64, to: u64| to.saturating_sub(from);
        shared.board.hops().record_all(
            id,
            &[
                (Hop::ToWorker, gap(clock.sent_ns, clock.received_ns)),
                (Hop::BehindInWorker, gap(clock.received_ns, clock.started_ns)),
                (Hop::Run, gap(clock.started_ns, clock.done_ns)),
                (Hop::HeldInWorker, gap(clock.done_ns, sent_ns)),
                (Hop::ToDriver, gap(sent_ns, read_ns)),
                (Hop::Reply, nanos(finishing.elapsed())),
            ],
        );
        started += std::time::Duration::from_micros(service_us);
    }
    let now = Instant::now();
    sent.head_since = (!sent.jobs.is_empty()).then_some(now);
    // Keep the worker fed. With nothing left on it, take the next job
    // as any idle worker would; beyond that, only while no other
    // worker is idle (see `feed`).
    if sent.jobs.is_empty() {
        if let Some(next) = shared.queues.try_next() {
            if !send(shared, id, worker, sent, next) {
                return Step::ReplaceWorker;
            }
        }
    }
    if !feed(shared, id, worker, sent) {
        return Step::ReplaceWorker;
    }
    if sent.jobs.is_empty() {
        shared.board.set(id, SlotState::Idle);
    }
    Step::Continue
}

/// Nothing came within the tick: the pool may be stopping (every job on
/// the worker is answered SHUTTING_DOWN), or the job at the front may
/// have passed `--job-timeout` (the worker is killed and replaced).
fn nothing_arrived(
    shared: &PoolShared,
    id: usize,
    worker: &mut WorkerProcess,
    sent: &mut Sent,
    started: Instant,
    deadline: Instant,
) -> Step {
    if let Err(TryRecvError::Disconnected) = shared.stop.try_recv() {
        for job in sent.jobs.drain(..) {
            let message = "the server stopped before the job finished".to_string();
            shared.fail(&job, id, started, ErrorCode::ShuttingDown, message);
        }
        return Step::Stop;
    }
    if Instant::now() < deadline {
        return Step::Continue;
    }
    let pid = worker.child.id();
    tracing::warn!(worker = id, pid, timeout = ?shared.job_timeout, "job timed out; killing the worker");
    kill_and_reap(&mut worker.child);
    if let Some(head) = sent.jobs.pop_front() {
        let message = format!(
            "the job ran longer than --job-timeout ({:?}); worker {id} (pid {pid}) was killed and replaced",
            shared.job_timeout
        );
        shared.fail(&head, id, started, ErrorCode::Timeout, message);
    }
    // Jobs queued behind it never started: another worker takes them.
    crashed(shared, id, worker, sent);
    Step::ReplaceWorker
}

/// The worker is gone. The job at the front may have been running: it is
/// retried elsewhere if it may be (costing an attempt), or answered
/// `WORKER_CRASHED`. The jobs queued behind it had not started — results
/// arrive in order, so everything up to the front was already received — and
/// go back to the queue as they were; an injected fault among them is
/// answered instead, since it must never run twice.
fn crashed(shared: &PoolShared, id: usize, worker: &WorkerProcess, sent: &mut Sent) {
    let started = sent.head_since.take().unwrap_or_else(Instant::now);
    let pid = worker.child.id();
    let mut jobs = sent.jobs.drain(..);
    if let Some(head) = jobs.next() {
        shared.crashed(&head, id, started, format!("worker {id} (pid {pid}) died while running the job"));
    }
    for waiting in jobs {
        if !shared.completer.requeue(&waiting) {
            let message = format!("worker {id} (pid {pid}) died before it could start the job");
            shared.fail(&waiting, id, started, ErrorCode::WorkerCrashed, message);
        }
    }
}
