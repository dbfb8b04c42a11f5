//! Listening to the farm: the other hosts' and the gateways' heartbeats,
//! each checked (signed, newer than its sender's last) before it is kept in
//! [`Peers`] — which gateways are alive (a job of a silent one is dropped:
//! nobody would read its result) and which host holds which job (a
//! redelivery of a job its holder still runs is not a crash).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::pages::HostCounters;
use super::peers::Peers;
use crate::remote::envelope::{now_ms, KeyMismatch, ReplayGuard, Verifier};
use crate::remote::wire::{GatewayBeat, Heartbeat};
use crate::remote::{GATEWAYS_SUBJECT, HEARTBEAT_SUBJECT};

/// The pause before subscribing again after NATS refused.
const RESUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// What [`listen_to_farm`] keeps up to date.
pub(super) struct FarmEars {
    /// Checks each heartbeat's signature.
    pub(super) verifier: Verifier,
    /// What is heard: the gateways alive, which host holds which job.
    pub(super) peers: Arc<Peers>,
    /// Rejections and key trouble, for `/metrics` and `/readyz`.
    pub(super) counters: Arc<HostCounters>,
    /// Rung when a new gateway appears, for a heartbeat at once.
    pub(super) beat_now: Arc<tokio::sync::Notify>,
}

/// Whose heartbeat a message is, for a key mismatch's report.
fn heartbeat_sender(message: &async_nats::Message) -> &'static str {
    if message.subject.as_str() == GATEWAYS_SUBJECT {
        "a gateway's heartbeat"
    } else {
        "another host's heartbeat"
    }
}

/// Listens to the other hosts' and the gateways' heartbeats (signed, each
/// sender's newer than its last), for [`Peers`].
pub(super) async fn listen_to_farm(client: async_nats::Client, ears: FarmEars) {
    let (hosts, gateways) = loop {
        match (client.subscribe(HEARTBEAT_SUBJECT).await, client.subscribe(GATEWAYS_SUBJECT).await) {
            (Ok(hosts), Ok(gateways)) => break (hosts, gateways),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot listen to the farm's heartbeats; retrying");
                tokio::time::sleep(RESUBSCRIBE_WAIT).await;
            }
        }
    };
    let guard = ReplayGuard::default();
    let mut beats = futures_util::stream::select(hosts, gateways);
    while let Some(message) = beats.next().await {
        let signed = ears
            .verifier
            .verify(message.subject.as_str(), message.headers.as_ref(), &message.payload)
            .and_then(|signed| guard.check(&signed, now_ms()).map(|()| signed));
        if let Err(why) = signed {
            ears.counters.rejected.fetch_add(1, Ordering::Relaxed);
            match KeyMismatch::of(&why) {
                Some(mismatch) => ears.counters.key_trouble.noticed(mismatch, heartbeat_sender(&message)),
                None => tracing::debug!(subject = %message.subject, %why, "ignoring a heartbeat"),
            }
            continue;
        }
        if ears.verifier.signed_without_key(message.headers.as_ref()) {
            ears.counters.key_trouble.noticed(KeyMismatch::OnlySenderHasOne, heartbeat_sender(&message));
        }
        let now = Instant::now();
        if message.subject.as_str() == GATEWAYS_SUBJECT {
            if let Ok(beat) = serde_json::from_slice::<GatewayBeat>(&message.payload) {
                let who = format!("gateway {}", crate::remote::envelope::untrusted_name(&beat.gateway));
                if let Some(said) = crate::remote::wire::other_release(beat.wire, &who) {
                    ears.counters.refusals.warn("a farm member of another release", &said);
                }
                if ears.peers.gateway_heard(&beat.gateway, now) {
                    tracing::info!(gateway = %beat.gateway, "a gateway joined the farm");
                    ears.beat_now.notify_one();
                }
            }
        } else if let Ok(beat) = serde_json::from_slice::<Heartbeat>(&message.payload) {
            ears.peers.host_heard(&beat.name, &beat.holding, now);
        }
    }
}
