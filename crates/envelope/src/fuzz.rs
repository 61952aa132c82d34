//! Fixed keys for the `operation` fuzz target (`fuzz/`, see the README's
//! "Fuzzing and supply chain") and its seed corpus: an operation-signing key
//! and an agent envelope key made from constant seeds, so seeds written once
//! still verify and open in every later run. They protect nothing: no
//! deployment uses them (keys are generated at setup and at enrollment).
//! Not an API.

use writeback_proto::v1::OperationRequest;

use crate::KeyPair;
use crate::signing::{OperationSigner, SigningError, TrustedKey};

/// The agent id the seed envelopes are sealed to.
pub const AGENT_ID: &str = "fuzz-agent";

/// PKCS#8 v1 for Ed25519 (RFC 8410): this prefix, then the 32-byte seed.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The operation-signing key of the fuzz corpus.
pub fn signer() -> Result<OperationSigner, SigningError> {
    let mut der = PKCS8_V1_PREFIX.to_vec();
    der.extend_from_slice(&[0x5e; 32]);
    OperationSigner::from_pkcs8(&der)
}

/// The pinned key matching [`signer`].
pub fn trusted() -> Vec<TrustedKey> {
    signer().map(|s| vec![s.trusted_key()]).unwrap_or_default()
}

/// The envelope key of [`AGENT_ID`].
pub fn agent_key() -> Result<KeyPair, crate::Error> {
    KeyPair::from_secret_bytes(&[0x3c; 32])
}

/// Signs `op` with [`signer`] (for writing seeds).
pub fn sign(op: &mut OperationRequest) -> Result<(), SigningError> {
    signer()?.sign(op);
    Ok(())
}

/// The seed corpus of fuzz target `target` (`fuzz/corpus/<target>/`), for
/// the unit tests that pass every seed through its entry point; empty when
/// the directory cannot be read.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|f| std::fs::read(f.ok()?.path()).ok())
        .collect()
}

/// A fuzz target's entry point.
pub type EntryPoint = fn(&[u8]);

/// Runs every seed of each `(target, entry point)` through the entry point
/// (for the crates' unit tests); panics when a target has fewer than three
/// seeds, so a moved or emptied corpus is noticed.
pub fn run_seeds(targets: &[(&str, EntryPoint)]) {
    for (target, run) in targets {
        let seeds = seeds(target);
        assert!(seeds.len() >= 3, "{target}: only {} seeds", seeds.len());
        seeds.iter().for_each(|s| run(s));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn the_fixed_keys_load_and_sign() {
        let mut op = writeback_proto::v1::OperationRequest {
            operation_id: "op".into(),
            ..Default::default()
        };
        super::sign(&mut op).unwrap();
        crate::signing::verify(&op, &super::trusted()).unwrap();
        super::agent_key().unwrap();
    }
}
