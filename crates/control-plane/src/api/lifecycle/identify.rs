//! Who a target really is, part of the resolve stage: the own-account and
//! other-administrator rules judge the person, not the spelling.
//!
//! A request names a user by UPN or by objectGUID, in any case. The
//! spelling alone cannot say whether it is the caller or another
//! administrator: an objectGUID names nobody the control plane knows, and
//! a UPN may differ from the administrator's principal in case (in full
//! Unicode: `LOWER` in SQLite folds ASCII only). So, in two steps:
//!
//! 1. **the spelling** ([`Api::judge_spelling`]): a UPN equal to the
//!    caller's principal is their own account; a UPN, or any alias the
//!    agents have linked to the same person (`person_aliases`), equal to an
//!    administrator principal's name is another administrator; everything
//!    else — every objectGUID no agent has linked to an administrator —
//!    is "another end user" for now;
//! 2. **the person** ([`Api::identify`]): when the policy would let the
//!    caller act on that "other end user" (an administrator, so only then),
//!    an agent of the domain is asked whom the spelling names — a signed,
//!    read-only `OPERATION_KIND_USER_LOOKUP`, its answer checked against
//!    the agent's result-signing key — and the rules are applied again to
//!    the user it found: its UPN as the directory holds it equal to the
//!    caller's principal is their own account, and it or any alias of the
//!    person equal to an administrator principal is another administrator.
//!
//! When no agent can say: a UPN keeps the spelling's judgement (the agent
//! writes to whoever holds exactly that UPN, which step 1 judged); an
//! objectGUID is refused, since nothing else can tell whose it is. A user
//! no agent finds is "another end user": the write finds nobody either.
//!
//! "Administrator" is what the control plane knows: the principals of the
//! tenant with a password- or global-administrator role — those a `wbt1`
//! token was minted for and those an identity provider's token named with
//! an administrator role (recorded at sign-in, never lowered). Accounts
//! that are privileged in the directory itself are the agent's to refuse
//! (`PROTECTED_ACCOUNT`).

use std::time::Duration;

use writeback_core::{Failure, ReasonCode};
use writeback_proto::v1::{self as pb, user_ref};

use crate::api::{Api, Caller, Status, store_status, timeout_of};
use crate::dispatcher::Dispatcher;
use crate::policy::TargetKind;

/// Who a target is to the caller, once an agent said whom it names.
pub(in crate::api) struct Identified {
    /// The rules' view of it.
    pub(in crate::api) kind: TargetKind,
    /// Its UPN as the directory holds it, when an agent said.
    pub(in crate::api) upn: Option<String>,
}

/// Two names of a person are the same without regard to case, in full
/// Unicode (AD compares UPNs that way), and to surrounding space.
pub(in crate::api) fn same_name(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

impl Api {
    /// Step 1 (module docs): the caller's relation to `user` (normalized;
    /// `key` its `upn:`/`guid:` key) judged on the spelling and the
    /// aliases the agents have linked to it.
    pub(in crate::api) async fn judge_spelling(
        &self,
        caller: &Caller,
        user: &pb::UserRef,
        key: &str,
    ) -> Result<TargetKind, Status> {
        let upn = match &user.by {
            Some(user_ref::By::Upn(upn)) => Some(upn.as_str()),
            _ => None,
        };
        if upn.is_some_and(|u| same_name(u, &caller.principal)) {
            return Ok(TargetKind::Own);
        }
        Ok(if self.is_administrator(caller, upn, key).await? {
            TargetKind::OtherAdministrator
        } else {
            TargetKind::OtherEndUser
        })
    }

    /// Step 2 (module docs): asks an agent of `domain` whom `user` names
    /// and judges that person. Only for a target step 1 found to be another
    /// end user that the policy would let the caller act on.
    pub(in crate::api) async fn identify(
        &self,
        caller: &Caller,
        user: &pb::UserRef,
        key: &str,
        domain: &str,
    ) -> Result<Identified, Status> {
        let timeout = lookup_timeout(timeout_of(&self.cp.config));
        let found = lookup(&self.cp.dispatcher, &caller.tenant, domain, user, timeout).await;
        let (guid, upn) = match found {
            Ok(found) => found,
            Err(f) if f.reason == ReasonCode::UserNotFound => {
                return Ok(Identified {
                    kind: TargetKind::OtherEndUser,
                    upn: None,
                });
            }
            Err(f) => {
                tracing::info!(target = %key, reason = %f.reason,
                    "no agent said whom the target names");
                return match &user.by {
                    // The agent writes to whoever holds exactly this UPN,
                    // which the spelling's judgement is about.
                    Some(user_ref::By::Upn(_)) => Ok(Identified {
                        kind: TargetKind::OtherEndUser,
                        upn: None,
                    }),
                    _ => Err(unidentified(key, domain, &f).into()),
                };
            }
        };
        // The throttle's buckets and step 1's aliases learn it too.
        self.link_person(&caller.tenant, &guid, &upn, Some(key))
            .await;
        let upn = (!upn.trim().is_empty()).then_some(upn);
        let kind = if upn
            .as_deref()
            .is_some_and(|u| same_name(u, &caller.principal))
        {
            TargetKind::Own
        } else if self.is_administrator(caller, upn.as_deref(), key).await? {
            TargetKind::OtherAdministrator
        } else {
            TargetKind::OtherEndUser
        };
        if kind != TargetKind::OtherEndUser {
            tracing::info!(target = %key, target_kind = ?kind,
                "the target is not another end user but the person it names is");
        }
        Ok(Identified { kind, upn })
    }

    /// Whether `upn`, or any UPN the agents have linked to the person `key`
    /// names, is the name of one of the tenant's administrator principals.
    async fn is_administrator(
        &self,
        caller: &Caller,
        upn: Option<&str>,
        key: &str,
    ) -> Result<bool, Status> {
        let store = &self.cp.store;
        let (admins, aliases) = tokio::join!(
            store.admin_principals(&caller.tenant),
            store.aliases_with(&caller.tenant, key)
        );
        let admins = admins.map_err(store_status)?;
        if admins.is_empty() {
            return Ok(false);
        }
        let mut names: Vec<String> = aliases
            .map_err(store_status)?
            .into_iter()
            .filter_map(|a| a.strip_prefix("upn:").map(str::to_owned))
            .collect();
        names.extend(key.strip_prefix("upn:").map(str::to_owned));
        names.extend(upn.map(str::to_owned));
        Ok(names
            .iter()
            .any(|n| admins.iter().any(|admin| same_name(n, admin))))
    }
}

/// The refusal of an operation on objectGUID `key` that no agent could
/// identify: nothing was written or recorded.
fn unidentified(key: &str, domain: &str, why: &Failure) -> Failure {
    // A lookup that ran out of time wrote nothing: not the "outcome
    // unknown" a TIMEOUT means for an operation.
    let reason = if why.reason == ReasonCode::Timeout {
        ReasonCode::Unavailable
    } else {
        why.reason
    };
    let guid = key.strip_prefix("guid:").unwrap_or(key);
    Failure::new(
        reason,
        format!(
            "nothing was done: an agent of domain {domain} must say whose account objectGUID \
             {guid} is before an administrator may act on it, and none could ({}: {}); retry \
             once an agent of the domain is online (`writebackctl status`), or name the user \
             by UPN",
            why.reason, why.message
        ),
    )
}

/// How long a lookup may take: a third of the operation's time, at most 10 s
/// (the rest is the operation's own).
pub(super) fn lookup_timeout(operation: Duration) -> Duration {
    (operation / 3).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// Asks an agent of `domain` whom `user` names: its objectGUID and UPN, as
/// the agent signed them (the dispatcher refuses an answer whose signature
/// does not verify).
pub(super) async fn lookup(
    dispatcher: &Dispatcher,
    tenant: &str,
    domain: &str,
    user: &pb::UserRef,
    timeout: Duration,
) -> Result<(String, String), Failure> {
    let op = pb::OperationRequest {
        tenant: tenant.to_owned(),
        domain: domain.to_owned(),
        kind: pb::OperationKind::UserLookup as i32,
        target: Some(user.clone()),
        ..pb::OperationRequest::default()
    };
    let result = dispatcher.ask(op, timeout).await?;
    if result.target_guid.is_empty() {
        return Err(Failure::new(
            ReasonCode::Internal,
            "the agent answered the lookup without a user",
        ));
    }
    Ok((result.target_guid, result.target_upn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_compared_without_regard_to_case_in_full_unicode() {
        assert!(same_name(
            "Åsa.admin@contoso.test",
            " åsa.ADMIN@Contoso.Test"
        ));
        assert!(same_name("JÜRGEN@contoso.test", "jürgen@contoso.test"));
        assert!(!same_name(
            "asa.admin@contoso.test",
            "åsa.admin@contoso.test"
        ));
    }

    #[test]
    fn an_unidentified_guid_says_nothing_was_done_and_never_timeout() {
        let f = unidentified(
            "guid:0b0c4a1e-9d1f-4c59-8a2e-6c1f1e0b7a11",
            "contoso.test",
            &Failure::new(ReasonCode::Timeout, "no answer"),
        );
        assert_eq!(f.reason, ReasonCode::Unavailable);
        assert!(f.message.starts_with("nothing was done"), "{}", f.message);
        assert!(f.message.contains("0b0c4a1e-9d1f-4c59-8a2e-6c1f1e0b7a11"));
        let f = unidentified(
            "guid:x",
            "contoso.test",
            &Failure::new(ReasonCode::NoAgentOnline, "none"),
        );
        assert_eq!(f.reason, ReasonCode::NoAgentOnline);
    }
}
