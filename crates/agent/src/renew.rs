//! Certificate renewal: an enrolled agent gets a new certificate for a fresh
//! TLS key before its current one expires, with no operator action. It calls
//! the control plane's `RenewCertificate` over mutual TLS with its *current*
//! certificate (the control plane takes the identity from that certificate,
//! refuses a revoked agent with `AGENT_REVOKED`, and issues for the same
//! identity), checks what comes back (the same CA, the same identity), pins
//! the operation-signing keys the answer lists, registers its result-signing
//! key (sent with every renewal; an agent enrolled before results were
//! signed is registered this way), and installs the pair in the
//! state directory ([`AgentState::install_certificate`]: the key 0600, never
//! a half-replaced pair). The running agent checks at start and every
//! [`CHECK_INTERVAL`] and renews when less than [`RENEW_FRACTION`] of the
//! lifetime is left ([`crate::runtime`]); the tunnel then reconnects with the
//! new certificate. `writeback-agent renew` does the same by hand. An agent
//! whose certificate expired cannot renew (the handshake fails): enroll it
//! again.

use std::path::Path;
use std::time::Duration;

use writeback_core::{Failure, ReasonCode, failure_of};
use writeback_identity::{Validity, fingerprint_of_pem, generate_csr, tls, transport};
use writeback_proto::v1::RenewCertificateRequest;
use writeback_proto::v1::enrollment_service_client::EnrollmentServiceClient;
use zeroize::Zeroizing;

use crate::AgentError;
use crate::state::AgentState;

/// Renew when less than this share of the certificate's lifetime is left.
pub const RENEW_FRACTION: f64 = 1.0 / 3.0;
/// How often the running agent looks at its certificate.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Below this much time left, every check logs a warning.
pub const WARN_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a renewal installed.
#[derive(Debug, Clone)]
pub struct Renewed {
    /// The new certificate's validity.
    pub validity: Validity,
    /// The operation-signing keys now pinned (hex).
    pub operation_signing_keys: Vec<String>,
    /// The control plane holds this agent's result-signing key.
    pub result_signing_key_registered: bool,
}

/// The validity of the certificate in `state_dir`.
pub fn certificate_validity(state_dir: &Path) -> Result<Validity, AgentError> {
    let pem = std::fs::read_to_string(state_dir.join("agent.pem")).map_err(|e| {
        AgentError::State(format!(
            "cannot read {} ({e})",
            state_dir.join("agent.pem").display()
        ))
    })?;
    Ok(Validity::of_pem(&pem)?)
}

fn refused(reason: ReasonCode, message: impl Into<String>) -> AgentError {
    AgentError::Renew(Failure::new(reason, message))
}

/// Renews the certificate of the agent enrolled in `state_dir` at
/// `control_plane_url` (default: the URL it enrolled with, kept in
/// `state.toml`).
pub async fn renew(
    state_dir: &Path,
    control_plane_url: Option<&str>,
) -> Result<Renewed, AgentError> {
    let state = AgentState::load(state_dir)?;
    let mut enrollment = state.enrollment.clone();
    let url = match control_plane_url {
        Some(u) => u.to_owned(),
        None if !enrollment.control_plane_url.is_empty() => enrollment.control_plane_url.clone(),
        None => {
            return Err(AgentError::Config(
                "state.toml names no control plane (the agent enrolled before renewal \
                 existed): give it once with `writeback-agent renew --control-plane URL`"
                    .into(),
            ));
        }
    };
    let (csr_pem, key_pem) = generate_csr()?;
    let key_pem = Zeroizing::new(key_pem);
    // The control plane's API certificate is from the tenant CA; the agent
    // presents its current certificate, which is what authenticates it.
    let client_tls = tls::client_config(
        tls::roots_from_pem(&state.ca_pem)?,
        Some((&state.cert_pem, state.key_pem.as_str())),
    )?;
    let channel = transport::channel(&url, client_tls)?;
    let response = EnrollmentServiceClient::new(channel)
        .renew_certificate(RenewCertificateRequest {
            csr_pem,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            result_signing_public_key: state.result_key.public_key(),
        })
        .await
        .map_err(|s| AgentError::Renew(failure_of(&s)))?
        .into_inner();
    if fingerprint_of_pem(&response.ca_pem)? != fingerprint_of_pem(&state.ca_pem)? {
        return Err(refused(
            ReasonCode::CaMismatch,
            "the control plane answered with another CA than the one this agent trusts",
        ));
    }
    let issued = tls::certs_from_pem(&response.certificate_pem)?;
    let ours = tls::certs_from_pem(&state.cert_pem)?;
    let (new_id, old_id) = (
        issued.first().and_then(tls::spiffe_id_of),
        ours.first().and_then(tls::spiffe_id_of),
    );
    if new_id.is_none() || new_id != old_id {
        return Err(refused(
            ReasonCode::Internal,
            "the control plane issued a certificate for another identity; the current one is kept",
        ));
    }
    let validity = Validity::of_pem(&response.certificate_pem)?;
    if !response.operation_signing_keys.is_empty() {
        let mut keys = Vec::new();
        for k in &response.operation_signing_keys {
            writeback_envelope::signing::TrustedKey::new(k).map_err(|_| {
                refused(
                    ReasonCode::Internal,
                    "the control plane returned a malformed operation-signing key",
                )
            })?;
            keys.push(hex::encode(k));
        }
        if keys != enrollment.operation_signing_keys {
            tracing::info!(keys = ?keys, "the control plane's operation-signing keys changed; pinned");
        }
        enrollment.operation_signing_keys = keys;
    }
    enrollment.control_plane_url = url;
    if !response.result_signing_key_registered {
        tracing::warn!(
            result_signing_key_id = state.result_key.key_id(),
            "the control plane did not register this agent's result-signing key (it predates \
             result signatures, or holds another key for this agent: enroll it again); it \
             refuses this agent's results, and the agent tries again at its next check"
        );
    }
    enrollment.result_signing_key_registered = response.result_signing_key_registered;
    AgentState::install_certificate(state_dir, &response.certificate_pem, &key_pem, &enrollment)?;
    tracing::info!(tenant = %enrollment.tenant, domain = %enrollment.domain,
        agent_id = %enrollment.agent_id, not_after = %validity.not_after,
        "agent certificate renewed");
    Ok(Renewed {
        validity,
        operation_signing_keys: enrollment.operation_signing_keys,
        result_signing_key_registered: enrollment.result_signing_key_registered,
    })
}
