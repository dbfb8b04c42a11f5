//! The messages that cross NATS. Jobs and results are postcard (compact
//! binary: a predict job carries image bytes); heartbeats are JSON, so
//! `nats sub tc.hosts` shows them to a person.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::protocol::JobResult;
use crate::work::job::{ImageData, JobId, JobKind};

/// A job's name on the farm: random, so nobody can guess the next one
/// (a result names the job it answers by this).
pub(crate) type JobToken = u128;

/// A new random [`JobToken`].
pub(crate) fn new_token() -> JobToken {
    uuid::Uuid::new_v4().as_u128()
}

/// Jobs on their way to a worker host: one stream message, a **parcel** of
/// one or more jobs of one gateway with one deadline and attempt limit.
///
/// A parcel is delivered, redelivered, acknowledged and judged (signature,
/// replay, deadline, gateway alive, attempt limit) as one message; each job
/// in it keeps its own token and gets its own result. Gateways pack only
/// short `compute` jobs, and only while more than one is waiting
/// (`server::gateway::forward`); anything else travels alone.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JobParcel {
    /// The gateway that asked (hosts skip the jobs of a gateway gone silent).
    pub(crate) gateway: String,
    /// When the gateway stops waiting and answers the jobs itself
    /// (milliseconds since the Unix epoch): a host never starts them after this.
    pub(crate) expires_ms: u64,
    /// Where the results go (the gateway's results subject).
    pub(crate) reply_to: String,
    /// Deliveries allowed before the jobs are answered `WORKER_CRASHED`
    /// without running again (`1 + --retries`; 1 for an injected fault).
    pub(crate) max_attempts: u32,
    /// The jobs, at least one.
    pub(crate) jobs: Vec<ParcelJob>,
}

/// One job in a [`JobParcel`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ParcelJob {
    /// The job's id in the asking gateway's registry.
    pub(crate) job: JobId,
    /// Its unguessable name; the result must carry it back.
    pub(crate) token: JobToken,
    /// The work.
    pub(crate) kind: JobKind,
}

impl ParcelJob {
    /// The job, ready for the wire: images in shared memory (a local worker
    /// process's buffer) are copied into the message, since shared memory
    /// cannot leave this machine.
    pub(crate) fn new(job: JobId, token: JobToken, mut kind: JobKind) -> Self {
        if let JobKind::Predict(predict) = &mut kind {
            if let ImageData::Shared(memory) = &predict.images.data {
                predict.images.data = ImageData::Local(memory.to_vec());
            }
        }
        ParcelJob { job, token, kind }
    }
}

/// The word a gateway answers a results message with once it has taken it
/// (each result routed, or dropped as a duplicate): the host may then
/// acknowledge the parcel. See [`results_receipt`].
pub(crate) const RESULTS_RECEIPT: &[u8] = b"taken";

/// The receipt for one results message: [`RESULTS_RECEIPT`], then that
/// message's own signature (`Tc-Sig`, when it has one). Signed like every
/// message, for the request's own reply subject, so it cannot be forged;
/// naming the results it answers binds it to them: anyone can copy an
/// earlier results message from the gateway's subject and send it again
/// with a reply subject of their choosing (the gateway confirms a
/// duplicate, as it must for a host whose first receipt was lost), but the
/// receipt that earns names the old signature, and a host accepts only one
/// that names the signature of its current try — so no copy can make a
/// host let go of results its gateway never had.
pub(crate) fn results_receipt(signature: Option<&str>) -> Vec<u8> {
    let mut receipt = RESULTS_RECEIPT.to_vec();
    if let Some(signature) = signature {
        receipt.push(b' ');
        receipt.extend_from_slice(signature.as_bytes());
    }
    receipt
}

/// A finished job on its way back to its gateway. A host sends the
/// results of one parcel together, in one message (a `Vec` of these), as a
/// request its gateway answers with [`RESULTS_RECEIPT`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RemoteResult {
    /// The job's id in the gateway's registry.
    pub(crate) job: JobId,
    /// The job's token, as the job carried it.
    pub(crate) token: JobToken,
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

/// The version of the messages between gateways and hosts (jobs, results,
/// receipts, beats), raised whenever one of them changes. Both beats carry
/// it, so a member of another release is named in the log instead of
/// failing quietly — its jobs, results or receipts are not understood here.
/// Beats of releases before the field say nothing, and read as 1.
pub(crate) const WIRE_VERSION: u32 = 2;

/// What a beat without a version is: an earlier release.
fn before_versions() -> u32 {
    1
}

/// What to say when `who` (e.g. "host \"h1\"") beats with another
/// [`WIRE_VERSION`]; `None` when it is this one.
pub(crate) fn other_release(wire: u32, who: &str) -> Option<String> {
    (wire != WIRE_VERSION).then(|| {
        format!(
            "{who} speaks version {wire} of the messages between gateways and hosts, this process version \
             {WIRE_VERSION}: it runs another ThreadCenter release, and the jobs, results or receipts between \
             the two may not be understood; run one release on every gateway and host"
        )
    })
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
    /// The tokens (hex) of the jobs it holds, so a host that is handed one
    /// of them again can tell a broker's redelivery (the holder is alive)
    /// from a crash (nobody alive holds it).
    #[serde(default)]
    pub(crate) holding: Vec<String>,
    /// Set in the last heartbeat of a host that stops cleanly, so its
    /// gateways count it gone at once and say it left, not that it was lost.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) leaving: bool,
    /// Its [`WIRE_VERSION`].
    #[serde(default = "before_versions")]
    pub(crate) wire: u32,
}

/// What a gateway says every second: that it is alive (hosts do not run
/// the jobs of a gateway gone silent: nobody would read the result).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct GatewayBeat {
    /// Its id (the one in its jobs and its results subject).
    pub(crate) gateway: String,
    /// Its [`WIRE_VERSION`].
    #[serde(default = "before_versions")]
    pub(crate) wire: u32,
}

/// A token as heartbeats carry it.
pub(crate) fn token_hex(token: JobToken) -> String {
    format!("{token:032x}")
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
    fn a_beat_of_an_earlier_release_is_told_apart_and_named() {
        let old: GatewayBeat = serde_json::from_str(r#"{"gateway":"g1"}"#).unwrap();
        assert_eq!(old.wire, 1);
        let said = other_release(old.wire, "gateway \"g1\"").unwrap();
        assert!(
            said.contains("gateway \"g1\" speaks version 1") && said.contains("another ThreadCenter release")
        );
        let now: GatewayBeat = serde_json::from_slice(
            &serde_json::to_vec(&GatewayBeat { gateway: "g1".into(), wire: WIRE_VERSION }).unwrap(),
        )
        .unwrap();
        assert_eq!(other_release(now.wire, "gateway \"g1\""), None);
    }

    #[test]
    fn jobs_and_results_survive_the_wire() {
        let parcel = JobParcel {
            gateway: "g".into(),
            expires_ms: 1234,
            reply_to: "tc.answers.g".into(),
            max_attempts: 2,
            jobs: vec![
                ParcelJob::new(7, 99, JobKind::Compute { n: 10 }),
                ParcelJob::new(8, 100, JobKind::Compute { n: 3 }),
            ],
        };
        let back: JobParcel = decode(&encode(&parcel).unwrap()).unwrap();
        assert_eq!((back.reply_to.as_str(), back.max_attempts), ("tc.answers.g", 2));
        assert_eq!((back.gateway.as_str(), back.expires_ms), ("g", 1234));
        let jobs: Vec<(JobId, JobToken, JobKind)> =
            back.jobs.into_iter().map(|j| (j.job, j.token, j.kind)).collect();
        assert_eq!(jobs, vec![(7, 99, JobKind::Compute { n: 10 }), (8, 100, JobKind::Compute { n: 3 })]);
        let result = |job, value| RemoteResult {
            job,
            token: 99,
            host: "h1".into(),
            worker: 1,
            queue_us: 3,
            service_us: 4,
            attempts: 1,
            result: Ok(JobOutput::Compute(value)),
        };
        let back: Vec<RemoteResult> =
            decode(&encode(&vec![result(7, 8360), result(8, 11)]).unwrap()).unwrap();
        let values: Vec<_> = back.iter().map(|r| (r.job, r.result.clone())).collect();
        assert_eq!(values, vec![(7, Ok(JobOutput::Compute(8360))), (8, Ok(JobOutput::Compute(11)))]);
        assert!(decode::<Vec<RemoteResult>>(b"\xff\xff garbage").is_err());
    }
}
