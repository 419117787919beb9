//! Token-bucket rate limits: a bucket per key (a user for message sends, a
//! client address for logins and registrations) that refills at a steady
//! rate up to a burst. Shared by the HTTP layer and the sessions.

use std::hash::Hash;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::error::{ChatError, ChatResult};

/// How fast a bucket refills and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Most tokens a bucket holds (the burst allowed after a quiet spell).
    pub burst: f64,
}

impl Rate {
    pub const fn per_second(per_second: f64, burst: f64) -> Rate {
        Rate { per_second, burst }
    }

    pub const fn per_minute(per_minute: f64, burst: f64) -> Rate {
        Rate {
            per_second: per_minute / 60.0,
            burst,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A set of token buckets, one per key.
#[derive(Debug)]
pub struct RateLimiter<K: Eq + Hash> {
    rate: Rate,
    buckets: DashMap<K, Bucket>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    pub fn new(rate: Rate) -> Self {
        RateLimiter {
            rate,
            buckets: DashMap::new(),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut bucket = self.buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.rate.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - bucket.tokens;
            Err(Duration::from_secs_f64(missing / self.rate.per_second))
        }
    }

    /// Forgets buckets that have refilled completely (they behave exactly
    /// like absent ones), so memory follows the active keys only.
    pub fn forget_idle(&self) {
        let now = Instant::now();
        let rate = self.rate;
        self.buckets.retain(|_, bucket| {
            let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
            bucket.tokens + elapsed * rate.per_second < rate.burst
        });
    }
}

/// Each user's allowance of message sends and changes (REST and socket
/// together); unlimited when no rate is set.
pub struct SendAllowance(Option<RateLimiter<i64>>);

impl SendAllowance {
    pub fn new(rate: Option<Rate>) -> Self {
        SendAllowance(rate.map(RateLimiter::new))
    }

    /// Takes one send from the user's allowance; 429 when it is spent.
    pub fn take(&self, user: i64) -> ChatResult<()> {
        match &self.0 {
            Some(limiter) => limiter
                .check(&user)
                .map_err(|retry_after| ChatError::TooManyRequests { retry_after }),
            None => Ok(()),
        }
    }

    /// Forgets users whose allowance refilled completely.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.0 {
            limiter.forget_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_steady_rate() {
        let limiter = RateLimiter::new(Rate::per_second(20.0, 50.0));
        let start = Instant::now();
        for _ in 0..50 {
            assert!(limiter.check_at(&1, start).is_ok());
        }
        let wait = limiter.check_at(&1, start).unwrap_err();
        assert!(wait <= Duration::from_millis(50) && wait > Duration::ZERO);
        // 100 ms later two more tokens have arrived.
        let later = start + Duration::from_millis(100);
        assert!(limiter.check_at(&1, later).is_ok());
        assert!(limiter.check_at(&1, later).is_ok());
        assert!(limiter.check_at(&1, later).is_err());
        // Other keys have their own buckets.
        assert!(limiter.check_at(&2, later).is_ok());
    }

    #[test]
    fn idle_buckets_are_forgotten() {
        let limiter = RateLimiter::new(Rate::per_minute(10.0, 10.0));
        assert!(limiter.check(&"10.0.0.1").is_ok());
        limiter.forget_idle();
        assert_eq!(limiter.buckets.len(), 1, "a bucket still refilling is kept");
        let full = RateLimiter::new(Rate::per_second(1000.0, 1.0));
        assert!(full.check(&"a").is_ok());
        std::thread::sleep(Duration::from_millis(5));
        full.forget_idle();
        assert_eq!(full.buckets.len(), 0);
    }
}
