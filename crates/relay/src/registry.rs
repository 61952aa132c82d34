//! Live agent tunnels and routing. Each tunnel is registered under the
//! identity from its certificate; a second tunnel with the same identity
//! replaces the first. [`Registry::dispatch`] routes an operation to one
//! live agent of the domain — fewest outstanding requests first, round robin
//! among equals — and fails over to another agent if the chosen tunnel
//! drops before answering, within the operation's deadline.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use writeback_core::operation::now_timestamp;
use writeback_core::{Failure, ReasonCode};
use writeback_proto::v1::{
    AgentIdentity, GoAway, HealthProbe, HealthReport, OperationRequest, OperationResult,
    PresenceEvent, PresenceReport, RelayMessage, relay_message,
};

/// Tenant + domain: the routing key.
type DomainKey = (String, String);

/// One registered tunnel.
pub struct AgentConn {
    /// Who it is (from the certificate).
    pub identity: AgentIdentity,
    /// Unique per tunnel, so a replaced tunnel's cleanup cannot remove its successor.
    pub conn_id: u64,
    /// Version from the agent's Hello.
    pub version: String,
    tx: mpsc::Sender<RelayMessage>,
    outstanding: AtomicUsize,
    pending: Mutex<HashMap<String, oneshot::Sender<OperationResult>>>,
    probes: Mutex<HashMap<String, oneshot::Sender<HealthReport>>>,
    closed: AtomicBool,
    close_signal: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked mid-update of a map
    // of channels; the map itself is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AgentConn {
    /// Requests in flight on this tunnel.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Resolves when the registry closed this tunnel (replaced, shut down).
    pub async fn closed(&self) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        self.close_signal.notified().await;
    }

    /// Hands an agent's result to the dispatcher waiting for it. Returns
    /// false for a late or unknown answer (which the caller logs and drops).
    pub fn complete(&self, result: OperationResult) -> bool {
        match lock(&self.pending).remove(&result.operation_id) {
            Some(waiter) => waiter.send(result).is_ok(),
            None => false,
        }
    }

    /// Hands a health report to the probe waiting for it.
    pub fn complete_probe(&self, report: HealthReport) -> bool {
        match lock(&self.probes).remove(&report.probe_id) {
            Some(waiter) => waiter.send(report).is_ok(),
            None => false,
        }
    }

    fn close(&self, reason: &str) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.tx.try_send(RelayMessage {
            body: Some(relay_message::Body::GoAway(GoAway {
                reason: reason.to_owned(),
            })),
        });
        // Dropping the waiters wakes every dispatcher on this tunnel, which
        // then fails over to another agent.
        lock(&self.pending).clear();
        lock(&self.probes).clear();
        self.close_signal.notify_one();
    }
}

#[derive(Default)]
struct DomainAgents {
    agents: Vec<Arc<AgentConn>>,
    next: usize,
}

#[derive(Default)]
struct State {
    domains: HashMap<DomainKey, DomainAgents>,
    shutting_down: bool,
}

struct Inner {
    relay_id: String,
    queue_depth: usize,
    next_conn: AtomicU64,
    state: Mutex<State>,
    presence: broadcast::Sender<PresenceReport>,
}

/// The set of live tunnels; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Registry {
    /// An empty registry for relay `relay_id`.
    pub fn new(relay_id: String, queue_depth: usize) -> Registry {
        let (presence, _) = broadcast::channel(4096);
        Registry {
            inner: Arc::new(Inner {
                relay_id,
                queue_depth,
                next_conn: AtomicU64::new(1),
                state: Mutex::new(State::default()),
                presence,
            }),
        }
    }

    /// This relay's id.
    pub fn relay_id(&self) -> &str {
        &self.inner.relay_id
    }

    /// Registers a tunnel, replacing any tunnel with the same identity.
    /// Returns the connection and the receiver of messages to send down it,
    /// or `None` when the relay is shutting down.
    pub fn register(
        &self,
        identity: AgentIdentity,
        version: String,
    ) -> Option<(Arc<AgentConn>, mpsc::Receiver<RelayMessage>)> {
        let (tx, rx) = mpsc::channel(self.inner.queue_depth);
        let conn = Arc::new(AgentConn {
            identity: identity.clone(),
            conn_id: self.inner.next_conn.fetch_add(1, Ordering::Relaxed),
            version,
            tx,
            outstanding: AtomicUsize::new(0),
            pending: Mutex::new(HashMap::new()),
            probes: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            close_signal: Notify::new(),
        });
        let replaced = {
            let mut state = lock(&self.inner.state);
            if state.shutting_down {
                return None;
            }
            let key = (identity.tenant.clone(), identity.domain.clone());
            let entry = state.domains.entry(key).or_default();
            let old = entry
                .agents
                .iter()
                .position(|a| a.identity.agent_id == identity.agent_id)
                .map(|i| entry.agents.remove(i));
            entry.agents.push(conn.clone());
            old
        };
        if let Some(old) = replaced {
            tracing::info!(tenant = %identity.tenant, domain = %identity.domain,
                agent_id = %identity.agent_id, "a new tunnel replaces the agent's previous one");
            old.close("replaced by a newer tunnel of the same agent");
        }
        self.announce(&conn, PresenceEvent::Connected);
        Some((conn, rx))
    }

    /// Removes a tunnel (if it is still the registered one) and wakes its
    /// waiters so their operations fail over.
    pub fn unregister(&self, conn: &Arc<AgentConn>, reason: &str) {
        let removed = {
            let mut state = lock(&self.inner.state);
            let key = (conn.identity.tenant.clone(), conn.identity.domain.clone());
            let mut removed = false;
            if let Some(entry) = state.domains.get_mut(&key) {
                let before = entry.agents.len();
                entry.agents.retain(|a| a.conn_id != conn.conn_id);
                removed = entry.agents.len() != before;
                if entry.agents.is_empty() {
                    state.domains.remove(&key);
                }
            }
            removed
        };
        conn.close(reason);
        if removed {
            self.announce(conn, PresenceEvent::Disconnected);
        }
    }

    /// Closes every tunnel with a GoAway and refuses new ones.
    pub fn shut_down(&self, reason: &str) {
        let conns: Vec<Arc<AgentConn>> = {
            let mut state = lock(&self.inner.state);
            state.shutting_down = true;
            state.domains.drain().flat_map(|(_, d)| d.agents).collect()
        };
        for c in conns {
            c.close(reason);
            self.announce(&c, PresenceEvent::Disconnected);
        }
    }

    /// Live agents of a domain.
    pub fn agents(&self, tenant: &str, domain: &str) -> Vec<Arc<AgentConn>> {
        lock(&self.inner.state)
            .domains
            .get(&(tenant.to_owned(), domain.to_owned()))
            .map(|d| d.agents.clone())
            .unwrap_or_default()
    }

    /// Live agents of a tenant, every domain.
    pub fn tenant_agents(&self, tenant: &str) -> Vec<Arc<AgentConn>> {
        lock(&self.inner.state)
            .domains
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .flat_map(|(_, d)| d.agents.iter().cloned())
            .collect()
    }

    /// Subscribes to presence changes.
    pub fn subscribe(&self) -> broadcast::Receiver<PresenceReport> {
        self.inner.presence.subscribe()
    }

    /// A presence report for `conn`.
    pub fn report(&self, conn: &AgentConn, event: PresenceEvent) -> PresenceReport {
        PresenceReport {
            relay_id: self.inner.relay_id.clone(),
            identity: Some(conn.identity.clone()),
            event: event as i32,
            agent_version: conn.version.clone(),
            observed_at: Some(now_timestamp()),
        }
    }

    fn announce(&self, conn: &AgentConn, event: PresenceEvent) {
        let _ = self.inner.presence.send(self.report(conn, event));
    }

    /// Picks the live agent of the domain with the fewest outstanding
    /// requests, round robin among equals, skipping `tried` tunnels.
    fn pick(&self, tenant: &str, domain: &str, tried: &HashSet<u64>) -> Option<Arc<AgentConn>> {
        let mut state = lock(&self.inner.state);
        let entry = state
            .domains
            .get_mut(&(tenant.to_owned(), domain.to_owned()))?;
        let n = entry.agents.len();
        let start = entry.next % n.max(1);
        let mut best: Option<&Arc<AgentConn>> = None;
        for i in 0..n {
            let a = &entry.agents[(start + i) % n];
            if tried.contains(&a.conn_id) || a.closed.load(Ordering::Acquire) {
                continue;
            }
            if best.is_none_or(|b| a.outstanding() < b.outstanding()) {
                best = Some(a);
            }
        }
        let chosen = best.cloned();
        entry.next = entry.next.wrapping_add(1);
        chosen
    }

    /// Routes `op` to a live agent of its domain and waits for the answer
    /// until `timeout`, failing over when a tunnel drops first.
    pub async fn dispatch(
        &self,
        op: OperationRequest,
        timeout: Duration,
    ) -> Result<OperationResult, Failure> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tried = HashSet::new();
        let mut overloaded = false;
        loop {
            let Some(conn) = self.pick(&op.tenant, &op.domain, &tried) else {
                return Err(if overloaded {
                    Failure::new(
                        ReasonCode::Overloaded,
                        "every agent of the domain has a full queue; try again shortly",
                    )
                } else if tried.is_empty() {
                    Failure::new(
                        ReasonCode::NoAgentOnline,
                        format!("no agent of domain {} is connected to the relay", op.domain),
                    )
                } else {
                    Failure::new(
                        ReasonCode::NoAgentOnline,
                        format!(
                            "every agent of domain {} disconnected before answering",
                            op.domain
                        ),
                    )
                });
            };
            tried.insert(conn.conn_id);
            let (tx, rx) = oneshot::channel();
            lock(&conn.pending).insert(op.operation_id.clone(), tx);
            let msg = RelayMessage {
                body: Some(relay_message::Body::Request(op.clone())),
            };
            if let Err(e) = conn.tx.try_send(msg) {
                lock(&conn.pending).remove(&op.operation_id);
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    overloaded = true;
                }
                continue;
            }
            conn.outstanding.fetch_add(1, Ordering::Relaxed);
            let answer = tokio::time::timeout_at(deadline, rx).await;
            conn.outstanding.fetch_sub(1, Ordering::Relaxed);
            match answer {
                Ok(Ok(result)) => return Ok(result),
                Ok(Err(_)) => {
                    tracing::info!(operation_id = %op.operation_id, agent_id = %conn.identity.agent_id,
                        "tunnel dropped before the agent answered; failing over");
                }
                Err(_) => {
                    lock(&conn.pending).remove(&op.operation_id);
                    return Err(Failure::new(
                        ReasonCode::Timeout,
                        "the agent did not answer before the operation's deadline; the change may or may not have been applied",
                    ));
                }
            }
        }
    }

    /// Sends a health probe to each agent and gathers the answers until
    /// `timeout`; agents that stay silent are reported with `None`.
    pub async fn probe(
        &self,
        agents: Vec<Arc<AgentConn>>,
        timeout: Duration,
    ) -> Vec<(AgentIdentity, Option<HealthReport>)> {
        let probes = agents.into_iter().map(|conn| async move {
            let probe_id = uuid::Uuid::new_v4().to_string();
            let (tx, rx) = oneshot::channel();
            lock(&conn.probes).insert(probe_id.clone(), tx);
            let sent = conn
                .tx
                .try_send(RelayMessage {
                    body: Some(relay_message::Body::Probe(HealthProbe {
                        probe_id: probe_id.clone(),
                    })),
                })
                .is_ok();
            let report = if sent {
                tokio::time::timeout(timeout, rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
            } else {
                None
            };
            lock(&conn.probes).remove(&probe_id);
            (conn.identity.clone(), report)
        });
        futures::future::join_all(probes).await
    }
}
