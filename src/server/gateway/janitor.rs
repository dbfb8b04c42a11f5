//! The streams' housekeeping: acknowledged jobs a broker crash left behind
//! are removed, so they do not count against `--nats-max-jobs`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;

use super::API_WAIT;
use crate::remote as nats;
use crate::server::gateway_status::GatewayStatus;

/// How often a gateway removes job messages JetStream has acknowledged but
/// kept (a broker killed at the wrong moment can leave some behind).
const JANITOR_EVERY: Duration = Duration::from_secs(10);

/// Removes job messages that every host has acknowledged but the stream
/// still keeps. On a work-queue stream an acknowledged message is deleted;
/// a broker killed between the two can restart with the acknowledgement
/// recorded and the message still there — never delivered again, yet
/// counted against `--nats-max-jobs` for ever. Everything at or below the
/// consumer's acknowledgement floor has been acknowledged, so purging up to
/// it removes exactly those.
pub(super) async fn janitor(js: jetstream::Context, status: Arc<GatewayStatus>) {
    let mut every = tokio::time::interval(JANITOR_EVERY);
    loop {
        every.tick().await;
        let jobs = purge_acknowledged(&js, nats::STREAM, nats::CONSUMER).await;
        if let Some(purged) = jobs.filter(|purged| *purged > 0) {
            status.counters.stale_removed.fetch_add(purged, Relaxed);
            tracing::warn!(
                messages = purged,
                "removed acknowledged jobs the stream had kept (after a broker crash)"
            );
        }
    }
}

/// Purges the messages of `stream` at or below `consumer`'s
/// acknowledgement floor: how many, or `None` if JetStream did not answer
/// within [`API_WAIT`].
async fn purge_acknowledged(js: &jetstream::Context, stream: &str, consumer: &str) -> Option<u64> {
    tokio::time::timeout(API_WAIT, async {
        let mut stream = js.get_stream(stream).await.ok()?;
        let first = stream.info().await.ok()?.state.first_sequence;
        let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer(consumer).await.ok()?;
        let floor = consumer.info().await.ok()?.ack_floor.stream_sequence;
        if first == 0 || first > floor {
            return Some(0);
        }
        let purged = stream.purge().sequence(floor + 1).await;
        purged.ok().map(|purged| purged.purged)
    })
    .await
    .ok()
    .flatten()
}
