//! The incoming half of the gateway: results from this gateway's own
//! consumer of the results stream, each checked (signature, its job's
//! token) and handed to the completer — a second result for a job is
//! dropped and counted, so a client gets exactly one reply.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use crossbeam_channel::Sender;
use futures_util::StreamExt;

use super::forward::Forwarded;
use crate::remote::envelope::{KeyMismatch, Verifier};
use crate::remote::wire::{self, RemoteResult};
use crate::runtime::pool::{JobOutcomes, JobReport};
use crate::server::gateway_status::GatewayStatus;
use crate::server::jobs::Completer;

/// Takes this gateway's results from its consumer and hands each to the
/// completer, which replies once per job; acknowledges each once handed
/// over. The consumer is durable, so a broker restart loses nothing: after
/// one, the pull loop starts again where it was.
pub(super) async fn take_results(
    consumer: jetstream::consumer::PullConsumer,
    (completer, verifier): (Completer, Verifier),
    forwarded: Arc<Forwarded>,
    status: Arc<GatewayStatus>,
    room: Sender<()>,
) {
    loop {
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(e) => {
                tracing::debug!(error = %e, "cannot pull results yet; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::debug!(error = %e, "the results pull ended; starting it again");
                    break;
                }
            };
            take_one(&message, (&completer, &verifier), &forwarded, &status, &room);
            let _ = message.ack().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks and routes one result.
fn take_one(
    message: &jetstream::Message,
    (completer, verifier): (&Completer, &Verifier),
    forwarded: &Forwarded,
    status: &GatewayStatus,
    room: &Sender<()>,
) {
    if let Err(why) = verifier.verify(message.subject.as_str(), message.headers.as_ref(), &message.payload) {
        status.counters.rejected.fetch_add(1, Relaxed);
        match KeyMismatch::of(&why) {
            Some(mismatch) => status.key_trouble.noticed(mismatch, "a result on the results stream"),
            None => tracing::warn!(%why, "dropping a message on the results stream"),
        }
        return;
    }
    if verifier.signed_without_key(message.headers.as_ref()) {
        status.key_trouble.noticed(KeyMismatch::OnlySenderHasOne, "a result on the results stream");
    }
    let results: Vec<RemoteResult> = match wire::decode(&message.payload) {
        Ok(results) => results,
        Err(e) => {
            status.counters.rejected.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, "dropping a message on the results stream");
            return;
        }
    };
    // One message holds the results of one parcel (one job, or several).
    for result in results {
        route(result, (completer, forwarded), status, room);
    }
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
