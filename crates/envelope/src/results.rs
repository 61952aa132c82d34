//! Result signatures: the other direction of [`crate::signing`]. Every
//! `OperationResult` an agent sends — an operation's outcome, an outcome
//! query's ledger answer, a policy query's report, a refusal — is signed
//! with the agent's result-signing key, an Ed25519 key generated on the
//! agent (`result.key` in its state directory, mode 0600) whose public half
//! the control plane records at enrollment (or, for an agent enrolled
//! before results were signed, at its first renewal). The control plane
//! verifies each result against the key it holds for the agent id the
//! result names, and against the operation it sent: a relay in the middle
//! can delay or drop a result, never forge one, move one to another
//! operation, or alter the ledger state, the reason, the timings or the DC.
//!
//! A dedicated key rather than the certificate's: it does not change when
//! the certificate is renewed, so a result signed just before a renewal
//! still verifies after it, and the control plane needs no window in which
//! two keys are accepted.
//!
//! # The signed bytes
//!
//! Ed25519 (RFC 8032, pure) over exactly this byte string, with `lp(x)` the
//! length of `x` as a big-endian `u64` followed by the bytes of `x` (every
//! variable-length field is length-prefixed and every optional one tagged,
//! so no two results share an encoding):
//!
//! ```text
//! "writeback.v1 result signature\0"          (30 bytes, the context)
//! lp(signing_key_id)
//! request digest                             (32 bytes, see below)
//! lp(request.tenant) lp(request.domain)      (the operation answered)
//! request.kind                               (i32 BE, the wire enum value)
//! lp(result.operation_id) lp(result.agent_id)
//! outcome:  0x00                             (absent)
//!         | 0x01 lp(reason_code) lp(message) applied (0x00 | 0x01)
//! agent_duration_ms (u64 BE) directory_duration_ms (u64 BE)
//! lp(dc_url)
//! ledger_state (i32 BE) ledger_since_ms (i64 BE)
//! policy_report: 0x00                        (absent)
//!              | 0x01 SHA-256(prost encoding of the PolicyReport)
//! search_result: 0x00                        (absent)
//!              | 0x01 SHA-256(prost encoding of the DirectorySearchResult)
//! lp(target_guid) lp(target_upn)             (whom a password write found)
//! ```
//!
//! The request digest is SHA-256 over [`crate::signing::signed_bytes`] of
//! the operation as the agent received it followed by `lp(signature)`: a
//! result answers one signed operation, not merely an operation id. An
//! operation the relay altered on the way down yields a digest the control
//! plane does not reproduce, so even the agent's honest refusal of it is
//! not recorded (the outcome stays unknown and is asked about again).
//!
//! The policy report and the directory search's answer enter as the digest
//! of their prost encoding: prost
//! writes known fields in tag order and omits defaults, and both ends
//! decode and encode with the same generated code. A field added to
//! `PolicyReport` (or `DirectorySearchResult`) is therefore covered without touching this module, but
//! an end that does not know it drops it on decoding and the signature
//! fails: a newer agent's report is refused, never misread, until the
//! control plane is upgraded too. Any other field added to
//! `OperationResult` must be added here.

use prost::Message as _;
use ring::digest::{SHA256, digest};
use ring::signature::{ED25519, UnparsedPublicKey};
use writeback_proto::v1::{OperationRequest, OperationResult};
use zeroize::Zeroizing;

use crate::signing::{OperationSigner, SigningError, TrustedKey, signed_bytes};

/// Domain separation from operation signatures ([`crate::signing::CONTEXT`]).
pub const CONTEXT: &[u8] = b"writeback.v1 result signature\0";

/// An agent's result-signing key (Ed25519; the same key type and key id
/// as the control plane's operation-signing key, a different context).
#[derive(Debug)]
pub struct ResultSigner(OperationSigner);

impl ResultSigner {
    /// A fresh key; returns it and its PKCS#8 (v2) document to store.
    pub fn generate() -> Result<(ResultSigner, Zeroizing<Vec<u8>>), SigningError> {
        let (signer, pkcs8) = OperationSigner::generate()?;
        Ok((ResultSigner(signer), pkcs8))
    }

    /// The key in a PKCS#8 document (v1 or v2).
    pub fn from_pkcs8(der: &[u8]) -> Result<ResultSigner, SigningError> {
        OperationSigner::from_pkcs8(der).map(ResultSigner)
    }

    /// The key's id (what `OperationResult.signing_key_id` carries).
    pub fn key_id(&self) -> &str {
        self.0.key_id()
    }

    /// The 32-byte public key the control plane records.
    pub fn public_key(&self) -> Vec<u8> {
        self.0.public_key()
    }

    /// Signs `result`, the answer to `request` (the operation exactly as it
    /// arrived), setting its `signing_key_id` and `signature`.
    pub fn sign(&self, request: &OperationRequest, result: &mut OperationResult) {
        result.signing_key_id = self.key_id().to_owned();
        result.signature = self.0.sign_raw(&result_bytes(request, result));
    }
}

/// Checks that `result` answers `request` (the operation as the control
/// plane signed and sent it) and was signed, unaltered, with `key` (the
/// result-signing key recorded for the agent the result names).
pub fn verify(
    request: &OperationRequest,
    result: &OperationResult,
    key: &TrustedKey,
) -> Result<(), SigningError> {
    if result.signature.is_empty() {
        return Err(SigningError::Unsigned);
    }
    if result.signing_key_id != key.key_id {
        return Err(SigningError::UnknownKey);
    }
    UnparsedPublicKey::new(&ED25519, &key.public_key)
        .verify(&result_bytes(request, result), &result.signature)
        .map_err(|_| SigningError::BadSignature)
}

/// SHA-256 of the signed operation: its signed bytes and its signature.
pub fn request_digest(request: &OperationRequest) -> [u8; 32] {
    let mut b = signed_bytes(request);
    lp(&mut b, &request.signature);
    sha256(&b)
}

/// The exact bytes signed for `result` answering `request` (module docs).
pub fn result_bytes(request: &OperationRequest, result: &OperationResult) -> Vec<u8> {
    let mut b = Vec::with_capacity(512);
    b.extend_from_slice(CONTEXT);
    lp(&mut b, result.signing_key_id.as_bytes());
    b.extend_from_slice(&request_digest(request));
    lp(&mut b, request.tenant.as_bytes());
    lp(&mut b, request.domain.as_bytes());
    b.extend_from_slice(&request.kind.to_be_bytes());
    lp(&mut b, result.operation_id.as_bytes());
    lp(&mut b, result.agent_id.as_bytes());
    match &result.outcome {
        None => b.push(0),
        Some(o) => {
            b.push(1);
            lp(&mut b, o.reason_code.as_bytes());
            lp(&mut b, o.message.as_bytes());
            b.push(u8::from(o.applied));
        }
    }
    b.extend_from_slice(&result.agent_duration_ms.to_be_bytes());
    b.extend_from_slice(&result.directory_duration_ms.to_be_bytes());
    lp(&mut b, result.dc_url.as_bytes());
    b.extend_from_slice(&result.ledger_state.to_be_bytes());
    b.extend_from_slice(&result.ledger_since_ms.to_be_bytes());
    for part in [
        result.policy_report.as_ref().map(|p| p.encode_to_vec()),
        result.search_result.as_ref().map(|s| s.encode_to_vec()),
    ] {
        match part {
            None => b.push(0),
            Some(encoded) => {
                b.push(1);
                b.extend_from_slice(&sha256(&encoded));
            }
        }
    }
    // The throttle takes these as one person's names: a relay must not
    // join two people.
    lp(&mut b, result.target_guid.as_bytes());
    lp(&mut b, result.target_upn.as_bytes());
    b
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, b).as_ref());
    out
}

fn lp(b: &mut Vec<u8>, x: &[u8]) {
    b.extend_from_slice(&(x.len() as u64).to_be_bytes());
    b.extend_from_slice(x);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use writeback_proto::v1::{OperationKind, OperationOutcome, PolicyReport};

    fn request() -> (OperationSigner, OperationRequest) {
        let (cp, _) = OperationSigner::generate().unwrap();
        let mut op = OperationRequest {
            operation_id: "op-1".into(),
            tenant: "t1".into(),
            domain: "contoso.test".into(),
            kind: OperationKind::Reset as i32,
            expires_at: Some(prost_types::Timestamp {
                seconds: 1_900_000_000,
                nanos: 0,
            }),
            ..OperationRequest::default()
        };
        cp.sign(&mut op);
        (cp, op)
    }

    fn result() -> OperationResult {
        OperationResult {
            operation_id: "op-1".into(),
            outcome: Some(OperationOutcome {
                reason_code: "PASSWORD_TOO_SHORT".into(),
                message: "too short".into(),
                applied: false,
            }),
            agent_id: "a1".into(),
            agent_duration_ms: 40,
            policy_report: Some(Box::new(PolicyReport {
                account_name: "alice".into(),
                ..PolicyReport::default()
            })),
            directory_duration_ms: 31,
            dc_url: "ldaps://dc1.contoso.test".into(),
            ledger_state: 3,
            ledger_since_ms: 1_700_000_000_000,
            ..OperationResult::default()
        }
    }

    fn trusted(s: &ResultSigner) -> TrustedKey {
        TrustedKey::new(&s.public_key()).unwrap()
    }

    #[test]
    fn every_field_the_control_plane_acts_on_is_covered() {
        let (_, op) = request();
        let (agent, _) = ResultSigner::generate().unwrap();
        let key = trusted(&agent);
        let mut good = result();
        agent.sign(&op, &mut good);
        verify(&op, &good, &key).unwrap();
        type Change = (&'static str, Box<dyn Fn(&mut OperationResult)>);
        let changes: Vec<Change> = vec![
            ("id", Box::new(|r| r.operation_id.push('x'))),
            ("agent", Box::new(|r| r.agent_id = "a2".into())),
            (
                "reason",
                Box::new(|r| r.outcome.as_mut().unwrap().reason_code = "OK".into()),
            ),
            (
                "message",
                Box::new(|r| r.outcome.as_mut().unwrap().message.push('!')),
            ),
            (
                "applied",
                Box::new(|r| r.outcome.as_mut().unwrap().applied = true),
            ),
            ("no outcome", Box::new(|r| r.outcome = None)),
            ("agent time", Box::new(|r| r.agent_duration_ms += 1)),
            ("directory time", Box::new(|r| r.directory_duration_ms += 1)),
            ("dc", Box::new(|r| r.dc_url = "ldaps://evil".into())),
            ("ledger state", Box::new(|r| r.ledger_state = 1)),
            ("ledger since", Box::new(|r| r.ledger_since_ms -= 1)),
            (
                "policy",
                Box::new(|r| r.policy_report.as_mut().unwrap().account_name = "bob".into()),
            ),
            ("no policy", Box::new(|r| r.policy_report = None)),
            (
                "target guid",
                Box::new(|r| r.target_guid = "guid-of-mallory".into()),
            ),
            (
                "target upn",
                Box::new(|r| r.target_upn = "mallory@contoso.test".into()),
            ),
            (
                "search",
                Box::new(|r| r.search_result = Some(Box::default())),
            ),
            ("signature", Box::new(|r| r.signature[0] ^= 1)),
        ];
        for (what, change) in changes {
            let mut r = good.clone();
            change(&mut r);
            assert_eq!(
                verify(&op, &r, &key),
                Err(SigningError::BadSignature),
                "{what}"
            );
        }
    }

    #[test]
    fn a_result_is_bound_to_the_signed_operation_it_answers() {
        let (cp, op) = request();
        let (agent, _) = ResultSigner::generate().unwrap();
        let key = trusted(&agent);
        let mut r = result();
        agent.sign(&op, &mut r);
        type Change = (&'static str, Box<dyn Fn(&mut OperationRequest)>);
        let changes: Vec<Change> = vec![
            ("tenant", Box::new(|o| o.tenant = "t2".into())),
            ("domain", Box::new(|o| o.domain = "fabrikam.test".into())),
            ("kind", Box::new(|o| o.kind = OperationKind::Unlock as i32)),
            ("op id", Box::new(|o| o.operation_id = "op-2".into())),
            ("flags", Box::new(|o| o.unlock = true)),
            ("signature", Box::new(|o| o.signature[0] ^= 1)),
        ];
        for (what, change) in changes {
            let mut other = op.clone();
            change(&mut other);
            if what != "signature" {
                cp.sign(&mut other);
            }
            assert_eq!(
                verify(&other, &r, &key),
                Err(SigningError::BadSignature),
                "{what}"
            );
        }
        // The traceparent is not part of the operation's meaning.
        let mut traced = op.clone();
        traced.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
        verify(&traced, &r, &key).unwrap();
    }

    #[test]
    fn unsigned_and_other_keys_are_refused() {
        let (_, op) = request();
        let (agent, pkcs8) = ResultSigner::generate().unwrap();
        let (other, _) = ResultSigner::generate().unwrap();
        let mut r = result();
        assert_eq!(
            verify(&op, &r, &trusted(&agent)),
            Err(SigningError::Unsigned)
        );
        other.sign(&op, &mut r);
        assert_eq!(
            verify(&op, &r, &trusted(&agent)),
            Err(SigningError::UnknownKey)
        );
        // Another agent's signature under this agent's key id.
        r.signing_key_id = agent.key_id().to_owned();
        r.signature = other.0.sign_raw(&result_bytes(&op, &r));
        assert_eq!(
            verify(&op, &r, &trusted(&agent)),
            Err(SigningError::BadSignature)
        );
        // The stored key signs as before.
        let again = ResultSigner::from_pkcs8(&pkcs8).unwrap();
        let mut r = result();
        again.sign(&op, &mut r);
        verify(&op, &r, &trusted(&agent)).unwrap();
    }

    #[test]
    fn the_layout_is_stable() {
        let (_, op) = request();
        let mut r = OperationResult {
            operation_id: "op-1".into(),
            agent_id: "a1".into(),
            signing_key_id: "0123456789abcdef".into(),
            ..OperationResult::default()
        };
        r.dc_url = "d".into();
        let mut want = CONTEXT.to_vec();
        lp(&mut want, b"0123456789abcdef");
        want.extend_from_slice(&request_digest(&op));
        lp(&mut want, b"t1");
        lp(&mut want, b"contoso.test");
        want.extend_from_slice(&1i32.to_be_bytes());
        lp(&mut want, b"op-1");
        lp(&mut want, b"a1");
        want.push(0);
        want.extend_from_slice(&[0; 16]);
        lp(&mut want, b"d");
        want.extend_from_slice(&[0; 12]);
        want.extend_from_slice(&[0, 0]);
        lp(&mut want, b"");
        lp(&mut want, b"");
        assert_eq!(result_bytes(&op, &r), want);
        assert_eq!(CONTEXT.len(), 30);
    }
}
