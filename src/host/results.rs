//! Sending results back: the results of a parcel's jobs go to their gateway
//! together (one signed request over core NATS), and only once the gateway
//! has said it took them (a signed receipt) is the parcel acknowledged —
//! the order that makes a reply survive a broker restart or a lost message
//! (the host tries again; the parcel is still in the jobs stream), and a
//! host's death between the two steps cost duplicates the gateway drops,
//! never a loss.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use tokio::sync::mpsc;

use super::held::{Held, HeldJobs, Parcel, Settled};
use super::keep_alive::PROGRESS_EVERY;
use super::outcomes::HostEvent;
use super::peers::{Peers, GATEWAY_GONE_AFTER};
use crate::protocol::{JobResult, ReplyError};
use crate::remote::connect::LinkState;
use crate::remote::envelope::{now_ms, Signer, Verifier};
use crate::remote::wire::{self, JobToken, RemoteResult, RESULTS_RECEIPT};
use crate::runtime::pool::JobReport;
use crate::work::job::JobId;

/// How long one try to hand results to their gateway (or acknowledge a
/// job) may wait for an answer before it is tried again.
const DELIVER_WAIT: Duration = Duration::from_secs(2);
/// The pause between two tries to hand results over while NATS or their
/// gateway is away.
const DELIVER_RETRY: Duration = Duration::from_millis(500);

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
            // Counted from here, so a drain that sees no job held also
            // waits for the results still on their way.
            answerer.sending.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                answerer.send(&parcel, settled).await;
                answerer.sending.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}

/// Sends results: signed, to the gateway that asked.
pub(super) struct Answerer {
    /// The link to NATS: results travel as requests, receipts as replies.
    pub(super) client: async_nats::Client,
    /// Signs each results message with the farm key.
    pub(super) signer: Arc<Signer>,
    /// Checks the gateway's receipt (a forged one would lose the results).
    pub(super) verifier: Verifier,
    /// Which gateways are alive: results for a gone one are not retried.
    pub(super) peers: Arc<Peers>,
    /// This host's own link: a gateway's silence means nothing until the
    /// link has been up long enough to have heard it.
    pub(super) link: Arc<LinkState>,
    /// This host's name, in every result.
    pub(super) name: String,
    /// Settled parcels whose results are still being handed over (and the
    /// parcel acknowledged): a drain waits for these as for held jobs.
    pub(super) sending: AtomicUsize,
}

impl Answerer {
    /// Whether results are still on their way to a gateway.
    pub(super) fn sending(&self) -> bool {
        self.sending.load(Ordering::SeqCst) > 0
    }

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

    /// Hands a settled parcel's results to its gateway, then acknowledges
    /// the parcel (or hands it back, when a job in it could not run here).
    ///
    /// The order is the whole argument for exactly one reply: the parcel
    /// leaves the jobs stream only once its gateway has the results. While
    /// NATS or the gateway is away the results are tried again until the
    /// parcel's deadline (after it the gateway has answered the jobs
    /// itself) or until the gateway is gone (nobody waits for them); a
    /// second delivery of the same results, when a receipt was lost, is a
    /// duplicate the gateway drops (and still confirms). If the host dies
    /// between the two steps, the parcel runs again elsewhere and the
    /// gateway drops the second results.
    pub(super) async fn send(&self, parcel: &Parcel, settled: Settled) {
        if !settled.results.is_empty() && !self.deliver(parcel, &settled.results).await {
            return;
        }
        // The results are safe; now the parcel may leave the stream (or go
        // back, for the jobs that could not run here). A plain ack, not one
        // JetStream confirms: a lost acknowledgement only means the parcel
        // runs again and the gateway drops the duplicates, so waiting for a
        // confirmation would cost every parcel a round trip for nothing.
        let answer = if settled.hand_back { AckKind::Nak(None) } else { AckKind::Ack };
        let _ = tokio::time::timeout(DELIVER_WAIT, parcel.message.ack_with(answer)).await;
    }

    /// Hands `results` (one message) to their gateway, trying again until
    /// it confirms; false if the parcel's deadline passed first or the
    /// gateway is gone (the parcel is then left unacknowledged: redelivered
    /// after the ack wait, it is dropped by whichever host sees its
    /// deadline passed or its gateway silent).
    async fn deliver(&self, parcel: &Parcel, results: &[RemoteResult]) -> bool {
        let bytes = match wire::encode(&results) {
            Ok(bytes) => bytes::Bytes::from(bytes),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode results");
                return false;
            }
        };
        let name = format!("{}#{}", wire::token_hex(parcel.first_token), parcel.attempts);
        let mut tries = 0u32;
        let mut last_progress = parcel.taken_at;
        loop {
            tries += 1;
            let mut headers = async_nats::HeaderMap::new();
            self.signer.sign(&parcel.reply_to, &mut headers, &bytes);
            // Each try is signed anew, and only a receipt naming this try's
            // signature confirms it (wire::results_receipt).
            let expected = wire::results_receipt(Verifier::signature_of(Some(&headers)));
            let request = async_nats::Request::new()
                .headers(headers)
                .payload(bytes.clone())
                .timeout(Some(DELIVER_WAIT));
            let delivered = match self.client.send_request(parcel.reply_to.clone(), request).await {
                Ok(receipt) => self.check_receipt(&receipt, &expected),
                Err(e) => Err(e.to_string()),
            };
            let Err(e) = delivered else { return true };
            if now_ms() > parcel.expires_ms {
                tracing::warn!(results = %name, jobs = results.len(), error = %e, tries, "cannot hand results to their gateway before their deadline; it has answered the jobs");
                return false;
            }
            // As the fetcher judges a job's gateway: only once this host has
            // been connected long enough to have heard it (after a broker
            // restart every gateway is silent for a while, and alive).
            if self.link.up_for() >= GATEWAY_GONE_AFTER
                && self.peers.gateway_gone(&parcel.gateway, Instant::now())
            {
                tracing::warn!(results = %name, jobs = results.len(), error = %e, tries, gateway = %parcel.gateway, "the gateway of these results is gone; dropping them");
                return false;
            }
            if tries == 1 {
                tracing::warn!(results = %name, jobs = results.len(), error = %e, "cannot hand results to their gateway yet; trying again until their deadline");
            }
            // The parcel is done here: while its results wait for their
            // gateway (cut off, say), it must not look lost and run again.
            if last_progress.elapsed() >= PROGRESS_EVERY {
                let _ = tokio::time::timeout(DELIVER_WAIT, parcel.message.ack_with(AckKind::Progress)).await;
                last_progress = Instant::now();
            }
            tokio::time::sleep(DELIVER_RETRY).await;
        }
    }

    /// Whether a reply is the gateway's receipt for these very results:
    /// signed (with a farm key) for this request's inbox, so not forged,
    /// and naming this try's signature (`expected`), so not earned by a
    /// copy of earlier results.
    fn check_receipt(&self, reply: &async_nats::Message, expected: &[u8]) -> Result<(), String> {
        check_receipt(&self.verifier, reply, expected)
    }
}

/// [`Answerer::check_receipt`], on its own so a test can give it receipts.
fn check_receipt(verifier: &Verifier, reply: &async_nats::Message, expected: &[u8]) -> Result<(), String> {
    verifier
        .verify(reply.subject.as_str(), reply.headers.as_ref(), &reply.payload)
        .map_err(|why| format!("a receipt that does not check out: {why}"))?;
    if reply.payload.as_ref() == expected {
        Ok(())
    } else if reply.payload.starts_with(RESULTS_RECEIPT) {
        Err("a receipt for other results (a copy of earlier ones was answered, not these)".into())
    } else {
        Err(format!("an unexpected answer to results: {:?}", String::from_utf8_lossy(&reply.payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::envelope::FarmKey;

    /// A results try's signature, and the gateway's receipt for the results
    /// that carried `answered` (its signature), on `inbox`.
    fn receipt(gateway: &Signer, inbox: &str, answered: Option<&str>) -> async_nats::Message {
        let payload = wire::results_receipt(answered);
        let mut headers = async_nats::HeaderMap::new();
        gateway.sign(inbox, &mut headers, &payload);
        async_nats::Message {
            subject: inbox.into(),
            reply: None,
            payload: payload.into(),
            headers: Some(headers),
            status: None,
            description: None,
            length: 0,
        }
    }

    /// The signature a host's try of some results carries.
    fn try_signature(host: &Signer) -> String {
        let mut headers = async_nats::HeaderMap::new();
        host.sign("tc.answers.g1", &mut headers, b"[results]");
        Verifier::signature_of(Some(&headers)).unwrap().to_string()
    }

    #[test]
    fn only_a_receipt_naming_this_try_of_the_results_lets_them_go() {
        let key = || Some(FarmKey::from_secret(b"a farm key for the receipt test, 32+ bytes"));
        let (gateway, host, verifier) = (Signer::new(key()), Signer::new(key()), Verifier::new(key()));
        let (earlier, current) = (try_signature(&host), try_signature(&host));
        let expected = wire::results_receipt(Some(&current));
        let inbox = "_INBOX.host.7";
        assert_eq!(check_receipt(&verifier, &receipt(&gateway, inbox, Some(&current)), &expected), Ok(()));
        // A copy of earlier results, sent again with this try's inbox as its
        // reply subject: the gateway's (genuine) receipt names the copy.
        let why = check_receipt(&verifier, &receipt(&gateway, inbox, Some(&earlier)), &expected).unwrap_err();
        assert!(why.contains("a receipt for other results"), "{why}");
        // A bare "taken" (what a receipt was before it named its results).
        assert!(check_receipt(&verifier, &receipt(&gateway, inbox, None), &expected).is_err());
        // Signed by a stranger's key.
        let stranger = Signer::new(Some(FarmKey::from_secret(b"not the farm's key, but 32 bytes or more")));
        let why =
            check_receipt(&verifier, &receipt(&stranger, inbox, Some(&current)), &expected).unwrap_err();
        assert!(why.contains("does not check out"), "{why}");
    }
}
