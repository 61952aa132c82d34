//! Certificate renewal: an enrolled agent gets a new certificate for a fresh
//! TLS key before its current one expires, with no operator action. It calls
//! the control plane's `RenewCertificate` over mutual TLS with its *current*
//! certificate (the control plane takes the identity from that certificate,
//! refuses a revoked agent with `AGENT_REVOKED` and a certificate a renewal
//! superseded with `CERTIFICATE_SUPERSEDED`, and issues for the same
//! identity). The server must carry the control plane API's identity: a
//! relay's certificate from the same CA is refused in the handshake
//! (`NOT_CONTROL_PLANE`) before the agent sends anything. It checks what
//! comes back (the same CA, the same identity), pins the operation-signing
//! keys the answer lists that it already pins or that a key it pins
//! endorsed (`writeback_envelope::endorsement`; any other is refused,
//! logged with `SIGNING_KEY_UNENDORSED` and listed in
//! [`Renewed::refused_signing_keys`]), registers its result-signing
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
use writeback_envelope::endorsement::{self, Endorsement};
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
    /// Ids of operation-signing keys the answer offered that no pinned key
    /// endorsed: not pinned.
    pub refused_signing_keys: Vec<String>,
}

impl Renewed {
    /// Why keys were refused, for the operator, when some were.
    pub fn refused_keys_failure(&self) -> Option<Failure> {
        if self.refused_signing_keys.is_empty() {
            return None;
        }
        Some(Failure::new(
            ReasonCode::SigningKeyUnendorsed,
            format!(
                "the control plane offered operation-signing key(s) {} that no key this agent \
                 pins has endorsed; they were not pinned, and operations signed with them will \
                 be refused. If the key was rotated and promoted by a control plane older than \
                 key endorsements, enroll the agent again; otherwise treat it as an attempt to \
                 plant a key",
                self.refused_signing_keys.join(", ")
            ),
        ))
    }
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

/// The key a renewal asks a certificate for, kept (0600) until a
/// certificate for it is installed: if the answer is lost after the control
/// plane recorded it, the agent's current certificate is superseded, and
/// the next attempt asks again — with that certificate, which the control
/// plane still takes as the previous one — for the same key.
pub const PENDING_KEY: &str = "agent.key.pending";

/// True while a renewal's key waits for its certificate (a renewal whose
/// answer did not arrive): the running agent then tries again soon rather
/// than at the next hourly check.
pub fn has_pending_key(state_dir: &Path) -> bool {
    state_dir.join(PENDING_KEY).exists()
}

/// A CSR and its key for this renewal: the pending key of an earlier
/// attempt when there is one (and it is not already the installed key),
/// else a fresh one, written to [`PENDING_KEY`] before anything is sent.
fn pending_key(
    state_dir: &Path,
    state: &AgentState,
) -> Result<(String, Zeroizing<String>), AgentError> {
    let path = state_dir.join(PENDING_KEY);
    if let Ok(pem) = std::fs::read_to_string(&path) {
        let pem = Zeroizing::new(pem);
        if *pem != *state.key_pem
            && let Ok(csr) = writeback_identity::csr_for_key(&pem)
        {
            tracing::info!("asking again for a certificate for the key of an unanswered renewal");
            return Ok((csr, pem));
        }
    }
    let (csr, key) = generate_csr()?;
    let key = Zeroizing::new(key);
    writeback_identity::ca::write_file(&path, key.as_bytes(), true)?;
    Ok((csr, key))
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
    // The control plane's API certificate is from the tenant CA and names
    // the control plane's API (a relay's certificate, even for the same
    // host names, fails the handshake); the agent presents its current
    // certificate, which is what authenticates it.
    let client_tls = tls::control_plane_client_config(
        tls::roots_from_pem(&state.ca_pem)?,
        Some((&state.cert_pem, state.key_pem.as_str())),
    )?;
    transport::check_handshake(&url, client_tls.clone())
        .await
        .map_err(|e| {
            let text = e.to_string();
            if text.contains(tls::NOT_THE_CONTROL_PLANE) {
                refused(
                    ReasonCode::NotControlPlane,
                    crate::enroll::not_control_plane(&url),
                )
            } else {
                refused(
                    ReasonCode::Unavailable,
                    format!("cannot reach the control plane at {url}: {text}"),
                )
            }
        })?;
    let (csr_pem, key_pem) = pending_key(state_dir, &state)?;
    let channel = transport::channel(&url, client_tls)?;
    let response = EnrollmentServiceClient::new(channel)
        .renew_certificate(RenewCertificateRequest {
            csr_pem,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            result_signing_public_key: state.result_key.public_key(),
        })
        .await
        .map_err(|s| {
            let f = failure_of(&s);
            // A refusal recorded nothing: the next attempt starts afresh.
            // No answer (or a broken one) may hide a recorded renewal: keep
            // the key to ask again for it.
            if !matches!(
                f.reason,
                ReasonCode::Unavailable | ReasonCode::Timeout | ReasonCode::Internal
            ) {
                let _ = std::fs::remove_file(state_dir.join(PENDING_KEY));
            }
            AgentError::Renew(f)
        })?
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
    let mut refused_signing_keys = Vec::new();
    if !response.operation_signing_keys.is_empty() {
        // A key the agent does not pin yet is taken up only on the word of
        // a key it pins (an endorsement), never on the word of whoever
        // answered: so nobody who gets to answer a renewal can plant a key.
        let endorsements: Vec<Endorsement> = response
            .signing_key_endorsements
            .iter()
            .map(|e| Endorsement {
                public_key: e.public_key.clone(),
                endorser_key_id: e.endorser_key_id.clone(),
                signature: e.signature.clone(),
            })
            .collect();
        let accepted = endorsement::accept(
            &enrollment.trusted_keys()?,
            &response.operation_signing_keys,
            &endorsements,
        );
        for key_id in &accepted.refused {
            tracing::warn!(key_id = %key_id, reason = %ReasonCode::SigningKeyUnendorsed,
                "the control plane offered an operation-signing key that no pinned key \
                 endorsed; not pinned");
        }
        let keys: Vec<String> = accepted
            .keys
            .iter()
            .map(|k| hex::encode(&k.public_key))
            .collect();
        if keys != enrollment.operation_signing_keys {
            tracing::info!(keys = ?keys, "the control plane's operation-signing keys changed; pinned");
        }
        enrollment.operation_signing_keys = keys;
        refused_signing_keys = accepted.refused;
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
    let _ = std::fs::remove_file(state_dir.join(PENDING_KEY));
    tracing::info!(tenant = %enrollment.tenant, domain = %enrollment.domain,
        agent_id = %enrollment.agent_id, not_after = %validity.not_after,
        "agent certificate renewed");
    Ok(Renewed {
        validity,
        operation_signing_keys: enrollment.operation_signing_keys,
        result_signing_key_registered: enrollment.result_signing_key_registered,
        refused_signing_keys,
    })
}
