//! The control-plane-facing `RelayDispatch` service: dispatch with
//! deadline and failover, health fan-out, presence reports (which end when
//! the relay shuts down) and the tenant's revoked agents and superseded
//! agent certificates, versioned: an
//! older list is refused, and an operation whose dispatch asks for a newer
//! revocation version than the relay holds is not routed
//! (`REVOCATION_STALE`). Only the tenant's control plane certificate may
//! call it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};
use writeback_core::{ReasonCode, status};
use writeback_identity::{PeerInfo, SpiffeId};
use writeback_proto::v1::relay_dispatch_server::RelayDispatch;
use writeback_proto::v1::{
    AgentHealth, DispatchRequest, DispatchResponse, PresenceEvent, PresenceReport,
    ProbeHealthRequest, ProbeHealthResponse, SetRevokedAgentsRequest, SetRevokedAgentsResponse,
    WatchPresenceRequest,
};

use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt as _;
use writeback_core::trace::{self, Tracing};
use writeback_proto::v1::OperationRequest;

use crate::config::RelayOptions;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Longest an operation may wait in the relay, whatever its expiry says.
const MAX_OPERATION_WAIT: Duration = Duration::from_secs(120);
/// Longest a health probe waits.
const MAX_PROBE_WAIT: Duration = Duration::from_secs(30);

/// The `RelayDispatch` implementation.
pub struct DispatchService {
    options: Arc<RelayOptions>,
    registry: Registry,
    metrics: Metrics,
    tracing: Tracing,
}

impl DispatchService {
    /// A service over `registry`.
    pub fn new(
        options: Arc<RelayOptions>,
        registry: Registry,
        metrics: Metrics,
        tracing: Tracing,
    ) -> DispatchService {
        DispatchService {
            options,
            registry,
            metrics,
            tracing,
        }
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.identity.as_ref())
        {
            Some(SpiffeId::ControlPlane { tenant }) if *tenant == self.options.tenant => Ok(()),
            _ => Err(status(
                ReasonCode::PermissionDenied,
                "only the tenant's control plane may dispatch through this relay",
            )),
        }
    }

    fn check_tenant(&self, tenant: &str) -> Result<(), Status> {
        if tenant == self.options.tenant {
            Ok(())
        } else {
            Err(status(
                ReasonCode::PermissionDenied,
                "this relay does not serve that tenant",
            ))
        }
    }
}

type PresenceStream = Pin<Box<dyn Stream<Item = Result<PresenceReport, Status>> + Send>>;

#[tonic::async_trait]
impl RelayDispatch for DispatchService {
    #[tracing::instrument(skip_all, fields(operation_id, tenant, domain, agent_id))]
    async fn dispatch(
        &self,
        req: Request<DispatchRequest>,
    ) -> Result<Response<DispatchResponse>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        let min_revocation_version = req.min_revocation_version;
        let req_agent = req.agent_id;
        let op = req
            .operation
            .ok_or_else(|| status(ReasonCode::InvalidArgument, "dispatch without an operation"))?;
        let span = tracing::Span::current();
        span.record("operation_id", tracing::field::display(&op.operation_id));
        span.record("tenant", tracing::field::display(&op.tenant));
        span.record("domain", tracing::field::display(&op.domain));
        self.check_tenant(&op.tenant)?;
        let held = self.registry.revocation_version(&op.tenant);
        if held < min_revocation_version {
            tracing::warn!(
                held,
                wanted = min_revocation_version,
                "operation refused: this relay's list of revoked agents is stale"
            );
            return Err(status(
                ReasonCode::RevocationStale,
                format!(
                    "this relay holds revocation version {held}, older than the control plane's \
                     {min_revocation_version}; the operation was not routed"
                ),
            ));
        }
        if op.operation_id.is_empty() || op.domain.is_empty() {
            return Err(status(
                ReasonCode::InvalidArgument,
                "an operation needs an id and a domain",
            ));
        }
        let expires = op
            .expires_at
            .as_ref()
            .ok_or_else(|| status(ReasonCode::InvalidArgument, "an operation needs an expiry"))?;
        let expires_ns = i128::from(expires.seconds) * 1_000_000_000 + i128::from(expires.nanos);
        let left_ns = expires_ns - time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        if left_ns <= 0 {
            return Err(status(
                ReasonCode::OperationExpired,
                "the operation expired before the relay could route it; nothing was applied",
            ));
        }
        let wait = Duration::from_nanos(u64::try_from(left_ns).unwrap_or(u64::MAX))
            .min(MAX_OPERATION_WAIT);
        let id = op.operation_id.clone();
        let started = std::time::Instant::now();
        // The relay's span continues the control plane's trace, and the agent
        // continues the relay's.
        let cx = self.tracing.start(
            "writeback.relay.route",
            trace::SpanKind::Server,
            &trace::from_traceparent(&op.traceparent),
            vec![
                KeyValue::new("writeback.operation_id", id.clone()),
                KeyValue::new("writeback.domain", op.domain.clone()),
                KeyValue::new("writeback.relay_id", self.options.relay_id.clone()),
            ],
        );
        let op = OperationRequest {
            traceparent: trace::traceparent(&cx),
            ..op
        };
        let pin = (!req_agent.is_empty()).then_some(req_agent.as_str());
        let routed = self.registry.dispatch(op, wait, pin).await;
        match &routed {
            Ok(r) => {
                cx.span()
                    .set_attribute(KeyValue::new("writeback.agent_id", r.agent_id.clone()));
                let reason = r.outcome.as_ref().map_or("", |o| o.reason_code.as_str());
                trace::end(&cx, reason);
            }
            Err(f) => trace::end(&cx, f.reason.as_str()),
        }
        self.metrics.dispatched(
            match &routed {
                Ok(_) => "OK",
                Err(f) => f.reason.as_str(),
            },
            started.elapsed(),
        );
        match routed {
            Ok(result) => {
                tracing::debug!(agent_id = %result.agent_id, "operation answered");
                Ok(Response::new(DispatchResponse {
                    result: Some(result),
                    relay_id: self.options.relay_id.clone(),
                    relay_duration_ms: u64::try_from(started.elapsed().as_millis())
                        .unwrap_or(u64::MAX),
                }))
            }
            Err(f) => {
                tracing::info!(reason = %f.reason, "operation not routed");
                Err(f.with_operation(id).into())
            }
        }
    }

    async fn probe_health(
        &self,
        req: Request<ProbeHealthRequest>,
    ) -> Result<Response<ProbeHealthResponse>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        self.check_tenant(&req.tenant)?;
        let agents = if req.domain.is_empty() {
            self.registry.tenant_agents(&req.tenant)
        } else {
            self.registry.agents(&req.tenant, &req.domain)
        };
        let wait = Duration::from_millis(u64::from(req.timeout_ms.max(1))).min(MAX_PROBE_WAIT);
        let answers = self.registry.probe(agents, wait).await;
        Ok(Response::new(ProbeHealthResponse {
            agents: answers
                .into_iter()
                .map(|(identity, report)| AgentHealth {
                    identity: Some(identity),
                    reason_code: if report.is_some() {
                        String::new()
                    } else {
                        ReasonCode::Timeout.as_str().to_owned()
                    },
                    report,
                })
                .collect(),
        }))
    }

    async fn set_revoked_agents(
        &self,
        req: Request<SetRevokedAgentsRequest>,
    ) -> Result<Response<SetRevokedAgentsResponse>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        self.check_tenant(&req.tenant)?;
        let count = req.agent_ids.len();
        let superseded = req.superseded_certificates.len();
        let closed = self
            .registry
            .set_revoked(
                &req.tenant,
                req.version,
                req.agent_ids.into_iter().collect(),
                req.superseded_certificates.into_iter().collect(),
            )
            .map_err(|held| {
                tracing::warn!(tenant = %req.tenant, held, offered = req.version,
                    "stale list of revoked agents refused");
                status(
                    ReasonCode::RevocationStale,
                    format!(
                        "this relay holds revocation version {held}, newer than {}; the older \
                         list was refused",
                        req.version
                    ),
                )
            })?;
        tracing::info!(tenant = %req.tenant, version = req.version, revoked = count, superseded,
            closed, "revoked agents and superseded certificates updated");
        Ok(Response::new(SetRevokedAgentsResponse {
            tunnels_closed: u32::try_from(closed).unwrap_or(u32::MAX),
            version: self.registry.revocation_version(&req.tenant),
        }))
    }

    type WatchPresenceStream = PresenceStream;

    async fn watch_presence(
        &self,
        req: Request<WatchPresenceRequest>,
    ) -> Result<Response<PresenceStream>, Status> {
        self.authorize(&req)?;
        let tenant = req.into_inner().tenant;
        self.check_tenant(&tenant)?;
        // Subscribe before the snapshot so nothing falls between them.
        let mut rx = self.registry.subscribe();
        let snapshot: Vec<PresenceReport> = self
            .registry
            .tenant_agents(&tenant)
            .iter()
            .map(|c| self.registry.report(c, PresenceEvent::Connected))
            .collect();
        let registry = self.registry.clone();
        let stream = async_stream(snapshot, move |tx| async move {
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    // The relay is going away: end the stream so the
                    // control plane reconnects elsewhere (and so the
                    // server's graceful shutdown is not held open).
                    () = registry.stopping() => return,
                };
                match next {
                    Ok(r) => {
                        let mine = r.identity.as_ref().is_some_and(|i| i.tenant == tenant);
                        if mine && tx.send(Ok(r)).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        // The watcher fell behind; end the stream so it
                        // resubscribes and gets a fresh snapshot.
                        let _ = tx
                            .send(Err(status(
                                ReasonCode::Overloaded,
                                format!("presence watcher lagged by {n} reports; resubscribe"),
                            )))
                            .await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream that yields `first` and then whatever `produce` sends.
fn async_stream<F, Fut>(first: Vec<PresenceReport>, produce: F) -> PresenceStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<PresenceReport, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(produce(tx));
    Box::pin(
        futures::stream::iter(first.into_iter().map(Ok))
            .chain(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
}
