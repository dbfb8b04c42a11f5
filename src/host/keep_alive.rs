//! Staying known: every third of the ack wait the jobs held that long are
//! said to be still in progress (so a long job is not taken for a lost one),
//! and every
//! [`HEARTBEAT_EVERY`] the host says who it is, how busy, and which jobs it
//! holds — what gateways count as capacity and other hosts judge
//! redeliveries by.

use std::sync::{Arc, Mutex, PoisonError};

use async_nats::jetstream::AckKind;

use super::held::HeldJobs;
use super::HostConfig;
use crate::remote::envelope::Signer;
use crate::remote::wire::Heartbeat;
use crate::remote::{ACK_WAIT, HEARTBEAT_EVERY, HEARTBEAT_SUBJECT};
use crate::runtime::pool::WorkerBoard;

/// How often held parcels are said to be in progress: a third of the ack
/// wait, so one lost signal is not yet a redelivery.
pub(super) const PROGRESS_EVERY: std::time::Duration =
    std::time::Duration::from_millis(ACK_WAIT.as_millis() as u64 / 3);

/// What this host says about itself now.
pub(super) fn heartbeat(config: &HostConfig, held: &HeldJobs, board: &WorkerBoard) -> Heartbeat {
    let workers = board.snapshot();
    Heartbeat {
        name: config.name.clone(),
        slots: config.pool.workers,
        busy: held.len(),
        jobs_done: workers.iter().map(|w| w.jobs_done).sum(),
        restarts: workers.iter().map(|w| w.restarts).sum(),
        mode: config.pool.mode.as_str().to_string(),
        holding: held.tokens(),
        leaving: false,
        wire: crate::remote::wire::WIRE_VERSION,
    }
}

/// Every third of the ack wait, tells JetStream the held jobs are still in
/// progress; every [`HEARTBEAT_EVERY`] (and at once when a new gateway
/// appears), says who this host is, how busy, and which jobs it holds (and
/// keeps `status`, which the NATS service answers with, up to date).
pub(super) async fn keep_alive(
    client: async_nats::Client,
    held: Arc<HeldJobs>,
    board: Arc<WorkerBoard>,
    config: HostConfig,
    status: Arc<Mutex<Heartbeat>>,
    (signer, beat_now): (Arc<Signer>, Arc<tokio::sync::Notify>),
) {
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    let mut beating = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            _ = progress.tick() => {
                // Only for parcels held a third of the ack wait already: the
                // first one said then still comes within the ack wait (ticks
                // are a third apart), and short jobs, done well before, cost
                // the broker no message at all.
                for parcel in held.parcels_held() {
                    if parcel.taken_at.elapsed() >= PROGRESS_EVERY {
                        let _ = parcel.message.ack_with(AckKind::Progress).await;
                    }
                }
                continue;
            }
            _ = beating.tick() => {}
            () = beat_now.notified() => {}
        }
        let beat = heartbeat(&config, &held, &board);
        *status.lock().unwrap_or_else(PoisonError::into_inner) = beat.clone();
        if let Ok(bytes) = serde_json::to_vec(&beat) {
            let mut headers = async_nats::HeaderMap::new();
            signer.sign(HEARTBEAT_SUBJECT, &mut headers, &bytes);
            let _ = client.publish_with_headers(HEARTBEAT_SUBJECT, headers, bytes.into()).await;
        }
    }
}
