//! Entry points of the fuzz targets in `fuzz/` (see the README's "Fuzzing and
//! supply chain"): what the agent does with bytes it did not make — a domain
//! controller's answers ([`security_descriptor`], [`search_entry`],
//! [`repl_metadata`]), its own ledger file after a crash ([`ledger`]) and an
//! operation as the relay delivers it ([`operation`]). Each must not panic
//! on any input and checks what must hold for every input. Not an API.

use prost::Message;
use writeback_core::OperationKind;
use writeback_envelope::fuzz::{AGENT_ID, agent_key, trusted};
use writeback_envelope::signing::verify;
use writeback_proto::v1::OperationRequest;

pub use crate::directory::fuzz::{repl_metadata, search_entry, security_descriptor};
pub use crate::ledger::fuzz_read as ledger;

/// An `OperationRequest` off the relay's stream: the signature check against
/// the pinned key, the target, and the envelope opened with the agent's key
/// (whatever the signature said, so the fuzzer reaches the decoder behind
/// it). A signature that verifies stops verifying when a signed field
/// changes, and an envelope that opens does not open for another operation.
pub fn operation(bytes: &[u8]) {
    let Ok(op) = OperationRequest::decode(bytes) else {
        return;
    };
    let trusted = trusted();
    if verify(&op, &trusted).is_ok() {
        let mut altered = op.clone();
        altered.operation_id.push('x');
        assert!(
            verify(&altered, &trusted).is_err(),
            "a signature survived a change of the operation id"
        );
        altered.operation_id.clone_from(&op.operation_id);
        altered.unlock = !op.unlock;
        assert!(
            verify(&altered, &trusted).is_err(),
            "a signature survived a change of the unlock flag"
        );
        altered.unlock = op.unlock;
        altered.agent_id.push('x');
        assert!(
            verify(&altered, &trusted).is_err(),
            "a signature survived a change of the agent it is bound to"
        );
    }
    let _ = crate::executor::target_of(&op);
    let (Some(kind), Ok(key)) = (OperationKind::from_wire(op.kind), agent_key()) else {
        return;
    };
    if crate::executor::open_envelope(&op, kind, AGENT_ID, &key).is_ok() {
        let mut moved = op.clone();
        moved.operation_id.push('x');
        assert!(
            crate::executor::open_envelope(&moved, kind, AGENT_ID, &key).is_err(),
            "an envelope opened for another operation"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use prost::Message;

    /// Every seed in `fuzz/corpus/` goes through its entry point in the
    /// ordinary test run too (the fuzz targets themselves are built only by
    /// `scripts/fuzz.sh`), so the entry points and the seeds cannot rot.
    #[test]
    fn the_seed_corpus_passes() {
        writeback_envelope::fuzz::run_seeds(&[
            ("sd", super::security_descriptor as fn(&[u8])),
            ("ldap_entry", super::search_entry),
            ("repl_metadata", super::repl_metadata),
            ("ledger", super::ledger),
            ("operation", super::operation),
        ]);
    }

    /// The `operation` seeds reach past the checks they are meant to pass
    /// (written by `cargo run -p writeback-envelope --example fuzz_seeds`):
    /// each verifies against the fuzz key, and each that carries a password
    /// opens, so the fuzzer mutates from deep inside.
    #[test]
    fn the_operation_seeds_verify_and_open() {
        let key = super::agent_key().unwrap();
        for seed in writeback_envelope::fuzz::seeds("operation") {
            let op = super::OperationRequest::decode(seed.as_slice()).unwrap();
            super::verify(&op, &super::trusted()).unwrap();
            let kind = super::OperationKind::from_wire(op.kind).unwrap();
            if kind.carries_password() {
                crate::executor::open_envelope(&op, kind, super::AGENT_ID, &key).unwrap();
            }
        }
    }
}
