//! One flight per operation id in a control plane: requests that carry the
//! same caller-chosen id (a client retrying after a network timeout) run one
//! after the other, never side by side. Each is first resolved and authorized
//! on its own (a refusal is answered at once, without waiting); then the
//! first records, dispatches and records the outcome, and the next ones find
//! that record and are answered from it. Without this, two
//! dispatches of one id raced in the relay, which keeps one waiter per id, and
//! the loser was told `NO_AGENT_ONLINE` for an operation that succeeded.
//!
//! A request that waits longer than its operation's timeout is answered
//! `OPERATION_IN_PROGRESS` (retry with the same id). Replicas sharing a
//! database serialize through the record itself: its insert is unique, and the
//! relay and the agent deduplicate by id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use writeback_core::{Failure, ReasonCode};

type Key = (String, String);

/// The ids in flight; one per control plane.
#[derive(Default)]
pub struct Flights {
    ids: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a request with the id runs; the next one with the id starts
/// when it is dropped.
pub struct Flight<'a> {
    flights: &'a Flights,
    key: Key,
    guard: Option<OwnedMutexGuard<()>>,
    /// Another request held the id first (its record is now final or gone).
    pub waited: bool,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut ids = self
            .flights
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Nobody else holds or waits for it: forget the id.
        if ids
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            ids.remove(&self.key);
        }
    }
}

impl Flights {
    /// Waits (up to `patience`) until no other request of `tenant` with `id`
    /// runs here, then holds the id.
    pub async fn board(
        &self,
        tenant: &str,
        id: &str,
        patience: Duration,
    ) -> Result<Flight<'_>, Failure> {
        let key = (tenant.to_owned(), id.to_owned());
        let lock = {
            let mut ids = self
                .ids
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(ids.entry(key.clone()).or_default())
        };
        let mut flight = Flight {
            flights: self,
            key,
            guard: None,
            waited: false,
        };
        if let Ok(guard) = Arc::clone(&lock).try_lock_owned() {
            flight.guard = Some(guard);
            return Ok(flight);
        }
        flight.waited = true;
        match tokio::time::timeout(patience, lock.lock_owned()).await {
            Ok(guard) => {
                flight.guard = Some(guard);
                Ok(flight)
            }
            Err(_) => Err(Failure::new(
                ReasonCode::OperationInProgress,
                "an operation with this id is still in progress; retry later with the same id to \
                 get its outcome",
            )
            .with_operation(id)),
        }
    }

    /// Ids currently held or awaited (for tests).
    pub fn len(&self) -> usize {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// True when no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_same_id_waits_and_another_does_not() {
        let f = Flights::default();
        let first = f.board("t", "op-1", Duration::from_secs(5)).await.unwrap();
        assert!(!first.waited);
        // Another id boards at once.
        let other = f
            .board("t", "op-2", Duration::from_millis(10))
            .await
            .unwrap();
        // The same id in another tenant is another operation.
        let elsewhere = f
            .board("u", "op-1", Duration::from_millis(10))
            .await
            .unwrap();
        // The same id waits, and gives up with OPERATION_IN_PROGRESS.
        let e = f
            .board("t", "op-1", Duration::from_millis(50))
            .await
            .err()
            .unwrap();
        assert_eq!(e.reason, ReasonCode::OperationInProgress);
        assert_eq!(e.operation_id.as_deref(), Some("op-1"));
        drop((other, elsewhere));
        assert_eq!(f.len(), 1);
        drop(first);
        assert!(f.is_empty());
        let again = f.board("t", "op-1", Duration::from_millis(10)).await;
        assert!(again.is_ok());
    }
}
