//! The optional result cache (`--cache-entries N`): an LRU of finished
//! results, keyed by the whole request body minus its `id`.
//!
//! Two requests that differ only in their id get the same answer, so the
//! second can be served without a worker. The key is a hash of the body
//! (with keys sorted, so field order does not matter); the body itself is
//! kept beside the result and compared on every hit, so a hash collision can
//! never return someone else's result. Large bodies (over 64 KiB) are not
//! cached. The LRU sits behind one short-held `Mutex`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

use lru::LruCache;
use serde::Serialize;

use crate::protocol::JobOutput;

/// Bodies larger than this are not cached.
pub(crate) const MAX_CACHED_BODY: usize = 64 * 1024;

/// The canonical form of a request, ready to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheKey {
    hash: u64,
    body: Box<str>,
}

/// A shared, bounded cache of job results.
pub(crate) struct ResultCache {
    entries: Mutex<LruCache<u64, (Box<str>, JobOutput)>>,
    hasher: RandomState,
    /// Counters for `stats`, `Relaxed`: independent numbers guarding nothing.
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Cache counters for `stats`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub(crate) struct CacheStats {
    /// Maximum entries (`--cache-entries`).
    pub(crate) capacity: usize,
    /// Entries now.
    pub(crate) entries: usize,
    /// Requests answered from the cache.
    pub(crate) hits: u64,
    /// Cacheable requests that had to run.
    pub(crate) misses: u64,
}

impl ResultCache {
    /// A cache of at most `capacity` results.
    pub(crate) fn new(capacity: NonZeroUsize) -> Self {
        ResultCache {
            entries: Mutex::new(LruCache::new(capacity)),
            // A per-process random key: clients cannot aim for collisions.
            hasher: RandomState::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The key of a request body: the JSON object without `id`, keys sorted.
    /// `None` when the body is too large to cache or not an object.
    pub(crate) fn key_for(&self, payload: &[u8]) -> Option<CacheKey> {
        if payload.len() > MAX_CACHED_BODY {
            return None;
        }
        // serde_json's Map keeps keys sorted (no "preserve_order"), so the
        // re-serialized text is canonical.
        let mut value: serde_json::Value = serde_json::from_slice(payload).ok()?;
        value.as_object_mut()?.remove("id");
        let body: Box<str> = value.to_string().into_boxed_str();
        Some(CacheKey { hash: self.hasher.hash_one(&body), body })
    }

    /// Looks a request up, counting a hit or a miss.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<JobOutput> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let found = match entries.get(&key.hash) {
            Some((body, output)) if *body == key.body => Some(output.clone()),
            _ => None,
        };
        drop(entries);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Relaxed);
        found
    }

    /// Stores a result (the least recently used entry makes room).
    pub(crate) fn insert(&self, key: CacheKey, output: JobOutput) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.put(key.hash, (key.body, output));
    }

    /// Counters for `stats`.
    pub(crate) fn stats(&self) -> CacheStats {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        CacheStats {
            capacity: entries.cap().get(),
            entries: entries.len(),
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize) -> ResultCache {
        ResultCache::new(NonZeroUsize::new(capacity).unwrap())
    }

    #[test]
    fn the_id_and_field_order_do_not_matter_but_everything_else_does() {
        let c = cache(8);
        let a = c.key_for(br#"{"id":1,"cmd":"compute","n":5}"#).unwrap();
        let b = c.key_for(br#"{"n":5,"cmd":"compute","id":"other"}"#).unwrap();
        let other_n = c.key_for(br#"{"id":1,"cmd":"compute","n":6}"#).unwrap();
        let extra = c.key_for(br#"{"id":1,"cmd":"compute","n":5,"timing":true}"#).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, other_n);
        assert_ne!(a, extra, "the whole body counts, not just n");
    }

    #[test]
    fn hits_misses_and_eviction() {
        let c = cache(2);
        let key = |n: u64| c.key_for(format!(r#"{{"id":0,"cmd":"compute","n":{n}}}"#).as_bytes()).unwrap();
        assert_eq!(c.get(&key(1)), None);
        c.insert(key(1), JobOutput::Compute(48));
        c.insert(key(2), JobOutput::Compute(113));
        assert_eq!(c.get(&key(1)), Some(JobOutput::Compute(48)));
        c.insert(key(3), JobOutput::Compute(7)); // evicts 2, the least recently used
        assert_eq!(c.get(&key(2)), None);
        let stats = c.stats();
        assert_eq!((stats.capacity, stats.entries, stats.hits, stats.misses), (2, 2, 1, 2));
    }

    #[test]
    fn large_or_odd_bodies_are_not_cached() {
        let c = cache(2);
        let big = format!(r#"{{"id":1,"cmd":"compute","pad":"{}"}}"#, "x".repeat(MAX_CACHED_BODY));
        assert!(c.key_for(big.as_bytes()).is_none());
        assert!(c.key_for(b"[1,2]").is_none());
        assert!(c.key_for(b"not json").is_none());
    }
}
