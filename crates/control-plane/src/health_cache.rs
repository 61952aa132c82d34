//! The health fan-out behind `GetStatus`, cached briefly and shared.
//!
//! A health probe makes every agent of a domain check every domain controller
//! it is configured with (a rootDSE read on an idle session, else a new
//! connection and bind). Without a cache, every `GetStatus` call — an
//! administrator's page refreshing, a monitoring script, a hostile caller with
//! an administrator token — would multiply into binds on every DC. So the
//! answer for one (tenant, domain) is kept for `status_health_ttl_seconds`
//! ([`HEALTH_TTL`] by default), and callers that arrive while a probe runs
//! wait for that probe instead of starting another (single flight). What an
//! agent reports is therefore at most that TTL plus the probe's own time
//! old; which agents are online is not cached.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

/// How long one health fan-out answers `GetStatus` for its domain, by
/// default.
pub const HEALTH_TTL: Duration = Duration::from_secs(5);

/// A single-flight cache of values by key, each kept `ttl` from when its
/// computation started.
pub struct TtlCache<K, V> {
    ttl: Duration,
    slots: Mutex<HashMap<K, Arc<Slot<V>>>>,
}

struct Slot<V> {
    started: Instant,
    value: OnceCell<V>,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    /// An empty cache whose values live `ttl`.
    pub fn new(ttl: Duration) -> TtlCache<K, V> {
        TtlCache {
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The value for `key`: the cached one while fresh, the one being
    /// computed if a computation is under way, else `compute()`'s. If the
    /// caller computing it is cancelled, the next waiter computes it.
    pub async fn get_or_compute<F, Fut>(&self, key: &K, compute: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            slots.retain(|_, s| now.duration_since(s.started) < self.ttl);
            Arc::clone(slots.entry(key.clone()).or_insert_with(|| {
                Arc::new(Slot {
                    started: now,
                    value: OnceCell::new(),
                })
            }))
        };
        slot.value.get_or_init(compute).await.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn callers_share_one_computation_until_the_ttl_ends() {
        let cache: Arc<TtlCache<&str, usize>> = Arc::new(TtlCache::new(HEALTH_TTL));
        let calls = Arc::new(AtomicUsize::new(0));
        let probe = |calls: Arc<AtomicUsize>| async move {
            // A probe that takes a while, like a fan-out to agents.
            tokio::time::sleep(Duration::from_secs(1)).await;
            calls.fetch_add(1, Ordering::SeqCst) + 1
        };
        // Ten concurrent callers: one probe, one answer.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (cache, calls) = (Arc::clone(&cache), Arc::clone(&calls));
            set.spawn(async move { cache.get_or_compute(&"t/d", || probe(calls)).await });
        }
        while let Some(v) = set.join_next().await {
            assert_eq!(v.unwrap(), 1);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Fresh: answered from the cache.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            cache.get_or_compute(&"t/d", || probe(calls.clone())).await,
            1
        );
        // Another domain is probed on its own.
        assert_eq!(
            cache.get_or_compute(&"t/e", || probe(calls.clone())).await,
            2
        );
        // Past the TTL: probed again.
        tokio::time::advance(HEALTH_TTL).await;
        assert_eq!(
            cache.get_or_compute(&"t/d", || probe(calls.clone())).await,
            3
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Expired slots are dropped, not kept forever.
        tokio::time::advance(HEALTH_TTL * 2).await;
        cache.get_or_compute(&"t/f", || async { 0 }).await;
        assert_eq!(cache.slots.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_caller_does_not_poison_the_slot() {
        let cache: TtlCache<&str, usize> = TtlCache::new(HEALTH_TTL);
        let first = cache.get_or_compute(&"k", || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            1
        });
        assert!(
            tokio::time::timeout(Duration::from_secs(1), first)
                .await
                .is_err()
        );
        assert_eq!(cache.get_or_compute(&"k", || async { 2 }).await, 2);
    }
}
