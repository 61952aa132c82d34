//! `writeback-agent enroll`: generates the TLS key and the envelope key pair
//! locally, sends a CSR and the envelope public key with the one-time token,
//! and stores the certificate, CA, relay addresses and the control plane's
//! operation-signing public keys (pinned: see the executor) it gets back. The
//! token pins the control plane CA's fingerprint, so even this first
//! contact is authenticated; no private key ever leaves the machine.

use std::path::Path;

use writeback_core::failure_of;
use writeback_identity::{EnrollmentToken, fingerprint_of_pem, generate_csr, tls, transport};
use writeback_proto::v1::EnrollRequest;
use writeback_proto::v1::enrollment_service_client::EnrollmentServiceClient;
use zeroize::Zeroizing;

use crate::AgentError;
use crate::state::{AgentState, Enrollment};

/// Enrolls against `control_plane_url` with `token`, writing `state_dir`.
/// Refuses to overwrite an existing enrollment.
pub async fn enroll(
    control_plane_url: &str,
    token: &str,
    state_dir: &Path,
) -> Result<Enrollment, AgentError> {
    if AgentState::exists(state_dir) {
        return Err(AgentError::State(format!(
            "{} already holds an enrollment; remove it first to enroll again",
            state_dir.display()
        )));
    }
    let token = EnrollmentToken::parse(token).map_err(|_| {
        AgentError::Enroll(writeback_core::Failure::new(
            writeback_core::ReasonCode::EnrollmentTokenInvalid,
            "the enrollment token is malformed; copy it again from `writebackctl agent enroll-token`",
        ))
    })?;
    let (csr_pem, key_pem) = generate_csr()?;
    let key_pem = Zeroizing::new(key_pem);
    let envelope_key = writeback_envelope::KeyPair::generate();
    let tls = tls::pinned_client_config(&token.ca_fingerprint)?;
    transport::check_handshake(control_plane_url, tls.clone())
        .await
        .map_err(|e| {
            let text = e.to_string();
            let (reason, message) = if text.contains("fingerprint") {
                (
                    writeback_core::ReasonCode::CaMismatch,
                    "the control plane's certificate is not from the CA the token pins; check the URL and the token".to_owned(),
                )
            } else {
                (
                    writeback_core::ReasonCode::Unavailable,
                    format!("cannot reach the control plane at {control_plane_url}: {text}"),
                )
            };
            AgentError::Enroll(writeback_core::Failure::new(reason, message))
        })?;
    let channel = transport::channel(control_plane_url, tls)?;
    let response = EnrollmentServiceClient::new(channel)
        .enroll(EnrollRequest {
            token: token.expose(),
            csr_pem,
            envelope_public_key: envelope_key.public_bytes(),
            hostname: hostname(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .await
        .map_err(|s| AgentError::Enroll(failure_of(&s)))?
        .into_inner();
    // The CA we got must be the one the token pinned.
    if fingerprint_of_pem(&response.ca_pem)? != token.ca_fingerprint {
        return Err(AgentError::Enroll(writeback_core::Failure::new(
            writeback_core::ReasonCode::CaMismatch,
            "the control plane returned a CA other than the one the token pins",
        )));
    }
    // Pin the keys the control plane signs operations with; without one
    // this agent would refuse every operation, so refuse to enroll.
    let mut operation_signing_keys = Vec::new();
    for k in &response.operation_signing_keys {
        writeback_envelope::signing::TrustedKey::new(k).map_err(|_| {
            AgentError::Enroll(writeback_core::Failure::new(
                writeback_core::ReasonCode::Internal,
                "the control plane returned a malformed operation-signing key",
            ))
        })?;
        operation_signing_keys.push(hex::encode(k));
    }
    if operation_signing_keys.is_empty() {
        return Err(AgentError::Enroll(writeback_core::Failure::new(
            writeback_core::ReasonCode::ProtocolMismatch,
            "the control plane sent no operation-signing key; upgrade it before enrolling this agent",
        )));
    }
    let enrollment = Enrollment {
        tenant: response.tenant,
        domain: response.domain,
        agent_id: response.agent_id,
        relay_urls: response.relay_urls,
        operation_signing_keys,
    };
    AgentState {
        enrollment: enrollment.clone(),
        cert_pem: response.certificate_pem,
        key_pem,
        ca_pem: response.ca_pem,
        envelope_key,
    }
    .save(state_dir)?;
    tracing::info!(tenant = %enrollment.tenant, domain = %enrollment.domain,
        agent_id = %enrollment.agent_id, "agent enrolled");
    Ok(enrollment)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}
