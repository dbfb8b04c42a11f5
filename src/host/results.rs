//! Sending results back: the results of a parcel's jobs are stored in the
//! results stream together (one signed message), and only then is the
//! parcel acknowledged — the order that makes a reply survive a broker
//! restart, and a host's death between the two steps cost duplicates the
//! gateway drops, never a loss.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use tokio::sync::mpsc;

use super::held::{Held, HeldJobs, Parcel, Settled};
use super::outcomes::HostEvent;
use crate::protocol::{JobResult, ReplyError};
use crate::remote::envelope::{now_ms, Signer};
use crate::remote::wire::{self, JobToken, RemoteResult};
use crate::runtime::pool::JobReport;
use crate::work::job::JobId;

/// How long one try to store a result (or acknowledge a job) may wait for
/// JetStream before it is tried again.
const STORE_WAIT: Duration = Duration::from_secs(2);
/// The pause between two tries to store a result while NATS is away.
const STORE_RETRY: Duration = Duration::from_millis(500);

/// How a held job ended, as its result tells the gateway.
pub(super) struct Outcome {
    /// The local worker that ran it (0 when it never ran).
    pub(super) worker: usize,
    /// Microseconds it waited for a worker here.
    pub(super) queue_us: u64,
    /// Microseconds it ran.
    pub(super) service_us: u64,
    /// Its result, or why it failed or was refused.
    pub(super) result: JobResult,
}

impl Outcome {
    /// What the pool reported for it.
    fn of(report: JobReport) -> Outcome {
        Outcome {
            worker: report.worker,
            queue_us: report.queue_us,
            service_us: report.service_us,
            result: report.result,
        }
    }

    /// A job refused before it ran.
    pub(super) fn refused(error: ReplyError) -> Outcome {
        Outcome { worker: 0, queue_us: 0, service_us: 0, result: Err(error) }
    }
}

/// Settles each job the pool reports on — finished, or handed back — in its
/// parcel; a parcel whose last job this was is sent back by a task of its
/// own, so one waiting for NATS to come back does not hold up the others
/// (at most one per held parcel, so as many as the slots).
pub(super) async fn report_results(
    answerer: Arc<Answerer>,
    held: Arc<HeldJobs>,
    mut events: mpsc::UnboundedReceiver<HostEvent>,
) {
    while let Some(event) = events.recv().await {
        let (id, report) = match event {
            HostEvent::Done(report) => (report.job, Some(report)),
            HostEvent::HandBack(id) => (id, None),
        };
        let result = |job: &Held| {
            report
                .map(|report| answerer.result((job.job, job.token), job.parcel.attempts, Outcome::of(report)))
        };
        if let Some((parcel, settled)) = held.settle(id, result) {
            let answerer = Arc::clone(&answerer);
            tokio::spawn(async move { answerer.send(&parcel, settled).await });
        }
    }
}

/// Sends results: signed, into the results stream.
pub(super) struct Answerer {
    /// Where results are stored.
    pub(super) js: jetstream::Context,
    /// Signs each results message with the farm key.
    pub(super) signer: Arc<Signer>,
    /// This host's name, in every result.
    pub(super) name: String,
}

impl Answerer {
    /// The result of one job, as its gateway reads it.
    pub(super) fn result(
        &self,
        (job, token): (JobId, JobToken),
        attempts: u32,
        outcome: Outcome,
    ) -> RemoteResult {
        RemoteResult {
            job,
            token,
            host: self.name.clone(),
            worker: outcome.worker,
            queue_us: outcome.queue_us,
            service_us: outcome.service_us,
            attempts,
            result: outcome.result,
        }
    }

    /// Stores a settled parcel's results in JetStream, then acknowledges
    /// the parcel (or hands it back, when a job in it could not run here).
    ///
    /// The order is the whole argument for exactly one reply: the parcel
    /// leaves the jobs stream only once its results are stored (and so
    /// survive a broker restart). While NATS is away the results are tried
    /// again until the parcel's deadline (after it the gateway has answered
    /// the jobs itself); the message's `Nats-Msg-Id` (its first job's token
    /// and this delivery's number) makes a second store of it a no-op. If
    /// the host dies between the two steps, the parcel runs again elsewhere
    /// and the gateway drops the second results.
    pub(super) async fn send(&self, parcel: &Parcel, settled: Settled) {
        if !settled.results.is_empty() && !self.store(parcel, &settled.results).await {
            return;
        }
        // The results are safe; now the parcel may leave the stream (or go
        // back, for the jobs that could not run here). A plain ack, not one
        // JetStream confirms: a lost acknowledgement only means the parcel
        // runs again and the gateway drops the duplicates, so waiting for a
        // confirmation would cost every parcel a round trip for nothing.
        let answer = if settled.hand_back { AckKind::Nak(None) } else { AckKind::Ack };
        let _ = tokio::time::timeout(STORE_WAIT, parcel.message.ack_with(answer)).await;
    }

    /// Stores `results` (one message), trying again until the parcel's
    /// deadline; false if that passed first.
    async fn store(&self, parcel: &Parcel, results: &[RemoteResult]) -> bool {
        let bytes = match wire::encode(&results) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode results");
                return false;
            }
        };
        let name = format!("r-{}-{}", wire::token_hex(parcel.first_token), parcel.attempts);
        let mut tries = 0u32;
        loop {
            tries += 1;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", name.as_str());
            self.signer.sign(&parcel.reply_to, &mut headers, &bytes);
            let stored = tokio::time::timeout(STORE_WAIT, async {
                let ack = self
                    .js
                    .publish_with_headers(parcel.reply_to.clone(), headers, bytes.clone().into())
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map(|_| ()).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|_| Err("no acknowledgement from JetStream in time".into()));
            match stored {
                Ok(()) => return true,
                Err(e) if now_ms() > parcel.expires_ms => {
                    tracing::warn!(results = %name, jobs = results.len(), error = %e, tries, "cannot store results before their deadline; their gateway has answered the jobs");
                    return false;
                }
                Err(e) => {
                    if tries == 1 {
                        tracing::warn!(results = %name, jobs = results.len(), error = %e, "cannot store results yet; trying again until their deadline");
                    }
                    tokio::time::sleep(STORE_RETRY).await;
                }
            }
        }
    }
}
