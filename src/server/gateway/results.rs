//! The incoming half of the gateway: results, sent by hosts as requests
//! on this gateway's own subject, each checked (signature, its job's
//! token) and handed to the completer — a second result for a job is
//! dropped and counted, so a client gets exactly one reply. Each message
//! taken is answered with a signed receipt, duplicates too: only then does
//! its host acknowledge the parcel, so a result lost on the way (a broker
//! restart, this gateway cut off) is sent again, never lost.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crossbeam_channel::Sender;
use futures_util::StreamExt;

use super::forward::Forwarded;
use crate::remote::envelope::{KeyMismatch, Signer, Verifier};
use crate::remote::wire::{self, RemoteResult};
use crate::runtime::pool::{JobOutcomes, JobReport};
use crate::server::gateway_status::GatewayStatus;
use crate::server::jobs::Completer;

/// How the gateway checks results and confirms them.
pub(super) struct ResultsDesk {
    pub(super) client: async_nats::Client,
    pub(super) completer: Completer,
    pub(super) verifier: Verifier,
    pub(super) signer: Arc<Signer>,
}

/// Takes this gateway's results from its subscription and hands each to
/// the completer, which replies once per job; confirms each message once
/// handed over. The client subscribes again by itself after a reconnect,
/// and the hosts send again what was not confirmed meanwhile.
pub(super) async fn take_results(
    mut results: async_nats::Subscriber,
    desk: ResultsDesk,
    forwarded: Arc<Forwarded>,
    status: Arc<GatewayStatus>,
    room: Sender<()>,
) {
    while let Some(message) = results.next().await {
        if !take_one(&message, (&desk.completer, &desk.verifier), &forwarded, &status, &room) {
            continue;
        }
        if let Some(reply) = &message.reply {
            // Naming the results it answers (wire::results_receipt): a copy
            // of old results earns a receipt no host's current try takes.
            let receipt = wire::results_receipt(Verifier::signature_of(message.headers.as_ref()));
            let mut headers = async_nats::HeaderMap::new();
            desk.signer.sign(reply.as_str(), &mut headers, &receipt);
            let _ = desk.client.publish_with_headers(reply.clone(), headers, receipt.into()).await;
        }
    }
}

/// Checks and routes one results message; false if it was refused (not
/// signed with the farm key, or not results): a refused one gets no receipt.
fn take_one(
    message: &async_nats::Message,
    (completer, verifier): (&Completer, &Verifier),
    forwarded: &Forwarded,
    status: &GatewayStatus,
    room: &Sender<()>,
) -> bool {
    if let Err(why) = verifier.verify(message.subject.as_str(), message.headers.as_ref(), &message.payload) {
        status.counters.rejected.fetch_add(1, Relaxed);
        match KeyMismatch::of(&why) {
            Some(mismatch) => status.key_trouble.noticed(mismatch, "a results message"),
            None => status.refusals.warn("dropping a results message", &why),
        }
        return false;
    }
    if verifier.signed_without_key(message.headers.as_ref()) {
        status.key_trouble.noticed(KeyMismatch::OnlySenderHasOne, "a results message");
    }
    let results: Vec<RemoteResult> = match wire::decode(&message.payload) {
        Ok(results) => results,
        Err(e) => {
            status.counters.rejected.fetch_add(1, Relaxed);
            status.refusals.warn("dropping a message that is not results", &e);
            return false;
        }
    };
    // One message holds the results of one parcel (one job, or several).
    for result in results {
        route(result, (completer, forwarded), status, room);
    }
    true
}

/// Hands one job's result to the completer, unless the job has been
/// answered already (a duplicate: dropped and counted).
fn route(
    result: RemoteResult,
    (completer, forwarded): (&Completer, &Forwarded),
    status: &GatewayStatus,
    room: &Sender<()>,
) {
    let Some(outstanding) = forwarded.take(result.job, result.token) else {
        status.counters.duplicates.fetch_add(1, Relaxed);
        tracing::debug!(job = %wire::token_hex(result.token), host = %result.host, "duplicate or unknown result dropped");
        return;
    };
    if let (Some(steps), Ok(_)) = (outstanding.steps, &result.result) {
        forwarded.step_cost.observe(steps, result.service_us);
    }
    let _ = room.try_send(());
    if result.attempts > 1 {
        status.counters.redelivered.fetch_add(1, Relaxed);
        tracing::info!(job = %wire::token_hex(result.token), host = %result.host, attempts = result.attempts, "a redelivered job answered");
    }
    completer.finish(JobReport {
        job: result.job,
        worker: result.worker,
        host: Some(result.host),
        queue_us: result.queue_us,
        service_us: result.service_us,
        attempts: result.attempts,
        result: result.result,
    });
}
