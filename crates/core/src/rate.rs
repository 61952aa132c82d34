//! Rate limits by key (a source address, a tenant): [`KeyedRate`] lets each
//! key make `per_minute` requests a minute on average with bursts of up to
//! `burst`, by the `governor` crate's GCRA (no timer, no task: a check is a
//! compare-and-swap on the key's state). A refusal says how long until the
//! key may try again, for `Retry-After` and `google.rpc.RetryInfo`. The map
//! of keys is swept of the ones back at a full burst every so many checks,
//! so keys seen once do not pile up.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Checks between two sweeps of idle keys.
const SWEEP_EVERY: u64 = 4096;

/// A rate per key; off when built with `per_minute` 0.
#[derive(Debug)]
pub struct KeyedRate<K: Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> KeyedRate<K> {
    /// `per_minute` requests a minute per key on average (0: no limit),
    /// at most `burst` (at least 1) at once.
    pub fn per_minute(per_minute: u32, burst: u32) -> KeyedRate<K> {
        let limiter = NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        KeyedRate {
            limiter,
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one request of `key`'s allowance; when there is none, how long
    /// until there is (at least one second, as `Retry-After` counts).
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
                .max(Duration::from_secs(1))
        })
    }

    /// Keys tracked now (idle ones until the next sweep).
    pub fn keys(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_and_others_are_untouched() {
        let rate = KeyedRate::per_minute(60, 3);
        for _ in 0..3 {
            assert!(rate.check(&"a").is_ok());
        }
        let wait = rate.check(&"a").unwrap_err();
        assert!(
            wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        assert!(rate.check(&"b").is_ok());
        assert_eq!(rate.keys(), 2);
    }

    #[test]
    fn zero_is_no_limit() {
        let rate = KeyedRate::per_minute(0, 0);
        for _ in 0..10_000 {
            assert!(rate.check(&1u8).is_ok());
        }
    }
}
