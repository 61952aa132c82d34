//! A refused write explained: the DC's result code and sub-code classified
//! ([`super::classify`]), then made precise from what else the directory says — the
//! password policy for an opaque policy failure, the DACL and the effective
//! attributes for an access failure. These reads happen only after a refusal, on
//! the session that was refused.

use std::collections::HashSet;
use std::time::Duration;

use ldap3::{LdapResult, Scope};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use tracing::{debug, warn};

use super::classify::{self, DcRefusal, classify};
use super::eligibility::User;
use super::session::{Session, unexpected};
use super::wire::{self, RawEntry};
use super::{Directory, DirectoryError, PasswordPolicy, ResetOptions, Right, sd};

/// The write an operation makes, for explaining its failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    Reset(ResetOptions),
    Change,
    Unlock,
    Unexpire,
}

impl Directory {
    /// Turn a refused write into the most precise error we can, reading what is
    /// needed to explain it (policy, DACL, effective attributes).
    pub(crate) async fn explain(
        &self,
        s: &mut Session,
        write: Write,
        user: &User,
        res: LdapResult,
        new_password: Option<&SecretString>,
    ) -> DirectoryError {
        let refusal = classify(res.rc, &res.text);
        debug!(rc = res.rc, ?refusal, "write refused");
        match refusal {
            DcRefusal::PasswordTooShort => DirectoryError::PasswordTooShort {
                min_length: match classify::stated_min_length(&res.text) {
                    Some(n) => Some(n),
                    None => self.policy(s, user).await.map(|p| p.min_length),
                },
            },
            DcRefusal::PasswordComplexity => DirectoryError::PasswordComplexity,
            DcRefusal::PasswordInHistory => DirectoryError::PasswordInHistory {
                history_length: self.policy(s, user).await.map(|p| p.history_length),
            },
            DcRefusal::PasswordTooYoung => {
                let min_age = self.policy(s, user).await.map(|p| p.min_age);
                too_young(min_age, user.pwd_last_set)
            }
            DcRefusal::PasswordPolicy => match (self.policy(s, user).await, new_password) {
                (Some(policy), Some(pw)) => {
                    diagnose_policy(&policy, pw, user, write, OffsetDateTime::now_utc())
                        .unwrap_or_else(|| unexpected("modify", &s.url, res))
                }
                _ => unexpected("modify", &s.url, res),
            },
            DcRefusal::WrongOldPassword => DirectoryError::WrongOldPassword,
            DcRefusal::AccountLockedOut => DirectoryError::AccountLockedOut,
            DcRefusal::AccountDisabled => DirectoryError::AccountDisabled {
                dn: user.dn.clone(),
            },
            DcRefusal::InsufficientAccess => explain_access(s, write, user, res.text).await,
            DcRefusal::NoSuchObject => DirectoryError::UserNotFound,
            _ => unexpected("modify", &s.url, res),
        }
    }

    /// The policy that applies to `user`: their fine-grained password policy
    /// (`msDS-ResultantPSO`) when they have one, else the domain's.
    async fn policy(&self, s: &mut Session, user: &User) -> Option<PasswordPolicy> {
        match self.effective_policy(s, user).await {
            Ok(p) => Some(p),
            Err(e) => {
                debug!(error = %e, "cannot read the password policy");
                None
            }
        }
    }
}

pub(crate) async fn read_policy(
    s: &mut Session,
    root_dn: &str,
) -> Result<PasswordPolicy, DirectoryError> {
    let entries = s
        .search_ok(
            root_dn,
            Scope::Base,
            "(objectClass=*)",
            &[
                "minPwdLength",
                "pwdHistoryLength",
                "minPwdAge",
                "maxPwdAge",
                "pwdProperties",
                "lockoutThreshold",
                "lockoutDuration",
            ],
        )
        .await?;
    let e = entries.into_iter().next().unwrap_or_default();
    Ok(policy_from_entry(&e))
}

fn policy_from_entry(e: &RawEntry) -> PasswordPolicy {
    let count = |name| e.int(name).and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
    let interval = |name| e.int(name).and_then(wire::interval_to_duration);
    PasswordPolicy {
        min_length: count("minPwdLength"),
        history_length: count("pwdHistoryLength"),
        min_age: interval("minPwdAge").unwrap_or(Duration::ZERO),
        max_age: interval("maxPwdAge").filter(|d| !d.is_zero()),
        complexity: e.int("pwdProperties").unwrap_or(0) & 1 != 0,
        lockout_threshold: count("lockoutThreshold"),
        lockout_duration: interval("lockoutDuration"),
    }
}

fn too_young(min_age: Option<Duration>, pwd_last_set: Option<i64>) -> DirectoryError {
    let next_change = match (min_age, pwd_last_set.and_then(wire::filetime_to_datetime)) {
        (Some(age), Some(set)) => Some(set + age),
        _ => None,
    };
    DirectoryError::PasswordTooYoung {
        min_age,
        next_change,
    }
}

/// Explain an opaque `0000052D` (Windows says nothing more) from the policy: length
/// and complexity are checked here, the minimum age from `pwdLastSet`; what is left is
/// history, the one rule only the DC can check. `None` if no rule explains it.
fn diagnose_policy(
    policy: &PasswordPolicy,
    new_password: &SecretString,
    user: &User,
    write: Write,
    now: OffsetDateTime,
) -> Option<DirectoryError> {
    let pw = new_password.expose_secret();
    let len = u32::try_from(pw.chars().count()).unwrap_or(u32::MAX);
    if len < policy.min_length {
        return Some(DirectoryError::PasswordTooShort {
            min_length: Some(policy.min_length),
        });
    }
    if policy.complexity && !wire::meets_complexity(pw, &user.sam, user.display_name.as_deref()) {
        return Some(DirectoryError::PasswordComplexity);
    }
    if write == Write::Change
        && !policy.min_age.is_zero()
        && let Some(set) = user.pwd_last_set.and_then(wire::filetime_to_datetime)
        && set + policy.min_age > now
    {
        return Some(too_young(Some(policy.min_age), user.pwd_last_set));
    }
    if policy.history_length > 0 {
        return Some(DirectoryError::PasswordInHistory {
            history_length: Some(policy.history_length),
        });
    }
    None
}

/// Whether `user`'s DACL is protected (inheritance disabled), as far as the service
/// account can read it; `false` when it cannot.
pub(crate) async fn dacl_protected(s: &mut Session, user: &User) -> bool {
    let sd = s
        .search(
            &user.object_dn,
            Scope::Base,
            "(objectClass=*)",
            &["nTSecurityDescriptor"],
            vec![wire::sd_flags_dacl_control()],
        )
        .await;
    if let Ok(Ok(entries)) = &sd
        && let Some(bytes) = entries
            .first()
            .and_then(|e| e.first("nTSecurityDescriptor"))
    {
        sd::dacl_protected(bytes) == Some(true)
    } else {
        false
    }
}

/// rc 50: first, a protected DACL (inheritance disabled) explains it; otherwise name
/// the rights this write needs that `allowedAttributesEffective` shows missing, or
/// the extended right if every attribute is writable.
async fn explain_access(
    s: &mut Session,
    write: Write,
    user: &User,
    text: String,
) -> DirectoryError {
    let dn = user.dn.clone();
    if dacl_protected(s, user).await {
        warn!(%dn, %text, "insufficient access on a user whose DACL does not inherit");
        return DirectoryError::InheritanceDisabled { dn, text };
    }
    let writable: HashSet<String> = match s
        .search(
            &user.object_dn,
            Scope::Base,
            "(objectClass=*)",
            &["allowedAttributesEffective"],
            Vec::new(),
        )
        .await
    {
        Ok(Ok(entries)) => entries
            .first()
            .map(|e| {
                e.texts("allowedAttributesEffective")
                    .into_iter()
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default(),
        _ => HashSet::new(),
    };
    let missing = missing_rights(write, &writable);
    warn!(%dn, ?missing, %text, "insufficient access");
    DirectoryError::InsufficientAccess { dn, missing, text }
}

/// Which rights `write` needs that are missing, given the lowercase names of the
/// attributes the service account may write on the user.
fn missing_rights(write: Write, writable: &HashSet<String>) -> Vec<Right> {
    let can = |attr: &str| writable.contains(attr);
    let mut missing = Vec::new();
    match write {
        Write::Reset(opts) => {
            if opts.must_change_at_next_logon && !can("pwdlastset") {
                missing.push(Right::WritePwdLastSet);
            }
            if opts.unlock && !can("lockouttime") {
                missing.push(Right::WriteLockoutTime);
            }
            if missing.is_empty() {
                missing.push(Right::ResetPassword);
            }
        }
        Write::Change => missing.push(Right::ChangePassword),
        Write::Unlock => missing.push(Right::WriteLockoutTime),
        Write::Unexpire => {
            if can("pwdlastset") {
                missing.push(Right::UnexpirePassword);
            } else {
                missing.push(Right::WritePwdLastSet);
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            dn: "CN=alice,OU=Staff,DC=contoso,DC=test".into(),
            object_dn: "<GUID=01020304-0506-0708-090a-0b0c0d0e0f10>".into(),
            guid: None,
            sam: "alice".into(),
            display_name: Some("Alice Wonder".into()),
            uac: 512,
            admin_count: 0,
            sid: None,
            primary_group_id: Some(513),
            // 2026-11-24 20:53:34 UTC
            pwd_last_set: Some(134_400_272_144_271_010),
        }
    }

    fn policy() -> PasswordPolicy {
        PasswordPolicy {
            min_length: 7,
            history_length: 24,
            min_age: Duration::from_secs(86_400),
            max_age: Some(Duration::from_secs(42 * 86_400)),
            complexity: true,
            lockout_threshold: 0,
            lockout_duration: None,
        }
    }

    fn pw(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[test]
    fn the_policy_is_read_from_the_domain_root() {
        // Samba 4.17's defaults after provisioning.
        let e = RawEntry::with(
            "DC=contoso,DC=test",
            &[
                ("minPwdLength", &[b"7"]),
                ("pwdHistoryLength", &[b"24"]),
                ("minPwdAge", &[b"-864000000000"]),
                ("maxPwdAge", &[b"-36288000000000"]),
                ("pwdProperties", &[b"1"]),
                ("lockoutThreshold", &[b"0"]),
                ("lockoutDuration", &[b"-18000000000"]),
            ],
        );
        let p = policy_from_entry(&e);
        assert_eq!(p.min_length, 7);
        assert_eq!(p.history_length, 24);
        assert_eq!(p.min_age, Duration::from_secs(86_400));
        assert_eq!(p.max_age, Some(Duration::from_secs(42 * 86_400)));
        assert!(p.complexity);
        assert_eq!(p.lockout_duration, Some(Duration::from_secs(30 * 60)));
        let never = RawEntry::with(
            "DC=x",
            &[
                ("maxPwdAge", &[b"-9223372036854775808"]),
                ("lockoutDuration", &[b"-9223372036854775808"]),
            ],
        );
        let p = policy_from_entry(&never);
        assert_eq!(p.max_age, None);
        assert_eq!(p.lockout_duration, None);
    }

    #[test]
    fn an_opaque_policy_failure_is_explained_from_the_policy() {
        let now = wire::filetime_to_datetime(134_400_272_144_271_010).unwrap()
            + Duration::from_secs(3_600);
        let reset = Write::Reset(ResetOptions::default());
        let d = |p: &str, w| diagnose_policy(&policy(), &pw(p), &user(), w, now);
        assert!(matches!(
            d("Ab1!", reset),
            Some(DirectoryError::PasswordTooShort {
                min_length: Some(7)
            })
        ));
        assert!(matches!(
            d("alllowercase", reset),
            Some(DirectoryError::PasswordComplexity)
        ));
        assert!(matches!(
            d("Alice-Passw0rd!", reset),
            Some(DirectoryError::PasswordComplexity)
        ));
        // A change an hour after the last one, with a one-day minimum age.
        match d("Fresh-Passw0rd!", Write::Change) {
            Some(DirectoryError::PasswordTooYoung {
                min_age,
                next_change,
            }) => {
                assert_eq!(min_age, Some(Duration::from_secs(86_400)));
                assert_eq!(
                    next_change.map(wire::human_time).as_deref(),
                    Some("2026-11-25 20:53 UTC")
                );
            }
            other => panic!("{other:?}"),
        }
        // A reset is not subject to the minimum age: history is what is left.
        assert!(matches!(
            d("Fresh-Passw0rd!", reset),
            Some(DirectoryError::PasswordInHistory {
                history_length: Some(24)
            })
        ));
        let no_history = PasswordPolicy {
            history_length: 0,
            ..policy()
        };
        assert!(
            diagnose_policy(&no_history, &pw("Fresh-Passw0rd!"), &user(), reset, now).is_none()
        );
    }

    #[test]
    fn missing_rights_are_named_per_write() {
        let none = HashSet::new();
        let both: HashSet<String> = ["pwdlastset".to_string(), "lockouttime".to_string()].into();
        let reset = |must, unlock| {
            Write::Reset(ResetOptions {
                must_change_at_next_logon: must,
                unlock,
            })
        };
        assert_eq!(
            missing_rights(reset(false, false), &none),
            vec![Right::ResetPassword]
        );
        assert_eq!(
            missing_rights(reset(true, true), &none),
            vec![Right::WritePwdLastSet, Right::WriteLockoutTime]
        );
        assert_eq!(
            missing_rights(reset(true, true), &both),
            vec![Right::ResetPassword]
        );
        assert_eq!(
            missing_rights(Write::Change, &both),
            vec![Right::ChangePassword]
        );
        assert_eq!(
            missing_rights(Write::Unlock, &none),
            vec![Right::WriteLockoutTime]
        );
        assert_eq!(
            missing_rights(Write::Unexpire, &none),
            vec![Right::WritePwdLastSet]
        );
        assert_eq!(
            missing_rights(Write::Unexpire, &both),
            vec![Right::UnexpirePassword]
        );
    }

    #[test]
    fn the_next_allowed_change_is_last_set_plus_min_age() {
        match too_young(
            Some(Duration::from_secs(2 * 86_400)),
            Some(134_400_272_144_271_010),
        ) {
            DirectoryError::PasswordTooYoung { next_change, .. } => assert_eq!(
                next_change.map(wire::human_time).as_deref(),
                Some("2026-11-26 20:53 UTC")
            ),
            other => panic!("{other:?}"),
        }
    }
}
