//! The accelerator mutex's rules — owner, FIFO queue, leases, fencing
//! tokens — with the current time passed in, so they are pure and tested
//! with made-up instants (see the module above for what each rule is for).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{unix_micros, Acquire, LockSnapshot, Violation};
use crate::units::micros;

#[derive(Debug)]
struct Owner {
    client: String,
    token: u64,
    lease_until: Instant,
    granted_at: Instant,
}

#[derive(Debug)]
struct Waiter {
    client: String,
    last_seen: Instant,
}

/// The lock's rules, with time passed in.
#[derive(Debug)]
pub(crate) struct LockState {
    pub(super) lease: Duration,
    owner: Option<Owner>,
    queue: VecDeque<Waiter>,
    last_token: u64,
    lease_expiries: u64,
    queue_expiries: u64,
    /// An instant and the wall-clock time at it, to report times on the
    /// server's clock from the monotonic instants the rules run on.
    epoch: (Instant, u64),
}

impl LockState {
    /// A free lock whose leases last `lease`.
    pub(crate) fn new(lease: Duration) -> LockState {
        LockState {
            lease,
            owner: None,
            queue: VecDeque::new(),
            last_token: 0,
            lease_expiries: 0,
            queue_expiries: 0,
            epoch: (Instant::now(), unix_micros()),
        }
    }

    /// `at` as microseconds since the Unix epoch.
    pub(crate) fn wall_clock_us(&self, at: Instant) -> u64 {
        let (base, base_us) = self.epoch;
        if at >= base {
            base_us + micros(at - base)
        } else {
            base_us.saturating_sub(micros(base - at))
        }
    }

    /// Applies what the passing of time decides: an owner whose lease ran out
    /// loses the lock, queued clients that stopped asking leave, and a free
    /// lock goes to the head of the queue.
    fn settle(&mut self, now: Instant) {
        if self.owner.as_ref().is_some_and(|o| o.lease_until <= now) {
            self.owner = None;
            self.lease_expiries += 1;
        }
        let lease = self.lease;
        let before = self.queue.len();
        self.queue.retain(|w| now.saturating_duration_since(w.last_seen) < lease);
        self.queue_expiries += (before - self.queue.len()) as u64;
        if self.owner.is_none() {
            if let Some(next) = self.queue.pop_front() {
                self.grant(next.client, now);
            }
        }
    }

    fn grant(&mut self, client: String, now: Instant) -> Acquire {
        self.last_token += 1;
        self.owner =
            Some(Owner { client, token: self.last_token, lease_until: now + self.lease, granted_at: now });
        Acquire::Granted { token: self.last_token, granted_at_us: self.wall_clock_us(now) }
    }

    /// `client` asks for the lock.
    pub(crate) fn acquire(&mut self, client: &str, now: Instant) -> Acquire {
        self.settle(now);
        let lease = self.lease;
        match &mut self.owner {
            Some(owner) if owner.client == client => {
                owner.lease_until = now + lease; // renewal: same grant, same token
                let (token, granted_at) = (owner.token, owner.granted_at);
                return Acquire::Granted { token, granted_at_us: self.wall_clock_us(granted_at) };
            }
            Some(_) => {}
            None => {
                // settle() emptied the queue into the lock, so nobody is ahead.
                return self.grant(client.to_owned(), now);
            }
        }
        let position = match self.queue.iter().position(|w| w.client == client) {
            Some(index) => {
                self.queue[index].last_seen = now;
                index + 1
            }
            None => {
                self.queue.push_back(Waiter { client: client.to_owned(), last_seen: now });
                self.queue.len()
            }
        };
        Acquire::Queued { position }
    }

    /// `client` gives the lock back. Only the owner can (and, when it shows a
    /// token, only under its current grant); the next in line gets it at once.
    /// Returns when it was released (µs since the Unix epoch), or `None`
    /// when the caller did not hold the lock.
    pub(crate) fn release(&mut self, client: &str, token: Option<u64>, now: Instant) -> Option<u64> {
        self.settle(now);
        let is_owner =
            self.owner.as_ref().is_some_and(|o| o.client == client && token.is_none_or(|t| t == o.token));
        if !is_owner {
            return None;
        }
        self.owner = None;
        self.settle(now);
        Some(self.wall_clock_us(now))
    }

    /// Checks that `client` holds the lock (under `token`, when shown) before
    /// it uses the accelerator, and renews its lease: using the lock is
    /// activity. Returns the current token.
    ///
    /// # Errors
    /// [`Violation`] when the caller does not hold the lock or shows an old token.
    pub(crate) fn check_holder(
        &mut self,
        client: &str,
        token: Option<u64>,
        now: Instant,
    ) -> Result<u64, Violation> {
        self.settle(now);
        let lease = self.lease;
        match &mut self.owner {
            Some(owner) if owner.client == client => match token {
                Some(shown) if shown != owner.token => {
                    Err(Violation::StaleToken { shown, current: owner.token })
                }
                _ => {
                    owner.lease_until = now + lease;
                    Ok(owner.token)
                }
            },
            _ => Err(Violation::NotHolder),
        }
    }

    /// When the owner's lease runs out, if someone holds the lock.
    pub(super) fn lease_deadline(&self) -> Option<Instant> {
        self.owner.as_ref().map(|o| o.lease_until)
    }

    /// The lock as monitoring shows it.
    pub(crate) fn snapshot(&mut self, now: Instant) -> LockSnapshot {
        self.settle(now);
        LockSnapshot {
            locked: self.owner.is_some(),
            owner: self.owner.as_ref().map(|o| o.client.clone()),
            token: self.owner.as_ref().map(|o| o.token),
            queue_length: self.queue.len(),
            grants: self.last_token,
            lease_expiries: self.lease_expiries,
            queue_expiries: self.queue_expiries,
            lease_ms: u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::server::lock) const LEASE: Duration = Duration::from_secs(30);

    /// Matches a grant with this token, whenever it was made.
    pub(in crate::server::lock) fn granted(token: u64) -> GrantedWith {
        GrantedWith(token)
    }

    #[derive(Debug)]
    pub(in crate::server::lock) struct GrantedWith(u64);

    impl PartialEq<GrantedWith> for Acquire {
        fn eq(&self, other: &GrantedWith) -> bool {
            matches!(self, Acquire::Granted { token, .. } if *token == other.0)
        }
    }

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn the_queue_is_first_in_first_out() {
        let t0 = Instant::now();
        let mut lock = LockState::new(LEASE);
        assert_eq!(lock.acquire("a", t0), granted(1));
        assert_eq!(lock.acquire("b", t0), Acquire::Queued { position: 1 });
        assert_eq!(lock.acquire("c", t0), Acquire::Queued { position: 2 });
        assert_eq!(lock.acquire("b", t0), Acquire::Queued { position: 1 }, "queued once");
        assert!(lock.release("a", None, t0).is_some());
        // b was handed the lock on release; c moves up.
        assert_eq!(lock.acquire("c", t0), Acquire::Queued { position: 1 });
        assert_eq!(lock.acquire("b", t0), granted(2));
        assert!(lock.release("b", Some(2), t0).is_some());
        assert_eq!(lock.acquire("c", t0), granted(3));
    }

    #[test]
    fn the_owner_renews_and_others_cannot_release() {
        let t0 = Instant::now();
        let mut lock = LockState::new(LEASE);
        assert_eq!(lock.acquire("a", t0), granted(1));
        // Renewed at 20 s, so still held at 45 s (20 + 30 > 45).
        assert_eq!(lock.acquire("a", at(t0, 20)), granted(1));
        assert!(lock.release("b", None, at(t0, 45)).is_none(), "not the owner");
        assert!(lock.release("a", Some(7), at(t0, 45)).is_none(), "not the owner's token");
        assert_eq!(lock.snapshot(at(t0, 45)).owner.as_deref(), Some("a"));
        assert!(lock.release("a", None, at(t0, 45)).is_some());
        assert!(lock.release("a", None, at(t0, 45)).is_none(), "only once");
    }

    #[test]
    fn an_expired_lease_passes_the_lock_to_the_next_in_line() {
        let t0 = Instant::now();
        let mut lock = LockState::new(LEASE);
        lock.acquire("crashed", t0);
        assert_eq!(lock.acquire("b", at(t0, 10)), Acquire::Queued { position: 1 });
        // b keeps asking; the owner never comes back.
        assert_eq!(lock.acquire("b", at(t0, 29)), Acquire::Queued { position: 1 });
        assert_eq!(lock.acquire("b", at(t0, 30)), granted(2));
        let snap = lock.snapshot(at(t0, 30));
        assert_eq!(snap.lease_expiries, 1);
        assert_eq!(lock.check_holder("crashed", Some(1), at(t0, 31)), Err(Violation::NotHolder));
    }

    #[test]
    fn a_queued_client_that_stops_asking_leaves_the_queue() {
        let t0 = Instant::now();
        let mut lock = LockState::new(LEASE);
        lock.acquire("a", t0);
        lock.acquire("gone", at(t0, 1)); // queued first, then never heard from
        lock.acquire("c", at(t0, 2));
        lock.acquire("a", at(t0, 25)); // a renews until 55
        lock.acquire("c", at(t0, 25));
        // At 40 s "gone" has been silent for 39 s > lease: it left the queue.
        assert_eq!(lock.acquire("c", at(t0, 40)), Acquire::Queued { position: 1 });
        assert_eq!(lock.snapshot(at(t0, 40)).queue_expiries, 1);
        assert!(lock.release("a", None, at(t0, 41)).is_some());
        assert_eq!(lock.acquire("c", at(t0, 41)), granted(2), "c, not the ghost");
    }

    #[test]
    fn fencing_tokens_grow_and_stale_ones_are_refused() {
        let t0 = Instant::now();
        let mut lock = LockState::new(LEASE);
        let mut last = 0;
        for round in 0..5u64 {
            let Acquire::Granted { token, .. } = lock.acquire("a", at(t0, round * 100)) else { panic!() };
            assert!(token > last, "tokens strictly increase");
            last = token;
            // Let the lease run out, then come back: a new grant.
        }
        assert_eq!(lock.check_holder("a", Some(last), at(t0, 401)), Ok(last));
        assert_eq!(
            lock.check_holder("a", Some(last - 1), at(t0, 401)),
            Err(Violation::StaleToken { shown: last - 1, current: last })
        );
        assert_eq!(lock.check_holder("b", None, at(t0, 401)), Err(Violation::NotHolder));
    }

    #[test]
    fn a_hand_over_is_granted_at_the_release_instant() {
        let t0 = Instant::now();
        let mut lock = LockState::new(LEASE);
        lock.acquire("a", t0);
        lock.acquire("b", at(t0, 1));
        let released = lock.release("a", None, at(t0, 5)).unwrap();
        let Acquire::Granted { granted_at_us, .. } = lock.acquire("b", at(t0, 9)) else { panic!() };
        assert_eq!(granted_at_us, released);
        // Sub-microsecond rounding on either side of the epoch instant.
        assert!((released - lock.wall_clock_us(t0)).abs_diff(5_000_000) <= 1);
    }

    #[test]
    fn using_the_lock_renews_the_lease() {
        let t0 = Instant::now();
        let mut lock = LockState::new(LEASE);
        lock.acquire("a", t0);
        assert!(lock.check_holder("a", None, at(t0, 25)).is_ok());
        assert!(lock.check_holder("a", None, at(t0, 50)).is_ok(), "renewed at 25 s");
        assert_eq!(lock.check_holder("a", None, at(t0, 81)), Err(Violation::NotHolder));
    }
}
