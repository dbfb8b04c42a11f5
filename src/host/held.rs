//! The jobs a host holds: delivered by NATS, not yet answered. A held job is
//! one no other host can run, so the fetcher never asks for more than the
//! free slots, and every held job is acknowledged, handed back or answered
//! exactly once (taking it out of [`HeldJobs`] is what decides who does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_nats::jetstream;

use crate::remote::wire::{self, JobToken};
use crate::work::job::JobId;

/// A job the host holds: the JetStream message (to acknowledge it), and
/// where its result goes.
#[derive(Debug)]
pub(super) struct Held {
    /// The delivery: acknowledged (or handed back) through it.
    pub(super) message: jetstream::Message,
    /// The gateway's id of the job.
    pub(super) job: JobId,
    /// The job's farm-wide token (results and heartbeats name it).
    pub(super) token: JobToken,
    /// The results subject of the gateway that asked.
    pub(super) reply_to: String,
    /// How many times NATS has delivered it (this one included).
    pub(super) attempts: u32,
    /// The gateway's deadline: after it nobody waits for the result.
    pub(super) expires_ms: u64,
}

/// The jobs a host holds, by their local id. A std `Mutex` held only for
/// map operations (never across an `.await`: entries are `Arc`s taken out
/// first), shared by the pool's threads and the bridge's tasks.
#[derive(Debug, Default)]
pub(crate) struct HeldJobs {
    jobs: Mutex<HashMap<JobId, Arc<Held>>>,
    /// Wakes the fetcher when a slot frees up, so a host never sits idle
    /// while jobs wait in the stream.
    pub(super) freed: tokio::sync::Notify,
}

impl HeldJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Arc<Held>>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
    pub(super) fn contains(&self, id: JobId) -> bool {
        self.lock().contains_key(&id)
    }
    pub(super) fn insert(&self, id: JobId, held: Held) {
        self.lock().insert(id, Arc::new(held));
    }
    pub(super) fn take(&self, id: JobId) -> Option<Arc<Held>> {
        let taken = self.lock().remove(&id);
        if taken.is_some() {
            // `notify_one` stores a permit when nobody waits yet, so a slot
            // freed just before the fetcher starts waiting is not missed.
            self.freed.notify_one();
        }
        taken
    }
    pub(super) fn all(&self) -> Vec<Arc<Held>> {
        self.lock().values().cloned().collect()
    }
    /// The tokens of the held jobs, for the heartbeat.
    pub(super) fn tokens(&self) -> Vec<String> {
        self.lock().values().map(|held| wire::token_hex(held.token)).collect()
    }
}
