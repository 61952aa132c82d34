//! Assembles and serves the control plane: TLS for clients, every
//! client-facing service, gRPC health and reflection (so `grpcurl` works),
//! and the start-up sweep that closes operations a previous run left pending.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use writeback_identity::{tls, transport};
use writeback_proto::v1::{
    agent_service_server::AgentServiceServer, audit_service_server::AuditServiceServer,
    domain_service_server::DomainServiceServer, enrollment_service_server::EnrollmentServiceServer,
    password_service_server::PasswordServiceServer, settings_service_server::SettingsServiceServer,
};

use crate::api::Api;
use crate::auth::now_ms;
use crate::{ControlPlane, ControlPlaneError};

/// Largest request accepted, bytes.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

impl ControlPlane {
    /// Serves the client-facing API on `listener` until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ControlPlaneError> {
        let closed = self.store.close_expired_pending(now_ms()).await?;
        if closed > 0 {
            tracing::warn!(
                count = closed,
                "closed operations left pending by a previous run as TIMEOUT (outcome unknown)"
            );
        }
        let (chain, key) = self
            .ca
            .issue_server(&self.config.tls_dns_names, &self.config.tls_ip_addresses)?;
        let server_tls = tls::server_config(&chain, &key, None)?;
        let local = listener.local_addr().ok();
        let incoming = transport::tls_incoming(listener, server_tls);

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<PasswordServiceServer<Api>>().await;
        health.set_serving::<SettingsServiceServer<Api>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(writeback_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ControlPlaneError::Config(format!("reflection: {e}")))?;

        let api = Api::new(self.clone());
        macro_rules! svc {
            ($server:ident) => {
                $server::new(api.clone())
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            };
        }
        tracing::info!(addr = ?local, database = self.store.backend(), "control plane listening");
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(svc!(SettingsServiceServer))
            .add_service(svc!(DomainServiceServer))
            .add_service(svc!(AgentServiceServer))
            .add_service(svc!(EnrollmentServiceServer))
            .add_service(svc!(PasswordServiceServer))
            .add_service(svc!(AuditServiceServer))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        Ok(())
    }
}
