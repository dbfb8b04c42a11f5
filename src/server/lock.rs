//! The accelerator mutex: a central lock that clients hold before they
//! predict, as in IdentyFire — with leases, fencing tokens and a queue that
//! cannot be blocked by a client that went away.
//!
//! ```text
//!            acquire (free)                 release / lease runs out
//!  client ─────────────────▶ OWNER ─────────────────────────────────▶ next in queue
//!     │ acquire (held)         ▲ acquire again = renew (same token)      (new token)
//!     ▼                        │
//!   QUEUED (FIFO, 1-based) ────┘ when it reaches the head and the lock is free
//! ```
//!
//! * **Leases.** The owner's lease lasts `lease` from its last activity
//!   (acquire or predict). When it runs out, the lock passes on: a crashed
//!   client cannot hold it for ever.
//! * **Queue expiry.** IdentyFire kept a queued client that went away at the
//!   head of its queue for ever, so nobody got the lock again. Here a queued
//!   client that has not asked again within one lease leaves the queue, and
//!   one handed the lock but never told is just an owner whose lease runs out.
//! * **Fencing tokens.** Every grant carries a number larger than every
//!   earlier grant's. An action that names an older token is refused, so a
//!   client whose lease expired while it was paused cannot act on a grant
//!   that has passed to someone else.
//!
//! All the rules live in [`LockState`], whose methods take the current time
//! as an argument: the unit tests drive it with made-up instants, so every
//! expiry is tested exactly, without sleeping.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::protocol::MAX_MUTEX_WAIT_MS;
use crate::units::micros;
use serde::{Deserialize, Serialize};

/// The longest a client may ask `acquire` to wait on the server.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(MAX_MUTEX_WAIT_MS);

/// The answer to an `acquire`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// The caller holds the lock, with this fencing token.
    Granted {
        /// The grant's fencing token.
        token: u64,
        /// When the grant was made (µs since the Unix epoch, server clock).
        /// A hand-over on release is granted at the release's instant.
        granted_at_us: u64,
    },
    /// The caller waits at this 1-based position.
    Queued {
        /// 1 = next in line.
        position: usize,
    },
}

/// Why an action that needs the lock was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Violation {
    /// The caller does not hold the lock.
    NotHolder,
    /// The caller holds the lock under a newer token than the one it showed.
    StaleToken {
        /// The token it showed.
        shown: u64,
        /// The token of its current grant.
        current: u64,
    },
}

impl Violation {
    /// The sentence the client gets. The first is IdentyFire's own text,
    /// which its clients may match on.
    pub(crate) fn message(&self) -> String {
        match self {
            Violation::NotHolder => "Mutex Violation - Acquire lock first".into(),
            Violation::StaleToken { shown, current } => format!(
                "Mutex Violation - stale fencing token {shown} (the current grant is {current}); acquire again"
            ),
        }
    }
}

/// The lock as `health`, `stats` and metrics show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LockSnapshot {
    /// Whether someone holds the lock.
    pub(crate) locked: bool,
    /// Who, if anyone.
    pub(crate) owner: Option<String>,
    /// The owner's fencing token.
    pub(crate) token: Option<u64>,
    /// Clients waiting.
    pub(crate) queue_length: usize,
    /// Grants since start (the last token handed out).
    pub(crate) grants: u64,
    /// Leases that ran out before their owner released.
    pub(crate) lease_expiries: u64,
    /// Queued clients dropped for not asking again in time.
    pub(crate) queue_expiries: u64,
    /// The lease length, in milliseconds.
    pub(crate) lease_ms: u64,
}

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
    lease: Duration,
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
    fn lease_deadline(&self) -> Option<Instant> {
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

/// The shared lock: [`LockState`] behind a mutex, plus a condition variable
/// so `acquire` can wait for its turn on the server (`wait_ms`).
pub(crate) struct LockCoordinator {
    state: Mutex<LockState>,
    changed: Condvar,
    closed: std::sync::atomic::AtomicBool,
}

impl LockCoordinator {
    /// A free lock whose leases last `lease`.
    pub(crate) fn new(lease: Duration) -> LockCoordinator {
        LockCoordinator {
            state: Mutex::new(LockState::new(lease)),
            changed: Condvar::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LockState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks for the lock, waiting up to `wait` (at most [`MAX_WAIT`]) for the
    /// grant. While it waits the caller keeps its place: it counts as asking.
    pub(crate) fn acquire(&self, client: &str, wait: Duration) -> Acquire {
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let outcome = state.acquire(client, now);
            let closed = self.closed.load(std::sync::atomic::Ordering::SeqCst);
            if matches!(outcome, Acquire::Granted { .. }) || now >= deadline || closed {
                return outcome;
            }
            // Wake when the lock may change hands: a release notifies; a lease
            // running out does not, so wake at its deadline too. Re-asking at
            // least twice per lease keeps our place in the queue.
            let mut wake = deadline.min(now + state.lease / 2);
            if let Some(lease_end) = state.lease_deadline() {
                wake = wake.min(lease_end);
            }
            let timeout = wake.saturating_duration_since(now).max(Duration::from_millis(1));
            state = self.changed.wait_timeout(state, timeout).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Gives the lock back; see [`LockState::release`].
    pub(crate) fn release(&self, client: &str, token: Option<u64>) -> Option<u64> {
        let released = self.lock().release(client, token, Instant::now());
        if released.is_some() {
            self.changed.notify_all();
        }
        released
    }

    /// See [`LockState::check_holder`].
    ///
    /// # Errors
    /// When the caller may not use the accelerator.
    pub(crate) fn check_holder(&self, client: &str, token: Option<u64>) -> Result<u64, Violation> {
        self.lock().check_holder(client, token, Instant::now())
    }

    /// The lock now.
    pub(crate) fn snapshot(&self) -> LockSnapshot {
        self.lock().snapshot(Instant::now())
    }

    /// Wakes every waiting `acquire` (server shutdown): they answer at once.
    pub(crate) fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_all();
    }
}

/// Milliseconds since the Unix epoch (IdentyFire's `server_timestamp`).
pub(crate) fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Microseconds since the Unix epoch.
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(micros).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);

    /// Matches a grant with this token, whenever it was made.
    fn granted(token: u64) -> GrantedWith {
        GrantedWith(token)
    }

    #[derive(Debug)]
    struct GrantedWith(u64);

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

    #[test]
    fn a_waiting_acquire_is_granted_on_release() {
        let lock = std::sync::Arc::new(LockCoordinator::new(LEASE));
        assert_eq!(lock.acquire("a", Duration::ZERO), granted(1));
        let waiter = {
            let lock = std::sync::Arc::clone(&lock);
            std::thread::spawn(move || lock.acquire("b", Duration::from_secs(20)))
        };
        // Release once b is queued (bounded poll, no timing assertion).
        for _ in 0..2000 {
            if lock.snapshot().queue_length == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let released_at = lock.release("a", None).expect("a held it");
        let Acquire::Granted { token, granted_at_us } = waiter.join().unwrap() else {
            panic!("b waited for it")
        };
        assert_eq!(token, 2);
        assert_eq!(granted_at_us, released_at, "handed over at the instant of the release");
    }
}
