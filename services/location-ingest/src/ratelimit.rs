//! Per-driver rate limiting: a token bucket per id, in memory (embedded mode; Redis mode
//! keeps the same bucket in the driver's Redis hash so that every replica shares it).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use parking_lot::Mutex;

/// A token bucket: `rate` tokens a second, at most `burst` stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub rate_per_s: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// Takes one token for `at_ms` from a bucket; the wait in ms until one is available if
/// none is. Shared by the in-memory limiter and (as the same arithmetic in Lua) Redis.
fn take(bucket: &mut Bucket, limit: Limit, at_ms: i64) -> Result<(), u64> {
    let elapsed_s = (at_ms - bucket.at_ms).max(0) as f64 / 1000.0;
    bucket.tokens = (bucket.tokens + elapsed_s * limit.rate_per_s).min(limit.burst);
    bucket.at_ms = bucket.at_ms.max(at_ms);
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        Ok(())
    } else {
        Err(((1.0 - bucket.tokens) / limit.rate_per_s * 1000.0).ceil() as u64)
    }
}

const SHARDS: usize = 64;

/// Buckets for many keys, sharded to keep lock hold times tiny.
pub struct RateLimiter<K> {
    limit: Limit,
    shards: Vec<Mutex<HashMap<K, Bucket>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(limit: Limit) -> Self {
        RateLimiter {
            limit,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    /// Takes a token for `key` at `now_ms`; `Err(retry_after_ms)` when over the limit.
    pub fn check(&self, key: &K, now_ms: i64) -> Result<(), u64> {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut map = shard.lock();
        let bucket = map.entry(key.clone()).or_insert(Bucket {
            tokens: self.limit.burst,
            at_ms: now_ms,
        });
        take(bucket, self.limit, now_ms)
    }

    /// Forgets buckets that have refilled completely (idle keys), bounding memory.
    pub fn sweep(&self, now_ms: i64) {
        let full_after_ms = (self.limit.burst / self.limit.rate_per_s * 1000.0) as i64;
        for shard in &self.shards {
            shard.lock().retain(|_, b| now_ms - b.at_ms < full_after_ms);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Limit = Limit {
        rate_per_s: 5.0,
        burst: 10.0,
    };

    #[test]
    fn one_update_a_second_is_never_limited() {
        let rl = RateLimiter::new(LIMIT);
        for s in 0..1_000 {
            assert_eq!(rl.check(&"d1", s * 1000), Ok(()));
        }
    }

    #[test]
    fn a_sustained_flood_is_limited_to_the_rate_with_a_retry_hint() {
        let rl = RateLimiter::new(LIMIT);
        // 50 updates a second for 10 s.
        let accepted = (0..500).filter(|i| rl.check(&"d1", i * 20).is_ok()).count();
        // burst 10 + 5/s × 10 s, give or take the last refill.
        assert!((58..=61).contains(&accepted), "{accepted}");
        let wait = rl.check(&"d1", 10_000).unwrap_err();
        assert!(wait > 0 && wait <= 200, "{wait}");
    }

    #[test]
    fn drivers_have_separate_buckets_and_idle_ones_are_swept() {
        let rl = RateLimiter::new(LIMIT);
        for _ in 0..10 {
            rl.check(&"d1", 0).unwrap();
        }
        assert!(rl.check(&"d1", 0).is_err());
        assert!(rl.check(&"d2", 0).is_ok());
        rl.sweep(60_000);
        assert!(rl.is_empty());
    }
}
