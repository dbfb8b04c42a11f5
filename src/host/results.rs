//! Sending results back: each finished job's result is stored in the
//! results stream (signed), and only then is the job acknowledged — the
//! order that makes a reply survive a broker restart, and a host's death
//! between the two steps cost a duplicate the gateway drops, never a loss.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use tokio::sync::mpsc;

use super::held::{Held, HeldJobs};
use super::outcomes::HostEvent;
use crate::protocol::{JobResult, ReplyError};
use crate::remote::envelope::{now_ms, Signer};
use crate::remote::wire::{self, RemoteResult};
use crate::runtime::pool::JobReport;

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

/// Stores each finished job's result, then acknowledges the job; hands back
/// jobs the pool could not run. Each result is sent by a task of its own,
/// so one waiting for NATS to come back does not hold up the others (at
/// most one per held job, so as many as the slots).
pub(super) async fn report_results(
    answerer: Arc<Answerer>,
    held: Arc<HeldJobs>,
    mut events: mpsc::UnboundedReceiver<HostEvent>,
) {
    while let Some(event) = events.recv().await {
        match event {
            HostEvent::Done(report) => {
                let Some(job) = held.take(report.job) else { continue };
                let answerer = Arc::clone(&answerer);
                tokio::spawn(async move { answerer.answer(job, Outcome::of(report)).await });
            }
            HostEvent::HandBack(id) => {
                if let Some(job) = held.take(id) {
                    // Redelivered at once, to whichever host asks next.
                    let _ = job.message.ack_with(AckKind::Nak(None)).await;
                }
            }
        }
    }
}

/// Sends results: signed, into the results stream.
pub(super) struct Answerer {
    /// Where results are stored.
    pub(super) js: jetstream::Context,
    /// Signs each result with the farm key.
    pub(super) signer: Arc<Signer>,
    /// This host's name, in every result.
    pub(super) name: String,
}

impl Answerer {
    /// Stores one job's result in JetStream, then acknowledges the job.
    ///
    /// The order is the whole argument for exactly one reply: the job leaves
    /// the jobs stream only once its result is stored (and so survives a
    /// broker restart). While NATS is away the result is tried again until
    /// the job's deadline (after it the gateway has answered the job itself);
    /// the result's `Nats-Msg-Id` makes a second store of it a no-op. If the
    /// host dies between the two steps, the job runs again elsewhere and the
    /// gateway drops the second result.
    pub(super) async fn answer(&self, job: Arc<Held>, outcome: Outcome) {
        let message = RemoteResult {
            job: job.job,
            token: job.token,
            host: self.name.clone(),
            worker: outcome.worker,
            queue_us: outcome.queue_us,
            service_us: outcome.service_us,
            attempts: job.attempts,
            result: outcome.result,
        };
        let bytes = match wire::encode(&message) {
            Ok(bytes) => bytes,
            Err(e) => return tracing::warn!(error = %e, job = job.job, "cannot encode a result"),
        };
        let token = wire::token_hex(job.token);
        let mut tries = 0u32;
        loop {
            tries += 1;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("r-{token}").as_str());
            self.signer.sign(&job.reply_to, &mut headers, &bytes);
            let stored = tokio::time::timeout(STORE_WAIT, async {
                let ack = self
                    .js
                    .publish_with_headers(job.reply_to.clone(), headers, bytes.clone().into())
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map(|_| ()).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|_| Err("no acknowledgement from JetStream in time".into()));
            match stored {
                Ok(()) => break,
                Err(e) if now_ms() > job.expires_ms => {
                    return tracing::warn!(job = %token, error = %e, tries, "cannot store a result before the job's deadline; its gateway has answered it");
                }
                Err(e) => {
                    if tries == 1 {
                        tracing::warn!(job = %token, error = %e, "cannot store a result yet; trying again until the job's deadline");
                    }
                    tokio::time::sleep(STORE_RETRY).await;
                }
            }
        }
        // The result is safe; now the job may leave the stream. A lost
        // acknowledgement only means the job runs again and the gateway drops
        // the duplicate.
        let _ = tokio::time::timeout(STORE_WAIT, job.message.double_ack()).await;
    }
}
