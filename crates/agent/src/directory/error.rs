//! The directory layer's one error type.
//!
//! `Display` is for the agent's own log and may carry DC text (which can contain
//! DNs); everything that leaves the agent uses [`DirectoryError::reason`] and
//! [`DirectoryError::public_message`], which never contain a DN, a password or raw
//! DC text.

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;
use writeback_core::ReasonCode;

use super::wire::{human_duration, human_time};

/// Why a bind (the agent's own, or a connectivity check) was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindRejection {
    /// Wrong DN/UPN or password (`data 52e`, `data 525`).
    InvalidCredentials,
    /// The account is locked out (`data 775`).
    LockedOut,
    /// The account is disabled (`data 533`).
    Disabled,
    /// The password expired or must be changed (`data 532`, `data 773`).
    PasswordExpired,
    /// The account expired (`data 701`).
    AccountExpired,
    /// Logon hours or workstation restrictions (`data 530`, `data 531`).
    Restricted,
}

impl fmt::Display for BindRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BindRejection::InvalidCredentials => "wrong name or password",
            BindRejection::LockedOut => "account locked out",
            BindRejection::Disabled => "account disabled",
            BindRejection::PasswordExpired => "password expired or must be changed",
            BindRejection::AccountExpired => "account expired",
            BindRejection::Restricted => "logon restricted by hours or workstation",
        })
    }
}

/// A right the agent's service account needs on a user (or the domain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Right {
    /// The Reset Password extended right (00299570-246d-11d0-a768-00aa006e0529).
    ResetPassword,
    /// The Change Password extended right (ab721a53-1e2f-11d0-9819-00aa0040529b),
    /// normally granted to Everyone; denied by "User cannot change password".
    ChangePassword,
    /// Write property `lockoutTime` (28630ebf-41d5-11d1-a9c1-0000f80367c1).
    WriteLockoutTime,
    /// Write property `pwdLastSet` (bf967a0a-0de6-11d0-a285-00aa003049e2).
    WritePwdLastSet,
    /// The Unexpire Password extended right on the domain root
    /// (ccc2dc7d-a6ad-4a7a-8846-c04e3cc53501).
    UnexpirePassword,
}

impl Right {
    fn phrase(self) -> &'static str {
        match self {
            Right::ResetPassword => "the Reset Password right on this user",
            Right::ChangePassword => {
                "the Change Password right on this user (is \"User cannot change password\" set?)"
            }
            Right::WriteLockoutTime => "the right to write lockoutTime on this user",
            Right::WritePwdLastSet => "the right to write pwdLastSet on this user",
            Right::UnexpirePassword => "the Unexpire Password right on the domain",
        }
    }
}

/// Why an account counts as protected (administrative), or could not be proved
/// not to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtectedBy {
    /// `adminCount` is 1 (AdminSDHolder marked it).
    AdminCount,
    /// The built-in Administrator (RID 500) or krbtgt (RID 502).
    BuiltinAccount,
    /// Direct, nested or primary-group membership of a protected group, named by
    /// its well-known name.
    Group(&'static str),
    /// Direct, nested or primary-group membership of a deny group of the agent's
    /// configuration (`directory.deny_group_dns`); the group's DN, for the log only.
    DenyGroup(String),
    /// A fact the check needs (the named attribute) could not be read with the
    /// service account's rights, so the account is treated as protected (fail
    /// closed).
    Unverifiable(&'static str),
    /// The agent's own service account: resetting it would hand its rights to
    /// whoever chose the password.
    ServiceAccount,
    /// An interdomain, workstation or server trust account
    /// (`userAccountControl` 0x800, 0x1000 or 0x2000).
    TrustAccount,
    /// It holds a directory replication right on the domain root (DCSync: it can
    /// read every password hash), or may grant itself one (full control, write
    /// DACL, take ownership) — itself or through a group.
    Replication,
    /// It may reset the passwords of the users of the domain root or of a scope
    /// base (Reset Password, all extended rights or full control inherited by
    /// users): another writeback agent's service account, a sync service or a
    /// delegated password administrator, whose password would hand over every
    /// user it can reset.
    PasswordResetter,
    /// It may change the agent's own service account: it owns it, or holds full
    /// control, write access, the right to change its permissions or owner, to
    /// reset its password or to write an attribute that hands over the account
    /// (`servicePrincipalName`, `msDS-KeyCredentialLink`, …).
    ServiceAccountWriter,
    /// The domain controller answered the membership check with a referral to
    /// another server, so membership could not be verified (fail closed).
    Referral,
}

impl fmt::Display for ProtectedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtectedBy::AdminCount => f.write_str("adminCount=1"),
            ProtectedBy::BuiltinAccount => f.write_str("built-in account"),
            ProtectedBy::Group(name) => write!(f, "member of {name}"),
            ProtectedBy::DenyGroup(dn) => write!(f, "member of the deny group {dn}"),
            ProtectedBy::Unverifiable(attr) => write!(f, "{attr} not readable"),
            ProtectedBy::ServiceAccount => f.write_str("the agent's service account"),
            ProtectedBy::TrustAccount => f.write_str("trust account"),
            ProtectedBy::Replication => f.write_str("holds a replication right on the domain"),
            ProtectedBy::PasswordResetter => f.write_str("may reset other users' passwords"),
            ProtectedBy::ServiceAccountWriter => {
                f.write_str("may change the agent's service account")
            }
            ProtectedBy::Referral => f.write_str("membership check answered with a referral"),
        }
    }
}

/// Everything that can go wrong between the agent and the domain controllers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The [`DirectoryConfig`](super::DirectoryConfig) is unusable.
    #[error("invalid directory configuration: {0}")]
    Config(String),

    /// The request itself is unusable (an empty password or UPN).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),

    /// No domain controller could be reached; one entry per URL tried.
    #[error("no domain controller reachable: {}", attempts.join("; "))]
    Unreachable {
        /// `"<url>: <what happened>"` per URL.
        attempts: Vec<String>,
    },

    /// TLS with a domain controller failed: its certificate is not issued by the
    /// configured CA, does not name the host, expired, or StartTLS was refused.
    #[error("tls with {url} failed: {detail}")]
    Tls {
        /// The URL whose handshake failed.
        url: String,
        /// What rustls (or the DC) said.
        detail: String,
    },

    /// The agent's own bind was rejected.
    #[error("service account bind to {url} rejected: {cause} ({text})")]
    AgentBind {
        /// The URL that rejected it.
        url: String,
        /// Why, as far as the sub-code tells.
        cause: BindRejection,
        /// The DC's text.
        text: String,
    },

    /// An LDAP operation on a bound connection did not finish within the configured
    /// timeout (a connect, TLS or bind timeout is [`DirectoryError::Unreachable`]).
    #[error("ldap {op} timed out after {after:?}")]
    Timeout {
        /// The operation ("search", "modify").
        op: &'static str,
        /// The timeout.
        after: Duration,
        /// Whether a write may have reached the DC, so its outcome is unknown.
        during_write: bool,
    },

    /// No user matches the target.
    #[error("user not found")]
    UserNotFound,

    /// More than one user matches the target.
    #[error("{count} users match the target")]
    UserAmbiguous {
        /// How many matched.
        count: usize,
    },

    /// The user exists but outside the configured OUs or group.
    #[error("user {dn} is outside the writeback scope")]
    UserNotInScope {
        /// The user's DN (log only).
        dn: String,
    },

    /// The user is a protected (administrative) account.
    #[error("user {dn} is a protected account ({by})")]
    ProtectedAccount {
        /// The user's DN (log only).
        dn: String,
        /// What made it protected.
        by: ProtectedBy,
    },

    /// The account is disabled.
    #[error("user {dn} is disabled")]
    AccountDisabled {
        /// The user's DN (log only).
        dn: String,
    },

    /// The account is locked out (a change was refused because of it).
    #[error("user account is locked out")]
    AccountLockedOut,

    /// The new password is shorter than the policy allows.
    #[error("password too short (minimum {min_length:?})")]
    PasswordTooShort {
        /// The minimum length, when known.
        min_length: Option<u32>,
    },

    /// The new password fails the complexity rule.
    #[error("password does not meet complexity requirements")]
    PasswordComplexity,

    /// The new password is in the user's password history.
    #[error("password is in history (length {history_length:?})")]
    PasswordInHistory {
        /// How many passwords the domain remembers, when known.
        history_length: Option<u32>,
    },

    /// The password was changed less than the minimum password age ago.
    #[error("password too young to change (minimum age {min_age:?}, next change {next_change:?})")]
    PasswordTooYoung {
        /// The domain's minimum password age, when known.
        min_age: Option<Duration>,
        /// The earliest time the next change is allowed, when known.
        next_change: Option<OffsetDateTime>,
    },

    /// The old password given for a change is wrong.
    #[error("old password does not match")]
    WrongOldPassword,

    /// The service account lacks rights; `missing` names them (empty if unknown).
    #[error("insufficient access on {dn}: missing {missing:?} ({text})")]
    InsufficientAccess {
        /// The user's DN (log only).
        dn: String,
        /// The rights the agent found missing.
        missing: Vec<Right>,
        /// The DC's text.
        text: String,
    },

    /// The user's DACL is protected (inheritance disabled), so delegated rights do
    /// not reach it.
    #[error("inheritance disabled on {dn} ({text})")]
    InheritanceDisabled {
        /// The user's DN (log only).
        dn: String,
        /// The DC's text.
        text: String,
    },

    /// The DC answered with a result we have no specific code for.
    #[error("ldap {op} returned rc {rc}: {text}")]
    Directory {
        /// The operation.
        op: &'static str,
        /// The LDAP result code.
        rc: u32,
        /// The DC's text.
        text: String,
    },

    /// The connection failed in the middle of an operation (after connecting).
    #[error("ldap {op} failed: {detail}")]
    Connection {
        /// The operation.
        op: &'static str,
        /// What failed.
        detail: String,
        /// Whether a write may have reached the DC, so its outcome is unknown.
        during_write: bool,
    },
}

impl DirectoryError {
    /// The stable reason code this error is reported with.
    pub fn reason(&self) -> ReasonCode {
        match self {
            DirectoryError::Config(_) => ReasonCode::Internal,
            DirectoryError::InvalidRequest(_) => ReasonCode::InvalidArgument,
            DirectoryError::Unreachable { .. } => ReasonCode::DcUnreachable,
            DirectoryError::Tls { .. } => ReasonCode::TlsFailure,
            DirectoryError::AgentBind { .. } => ReasonCode::AgentBindFailed,
            DirectoryError::Timeout { .. } => ReasonCode::Timeout,
            DirectoryError::UserNotFound => ReasonCode::UserNotFound,
            DirectoryError::UserAmbiguous { .. } => ReasonCode::UserAmbiguous,
            DirectoryError::UserNotInScope { .. } => ReasonCode::UserNotInScope,
            DirectoryError::ProtectedAccount { .. } => ReasonCode::ProtectedAccount,
            DirectoryError::AccountDisabled { .. } => ReasonCode::AccountDisabled,
            DirectoryError::AccountLockedOut => ReasonCode::AccountLockedOut,
            DirectoryError::PasswordTooShort { .. } => ReasonCode::PasswordTooShort,
            DirectoryError::PasswordComplexity => ReasonCode::PasswordComplexity,
            DirectoryError::PasswordInHistory { .. } => ReasonCode::PasswordInHistory,
            DirectoryError::PasswordTooYoung { .. } => ReasonCode::PasswordTooYoung,
            DirectoryError::WrongOldPassword => ReasonCode::WrongOldPassword,
            DirectoryError::InsufficientAccess { .. } => ReasonCode::InsufficientAccess,
            DirectoryError::InheritanceDisabled { .. } => ReasonCode::InheritanceDisabled,
            DirectoryError::Directory { .. } | DirectoryError::Connection { .. } => {
                ReasonCode::DirectoryError
            }
        }
    }

    /// Sentence a help desk can act on; never contains a DN, a password or raw DC text.
    pub fn public_message(&self) -> String {
        match self {
            DirectoryError::Config(_) => {
                "the agent's directory configuration is invalid; see the agent log".into()
            }
            DirectoryError::InvalidRequest(what) => format!("the request is invalid: {what}"),
            DirectoryError::Unreachable { attempts } => format!(
                "no domain controller answered ({} tried); check that the agent can reach \
                 the domain controllers on the LDAPS port",
                attempts.len()
            ),
            DirectoryError::Tls { .. } => {
                "the TLS connection to the domain controller failed: its certificate is not \
                 trusted by the CA configured on the agent, does not match its name, or has \
                 expired"
                    .into()
            }
            DirectoryError::AgentBind { cause, .. } => format!(
                "the agent's service account cannot sign in to the directory ({cause}); \
                 update the service-account credentials in the agent configuration"
            ),
            DirectoryError::Timeout {
                after,
                during_write,
                ..
            } => {
                let after = human_duration(*after);
                if *during_write {
                    format!(
                        "the domain controller did not answer within {after} while the \
                         change was being written; its outcome is unknown — check the \
                         account before retrying"
                    )
                } else {
                    format!(
                        "the domain controller did not answer within {after}; nothing was \
                         changed"
                    )
                }
            }
            DirectoryError::UserNotFound => {
                "no user with this identity exists in the on-premises directory".into()
            }
            DirectoryError::UserAmbiguous { count } => format!(
                "{count} on-premises users match this identity; nothing was changed — make \
                 the user principal name unique"
            ),
            DirectoryError::UserNotInScope { .. } => {
                "the user is outside the organizational units or group configured for \
                 password writeback"
                    .into()
            }
            DirectoryError::ProtectedAccount {
                by: ProtectedBy::Unverifiable(attr),
                ..
            } => format!(
                "the agent could not verify that the user is not a protected account: its \
                 service account cannot read the user's {attr}; nothing was changed — let the \
                 service account read it"
            ),
            DirectoryError::ProtectedAccount {
                by: ProtectedBy::Referral,
                ..
            } => "the agent could not verify that the user is not a protected account: the \
                  domain controller referred its group-membership check to another server, \
                  and the agent never takes a referral for an answer; nothing was changed — \
                  point the agent at domain controllers of the user's own domain"
                .into(),
            DirectoryError::ProtectedAccount { by, .. } => {
                let why = match by {
                    ProtectedBy::AdminCount => "it is marked as protected (adminCount)".into(),
                    ProtectedBy::BuiltinAccount => "it is a built-in account".into(),
                    ProtectedBy::Group(name) => format!("it is a member of {name}"),
                    ProtectedBy::DenyGroup(_) => "it is a member of a group the agent is \
                                                  configured never to write back (deny group)"
                        .into(),
                    ProtectedBy::Unverifiable(attr) => format!("its {attr} is not readable"),
                    ProtectedBy::ServiceAccount => {
                        "it is the writeback agent's own service account".into()
                    }
                    ProtectedBy::TrustAccount => "it is a trust or computer account".into(),
                    ProtectedBy::Replication => "it may replicate the directory's secrets \
                                                 (a replication right on the domain, as a \
                                                 sync service holds)"
                        .into(),
                    ProtectedBy::PasswordResetter => "it may reset other users' passwords \
                                                      (another writeback agent's or a sync \
                                                      service's account, or a delegated \
                                                      password administrator)"
                        .into(),
                    ProtectedBy::ServiceAccountWriter => {
                        "it may change the writeback agent's own service account".into()
                    }
                    ProtectedBy::Referral => "its group memberships could not be verified".into(),
                };
                format!(
                    "the user is a protected administrative account ({why}); passwords of \
                     administrators are not written back — change it on premises"
                )
            }
            DirectoryError::AccountDisabled { .. } => {
                "the on-premises account is disabled; enable it before resetting or \
                 unlocking"
                    .into()
            }
            DirectoryError::AccountLockedOut => {
                "the on-premises account is locked out; unlock it first, or reset the \
                 password instead of changing it"
                    .into()
            }
            DirectoryError::PasswordTooShort { min_length } => match min_length {
                Some(n) => format!(
                    "the new password is too short: the domain requires at least {n} \
                     characters"
                ),
                None => "the new password is shorter than the domain's minimum length".into(),
            },
            DirectoryError::PasswordComplexity => {
                "the new password does not meet the domain's complexity requirements: use \
                 characters from at least three of uppercase letters, lowercase letters, \
                 digits and symbols, and do not include the account name"
                    .into()
            }
            DirectoryError::PasswordInHistory { history_length } => match history_length {
                Some(n) => format!(
                    "the new password was used recently: the domain remembers the last {n} \
                     passwords; choose one not used before"
                ),
                None => "the new password was used recently; choose one not used before".into(),
            },
            DirectoryError::PasswordTooYoung {
                min_age,
                next_change,
            } => {
                let mut msg = String::from("the password was changed too recently");
                if let Some(age) = min_age {
                    msg.push_str(&format!(
                        ": the domain's minimum password age is {}",
                        human_duration(*age)
                    ));
                }
                if let Some(at) = next_change {
                    msg.push_str(&format!(
                        "; the next change is allowed after {}",
                        human_time(*at)
                    ));
                }
                msg.push_str(" (an administrator reset is not subject to this limit)");
                msg
            }
            DirectoryError::WrongOldPassword => "the current password given is wrong".into(),
            DirectoryError::InsufficientAccess { missing, .. } => {
                if missing.is_empty() {
                    "the agent's service account lacks a right this operation needs on this \
                     user; run the agent's permission check"
                        .into()
                } else {
                    let rights: Vec<&str> = missing.iter().map(|r| r.phrase()).collect();
                    format!(
                        "the agent's service account lacks {}; grant it (the agent's \
                         permission check lists every right it needs)",
                        rights.join(" and ")
                    )
                }
            }
            DirectoryError::InheritanceDisabled { .. } => {
                "inheritance is disabled on this user object, so the rights delegated to \
                 the agent's service account do not reach it; re-enable inheritance on the \
                 user (Security > Advanced)"
                    .into()
            }
            DirectoryError::Directory { rc: 10, .. } => {
                "the domain controller referred the agent to another server (LDAP result 10, \
                 a referral) and the agent does not follow referrals; nothing was changed — \
                 point the agent at domain controllers of the domain that holds the users"
                    .into()
            }
            DirectoryError::Directory { rc, .. } => format!(
                "the domain controller refused the operation (LDAP result {rc}); details are \
                 in the agent log"
            ),
            DirectoryError::Connection { during_write, .. } => {
                if *during_write {
                    "the connection to the domain controller failed while the change was \
                     being written; its outcome is unknown — check the account before \
                     retrying"
                        .into()
                } else {
                    "the connection to the domain controller failed; nothing was changed".into()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<DirectoryError> {
        let dn = "CN=Secret Person,OU=Hidden,DC=contoso,DC=test".to_string();
        let text = format!("00002098: Object {dn} has no write property access");
        vec![
            DirectoryError::Config(format!("bad ca for {dn}")),
            DirectoryError::InvalidRequest("empty password"),
            DirectoryError::Unreachable {
                attempts: vec![format!("ldaps://dc1:636: {text}")],
            },
            DirectoryError::Tls {
                url: "ldaps://dc1:636".into(),
                detail: text.clone(),
            },
            DirectoryError::AgentBind {
                url: "ldaps://dc1:636".into(),
                cause: BindRejection::InvalidCredentials,
                text: text.clone(),
            },
            DirectoryError::Timeout {
                op: "modify",
                after: Duration::from_secs(10),
                during_write: true,
            },
            DirectoryError::UserNotFound,
            DirectoryError::UserAmbiguous { count: 2 },
            DirectoryError::UserNotInScope { dn: dn.clone() },
            DirectoryError::ProtectedAccount {
                dn: dn.clone(),
                by: ProtectedBy::Group("Domain Admins"),
            },
            DirectoryError::ProtectedAccount {
                dn: dn.clone(),
                by: ProtectedBy::DenyGroup(format!("CN=Tier0,{dn}")),
            },
            DirectoryError::ProtectedAccount {
                dn: dn.clone(),
                by: ProtectedBy::Unverifiable("tokenGroups"),
            },
            DirectoryError::AccountDisabled { dn: dn.clone() },
            DirectoryError::AccountLockedOut,
            DirectoryError::PasswordTooShort {
                min_length: Some(7),
            },
            DirectoryError::PasswordComplexity,
            DirectoryError::PasswordInHistory {
                history_length: Some(24),
            },
            DirectoryError::PasswordTooYoung {
                min_age: Some(Duration::from_secs(86_400)),
                next_change: OffsetDateTime::from_unix_timestamp(1_795_600_000).ok(),
            },
            DirectoryError::WrongOldPassword,
            DirectoryError::InsufficientAccess {
                dn: dn.clone(),
                missing: vec![Right::ResetPassword],
                text: text.clone(),
            },
            DirectoryError::InheritanceDisabled {
                dn: dn.clone(),
                text: text.clone(),
            },
            DirectoryError::Directory {
                op: "modify",
                rc: 80,
                text: text.clone(),
            },
            DirectoryError::Connection {
                op: "modify",
                detail: text,
                during_write: true,
            },
        ]
    }

    #[test]
    fn public_messages_carry_no_dn_and_no_dc_text() {
        for e in every_variant() {
            let msg = e.public_message();
            assert!(!msg.contains("CN="), "{msg}");
            assert!(!msg.contains("DC="), "{msg}");
            assert!(!msg.contains("00002098"), "{msg}");
            assert!(!msg.contains("write property"), "{msg}");
            assert!(!msg.is_empty());
            assert!(!e.reason().is_ok());
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = DirectoryError::PasswordTooYoung {
            min_age: Some(Duration::from_secs(86_400)),
            next_change: OffsetDateTime::from_unix_timestamp(1_795_600_000).ok(),
        };
        assert_eq!(
            e.public_message(),
            "the password was changed too recently: the domain's minimum password age is \
             1 day; the next change is allowed after 2026-11-25 09:46 UTC (an administrator \
             reset is not subject to this limit)"
        );
        assert_eq!(e.reason(), ReasonCode::PasswordTooYoung);
        let e = DirectoryError::InsufficientAccess {
            dn: String::new(),
            missing: vec![Right::ResetPassword, Right::WritePwdLastSet],
            text: String::new(),
        };
        assert!(e.public_message().contains(
            "lacks the Reset Password right on this user and the right to write pwdLastSet"
        ));
        let e = DirectoryError::PasswordTooShort {
            min_length: Some(7),
        };
        assert!(e.public_message().contains("at least 7 characters"));
    }

    #[test]
    fn a_timeout_says_whether_a_write_may_have_happened() {
        let search = DirectoryError::Timeout {
            op: "search",
            after: Duration::from_secs(2),
            during_write: false,
        };
        assert_eq!(search.reason(), ReasonCode::Timeout);
        assert_eq!(
            search.public_message(),
            "the domain controller did not answer within 2 seconds; nothing was changed"
        );
        let modify = DirectoryError::Timeout {
            op: "modify",
            after: Duration::from_secs(2),
            during_write: true,
        };
        assert_eq!(modify.reason(), ReasonCode::Timeout);
        assert_eq!(
            modify.public_message(),
            "the domain controller did not answer within 2 seconds while the change was being \
             written; its outcome is unknown — check the account before retrying"
        );
    }

    #[test]
    fn every_variant_has_its_reason() {
        let reasons: Vec<ReasonCode> = every_variant().iter().map(|e| e.reason()).collect();
        for expected in [
            ReasonCode::DcUnreachable,
            ReasonCode::TlsFailure,
            ReasonCode::AgentBindFailed,
            ReasonCode::Timeout,
            ReasonCode::UserNotFound,
            ReasonCode::UserAmbiguous,
            ReasonCode::UserNotInScope,
            ReasonCode::ProtectedAccount,
            ReasonCode::AccountDisabled,
            ReasonCode::AccountLockedOut,
            ReasonCode::PasswordTooShort,
            ReasonCode::PasswordComplexity,
            ReasonCode::PasswordInHistory,
            ReasonCode::PasswordTooYoung,
            ReasonCode::WrongOldPassword,
            ReasonCode::InsufficientAccess,
            ReasonCode::InheritanceDisabled,
            ReasonCode::DirectoryError,
        ] {
            assert!(reasons.contains(&expected), "{expected}");
        }
    }
}
