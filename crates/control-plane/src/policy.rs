//! The seed's supported/unsupported operation tables as one pure function.
//! The origin is the client app the caller's token was issued to, so a
//! client cannot claim another origin. Every refusal names the rule.
//!
//! | caller | operation | origin | result |
//! |---|---|---|---|
//! | anyone | change / forced change of own password | any | written back |
//! | anyone | reset of own password (SSPR) | portal | written back |
//! | end user | reset of own password | graph, powershell, m365 | UNSUPPORTED_OPERATION |
//! | anyone | unlock own account (SSPR) | portal, with the unlock toggle | written back |
//! | administrator | reset of an end user | portal, graph | written back |
//! | administrator | reset of an end user | powershell, m365 admin center | UNSUPPORTED_OPERATION |
//! | administrator | reset or unlock of another administrator | any | UNSUPPORTED_OPERATION |
//! | end user | anything on another user | any | PERMISSION_DENIED |

use writeback_core::{Failure, OperationKind, ReasonCode};

use crate::store::{ClientApp, Role, Settings};

/// Whom the operation targets, relative to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// The caller's own account.
    Own,
    /// Another user who is not an administrator.
    OtherEndUser,
    /// Another administrator.
    OtherAdministrator,
}

fn is_admin(role: Role) -> bool {
    matches!(role, Role::GlobalAdmin | Role::PasswordAdmin)
}

fn unsupported(rule: &str) -> Failure {
    Failure::new(ReasonCode::UnsupportedOperation, rule)
}

/// Decides whether an operation may be written back.
pub fn decide(
    settings: &Settings,
    role: Role,
    origin: ClientApp,
    target: TargetKind,
    kind: OperationKind,
) -> Result<(), Failure> {
    if !settings.cloud_sync_writeback {
        return Err(Failure::new(
            ReasonCode::WritebackDisabled,
            "password writeback in cloud sync is switched off for this tenant (settings: cloud-sync-writeback)",
        ));
    }
    if !settings.sspr_writeback {
        return Err(Failure::new(
            ReasonCode::WritebackDisabled,
            "\"write back passwords to your on-premises directory\" is switched off (settings: sspr-writeback)",
        ));
    }
    match (target, kind) {
        (TargetKind::Own, OperationKind::Change | OperationKind::ForcedChange) => Ok(()),
        (TargetKind::Own, OperationKind::Reset) => {
            if origin == ClientApp::Portal {
                Ok(())
            } else if is_admin(role) {
                Err(unsupported(
                    "an administrator cannot use the password reset tool for their own password; use self-service reset from the portal",
                ))
            } else {
                Err(unsupported(
                    "an end user cannot reset their own password through PowerShell, the Graph API or the M365 admin center; use the reset portal",
                ))
            }
        }
        (TargetKind::Own, OperationKind::Unlock) => {
            if origin != ClientApp::Portal {
                Err(unsupported(
                    "self-service account unlock is only written back from the reset portal",
                ))
            } else if !settings.unlock_without_reset {
                Err(Failure::new(
                    ReasonCode::UnsupportedOperation,
                    "\"allow users to unlock accounts without resetting their password\" is switched off (settings: unlock-without-reset)",
                ))
            } else {
                Ok(())
            }
        }
        (TargetKind::OtherEndUser | TargetKind::OtherAdministrator, _) if !is_admin(role) => {
            Err(Failure::new(
                ReasonCode::PermissionDenied,
                "only administrators may act on another user's account",
            ))
        }
        (TargetKind::OtherAdministrator, _) => Err(unsupported(
            "an administrator cannot use password writeback for another administrator's password",
        )),
        (TargetKind::OtherEndUser, OperationKind::Reset) => match origin {
            ClientApp::Portal | ClientApp::Graph => Ok(()),
            ClientApp::Powershell => Err(unsupported(
                "administrator-initiated resets through PowerShell are not written back; use the portal or the Graph API",
            )),
            ClientApp::M365AdminCenter => Err(unsupported(
                "resets from the M365 admin center are not written back; use the portal or the Graph API",
            )),
        },
        (TargetKind::OtherEndUser, OperationKind::Unlock) => {
            if !settings.unlock_without_reset {
                Err(unsupported(
                    "\"allow users to unlock accounts without resetting their password\" is switched off (settings: unlock-without-reset)",
                ))
            } else if matches!(origin, ClientApp::Portal | ClientApp::Graph) {
                Ok(())
            } else {
                Err(unsupported(
                    "administrator-initiated unlocks are written back only from the portal or the Graph API",
                ))
            }
        }
        (TargetKind::OtherEndUser, OperationKind::Change | OperationKind::ForcedChange) => {
            Err(unsupported(
                "a password change is self-service only; an administrator resets another user's password instead",
            ))
        }
    }
}
