//! Sends operations to relays. For each tenant the control plane holds an
//! mTLS channel to every configured relay (with a client certificate naming
//! the tenant's control plane, issued in memory from the CA) and watches
//! each relay's presence stream, so it knows which relay holds agents of
//! which domain. An operation goes to a relay that holds an agent of its
//! domain; when presence knows none (just after a start), every relay is
//! tried in turn until one does not answer NO_AGENT_ONLINE.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tonic::transport::Channel;
use writeback_core::{Failure, ReasonCode, failure_of};
use writeback_identity::{Ca, SpiffeId, tls, transport};
use writeback_proto::v1::relay_dispatch_client::RelayDispatchClient;
use writeback_proto::v1::{
    AgentHealth, DispatchRequest, DispatchResponse, OperationRequest, PresenceEvent,
    ProbeHealthRequest, WatchPresenceRequest,
};

/// (tenant, domain) → agent id → relay url.
type PresenceMap = HashMap<(String, String), HashMap<String, String>>;

struct TenantLinks {
    relays: Vec<(String, RelayDispatchClient<Channel>)>,
}

struct Inner {
    ca: Arc<Ca>,
    relay_urls: Vec<String>,
    tenants: Mutex<HashMap<String, Arc<TenantLinks>>>,
    presence: Mutex<PresenceMap>,
    next: std::sync::atomic::AtomicUsize,
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
    /// A dispatcher over `relay_urls`, issuing client certificates from `ca`.
    pub fn new(ca: Arc<Ca>, relay_urls: Vec<String>) -> Dispatcher {
        Dispatcher {
            inner: Arc::new(Inner {
                ca,
                relay_urls,
                tenants: Mutex::new(HashMap::new()),
                presence: Mutex::new(HashMap::new()),
                next: std::sync::atomic::AtomicUsize::new(0),
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
        let (chain, key) = self
            .inner
            .ca
            .issue_service(&id, &[], &[])
            .map_err(internal)?;
        let config = tls::client_config(
            tls::roots_from_pem(self.inner.ca.cert_pem()).map_err(internal)?,
            Some((&chain, &key)),
        )
        .map_err(internal)?;
        let mut relays = Vec::new();
        for url in &self.inner.relay_urls {
            let channel = transport::channel(url, config.clone()).map_err(internal)?;
            relays.push((url.clone(), RelayDispatchClient::new(channel)));
        }
        let links = Arc::new(TenantLinks { relays });
        let mut tenants = lock(&self.inner.tenants);
        if let Some(l) = tenants.get(tenant) {
            return Ok(l.clone());
        }
        tenants.insert(tenant.to_owned(), links.clone());
        for (url, client) in &links.relays {
            tokio::spawn(
                self.clone()
                    .watch(tenant.to_owned(), url.clone(), client.clone()),
            );
        }
        Ok(links)
    }

    /// Follows one relay's presence stream forever, reconnecting with backoff.
    async fn watch(self, tenant: String, url: String, mut client: RelayDispatchClient<Channel>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match client
                .watch_presence(WatchPresenceRequest {
                    tenant: tenant.clone(),
                })
                .await
            {
                Ok(resp) => {
                    backoff = Duration::from_millis(200);
                    let mut stream = resp.into_inner();
                    while let Ok(Some(report)) = stream.message().await {
                        let Some(id) = report.identity else { continue };
                        let key = (id.tenant.clone(), id.domain.clone());
                        let mut presence = lock(&self.inner.presence);
                        let agents = presence.entry(key).or_default();
                        if report.event == PresenceEvent::Connected as i32 {
                            agents.insert(id.agent_id, url.clone());
                        } else if agents.get(&id.agent_id) == Some(&url) {
                            agents.remove(&id.agent_id);
                        }
                    }
                }
                Err(s) => {
                    tracing::debug!(relay = %url, error = %s.message(), "presence watch failed");
                }
            }
            // The stream ended: forget what this relay told us.
            for agents in lock(&self.inner.presence).values_mut() {
                agents.retain(|_, u| *u != url);
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

    /// Dispatches `op` and waits for its result, within `timeout`.
    pub async fn dispatch(
        &self,
        op: OperationRequest,
        timeout: Duration,
    ) -> Result<DispatchResponse, Failure> {
        let links = self.links(&op.tenant)?;
        if links.relays.is_empty() {
            return Err(Failure::new(
                ReasonCode::NoAgentOnline,
                "the control plane has no relay configured",
            ));
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
        let mut order: Vec<&(String, RelayDispatchClient<Channel>)> =
            (0..n).map(|i| &links.relays[(start + i) % n]).collect();
        // Relays known to hold an agent of the domain first.
        order.sort_by_key(|(url, _)| !holding.contains(url));
        let mut last = Failure::new(
            ReasonCode::NoAgentOnline,
            format!("no agent of domain {} is connected to any relay", op.domain),
        );
        for (url, client) in order {
            let mut request = tonic::Request::new(DispatchRequest {
                operation: Some(op.clone()),
            });
            request.set_timeout(timeout + Duration::from_secs(2));
            match client.clone().dispatch(request).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => {
                    let f = failure_of(&s);
                    tracing::info!(relay = %url, reason = %f.reason, "relay did not route the operation");
                    match f.reason {
                        ReasonCode::NoAgentOnline => last = f,
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
                        _ => return Err(f),
                    }
                }
            }
        }
        Err(last)
    }

    /// Probes every agent of `domain` (or of the tenant when empty) on every relay.
    pub async fn probe(&self, tenant: &str, domain: &str, timeout: Duration) -> Vec<AgentHealth> {
        let Ok(links) = self.links(tenant) else {
            return Vec::new();
        };
        let calls = links.relays.iter().map(|(_, client)| {
            let mut client = client.clone();
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
