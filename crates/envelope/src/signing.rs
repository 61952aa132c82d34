//! Operation signatures: the control plane signs every `OperationRequest`
//! it dispatches (every kind, the policy query included) with its
//! operation-signing key, an Ed25519 key kept in its data dir next to the CA
//! key (`op-signing.key`, PKCS#8 PEM, mode 0600). An agent pins the public
//! key(s) at enrollment and refuses an operation that is unsigned, signed by
//! a key it did not pin, or altered after signing. The relay carries the
//! signature but holds no key: it can delay or drop an operation, never
//! forge, rewrite or invent one (an unlock included, which has no envelope).
//!
//! # The signed bytes
//!
//! Ed25519 (RFC 8032, pure) over exactly this byte string, where `lp(x)` is
//! the length of `x` as a big-endian `u64` followed by the bytes of `x`:
//!
//! ```text
//! "writeback.v1 operation signature\0"      (33 bytes, the context)
//! lp(signing_key_id)
//! lp(operation_id) lp(tenant) lp(domain)     (UTF-8, exactly as sent)
//! kind                                       (i32, big-endian: the wire enum value)
//! target:  0x00                              (no target)
//!        | 0x01 lp(upn)
//!        | 0x02 lp(object_guid)
//! must_change_at_next_logon                  (0x00 | 0x01)
//! unlock                                     (0x00 | 0x01)
//! expires_at: 0x00                           (absent)
//!           | 0x01 seconds (i64 BE) nanos (i32 BE)
//! envelope:   0x00                           (absent)
//!           | 0x01 SHA-256(version (u32 BE) count (u64 BE)
//!                          then per copy, in order:
//!                          lp(agent_id) lp(encapsulated_key) lp(ciphertext))
//! search:     (nothing)                      (absent)
//!           | 0x01 lp(query) limit (u32 BE)
//! agent:      (nothing)                      (agent_id empty)
//!           | 0x02 lp(agent_id)
//! issued_at:  (nothing)                      (absent)
//!           | 0x03 seconds (i64 BE) nanos (i32 BE)
//! ```
//!
//! `search` (the directory search's question) adds nothing when absent, so
//! the bytes of every other kind are what they were before it existed and
//! agents of either version verify them alike; everything before it has a
//! fixed shape, so its presence is never ambiguous. `agent` and `issued_at`
//! (security round two, issue 25) follow the same rule: each optional block
//! starts with its own tag (0x01, 0x02, 0x03, always in that order) and has a
//! self-delimiting shape, so no two operations share signed bytes, and an
//! operation without them signs exactly as before.
//!
//! `agent` binds a write to the one agent the control plane chose: another
//! agent of the domain refuses it, so a relay cannot deliver one signed
//! reset to two agents (each de-duplicates only its own ids). `issued_at` is
//! the control plane's clock at signing, the agent's reference time (its
//! clock is checked against it, and it never takes an operation for
//! unexpired while the control plane's time it has seen says otherwise).
//! [`OperationSigner::sign`] sets `issued_at` when it is absent.
//!
//! Compatibility: an agent of this version refuses an operation bound to
//! another agent or signed too far in its future; it accepts an operation
//! without either field (what a control plane of an earlier version signs,
//! judged by its own clock as before), which only an earlier control plane
//! can produce: a relay cannot strip a field the signature covers. An agent
//! of an earlier version does not know the new fields, computes the bytes
//! without them and refuses every operation of this control plane as
//! altered (`OPERATION_UNAUTHENTICATED`, nothing written): upgrade the
//! agents first, then the control plane.
//!
//! `traceparent` is deliberately not covered (it is tracing context, changed
//! in transit by design); neither is `signature` itself. Every other field
//! of `OperationRequest` is, so a new field must be added here too.
//!
//! A key id is the first 16 hex digits of the SHA-256 of the 32-byte public
//! key ([`key_id_of`]). Replays of a signed operation are bounded by the
//! agent, not here: it answers a repeated operation id with its first result
//! and refuses an expired one.

use ring::digest::{SHA256, digest};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use writeback_proto::v1::{OperationRequest, PasswordEnvelope, user_ref};
use zeroize::Zeroizing;

/// Domain separation: no other writeback signature starts with these bytes.
pub const CONTEXT: &[u8] = b"writeback.v1 operation signature\0";

/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Why an operation's signature was refused, or a key could not be used.
/// Messages never contain key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    /// The operation carries no signature.
    #[error("the operation is not signed by the control plane")]
    Unsigned,
    /// The signature names a key this agent did not pin.
    #[error("the operation is signed by a key this agent does not trust")]
    UnknownKey,
    /// The signature does not verify: the operation was altered after the
    /// control plane signed it, or signed by someone else.
    #[error("the operation's signature does not match its contents")]
    BadSignature,
    /// No key is pinned at all (an agent enrolled before operations were signed).
    #[error("this agent pins no operation-signing key; enroll it again")]
    NoTrustedKey,
    /// A private or public key is malformed.
    #[error("invalid operation-signing key")]
    InvalidKey,
}

/// The control plane's operation-signing key.
pub struct OperationSigner {
    key: Ed25519KeyPair,
    key_id: String,
}

impl std::fmt::Debug for OperationSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperationSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl OperationSigner {
    /// A fresh key; returns it and its PKCS#8 (v2) document to store.
    pub fn generate() -> Result<(OperationSigner, Zeroizing<Vec<u8>>), SigningError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| SigningError::InvalidKey)?;
        let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
        Ok((OperationSigner::from_pkcs8(&pkcs8)?, pkcs8))
    }

    /// The key in a PKCS#8 document (v1 or v2).
    pub fn from_pkcs8(der: &[u8]) -> Result<OperationSigner, SigningError> {
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| SigningError::InvalidKey)?;
        let key_id = key_id_of(key.public_key().as_ref());
        Ok(OperationSigner { key, key_id })
    }

    /// The key's id (what `signing_key_id` carries).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The 32-byte public key an agent pins.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// The public key as an agent holds it.
    pub fn trusted_key(&self) -> TrustedKey {
        TrustedKey {
            key_id: self.key_id.clone(),
            public_key: self.public_key(),
        }
    }

    /// Sets `op.signing_key_id`, `op.issued_at` when it is absent (now, by
    /// this host's clock) and `op.signature` (over the bytes the module
    /// docs describe).
    pub fn sign(&self, op: &mut OperationRequest) {
        op.signing_key_id = self.key_id.clone();
        if op.issued_at.is_none() {
            op.issued_at = Some(now());
        }
        op.signature = self.sign_raw(&signed_bytes(op));
    }

    /// An Ed25519 signature over `bytes` (for [`crate::results`], whose
    /// bytes start with their own context).
    pub(crate) fn sign_raw(&self, bytes: &[u8]) -> Vec<u8> {
        self.key.sign(bytes).as_ref().to_vec()
    }
}

/// A public key an agent accepts operations from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// [`key_id_of`] the key.
    pub key_id: String,
    /// The 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
}

impl TrustedKey {
    /// Pins a 32-byte Ed25519 public key.
    pub fn new(public_key: &[u8]) -> Result<TrustedKey, SigningError> {
        if public_key.len() != PUBLIC_KEY_LEN {
            return Err(SigningError::InvalidKey);
        }
        Ok(TrustedKey {
            key_id: key_id_of(public_key),
            public_key: public_key.to_vec(),
        })
    }
}

/// The id of a public key: the first 16 hex digits of its SHA-256.
pub fn key_id_of(public_key: &[u8]) -> String {
    let mut id = hex(digest(&SHA256, public_key).as_ref());
    id.truncate(16);
    id
}

/// Checks that `op` was signed, unaltered, by one of `trusted`.
pub fn verify(op: &OperationRequest, trusted: &[TrustedKey]) -> Result<(), SigningError> {
    if trusted.is_empty() {
        return Err(SigningError::NoTrustedKey);
    }
    if op.signature.is_empty() {
        return Err(SigningError::Unsigned);
    }
    let key = trusted
        .iter()
        .find(|k| k.key_id == op.signing_key_id)
        .ok_or(SigningError::UnknownKey)?;
    UnparsedPublicKey::new(&ED25519, &key.public_key)
        .verify(&signed_bytes(op), &op.signature)
        .map_err(|_| SigningError::BadSignature)
}

/// The exact bytes signed for `op` (see the module docs).
pub fn signed_bytes(op: &OperationRequest) -> Vec<u8> {
    let mut b = Vec::with_capacity(256);
    b.extend_from_slice(CONTEXT);
    lp(&mut b, op.signing_key_id.as_bytes());
    lp(&mut b, op.operation_id.as_bytes());
    lp(&mut b, op.tenant.as_bytes());
    lp(&mut b, op.domain.as_bytes());
    b.extend_from_slice(&op.kind.to_be_bytes());
    match op.target.as_ref().and_then(|t| t.by.as_ref()) {
        None => b.push(0),
        Some(user_ref::By::Upn(upn)) => {
            b.push(1);
            lp(&mut b, upn.as_bytes());
        }
        Some(user_ref::By::ObjectGuid(guid)) => {
            b.push(2);
            lp(&mut b, guid.as_bytes());
        }
    }
    b.push(u8::from(op.must_change_at_next_logon));
    b.push(u8::from(op.unlock));
    match &op.expires_at {
        None => b.push(0),
        Some(t) => {
            b.push(1);
            b.extend_from_slice(&t.seconds.to_be_bytes());
            b.extend_from_slice(&t.nanos.to_be_bytes());
        }
    }
    match &op.envelope {
        None => b.push(0),
        Some(e) => {
            b.push(1);
            b.extend_from_slice(&envelope_digest(e));
        }
    }
    if let Some(search) = &op.search {
        b.push(1);
        lp(&mut b, search.query.as_bytes());
        b.extend_from_slice(&search.limit.to_be_bytes());
    }
    if !op.agent_id.is_empty() {
        b.push(2);
        lp(&mut b, op.agent_id.as_bytes());
    }
    if let Some(t) = &op.issued_at {
        b.push(3);
        b.extend_from_slice(&t.seconds.to_be_bytes());
        b.extend_from_slice(&t.nanos.to_be_bytes());
    }
    b
}

/// This host's clock as a protobuf timestamp (the Unix epoch if the clock
/// reads earlier).
fn now() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// SHA-256 over the envelope's fields (not its protobuf encoding, so the
/// digest does not depend on how an encoder orders or skips fields).
fn envelope_digest(e: &PasswordEnvelope) -> [u8; 32] {
    let mut b = Vec::new();
    b.extend_from_slice(&e.version.to_be_bytes());
    b.extend_from_slice(&(e.copies.len() as u64).to_be_bytes());
    for c in &e.copies {
        lp(&mut b, c.agent_id.as_bytes());
        lp(&mut b, &c.encapsulated_key);
        lp(&mut b, &c.ciphertext);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, &b).as_ref());
    out
}

fn lp(b: &mut Vec<u8>, x: &[u8]) {
    b.extend_from_slice(&(x.len() as u64).to_be_bytes());
    b.extend_from_slice(x);
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &x in bytes {
        s.push(char::from(DIGITS[usize::from(x >> 4)]));
        s.push(char::from(DIGITS[usize::from(x & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use writeback_proto::v1::{OperationKind, SealedCopy, UserRef};

    fn op() -> OperationRequest {
        OperationRequest {
            operation_id: "op-1".into(),
            tenant: "t1".into(),
            domain: "contoso.test".into(),
            kind: OperationKind::Reset as i32,
            target: Some(UserRef {
                by: Some(user_ref::By::Upn("alice@contoso.test".into())),
            }),
            must_change_at_next_logon: true,
            unlock: false,
            expires_at: Some(prost_types::Timestamp {
                seconds: 1_900_000_000,
                nanos: 0,
            }),
            envelope: Some(PasswordEnvelope {
                version: 1,
                copies: vec![SealedCopy {
                    agent_id: "a1".into(),
                    encapsulated_key: vec![1; 32],
                    ciphertext: vec![2; 40],
                }],
            }),
            traceparent: String::new(),
            signature: Vec::new(),
            signing_key_id: String::new(),
            search: None,
            agent_id: String::new(),
            issued_at: None,
        }
    }

    type Change = (&'static str, Box<dyn Fn(&mut OperationRequest)>);

    /// Each change to the signed `good` makes it fail verification.
    fn assert_each_breaks_the_signature(
        good: &OperationRequest,
        trusted: &[TrustedKey],
        changes: Vec<Change>,
    ) {
        for (what, change) in changes {
            let mut op = good.clone();
            change(&mut op);
            assert_eq!(
                verify(&op, trusted),
                Err(SigningError::BadSignature),
                "{what}"
            );
        }
    }

    fn signed() -> (OperationSigner, OperationRequest) {
        let (signer, _) = OperationSigner::generate().unwrap();
        let mut op = op();
        signer.sign(&mut op);
        (signer, op)
    }

    #[test]
    fn a_signed_operation_verifies_and_survives_a_new_traceparent() {
        let (signer, mut op) = signed();
        assert_eq!(op.signing_key_id.len(), 16);
        verify(&op, &[signer.trusted_key()]).unwrap();
        op.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
        verify(&op, &[signer.trusted_key()]).unwrap();
    }

    #[test]
    fn every_covered_field_is_covered() {
        let (signer, good) = signed();
        let trusted = [signer.trusted_key()];
        let changes: Vec<Change> = vec![
            ("id", Box::new(|o| o.operation_id.push('x'))),
            ("tenant", Box::new(|o| o.tenant = "t2".into())),
            ("domain", Box::new(|o| o.domain = "fabrikam.test".into())),
            ("kind", Box::new(|o| o.kind = OperationKind::Unlock as i32)),
            (
                "target",
                Box::new(|o| {
                    o.target = Some(UserRef {
                        by: Some(user_ref::By::Upn("bob@contoso.test".into())),
                    })
                }),
            ),
            (
                "target form",
                Box::new(|o| {
                    o.target = Some(UserRef {
                        by: Some(user_ref::By::ObjectGuid("alice@contoso.test".into())),
                    })
                }),
            ),
            ("no target", Box::new(|o| o.target = None)),
            (
                "must change",
                Box::new(|o| o.must_change_at_next_logon = false),
            ),
            ("unlock", Box::new(|o| o.unlock = true)),
            (
                "expiry",
                Box::new(|o| o.expires_at.as_mut().unwrap().seconds += 3600),
            ),
            ("no expiry", Box::new(|o| o.expires_at = None)),
            ("no envelope", Box::new(|o| o.envelope = None)),
            (
                "ciphertext",
                Box::new(|o| o.envelope.as_mut().unwrap().copies[0].ciphertext[0] ^= 1),
            ),
            (
                "copy owner",
                Box::new(|o| o.envelope.as_mut().unwrap().copies[0].agent_id = "a2".into()),
            ),
            (
                "extra copy",
                Box::new(|o| {
                    let c = o.envelope.as_ref().unwrap().copies[0].clone();
                    o.envelope.as_mut().unwrap().copies.push(c);
                }),
            ),
            ("signature", Box::new(|o| o.signature[0] ^= 1)),
            ("agent added", Box::new(|o| o.agent_id = "a2".into())),
            (
                "issued earlier",
                Box::new(|o| o.issued_at.as_mut().unwrap().seconds -= 3600),
            ),
            ("no issue time", Box::new(|o| o.issued_at = None)),
            (
                "search added",
                Box::new(|o| {
                    o.search = Some(writeback_proto::v1::DirectorySearch {
                        query: "al".into(),
                        limit: 25,
                    })
                }),
            ),
        ];
        assert_each_breaks_the_signature(&good, &trusted, changes);
    }

    /// A directory search's query and limit are signed: a relay cannot
    /// widen a search or turn it into another.
    #[test]
    fn a_search_is_covered() {
        let (signer, _) = OperationSigner::generate().unwrap();
        let trusted = [signer.trusted_key()];
        let mut good = op();
        good.kind = OperationKind::DirectorySearch as i32;
        good.target = None;
        good.envelope = None;
        good.search = Some(writeback_proto::v1::DirectorySearch {
            query: "ali".into(),
            limit: 10,
        });
        signer.sign(&mut good);
        verify(&good, &trusted).unwrap();
        let changes: Vec<Change> = vec![
            (
                "query",
                Box::new(|o| o.search.as_mut().unwrap().query = "a".into()),
            ),
            ("limit", Box::new(|o| o.search.as_mut().unwrap().limit = 25)),
            ("no search", Box::new(|o| o.search = None)),
        ];
        assert_each_breaks_the_signature(&good, &trusted, changes);
    }

    /// The agent a write is bound to is signed: a relay cannot move it to
    /// another agent or drop the binding; and `sign` stamps the time.
    #[test]
    fn the_bound_agent_and_the_issue_time_are_covered() {
        let (signer, _) = OperationSigner::generate().unwrap();
        let trusted = [signer.trusted_key()];
        let mut good = op();
        good.agent_id = "a1".into();
        signer.sign(&mut good);
        let issued = good.issued_at.expect("sign stamps the time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((now - 5..=now + 5).contains(&issued.seconds), "{issued:?}");
        verify(&good, &trusted).unwrap();
        let changes: Vec<Change> = vec![
            ("other agent", Box::new(|o| o.agent_id = "a2".into())),
            ("unbound", Box::new(|o| o.agent_id.clear())),
            (
                "issue time",
                Box::new(|o| o.issued_at.as_mut().unwrap().nanos += 1),
            ),
        ];
        assert_each_breaks_the_signature(&good, &trusted, changes);
        // A time set before signing is kept.
        let mut dated = op();
        dated.issued_at = Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        });
        signer.sign(&mut dated);
        assert_eq!(dated.issued_at.unwrap().seconds, 1_800_000_000);
    }

    #[test]
    fn unsigned_foreign_and_unpinned_are_refused() {
        let (signer, op) = signed();
        let mut unsigned = op.clone();
        unsigned.signature.clear();
        assert_eq!(
            verify(&unsigned, &[signer.trusted_key()]),
            Err(SigningError::Unsigned)
        );
        // Signed by another key: unknown id, or a forged id of the pinned key.
        let (other, _) = OperationSigner::generate().unwrap();
        let mut forged = op.clone();
        other.sign(&mut forged);
        assert_eq!(
            verify(&forged, &[signer.trusted_key()]),
            Err(SigningError::UnknownKey)
        );
        forged.signing_key_id = signer.key_id().to_owned();
        other_sign_keeping_id(&other, &mut forged);
        assert_eq!(
            verify(&forged, &[signer.trusted_key()]),
            Err(SigningError::BadSignature)
        );
        assert_eq!(verify(&op, &[]), Err(SigningError::NoTrustedKey));
        // Rotation: either of two pinned keys.
        verify(&op, &[other.trusted_key(), signer.trusted_key()]).unwrap();
    }

    fn other_sign_keeping_id(other: &OperationSigner, op: &mut OperationRequest) {
        op.signature = other.key.sign(&signed_bytes(op)).as_ref().to_vec();
    }

    #[test]
    fn keys_round_trip_and_bad_keys_are_errors() {
        let (signer, pkcs8) = OperationSigner::generate().unwrap();
        let again = OperationSigner::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(again.key_id(), signer.key_id());
        assert_eq!(
            TrustedKey::new(&signer.public_key()).unwrap(),
            signer.trusted_key()
        );
        assert_eq!(TrustedKey::new(&[0; 31]), Err(SigningError::InvalidKey));
        assert_eq!(
            OperationSigner::from_pkcs8(b"garbage").unwrap_err(),
            SigningError::InvalidKey
        );
    }

    #[test]
    fn the_layout_is_stable() {
        // Pins the documented layout: a change here is a protocol change.
        let mut op = op();
        op.signing_key_id = "0123456789abcdef".into();
        op.envelope = None;
        let b = signed_bytes(&op);
        let mut want = CONTEXT.to_vec();
        for s in ["0123456789abcdef", "op-1", "t1", "contoso.test"] {
            want.extend_from_slice(&(s.len() as u64).to_be_bytes());
            want.extend_from_slice(s.as_bytes());
        }
        want.extend_from_slice(&1i32.to_be_bytes());
        want.push(1);
        want.extend_from_slice(&18u64.to_be_bytes());
        want.extend_from_slice(b"alice@contoso.test");
        want.extend_from_slice(&[1, 0, 1]);
        want.extend_from_slice(&1_900_000_000i64.to_be_bytes());
        want.extend_from_slice(&0i32.to_be_bytes());
        want.push(0);
        assert_eq!(b, want);
        // The agent and the issue time, each behind its own tag.
        op.agent_id = "a1".into();
        op.issued_at = Some(prost_types::Timestamp {
            seconds: 1_899_999_970,
            nanos: 5,
        });
        want.push(2);
        want.extend_from_slice(&2u64.to_be_bytes());
        want.extend_from_slice(b"a1");
        want.push(3);
        want.extend_from_slice(&1_899_999_970i64.to_be_bytes());
        want.extend_from_slice(&5i32.to_be_bytes());
        assert_eq!(signed_bytes(&op), want);
    }
}
