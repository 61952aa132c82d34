//! Password envelopes. The control plane seals the password material of one
//! operation with HPKE (RFC 9180: base mode, DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, ChaCha20-Poly1305) once per enrolled agent of the target
//! domain, so any of them can open it and the relay, which carries only the
//! [`PasswordEnvelope`], cannot. The operation's identity — tenant, domain,
//! operation id, target user, kind, flags and expiry — is the associated
//! data ([`Binding`]): a ciphertext moved to another operation, or an
//! operation whose fields were altered in transit, fails to open.
//!
//! HPKE base mode authenticates no sender, so the envelope alone does not
//! prove the control plane sent the operation; [`signing`] does: the control
//! plane signs every operation (the envelope's digest included) with a key
//! the agent pinned at enrollment. [`results`] covers the way back: every
//! result an agent sends is signed with a key the control plane recorded
//! at the agent's enrollment, so a relay cannot forge an outcome either.
//! [`endorsement`]: a new operation-signing key is pinned only when a key
//! the agent already pins signed it.
//! `fuzz` holds the fixed keys of the `operation` fuzz target's seed corpus
//! (`fuzz/`), used nowhere else.

#![forbid(unsafe_code)]

pub mod endorsement;
#[doc(hidden)]
pub mod fuzz;
pub mod results;
pub mod signing;

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use prost::Message;
use secrecy::{ExposeSecret, SecretString};
use writeback_proto::v1::{PasswordEnvelope, SealedCopy, SecretPayload};
use zeroize::{Zeroize, Zeroizing};

type Kem = X25519HkdfSha256;
type Kdf = HkdfSha256;
type Aead = ChaCha20Poly1305;

/// Envelope format version written into [`PasswordEnvelope::version`].
pub const VERSION: u32 = 1;
/// HPKE `info`: domain separation for writeback envelopes.
const INFO: &[u8] = b"writeback.v1 password envelope";

/// Envelope failures. Messages never contain key or password material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A public or private key has the wrong length or form.
    #[error("invalid envelope key")]
    InvalidKey,
    /// No recipients to seal to.
    #[error("no agent keys to seal to")]
    NoRecipients,
    /// The envelope has no copy for this agent.
    #[error("the envelope holds no copy for this agent")]
    NoCopyForAgent,
    /// Unknown envelope version.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u32),
    /// Authentication failed: tampered, bound to another operation, or
    /// sealed to another key.
    #[error("the envelope does not open: it was altered or belongs to another operation")]
    OpenFailed,
    /// The plaintext is not a SecretPayload.
    #[error("the envelope's contents are malformed")]
    Malformed,
    /// Sealing failed inside HPKE.
    #[error("sealing failed")]
    SealFailed,
}

/// An agent's envelope key pair (X25519).
pub struct KeyPair {
    secret: <Kem as hpke::Kem>::PrivateKey,
    public: <Kem as hpke::Kem>::PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPair(..)")
    }
}

impl KeyPair {
    /// A fresh key pair from the OS RNG.
    pub fn generate() -> KeyPair {
        let (secret, public) = Kem::gen_keypair(&mut rand_core::UnwrapErr(rand_core::OsRng));
        KeyPair { secret, public }
    }

    /// Restores a key pair from its 32-byte private key.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<KeyPair, Error> {
        let secret =
            <Kem as hpke::Kem>::PrivateKey::from_bytes(bytes).map_err(|_| Error::InvalidKey)?;
        let public = Kem::sk_to_pk(&secret);
        Ok(KeyPair { secret, public })
    }

    /// The private key bytes, for the agent's state file only.
    pub fn secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.secret.to_bytes().to_vec())
    }

    /// The public key (32 bytes) sent at enrollment.
    pub fn public_bytes(&self) -> Vec<u8> {
        self.public.to_bytes().to_vec()
    }
}

/// The operation an envelope is bound to (its associated data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Target domain.
    pub domain: &'a str,
    /// Operation id.
    pub operation_id: &'a str,
    /// Target user key (`upn:…` or `guid:…`).
    pub target: &'a str,
    /// Operation kind name (`reset`, `change`, …).
    pub kind: &'a str,
    /// Set "must change at next logon".
    pub must_change_at_next_logon: bool,
    /// Also unlock.
    pub unlock: bool,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

impl Binding<'_> {
    /// Canonical, unambiguous encoding: a label, then each field as a
    /// 4-byte big-endian length and its bytes.
    pub fn associated_data(&self) -> Vec<u8> {
        let mut out = b"writeback.v1.binding".to_vec();
        let flags = [
            u8::from(self.must_change_at_next_logon),
            u8::from(self.unlock),
        ];
        let expiry = self.expires_at.to_be_bytes();
        for field in [
            self.tenant.as_bytes(),
            self.domain.as_bytes(),
            self.operation_id.as_bytes(),
            self.target.as_bytes(),
            self.kind.as_bytes(),
            &flags,
            &expiry,
        ] {
            out.extend_from_slice(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(field);
        }
        out
    }
}

/// Password material in memory; zeroized on drop, never `Debug`-printed.
pub struct Secrets {
    /// The new password (empty for unlock).
    pub new_password: SecretString,
    /// The old password for changes.
    pub old_password: Option<SecretString>,
}

/// One recipient: agent id and its 32-byte public key.
pub struct Recipient<'a> {
    /// Agent id.
    pub agent_id: &'a str,
    /// X25519 public key bytes.
    pub public_key: &'a [u8],
}

/// Seals `secrets` to every recipient, bound to `binding`.
pub fn seal(
    recipients: &[Recipient<'_>],
    binding: &Binding<'_>,
    secrets: &Secrets,
) -> Result<PasswordEnvelope, Error> {
    if recipients.is_empty() {
        return Err(Error::NoRecipients);
    }
    let mut payload = SecretPayload {
        new_password: secrets.new_password.expose_secret().to_owned(),
        old_password: secrets
            .old_password
            .as_ref()
            .map(|s| s.expose_secret().to_owned())
            .unwrap_or_default(),
    };
    let plaintext = Zeroizing::new(payload.encode_to_vec());
    payload.new_password.zeroize();
    payload.old_password.zeroize();
    let aad = binding.associated_data();
    let mut copies = Vec::with_capacity(recipients.len());
    for r in recipients {
        let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(r.public_key)
            .map_err(|_| Error::InvalidKey)?;
        let (encapped, ciphertext) = hpke::single_shot_seal::<Aead, Kdf, Kem, _>(
            &OpModeS::Base,
            &pk,
            INFO,
            &plaintext,
            &aad,
            &mut rand_core::UnwrapErr(rand_core::OsRng),
        )
        .map_err(|_| Error::SealFailed)?;
        copies.push(SealedCopy {
            agent_id: r.agent_id.to_owned(),
            encapsulated_key: encapped.to_bytes().to_vec(),
            ciphertext,
        });
    }
    Ok(PasswordEnvelope {
        version: VERSION,
        copies,
    })
}

/// Opens the copy sealed to `agent_id` with `key`, checking `binding`.
pub fn open(
    envelope: &PasswordEnvelope,
    agent_id: &str,
    key: &KeyPair,
    binding: &Binding<'_>,
) -> Result<Secrets, Error> {
    if envelope.version != VERSION {
        return Err(Error::UnsupportedVersion(envelope.version));
    }
    let copy = envelope
        .copies
        .iter()
        .find(|c| c.agent_id == agent_id)
        .ok_or(Error::NoCopyForAgent)?;
    let encapped = <Kem as hpke::Kem>::EncappedKey::from_bytes(&copy.encapsulated_key)
        .map_err(|_| Error::OpenFailed)?;
    let plaintext = Zeroizing::new(
        hpke::single_shot_open::<Aead, Kdf, Kem>(
            &OpModeR::Base,
            &key.secret,
            &encapped,
            INFO,
            &copy.ciphertext,
            &binding.associated_data(),
        )
        .map_err(|_| Error::OpenFailed)?,
    );
    let mut payload = SecretPayload::decode(plaintext.as_slice()).map_err(|_| Error::Malformed)?;
    let secrets = Secrets {
        new_password: SecretString::from(std::mem::take(&mut payload.new_password)),
        old_password: (!payload.old_password.is_empty())
            .then(|| SecretString::from(std::mem::take(&mut payload.old_password))),
    };
    payload.old_password.zeroize();
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn binding(op: &str) -> Binding<'_> {
        Binding {
            tenant: "t1",
            domain: "contoso.test",
            operation_id: op,
            target: "upn:alice@contoso.test",
            kind: "reset",
            must_change_at_next_logon: false,
            unlock: false,
            expires_at: 1_900_000_000,
        }
    }

    fn secrets() -> Secrets {
        Secrets {
            new_password: SecretString::from("N3w-Passw0rd!"),
            old_password: None,
        }
    }

    #[test]
    fn every_recipient_opens_its_copy() {
        let a = KeyPair::generate();
        let b = KeyPair::generate();
        let (pa, pb) = (a.public_bytes(), b.public_bytes());
        let env = seal(
            &[
                Recipient {
                    agent_id: "a",
                    public_key: &pa,
                },
                Recipient {
                    agent_id: "b",
                    public_key: &pb,
                },
            ],
            &binding("op-1"),
            &secrets(),
        )
        .unwrap();
        for (id, key) in [("a", &a), ("b", &b)] {
            let s = open(&env, id, key, &binding("op-1")).unwrap();
            assert_eq!(s.new_password.expose_secret(), "N3w-Passw0rd!");
            assert!(s.old_password.is_none());
        }
    }

    #[test]
    fn ciphertext_moved_to_another_operation_fails() {
        let a = KeyPair::generate();
        let pa = a.public_bytes();
        let env = seal(
            &[Recipient {
                agent_id: "a",
                public_key: &pa,
            }],
            &binding("op-1"),
            &secrets(),
        )
        .unwrap();
        assert_eq!(
            open(&env, "a", &a, &binding("op-2")).err(),
            Some(Error::OpenFailed)
        );
        let mut flipped = binding("op-1");
        flipped.unlock = true;
        assert_eq!(open(&env, "a", &a, &flipped).err(), Some(Error::OpenFailed));
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let a = KeyPair::generate();
        let pa = a.public_bytes();
        let mut env = seal(
            &[Recipient {
                agent_id: "a",
                public_key: &pa,
            }],
            &binding("op-1"),
            &secrets(),
        )
        .unwrap();
        env.copies[0].ciphertext[0] ^= 1;
        assert_eq!(
            open(&env, "a", &a, &binding("op-1")).err(),
            Some(Error::OpenFailed)
        );
    }

    #[test]
    fn another_agents_key_cannot_open() {
        let a = KeyPair::generate();
        let eve = KeyPair::generate();
        let pa = a.public_bytes();
        let env = seal(
            &[Recipient {
                agent_id: "a",
                public_key: &pa,
            }],
            &binding("op-1"),
            &secrets(),
        )
        .unwrap();
        assert_eq!(
            open(&env, "a", &eve, &binding("op-1")).err(),
            Some(Error::OpenFailed)
        );
        assert_eq!(
            open(&env, "b", &a, &binding("op-1")).err(),
            Some(Error::NoCopyForAgent)
        );
    }

    #[test]
    fn key_pair_round_trips_and_bad_keys_are_errors() {
        let a = KeyPair::generate();
        let b = KeyPair::from_secret_bytes(&a.secret_bytes()).unwrap();
        assert_eq!(a.public_bytes(), b.public_bytes());
        assert!(KeyPair::from_secret_bytes(&[1, 2, 3]).is_err());
        let r = seal(
            &[Recipient {
                agent_id: "a",
                public_key: &[0u8; 5],
            }],
            &binding("x"),
            &secrets(),
        );
        assert_eq!(r.err(), Some(Error::InvalidKey));
    }
}
