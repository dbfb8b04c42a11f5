//! The id→connection map: for every job in flight, where its reply must go.
//!
//! A reader thread registers a job here *before* queueing it, and whoever
//! finishes the job (a worker thread, or the thread driving a worker process)
//! takes the entry out to learn which connection and which client id the
//! reply belongs to. Taking is the only way to reply, so each job is answered
//! at most once: a second `take` of the same id finds nothing.
//!
//! The map sits behind one `Mutex`, but nobody outside this file ever sees
//! the lock: every method takes it, does a hash-map operation, and lets go.
//! Nothing slow — I/O, serialization, running a job — happens while it is held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::protocol::{ClientId, CommandKind};
use crate::server::replies::ReplySink;
use crate::work::job::JobId;

/// Identifies one accepted connection for the life of the server.
pub(crate) type ConnId = u64;

/// A job's one record of who asked, from the reader that accepts it to the
/// completer that answers it: built by the command ([`crate::server::cmd`]),
/// kept in the registry while the job is queued or running, taken out once.
#[derive(Debug)]
pub(crate) struct PendingReply {
    /// The connection that asked.
    pub(crate) conn: ConnId,
    /// The client's id, echoed in the reply.
    pub(crate) client_id: ClientId,
    /// Which command it was (for counters and the reply's shape).
    pub(crate) command: CommandKind,
    /// Which protocol to answer in.
    pub(crate) dialect: crate::protocol::Dialect,
    /// Whether the client asked for timing fields.
    pub(crate) timing: bool,
    /// Where to store the result in the cache, if anywhere.
    pub(crate) cache_key: Option<crate::server::jobs::cache::CacheKey>,
    /// The connection's reply path.
    pub(crate) sink: ReplySink,
    /// When the request's frame was read (the start of its latency).
    pub(crate) received_at: Instant,
    /// The job's size, for logs (see [`crate::work::job::JobKind::size`]).
    pub(crate) size: u64,
}

/// Cheap-to-clone handle to the map of jobs in flight.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    next_job: JobId,
    pending: HashMap<JobId, PendingReply>,
}

impl Registry {
    /// An empty map.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A poisoned lock only means another thread panicked while holding it;
    /// every operation here leaves the map consistent, so keep going.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a job in flight and returns its new, never-reused id.
    pub(crate) fn insert(&self, reply: PendingReply) -> JobId {
        let mut inner = self.lock();
        inner.next_job += 1;
        let job = inner.next_job;
        inner.pending.insert(job, reply);
        job
    }

    /// Removes and returns the entry for `job`. `None` means the job was
    /// already answered or its connection has gone: its reply must be dropped.
    pub(crate) fn take(&self, job: JobId) -> Option<PendingReply> {
        self.lock().pending.remove(&job)
    }

    /// Whether anyone still waits for `job` (checked before starting it, so
    /// the jobs of a client that hung up are skipped rather than run).
    pub(crate) fn is_wanted(&self, job: JobId) -> bool {
        self.lock().pending.contains_key(&job)
    }

    /// Forgets every job of a connection that closed, returning how many there
    /// were. Their results, when they come, find no entry and are dropped.
    pub(crate) fn cancel_connection(&self, conn: ConnId) -> usize {
        let removed: Vec<PendingReply> = {
            let mut inner = self.lock();
            let jobs: Vec<JobId> =
                inner.pending.iter().filter(|(_, reply)| reply.conn == conn).map(|(job, _)| *job).collect();
            jobs.iter().filter_map(|job| inner.pending.remove(job)).collect()
        };
        // The entries (and the reply senders inside them) are dropped here,
        // after the lock is released.
        removed.len()
    }

    /// Removes every entry (for a shutdown that answers what is left).
    pub(crate) fn drain_all(&self) -> Vec<(JobId, PendingReply)> {
        self.lock().pending.drain().collect()
    }

    /// Number of jobs in flight (queued or running).
    pub(crate) fn len(&self) -> usize {
        self.lock().pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::replies::ReplySink;
    use serde_json::value::RawValue;

    fn pending(conn: ConnId, sink: &ReplySink) -> PendingReply {
        let raw = RawValue::from_string("1".into()).unwrap();
        PendingReply {
            conn,
            client_id: ClientId::from_json(&raw).unwrap(),
            command: CommandKind::Compute,
            dialect: crate::protocol::Dialect::ThreadCenter,
            timing: false,
            cache_key: None,
            sink: sink.clone(),
            received_at: Instant::now(),
            size: 1,
        }
    }

    #[test]
    fn each_job_can_be_taken_exactly_once() {
        let (sink, _rx) = ReplySink::detached(8);
        let registry = Registry::new();
        let a = registry.insert(pending(1, &sink));
        let b = registry.insert(pending(1, &sink));
        assert_ne!(a, b);
        assert!(registry.is_wanted(a));
        assert!(registry.take(a).is_some());
        assert!(registry.take(a).is_none(), "a second take must find nothing");
        assert!(!registry.is_wanted(a));
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn cancelling_a_connection_removes_only_its_jobs() {
        let (sink, _rx) = ReplySink::detached(8);
        let registry = Registry::new();
        for _ in 0..3 {
            registry.insert(pending(1, &sink));
        }
        let other = registry.insert(pending(2, &sink));
        assert_eq!(registry.cancel_connection(1), 3);
        assert_eq!(registry.len(), 1);
        assert!(registry.is_wanted(other));
        assert_eq!(registry.cancel_connection(1), 0);
    }
}
