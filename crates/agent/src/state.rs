//! The agent's state directory, written by `enroll` and read at start:
//!
//! | file | contents | mode |
//! |---|---|---|
//! | `state.toml` | tenant, domain, agent id, relay URLs, the pinned operation-signing keys, the control plane's URL | 0644 |
//! | `agent.pem` | the agent's certificate | 0644 |
//! | `agent.key` | its TLS private key | 0600 |
//! | `ca.pem` | the tenant CA (trust anchor for relays) | 0644 |
//! | `envelope.key` | the HPKE private key, hex | 0600 |
//! | `result.key` | the result-signing private key (Ed25519 PKCS#8, hex): every result the agent sends is signed with it ([`writeback_envelope::results`]) | 0600 |
//! | `agent.key.next`, `agent.pem.next` | a renewed key (0600) and certificate, only while they replace the current pair ([`AgentState::install_certificate`]) | |
//! | `agent.key.pending` | the key a renewal asked a certificate for, until that certificate is installed: a renewal whose answer was lost asks again for the same key ([`crate::renew::PENDING_KEY`]) | 0600 |
//! | `ledger.jsonl` | every operation id begun and its outcome ([`crate::ledger`]); no secrets | 0644 |

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use writeback_envelope::results::ResultSigner;
use writeback_identity::ca::write_file;
use zeroize::Zeroizing;

use crate::AgentError;

/// What enrollment established.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// Tenant id.
    pub tenant: String,
    /// Domain served.
    pub domain: String,
    /// Agent id.
    pub agent_id: String,
    /// Relays to dial, in order.
    pub relay_urls: Vec<String>,
    /// The control plane's operation-signing public keys (Ed25519, hex),
    /// pinned at enrollment: the agent applies only operations signed by one
    /// of them. Empty in a state written before operations were signed; such
    /// an agent does not start (enroll it again).
    #[serde(default)]
    pub operation_signing_keys: Vec<String>,
    /// The control plane it enrolled with: where it renews its certificate
    /// (empty in a state written before renewal existed; `writeback-agent
    /// renew --control-plane URL` fills it in).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub control_plane_url: String,
    /// True once the control plane confirmed it holds this agent's
    /// result-signing public key (at enrollment, or at a renewal for an
    /// agent enrolled before results were signed). While false, the
    /// running agent renews at start and at every hourly check, which
    /// registers the key; until then the control plane refuses its results.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub result_signing_key_registered: bool,
}

impl Enrollment {
    /// The pinned operation-signing keys; an error names a malformed one.
    pub fn trusted_keys(&self) -> Result<Vec<writeback_envelope::signing::TrustedKey>, AgentError> {
        self.operation_signing_keys
            .iter()
            .map(|k| {
                hex::decode(k.trim())
                    .ok()
                    .and_then(|b| writeback_envelope::signing::TrustedKey::new(&b).ok())
                    .ok_or_else(|| {
                        AgentError::State(
                            "state.toml holds a malformed operation-signing key".into(),
                        )
                    })
            })
            .collect()
    }
}

/// Everything the agent loads from its state directory.
pub struct AgentState {
    /// Identity and relays.
    pub enrollment: Enrollment,
    /// Certificate PEM.
    pub cert_pem: String,
    /// TLS key PEM.
    pub key_pem: Zeroizing<String>,
    /// Tenant CA PEM.
    pub ca_pem: String,
    /// Envelope key pair.
    pub envelope_key: writeback_envelope::KeyPair,
    /// The result-signing key.
    pub result_key: ResultSigner,
}

fn read(dir: &Path, name: &str) -> Result<String, AgentError> {
    let p = dir.join(name);
    std::fs::read_to_string(&p).map_err(|e| {
        AgentError::State(format!(
            "cannot read {} ({e}); enroll the agent first with `writeback-agent enroll`",
            p.display()
        ))
    })
}

impl AgentState {
    /// Loads the state directory (first finishing a certificate
    /// replacement a crash interrupted, see [`AgentState::install_certificate`]).
    pub fn load(dir: &Path) -> Result<AgentState, AgentError> {
        finish_pending_certificate(dir)?;
        let enrollment: Enrollment = toml::from_str(&read(dir, "state.toml")?)
            .map_err(|e| AgentError::State(format!("state.toml is invalid: {e}")))?;
        if enrollment.trusted_keys()?.is_empty() {
            return Err(AgentError::State(format!(
                "{} pins no operation-signing key: the agent was enrolled before the control \
                 plane signed operations, and would refuse every one; enroll it again with \
                 `writeback-agent enroll` (remove the directory first)",
                dir.display()
            )));
        }
        let envelope_hex = Zeroizing::new(read(dir, "envelope.key")?);
        let bytes = Zeroizing::new(
            hex::decode(envelope_hex.trim())
                .map_err(|_| AgentError::State("envelope.key is not hex".into()))?,
        );
        let envelope_key = writeback_envelope::KeyPair::from_secret_bytes(&bytes)
            .map_err(|_| AgentError::State("envelope.key is not a valid key".into()))?;
        Ok(AgentState {
            enrollment,
            cert_pem: read(dir, "agent.pem")?,
            key_pem: Zeroizing::new(read(dir, "agent.key")?),
            ca_pem: read(dir, "ca.pem")?,
            envelope_key,
            result_key: load_result_key(dir)?,
        })
    }

    /// Writes the state directory (secrets with mode 0600).
    pub fn save(&self, dir: &Path) -> Result<(), AgentError> {
        let toml = toml::to_string(&self.enrollment)
            .map_err(|e| AgentError::State(format!("cannot encode state: {e}")))?;
        let secret_hex = Zeroizing::new(hex::encode(self.envelope_key.secret_bytes().as_slice()));
        write_file(&dir.join("state.toml"), toml.as_bytes(), false)?;
        write_file(&dir.join("agent.pem"), self.cert_pem.as_bytes(), false)?;
        write_file(&dir.join("agent.key"), self.key_pem.as_bytes(), true)?;
        write_file(&dir.join("ca.pem"), self.ca_pem.as_bytes(), false)?;
        write_file(&dir.join("envelope.key"), secret_hex.as_bytes(), true)?;
        Ok(())
    }

    /// A fresh result-signing key and its PKCS#8 document, to store with
    /// [`AgentState::write_result_key`].
    pub fn new_result_key() -> Result<(ResultSigner, Zeroizing<Vec<u8>>), AgentError> {
        ResultSigner::generate()
            .map_err(|_| AgentError::State("cannot generate a result-signing key".into()))
    }

    /// Writes the result-signing key's PKCS#8 document `der` as
    /// `result.key` (hex, 0600).
    pub fn write_result_key(dir: &Path, der: &[u8]) -> Result<(), AgentError> {
        let text = Zeroizing::new(hex::encode(der));
        write_file(&dir.join(RESULT_KEY), text.as_bytes(), true)?;
        Ok(())
    }

    /// Replaces the certificate and its key (a renewal) and rewrites
    /// `state.toml` with `enrollment`. The pair is written next to the old
    /// one (`agent.key.next` 0600, `agent.pem.next`), then renamed into
    /// place key first: a crash in between leaves `agent.pem.next`, which
    /// [`AgentState::load`] renames, so the certificate and key on disk
    /// always match.
    pub fn install_certificate(
        dir: &Path,
        cert_pem: &str,
        key_pem: &str,
        enrollment: &Enrollment,
    ) -> Result<(), AgentError> {
        let toml = toml::to_string(enrollment)
            .map_err(|e| AgentError::State(format!("cannot encode state: {e}")))?;
        write_file(&dir.join(NEXT_KEY), key_pem.as_bytes(), true)?;
        write_file(&dir.join(NEXT_CERT), cert_pem.as_bytes(), false)?;
        write_file(&dir.join("state.toml"), toml.as_bytes(), false)?;
        finish_pending_certificate(dir)
    }

    /// True when `dir` already holds an enrollment.
    pub fn exists(dir: &Path) -> bool {
        dir.join("state.toml").exists()
    }
}

/// The result-signing key in `dir`. A state directory written before
/// results were signed has none: a key is generated and written now (0600),
/// and `result_signing_key_registered` stays false until a renewal
/// registers it with the control plane.
fn load_result_key(dir: &Path) -> Result<ResultSigner, AgentError> {
    let path = dir.join(RESULT_KEY);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            let der = Zeroizing::new(
                hex::decode(text.trim())
                    .map_err(|_| AgentError::State("result.key is not hex".into()))?,
            );
            ResultSigner::from_pkcs8(&der)
                .map_err(|_| AgentError::State("result.key is not a valid key".into()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (key, der) = AgentState::new_result_key()?;
            AgentState::write_result_key(dir, &der)?;
            tracing::info!(
                result_signing_key_id = key.key_id(),
                "generated a result-signing key; the next renewal registers it"
            );
            Ok(key)
        }
        Err(e) => Err(AgentError::State(format!(
            "cannot read {} ({e})",
            path.display()
        ))),
    }
}

/// The result-signing key's file.
const RESULT_KEY: &str = "result.key";

/// A renewed key, before it replaces `agent.key`.
const NEXT_KEY: &str = "agent.key.next";
/// A renewed certificate, before it replaces `agent.pem`.
const NEXT_CERT: &str = "agent.pem.next";

/// Moves a renewed key and certificate into place. A lone `agent.key.next`
/// (the crash came before its certificate was written) is dropped.
fn finish_pending_certificate(dir: &Path) -> Result<(), AgentError> {
    let rename = |from: &str, to: &str| {
        std::fs::rename(dir.join(from), dir.join(to)).map_err(|e| {
            AgentError::State(format!(
                "cannot move {from} to {to} in {}: {e}",
                dir.display()
            ))
        })
    };
    let (key, cert) = (dir.join(NEXT_KEY).exists(), dir.join(NEXT_CERT).exists());
    if cert {
        if key {
            rename(NEXT_KEY, "agent.key")?;
        }
        rename(NEXT_CERT, "agent.pem")?;
    } else if key {
        let _ = std::fs::remove_file(dir.join(NEXT_KEY));
    }
    Ok(())
}

/// Default state directory.
pub fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/writeback-agent")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A state directory written before results were signed has no
    /// `result.key`: the first load creates one (0600), later loads keep it.
    #[test]
    fn a_missing_result_key_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_result_key(dir.path()).unwrap();
        let path = dir.path().join(RESULT_KEY);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_result_key(dir.path()).unwrap();
        assert_eq!(first.key_id(), again.key_id());
        std::fs::write(&path, "not hex").unwrap();
        assert!(load_result_key(dir.path()).is_err());
    }

    /// Older `state.toml` files (no registration flag) still load, and the
    /// flag is written only once set.
    #[test]
    fn the_registration_flag_defaults_to_false() {
        let old = "tenant = \"t1\"\ndomain = \"contoso.test\"\nagent_id = \"a1\"\n\
                   relay_urls = []\noperation_signing_keys = []\n";
        let mut e: Enrollment = toml::from_str(old).unwrap();
        assert!(!e.result_signing_key_registered);
        assert!(!toml::to_string(&e).unwrap().contains("result_signing"));
        e.result_signing_key_registered = true;
        let back: Enrollment = toml::from_str(&toml::to_string(&e).unwrap()).unwrap();
        assert!(back.result_signing_key_registered);
    }
}
