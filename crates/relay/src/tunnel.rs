//! The agent-facing `AgentTunnel` service. A tunnel is admitted only when
//! the client certificate names an agent of this relay's tenant (checked in
//! the handshake), the agent is not revoked, the certificate is not one a
//! renewal superseded (the control plane sends their fingerprints with the
//! revoked agents), the identity has fewer than
//! the allowed tunnels opening at once, and its Hello repeats that identity
//! and speaks our protocol version. The relay answers with a Welcome, then
//! forwards requests and probes down the stream and results and health
//! reports up; a late answer is counted, logged and dropped, and an agent
//! silent past the heartbeat limit is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use writeback_core::{ReasonCode, status};
use writeback_identity::{PeerInfo, SpiffeId};
use writeback_proto::TUNNEL_PROTOCOL_VERSION;
use writeback_proto::v1::agent_tunnel_server::AgentTunnel;
use writeback_proto::v1::{
    AgentIdentity, AgentMessage, RelayMessage, Welcome, agent_message, relay_message,
};

use crate::config::RelayOptions;
use crate::registry::{AgentConn, CloseReason, OpenGuard, Registry};

/// How long an agent has to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The `AgentTunnel` implementation.
pub struct TunnelService {
    options: Arc<RelayOptions>,
    registry: Registry,
}

impl TunnelService {
    /// A service over `registry`.
    pub fn new(options: Arc<RelayOptions>, registry: Registry) -> TunnelService {
        TunnelService { options, registry }
    }
}

/// The identity of the agent at the other end of `req`, from its certificate.
pub fn agent_identity_of<T>(req: &Request<T>) -> Result<AgentIdentity, Status> {
    match req
        .extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.identity.clone())
    {
        Some(SpiffeId::Agent {
            tenant,
            domain,
            agent_id,
        }) => Ok(AgentIdentity {
            tenant,
            domain,
            agent_id,
        }),
        _ => Err(status(
            ReasonCode::PermissionDenied,
            "only an enrolled agent's certificate may open a tunnel",
        )),
    }
}

type RelayStream = Pin<Box<dyn Stream<Item = Result<RelayMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentTunnel for TunnelService {
    type OpenStream = RelayStream;

    async fn open(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<RelayStream>, Status> {
        let identity = agent_identity_of(&req)?;
        let cert_fingerprint = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.cert_fingerprint.clone())
            .unwrap_or_default();
        let guard = self
            .registry
            .admit(&identity, &cert_fingerprint)
            .map_err(|f| {
                tracing::info!(tenant = %identity.tenant, domain = %identity.domain,
                agent_id = %identity.agent_id, reason = %f.reason, "tunnel refused");
                Status::from(f)
            })?;
        let mut inbound = req.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                body: Some(agent_message::Body::Hello(h)),
            }))) => h,
            Ok(Err(e)) => return Err(e),
            _ => {
                return Err(status(
                    ReasonCode::InvalidArgument,
                    "the first message on a tunnel must be a Hello",
                ));
            }
        };
        if hello.protocol_version != TUNNEL_PROTOCOL_VERSION {
            return Err(status(
                ReasonCode::ProtocolMismatch,
                format!(
                    "agent speaks tunnel protocol {}, this relay speaks {}; upgrade the agent",
                    hello.protocol_version, TUNNEL_PROTOCOL_VERSION
                ),
            ));
        }
        if hello.identity.as_ref() != Some(&identity) {
            return Err(status(
                ReasonCode::PermissionDenied,
                "the Hello's identity does not match the agent's certificate",
            ));
        }
        let (conn, rx) =
            self.registry
                .register(identity.clone(), hello.agent_version, cert_fingerprint)?;
        tracing::info!(tenant = %identity.tenant, domain = %identity.domain,
            agent_id = %identity.agent_id, "agent tunnel open");
        let welcome = RelayMessage {
            body: Some(relay_message::Body::Welcome(Welcome {
                protocol_version: TUNNEL_PROTOCOL_VERSION,
                relay_id: self.options.relay_id.clone(),
                heartbeat_interval_seconds: u32::try_from(
                    self.options.heartbeat_interval.as_secs().max(1),
                )
                .unwrap_or(u32::MAX),
                relay_time: Some(writeback_core::operation::now_timestamp()),
            })),
        };
        let span = tracing::info_span!("tunnel", tenant = %identity.tenant,
            domain = %identity.domain, agent_id = %identity.agent_id);
        tokio::spawn(
            read_tunnel(
                self.registry.clone(),
                conn,
                inbound,
                self.options.heartbeat_timeout,
                guard,
            )
            .instrument(span),
        );
        let out =
            futures::stream::once(async { Ok(welcome) }).chain(ReceiverStream::new(rx).map(Ok));
        Ok(Response::new(Box::pin(out)))
    }
}

/// Reads one tunnel until the agent leaves, goes silent, or the registry
/// closes it; then unregisters it so waiting operations fail over.
async fn read_tunnel(
    registry: Registry,
    conn: Arc<AgentConn>,
    mut inbound: Streaming<AgentMessage>,
    silence_limit: Duration,
    _guard: OpenGuard,
) {
    let reason = loop {
        let msg = tokio::select! {
            m = tokio::time::timeout(silence_limit, inbound.message()) => m,
            () = conn.closed() => break "closed by the relay",
        };
        match msg {
            Err(_) => {
                tracing::warn!("agent silent past the heartbeat limit; dropping its tunnel");
                break "missed heartbeats";
            }
            Ok(Ok(None)) => break "agent closed the tunnel",
            Ok(Err(e)) => {
                tracing::info!(error = %e.message(), "tunnel broke");
                break "tunnel broke";
            }
            Ok(Ok(Some(m))) => match m.body {
                Some(agent_message::Body::Result(result)) => {
                    let op = result.operation_id.clone();
                    if !conn.complete(result) {
                        registry.count_late_answer();
                        tracing::warn!(operation_id = %op, "late or unknown answer dropped");
                    }
                }
                Some(agent_message::Body::Health(report)) => {
                    conn.complete_probe(report);
                }
                Some(agent_message::Body::Heartbeat(_)) => {}
                Some(agent_message::Body::Hello(_)) | None => {
                    tracing::warn!("unexpected tunnel message ignored");
                }
            },
        }
    };
    tracing::info!(reason, "agent tunnel closed");
    registry.unregister(&conn, CloseReason::Dropped);
}
