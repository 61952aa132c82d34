//! `writeback-agent enroll`: generates the TLS key and the envelope key pair
//! locally, sends a CSR and the envelope public key with the one-time token,
//! and stores the certificate, CA, relay addresses and the control plane's
//! operation-signing public keys (pinned: see the executor) it gets back. The
//! token pins the control plane CA's fingerprint and the server must carry
//! the control plane API's identity (`spiffe://writeback/control-plane/api`),
//! so even this first contact is authenticated — a relay's certificate from
//! the same CA, whatever host names it carries, is refused with
//! `NOT_CONTROL_PLANE` before anything is sent; no private key ever leaves
//! the machine.
//!
//! The token comes from a file or standard input only ([`read_token`]): not
//! from the command line (visible in `ps`) nor from the environment (inherited
//! by every child process, kept in `/proc/<pid>/environ`). The environment
//! variable earlier versions read, [`OLD_TOKEN_ENV`], is refused with a
//! sentence saying what to do instead, rather than silently ignored.

use std::io::BufRead;
use std::path::Path;

use writeback_core::failure_of;
use writeback_identity::{EnrollmentToken, fingerprint_of_pem, generate_csr, tls, transport};
use writeback_proto::v1::EnrollRequest;
use writeback_proto::v1::enrollment_service_client::EnrollmentServiceClient;
use zeroize::Zeroizing;

use crate::AgentError;
use crate::state::{AgentState, Enrollment};

/// The environment variable that earlier versions read the token from.
pub const OLD_TOKEN_ENV: &str = "WRITEBACK_ENROLLMENT_TOKEN";

/// The enrollment token from `file`, or from `stdin` when `file` is `-`.
/// `env_token_set` says whether [`OLD_TOKEN_ENV`] is set: then nothing is
/// read and the caller is told to unset it and use a file or stdin.
pub fn read_token(
    file: Option<&Path>,
    env_token_set: bool,
    stdin: &mut dyn BufRead,
) -> Result<Zeroizing<String>, AgentError> {
    const HOW: &str = "give the enrollment token with --token-file FILE (or --token-file - \
                       to read it from standard input); `writebackctl agent enroll-token \
                       --out FILE` writes one to a private file";
    if env_token_set {
        return Err(AgentError::Config(format!(
            "the enrollment token is no longer read from the environment ({OLD_TOKEN_ENV}), \
             where child processes inherit it: unset {OLD_TOKEN_ENV} and {HOW}"
        )));
    }
    let token = match file {
        Some(p) if p.as_os_str() == "-" => {
            let mut s = Zeroizing::new(String::new());
            stdin.read_line(&mut s).map_err(|e| {
                AgentError::Config(format!("cannot read the token from stdin: {e}"))
            })?;
            s
        }
        Some(p) => Zeroizing::new(
            std::fs::read_to_string(p)
                .map_err(|e| AgentError::Config(format!("cannot read {}: {e}", p.display())))?,
        ),
        None => return Err(AgentError::Config(HOW.to_string())),
    };
    let trimmed = token.trim();
    if trimmed.is_empty() {
        return Err(AgentError::Config(format!(
            "the enrollment token is empty; {HOW}"
        )));
    }
    Ok(Zeroizing::new(trimmed.to_owned()))
}

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
    let (result_key, result_der) = AgentState::new_result_key()?;
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
            } else if text.contains(tls::NOT_THE_CONTROL_PLANE) {
                (
                    writeback_core::ReasonCode::NotControlPlane,
                    not_control_plane(control_plane_url),
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
            result_signing_public_key: result_key.public_key(),
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
        control_plane_url: control_plane_url.to_owned(),
        result_signing_key_registered: response.result_signing_key_registered,
    };
    AgentState {
        enrollment: enrollment.clone(),
        cert_pem: response.certificate_pem,
        key_pem,
        ca_pem: response.ca_pem,
        envelope_key,
        result_key,
    }
    .save(state_dir)?;
    AgentState::write_result_key(state_dir, &result_der)?;
    tracing::info!(tenant = %enrollment.tenant, domain = %enrollment.domain,
        agent_id = %enrollment.agent_id, "agent enrolled");
    Ok(enrollment)
}

/// What an agent is told when the server at `url` is not the control
/// plane's API (a relay, say, reached through a wrong URL or a hijacked
/// name).
pub(crate) fn not_control_plane(url: &str) -> String {
    format!(
        "the server at {url} holds a certificate from the right CA that does not name the \
         control plane's API (it may be a relay); nothing was sent to it. Check the control \
         plane URL and that the name resolves to the control plane"
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_a_file_or_stdin_never_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "wbe1.id.secret.fp\n").unwrap();
        let mut no_stdin: &[u8] = b"";
        let t = read_token(Some(&file), false, &mut no_stdin).unwrap();
        assert_eq!(t.as_str(), "wbe1.id.secret.fp");
        let mut stdin: &[u8] = b"wbe1.from.stdin.fp\r\nignored\n";
        let t = read_token(Some(Path::new("-")), false, &mut stdin).unwrap();
        assert_eq!(t.as_str(), "wbe1.from.stdin.fp");

        // The old environment variable: refused, even beside a file, with
        // what to do instead.
        let e = read_token(Some(&file), true, &mut no_stdin)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unset WRITEBACK_ENROLLMENT_TOKEN"), "{e}");
        assert!(e.contains("--token-file"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        // Nothing given, an empty stdin, a missing file: errors saying how.
        let e = read_token(None, false, &mut no_stdin)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--token-file FILE"), "{e}");
        let e = read_token(Some(Path::new("-")), false, &mut no_stdin)
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
        let missing = dir.path().join("nope");
        assert!(read_token(Some(&missing), false, &mut no_stdin).is_err());
    }
}
