//! Sends operations to relays, each signed with the control plane's
//! operation-signing key (`writeback_envelope::signing`). For each tenant the control plane holds an
//! mTLS channel to every configured relay (with a client certificate naming
//! the tenant's control plane, issued in memory from the CA; the relay's
//! certificate must name a relay of that tenant) and watches
//! each relay's presence stream, so it knows which relay holds agents of
//! which domain. An operation goes to a relay that holds an agent of its
//! domain; when presence knows none (just after a start), every relay is
//! tried in turn until one does not answer NO_AGENT_ONLINE.
//!
//! The dispatcher also keeps every relay's list of revoked agents current:
//! it sends the tenant's full list (from the store) — the revoked agents
//! and the agent certificates a renewal superseded — with its version (the
//! tenant's revocation counter, bumped by every revocation and renewal)
//! whenever it (re)connects to a relay, after every revocation and renewal
//! ([`Dispatcher::sync_revocations`]) and before any dispatch through a
//! relay that has not acknowledged the store's current version. A relay
//! refuses a list older than its own, so a replica that read the store
//! before a revocation cannot readmit the agent; and each dispatch names
//! the version the relay must hold, so an operation never goes through a
//! relay that could still route to a revoked agent: the dispatcher tries
//! another relay, or fails with `REVOCATION_STALE`.
//!
//! No answer is taken on the relay's word: every result must be signed by
//! the agent it names, with the key the store recorded for it, and bound to
//! the operation sent ([`results`]); anything else counts as no answer. A
//! relay's own refusal of an operation it was handed is not an outcome
//! either ([`delivery`]): it may have delivered it anyway.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tonic::transport::Channel;
use writeback_core::{Failure, ReasonCode, failure_of};
use writeback_envelope::signing::OperationSigner;
use writeback_identity::{Ca, SpiffeId, tls, transport};
use writeback_proto::v1::relay_dispatch_client::RelayDispatchClient;
use writeback_proto::v1::{
    AgentHealth, DispatchRequest, DispatchResponse, OperationRequest, OperationResult,
    PresenceEvent, ProbeHealthRequest, SetRevokedAgentsRequest, WatchPresenceRequest,
};

use crate::store::{Page, Store};

mod delivery;
mod results;
pub use delivery::{Delivery, Verdict};
pub use results::RefusedResultHook;

/// (tenant, domain) → agent id → relay url.
type PresenceMap = HashMap<(String, String), HashMap<String, String>>;

/// What relays refuse, sent to them as one versioned list
/// (`SetRevokedAgentsRequest`).
#[derive(Debug, Clone, Default)]
struct Revocations {
    /// Revoked agents' ids.
    agent_ids: Vec<String>,
    /// Fingerprints of agent certificates a renewal superseded.
    superseded: Vec<String>,
}

/// One relay link of a tenant.
struct RelayLink {
    url: String,
    client: RelayDispatchClient<Channel>,
    /// True while the relay is known to hold the list of revoked agents
    /// of version `revocations_acked`; cleared when the link breaks (the
    /// relay may have restarted and forgotten it).
    revocations_synced: AtomicBool,
    /// The revocation version the relay last said it holds.
    revocations_acked: AtomicU64,
    /// Set once its presence stream first answered (opened or failed).
    presence_answered: AtomicBool,
}

struct TenantLinks {
    relays: Vec<Arc<RelayLink>>,
    /// When the links were made: presence is empty until each relay's
    /// presence stream has answered.
    created: std::time::Instant,
}

struct Inner {
    ca: Arc<Ca>,
    signer: Arc<OperationSigner>,
    relay_urls: Vec<String>,
    store: Option<Store>,
    tenants: Mutex<HashMap<String, Arc<TenantLinks>>>,
    presence: Mutex<PresenceMap>,
    /// When each (tenant, domain) last lost an agent from presence: a
    /// dispatch finding no agent retries for a while after, since agents
    /// reconnect within seconds when a relay restarts.
    last_online: Mutex<HashMap<(String, String), std::time::Instant>>,
    next: std::sync::atomic::AtomicUsize,
    /// Told of every result refused for its signature.
    refused_results: std::sync::OnceLock<RefusedResultHook>,
}

/// A pass over the relays that did not bring an answer.
pub(crate) struct Missed {
    /// What went wrong.
    pub(crate) failure: Failure,
    /// An agent may have received the operation (ask before sending again).
    pub(crate) maybe_delivered: bool,
    /// A relay was handed the signed operation and refused it with a
    /// reason of its own: its word, not an agent's (see [`delivery`]).
    pub(crate) relay_refused: bool,
}

/// Whether a failed dispatch call may have reached an agent: the relay's
/// own `TIMEOUT` (the agent did not answer, or its tunnel broke after the
/// operation was sent), or a transport failure of the call itself.
fn may_have_reached_an_agent(s: &tonic::Status, f: &Failure) -> bool {
    if f.reason == ReasonCode::Timeout {
        return true;
    }
    // A relay's own refusals carry the writeback error details; a broken
    // connection does not.
    s.details().is_empty()
        && matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        )
}

/// Cheap-to-clone handle to the relay links.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Dispatcher {
    /// A dispatcher over `relay_urls`, issuing client certificates from
    /// `ca` and signing every operation with `signer`, with no store:
    /// relays are told that no agent is revoked, and results are not
    /// authenticated (no agent keys): for relay-level tests only.
    pub fn new(ca: Arc<Ca>, signer: Arc<OperationSigner>, relay_urls: Vec<String>) -> Dispatcher {
        Dispatcher::build(ca, signer, relay_urls, None)
    }

    /// A dispatcher that reads each tenant's revoked agents from `store`
    /// and keeps every relay's list current.
    pub fn with_store(
        ca: Arc<Ca>,
        signer: Arc<OperationSigner>,
        relay_urls: Vec<String>,
        store: Store,
    ) -> Dispatcher {
        Dispatcher::build(ca, signer, relay_urls, Some(store))
    }

    fn build(
        ca: Arc<Ca>,
        signer: Arc<OperationSigner>,
        relay_urls: Vec<String>,
        store: Option<Store>,
    ) -> Dispatcher {
        Dispatcher {
            inner: Arc::new(Inner {
                ca,
                signer,
                relay_urls,
                store,
                tenants: Mutex::new(HashMap::new()),
                presence: Mutex::new(HashMap::new()),
                last_online: Mutex::new(HashMap::new()),
                next: std::sync::atomic::AtomicUsize::new(0),
                refused_results: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The links of `tenant`, created (and their presence watchers started)
    /// on first use.
    fn links(&self, tenant: &str) -> Result<Arc<TenantLinks>, Failure> {
        if let Some(l) = lock(&self.inner.tenants).get(tenant) {
            return Ok(l.clone());
        }
        let internal = |e: writeback_identity::Error| {
            tracing::error!(error = %e, "cannot set up relay links");
            Failure::new(
                ReasonCode::Internal,
                "the control plane cannot set up its relay links",
            )
        };
        let id = SpiffeId::ControlPlane {
            tenant: tenant.to_owned(),
        };
        // Issued in memory, and again halfway through its life: the links
        // live as long as the process.
        let ca = self.inner.ca.clone();
        let cert = tls::ReissuingCert::new(
            Arc::new(move || ca.issue_service(&id, &[], &[])),
            crate::server::half_a_leaf_life(),
        )
        .map_err(internal)?;
        // A relay must prove it is a relay of this tenant, not merely hold
        // a certificate from the CA for the right host name.
        let config = tls::relay_client_config_reissuing(
            tls::roots_from_pem(self.inner.ca.cert_pem()).map_err(internal)?,
            cert,
            tenant,
        )
        .map_err(internal)?;
        let mut relays = Vec::new();
        for url in &self.inner.relay_urls {
            let channel = transport::channel(url, config.clone()).map_err(internal)?;
            relays.push(Arc::new(RelayLink {
                url: url.clone(),
                client: RelayDispatchClient::new(channel),
                revocations_synced: AtomicBool::new(false),
                revocations_acked: AtomicU64::new(0),
                presence_answered: AtomicBool::new(false),
            }));
        }
        let links = Arc::new(TenantLinks {
            relays,
            created: std::time::Instant::now(),
        });
        let mut tenants = lock(&self.inner.tenants);
        if let Some(l) = tenants.get(tenant) {
            return Ok(l.clone());
        }
        tenants.insert(tenant.to_owned(), links.clone());
        for link in &links.relays {
            tokio::spawn(self.clone().watch(tenant.to_owned(), link.clone()));
        }
        Ok(links)
    }

    /// The tenant's current revocation version (0 without a store).
    async fn revocation_version(&self, tenant: &str) -> Result<u64, Failure> {
        let Some(store) = &self.inner.store else {
            return Ok(0);
        };
        store.revocation_version(tenant).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read the revocation version");
            Failure::new(
                ReasonCode::Internal,
                "the control plane cannot read its agents",
            )
        })
    }

    /// The tenant's revocation version, revoked agent ids and superseded
    /// certificates, from the store: the version is read first, so the
    /// lists are at least that new.
    async fn revocation_state(&self, tenant: &str) -> Result<(u64, Revocations), Failure> {
        let version = self.revocation_version(tenant).await?;
        let agent_ids = self.revoked_agents(tenant).await?;
        let superseded = match &self.inner.store {
            None => Vec::new(),
            Some(store) => store.superseded_certificates(tenant).await.map_err(|e| {
                tracing::error!(error = %e, "cannot read the superseded certificates");
                Failure::new(
                    ReasonCode::Internal,
                    "the control plane cannot read its agents",
                )
            })?,
        };
        Ok((
            version,
            Revocations {
                agent_ids,
                superseded,
            },
        ))
    }

    /// The tenant's revoked agent ids, from the store.
    async fn revoked_agents(&self, tenant: &str) -> Result<Vec<String>, Failure> {
        let Some(store) = &self.inner.store else {
            return Ok(Vec::new());
        };
        let mut ids = Vec::new();
        let mut page = Page::first(0);
        loop {
            let (rows, next) = store.list_agents(tenant, None, page).await.map_err(|e| {
                tracing::error!(error = %e, "cannot read the revoked agents");
                Failure::new(
                    ReasonCode::Internal,
                    "the control plane cannot read its agents",
                )
            })?;
            ids.extend(
                rows.into_iter()
                    .filter(|a| a.is_revoked())
                    .map(|a| a.agent_id),
            );
            match next {
                Some(token) => page = Page::after(0, token),
                None => return Ok(ids),
            }
        }
    }

    /// Sends `lists` (the full lists, of `version`) to one relay; answers
    /// the version the relay holds afterwards. A relay holding a newer list
    /// refuses an older one with `REVOCATION_STALE` (another replica got
    /// there first).
    async fn push_revocations(
        &self,
        tenant: &str,
        link: &RelayLink,
        version: u64,
        lists: Revocations,
    ) -> Result<u64, tonic::Status> {
        let request = SetRevokedAgentsRequest {
            tenant: tenant.to_owned(),
            agent_ids: lists.agent_ids,
            version,
            superseded_certificates: lists.superseded,
        };
        match link.client.clone().set_revoked_agents(request).await {
            Ok(r) => {
                let r = r.into_inner();
                tracing::debug!(relay = %link.url, closed = r.tunnels_closed, version = r.version,
                    "relay has the revoked agents");
                link.revocations_acked
                    .fetch_max(r.version, Ordering::AcqRel);
                link.revocations_synced.store(true, Ordering::Release);
                Ok(r.version)
            }
            Err(s) => {
                tracing::info!(relay = %link.url, error = %s.message(),
                    "cannot send the revoked agents to the relay");
                if failure_of(&s).reason != ReasonCode::RevocationStale {
                    link.revocations_synced.store(false, Ordering::Release);
                }
                Err(s)
            }
        }
    }

    /// Sends the tenant's full list of revoked agents (from the store,
    /// versioned) to every relay; each closes the tunnels of revoked agents
    /// and refuses them from then on. A relay that cannot be reached now
    /// gets the list before the next operation goes through it. Call after
    /// every revocation and every certificate renewal.
    pub async fn sync_revocations(&self, tenant: &str) -> Result<(), Failure> {
        let links = self.links(tenant)?;
        let (version, ids) = self.revocation_state(tenant).await?;
        let pushes = links
            .relays
            .iter()
            .map(|link| self.push_revocations(tenant, link, version, ids.clone()));
        futures::future::join_all(pushes).await;
        Ok(())
    }

    /// Makes sure `link` holds the tenant's current revoked list (the
    /// store's version or newer) before an operation goes through it, and
    /// answers that version, which the dispatch then demands of the relay.
    /// An error means the operation must not go through this relay.
    async fn ensure_revocations(&self, tenant: &str, link: &RelayLink) -> Result<u64, Failure> {
        let current = self.revocation_version(tenant).await?;
        if link.revocations_synced.load(Ordering::Acquire)
            && link.revocations_acked.load(Ordering::Acquire) >= current
        {
            return Ok(current);
        }
        let stale = || {
            Failure::new(
                ReasonCode::RevocationStale,
                format!(
                    "relay {} could not be given the current list of revoked agents; the \
                     operation was not routed through it",
                    link.url
                ),
            )
        };
        // Twice: a refusal as stale means the store moved on since we read
        // it; the second read is at least as new as the relay's list.
        for _ in 0..2 {
            let (version, ids) = self.revocation_state(tenant).await?;
            match self.push_revocations(tenant, link, version, ids).await {
                Ok(held) if held >= current => return Ok(current),
                Ok(_) => return Err(stale()),
                Err(s) if failure_of(&s).reason == ReasonCode::RevocationStale => continue,
                // Down, or refused in the handshake (not a relay of the tenant).
                Err(_) => {
                    return Err(Failure::new(
                        ReasonCode::Unavailable,
                        format!("relay {} is unreachable", link.url),
                    ));
                }
            }
        }
        Err(stale())
    }

    /// Follows one relay's presence stream forever, reconnecting with
    /// backoff; each (re)connection first gives the relay the revoked list.
    async fn watch(self, tenant: String, link: Arc<RelayLink>) {
        let url = link.url.clone();
        let mut client = link.client.clone();
        let mut backoff = Duration::from_millis(200);
        loop {
            if let Err(f) = self.ensure_revocations(&tenant, &link).await {
                tracing::debug!(relay = %url, reason = %f.reason, "revoked agents not sent");
            }
            let watched = client
                .watch_presence(WatchPresenceRequest {
                    tenant: tenant.clone(),
                })
                .await;
            link.presence_answered.store(true, Ordering::Release);
            match watched {
                Ok(resp) => {
                    backoff = Duration::from_millis(200);
                    let mut stream = resp.into_inner();
                    while let Ok(Some(report)) = stream.message().await {
                        let Some(id) = report.identity else { continue };
                        let key = (id.tenant.clone(), id.domain.clone());
                        let mut presence = lock(&self.inner.presence);
                        let agents = presence.entry(key.clone()).or_default();
                        if report.event == PresenceEvent::Connected as i32 {
                            agents.insert(id.agent_id, url.clone());
                        } else if agents.get(&id.agent_id) == Some(&url) {
                            agents.remove(&id.agent_id);
                            lock(&self.inner.last_online).insert(key, std::time::Instant::now());
                        }
                    }
                }
                Err(s) => {
                    tracing::debug!(relay = %url, error = %s.message(), "presence watch failed");
                }
            }
            // The stream ended: the relay may have restarted and forgotten
            // the revoked list, and what it told us is stale.
            link.revocations_synced.store(false, Ordering::Release);
            let now = std::time::Instant::now();
            for (key, agents) in lock(&self.inner.presence).iter_mut() {
                let before = agents.len();
                agents.retain(|_, u| *u != url);
                if agents.len() < before {
                    lock(&self.inner.last_online).insert(key.clone(), now);
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Agents of `domain` that some relay reports online.
    pub fn online_agents(&self, tenant: &str, domain: &str) -> HashSet<String> {
        let _ = self.links(tenant);
        lock(&self.inner.presence)
            .get(&(tenant.to_owned(), domain.to_owned()))
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Asks an agent of `op.domain` a read-only question (`op` of a query
    /// kind, given a new id and an expiry `timeout` away here): the agent's
    /// result when it answered `OK`, else its reason and sentence.
    pub async fn ask(
        &self,
        mut op: OperationRequest,
        timeout: Duration,
    ) -> Result<OperationResult, Failure> {
        op.operation_id = uuid::Uuid::new_v4().to_string();
        op.expires_at = Some(writeback_core::operation::to_timestamp(
            time::OffsetDateTime::now_utc() + timeout,
        ));
        let result = self.dispatch(op, timeout).await?.result.unwrap_or_default();
        let outcome = result.outcome.clone().unwrap_or_default();
        match ReasonCode::parse(&outcome.reason_code) {
            Some(ReasonCode::Ok) => Ok(result),
            Some(code) => Err(Failure::new(code, outcome.message)),
            None => Err(Failure::new(ReasonCode::Internal, outcome.message)),
        }
    }

    /// Signs `op` with the operation-signing key, dispatches it and waits
    /// for its result, within `timeout`: one pass over the relays, for
    /// queries (operations go through [`Dispatcher::deliver`], which retries
    /// until their deadline). Every request leaves the control plane signed.
    pub async fn dispatch(
        &self,
        mut op: OperationRequest,
        timeout: Duration,
    ) -> Result<DispatchResponse, Failure> {
        self.inner.signer.sign(&mut op);
        self.dispatch_signed(&op, timeout, None)
            .await
            .map_err(|m| m.failure)
    }

    /// One pass over the relays with a signed `op`; with `pin`, only to
    /// agent `pin.1`, through relay `pin.0` when presence names one (else
    /// through each relay in turn).
    async fn dispatch_signed(
        &self,
        op: &OperationRequest,
        timeout: Duration,
        pin: Option<(Option<&str>, &str)>,
    ) -> Result<DispatchResponse, Missed> {
        let not_sent = |failure| Missed {
            failure,
            maybe_delivered: false,
            relay_refused: false,
        };
        // Set once a relay refused the operation it was handed.
        let mut refused_by_relay = false;
        let links = self.links(&op.tenant).map_err(not_sent)?;
        if links.relays.is_empty() {
            return Err(not_sent(Failure::new(
                ReasonCode::NoAgentOnline,
                "the control plane has no relay configured",
            )));
        }
        let holding: HashSet<String> = lock(&self.inner.presence)
            .get(&(op.tenant.clone(), op.domain.clone()))
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default();
        let start = self
            .inner
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = links.relays.len();
        let mut order: Vec<&Arc<RelayLink>> =
            (0..n).map(|i| &links.relays[(start + i) % n]).collect();
        // Relays known to hold an agent of the domain first.
        order.sort_by_key(|link| !holding.contains(&link.url));
        let mut last = Failure::new(
            ReasonCode::NoAgentOnline,
            format!("no agent of domain {} is connected to any relay", op.domain),
        );
        for link in order {
            let url = &link.url;
            if pin.is_some_and(|(relay, _)| relay.is_some_and(|r| r != url)) {
                continue;
            }
            // No operation goes through a relay whose list of revoked
            // agents is not current; the relay checks it too.
            let min_revocation_version = match self.ensure_revocations(&op.tenant, link).await {
                Ok(v) => v,
                Err(f) => {
                    tracing::warn!(relay = %url, reason = %f.reason, "relay skipped");
                    last = match f.reason {
                        ReasonCode::Unavailable => Failure::new(
                            ReasonCode::NoAgentOnline,
                            format!(
                                "relay {url} is unreachable and no other relay holds an agent of domain {}",
                                op.domain
                            ),
                        ),
                        _ => f,
                    };
                    continue;
                }
            };
            let mut request = tonic::Request::new(DispatchRequest {
                operation: Some(op.clone()),
                min_revocation_version,
                agent_id: pin.map(|(_, agent)| agent.to_owned()).unwrap_or_default(),
            });
            request.set_timeout(timeout + Duration::from_secs(2));
            match link.client.clone().dispatch(request).await {
                Ok(r) => {
                    let answer = r.into_inner();
                    self.authenticate_result(op, &answer, pin.map(|(_, agent)| agent), url)
                        .await?;
                    return Ok(answer);
                }
                Err(s) => {
                    let f = failure_of(&s);
                    tracing::info!(relay = %url, reason = %f.reason, "relay did not route the operation");
                    if may_have_reached_an_agent(&s, &f) {
                        // The relay's own TIMEOUT, or the call broke after it
                        // was sent (a relay crash): an agent may have it.
                        return Err(Missed {
                            failure: Failure::new(
                                ReasonCode::Timeout,
                                format!(
                                    "relay {url} did not answer ({}); the change may or may not \
                                     have been applied",
                                    f.message
                                ),
                            ),
                            maybe_delivered: true,
                            relay_refused: false,
                        });
                    }
                    // The relay was handed the signed operation: whatever
                    // it says, it may have delivered it (what that means
                    // for the outcome is [`delivery`]'s to decide).
                    refused_by_relay = true;
                    match f.reason {
                        // A stale relay says more than an empty one.
                        ReasonCode::NoAgentOnline if last.reason != ReasonCode::RevocationStale => {
                            last = f;
                        }
                        ReasonCode::NoAgentOnline => {}
                        ReasonCode::Unavailable | ReasonCode::Internal
                            if s.code() == tonic::Code::Unavailable =>
                        {
                            last = Failure::new(
                                ReasonCode::NoAgentOnline,
                                format!(
                                    "relay {url} is unreachable and no other relay holds an agent of domain {}",
                                    op.domain
                                ),
                            );
                        }
                        _ => {
                            return Err(Missed {
                                failure: f,
                                maybe_delivered: false,
                                relay_refused: refused_by_relay,
                            });
                        }
                    }
                }
            }
        }
        Err(Missed {
            failure: last,
            maybe_delivered: false,
            relay_refused: refused_by_relay,
        })
    }

    /// Probes every agent of `domain` (or of the tenant when empty) on every relay.
    pub async fn probe(&self, tenant: &str, domain: &str, timeout: Duration) -> Vec<AgentHealth> {
        let Ok(links) = self.links(tenant) else {
            return Vec::new();
        };
        let calls = links.relays.iter().map(|link| {
            let mut client = link.client.clone();
            let req = ProbeHealthRequest {
                tenant: tenant.to_owned(),
                domain: domain.to_owned(),
                timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            };
            async move {
                client
                    .probe_health(req)
                    .await
                    .map(|r| r.into_inner().agents)
            }
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .flatten()
            .collect()
    }
}
