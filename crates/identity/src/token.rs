//! Enrollment tokens: `wbe1.<token id>.<secret>.<CA SHA-256 fingerprint>`.
//! The control plane stores only the secret's SHA-256; the fingerprint lets
//! the agent authenticate the control plane on first contact, before it has
//! the CA.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::Error;

const PREFIX: &str = "wbe1";

/// A parsed enrollment token. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// Public id, the lookup key.
    pub token_id: String,
    /// The one-time secret (hex).
    pub secret: String,
    /// SHA-256 of the tenant CA certificate, lowercase hex.
    pub ca_fingerprint: String,
}

impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("token_id", &self.token_id)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

impl EnrollmentToken {
    /// A fresh token for the CA with `ca_fingerprint`.
    pub fn generate(ca_fingerprint: &str) -> EnrollmentToken {
        EnrollmentToken {
            token_id: random_hex(8),
            secret: random_hex(32),
            ca_fingerprint: ca_fingerprint.to_owned(),
        }
    }

    /// Parses the wire form; any deviation is an error (no partial tokens).
    pub fn parse(s: &str) -> Result<EnrollmentToken, Error> {
        let bad = || Error::Pki("the enrollment token is malformed".into());
        let parts: Vec<&str> = s.trim().split('.').collect();
        let [PREFIX, id, secret, fp] = parts.as_slice() else {
            return Err(bad());
        };
        let hex_of =
            |v: &str, len: usize| v.len() == len && v.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_of(id, 16) || !hex_of(secret, 64) || !hex_of(fp, 64) {
            return Err(bad());
        }
        Ok(EnrollmentToken {
            token_id: id.to_ascii_lowercase(),
            secret: secret.to_ascii_lowercase(),
            ca_fingerprint: fp.to_ascii_lowercase(),
        })
    }

    /// The wire form, to hand to an operator once.
    pub fn expose(&self) -> String {
        format!(
            "{PREFIX}.{}.{}.{}",
            self.token_id, self.secret, self.ca_fingerprint
        )
    }

    /// SHA-256 of the secret, what the control plane stores.
    pub fn secret_hash(&self) -> String {
        sha256_hex(self.secret.as_bytes())
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `n` random bytes from the OS, hex-encoded.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::fill(buf.as_mut_slice());
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_hide_their_secret() {
        let t = EnrollmentToken::generate(&"ab".repeat(32));
        let parsed = EnrollmentToken::parse(&t.expose()).unwrap();
        assert_eq!(parsed, t);
        assert!(!format!("{t:?}").contains(&t.secret));
        assert_ne!(t.secret_hash(), t.secret);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = EnrollmentToken::generate(&"ab".repeat(32)).expose();
        for bad in [
            "",
            "wbe1",
            &good.replace("wbe1", "wbe2"),
            &format!("{good}.x"),
            &good[..good.len() - 1],
        ] {
            assert!(EnrollmentToken::parse(bad).is_err(), "{bad}");
        }
    }
}
