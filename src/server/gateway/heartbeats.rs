//! The gateway's side of the heartbeats: the hosts' beats in (the table of
//! hosts, and so the capacity the forwarder fills), its own beat out (hosts
//! skip the jobs of a silent gateway), and a log line when a host joins,
//! leaves or is lost.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use futures_util::StreamExt;

use crate::remote::envelope::{self, now_ms, KeyMismatch, ReplayGuard, Signer, Verifier};
use crate::remote::wire::{other_release, GatewayBeat, Heartbeat, WIRE_VERSION};
use crate::remote::{GATEWAYS_SUBJECT, HEARTBEAT_EVERY, HOST_TIMEOUT};
use crate::server::gateway_status::GatewayStatus;

/// Keeps the table of hosts from their heartbeats (signed, each newer than
/// its sender's last).
pub(super) async fn listen_to_hosts(
    mut heartbeats: async_nats::Subscriber,
    verifier: Verifier,
    status: Arc<GatewayStatus>,
) {
    let guard = ReplayGuard::default();
    while let Some(message) = heartbeats.next().await {
        let checked = verifier
            .verify(message.subject.as_str(), message.headers.as_ref(), &message.payload)
            .and_then(|signed| guard.check(&signed, now_ms()));
        if let Err(why) = checked {
            status.counters.rejected.fetch_add(1, Relaxed);
            match KeyMismatch::of(&why) {
                Some(mismatch) => status.key_trouble.noticed(mismatch, &heartbeat_sender(&message.payload)),
                None => tracing::debug!(%why, "ignoring a heartbeat"),
            }
            continue;
        }
        if verifier.signed_without_key(message.headers.as_ref()) {
            // A host with a key refuses this gateway's unsigned jobs: it is
            // no capacity, and counting it would leave clients waiting for
            // the job deadline instead of hearing why at once.
            status.counters.rejected.fetch_add(1, Relaxed);
            status.key_trouble.noticed(KeyMismatch::OnlySenderHasOne, &heartbeat_sender(&message.payload));
            continue;
        }
        match serde_json::from_slice::<Heartbeat>(&message.payload) {
            Ok(beat) => {
                let who = format!("host {}", envelope::untrusted_name(&beat.name));
                if let Some(said) = other_release(beat.wire, &who) {
                    status.refusals.warn("a farm member of another release", &said);
                }
                status.count_heartbeat(status.hosts.heard(beat, std::time::Instant::now()))
            }
            Err(e) => tracing::debug!(error = %e, "ignoring a message on the heartbeat subject"),
        }
    }
}

/// "a heartbeat from host NAME", the name as the (unverified) message says.
fn heartbeat_sender(payload: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    match serde_json::from_slice::<Named>(payload) {
        Ok(named) => format!("a heartbeat from host {}", envelope::untrusted_name(&named.name)),
        Err(_) => "a heartbeat".to_string(),
    }
}

/// Says every second that this gateway is alive (hosts skip the jobs of a
/// silent one), and logs hosts joining and being lost.
pub(super) async fn beat(
    client: async_nats::Client,
    gateway: String,
    signer: Arc<Signer>,
    status: Arc<GatewayStatus>,
) {
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    let mut alive: BTreeSet<String> = BTreeSet::new();
    loop {
        every.tick().await;
        if let Ok(bytes) = serde_json::to_vec(&GatewayBeat { gateway: gateway.clone(), wire: WIRE_VERSION }) {
            let mut headers = async_nats::HeaderMap::new();
            signer.sign(GATEWAYS_SUBJECT, &mut headers, &bytes);
            let _ = client.publish_with_headers(GATEWAYS_SUBJECT, headers, bytes.into()).await;
        }
        // Judged only while the link is up: during an outage every host
        // falls silent, and that is NATS's absence, not theirs.
        if !status.link.is_up() {
            continue;
        }
        let hosts = status.hosts.report();
        let now: BTreeSet<String> = hosts.iter().filter(|h| h.alive).map(|h| h.name.clone()).collect();
        for gone in alive.difference(&now) {
            if hosts.iter().any(|h| &h.name == gone && h.left) {
                tracing::info!(host = %gone, "worker host left (it stopped)");
            } else {
                tracing::warn!(host = %gone, "worker host lost: no heartbeat for {}s", HOST_TIMEOUT.as_secs());
            }
        }
        for joined in now.difference(&alive) {
            tracing::info!(host = %joined, "worker host joined");
        }
        alive = now;
    }
}
