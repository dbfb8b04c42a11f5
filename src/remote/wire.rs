//! The messages that cross NATS. Jobs and results are postcard (compact
//! binary: a predict job carries image bytes); heartbeats are JSON, so
//! `nats sub tc.hosts` shows them to a person.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::protocol::JobResult;
use crate::work::job::{ImageData, JobId, JobKind};

/// A job on its way to a worker host.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RemoteJob {
    /// The job's id in the asking gateway's registry.
    pub(crate) job: JobId,
    /// Where the result goes (the gateway's results subject).
    pub(crate) reply_to: String,
    /// Deliveries allowed before the job is answered `WORKER_CRASHED`
    /// without running again (`1 + --retries`; 1 for an injected fault).
    pub(crate) max_attempts: u32,
    /// The work.
    pub(crate) kind: JobKind,
}

/// A finished job on its way back to its gateway.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RemoteResult {
    /// The job's id in the gateway's registry.
    pub(crate) job: JobId,
    /// The host that ran it (`--name`).
    pub(crate) host: String,
    /// The worker on that host.
    pub(crate) worker: usize,
    /// Microseconds from the host taking the job to a worker starting it.
    pub(crate) queue_us: u64,
    /// Microseconds the job ran.
    pub(crate) service_us: u64,
    /// Deliveries so far (1 unless a host died with it).
    pub(crate) attempts: u32,
    /// Its result or failure.
    pub(crate) result: JobResult,
}

/// What a host says about itself every second.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Heartbeat {
    /// `--name`, unique per host.
    pub(crate) name: String,
    /// Workers configured.
    pub(crate) slots: usize,
    /// Jobs the host holds now (running or about to).
    pub(crate) busy: usize,
    /// Jobs it has finished since it started.
    pub(crate) jobs_done: u64,
    /// Worker replacements since it started.
    pub(crate) restarts: u64,
    /// `threads` or `processes`.
    pub(crate) mode: String,
}

impl RemoteJob {
    /// The job, ready for the wire: images in shared memory (a local worker
    /// process's buffer) are copied into the message, since shared memory
    /// cannot leave this machine.
    pub(crate) fn new(job: JobId, reply_to: String, max_attempts: u32, mut kind: JobKind) -> Self {
        if let JobKind::Predict(predict) = &mut kind {
            if let ImageData::Shared(memory) = &predict.images.data {
                predict.images.data = ImageData::Local(memory.to_vec());
            }
        }
        RemoteJob { job, reply_to, max_attempts, kind }
    }
}

/// Encodes a job or a result.
///
/// # Errors
/// Never for our own types in practice; reported rather than unwrapped.
pub(crate) fn encode(message: &impl Serialize) -> Result<Vec<u8>> {
    postcard::to_allocvec(message).map_err(|e| Error::Remote(format!("cannot encode a message: {e}")))
}

/// Decodes a job or a result.
///
/// # Errors
/// Bytes that are not such a message (another program on the subject, or
/// another version of ThreadCenter).
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::Remote(format!("a message that is not ThreadCenter's: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::JobOutput;

    #[test]
    fn jobs_and_results_survive_the_wire() {
        let job = RemoteJob::new(7, "tc.results.g".into(), 2, JobKind::Compute { n: 10 });
        let back: RemoteJob = decode(&encode(&job).unwrap()).unwrap();
        assert_eq!((back.job, back.reply_to.as_str(), back.max_attempts), (7, "tc.results.g", 2));
        assert_eq!(back.kind, JobKind::Compute { n: 10 });
        let result = RemoteResult {
            job: 7,
            host: "h1".into(),
            worker: 1,
            queue_us: 3,
            service_us: 4,
            attempts: 1,
            result: Ok(JobOutput::Compute(8360)),
        };
        let back: RemoteResult = decode(&encode(&result).unwrap()).unwrap();
        assert_eq!(back.result, Ok(JobOutput::Compute(8360)));
        assert!(decode::<RemoteResult>(b"\xff\xff garbage").is_err());
    }
}
