//! The production [`Apply`]: operations go to Active Directory through
//! [`Directory`], and directory errors become failures with their stable
//! reason code and a help-desk sentence (the DC's raw text stays in the log).
//! Its health checks are the permission check (rights only, not the per-user
//! inheritance scan) and the password-policy warnings.

use secrecy::SecretString;
use writeback_core::{Failure, OperationKind, ReasonCode};
use writeback_envelope::Secrets;
use writeback_proto::v1::{
    DcStatus, DirectorySearchResult, DirectoryUser, PasswordPolicy, PolicyReport,
};

use crate::directory::{
    Directory, DirectoryError, Identity, PasswordPolicy as Policy, PolicyFacts, ResetOptions,
    SearchAnswer, Target,
};
use crate::executor::{Apply, ValidOperation};
use crate::health::Checks;
use crate::{permissions, policy};

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

    async fn password_version(&self, target: &Target) -> Option<u32> {
        match Directory::password_version(self, target).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the user's password version");
                None
            }
        }
    }

    async fn identity(&self, target: &Target) -> Identity {
        match self.identify(target).await {
            Ok(i) => i.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read who the user is");
                Identity::default()
            }
        }
    }

    async fn lookup(&self, target: &Target) -> Result<Identity, Failure> {
        match self.identify(target).await.map_err(failure)? {
            Some(who) if who.guid.is_some() => Ok(who),
            _ => Err(failure(DirectoryError::UserNotFound)),
        }
    }

    async fn policy(&self, target: Option<&Target>) -> Result<PolicyReport, Failure> {
        let facts = self.policy_facts(target).await.map_err(failure)?;
        Ok(policy_report(&facts))
    }

    async fn search(&self, query: &str, limit: u32) -> Result<DirectorySearchResult, Failure> {
        let found = self.search_users(query, limit).await.map_err(failure)?;
        Ok(search_result(found))
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

    async fn checks(&self) -> Checks {
        let permissions_ok = match permissions::check(self, false).await {
            Ok(report) => report.rights_ok(),
            Err(e) => {
                tracing::warn!(reason = %e.reason(), error = %e, "permission check failed");
                false
            }
        };
        let policy_warnings = match self.domain_report().await {
            Ok(report) => policy::warnings(&report),
            Err(e) => {
                tracing::warn!(reason = %e.reason(), error = %e, "password policy not readable");
                vec![format!(
                    "the password policy could not be read ({}): {}",
                    e.reason(),
                    e.public_message()
                )]
            }
        };
        Checks {
            permissions_ok,
            policy_warnings,
            checked_at: Some(time::OffsetDateTime::now_utc()),
        }
    }
}

/// The wire form of a search's answer. `domain` is left empty: the directory
/// layer does not know its DNS name; the control plane fills in the domain
/// it asked.
fn search_result(found: SearchAnswer) -> DirectorySearchResult {
    DirectorySearchResult {
        users: found
            .users
            .into_iter()
            .map(|u| {
                let (reason, message) = u
                    .ineligible
                    .map(|(r, m)| (r.as_str().to_owned(), m))
                    .unwrap_or_default();
                DirectoryUser {
                    upn: u.upn,
                    display_name: u.display_name,
                    object_guid: u
                        .guid
                        .map(|g| g.hyphenated().to_string())
                        .unwrap_or_default(),
                    account_name: u.account_name,
                    enabled: u.enabled,
                    locked_out: u.locked_out,
                    eligible: reason.is_empty(),
                    ineligible_reason: reason,
                    ineligible_message: message,
                    domain: String::new(),
                    mail: u.mail,
                }
            })
            .collect(),
        truncated: found.truncated,
    }
}

fn policy_pb(source: &str, precedence: u32, p: &Policy, applies_to: &[String]) -> PasswordPolicy {
    PasswordPolicy {
        source: source.to_owned(),
        precedence,
        min_length: p.min_length,
        complexity: p.complexity,
        history_length: p.history_length,
        min_age_seconds: p.min_age.as_secs(),
        max_age_seconds: p.max_age.map_or(0, |d| d.as_secs()),
        lockout_threshold: p.lockout_threshold,
        lockout_duration_seconds: p.lockout_duration.map_or(0, |d| d.as_secs()),
        applies_to: applies_to.to_vec(),
    }
}

/// The wire form of what the DC said about the policies.
fn policy_report(facts: &PolicyFacts) -> PolicyReport {
    let (source, effective) = facts.effective();
    let precedence = facts
        .fine_grained
        .iter()
        .find(|p| p.name == source)
        .map_or(0, |p| p.precedence);
    let user = facts.user.as_ref();
    PolicyReport {
        domain_default: Some(policy_pb("domain", 0, &facts.domain, &[])),
        fine_grained: facts
            .fine_grained
            .iter()
            .map(|p| policy_pb(&p.name, p.precedence, &p.policy, &p.applies_to))
            .collect(),
        fine_grained_readable: facts.fine_grained_readable,
        effective: user.map(|_| policy_pb(source, precedence, effective, &[])),
        account_name: user.map(|u| u.account_name.clone()).unwrap_or_default(),
        display_name: user.map(|u| u.display_name.clone()).unwrap_or_default(),
        password_last_set: user
            .and_then(|u| u.password_last_set)
            .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
        directory_vendor: if facts.samba { "samba" } else { "windows" }.to_owned(),
    }
}
