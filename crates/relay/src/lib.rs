//! The writeback relay: the role the cloud's service-bus relay plays in the
//! seed. Agents dial *out* to it over mutual TLS and keep one bidirectional
//! tunnel each ([`tunnel`]); the control plane, also over mutual TLS, asks
//! it to dispatch operations, probe agent health, report presence and keep
//! the tenant's list of revoked agents ([`dispatch`]). The [`registry`]
//! holds the live tunnels keyed by the identity in each agent's certificate
//! and routes every operation to a live agent of the target domain (least
//! outstanding requests, then round robin). It sends an operation to a
//! second agent only when the first agent's tunnel is gone, never while
//! that agent is alive and within the deadline, so an operation is applied
//! once. It also enforces the per-agent queue and tunnel limits and, on
//! shutdown, tells agents GoAway and drains operations in flight. The relay
//! only ever handles sealed envelopes and operations the control plane
//! signed (agents refuse anything it alters), stamps each result with the
//! agent id of the tunnel's certificate, and keeps a versioned list of
//! revoked agents that never goes backwards. [`metrics`] counts what it routes and
//! serves it on `metrics_listen` when set. Its certificate can be replaced
//! while it serves ([`Relay::reload_tls`]; the binary reloads its files on
//! SIGHUP and when they change), and it warns when it expires within 30 days.

#![forbid(unsafe_code)]

pub mod config;
pub mod dispatch;
pub mod metrics;
pub mod registry;
pub mod tunnel;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use writeback_core::trace::Tracing;

use tokio::net::TcpListener;
use writeback_identity::{SpiffeId, tls, transport};
use writeback_proto::v1::agent_tunnel_server::AgentTunnelServer;
use writeback_proto::v1::relay_dispatch_server::RelayDispatchServer;

pub use config::{RelayConfig, RelayOptions};
pub use registry::{Limits, Registry};

/// Below this much time left, the relay's certificate is logged as a
/// warning.
pub const CERTIFICATE_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// Errors that stop the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// TLS material could not be loaded.
    #[error("relay tls setup failed: {0}")]
    Identity(#[from] writeback_identity::Error),
    /// The gRPC server failed.
    #[error("relay server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Config could not be read.
    #[error("relay config: {0}")]
    Config(String),
}

/// A relay: cheap to clone; every clone shares the same registry.
#[derive(Clone)]
pub struct Relay {
    options: Arc<RelayOptions>,
    /// The certificate being served, once `serve` runs; replaced by
    /// [`Relay::reload_tls`].
    cert: Arc<std::sync::Mutex<Option<Arc<tls::ReloadableCert>>>>,
    registry: Registry,
    metrics: metrics::Metrics,
    tracing: Tracing,
}

impl Relay {
    /// Builds a relay from resolved options, with default [`Limits`] apart
    /// from the options' queue depth.
    pub fn new(options: RelayOptions) -> Relay {
        let limits = Limits {
            queue_depth: options.agent_queue_depth,
            ..Limits::default()
        };
        Relay::with_limits(options, limits)
    }

    /// Builds a relay enforcing `limits` (its queue depth wins over the
    /// options').
    pub fn with_limits(options: RelayOptions, limits: Limits) -> Relay {
        let registry = Registry::with_limits(options.relay_id.clone(), limits);
        // The config was validated when the options were resolved; what can
        // still fail is the exporter outside a runtime: run untraced then.
        let tracing = Tracing::new("writeback-relay", &options.tracing).unwrap_or_else(|e| {
            tracing::error!(error = %e, "traces will not be exported");
            Tracing::disabled("writeback-relay")
        });
        Relay {
            options: Arc::new(options),
            cert: Arc::default(),
            metrics: metrics::Metrics::new(registry.clone()),
            registry,
            tracing,
        }
    }

    /// The relay's tracer (flushed by tests and at shutdown).
    pub fn tracing(&self) -> &Tracing {
        &self.tracing
    }

    /// The relay's metrics (what `metrics_listen` serves).
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// The live-tunnel registry (for status and tests).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Replaces the certificate new connections get (the files re-issued
    /// by `writeback-control-plane relay-cert`); tunnels already open keep
    /// theirs. A chain that does not parse, does not match its key or names
    /// another identity is refused and the current one kept. Returns the
    /// new certificate's validity.
    pub fn reload_tls(
        &self,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<writeback_identity::Validity, RelayError> {
        let ours = SpiffeId::Relay {
            tenant: self.options.tenant.clone(),
            relay_id: self.options.relay_id.clone(),
        };
        let named = tls::certs_from_pem(chain_pem)?
            .first()
            .and_then(tls::spiffe_id_of);
        if named.as_ref() != Some(&ours) {
            return Err(RelayError::Config(format!(
                "the new certificate does not name this relay ({ours}); kept the current one"
            )));
        }
        let guard = self.cert.lock().unwrap_or_else(|p| p.into_inner());
        let cert = guard.as_ref().ok_or_else(|| {
            RelayError::Config("the relay is not serving yet; nothing to reload".into())
        })?;
        cert.replace(chain_pem, key_pem)?;
        drop(guard);
        self.certificate_loaded(chain_pem)
    }

    /// Publishes the certificate's expiry and warns when it is near.
    fn certificate_loaded(
        &self,
        chain_pem: &str,
    ) -> Result<writeback_identity::Validity, RelayError> {
        let validity = writeback_identity::Validity::of_pem(chain_pem)?;
        self.metrics
            .certificate_expires(validity.not_after.unix_timestamp());
        let left = validity.remaining(time::OffsetDateTime::now_utc());
        if left < CERTIFICATE_WARNING {
            tracing::warn!(relay_id = %self.options.relay_id, not_after = %validity.not_after,
                "the relay's certificate expires in {} days: re-issue it with \
                 `writeback-control-plane relay-cert` and replace the files (the relay \
                 reloads them)", left.as_secs() / 86_400);
        } else {
            tracing::info!(relay_id = %self.options.relay_id, not_after = %validity.not_after,
                "relay certificate loaded");
        }
        Ok(validity)
    }

    /// Serves agents and the control plane on `listener` until `shutdown`
    /// completes; then tells every agent to reconnect elsewhere and stops.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RelayError> {
        let tenant = self.options.tenant.clone();
        let policy: tls::Policy = Arc::new(move |id: &SpiffeId| match id {
            SpiffeId::Agent { tenant: t, .. } | SpiffeId::ControlPlane { tenant: t } => {
                *t == tenant
            }
            SpiffeId::Relay { .. } | SpiffeId::ControlPlaneApi => false,
        });
        let cert = tls::ReloadableCert::new(
            &self.options.tls.chain_pem,
            self.options.tls.key_pem.expose(),
        )?;
        self.certificate_loaded(&self.options.tls.chain_pem)?;
        *self.cert.lock().unwrap_or_else(|p| p.into_inner()) = Some(cert.clone());
        let server_tls = tls::server_config_reloadable(
            cert,
            Some((tls::roots_from_pem(&self.options.tls.ca_pem)?, policy)),
        )?;
        let local = listener.local_addr().ok();
        let incoming = transport::tls_incoming(listener, server_tls);
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<AgentTunnelServer<tunnel::TunnelService>>()
            .await;
        health
            .set_serving::<RelayDispatchServer<dispatch::DispatchService>>()
            .await;
        let max = self.options.max_message_bytes;
        let tunnel = AgentTunnelServer::new(tunnel::TunnelService::new(
            self.options.clone(),
            self.registry.clone(),
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let dispatch = RelayDispatchServer::new(dispatch::DispatchService::new(
            self.options.clone(),
            self.registry.clone(),
            self.metrics.clone(),
            self.tracing.clone(),
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        tracing::info!(relay_id = %self.options.relay_id, addr = ?local, "relay listening");
        // The metrics listener stops when the relay does.
        let _metrics = match self.options.metrics_listen {
            Some(addr) => Some(
                writeback_core::metrics::spawn_guarded(addr, self.metrics.registry.clone())
                    .await
                    .map_err(|e| RelayError::Config(format!("metrics_listen {addr}: {e}")))?,
            ),
            None => None,
        };
        let registry = self.registry.clone();
        let shutdown = async move {
            shutdown.await;
            tracing::info!("relay shutting down; telling agents to reconnect");
            health
                .set_not_serving::<AgentTunnelServer<tunnel::TunnelService>>()
                .await;
            health
                .set_not_serving::<RelayDispatchServer<dispatch::DispatchService>>()
                .await;
            registry.shut_down().await;
        };
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(health_service)
            .add_service(tunnel)
            .add_service(dispatch)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        Ok(())
    }
}
