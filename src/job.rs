//! Jobs: what a worker runs, and what it sends back.
//!
//! These types cross the process boundary (over ipc-channel, serialized with
//! postcard), so they are plain data: no references, no `serde_json::Value`.
//! [`execute`] is *the* job code — thread workers call it directly and worker
//! processes call it after receiving a job — so both modes compute exactly
//! the same thing.

use serde::{Deserialize, Serialize};

use crate::compute::compute;
use crate::protocol::ErrorCode;

/// Identifies one accepted job for the whole life of the server. Job ids are
/// never reused, so a late reply can never be mistaken for a newer job's.
pub type JobId = u64;

/// The work itself, without any routing information.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    /// The original ThreadCenter CPU-bound function.
    Compute {
        /// Number of steps.
        n: u64,
    },
    /// A fault injected on purpose (`--allow-chaos`), for demos and tests.
    Chaos(Chaos),
}

/// Faults a worker can be asked to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Chaos {
    /// Die at once (`abort`). In a worker process this kills that process;
    /// in thread mode it kills the whole server — which is the lesson.
    Crash,
    /// Never finish (until the job timeout has the worker replaced).
    Hang,
    /// Sleep this many milliseconds, then answer.
    Sleep {
        /// Milliseconds.
        ms: u64,
    },
    /// Panic. A worker thread catches it (INTERNAL); a worker process dies.
    Panic,
}

impl JobKind {
    /// Whether running the job twice is harmless, so it may be retried on
    /// another worker after a crash. Injected faults are not retried: they
    /// would only strike again.
    pub fn is_idempotent(&self) -> bool {
        matches!(self, JobKind::Compute { .. })
    }
}

/// A job's successful result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobOutput {
    /// The checksum returned by [`compute`].
    Compute(u64),
    /// A chaos `sleep` that woke up: how long it slept, in milliseconds.
    Slept(u64),
}

/// Why a job produced no result, as the error reply will report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailure {
    /// The error code for the client.
    pub code: ErrorCode,
    /// A sentence a person can act on.
    pub message: String,
}

/// What running a job yields.
pub type JobResult = Result<JobOutput, JobFailure>;

/// Runs one job to completion on the calling thread.
pub fn execute(kind: &JobKind) -> JobResult {
    match kind {
        JobKind::Compute { n } => Ok(JobOutput::Compute(compute(*n))),
        JobKind::Chaos(chaos) => commit(*chaos),
    }
}

/// Commits an injected fault.
fn commit(chaos: Chaos) -> JobResult {
    match chaos {
        Chaos::Crash => {
            eprintln!("chaos: crash requested; aborting process {}", std::process::id());
            // A requested crash is a demo, not a bug to debug: leave no core file.
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            std::process::abort()
        }
        Chaos::Hang => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        Chaos::Sleep { ms } => {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(JobOutput::Slept(ms))
        }
        Chaos::Panic => panic!("chaos: panic requested"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_jobs_return_the_kernel_value() {
        assert_eq!(execute(&JobKind::Compute { n: 10 }), Ok(JobOutput::Compute(8360)));
    }
}
