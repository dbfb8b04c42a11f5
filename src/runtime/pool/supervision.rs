//! How the pool keeps itself alive without running away: a restart budget
//! in the manner of an Erlang supervisor's "restart intensity".
//!
//! Every replacement of a dead, hung or written-off worker takes one restart
//! from a pool-wide budget of `max` restarts per sliding `window`. When the
//! budget is spent, replacements wait until the oldest restart leaves the
//! window: a worker that dies the moment it starts costs `max` spawns per
//! window, not a fork bomb, and meanwhile `health` reports the pool degraded.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A sliding-window restart limit shared by every worker slot.
#[derive(Debug)]
pub(crate) struct RestartBudget {
    max: u32,
    window: Duration,
    recent: Mutex<VecDeque<Instant>>,
}

impl RestartBudget {
    /// At most `max` restarts in any `window`.
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        RestartBudget { max, window, recent: Mutex::new(VecDeque::new()) }
    }

    /// Takes one restart at `now` if the budget allows it; otherwise returns
    /// how long until it will.
    ///
    /// # Errors
    /// The time to wait when `max` restarts already happened in the window.
    pub(crate) fn try_take(&self, now: Instant) -> Result<(), Duration> {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        while recent.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.window) {
            recent.pop_front();
        }
        if recent.len() < self.max as usize {
            recent.push_back(now);
            return Ok(());
        }
        let oldest = recent.front().copied().unwrap_or(now);
        Err((oldest + self.window).saturating_duration_since(now).max(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_max_per_window_then_says_how_long_to_wait() {
        let budget = RestartBudget::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(budget.try_take(t0 + Duration::from_secs(i)), Ok(()));
        }
        // A fourth restart at t=4 s must wait until the first (t=0) leaves the window.
        assert_eq!(budget.try_take(t0 + Duration::from_secs(4)), Err(Duration::from_secs(6)));
        // At t=10 s the first restart has left the window: one more is allowed.
        assert_eq!(budget.try_take(t0 + Duration::from_secs(10)), Ok(()));
        assert!(budget.try_take(t0 + Duration::from_secs(10)).is_err());
    }

    #[test]
    fn a_zero_budget_never_restarts() {
        let budget = RestartBudget::new(0, Duration::from_secs(1));
        assert!(budget.try_take(Instant::now()).is_err());
    }
}
