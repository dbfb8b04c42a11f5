//! What a host hears of the rest of the farm: the other hosts' heartbeats
//! (which jobs each holds) and the gateways' (which are alive). Two
//! judgements rest on them:
//!
//! - **Redelivery or crash?** JetStream redelivers a job when its holder
//!   stopped acknowledging it — because the holder died, or because the
//!   broker restarted or the holder's link dropped while it worked on. Only
//!   the first is a crash. A host handed a job past its attempt limit asks:
//!   does a live host still hold it? Then it was the broker, not a crash.
//! - **Anyone still waiting?** A job whose gateway has been silent for
//!   [`GATEWAY_GONE_AFTER`] has nobody to read its result: it is dropped,
//!   not run. A shorter silence proves nothing: after a broker restart each
//!   client reconnects on its own back-off, so a live gateway may be heard
//!   seconds after this host is back — and dropping its job would cost its
//!   client a `TIMEOUT` at the deadline, while running a dead gateway's job
//!   only wastes a slot.
//!
//! Neither judgement is made while this host cannot know: until its own
//! link has been up for [`JUDGE_AFTER`] (after a start or a reconnect the
//! tables are stale; for the gateways' silence, [`GATEWAY_GONE_AFTER`]), it
//! assumes the best — run the job.
//!
//! Both tables are bounded: names silent for [`FORGET_AFTER`] are
//! forgotten, and at most [`MAX_PEERS`] are kept (the farm key keeps
//! strangers out; the bound keeps a misbehaving member from growing them).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::remote::HOST_TIMEOUT;

/// How long this host's link must have been up before it trusts its tables.
pub(crate) const JUDGE_AFTER: Duration = Duration::from_secs(5);
/// A gateway silent this long is taken for dead (it beats every second; a
/// reconnect after a broker restart takes at most a few seconds, see
/// `remote::connect`'s back-off cap).
pub(crate) const GATEWAY_GONE_AFTER: Duration = Duration::from_secs(10);
/// A gateway or host not heard from for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Most peers of each kind remembered.
const MAX_PEERS: usize = 1024;
/// Most job tokens taken from one heartbeat (a host holds one per slot).
const MAX_HOLDING: usize = 4096;

/// The other hosts and the gateways, as heard.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    hosts: Mutex<HashMap<String, (HashSet<String>, Instant)>>,
    gateways: Mutex<HashMap<String, Instant>>,
}

/// Inserts `key` into a bounded table, forgetting the silent first. False
/// when the table is full of live entries (the newcomer is not kept).
fn remember<V>(table: &mut HashMap<String, (V, Instant)>, key: &str, value: V, now: Instant) -> bool {
    if !table.contains_key(key) && table.len() >= MAX_PEERS {
        table.retain(|_, (_, seen)| now.duration_since(*seen) < FORGET_AFTER);
        if table.len() >= MAX_PEERS {
            return false;
        }
    }
    table.insert(key.to_string(), (value, now));
    true
}

impl Peers {
    /// A host's heartbeat: it holds the jobs `holding` now.
    pub(crate) fn host_heard(&self, name: &str, holding: &[String], now: Instant) {
        let holding: HashSet<String> = holding.iter().take(MAX_HOLDING).cloned().collect();
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        remember(&mut hosts, name, holding, now);
    }

    /// A gateway's heartbeat. True when it is one not heard from before
    /// (this host then says who it is at once, so the gateway need not
    /// wait a second for its first heartbeat).
    pub(crate) fn gateway_heard(&self, gateway: &str, now: Instant) -> bool {
        let mut gateways = self.gateways.lock().unwrap_or_else(PoisonError::into_inner);
        let new = !gateways.contains_key(gateway);
        // Bounded like the host table: forget the silent, refuse past the cap.
        if new && gateways.len() >= MAX_PEERS {
            gateways.retain(|_, seen| now.duration_since(*seen) < FORGET_AFTER);
            if gateways.len() >= MAX_PEERS {
                return false;
            }
        }
        gateways.insert(gateway.to_string(), now);
        new
    }

    /// Whether a host other than `me`, alive now, holds the job `token`.
    pub(crate) fn held_elsewhere(&self, me: &str, token: &str, now: Instant) -> Option<String> {
        let hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        hosts
            .iter()
            .find(|(name, (holding, seen))| {
                name.as_str() != me && now.duration_since(*seen) < HOST_TIMEOUT && holding.contains(token)
            })
            .map(|(name, _)| name.clone())
    }

    /// Whether `gateway` has been silent for [`GATEWAY_GONE_AFTER`] (never
    /// heard of counts as silent: a live gateway beats every second).
    pub(crate) fn gateway_gone(&self, gateway: &str, now: Instant) -> bool {
        let gateways = self.gateways.lock().unwrap_or_else(PoisonError::into_inner);
        gateways.get(gateway).is_none_or(|seen| now.duration_since(*seen) >= GATEWAY_GONE_AFTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_held_by_a_live_host_is_a_redelivery_and_by_a_silent_one_is_not() {
        let peers = Peers::default();
        let t0 = Instant::now();
        peers.host_heard("a", &["t1".into()], t0);
        assert_eq!(peers.held_elsewhere("b", "t1", t0 + Duration::from_secs(1)).as_deref(), Some("a"));
        assert_eq!(peers.held_elsewhere("a", "t1", t0), None, "not counting myself");
        assert_eq!(peers.held_elsewhere("b", "t2", t0), None);
        assert_eq!(peers.held_elsewhere("b", "t1", t0 + HOST_TIMEOUT), None, "a silent host holds nothing");
    }

    #[test]
    fn gateways_are_new_once_and_gone_only_after_a_silence_longer_than_a_reconnect() {
        let peers = Peers::default();
        let t0 = Instant::now();
        assert!(peers.gateway_gone("g", t0), "never heard of");
        assert!(peers.gateway_heard("g", t0));
        assert!(!peers.gateway_heard("g", t0));
        assert!(!peers.gateway_gone("g", t0 + Duration::from_secs(1)));
        // A host timeout's silence is what a gateway reconnecting after a
        // broker restart looks like: not gone yet.
        assert!(!peers.gateway_gone("g", t0 + HOST_TIMEOUT + Duration::from_secs(2)));
        assert!(peers.gateway_gone("g", t0 + GATEWAY_GONE_AFTER));
    }

    #[test]
    fn the_tables_are_bounded_and_forget_the_silent_first() {
        let peers = Peers::default();
        let t0 = Instant::now();
        for i in 0..MAX_PEERS {
            peers.host_heard(&format!("h{i}"), &[], t0);
        }
        peers.host_heard("late", &[], t0);
        assert_eq!(peers.hosts.lock().unwrap().len(), MAX_PEERS, "full of live hosts: the newcomer waits");
        peers.host_heard("later", &[], t0 + FORGET_AFTER);
        assert_eq!(peers.hosts.lock().unwrap().len(), 1, "the silent ones were forgotten");
    }
}
