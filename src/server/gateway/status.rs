//! What a gateway knows of its worker hosts (from their heartbeats) and
//! counts of its NATS traffic, as `stats`, `/metrics` and `/readyz` show them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;

use crate::remote::connect::LinkState;
use crate::remote::wire::Heartbeat;
use crate::remote::HOST_TIMEOUT;

/// The hosts this gateway has heard from, by name.
#[derive(Debug, Default)]
pub(crate) struct HostTable {
    hosts: Mutex<HashMap<String, (Heartbeat, Instant)>>,
}

/// One host, as `stats` reports it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub(crate) struct HostReport {
    /// `--name`.
    pub(crate) name: String,
    /// `threads` or `processes`.
    pub(crate) mode: String,
    /// Its workers.
    pub(crate) slots: usize,
    /// Jobs it held at its last heartbeat.
    pub(crate) busy: usize,
    /// Jobs it has finished.
    pub(crate) jobs_done: u64,
    /// Its worker replacements.
    pub(crate) restarts: u64,
    /// Seconds since its last heartbeat.
    pub(crate) last_heartbeat_s: f64,
    /// Heard from within the host timeout.
    pub(crate) alive: bool,
}

impl HostTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Heartbeat, Instant)>> {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn heard(&self, beat: Heartbeat) {
        self.lock().insert(beat.name.clone(), (beat, Instant::now()));
    }

    /// Hosts heard from within [`HOST_TIMEOUT`].
    pub(crate) fn alive(&self) -> usize {
        self.lock().values().filter(|(_, seen)| seen.elapsed() < HOST_TIMEOUT).count()
    }

    /// Workers of the live hosts: how many jobs may be out at once.
    pub(crate) fn capacity(&self) -> usize {
        self.lock().values().filter(|(_, seen)| seen.elapsed() < HOST_TIMEOUT).map(|(b, _)| b.slots).sum()
    }

    /// Every host heard from, for `stats`.
    pub(crate) fn report(&self) -> Vec<HostReport> {
        let mut hosts: Vec<HostReport> = self
            .lock()
            .values()
            .map(|(beat, seen)| HostReport {
                name: beat.name.clone(),
                mode: beat.mode.clone(),
                slots: beat.slots,
                busy: beat.busy,
                jobs_done: beat.jobs_done,
                restarts: beat.restarts,
                last_heartbeat_s: seen.elapsed().as_secs_f64(),
                alive: seen.elapsed() < HOST_TIMEOUT,
            })
            .collect();
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        hosts
    }
}

/// What a gateway counts, for `stats` and `/metrics`. Each is bumped by one
/// thread or task and read by reports, `Relaxed`: independent counters that
/// guard nothing.
#[derive(Debug, Default)]
pub(crate) struct GatewayCounters {
    pub(super) forwarded: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) redelivered: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) deadline_passed: AtomicU64,
    pub(super) stale_removed: AtomicU64,
}

/// A gateway's NATS side, as `stats` reports it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub(crate) struct RemoteReport {
    /// This gateway's id (its results come on `tc.results.<id>`).
    pub(crate) gateway: String,
    /// Whether the connection to NATS is up.
    pub(crate) connected: bool,
    /// Jobs published to the stream.
    pub(crate) forwarded: u64,
    /// Jobs not published: the stream was full or NATS refused them (`BUSY`),
    /// or they were larger than its `max_payload`.
    pub(crate) refused: u64,
    /// Results of jobs delivered more than once (a host died, hung or was
    /// cut off while holding them).
    pub(crate) redelivered: u64,
    /// Second results for a job already answered, dropped.
    pub(crate) duplicates_dropped: u64,
    /// Messages dropped unread: not signed with the farm key, replayed,
    /// stale, or not ThreadCenter's.
    pub(crate) messages_rejected: u64,
    /// Jobs answered `TIMEOUT` by the gateway itself: no result by their
    /// deadline.
    pub(crate) deadlines_passed: u64,
    /// Acknowledged jobs a broker crash had left in the stream, removed.
    pub(crate) stale_jobs_removed: u64,
    /// Whether messages are signed and checked (`--farm-key`).
    pub(crate) farm_key: bool,
    /// Hosts heard from within the host timeout.
    pub(crate) hosts_alive: usize,
}

/// What the rest of the server sees of its gateway: the hosts, the link,
/// the counters.
#[derive(Debug)]
pub(crate) struct GatewayStatus {
    pub(crate) hosts: HostTable,
    pub(crate) link: Arc<LinkState>,
    pub(crate) counters: GatewayCounters,
    /// This gateway's id.
    pub(crate) id: String,
    /// When the gateway started (for the start grace).
    pub(crate) started: Instant,
    /// Whether messages are signed and checked (`--farm-key`).
    pub(crate) farm_key: bool,
}

/// How long a new (or just reconnected) gateway waits to hear from hosts
/// before it tells clients there are none: hosts beat every second, and
/// answer a new gateway's first beat at once. Jobs wait during it rather
/// than being refused.
pub(crate) const START_GRACE: std::time::Duration = HOST_TIMEOUT;

impl GatewayStatus {
    /// Whether the gateway cannot tell yet if hosts are there: it has just
    /// started, or its link to NATS has just come back (hosts silent during
    /// an outage are not gone), and it has heard from none. Jobs wait
    /// meanwhile, and `/readyz` says not ready.
    pub(crate) fn in_start_grace(&self) -> bool {
        let settling = self.started.elapsed() < START_GRACE || self.link.up_for() < START_GRACE;
        settling && self.hosts.alive() == 0
    }

    /// The report for `stats`.
    pub(crate) fn report(&self) -> RemoteReport {
        let c = &self.counters;
        RemoteReport {
            gateway: self.id.clone(),
            connected: self.link.is_up(),
            forwarded: c.forwarded.load(Relaxed),
            refused: c.refused.load(Relaxed),
            redelivered: c.redelivered.load(Relaxed),
            duplicates_dropped: c.duplicates.load(Relaxed),
            messages_rejected: c.rejected.load(Relaxed),
            deadlines_passed: c.deadline_passed.load(Relaxed),
            stale_jobs_removed: c.stale_removed.load(Relaxed),
            farm_key: self.farm_key,
            hosts_alive: self.hosts.alive(),
        }
    }
}
