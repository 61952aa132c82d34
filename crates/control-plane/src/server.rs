//! Assembles and serves the control plane: TLS for clients (its certificate,
//! naming the control plane's API, issued in memory, and again halfway
//! through its life), every
//! client-facing service, gRPC health and reflection (so `grpcurl` works),
//! the sweep that closes operations left pending by a control plane that
//! stopped (at start-up, then periodically, so a replica that died is
//! cleaned up after by the others) as unknown outcomes, the reconciler that
//! asks the agents what became of them ([`crate::reconcile`]), and, when `[notify]` is enabled, the
//! background sender of e-mail notifications. What one source address or
//! tenant may hold — connections, handshakes, calls — is bounded as
//! [`crate::limits`] says. On shutdown the security trail's recorder writes
//! what its rate limit held back (for at most 5 s).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use writeback_identity::{SpiffeId, tls, transport};
use writeback_proto::v1::{
    agent_service_server::AgentServiceServer, audit_service_server::AuditServiceServer,
    directory_service_server::DirectoryServiceServer, domain_service_server::DomainServiceServer,
    enrollment_service_server::EnrollmentServiceServer,
    identity_provider_service_server::IdentityProviderServiceServer,
    password_quality_service_server::PasswordQualityServiceServer,
    password_service_server::PasswordServiceServer, settings_service_server::SettingsServiceServer,
    token_service_server::TokenServiceServer,
};

use crate::api::Api;
use crate::{ControlPlane, ControlPlaneError, notify};

/// Largest request accepted, bytes.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// How long after its deadline a pending operation is closed as `TIMEOUT`:
/// longer than the dispatcher waits past a deadline, so an operation a live
/// replica is still finishing is left to it.
const SWEEP_GRACE: Duration = Duration::from_secs(10);

/// How often unknown outcomes due for a question are looked at.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);

/// How often the sweep and the database health check run.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

/// The services this server serves, by their gRPC names: what health
/// reports on and reflection advertises (the relay's and the tunnel's
/// services share the proto package but are not served here).
const SERVICES: [&str; 10] = [
    <SettingsServiceServer<Api> as NamedService>::NAME,
    <DomainServiceServer<Api> as NamedService>::NAME,
    <AgentServiceServer<Api> as NamedService>::NAME,
    <EnrollmentServiceServer<Api> as NamedService>::NAME,
    <PasswordServiceServer<Api> as NamedService>::NAME,
    <AuditServiceServer<Api> as NamedService>::NAME,
    <TokenServiceServer<Api> as NamedService>::NAME,
    <IdentityProviderServiceServer<Api> as NamedService>::NAME,
    <PasswordQualityServiceServer<Api> as NamedService>::NAME,
    <DirectoryServiceServer<Api> as NamedService>::NAME,
];

/// A reflection service advertising [`SERVICES`] and gRPC health, with
/// every file they need (a client asks for imports by file name).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(writeback_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    for service in SERVICES {
        builder = builder.with_service_name(service);
    }
    builder
}

impl ControlPlane {
    /// Closes the operations whose deadline passed more than
    /// `SWEEP_GRACE` (10 s) ago as `TIMEOUT` with the "outcome unknown" message;
    /// returns how many.
    pub async fn sweep_pending(&self) -> Result<u64, ControlPlaneError> {
        let now = self.store.now_ms();
        let grace = i64::try_from(SWEEP_GRACE.as_millis()).unwrap_or(i64::MAX);
        Ok(self
            .store
            .close_pending_due_by(now.saturating_sub(grace), now)
            .await?)
    }

    /// Serves the client-facing API on `listener` until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ControlPlaneError> {
        let closed = self.sweep_pending().await?;
        if closed > 0 {
            tracing::warn!(
                count = closed,
                "closed operations left pending by a previous run as TIMEOUT (outcome unknown)"
            );
        }
        // Issued in memory and again halfway through its life, so a control
        // plane that runs for years never presents an expired one. It names
        // the control plane's API (`spiffe://writeback/control-plane/api`):
        // agents enrolling or renewing refuse any other server, a relay
        // given the same host names included.
        let (ca, dns, ips) = (
            self.ca.clone(),
            self.config.tls_dns_names.clone(),
            self.config.tls_ip_addresses.clone(),
        );
        let api_cert = tls::ReissuingCert::new(
            Arc::new(move || ca.issue_control_plane_api(&dns, &ips)),
            half_a_leaf_life(),
        )?;
        // Callers authenticate with bearer tokens; an agent renewing its
        // certificate presents that certificate instead (any other
        // identity fails the handshake).
        let agents_only: tls::Policy = Arc::new(|id| matches!(id, SpiffeId::Agent { .. }));
        let server_tls = tls::server_config_optional_client(
            api_cert,
            tls::roots_from_pem(self.ca.cert_pem())?,
            agents_only,
        )?;
        let local = listener.local_addr().ok();
        let incoming = transport::tls_incoming_with(
            listener,
            server_tls,
            crate::limits::handshake_limits(&self.config.limits),
        );

        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, ServingStatus::Serving).await;
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| ControlPlaneError::Config(format!("reflection: {e}")))?;
        // grpcurl and older tools still ask v1alpha.
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| ControlPlaneError::Config(format!("reflection: {e}")))?;

        let sender = if self.config.notify.enabled {
            Some(
                notify::Sender::new(self.store.clone(), self.config.notify.clone())
                    .map_err(|e| ControlPlaneError::Config(format!("notify: {e}")))?,
            )
        } else {
            None
        };
        let housekeeping = tokio::spawn(housekeeping(self.clone(), health));
        let reconciler = tokio::spawn(reconciling(self.clone()));
        let notifications = sender.map(|s| tokio::spawn(s.run()));
        // The metrics listener stops when the API does.
        let _metrics = match self.config.metrics_listen {
            Some(addr) => Some(
                writeback_core::metrics::spawn_guarded(addr, self.metrics.registry.clone())
                    .await
                    .map_err(|e| {
                        ControlPlaneError::Config(format!("metrics_listen {addr}: {e}"))
                    })?,
            ),
            None => None,
        };

        let api = Api::new(self.clone());
        macro_rules! svc {
            ($server:ident) => {
                $server::new(api.clone())
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            };
        }
        tracing::info!(addr = ?local, database = self.store.backend(), "control plane listening");
        // Bounds on what one client can hold: calls at once per connection,
        // the time any call may run and calls per source (connections and
        // handshakes are bounded in `tls_incoming_with`, calls per tenant
        // as each call is authenticated; see `crate::limits`).
        let served = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(self.config.max_requests_per_connection)
            .timeout(Duration::from_secs(self.config.request_timeout_seconds))
            .layer(api.limits().per_source_layer())
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(svc!(SettingsServiceServer))
            .add_service(svc!(DomainServiceServer))
            .add_service(svc!(AgentServiceServer))
            .add_service(svc!(EnrollmentServiceServer))
            .add_service(svc!(PasswordServiceServer))
            .add_service(svc!(AuditServiceServer))
            .add_service(svc!(TokenServiceServer))
            .add_service(svc!(IdentityProviderServiceServer))
            .add_service(svc!(PasswordQualityServiceServer))
            .add_service(svc!(DirectoryServiceServer))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        housekeeping.abort();
        reconciler.abort();
        if let Some(n) = notifications {
            n.abort();
        }
        // What the security trail held back in this window is summarised
        // before the process goes (bounded: a stuck database does not hold
        // the shutdown).
        let _ = tokio::time::timeout(Duration::from_secs(5), self.security.flush(true)).await;
        served?;
        Ok(())
    }
}

/// When an in-memory certificate is issued again: halfway through its life.
pub(crate) fn half_a_leaf_life() -> Duration {
    Duration::try_from(writeback_identity::ca::LEAF_VALIDITY / 2)
        .unwrap_or(Duration::from_secs(86_400))
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    // "" is the server as a whole.
    for service in std::iter::once("").chain(SERVICES) {
        health.set_service_status(service, status).await;
    }
}

/// Every [`RECONCILE_INTERVAL`]: asks the agents about operations whose
/// outcome is unknown (see [`crate::reconcile`]).
async fn reconciling(cp: Arc<ControlPlane>) {
    let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = crate::reconcile::reconcile_due(&cp).await {
            tracing::warn!(error = %e, "cannot reconcile unknown outcomes");
        }
    }
}

/// Every [`HOUSEKEEPING_INTERVAL`]: reports NOT_SERVING while the database
/// does not answer, and closes operations left pending past their deadline.
async fn housekeeping(cp: Arc<ControlPlane>, health: HealthReporter) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut serving = true;
    loop {
        tick.tick().await;
        let ok = match cp.store.ping().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "the database does not answer");
                false
            }
        };
        if ok != serving {
            serving = ok;
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_health(&health, status).await;
        }
        if ok && let Err(e) = cp.sweep_pending().await {
            tracing::warn!(error = %e, "cannot close expired pending operations");
        }
    }
}
