//! The slow half of the agent's health: whether the service account holds its
//! rights and what the domain's password policy gets wrong. [`HealthMonitor`] runs
//! those checks ([`Apply::checks`]) when the agent starts and then every
//! `interval` (5 minutes by default, the seed's heartbeat), and keeps the last result
//! behind a [`HealthHandle`]; a health probe reads the handle and waits for a
//! directory search only right after start-up, before the first round has
//! finished (bounded by the tunnel to 1.5 s). Reachability of the DCs stays live, per probe
//! ([`Apply::health`]).

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::executor::Apply;

/// How often the checks run.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// How long one round of checks may take before it counts as failed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The result of one round of checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checks {
    /// The service account holds every right writeback needs.
    pub permissions_ok: bool,
    /// Plain-words warnings about the password policy, or why it could not be read.
    pub policy_warnings: Vec<String>,
    /// When the checks ran; `None` before the first round finished.
    pub checked_at: Option<OffsetDateTime>,
}

/// The last checks; cheap to clone.
#[derive(Debug, Clone)]
pub struct HealthHandle {
    rx: watch::Receiver<Checks>,
}

impl HealthHandle {
    /// The last result (nothing verified before the first round).
    pub fn current(&self) -> Checks {
        self.rx.borrow().clone()
    }

    /// A handle that never gets a result: permissions not verified, no warnings;
    /// [`HealthHandle::settled`] does not wait on it.
    pub fn unchecked() -> HealthHandle {
        let (_tx, rx) = watch::channel(Checks::default());
        HealthHandle { rx }
    }

    /// The last result, waiting up to `limit` for the first round when none has
    /// finished yet (a probe right after start-up then gets a real answer).
    pub async fn settled(&self, limit: Duration) -> Checks {
        let mut me = self.clone();
        match tokio::time::timeout(limit, me.checked()).await {
            Ok(c) => c,
            Err(_) => self.current(),
        }
    }

    /// Waits until a round has finished (for tests and start-up).
    pub async fn checked(&mut self) -> Checks {
        let done = self
            .rx
            .wait_for(|c| c.checked_at.is_some())
            .await
            .map(|c| c.clone());
        done.unwrap_or_else(|_| self.current())
    }
}

/// Runs the checks in the background; dropping it stops them.
#[derive(Debug)]
pub struct MonitorTask(tokio::task::JoinHandle<()>);

impl Drop for MonitorTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Options of the background checks.
pub struct HealthMonitor {
    /// What to check.
    pub applier: Arc<dyn Apply>,
    /// Time between two rounds.
    pub interval: Duration,
    /// Limit for one round.
    pub timeout: Duration,
}

impl HealthMonitor {
    /// Checks for `applier` every [`DEFAULT_INTERVAL`].
    pub fn new(applier: Arc<dyn Apply>) -> HealthMonitor {
        HealthMonitor {
            applier,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Start the first round now and the next every `interval`.
    pub fn start(self) -> (HealthHandle, MonitorTask) {
        let (tx, rx) = watch::channel(Checks::default());
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let checks = match tokio::time::timeout(self.timeout, self.applier.checks()).await {
                    Ok(c) => c,
                    Err(_) => {
                        tracing::warn!(timeout = ?self.timeout, "health checks timed out");
                        Checks {
                            permissions_ok: false,
                            policy_warnings: vec![format!(
                                "the permission and policy checks did not finish within {} s",
                                self.timeout.as_secs()
                            )],
                            checked_at: Some(OffsetDateTime::now_utc()),
                        }
                    }
                };
                tracing::debug!(
                    permissions_ok = checks.permissions_ok,
                    warnings = checks.policy_warnings.len(),
                    "health checks refreshed"
                );
                if tx.send(checks).is_err() {
                    return;
                }
            }
        });
        (HealthHandle { rx }, MonitorTask(task))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use writeback_core::Failure;
    use writeback_envelope::Secrets;
    use writeback_proto::v1::DcStatus;

    use super::*;
    use crate::executor::ValidOperation;

    /// Counts rounds; the n-th round reports n warnings' worth of state.
    struct Counting {
        rounds: AtomicU32,
        slow: bool,
    }

    #[tonic::async_trait]
    impl Apply for Counting {
        async fn apply(&self, _: &ValidOperation, _: Option<&Secrets>) -> Result<(), Failure> {
            Ok(())
        }
        async fn health(&self) -> Vec<DcStatus> {
            Vec::new()
        }
        async fn checks(&self) -> Checks {
            let n = self.rounds.fetch_add(1, Ordering::SeqCst) + 1;
            if self.slow {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Checks {
                permissions_ok: n % 2 == 1,
                policy_warnings: vec![format!("round {n}")],
                checked_at: Some(OffsetDateTime::now_utc()),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn checks_run_at_start_then_every_interval_not_per_read() {
        let applier = Arc::new(Counting {
            rounds: AtomicU32::new(0),
            slow: false,
        });
        let (handle, _task) = HealthMonitor::new(applier.clone()).start();
        assert_eq!(handle.current(), Checks::default());
        let first = handle.settled(Duration::from_secs(1)).await;
        assert!(first.permissions_ok);
        assert_eq!(first.policy_warnings, vec!["round 1"]);
        // Reads (probes) do not run checks.
        for _ in 0..100 {
            assert_eq!(handle.current(), first);
        }
        tokio::time::sleep(Duration::from_secs(4 * 60)).await;
        assert_eq!(applier.rounds.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(applier.rounds.load(Ordering::SeqCst), 2);
        let second = handle.current();
        assert!(!second.permissions_ok);
        assert_eq!(second.policy_warnings, vec!["round 2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_that_hangs_reports_not_ok() {
        let applier = Arc::new(Counting {
            rounds: AtomicU32::new(0),
            slow: true,
        });
        let (mut handle, task) = HealthMonitor::new(applier).start();
        let c = handle.checked().await;
        assert!(!c.permissions_ok);
        assert!(c.policy_warnings[0].contains("did not finish within 120 s"));
        drop(task);
        // No monitor (an executor built without one): answered at once, not after
        // the limit, so probes of such agents are not slowed down.
        let never = HealthHandle::unchecked();
        let started = tokio::time::Instant::now();
        let c = never.settled(Duration::from_secs(1)).await;
        assert!(c.checked_at.is_none());
        assert!(started.elapsed() < Duration::from_millis(10));
    }
}
