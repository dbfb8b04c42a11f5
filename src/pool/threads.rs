//! Thread mode: each worker is a thread of the server that runs jobs itself.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::select;

use super::{micros_since, WorkerContext};
use crate::dispatch::JobReport;
use crate::error::{Error, Result};
use crate::job::{execute, JobFailure};
use crate::protocol::ErrorCode;

/// Starts worker thread `context.id`. The worker counts as up from here,
/// so a `health` request right after start-up sees the whole pool.
pub(super) fn start(context: WorkerContext) -> Result<JoinHandle<()>> {
    let id = context.id;
    context.board.set_up(id, None);
    thread::Builder::new()
        .name(format!("worker-{id}"))
        .spawn(move || serve(context))
        .map_err(|e| Error::io(format!("starting worker thread {id}"), e))
}

/// Takes jobs off the shared queue until the pool stops.
fn serve(ctx: WorkerContext) {
    loop {
        // Wait for whichever comes first: a job, or the pool closing.
        let job = select! {
            recv(ctx.stop) -> _ => break,
            recv(ctx.jobs) -> job => match job {
                Ok(job) => job,
                Err(_) => break, // every dispatcher is gone
            },
        };
        if !ctx.completer.still_wanted(job.id) {
            continue;
        }
        let queue_us = micros_since(job.accepted_at);
        ctx.board.set_busy(ctx.id, true);
        let started = Instant::now();
        // A panic in a job must not take the worker (or the server) down:
        // catch it and answer the job with INTERNAL.
        let result = catch_unwind(AssertUnwindSafe(|| execute(&job.kind))).unwrap_or_else(|_| {
            Err(JobFailure {
                code: ErrorCode::Internal,
                message: format!(
                    "the job panicked on worker thread {}; the worker goes on serving",
                    ctx.id
                ),
            })
        });
        let service_us = micros_since(started);
        ctx.board.set_busy(ctx.id, false);
        ctx.board.job_done(ctx.id);
        ctx.completer.finish(JobReport {
            job: job.id,
            worker: ctx.id,
            queue_us,
            service_us,
            result,
        });
    }
    ctx.board.set_down(ctx.id);
}
