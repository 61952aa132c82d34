//! Writes the seed corpus of the `operation` fuzz target: operations signed
//! with the fuzz corpus's fixed signing key and sealed to its fixed agent key
//! (`writeback_envelope::fuzz`), so the fuzzer starts from inputs that pass
//! the signature check and open, and mutates from there.
//!
//!     cargo run -p writeback-envelope --example fuzz_seeds -- fuzz/corpus/operation

use std::path::PathBuf;

use prost::Message;
use secrecy::SecretString;
use writeback_envelope::fuzz::{AGENT_ID, agent_key, sign};
use writeback_envelope::{Binding, Recipient, Secrets, seal};
use writeback_proto::v1::{OperationKind, OperationRequest, UserRef, user_ref};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: fuzz_seeds DIR")?);
    std::fs::create_dir_all(&dir)?;
    let key = agent_key()?;
    let public = key.public_bytes();
    // (name, kind, kind name, target, old password, unlock)
    let cases: [(&str, OperationKind, &str, user_ref::By, bool, bool); 4] = [
        (
            "reset",
            OperationKind::Reset,
            "reset",
            user_ref::By::Upn("alice@contoso.test".into()),
            false,
            true,
        ),
        (
            "change",
            OperationKind::Change,
            "change",
            user_ref::By::Upn("bob@contoso.test".into()),
            true,
            false,
        ),
        (
            "forced-change-guid",
            OperationKind::ForcedChange,
            "forced_change",
            user_ref::By::ObjectGuid("01020304-0506-0708-090a-0b0c0d0e0f10".into()),
            true,
            false,
        ),
        (
            "unlock",
            OperationKind::Unlock,
            "unlock",
            user_ref::By::Upn("carol@contoso.test".into()),
            false,
            false,
        ),
    ];
    for (name, kind, kind_name, by, with_old, unlock) in cases {
        let target_key = match &by {
            user_ref::By::Upn(u) => format!("upn:{u}"),
            user_ref::By::ObjectGuid(g) => format!("guid:{g}"),
        };
        let mut op = OperationRequest {
            operation_id: format!("seed-{name}"),
            tenant: "t1".into(),
            domain: "contoso.test".into(),
            kind: kind as i32,
            target: Some(UserRef { by: Some(by) }),
            must_change_at_next_logon: kind == OperationKind::Reset,
            unlock,
            expires_at: Some(prost_types::Timestamp {
                seconds: 4_102_444_800,
                nanos: 0,
            }),
            // Bound to the fuzz agent and dated, as the control plane signs
            // every write (a fixed date keeps the seeds reproducible).
            agent_id: AGENT_ID.into(),
            issued_at: Some(prost_types::Timestamp {
                seconds: 1_767_225_600,
                nanos: 0,
            }),
            ..OperationRequest::default()
        };
        if kind != OperationKind::Unlock {
            let binding = Binding {
                tenant: &op.tenant,
                domain: &op.domain,
                operation_id: &op.operation_id,
                target: &target_key,
                kind: kind_name,
                must_change_at_next_logon: op.must_change_at_next_logon,
                unlock: op.unlock,
                expires_at: 4_102_444_800,
            };
            let secrets = Secrets {
                new_password: SecretString::from("N3w-Passw0rd!"),
                old_password: with_old.then(|| SecretString::from("0ld-Passw0rd!")),
            };
            let recipients = [Recipient {
                agent_id: AGENT_ID,
                public_key: &public,
            }];
            op.envelope = Some(seal(&recipients, &binding, &secrets)?);
        }
        sign(&mut op)?;
        std::fs::write(dir.join(name), op.encode_to_vec())?;
    }
    Ok(())
}
