//! Per-client rate limiting (`--rate-limit R`): a token bucket per client IP
//! address, refilled at R tokens per second and holding at most R (one
//! second of burst). A request that finds the bucket empty is answered with
//! `RATE_LIMITED` at once — never dropped silently, never queued.
//!
//! Clients are told apart by IP address rather than by connection, so
//! opening more connections does not buy more throughput. Buckets of clients
//! that have been quiet for a minute are forgotten, which bounds the map.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Buckets idle for this long are dropped when the map is swept.
const IDLE_BUCKET: Duration = Duration::from_secs(60);
/// The map is swept when it grows past this many clients.
const SWEEP_ABOVE: usize = 10_000;

/// Token buckets by client address.
pub(crate) struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `rate` requests per second per client, with a burst of `rate`.
    pub(crate) fn new(rate: f64) -> Self {
        RateLimiter { rate, buckets: Mutex::new(HashMap::new()) }
    }

    /// The configured rate.
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// Takes a token for `client` at `now`; `false` means over the limit.
    pub(crate) fn allow(&self, client: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > SWEEP_ABOVE {
            buckets.retain(|_, b| now.saturating_duration_since(b.updated) < IDLE_BUCKET);
        }
        let capacity = self.rate.max(1.0);
        let bucket = buckets.entry(client).or_insert(Bucket { tokens: capacity, updated: now });
        let refill = now.saturating_duration_since(bucket.updated).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_burst_of_rate_then_rate_per_second_per_client() {
        let limiter = RateLimiter::new(10.0);
        let (a, b) = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        let t0 = Instant::now();
        let allowed = (0..15).filter(|_| limiter.allow(a, t0)).count();
        assert_eq!(allowed, 10, "the burst is one second's worth");
        assert!(limiter.allow(b, t0), "another client has its own bucket");
        // 0.5 s later, 5 tokens have come back.
        let later = t0 + Duration::from_millis(500);
        assert_eq!((0..10).filter(|_| limiter.allow(a, later)).count(), 5);
    }
}
