//! Live agent tunnels and routing. Each tunnel is registered under the
//! identity from its certificate; a second tunnel with the same identity
//! replaces the first. [`Registry::dispatch`] routes an operation to one
//! live agent of the domain — fewest outstanding requests first, round robin
//! among equals — and waits for its answer until the operation's deadline.
//!
//! Exactly-once is kept by one rule: an operation sent to an agent is never
//! sent to a *second* agent. When the first agent merely reconnects (its new
//! tunnel replaces the old one) the operation is resent to the same agent,
//! whose executor answers a repeated operation id with its first result.
//! When its tunnel is gone (dropped, silent past the heartbeat limit, or
//! revoked) the agent may have applied the operation before the break, so
//! the answer is `TIMEOUT` (outcome unknown) at once, and the control plane
//! asks every agent's ledger before it sends the operation again. An agent
//! that is alive but slow is never doubled either: the deadline answers
//! `TIMEOUT` and a late answer is logged and dropped. Only an agent the
//! operation never reached (its queue was full) is skipped for another.
//! A dispatch may name one agent (`DispatchRequest.agent_id`): outcome
//! queries ask each agent in turn that way.
//!
//! The registry also holds the tenant's revoked agents and the agent
//! certificates a renewal superseded (their tunnels are refused and
//! closed) with the list's version, which never goes backwards,
//! stamps every result with the agent id of the tunnel's certificate, limits how many tunnels one identity may be opening
//! at once, and drains in-flight operations when the relay shuts down.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use writeback_core::operation::now_timestamp;
use writeback_core::{Failure, ReasonCode};
use writeback_proto::v1::{
    AgentIdentity, GoAway, HealthProbe, HealthReport, LedgerState, OperationKind, OperationRequest,
    OperationResult, PresenceEvent, PresenceReport, RelayMessage, relay_message,
};

/// Why a tunnel was closed; decides what happens to its in-flight operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The agent left, the connection broke, or it went silent: its
    /// operations end with `TIMEOUT` (outcome unknown).
    Dropped,
    /// A newer tunnel of the same agent replaced it: its operations are
    /// resent to that agent (which deduplicates by operation id).
    Replaced,
    /// The control plane revoked the agent: its operations end with
    /// `TIMEOUT` (outcome unknown).
    Revoked,
    /// The tunnel's certificate was superseded by a renewal (the agent has
    /// a newer one; this may be an old copy of its key): its operations end
    /// with `TIMEOUT` (outcome unknown), never resent to another tunnel.
    Superseded,
    /// The relay shut down and the drain period ended: the outcome of its
    /// operations is unknown, so they fail with `TIMEOUT`.
    Shutdown,
}

impl CloseReason {
    fn words(self) -> &'static str {
        match self {
            CloseReason::Dropped => "tunnel dropped",
            CloseReason::Replaced => "replaced by a newer tunnel of the same agent",
            CloseReason::Revoked => "the agent was revoked",
            CloseReason::Superseded => "the tunnel's certificate was superseded by a renewal",
            CloseReason::Shutdown => "relay shutting down",
        }
    }
}

/// How long a tunnel on a certificate that a renewal superseded stays open
/// (new ones are refused at once): time for the agent that renewed to
/// reconnect on its new certificate, replacing it without losing what is
/// in flight.
pub const SUPERSEDED_GRACE: Duration = Duration::from_secs(30);

/// What a dispatcher waiting on a tunnel receives.
#[derive(Clone)]
enum Answer {
    Result(Box<OperationResult>),
    Lost(CloseReason),
}

/// One registered tunnel.
pub struct AgentConn {
    /// Who it is (from the certificate).
    pub identity: AgentIdentity,
    /// Unique per tunnel, so a replaced tunnel's cleanup cannot remove its successor.
    pub conn_id: u64,
    /// Version from the agent's Hello.
    pub version: String,
    /// SHA-256 (hex) of the certificate the tunnel was opened with.
    pub cert_fingerprint: String,
    tx: mpsc::Sender<RelayMessage>,
    outstanding: AtomicUsize,
    /// Dispatchers waiting for each operation id: more than one when the same
    /// id is dispatched again while it runs (a retry, another replica); all
    /// get the one answer, and the agent gets the request once.
    pending: Mutex<HashMap<String, Vec<oneshot::Sender<Answer>>>>,
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

    /// True once the registry closed this tunnel.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Resolves when the registry closed this tunnel (replaced, revoked,
    /// shut down).
    pub async fn closed(&self) {
        let notified = self.close_signal.notified();
        if self.is_closed() {
            return;
        }
        notified.await;
    }

    /// Hands an agent's result to the dispatcher waiting for it. Returns
    /// false for a late or unknown answer (which the caller logs and drops).
    /// The result's `agent_id` is the one in this tunnel's certificate,
    /// whatever the agent wrote there: the control plane records who
    /// answered from the relay's knowledge, never from the agent's claim.
    pub fn complete(&self, mut result: OperationResult) -> bool {
        if result.agent_id != self.identity.agent_id {
            tracing::warn!(agent_id = %self.identity.agent_id, claimed = %result.agent_id,
                operation_id = %result.operation_id,
                "an agent's result claims another agent id; recording the certificate's");
            result.agent_id.clone_from(&self.identity.agent_id);
        }
        let waiters = lock(&self.pending)
            .remove(&result_key(&result))
            .unwrap_or_default();
        let mut delivered = false;
        for w in waiters {
            delivered |= w.send(Answer::Result(Box::new(result.clone()))).is_ok();
        }
        delivered
    }

    /// Adds a waiter for `id`; true when another dispatcher already waits for
    /// it on this tunnel (so the request is not sent again).
    fn wait_for(&self, id: &str, waiter: oneshot::Sender<Answer>) -> bool {
        let mut pending = lock(&self.pending);
        let waiters = pending.entry(id.to_owned()).or_default();
        waiters.retain(|w| !w.is_closed());
        let already = !waiters.is_empty();
        waiters.push(waiter);
        already
    }

    /// Forgets the waiters of `id` whose dispatcher stopped waiting.
    fn prune(&self, id: &str) {
        let mut pending = lock(&self.pending);
        if let Some(waiters) = pending.get_mut(id) {
            waiters.retain(|w| !w.is_closed());
            if waiters.is_empty() {
                pending.remove(id);
            }
        }
    }

    /// Hands a health report to the probe waiting for it.
    pub fn complete_probe(&self, report: HealthReport) -> bool {
        match lock(&self.probes).remove(&report.probe_id) {
            Some(waiter) => waiter.send(report).is_ok(),
            None => false,
        }
    }

    fn go_away(&self, reason: &str) {
        let _ = self.tx.try_send(RelayMessage {
            body: Some(relay_message::Body::GoAway(GoAway {
                reason: reason.to_owned(),
            })),
        });
    }

    fn close(&self, reason: CloseReason) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if reason != CloseReason::Dropped {
            self.go_away(reason.words());
        }
        // Wake every dispatcher on this tunnel with the reason, so each
        // decides between failing over, resending and giving up.
        let waiters: Vec<_> = lock(&self.pending).drain().flat_map(|(_, w)| w).collect();
        for w in waiters {
            let _ = w.send(Answer::Lost(reason));
        }
        lock(&self.probes).clear();
        self.close_signal.notify_waiters();
    }
}

#[derive(Default)]
struct DomainAgents {
    agents: Vec<Arc<AgentConn>>,
    next: usize,
}

#[derive(Default)]
struct State {
    /// tenant → domain → live tunnels.
    domains: HashMap<String, HashMap<String, DomainAgents>>,
    /// tenant → revoked agent ids.
    revoked: HashMap<String, HashSet<String>>,
    /// tenant → fingerprints of agent certificates a renewal superseded.
    superseded: HashMap<String, HashSet<String>>,
    /// tenant → the version of that list (0: none received yet).
    revocation_version: HashMap<String, u64>,
    /// identity → tunnels being opened or open (a reconnect-storm guard).
    opening: HashMap<AgentIdentity, usize>,
    shutting_down: bool,
}

impl State {
    fn is_revoked(&self, id: &AgentIdentity) -> bool {
        self.revoked
            .get(&id.tenant)
            .is_some_and(|r| r.contains(&id.agent_id))
    }

    fn is_superseded(&self, tenant: &str, cert_fingerprint: &str) -> bool {
        self.superseded
            .get(tenant)
            .is_some_and(|s| s.contains(cert_fingerprint))
    }

    fn domain_mut(&mut self, tenant: &str, domain: &str) -> Option<&mut DomainAgents> {
        self.domains.get_mut(tenant)?.get_mut(domain)
    }

    fn remove_conn(&mut self, conn: &AgentConn) -> bool {
        let id = &conn.identity;
        let Some(domains) = self.domains.get_mut(&id.tenant) else {
            return false;
        };
        let Some(entry) = domains.get_mut(&id.domain) else {
            return false;
        };
        let before = entry.agents.len();
        entry.agents.retain(|a| a.conn_id != conn.conn_id);
        let removed = entry.agents.len() != before;
        if entry.agents.is_empty() {
            domains.remove(&id.domain);
            if domains.is_empty() {
                self.domains.remove(&id.tenant);
            }
        }
        removed
    }

    fn all(&self) -> impl Iterator<Item = &Arc<AgentConn>> {
        self.domains
            .values()
            .flat_map(|d| d.values())
            .flat_map(|d| d.agents.iter())
    }
}

/// One operation counted in an agent's outstanding operations until dropped
/// (answered, failed or cancelled with the dispatch that held it).
struct Outstanding<'a>(&'a AgentConn);

impl<'a> Outstanding<'a> {
    /// Counts one more, unless `limit` are already outstanding.
    fn reserve(conn: &'a AgentConn, limit: usize) -> Option<Outstanding<'a>> {
        if conn.outstanding.fetch_add(1, Ordering::Relaxed) >= limit {
            conn.outstanding.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Outstanding(conn))
    }
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Relay-wide limits the registry enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Operations sent to one agent and not yet answered (running or waiting
    /// for one of its slots) before new ones get OVERLOADED; also the depth of
    /// its send queue.
    pub queue_depth: usize,
    /// Tunnels one agent identity may be opening or holding at once;
    /// more get OVERLOADED (a reconnect storm, a misbehaving client).
    pub max_tunnels_per_agent: usize,
    /// On shutdown, how long in-flight operations may still finish after
    /// every agent has been told GoAway.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queue_depth: 256,
            max_tunnels_per_agent: 4,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

struct Inner {
    relay_id: String,
    limits: Limits,
    next_conn: AtomicU64,
    late_answers: AtomicU64,
    state: Mutex<State>,
    presence: broadcast::Sender<PresenceReport>,
    stopping: tokio::sync::watch::Sender<bool>,
}

/// The set of live tunnels; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("tunnels", &self.len())
            .finish_non_exhaustive()
    }
}

/// Held while a tunnel of one identity is being opened or is open; counts
/// toward [`Limits::max_tunnels_per_agent`].
pub struct OpenGuard {
    registry: Registry,
    identity: AgentIdentity,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut state = lock(&self.registry.inner.state);
        if let Some(n) = state.opening.get_mut(&self.identity) {
            *n -= 1;
            if *n == 0 {
                state.opening.remove(&self.identity);
            }
        }
    }
}

fn revoked_failure() -> Failure {
    Failure::new(
        ReasonCode::AgentRevoked,
        "this agent has been revoked; enroll it again to reconnect",
    )
}

fn superseded_failure() -> Failure {
    Failure::new(
        ReasonCode::CertificateSuperseded,
        "this certificate was superseded by a renewal: the agent holds a newer one. An agent \
         running from an old copy of its state directory must be enrolled again",
    )
}

impl Registry {
    /// An empty registry for relay `relay_id` with per-agent queues of
    /// `queue_depth` and default limits otherwise.
    pub fn new(relay_id: String, queue_depth: usize) -> Registry {
        Registry::with_limits(
            relay_id,
            Limits {
                queue_depth,
                ..Limits::default()
            },
        )
    }

    /// An empty registry enforcing `limits`.
    pub fn with_limits(relay_id: String, limits: Limits) -> Registry {
        let (presence, _) = broadcast::channel(4096);
        Registry {
            inner: Arc::new(Inner {
                relay_id,
                limits,
                next_conn: AtomicU64::new(1),
                late_answers: AtomicU64::new(0),
                state: Mutex::new(State::default()),
                presence,
                stopping: tokio::sync::watch::channel(false).0,
            }),
        }
    }

    /// This relay's id.
    pub fn relay_id(&self) -> &str {
        &self.inner.relay_id
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Answers that arrived after their operation's deadline (or for an
    /// unknown operation) and were dropped.
    pub fn late_answers(&self) -> u64 {
        self.inner.late_answers.load(Ordering::Relaxed)
    }

    pub(crate) fn count_late_answer(&self) {
        self.inner.late_answers.fetch_add(1, Ordering::Relaxed);
    }

    /// Admits the start of a tunnel for `identity` presenting the
    /// certificate `cert_fingerprint` (before its Hello): refused when the
    /// agent is revoked, the certificate superseded, the relay is shutting
    /// down, or the identity already has [`Limits::max_tunnels_per_agent`]
    /// tunnels opening or open.
    pub fn admit(
        &self,
        identity: &AgentIdentity,
        cert_fingerprint: &str,
    ) -> Result<OpenGuard, Failure> {
        let mut state = lock(&self.inner.state);
        if state.shutting_down {
            return Err(shutting_down());
        }
        if state.is_revoked(identity) {
            return Err(revoked_failure());
        }
        if state.is_superseded(&identity.tenant, cert_fingerprint) {
            return Err(superseded_failure());
        }
        let n = state.opening.entry(identity.clone()).or_insert(0);
        if *n >= self.inner.limits.max_tunnels_per_agent {
            return Err(Failure::new(
                ReasonCode::Overloaded,
                "too many tunnels for this agent identity at once; back off and reconnect",
            ));
        }
        *n += 1;
        Ok(OpenGuard {
            registry: self.clone(),
            identity: identity.clone(),
        })
    }

    /// Tunnels of `identity` being opened or open (what
    /// [`Limits::max_tunnels_per_agent`] bounds).
    pub fn tunnels_of(&self, identity: &AgentIdentity) -> usize {
        lock(&self.inner.state)
            .opening
            .get(identity)
            .copied()
            .unwrap_or(0)
    }

    /// Registers a tunnel opened with the certificate `cert_fingerprint`,
    /// replacing any tunnel with the same identity. Returns the connection
    /// and the receiver of messages to send down it; refused when the relay
    /// is shutting down, the agent is revoked or the certificate superseded.
    pub fn register(
        &self,
        identity: AgentIdentity,
        version: String,
        cert_fingerprint: String,
    ) -> Result<(Arc<AgentConn>, mpsc::Receiver<RelayMessage>), Failure> {
        let (tx, rx) = mpsc::channel(self.inner.limits.queue_depth);
        let conn = Arc::new(AgentConn {
            identity: identity.clone(),
            conn_id: self.inner.next_conn.fetch_add(1, Ordering::Relaxed),
            version,
            cert_fingerprint,
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
                return Err(shutting_down());
            }
            if state.is_revoked(&identity) {
                return Err(revoked_failure());
            }
            if state.is_superseded(&identity.tenant, &conn.cert_fingerprint) {
                return Err(superseded_failure());
            }
            let entry = state
                .domains
                .entry(identity.tenant.clone())
                .or_default()
                .entry(identity.domain.clone())
                .or_default();
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
            old.close(CloseReason::Replaced);
        }
        self.announce(&conn, PresenceEvent::Connected);
        Ok((conn, rx))
    }

    /// Removes a tunnel (if it is still the registered one) and wakes its
    /// waiters with `reason`.
    pub fn unregister(&self, conn: &Arc<AgentConn>, reason: CloseReason) {
        let removed = lock(&self.inner.state).remove_conn(conn);
        conn.close(reason);
        if removed {
            self.announce(conn, PresenceEvent::Disconnected);
        }
    }

    /// The version of the revoked list held for `tenant` (0 before any).
    pub fn revocation_version(&self, tenant: &str) -> u64 {
        lock(&self.inner.state)
            .revocation_version
            .get(tenant)
            .copied()
            .unwrap_or(0)
    }

    /// Replaces the set of revoked agents of `tenant` and the fingerprints
    /// of its superseded agent certificates with the lists of `version`,
    /// and closes the tunnels they name; returns how many were closed. A
    /// list older than the one held is refused (`Err` with the version
    /// held): versions never go backwards, so a stale list cannot readmit a
    /// revoked agent or a superseded certificate. The same version again is
    /// accepted.
    pub fn set_revoked(
        &self,
        tenant: &str,
        version: u64,
        agent_ids: HashSet<String>,
        superseded: HashSet<String>,
    ) -> Result<usize, u64> {
        let closing: Vec<(Arc<AgentConn>, CloseReason)> = {
            let mut state = lock(&self.inner.state);
            let held = state.revocation_version.get(tenant).copied().unwrap_or(0);
            if version < held {
                return Err(held);
            }
            state.revocation_version.insert(tenant.to_owned(), version);
            let closing = state
                .domains
                .get(tenant)
                .into_iter()
                .flat_map(|d| d.values())
                .flat_map(|d| d.agents.iter())
                .filter_map(|a| {
                    if agent_ids.contains(&a.identity.agent_id) {
                        Some((a.clone(), CloseReason::Revoked))
                    } else if superseded.contains(&a.cert_fingerprint) {
                        Some((a.clone(), CloseReason::Superseded))
                    } else {
                        None
                    }
                })
                .collect();
            state.revoked.insert(tenant.to_owned(), agent_ids);
            state.superseded.insert(tenant.to_owned(), superseded);
            closing
        };
        for (c, reason) in closing.iter().cloned() {
            if reason == CloseReason::Superseded {
                self.close_superseded(c);
            } else {
                tracing::warn!(tenant = %c.identity.tenant, domain = %c.identity.domain,
                    agent_id = %c.identity.agent_id, "agent revoked; closing its tunnel");
                self.unregister(&c, reason);
            }
        }
        Ok(closing.len())
    }

    /// Closes a tunnel whose certificate was superseded once
    /// [`SUPERSEDED_GRACE`] has passed. The real agent, which renewed, opens
    /// a tunnel on its new certificate within that time and it replaces
    /// this one the usual way (its operations in flight are resent to it);
    /// a tunnel still open then is someone else's copy of the old key.
    fn close_superseded(&self, conn: Arc<AgentConn>) {
        let registry = self.clone();
        let close = move || {
            if !conn.is_closed() {
                tracing::warn!(tenant = %conn.identity.tenant, domain = %conn.identity.domain,
                    agent_id = %conn.identity.agent_id,
                    "closing a tunnel on a superseded certificate");
                registry.unregister(&conn, CloseReason::Superseded);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(SUPERSEDED_GRACE).await;
                    close();
                });
            }
            Err(_) => close(),
        }
    }

    /// Shuts down gracefully: refuses new tunnels and new operations, tells
    /// every agent GoAway, lets in-flight operations finish for up to the
    /// grace period, then closes every tunnel; operations still unanswered
    /// fail with `TIMEOUT` (their outcome is unknown).
    pub async fn shut_down(&self) {
        self.inner.stopping.send_replace(true);
        let conns: Vec<Arc<AgentConn>> = {
            let mut state = lock(&self.inner.state);
            state.shutting_down = true;
            state.all().cloned().collect()
        };
        for c in &conns {
            c.go_away(CloseReason::Shutdown.words());
        }
        let deadline = tokio::time::Instant::now() + self.inner.limits.shutdown_grace;
        while conns.iter().any(|c| c.outstanding() > 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let conns: Vec<Arc<AgentConn>> = {
            let mut state = lock(&self.inner.state);
            state
                .domains
                .drain()
                .flat_map(|(_, d)| d.into_values())
                .flat_map(|d| d.agents)
                .collect()
        };
        for c in conns {
            c.close(CloseReason::Shutdown);
            self.announce(&c, PresenceEvent::Disconnected);
        }
    }

    /// Resolves once a shutdown has begun (presence streams end then).
    pub async fn stopping(&self) {
        let mut rx = self.inner.stopping.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Live agents of a domain.
    pub fn agents(&self, tenant: &str, domain: &str) -> Vec<Arc<AgentConn>> {
        lock(&self.inner.state)
            .domains
            .get(tenant)
            .and_then(|d| d.get(domain))
            .map(|d| d.agents.clone())
            .unwrap_or_default()
    }

    /// Live agents of a tenant, every domain.
    pub fn tenant_agents(&self, tenant: &str) -> Vec<Arc<AgentConn>> {
        lock(&self.inner.state)
            .domains
            .get(tenant)
            .into_iter()
            .flat_map(|d| d.values())
            .flat_map(|d| d.agents.iter().cloned())
            .collect()
    }

    /// Every live agent, all tenants.
    pub fn all_agents(&self) -> Vec<Arc<AgentConn>> {
        lock(&self.inner.state).all().cloned().collect()
    }

    /// Number of live tunnels.
    pub fn len(&self) -> usize {
        lock(&self.inner.state).all().count()
    }

    /// True when no tunnel is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live tunnel of `identity`, if any.
    fn current(&self, identity: &AgentIdentity) -> Option<Arc<AgentConn>> {
        lock(&self.inner.state)
            .domains
            .get(&identity.tenant)?
            .get(&identity.domain)?
            .agents
            .iter()
            .find(|a| a.identity.agent_id == identity.agent_id)
            .cloned()
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
        if self.inner.presence.receiver_count() > 0 {
            let _ = self.inner.presence.send(self.report(conn, event));
        }
    }

    /// Picks the live agent of the domain with the fewest outstanding
    /// requests, round robin among equals, skipping agents in `tried`;
    /// only agent `pin` when given.
    fn pick(
        &self,
        tenant: &str,
        domain: &str,
        tried: &HashSet<String>,
        pin: Option<&str>,
    ) -> Result<Option<Arc<AgentConn>>, Failure> {
        let mut state = lock(&self.inner.state);
        if state.shutting_down {
            return Err(shutting_down());
        }
        let Some(entry) = state.domain_mut(tenant, domain) else {
            return Ok(None);
        };
        let n = entry.agents.len();
        let start = entry.next % n.max(1);
        let mut best: Option<&Arc<AgentConn>> = None;
        for i in 0..n {
            let a = &entry.agents[(start + i) % n];
            if a.is_closed()
                || tried.contains(&a.identity.agent_id)
                || pin.is_some_and(|p| p != a.identity.agent_id)
            {
                continue;
            }
            if best.is_none_or(|b| a.outstanding() < b.outstanding()) {
                best = Some(a);
            }
        }
        let chosen = best.cloned();
        entry.next = entry.next.wrapping_add(1);
        Ok(chosen)
    }

    /// Routes `op` to a live agent of its domain (to agent `pin` only, when
    /// given) and waits for the answer until `timeout` (see the module docs
    /// for when it fails over).
    pub async fn dispatch(
        &self,
        op: OperationRequest,
        timeout: Duration,
        pin: Option<&str>,
    ) -> Result<OperationResult, Failure> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tried: HashSet<String> = HashSet::new();
        let mut overloaded = false;
        let mut next: Option<Arc<AgentConn>> = None;
        let key = request_key(&op);
        let op = Arc::new(op);
        loop {
            let conn = match next.take() {
                Some(c) => c,
                None => match self.pick(&op.tenant, &op.domain, &tried, pin)? {
                    Some(c) => c,
                    None => return Err(unrouted(&op.domain, &tried, overloaded)),
                },
            };
            tried.insert(conn.identity.agent_id.clone());
            tracing::Span::current()
                .record("agent_id", tracing::field::display(&conn.identity.agent_id));
            // The agent takes every operation off its tunnel at once (it waits
            // for a free slot in its own task, so heartbeats keep flowing);
            // what bounds an agent's backlog is this count of operations sent
            // and not yet answered.
            let Some(_slot) = Outstanding::reserve(&conn, self.inner.limits.queue_depth) else {
                tracing::debug!(agent_id = %conn.identity.agent_id, "agent backlog full");
                overloaded = true;
                continue;
            };
            let (tx, rx) = oneshot::channel();
            let already_sent = conn.wait_for(&key, tx);
            if conn.is_closed() {
                // Closed between the pick and the insert: nobody will wake us.
                drop(rx);
                conn.prune(&key);
                continue;
            }
            if already_sent {
                tracing::info!(agent_id = %conn.identity.agent_id,
                    "operation id already on its way to this agent; waiting for that answer");
            } else {
                let msg = RelayMessage {
                    body: Some(relay_message::Body::Request(OperationRequest::clone(&op))),
                };
                if let Err(e) = conn.tx.try_send(msg) {
                    drop(rx);
                    conn.prune(&key);
                    if matches!(e, mpsc::error::TrySendError::Full(_)) {
                        tracing::debug!(agent_id = %conn.identity.agent_id, "agent queue full");
                        overloaded = true;
                    }
                    continue;
                }
            }
            let answer = tokio::time::timeout_at(deadline, rx).await;
            drop(_slot);
            let reason = match answer {
                Ok(Ok(Answer::Result(result))) => return Ok(*result),
                Ok(Ok(Answer::Lost(reason))) => reason,
                Ok(Err(_)) => CloseReason::Dropped,
                Err(_) => {
                    conn.prune(&key);
                    tracing::warn!(agent_id = %conn.identity.agent_id,
                        "agent did not answer before the deadline");
                    return Err(Failure::new(
                        ReasonCode::Timeout,
                        "the agent did not answer before the operation's deadline; the change may or may not have been applied",
                    ));
                }
            };
            if reason == CloseReason::Shutdown {
                return Err(Failure::new(
                    ReasonCode::Timeout,
                    "the relay shut down before the agent answered; the change may or may not have been applied",
                ));
            }
            // The same agent reconnected: resend to it (it deduplicates by
            // operation id). Otherwise the agent is gone, and it may have
            // applied the operation before its tunnel broke: another agent
            // must not apply it too (a partition would apply it twice, and
            // a change would then fail as WRONG_OLD_PASSWORD although it
            // happened). The answer says the outcome is unknown; the control
            // plane asks the agents' ledgers before it sends the operation
            // again. Queries write nothing: they may go anywhere.
            match self.current(&conn.identity) {
                Some(c)
                    if c.conn_id != conn.conn_id
                        && !matches!(reason, CloseReason::Revoked | CloseReason::Superseded) =>
                {
                    tracing::info!(agent_id = %conn.identity.agent_id, reason = reason.words(),
                        "agent reconnected before answering; resending to its new tunnel");
                    next = Some(c);
                }
                _ if is_query(&op) => {
                    tracing::info!(agent_id = %conn.identity.agent_id, reason = reason.words(),
                        "tunnel lost before the agent answered a query; asking another");
                }
                _ => {
                    tracing::info!(agent_id = %conn.identity.agent_id, reason = reason.words(),
                        "tunnel lost before the agent answered; outcome unknown, not failing over");
                    return Err(Failure::new(
                        ReasonCode::Timeout,
                        format!(
                            "the tunnel to agent {} closed before it answered; the change may or \
                             may not have been applied",
                            conn.identity.agent_id
                        ),
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
                        sent_at: Some(writeback_core::operation::now_timestamp()),
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

/// Whether `op` only reads (a policy or outcome query, a directory search,
/// a user lookup).
fn is_query(op: &OperationRequest) -> bool {
    [
        OperationKind::PolicyQuery,
        OperationKind::OutcomeQuery,
        OperationKind::DirectorySearch,
        OperationKind::UserLookup,
    ]
    .iter()
    .any(|k| op.kind == *k as i32)
}

/// The waiter key of a request: its operation id, with an outcome query
/// kept apart from the operation it asks about.
fn request_key(op: &OperationRequest) -> String {
    if op.kind == OperationKind::OutcomeQuery as i32 {
        format!("?{}", op.operation_id)
    } else {
        op.operation_id.clone()
    }
}

/// The waiter key a result answers (see [`request_key`]).
fn result_key(result: &OperationResult) -> String {
    if result.ledger_state != LedgerState::Unspecified as i32 {
        format!("?{}", result.operation_id)
    } else {
        result.operation_id.clone()
    }
}

fn shutting_down() -> Failure {
    Failure::new(
        ReasonCode::Unavailable,
        "the relay is shutting down; nothing was sent to an agent",
    )
}

fn unrouted(domain: &str, tried: &HashSet<String>, overloaded: bool) -> Failure {
    if overloaded {
        Failure::new(
            ReasonCode::Overloaded,
            "every agent of the domain has a full queue; try again shortly",
        )
    } else if tried.is_empty() {
        Failure::new(
            ReasonCode::NoAgentOnline,
            format!("no agent of domain {domain} is connected to the relay"),
        )
    } else {
        Failure::new(
            ReasonCode::NoAgentOnline,
            format!("every agent of domain {domain} disconnected before answering"),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn id(agent: &str) -> AgentIdentity {
        AgentIdentity {
            tenant: "t1".into(),
            domain: "contoso.test".into(),
            agent_id: agent.into(),
        }
    }

    fn op(op_id: &str) -> OperationRequest {
        OperationRequest {
            operation_id: op_id.into(),
            tenant: "t1".into(),
            domain: "contoso.test".into(),
            ..OperationRequest::default()
        }
    }

    async fn next_request(rx: &mut mpsc::Receiver<RelayMessage>) -> OperationRequest {
        loop {
            match rx.recv().await.expect("a message").body {
                Some(relay_message::Body::Request(r)) => return r,
                _ => continue,
            }
        }
    }

    fn ok(op_id: &str, agent: &str) -> OperationResult {
        OperationResult {
            operation_id: op_id.into(),
            agent_id: agent.into(),
            ..OperationResult::default()
        }
    }

    #[tokio::test]
    async fn a_replaced_tunnel_hands_its_operation_to_the_same_agent() {
        let r = Registry::new("relay-1".into(), 8);
        let (_old, mut old_rx) = r.register(id("a1"), "v".into(), String::new()).unwrap();
        let call = tokio::spawn({
            let r = r.clone();
            async move { r.dispatch(op("op-1"), Duration::from_secs(5), None).await }
        });
        assert_eq!(next_request(&mut old_rx).await.operation_id, "op-1");
        let (_other, _other_rx) = r.register(id("b1"), "v".into(), String::new()).unwrap();
        let (new, mut new_rx) = r.register(id("a1"), "v".into(), String::new()).unwrap();
        assert_eq!(next_request(&mut new_rx).await.operation_id, "op-1");
        assert!(new.complete(ok("op-1", "a1")));
        assert_eq!(call.await.unwrap().unwrap().agent_id, "a1");
        assert_eq!(r.len(), 2);
    }

    #[tokio::test]
    async fn a_result_carries_the_tunnels_agent_id_not_the_claimed_one() {
        let r = Registry::new("relay-1".into(), 8);
        let (a1, mut rx) = r.register(id("a1"), "v".into(), String::new()).unwrap();
        let call = tokio::spawn({
            let r = r.clone();
            async move { r.dispatch(op("op-1"), Duration::from_secs(5), None).await }
        });
        next_request(&mut rx).await;
        assert!(a1.complete(ok("op-1", "someone-else")));
        assert_eq!(call.await.unwrap().unwrap().agent_id, "a1");
    }

    #[test]
    fn a_stale_revocation_list_cannot_readmit_an_agent() {
        let r = Registry::new("relay-1".into(), 8);
        assert_eq!(r.revocation_version("t1"), 0);
        assert_eq!(
            r.set_revoked("t1", 2, HashSet::from(["a1".to_owned()]), HashSet::new()),
            Ok(0)
        );
        // An older list without a1 (a replica that read the store before
        // the revocation) is refused; a1 stays out.
        assert_eq!(
            r.set_revoked("t1", 1, HashSet::new(), HashSet::new()),
            Err(2)
        );
        assert_eq!(r.revocation_version("t1"), 2);
        assert_eq!(
            r.register(id("a1"), "v".into(), String::new())
                .err()
                .unwrap()
                .reason,
            ReasonCode::AgentRevoked
        );
        // The same version again is fine; a newer one replaces it.
        assert_eq!(
            r.set_revoked("t1", 2, HashSet::from(["a1".to_owned()]), HashSet::new()),
            Ok(0)
        );
        assert_eq!(
            r.set_revoked("t1", 3, HashSet::new(), HashSet::new()),
            Ok(0)
        );
        assert!(r.register(id("a1"), "v".into(), String::new()).is_ok());
        // Versions are per tenant.
        assert_eq!(r.revocation_version("t2"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_superseded_certificate_is_closed_and_refused_and_its_successor_admitted() {
        let r = Registry::new("relay-1".into(), 8);
        let (old, _old_rx) = r.register(id("a1"), "v".into(), "old".into()).unwrap();
        let (other, _other_rx) = r.register(id("b1"), "v".into(), "b".into()).unwrap();
        let (copy, _copy_rx) = r.register(id("c1"), "v".into(), "c-old".into()).unwrap();
        let superseded = HashSet::from(["old".to_owned(), "c-old".to_owned()]);
        assert_eq!(
            r.set_revoked("t1", 4, HashSet::new(), superseded.clone()),
            Ok(2)
        );
        // The agent that renewed reconnects on its new certificate within
        // the grace: its tunnel replaces the old one.
        tokio::time::sleep(SUPERSEDED_GRACE / 2).await;
        assert!(!old.is_closed() && !copy.is_closed());
        let (renewed, _renewed_rx) = r.register(id("a1"), "v".into(), "new".into()).unwrap();
        assert!(old.is_closed());
        // A tunnel still on a superseded certificate after it is closed.
        tokio::time::sleep(SUPERSEDED_GRACE).await;
        tokio::task::yield_now().await;
        assert!(copy.is_closed() && !renewed.is_closed() && !other.is_closed());
        assert_eq!(r.agents("t1", "contoso.test").len(), 2);
        for refused in [
            r.admit(&id("a1"), "old").err().unwrap(),
            r.register(id("a1"), "v".into(), "old".into())
                .err()
                .unwrap(),
        ] {
            assert_eq!(refused.reason, ReasonCode::CertificateSuperseded);
            assert!(
                refused.message.contains("enrolled again"),
                "{}",
                refused.message
            );
        }
        // The renewed certificate gets in again; an older list cannot
        // readmit the superseded one.
        assert!(r.admit(&id("a1"), "new").is_ok());
        assert!(r.register(id("a1"), "v".into(), "new".into()).is_ok());
        assert_eq!(
            r.set_revoked("t1", 3, HashSet::new(), HashSet::new()),
            Err(4)
        );
        assert_eq!(
            r.admit(&id("a1"), "old").err().unwrap().reason,
            ReasonCode::CertificateSuperseded
        );
        // Another tenant's certificates are another list.
        let other_tenant = AgentIdentity {
            tenant: "t2".into(),
            ..id("a1")
        };
        assert!(r.admit(&other_tenant, "old").is_ok());
    }

    #[tokio::test]
    async fn a_dropped_tunnel_never_fails_over_and_a_slow_one_times_out() {
        let r = Registry::new("relay-1".into(), 8);
        let (a1, mut a1_rx) = r.register(id("a1"), "v".into(), String::new()).unwrap();
        let call = tokio::spawn({
            let r = r.clone();
            async move { r.dispatch(op("op-1"), Duration::from_secs(5), None).await }
        });
        next_request(&mut a1_rx).await;
        let (b1, mut b1_rx) = r.register(id("b1"), "v".into(), String::new()).unwrap();
        r.unregister(&a1, CloseReason::Dropped);
        // a1 may have applied it: the outcome is unknown, and b1 never gets it.
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.reason, ReasonCode::Timeout);
        assert!(err.message.contains("a1"), "{}", err.message);
        assert!(b1_rx.try_recv().is_err());
        // A dispatch pinned to b1 goes to b1 only.
        let pinned = tokio::spawn({
            let r = r.clone();
            async move {
                r.dispatch(op("op-1"), Duration::from_secs(5), Some("b1"))
                    .await
            }
        });
        next_request(&mut b1_rx).await;
        assert!(b1.complete(ok("op-1", "b1")));
        assert_eq!(pinned.await.unwrap().unwrap().agent_id, "b1");
        let nobody = r
            .dispatch(op("op-3"), Duration::from_secs(5), Some("a1"))
            .await
            .unwrap_err();
        assert_eq!(nobody.reason, ReasonCode::NoAgentOnline);
        // Slow: the deadline answers, the late result is refused.
        let err = r
            .dispatch(op("op-2"), Duration::from_millis(50), None)
            .await
            .unwrap_err();
        assert_eq!(err.reason, ReasonCode::Timeout);
        assert!(!b1.complete(ok("op-2", "b1")));
    }

    #[tokio::test]
    async fn limits_revocation_and_shutdown_refuse_at_once() {
        let r = Registry::with_limits(
            "relay-1".into(),
            Limits {
                queue_depth: 1,
                max_tunnels_per_agent: 2,
                shutdown_grace: Duration::from_millis(10),
            },
        );
        let g1 = r.admit(&id("a1"), "").unwrap();
        let _g2 = r.admit(&id("a1"), "").unwrap();
        assert_eq!(
            r.admit(&id("a1"), "").err().unwrap().reason,
            ReasonCode::Overloaded
        );
        drop(g1);
        assert!(r.admit(&id("a1"), "").is_ok());

        let (_a1, _rx) = r.register(id("a1"), "v".into(), String::new()).unwrap();
        let first = tokio::spawn({
            let r = r.clone();
            async move { r.dispatch(op("op-1"), Duration::from_secs(5), None).await }
        });
        tokio::task::yield_now().await;
        while r.agents("t1", "contoso.test")[0].outstanding() == 0 {
            tokio::task::yield_now().await;
        }
        let full = r.dispatch(op("op-2"), Duration::from_secs(5), None).await;
        assert_eq!(full.unwrap_err().reason, ReasonCode::Overloaded);

        assert_eq!(
            r.set_revoked("t1", 1, HashSet::from(["a1".to_owned()]), HashSet::new()),
            Ok(1)
        );
        assert_eq!(
            r.register(id("a1"), "v".into(), String::new())
                .err()
                .unwrap()
                .reason,
            ReasonCode::AgentRevoked
        );
        // Revoked after it was sent: it may have been applied.
        assert_eq!(
            first.await.unwrap().unwrap_err().reason,
            ReasonCode::Timeout
        );

        r.shut_down().await;
        assert_eq!(
            r.dispatch(op("op-3"), Duration::from_secs(5), None)
                .await
                .unwrap_err()
                .reason,
            ReasonCode::Unavailable
        );
        assert_eq!(
            r.admit(&id("b1"), "").err().unwrap().reason,
            ReasonCode::Unavailable
        );
    }
}
