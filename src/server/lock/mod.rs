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
//! * **Who is who.** IdentyFire's clients open a new connection for every
//!   call and send only `client_id`, so in that dialect the name is the
//!   identity, as in the original (see docs/PREDICTIONS.md for what that
//!   can and cannot protect). A native client is its name *and* its
//!   connection ([`Claimant`]), and renewing, predicting under the lock and
//!   releasing need the token its grant returned: the same name from two
//!   connections is two clients, and a name seen in `stats` is not enough.
//! * **Departed waiters.** A client blocked in `acquire` (`wait_ms`) that
//!   disconnects leaves the queue at once, and a hand-over it never
//!   collected passes on, so the next client does not wait a lease for it.
//!
//! All the rules live in [`rules::LockState`], whose methods take the
//! current time as an argument: the unit tests drive it with made-up
//! instants, so every expiry is tested exactly, without sleeping. This file
//! wraps it for threads: [`LockCoordinator`] holds it behind a `Mutex` and
//! wakes waiting clients with a `Condvar`.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod rules;

use rules::LockState;

use crate::protocol::MAX_MUTEX_WAIT_MS;
use crate::server::jobs::registry::ConnId;
use crate::units::micros;
use serde::{Deserialize, Serialize};

/// The longest a client may ask `acquire` to wait on the server.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(MAX_MUTEX_WAIT_MS);

/// How often a client blocked in `acquire` is checked for having left.
pub(crate) const DEPARTURE_CHECK: Duration = Duration::from_millis(100);

/// Who asks for the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claimant {
    /// The client's name for itself (`client_id`).
    pub(crate) client: String,
    /// The connection it asks on, for native clients; `None` for IdentyFire
    /// clients, whom the original knew by name alone.
    pub(crate) connection: Option<ConnId>,
}

impl Claimant {
    /// Native clients must show their token to renew, use or release a grant.
    fn is_native(&self) -> bool {
        self.connection.is_some()
    }
}

/// The answer to an `acquire`.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The caller holds the lock but did not show its grant's token (native
    /// clients renew with it), or showed an old one.
    Refused(Violation),
}

/// Why an action that needs the lock was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Violation {
    /// The caller does not hold the lock.
    NotHolder,
    /// A native client did not show its grant's token.
    TokenRequired,
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
            Violation::TokenRequired => "Mutex Violation - show the fencing \"token\" your grant returned \
                 (native clients renew, predict and release with it)"
                .into(),
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

/// The shared lock: [`LockState`] behind a mutex, plus a condition variable
/// so `acquire` can wait for its turn on the server (`wait_ms`).
pub(crate) struct LockCoordinator {
    state: Mutex<LockState>,
    changed: Condvar,
    /// Set once at shutdown (under `state`'s lock, see `close`); `SeqCst`
    /// because it is rare and the strongest ordering is the simplest to
    /// reason about.
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
    /// grant. While it waits the caller keeps its place: it counts as
    /// asking. `waiting_on` is the connection blocked here; `gone` tells
    /// whether its client has left, checked at least every
    /// [`DEPARTURE_CHECK`]: a client that leaves is taken out of the queue
    /// (and a grant it got as it left is passed on) at once.
    pub(crate) fn acquire(
        &self,
        who: &Claimant,
        token: Option<u64>,
        wait: Duration,
        waiting_on: Option<ConnId>,
        gone: impl Fn() -> bool,
    ) -> Acquire {
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let outcome = state.acquire_waiting(who, token, waiting_on.filter(|_| !wait.is_zero()), now);
            let closed = self.closed.load(std::sync::atomic::Ordering::SeqCst);
            if matches!(outcome, Acquire::Granted { .. } | Acquire::Refused(_)) || now >= deadline || closed {
                return outcome;
            }
            // Wake when the lock may change hands: a release notifies; a lease
            // running out does not, so wake at its deadline too. Re-asking at
            // least twice per lease keeps our place in the queue; waking every
            // DEPARTURE_CHECK notices a client that left.
            let mut wake = deadline.min(now + state.lease / 2).min(now + DEPARTURE_CHECK);
            if let Some(lease_end) = state.lease_deadline() {
                wake = wake.min(lease_end);
            }
            let timeout = wake.saturating_duration_since(now).max(Duration::from_millis(1));
            state = self.changed.wait_timeout(state, timeout).unwrap_or_else(|p| p.into_inner()).0;
            // `gone` looks at the socket: never with the lock held.
            drop(state);
            let left = gone();
            state = self.lock();
            if left {
                if let Some(connection) = waiting_on {
                    state.forget_connection(connection, Instant::now());
                    self.changed.notify_all();
                }
                return Acquire::Queued { position: 0 };
            }
        }
    }

    /// Gives the lock back; see [`LockState::release`].
    ///
    /// # Errors
    /// When the caller does not hold the lock under this token.
    pub(crate) fn release(&self, who: &Claimant, token: Option<u64>) -> Result<u64, Violation> {
        let released = self.lock().release(who, token, Instant::now());
        if released.is_ok() {
            self.changed.notify_all();
        }
        released
    }

    /// See [`LockState::check_holder`].
    ///
    /// # Errors
    /// When the caller may not use the accelerator.
    pub(crate) fn check_holder(&self, who: &Claimant, token: Option<u64>) -> Result<u64, Violation> {
        self.lock().check_holder(who, token, Instant::now())
    }

    /// A connection closed: see [`LockState::forget_connection`].
    pub(crate) fn forget_connection(&self, connection: ConnId) {
        self.lock().forget_connection(connection, Instant::now());
        self.changed.notify_all();
    }

    /// The lock now.
    pub(crate) fn snapshot(&self) -> LockSnapshot {
        self.lock().snapshot(Instant::now())
    }

    /// Wakes every waiting `acquire` (server shutdown): they answer at once.
    pub(crate) fn close(&self) {
        // Set the flag while holding the lock a waiter checks it under, so
        // no waiter can check, miss it, and then sleep through the notify.
        let _state = self.lock();
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
    use super::rules::tests::{granted, named, LEASE};
    use super::*;

    #[test]
    fn a_waiting_acquire_is_granted_on_release() {
        let lock = std::sync::Arc::new(LockCoordinator::new(LEASE));
        assert_eq!(lock.acquire(&named("a"), None, Duration::ZERO, None, || false), granted(1));
        let waiter = {
            let lock = std::sync::Arc::clone(&lock);
            std::thread::spawn(move || {
                lock.acquire(&named("b"), None, Duration::from_secs(20), Some(2), || false)
            })
        };
        // Release once b is queued (bounded poll, no timing assertion).
        for _ in 0..2000 {
            if lock.snapshot().queue_length == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let released_at = lock.release(&named("a"), None).expect("a held it");
        let Acquire::Granted { token, granted_at_us } = waiter.join().unwrap() else {
            panic!("b waited for it")
        };
        assert_eq!(token, 2);
        assert_eq!(granted_at_us, released_at, "handed over at the instant of the release");
    }
}
