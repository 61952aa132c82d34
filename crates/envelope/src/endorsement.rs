//! Endorsements of operation-signing keys: how an agent takes up a new
//! key without trusting whoever answered its renewal. When the control
//! plane publishes a key beside the one it signs with (`signing-key
//! rotate`), it also publishes that key signed by the current one; when it
//! promotes the key, the signature made by the key it retires stays
//! published. An agent pins a key a renewal offers only when it already
//! pins it or a key it pins (directly, or through a chain of such
//! endorsements) endorsed it ([`accept`]); anything else is refused and
//! reported, and the keys it pins stay. The first keys come with the
//! enrollment, from the control plane authenticated by the CA the token
//! pins and its API's identity.
//!
//! # The signed bytes
//!
//! Ed25519 by the endorsing key over exactly this byte string (`lp(x)` is
//! the length of `x` as a big-endian `u64` followed by the bytes of `x`):
//!
//! ```text
//! "writeback.v1 operation-signing key endorsement\0"   (the context)
//! lp(endorser_key_id)                                   (UTF-8)
//! lp(endorsed public key)                               (32 bytes)
//! ```
//!
//! The context differs from the operation signature's and the result
//! signature's, so an endorsement can never be taken for either, nor
//! either for an endorsement.

use ring::signature::{ED25519, UnparsedPublicKey};

use crate::signing::{OperationSigner, PUBLIC_KEY_LEN, TrustedKey, key_id_of};

/// Domain separation: no other writeback signature starts with these bytes.
pub const CONTEXT: &[u8] = b"writeback.v1 operation-signing key endorsement\0";

/// One key's public half signed by another operation-signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endorsement {
    /// The endorsed Ed25519 public key (32 bytes).
    pub public_key: Vec<u8>,
    /// The id ([`key_id_of`]) of the key that signed it.
    pub endorser_key_id: String,
    /// The Ed25519 signature over [`endorsed_bytes`].
    pub signature: Vec<u8>,
}

/// The exact bytes an endorsement signs (see the module docs).
pub fn endorsed_bytes(endorser_key_id: &str, public_key: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(CONTEXT.len() + 16 + endorser_key_id.len() + public_key.len());
    b.extend_from_slice(CONTEXT);
    for part in [endorser_key_id.as_bytes(), public_key] {
        b.extend_from_slice(&(part.len() as u64).to_be_bytes());
        b.extend_from_slice(part);
    }
    b
}

impl OperationSigner {
    /// Endorses `public_key` (another operation-signing key's public half)
    /// with this key.
    pub fn endorse(&self, public_key: &[u8]) -> Endorsement {
        Endorsement {
            public_key: public_key.to_vec(),
            endorser_key_id: self.key_id().to_owned(),
            signature: self.sign_raw(&endorsed_bytes(self.key_id(), public_key)),
        }
    }
}

/// True when `endorsement` is signed by `by` and well formed.
pub fn verify(endorsement: &Endorsement, by: &TrustedKey) -> bool {
    endorsement.public_key.len() == PUBLIC_KEY_LEN
        && endorsement.endorser_key_id == by.key_id
        && UnparsedPublicKey::new(&ED25519, &by.public_key)
            .verify(
                &endorsed_bytes(&endorsement.endorser_key_id, &endorsement.public_key),
                &endorsement.signature,
            )
            .is_ok()
}

/// What an agent pins after a renewal offered `offered` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The keys to pin from now on: the offered keys the agent already
    /// pins or that a pinned key endorsed. When that leaves none, the keys
    /// pinned before (a control plane whose keys the agent cannot trust
    /// does not get to empty its list).
    pub keys: Vec<TrustedKey>,
    /// The ids of offered keys refused: no pinned key endorsed them (or
    /// they are malformed).
    pub refused: Vec<String>,
}

/// Decides which of the `offered` keys an agent pinning `pinned` takes up,
/// given the control plane's `endorsements`: a key is trusted when it is
/// pinned, or an endorsement by a trusted key names it (so a chain of
/// rotations is followed); the offered keys that are trusted become the
/// pinned list, in the offered order.
pub fn accept(
    pinned: &[TrustedKey],
    offered: &[Vec<u8>],
    endorsements: &[Endorsement],
) -> Accepted {
    let mut trusted: Vec<TrustedKey> = pinned.to_vec();
    // Each pass adds at least one key or stops: at most one pass per
    // endorsement.
    for _ in 0..=endorsements.len() {
        let mut added = false;
        for e in endorsements {
            if trusted.iter().any(|k| k.public_key == e.public_key) {
                continue;
            }
            let endorsed = trusted
                .iter()
                .filter(|k| k.key_id == e.endorser_key_id)
                .any(|k| verify(e, k));
            if endorsed && let Ok(k) = TrustedKey::new(&e.public_key) {
                trusted.push(k);
                added = true;
            }
        }
        if !added {
            break;
        }
    }
    let mut keys = Vec::new();
    let mut refused = Vec::new();
    for k in offered {
        match trusted.iter().find(|t| t.public_key == *k) {
            Some(t) if !keys.contains(t) => keys.push(t.clone()),
            Some(_) => {}
            None => refused.push(key_id_of(k)),
        }
    }
    if keys.is_empty() {
        keys = pinned.to_vec();
    }
    Accepted { keys, refused }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn signer() -> OperationSigner {
        OperationSigner::generate().unwrap().0
    }

    #[test]
    fn a_key_is_taken_up_only_when_a_pinned_key_endorsed_it() {
        let (current, next, forged) = (signer(), signer(), signer());
        let pinned = vec![current.trusted_key()];
        let offered = vec![current.public_key(), next.public_key()];

        // Endorsed by the pinned key: both pinned.
        let good = current.endorse(&next.public_key());
        let a = accept(&pinned, &offered, std::slice::from_ref(&good));
        assert_eq!(a.keys, vec![current.trusted_key(), next.trusted_key()]);
        assert!(a.refused.is_empty());

        // No endorsement, or one by a key the agent does not pin (the
        // relay's own key endorsing itself): refused, the pinned key stays.
        for endorsements in [vec![], vec![forged.endorse(&next.public_key())]] {
            let a = accept(&pinned, &offered, &endorsements);
            assert_eq!(a.keys, vec![current.trusted_key()]);
            assert_eq!(a.refused, vec![next.key_id().to_owned()]);
        }
        // A signature moved to another key, or altered: refused.
        let mut moved = good.clone();
        moved.public_key = forged.public_key();
        let offered_forged = vec![current.public_key(), forged.public_key()];
        let a = accept(&pinned, &offered_forged, &[moved]);
        assert_eq!(a.refused, vec![forged.key_id().to_owned()]);
        let mut altered = good.clone();
        altered.signature[0] ^= 1;
        assert!(!verify(&altered, &current.trusted_key()));
        // An endorsement naming the pinned key's id but signed by another.
        let mut lying = forged.endorse(&next.public_key());
        lying.endorser_key_id = current.key_id().to_owned();
        let a = accept(&pinned, &offered, &[lying]);
        assert_eq!(a.refused, vec![next.key_id().to_owned()]);

        // Only unendorsed keys offered: the pinned list is kept, not emptied.
        let a = accept(&pinned, &[forged.public_key()], &[]);
        assert_eq!(a.keys, pinned);
        assert_eq!(a.refused, vec![forged.key_id().to_owned()]);
    }

    #[test]
    fn a_chain_of_rotations_is_followed_and_retired_keys_are_dropped() {
        let (k0, k1, k2) = (signer(), signer(), signer());
        let chain = vec![k1.endorse(&k2.public_key()), k0.endorse(&k1.public_key())];
        // The agent pins k0 only; the control plane now signs with k2.
        let a = accept(&[k0.trusted_key()], &[k2.public_key()], &chain);
        assert_eq!(a.keys, vec![k2.trusted_key()]);
        assert!(a.refused.is_empty());
    }

    #[test]
    fn the_signed_bytes_are_length_prefixed_after_their_own_context() {
        let b = endorsed_bytes("ab", &[7; 32]);
        assert!(b.starts_with(CONTEXT));
        assert_ne!(CONTEXT, crate::signing::CONTEXT);
        let rest = &b[CONTEXT.len()..];
        assert_eq!(&rest[..8], &2u64.to_be_bytes());
        assert_eq!(&rest[8..10], b"ab");
        assert_eq!(&rest[10..18], &32u64.to_be_bytes());
        assert_eq!(rest.len(), 18 + 32);
    }
}
