//! The production [`Apply`]: operations go to Active Directory through
//! [`Directory`], and directory errors become failures with their stable
//! reason code and a help-desk sentence (the DC's raw text stays in the log).

use secrecy::SecretString;
use writeback_core::{Failure, OperationKind, ReasonCode};
use writeback_envelope::Secrets;
use writeback_proto::v1::DcStatus;

use crate::directory::{Directory, DirectoryError, ResetOptions};
use crate::executor::{Apply, ValidOperation};

fn failure(e: DirectoryError) -> Failure {
    Failure::new(e.reason(), e.public_message())
}

fn missing_password() -> Failure {
    Failure::new(
        ReasonCode::InvalidArgument,
        "the operation carries no password",
    )
}

#[tonic::async_trait]
impl Apply for Directory {
    async fn apply(&self, op: &ValidOperation, secrets: Option<&Secrets>) -> Result<(), Failure> {
        match op.kind {
            OperationKind::Reset => {
                let s = secrets.ok_or_else(missing_password)?;
                let opts = ResetOptions {
                    must_change_at_next_logon: op.must_change_at_next_logon,
                    unlock: op.unlock,
                };
                self.reset_password(&op.target, &s.new_password, opts)
                    .await
                    .map_err(failure)
            }
            OperationKind::Change | OperationKind::ForcedChange => {
                let s = secrets.ok_or_else(missing_password)?;
                let old: &SecretString = s.old_password.as_ref().ok_or_else(missing_password)?;
                self.change_password(&op.target, old, &s.new_password)
                    .await
                    .map_err(failure)
            }
            OperationKind::Unlock => self.unlock(&op.target).await.map_err(failure),
        }
    }

    async fn health(&self) -> Vec<DcStatus> {
        self.check_reachable()
            .await
            .into_iter()
            .map(|(url, r)| DcStatus {
                url,
                reachable: r.is_ok(),
                reason_code: r
                    .err()
                    .map(|e| e.reason().as_str().to_owned())
                    .unwrap_or_default(),
            })
            .collect()
    }
}
