//! The jobs a host holds: delivered by NATS, not yet answered. A held job is
//! one no other host can run, so the fetcher never asks for more messages
//! than the free slots, and every delivered message is acknowledged, handed
//! back or answered exactly once.
//!
//! A message is a **parcel** of one or more jobs (`remote::wire::JobParcel`).
//! Its jobs run on their own, and each one's result is kept in the parcel
//! until the last one is settled; then all the results go back in one
//! message, and only after JetStream has stored it is the parcel
//! acknowledged (or handed back, if a job in it could not run here). Taking
//! a job out of [`HeldJobs`] is what decides who settles it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_nats::jetstream;

use crate::remote::wire::{self, JobToken, RemoteResult};
use crate::work::job::JobId;

/// A delivered message: acknowledged (or handed back) through it once
/// every job in it is settled; where its results go.
#[derive(Debug)]
pub(super) struct Parcel {
    /// The delivery.
    pub(super) message: jetstream::Message,
    /// The gateway that asked, and its results subject.
    pub(super) gateway: String,
    pub(super) reply_to: String,
    /// How many times NATS has delivered it (this one included).
    pub(super) attempts: u32,
    /// The gateway's deadline: after it nobody waits for the results.
    pub(super) expires_ms: u64,
    /// The first job's token: with `attempts`, it names the results message
    /// in the host's log.
    pub(super) first_token: JobToken,
    /// When this host took it: "in progress" is said only for a parcel held
    /// long enough to need it (`keep_alive`).
    pub(super) taken_at: std::time::Instant,
    settling: Mutex<Settling>,
}

/// What a parcel still waits for, and the results it has.
#[derive(Debug)]
struct Settling {
    unsettled: usize,
    results: Vec<RemoteResult>,
    handed_back: bool,
}

impl Settling {
    fn settle(&mut self, result: Option<RemoteResult>) -> Option<Settled> {
        match result {
            Some(result) => self.results.push(result),
            None => self.handed_back = true,
        }
        self.unsettled = self.unsettled.saturating_sub(1);
        (self.unsettled == 0)
            .then(|| Settled { results: std::mem::take(&mut self.results), hand_back: self.handed_back })
    }
}

/// A parcel with every job settled: the results to store, then whether to
/// acknowledge the message or hand it back.
#[derive(Debug)]
pub(super) struct Settled {
    pub(super) results: Vec<RemoteResult>,
    /// A job in it could not run here: after the results of the others are
    /// stored, the whole parcel goes back for another host (its finished
    /// jobs run again there, and their gateway drops the second results).
    pub(super) hand_back: bool,
}

impl Parcel {
    /// A delivered parcel of `jobs` jobs still to run, with the results it
    /// already has (jobs refused before they ran).
    pub(super) fn new(
        message: jetstream::Message,
        (gateway, reply_to, expires_ms): (String, String, u64),
        (attempts, first_token): (u32, JobToken),
        (jobs, results): (usize, Vec<RemoteResult>),
    ) -> Parcel {
        let settling = Mutex::new(Settling { unsettled: jobs, results, handed_back: false });
        let taken_at = std::time::Instant::now();
        Parcel { message, gateway, reply_to, attempts, expires_ms, first_token, taken_at, settling }
    }

    /// Settles one job: with its result, or handed back (`None`). Returns
    /// everything once this was the last job.
    pub(super) fn settle(&self, result: Option<RemoteResult>) -> Option<Settled> {
        self.settling.lock().unwrap_or_else(PoisonError::into_inner).settle(result)
    }

    /// Everything at once: a parcel none of whose jobs runs here (all
    /// refused), or the results so far of one given up on.
    pub(super) fn settle_all(&self) -> Settled {
        let mut settling = self.settling.lock().unwrap_or_else(PoisonError::into_inner);
        settling.unsettled = 0;
        Settled { results: std::mem::take(&mut settling.results), hand_back: settling.handed_back }
    }
}

/// One job the host holds: its parcel, and its name at its gateway.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) parcel: Arc<Parcel>,
    /// The gateway's id of the job.
    pub(super) job: JobId,
    /// The job's farm-wide token (results and heartbeats name it).
    pub(super) token: JobToken,
}

/// The jobs a host holds, by their local id, and how many parcels they
/// came in. A std `Mutex` held only for map operations (never across an
/// `.await`: entries are taken out first), shared by the pool's threads
/// and the bridge's tasks.
#[derive(Debug, Default)]
pub(crate) struct HeldJobs {
    jobs: Mutex<HashMap<JobId, Held>>,
    /// Parcels delivered and not yet settled: what a slot is counted in.
    parcels: AtomicUsize,
    /// Wakes the fetcher when a slot frees up, so a host never sits idle
    /// while jobs wait in the stream.
    pub(super) freed: tokio::sync::Notify,
}

impl HeldJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Held>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
    /// Jobs held.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
    /// Parcels held (each takes a slot until it is settled).
    pub(super) fn parcels(&self) -> usize {
        self.parcels.load(Ordering::SeqCst)
    }
    pub(super) fn contains(&self, id: JobId) -> bool {
        self.lock().contains_key(&id)
    }
    /// A parcel taken: it holds a slot until [`HeldJobs::parcel_settled`].
    pub(super) fn parcel_taken(&self) {
        self.parcels.fetch_add(1, Ordering::SeqCst);
    }
    /// A parcel settled: its slot is free.
    fn parcel_settled(&self) {
        self.parcels.fetch_sub(1, Ordering::SeqCst);
        // `notify_one` stores a permit when nobody waits yet, so a slot
        // freed just before the fetcher starts waiting is not missed.
        self.freed.notify_one();
    }
    pub(super) fn insert(&self, id: JobId, held: Held) {
        self.lock().insert(id, held);
    }
    /// Settles held job `id` in its parcel — with its result, or handed
    /// back (`None`) — and frees the parcel's slot if that was its last
    /// job: then the parcel and what to send for it. `None` if the job is
    /// not held (settled already) or its parcel still waits for others.
    pub(super) fn settle(
        &self,
        id: JobId,
        result: impl FnOnce(&Held) -> Option<RemoteResult>,
    ) -> Option<(Arc<Parcel>, Settled)> {
        let held = self.lock().remove(&id)?;
        let settled = held.parcel.settle(result(&held))?;
        self.parcel_settled();
        Some((held.parcel, settled))
    }
    /// Every parcel with a job held, once each.
    pub(super) fn parcels_held(&self) -> Vec<Arc<Parcel>> {
        let mut parcels: Vec<Arc<Parcel>> = Vec::new();
        for held in self.lock().values() {
            if !parcels.iter().any(|p| Arc::ptr_eq(p, &held.parcel)) {
                parcels.push(Arc::clone(&held.parcel));
            }
        }
        parcels
    }
    /// The tokens of the held jobs, for the heartbeat.
    pub(super) fn tokens(&self) -> Vec<String> {
        self.lock().values().map(|held| wire::token_hex(held.token)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::JobOutput;

    fn result(job: JobId) -> RemoteResult {
        RemoteResult {
            job,
            token: u128::from(job),
            host: "h".into(),
            worker: 1,
            queue_us: 0,
            service_us: 1,
            attempts: 1,
            result: Ok(JobOutput::Compute(job)),
        }
    }

    fn settling(jobs: usize, results: Vec<RemoteResult>) -> Settling {
        Settling { unsettled: jobs, results, handed_back: false }
    }

    #[test]
    fn a_parcel_settles_once_with_every_result_and_the_refused_ones_first() {
        let mut state = settling(2, vec![result(1)]);
        assert!(state.settle(Some(result(2))).is_none(), "one job still runs");
        let settled = state.settle(Some(result(3))).expect("the last one settles it");
        let jobs: Vec<JobId> = settled.results.iter().map(|r| r.job).collect();
        assert_eq!(jobs, vec![1, 2, 3]);
        assert!(!settled.hand_back);
    }

    #[test]
    fn a_job_handed_back_sends_the_others_results_then_the_parcel_back() {
        let mut state = settling(2, Vec::new());
        assert!(state.settle(None).is_none());
        let settled = state.settle(Some(result(5))).unwrap();
        assert_eq!(settled.results.len(), 1);
        assert!(settled.hand_back, "the parcel goes back for the job that could not run");
    }
}
