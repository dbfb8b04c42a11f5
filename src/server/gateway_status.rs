//! What a gateway knows of its worker hosts (from their heartbeats) and
//! counts of its NATS traffic, as `stats`, `/metrics` and `/readyz` show them.
//!
//! Written by the gateway's tasks ([`crate::server::gateway`], the `nats`
//! feature); built without that feature too, where no server has a gateway
//! and these stay unused, so the reports keep one shape.

#![cfg_attr(not(feature = "nats"), allow(dead_code))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::protocol::{ErrorCode, ReplyError};
use crate::remote::connect::LinkState;
use crate::remote::envelope::{KeyTrouble, RefusalLog};
use crate::remote::limits::heartbeat_problem;
use crate::remote::wire::Heartbeat;
use crate::remote::HOST_TIMEOUT;

/// The refusal for a job when no host is connected and there is no local
/// worker (`--workers 0`): it says whether the hosts or NATS are missing.
pub(crate) fn no_host_error(status: &GatewayStatus) -> ReplyError {
    let link = &status.link;
    let key_trouble = status.key_trouble.recent();
    let message = if link.is_up() && !key_trouble.is_empty() {
        // Hosts may well be running: their heartbeats were dropped.
        format!("no worker host this gateway can trust is connected: {}", key_trouble.join("; "))
    } else if link.is_up() {
        "no worker host is connected to this gateway: start one with tc-worker --nats URL; retry later"
            .to_string()
    } else {
        format!(
            "this gateway has lost its connection to NATS at {} and is reconnecting: worker hosts cannot be \
             reached until it is back; retry later",
            link.url
        )
    };
    ReplyError::new(ErrorCode::Busy, message)
}

/// A host not heard from for this long leaves the table (and `stats`). Far
/// past [`HOST_TIMEOUT`], so a host that is only slow shows as not alive
/// for a while before it goes; short enough that names heard once (a
/// forged flood, hosts of a past run) do not stay for ever.
pub(crate) const HOST_EVICT_AFTER: Duration = Duration::from_secs(60);

/// Most hosts the table holds. A farm of more hosts than this is far past a
/// classroom; a flood of forged names stops here, and is counted.
pub(crate) const MAX_HOSTS: usize = 1024;

/// What the table did with a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// A known host, or a new one with room for it.
    Kept,
    /// Its fields are out of bounds (see [`heartbeat_problem`]).
    Malformed,
    /// A new name and the table is full of live hosts.
    TableFull,
}

/// The hosts this gateway has heard from, by name, at most [`MAX_HOSTS`].
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
    /// It said it was stopping (its last heartbeat), so it is not alive.
    #[serde(default)]
    pub(crate) left: bool,
}

/// A host is alive if heard from within [`HOST_TIMEOUT`] and not leaving.
fn is_alive(beat: &Heartbeat, seen: Instant) -> bool {
    !beat.leaving && seen.elapsed() < HOST_TIMEOUT
}

impl HostTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Heartbeat, Instant)>> {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a heartbeat heard `now`: hosts silent for
    /// [`HOST_EVICT_AFTER`] leave first; a new name finds room or is refused.
    pub(super) fn heard(&self, beat: Heartbeat, now: Instant) -> Heard {
        if heartbeat_problem(&beat.name, beat.slots, beat.busy, &beat.mode).is_some() {
            return Heard::Malformed;
        }
        let mut hosts = self.lock();
        if !hosts.contains_key(&beat.name) {
            // Evict on a new name only: the scan (at most MAX_HOSTS entries)
            // is never paid on the ordinary beat of a known host.
            hosts.retain(|_, (_, seen)| now.saturating_duration_since(*seen) < HOST_EVICT_AFTER);
            if hosts.len() >= MAX_HOSTS {
                return Heard::TableFull;
            }
        }
        hosts.insert(beat.name.clone(), (beat, now));
        Heard::Kept
    }

    /// Hosts heard from within [`HOST_TIMEOUT`].
    pub(crate) fn alive(&self) -> usize {
        self.lock().values().filter(|(beat, seen)| is_alive(beat, *seen)).count()
    }

    /// Workers of the live hosts: how many jobs may be out at once.
    pub(crate) fn capacity(&self) -> usize {
        self.lock().values().filter(|(beat, seen)| is_alive(beat, *seen)).map(|(b, _)| b.slots).sum()
    }

    /// Every host heard from, for `stats`.
    pub(crate) fn report(&self) -> Vec<HostReport> {
        let mut hosts: Vec<HostReport> = self
            .lock()
            .values()
            .filter(|(_, seen)| seen.elapsed() < HOST_EVICT_AFTER)
            .map(|(beat, seen)| HostReport {
                name: beat.name.clone(),
                mode: beat.mode.clone(),
                slots: beat.slots,
                busy: beat.busy,
                jobs_done: beat.jobs_done,
                restarts: beat.restarts,
                last_heartbeat_s: seen.elapsed().as_secs_f64(),
                alive: is_alive(beat, *seen),
                left: beat.leaving,
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
    pub(super) parcels: AtomicU64,
    pub(super) largest_parcel: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) redelivered: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) deadline_passed: AtomicU64,
    pub(super) stale_removed: AtomicU64,
    pub(super) heartbeats_refused: AtomicU64,
}

/// A gateway's NATS side, as `stats` reports it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub(crate) struct RemoteReport {
    /// This gateway's id (its results come on `tc.answers.<id>`).
    pub(crate) gateway: String,
    /// Whether the connection to NATS is up.
    pub(crate) connected: bool,
    /// Jobs published to the stream.
    pub(crate) forwarded: u64,
    /// The stream messages they travelled in: short `compute` jobs waiting
    /// together are packed into one (a parcel); others travel alone.
    #[serde(default)]
    pub(crate) parcels: u64,
    /// The most jobs one of those messages carried.
    #[serde(default)]
    pub(crate) largest_parcel: u64,
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
    /// Heartbeats not taken into the host table: fields out of bounds, or a
    /// new name while the table was full.
    #[serde(default)]
    pub(crate) heartbeats_refused: u64,
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
    /// Messages dropped because their sender's farm key differs.
    pub(crate) key_trouble: KeyTrouble,
    /// The warnings about other refused messages, a line per kind at most
    /// every 30 s (anyone who can publish to NATS can send them).
    pub(crate) refusals: RefusalLog,
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

    /// Counts a heartbeat the host table did not take.
    pub(super) fn count_heartbeat(&self, heard: Heard) {
        if heard != Heard::Kept {
            self.counters.heartbeats_refused.fetch_add(1, Relaxed);
        }
    }

    /// The report for `stats`.
    pub(crate) fn report(&self) -> RemoteReport {
        let c = &self.counters;
        RemoteReport {
            gateway: self.id.clone(),
            connected: self.link.is_up(),
            forwarded: c.forwarded.load(Relaxed),
            parcels: c.parcels.load(Relaxed),
            largest_parcel: c.largest_parcel.load(Relaxed),
            refused: c.refused.load(Relaxed),
            redelivered: c.redelivered.load(Relaxed),
            duplicates_dropped: c.duplicates.load(Relaxed),
            messages_rejected: c.rejected.load(Relaxed),
            deadlines_passed: c.deadline_passed.load(Relaxed),
            stale_jobs_removed: c.stale_removed.load(Relaxed),
            farm_key: self.farm_key,
            heartbeats_refused: c.heartbeats_refused.load(Relaxed),
            hosts_alive: self.hosts.alive(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::limits::MAX_HOST_SLOTS;

    fn beat(name: &str, slots: usize) -> Heartbeat {
        Heartbeat {
            name: name.into(),
            slots,
            busy: 0,
            jobs_done: 0,
            restarts: 0,
            mode: "threads".into(),
            holding: Vec::new(),
            leaving: false,
            wire: crate::remote::wire::WIRE_VERSION,
        }
    }

    #[test]
    fn a_full_table_refuses_new_names_but_keeps_hearing_known_ones() {
        let table = HostTable::default();
        let t0 = Instant::now();
        for i in 0..MAX_HOSTS {
            assert_eq!(table.heard(beat(&format!("h{i}"), 1), t0), Heard::Kept);
        }
        assert_eq!(table.heard(beat("one-too-many", 1), t0), Heard::TableFull);
        assert_eq!(table.heard(beat("h0", 2), t0 + Duration::from_secs(1)), Heard::Kept);
        assert_eq!(table.lock().len(), MAX_HOSTS);
        assert_eq!(table.lock()["h0"].0.slots, 2);
    }

    #[test]
    fn silent_hosts_make_room_for_new_names() {
        let table = HostTable::default();
        let t0 = Instant::now();
        for i in 0..MAX_HOSTS {
            table.heard(beat(&format!("h{i}"), 1), t0);
        }
        let later = t0 + HOST_EVICT_AFTER;
        table.heard(beat("h7", 1), later - Duration::from_secs(1));
        assert_eq!(table.heard(beat("newcomer", 1), later), Heard::Kept);
        let mut names: Vec<String> = table.lock().keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["h7", "newcomer"]);
    }

    #[test]
    fn out_of_bounds_heartbeats_are_not_kept() {
        let table = HostTable::default();
        let now = Instant::now();
        assert_eq!(table.heard(beat(&"x".repeat(100_000), 1), now), Heard::Malformed);
        assert_eq!(table.heard(beat("h", MAX_HOST_SLOTS + 1), now), Heard::Malformed);
        assert_eq!(table.heard(Heartbeat { mode: "x".into(), ..beat("h", 1) }, now), Heard::Malformed);
        assert!(table.lock().is_empty());
    }
}
