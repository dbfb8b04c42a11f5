//! The accelerator mutex's rules — owner, FIFO queue, leases, fencing
//! tokens — with the current time passed in, so they are pure and tested
//! with made-up instants (see the module above for what each rule is for).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{unix_micros, Acquire, Claimant, LockSnapshot, Violation};
use crate::server::jobs::registry::ConnId;
use crate::units::micros;

#[derive(Debug)]
struct Owner {
    who: Claimant,
    token: u64,
    lease_until: Instant,
    granted_at: Instant,
    /// Whether the owner has been told its token. A lock handed over on
    /// release goes to the head of the queue before it asks again; in the
    /// native dialect only that very claimant (same connection) may then
    /// collect it without a token.
    told: bool,
}

#[derive(Debug)]
struct Waiter {
    who: Claimant,
    last_seen: Instant,
    /// The connection blocked in `acquire` with `wait_ms` for this waiter,
    /// if any: when it goes away, so does the waiter.
    waiting_on: Option<ConnId>,
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
                self.grant(next.who, now, false);
            }
        }
    }

    fn grant(&mut self, who: Claimant, now: Instant, told: bool) -> Acquire {
        self.last_token += 1;
        self.owner =
            Some(Owner { who, token: self.last_token, lease_until: now + self.lease, granted_at: now, told });
        Acquire::Granted { token: self.last_token, granted_at_us: self.wall_clock_us(now) }
    }

    /// `who` asks for the lock, showing `token` when it renews a grant.
    ///
    /// IdentyFire's clients (no connection in `who`) are known by name
    /// alone, as in the original: asking again renews. A native client must
    /// show its grant's token to renew; the same name from another
    /// connection, without the token, is someone else and waits in line.
    #[cfg(test)]
    pub(crate) fn acquire(&mut self, who: &Claimant, token: Option<u64>, now: Instant) -> Acquire {
        self.acquire_waiting(who, token, None, now)
    }

    /// `who` asks for the lock as a client blocked on `connection` until it
    /// is granted: if it leaves, [`LockState::forget_connection`] takes it
    /// out of the queue.
    pub(crate) fn acquire_waiting(
        &mut self,
        who: &Claimant,
        token: Option<u64>,
        waiting_on: Option<ConnId>,
        now: Instant,
    ) -> Acquire {
        self.settle(now);
        let lease = self.lease;
        match &mut self.owner {
            Some(owner) if owner.who.client == who.client => {
                let renews = match (who.is_native(), token) {
                    (false, _) => true,
                    (true, Some(shown)) if shown == owner.token => true,
                    (true, Some(shown)) => {
                        return Acquire::Refused(Violation::StaleToken { shown, current: owner.token })
                    }
                    // A hand-over collected by the claimant it was made to.
                    (true, None) if !owner.told && owner.who == *who => true,
                    (true, None) if owner.who == *who => return Acquire::Refused(Violation::TokenRequired),
                    (true, None) => false,
                };
                if renews {
                    owner.lease_until = now + lease; // renewal: same grant, same token
                    owner.told = true;
                    let (token, granted_at) = (owner.token, owner.granted_at);
                    return Acquire::Granted { token, granted_at_us: self.wall_clock_us(granted_at) };
                }
            }
            Some(_) => {}
            None => {
                // settle() emptied the queue into the lock, so nobody is ahead.
                return self.grant(who.clone(), now, true);
            }
        }
        let position = match self.queue.iter().position(|w| w.who == *who) {
            Some(index) => {
                let waiter = &mut self.queue[index];
                waiter.last_seen = now;
                waiter.waiting_on = waiting_on.or(waiter.waiting_on);
                index + 1
            }
            None => {
                self.queue.push_back(Waiter { who: who.clone(), last_seen: now, waiting_on });
                self.queue.len()
            }
        };
        Acquire::Queued { position }
    }

    /// A connection went away: its waiters leave the queue at once (the
    /// next in line no longer waits a lease for them), and a hand-over made
    /// to one of them that it never collected passes on.
    pub(crate) fn forget_connection(&mut self, connection: ConnId, now: Instant) {
        let gone = |who: &Claimant, waiting_on: Option<ConnId>| {
            who.connection == Some(connection) || waiting_on == Some(connection)
        };
        self.queue.retain(|w| !gone(&w.who, w.waiting_on));
        if self.owner.as_ref().is_some_and(|o| !o.told && o.who.connection == Some(connection)) {
            self.owner = None;
        }
        self.settle(now);
    }

    /// `who` gives the lock back. Only the owner can: a native client under
    /// its current token (which it must show), an IdentyFire client by name
    /// (under its token, when it shows one). The next in line gets it at
    /// once. Returns when it was released (µs since the Unix epoch).
    ///
    /// # Errors
    /// [`Violation`] when the caller does not hold the lock under this token.
    pub(crate) fn release(
        &mut self,
        who: &Claimant,
        token: Option<u64>,
        now: Instant,
    ) -> Result<u64, Violation> {
        self.settle(now);
        let owner = self.owner.as_ref().filter(|o| o.who.client == who.client).ok_or(Violation::NotHolder)?;
        match token {
            None if who.is_native() => return Err(Violation::TokenRequired),
            Some(shown) if shown != owner.token => {
                return Err(Violation::StaleToken { shown, current: owner.token })
            }
            _ => {}
        }
        self.owner = None;
        self.settle(now);
        Ok(self.wall_clock_us(now))
    }

    /// Checks that `client` holds the lock (under `token`, when shown) before
    /// it uses the accelerator, and renews its lease: using the lock is
    /// activity. Returns the current token.
    ///
    /// # Errors
    /// [`Violation`] when the caller does not hold the lock or shows an old token.
    pub(crate) fn check_holder(
        &mut self,
        who: &Claimant,
        token: Option<u64>,
        now: Instant,
    ) -> Result<u64, Violation> {
        self.settle(now);
        let lease = self.lease;
        match &mut self.owner {
            Some(owner) if owner.who.client == who.client => match token {
                Some(shown) if shown != owner.token => {
                    Err(Violation::StaleToken { shown, current: owner.token })
                }
                None if who.is_native() => Err(Violation::TokenRequired),
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
            owner: self.owner.as_ref().map(|o| o.who.client.clone()),
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

    /// An IdentyFire client, known by its name alone.
    pub(in crate::server::lock) fn named(client: &str) -> Claimant {
        Claimant { client: client.into(), connection: None }
    }

    /// A native client on connection `conn`.
    fn native(client: &str, conn: ConnId) -> Claimant {
        Claimant { client: client.into(), connection: Some(conn) }
    }

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
        assert_eq!(lock.acquire(&named("a"), None, t0), granted(1));
        assert_eq!(lock.acquire(&named("b"), None, t0), Acquire::Queued { position: 1 });
        assert_eq!(lock.acquire(&named("c"), None, t0), Acquire::Queued { position: 2 });
        assert_eq!(lock.acquire(&named("b"), None, t0), Acquire::Queued { position: 1 }, "queued once");
        assert!(lock.release(&named("a"), None, t0).is_ok());
        // b was handed the lock on release; c moves up.
        assert_eq!(lock.acquire(&named("c"), None, t0), Acquire::Queued { position: 1 });
        assert_eq!(lock.acquire(&named("b"), None, t0), granted(2));
        assert!(lock.release(&named("b"), Some(2), t0).is_ok());
        assert_eq!(lock.acquire(&named("c"), None, t0), granted(3));
    }

    #[test]
    fn the_owner_renews_and_others_cannot_release() {
        let t0 = Instant::now();
        let mut lock = LockState::new(LEASE);
        assert_eq!(lock.acquire(&named("a"), None, t0), granted(1));
        // Renewed at 20 s, so still held at 45 s (20 + 30 > 45).
        assert_eq!(lock.acquire(&named("a"), None, at(t0, 20)), granted(1));
        assert!(lock.release(&named("b"), None, at(t0, 45)).is_err(), "not the owner");
        assert!(lock.release(&named("a"), Some(7), at(t0, 45)).is_err(), "not the owner's token");
        assert_eq!(lock.snapshot(at(t0, 45)).owner.as_deref(), Some("a"));
        assert!(lock.release(&named("a"), None, at(t0, 45)).is_ok());
        assert!(lock.release(&named("a"), None, at(t0, 45)).is_err(), "only once");
    }

    #[test]
    fn an_expired_lease_passes_the_lock_to_the_next_in_line() {
        let t0 = Instant::now();
        let mut lock = LockState::new(LEASE);
        lock.acquire(&named("crashed"), None, t0);
        assert_eq!(lock.acquire(&named("b"), None, at(t0, 10)), Acquire::Queued { position: 1 });
        // b keeps asking; the owner never comes back.
        assert_eq!(lock.acquire(&named("b"), None, at(t0, 29)), Acquire::Queued { position: 1 });
        assert_eq!(lock.acquire(&named("b"), None, at(t0, 30)), granted(2));
        let snap = lock.snapshot(at(t0, 30));
        assert_eq!(snap.lease_expiries, 1);
        assert_eq!(lock.check_holder(&named("crashed"), Some(1), at(t0, 31)), Err(Violation::NotHolder));
    }

    #[test]
    fn a_queued_client_that_stops_asking_leaves_the_queue() {
        let t0 = Instant::now();
        let mut lock = LockState::new(LEASE);
        lock.acquire(&named("a"), None, t0);
        lock.acquire(&named("gone"), None, at(t0, 1)); // queued first, then never heard from
        lock.acquire(&named("c"), None, at(t0, 2));
        lock.acquire(&named("a"), None, at(t0, 25)); // a renews until 55
        lock.acquire(&named("c"), None, at(t0, 25));
        // At 40 s "gone" has been silent for 39 s > lease: it left the queue.
        assert_eq!(lock.acquire(&named("c"), None, at(t0, 40)), Acquire::Queued { position: 1 });
        assert_eq!(lock.snapshot(at(t0, 40)).queue_expiries, 1);
        assert!(lock.release(&named("a"), None, at(t0, 41)).is_ok());
        assert_eq!(lock.acquire(&named("c"), None, at(t0, 41)), granted(2), "c, not the ghost");
    }

    #[test]
    fn fencing_tokens_grow_and_stale_ones_are_refused() {
        let t0 = Instant::now();
        let mut lock = LockState::new(LEASE);
        let mut last = 0;
        for round in 0..5u64 {
            let Acquire::Granted { token, .. } = lock.acquire(&named("a"), None, at(t0, round * 100)) else {
                panic!()
            };
            assert!(token > last, "tokens strictly increase");
            last = token;
            // Let the lease run out, then come back: a new grant.
        }
        assert_eq!(lock.check_holder(&named("a"), Some(last), at(t0, 401)), Ok(last));
        assert_eq!(
            lock.check_holder(&named("a"), Some(last - 1), at(t0, 401)),
            Err(Violation::StaleToken { shown: last - 1, current: last })
        );
        assert_eq!(lock.check_holder(&named("b"), None, at(t0, 401)), Err(Violation::NotHolder));
    }

    #[test]
    fn a_hand_over_is_granted_at_the_release_instant() {
        let t0 = Instant::now();
        let mut lock = LockState::new(LEASE);
        lock.acquire(&named("a"), None, t0);
        lock.acquire(&named("b"), None, at(t0, 1));
        let released = lock.release(&named("a"), None, at(t0, 5)).unwrap();
        let Acquire::Granted { granted_at_us, .. } = lock.acquire(&named("b"), None, at(t0, 9)) else {
            panic!()
        };
        assert_eq!(granted_at_us, released);
        // Sub-microsecond rounding on either side of the epoch instant.
        assert!((released - lock.wall_clock_us(t0)).abs_diff(5_000_000) <= 1);
    }

    #[test]
    fn using_the_lock_renews_the_lease() {
        let t0 = Instant::now();
        let mut lock = LockState::new(LEASE);
        lock.acquire(&named("a"), None, t0);
        assert!(lock.check_holder(&named("a"), None, at(t0, 25)).is_ok());
        assert!(lock.check_holder(&named("a"), None, at(t0, 50)).is_ok(), "renewed at 25 s");
        assert_eq!(lock.check_holder(&named("a"), None, at(t0, 81)), Err(Violation::NotHolder));
    }

    #[test]
    fn native_clients_with_one_name_are_two_claimants_and_need_their_token() {
        let t0 = Instant::now();
        let mut lock = LockState::new(LEASE);
        let (first, second) = (native("same", 1), native("same", 2));
        assert_eq!(lock.acquire(&first, None, t0), granted(1));
        // The same name from another connection does not share the grant.
        assert_eq!(lock.acquire(&second, None, t0), Acquire::Queued { position: 1 });
        assert_eq!(lock.check_holder(&second, None, t0), Err(Violation::TokenRequired));
        // Renewing, predicting and releasing all need the grant's token.
        assert_eq!(lock.acquire(&first, None, t0), Acquire::Refused(Violation::TokenRequired));
        assert_eq!(lock.acquire(&first, Some(1), t0), granted(1));
        assert_eq!(lock.release(&second, None, t0), Err(Violation::TokenRequired));
        assert_eq!(lock.release(&second, Some(9), t0), Err(Violation::StaleToken { shown: 9, current: 1 }));
        assert!(lock.release(&first, Some(1), t0).is_ok());
        // Handed over to the second connection, which collects it without
        // a token (it was never told one); nobody else can.
        assert_eq!(lock.acquire(&native("same", 3), None, t0), Acquire::Queued { position: 1 });
        assert_eq!(lock.acquire(&second, None, t0), granted(2));
        assert_eq!(lock.acquire(&second, None, t0), Acquire::Refused(Violation::TokenRequired));
    }

    #[test]
    fn a_waiter_that_leaves_is_dropped_at_once_and_its_hand_over_passes_on() {
        let t0 = Instant::now();
        let mut lock = LockState::new(LEASE);
        assert_eq!(lock.acquire(&named("owner"), None, t0), granted(1));
        assert_eq!(lock.acquire_waiting(&named("left"), None, Some(7), t0), Acquire::Queued { position: 1 });
        assert_eq!(lock.acquire(&named("next"), None, t0), Acquire::Queued { position: 2 });
        lock.forget_connection(7, at(t0, 1));
        assert_eq!(lock.acquire(&named("next"), None, at(t0, 1)), Acquire::Queued { position: 1 });
        assert!(lock.release(&named("owner"), None, at(t0, 2)).is_ok());
        assert_eq!(
            lock.acquire(&named("next"), None, at(t0, 2)),
            granted(2),
            "no lease wasted on the leaver"
        );
        // A native hand-over the departed connection never collected passes on.
        assert_eq!(lock.acquire(&native("n", 8), None, at(t0, 3)), Acquire::Queued { position: 1 });
        assert_eq!(lock.acquire(&named("last"), None, at(t0, 3)), Acquire::Queued { position: 2 });
        assert!(lock.release(&named("next"), None, at(t0, 3)).is_ok()); // handed to n on 8
        lock.forget_connection(8, at(t0, 4));
        assert_eq!(lock.acquire(&named("last"), None, at(t0, 4)), granted(4));
    }
}
