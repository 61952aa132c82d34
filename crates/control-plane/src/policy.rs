//! The seed's supported/unsupported operation tables as one pure function.
//! The origin is the client app the caller's token was issued to, so a
//! client cannot claim another origin. Every refusal names the rule.
//!
//! The checks run in this order, and the first that fails answers:
//!
//! 1. **who** — an end user may act only on their own account
//!    (`PERMISSION_DENIED`); this depends on the caller alone, not on the
//!    tenant's state;
//! 2. **toggles** — password writeback in cloud sync and "write back
//!    passwords to your on-premises directory?" must be on, and for an
//!    unlock also "allow users to unlock accounts without resetting their
//!    password?" (`WRITEBACK_DISABLED`), so switching writeback off stops
//!    every operation at once;
//! 3. **the seed's tables** (`UNSUPPORTED_OPERATION` otherwise):
//!
//! | caller | operation | target | origin | result |
//! |---|---|---|---|---|
//! | anyone | voluntary or forced change | own account | any | written back |
//! | anyone | reset (SSPR) | own account | portal | written back |
//! | end user | reset | own account | graph, powershell, m365 | UNSUPPORTED_OPERATION |
//! | administrator | reset | own account | graph, powershell, m365 ("the password reset tool") | UNSUPPORTED_OPERATION |
//! | anyone | unlock (SSPR) | own account | portal | written back |
//! | anyone | unlock | own account | graph, powershell, m365 | UNSUPPORTED_OPERATION |
//! | administrator | reset | another end user | portal, graph | written back |
//! | administrator | reset | another end user | powershell, m365 admin center | UNSUPPORTED_OPERATION |
//! | administrator | unlock | another end user | portal, graph | written back (like a reset; the seed is silent) |
//! | administrator | unlock | another end user | powershell, m365 admin center | UNSUPPORTED_OPERATION |
//! | administrator | change, forced change | another user | any | UNSUPPORTED_OPERATION (changes are self-service) |
//! | administrator | anything | another administrator | any | UNSUPPORTED_OPERATION |
//! | end user | anything | another user | any | PERMISSION_DENIED |
//!
//! 4. **sign-in** ([`check_sign_in`]) — a self-service reset or unlock needs
//!    a sign-in through an identity provider that meets the issuer's
//!    strong-authentication policy, which must name a method
//!    (`STRONG_AUTHENTICATION_REQUIRED`; never with a `wbt1` token).

use writeback_core::{Failure, OperationKind, ReasonCode};

use crate::store::{ClientApp, Role, Settings, SignIn};

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

fn unsupported(rule: &str) -> Failure {
    Failure::new(ReasonCode::UnsupportedOperation, rule)
}

fn disabled(rule: &str) -> Failure {
    Failure::new(ReasonCode::WritebackDisabled, rule)
}

/// The toggles an operation of `kind` needs, checked in the order the
/// tutorial switches them on.
pub fn check_toggles(settings: &Settings, kind: OperationKind) -> Result<(), Failure> {
    if !settings.cloud_sync_writeback {
        return Err(disabled(
            "password writeback in cloud sync is switched off for this tenant (settings: cloud-sync-writeback)",
        ));
    }
    if !settings.sspr_writeback {
        return Err(disabled(
            "\"write back passwords to your on-premises directory\" is switched off (settings: sspr-writeback)",
        ));
    }
    if kind == OperationKind::Unlock && !settings.unlock_without_reset {
        return Err(disabled(
            "\"allow users to unlock accounts without resetting their password\" is switched off (settings: unlock-without-reset)",
        ));
    }
    Ok(())
}

/// A self-service reset or unlock (no old password) needs a strong sign-in
/// through an identity provider: its issuer's policy must name a method
/// (amr/acr/scope) and the sign-in meet it (`STRONG_AUTHENTICATION_REQUIRED`
/// otherwise). A `wbt1` API token or an application is never such a
/// sign-in: nothing shows that a person proved a second factor. Changes
/// prove the old password themselves; administrators' operations on others
/// follow the seed's table. Checked after [`decide`], so a refusal by the
/// tables answers first.
pub fn check_sign_in(
    sign_in: &SignIn,
    target: TargetKind,
    kind: OperationKind,
) -> Result<(), Failure> {
    if target != TargetKind::Own || !matches!(kind, OperationKind::Reset | OperationKind::Unlock) {
        return Ok(());
    }
    let why = match sign_in {
        SignIn::Strong => return Ok(()),
        SignIn::Weak(why) => why.clone(),
        SignIn::ApiToken => "a writeback API token (wbt1) is no sign-in at all: sign in through the \
             tenant's identity provider with multi-factor authentication (the reset portal), or have \
             an administrator reset the password"
            .to_owned(),
        SignIn::Application => {
            "an application acts for no person who could have signed in".to_owned()
        }
    };
    Err(Failure::new(
        ReasonCode::StrongAuthenticationRequired,
        format!(
            "resetting or unlocking your own account without the current password needs a strong sign-in: {why}"
        ),
    ))
}

/// Whether the caller may read a user's password policy or have a password
/// checked for them: anyone for their own account, administrators for
/// another end user, nobody for another administrator (the same "who" as
/// the operations, without the toggles or the origin: nothing is written).
pub fn may_read_policy(role: Role, target: TargetKind) -> Result<(), Failure> {
    match target {
        TargetKind::Own => Ok(()),
        TargetKind::OtherEndUser if role.is_admin() => Ok(()),
        TargetKind::OtherEndUser => Err(Failure::new(
            ReasonCode::PermissionDenied,
            "only administrators may read another user's password policy",
        )),
        TargetKind::OtherAdministrator => Err(unsupported(
            "an administrator cannot use password writeback for another administrator's password",
        )),
    }
}

/// The rule of the seed's tables that allowed an operation, as the
/// operation record and `writebackctl operation show` quote it.
pub type Rule = &'static str;

/// Decides whether an operation may be written back; the answer names the
/// rule that allowed it.
pub fn decide(
    settings: &Settings,
    role: Role,
    origin: ClientApp,
    target: TargetKind,
    kind: OperationKind,
) -> Result<Rule, Failure> {
    if target != TargetKind::Own && !role.is_admin() {
        return Err(Failure::new(
            ReasonCode::PermissionDenied,
            "only administrators may act on another user's account",
        ));
    }
    check_toggles(settings, kind)?;
    match (target, kind) {
        (TargetKind::Own, OperationKind::Change | OperationKind::ForcedChange) => {
            Ok("a user may change their own password, from any client app")
        }
        (TargetKind::Own, OperationKind::Reset) => {
            if origin == ClientApp::Portal {
                Ok("self-service password reset from the reset portal")
            } else if role.is_admin() {
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
            if origin == ClientApp::Portal {
                Ok("self-service account unlock from the reset portal")
            } else {
                Err(unsupported(
                    "self-service account unlock is only written back from the reset portal",
                ))
            }
        }
        (TargetKind::OtherAdministrator, _) => Err(unsupported(
            "an administrator cannot use password writeback for another administrator's password",
        )),
        (TargetKind::OtherEndUser, OperationKind::Reset) => match origin {
            ClientApp::Portal | ClientApp::Graph => Ok(
                "an administrator may reset an end user's password from the portal or the Graph API",
            ),
            ClientApp::Powershell => Err(unsupported(
                "administrator-initiated resets through PowerShell are not written back; use the portal or the Graph API",
            )),
            ClientApp::M365AdminCenter => Err(unsupported(
                "resets from the M365 admin center are not written back; use the portal or the Graph API",
            )),
        },
        (TargetKind::OtherEndUser, OperationKind::Unlock) => match origin {
            ClientApp::Portal | ClientApp::Graph => Ok(
                "an administrator may unlock an end user's account from the portal or the Graph API",
            ),
            ClientApp::Powershell | ClientApp::M365AdminCenter => Err(unsupported(
                "administrator-initiated unlocks are written back only from the portal or the Graph API",
            )),
        },
        (TargetKind::OtherEndUser, OperationKind::Change | OperationKind::ForcedChange) => {
            Err(unsupported(
                "a password change is self-service only; an administrator resets another user's password instead",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON: Settings = Settings {
        cloud_sync_writeback: true,
        sspr_writeback: true,
        unlock_without_reset: true,
    };

    fn code<T>(r: Result<T, Failure>) -> ReasonCode {
        r.err().map_or(ReasonCode::Ok, |f| f.reason)
    }

    #[test]
    fn only_self_service_without_the_old_password_needs_a_strong_sign_in() {
        let weak = SignIn::Weak("password only".into());
        for kind in [OperationKind::Reset, OperationKind::Unlock] {
            assert_eq!(
                code(check_sign_in(&weak, TargetKind::Own, kind)),
                ReasonCode::StrongAuthenticationRequired
            );
            assert_eq!(
                code(check_sign_in(&SignIn::Strong, TargetKind::Own, kind)),
                ReasonCode::Ok
            );
            // No sign-in to judge is no strong sign-in.
            for none in [SignIn::ApiToken, SignIn::Application] {
                assert_eq!(
                    code(check_sign_in(&none, TargetKind::Own, kind)),
                    ReasonCode::StrongAuthenticationRequired
                );
                assert_eq!(
                    code(check_sign_in(&none, TargetKind::OtherEndUser, kind)),
                    ReasonCode::Ok
                );
            }
            assert_eq!(
                code(check_sign_in(&weak, TargetKind::OtherEndUser, kind)),
                ReasonCode::Ok
            );
        }
        for kind in [OperationKind::Change, OperationKind::ForcedChange] {
            for sign_in in [weak.clone(), SignIn::ApiToken] {
                assert_eq!(
                    code(check_sign_in(&sign_in, TargetKind::Own, kind)),
                    ReasonCode::Ok
                );
            }
        }
        let api =
            check_sign_in(&SignIn::ApiToken, TargetKind::Own, OperationKind::Unlock).unwrap_err();
        assert!(api.message.contains("wbt1"), "{}", api.message);
        let refusal = check_sign_in(&weak, TargetKind::Own, OperationKind::Reset).unwrap_err();
        assert!(
            refusal.message.contains("password only"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn who_is_checked_before_the_toggles_and_the_toggles_before_the_tables() {
        let off = Settings::default();
        // An end user acting on someone else: the caller's role answers,
        // whatever the tenant's toggles.
        assert_eq!(
            code(decide(
                &off,
                Role::User,
                ClientApp::Portal,
                TargetKind::OtherEndUser,
                OperationKind::Reset
            )),
            ReasonCode::PermissionDenied
        );
        // Writeback off stops even what the tables would refuse.
        assert_eq!(
            code(decide(
                &off,
                Role::GlobalAdmin,
                ClientApp::Powershell,
                TargetKind::OtherEndUser,
                OperationKind::Reset
            )),
            ReasonCode::WritebackDisabled
        );
        let no_unlock = Settings {
            unlock_without_reset: false,
            ..ON
        };
        assert_eq!(
            code(decide(
                &no_unlock,
                Role::User,
                ClientApp::Portal,
                TargetKind::Own,
                OperationKind::Unlock
            )),
            ReasonCode::WritebackDisabled
        );
        // The unlock toggle does not concern resets.
        assert_eq!(
            code(decide(
                &no_unlock,
                Role::User,
                ClientApp::Portal,
                TargetKind::Own,
                OperationKind::Reset
            )),
            ReasonCode::Ok
        );
    }
}
