//! Judging a candidate password before it reaches the directory: the
//! effective policy's minimum length and complexity rule (as
//! `writeback-password` reproduces the DC's), the banned-password list (the
//! built-in common passwords plus the tenant's terms), the optional offline
//! breached-password corpus, and for a change the minimum age. Every failing
//! rule is reported, so a portal can show all problems at once; none of the
//! sentences contains the password. History is left to the directory (only
//! it holds the old hashes).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use writeback_core::ReasonCode;
use writeback_password::banned::BannedList;
use writeback_password::breached::RangeDir;
use writeback_password::complexity::{self, Flavor, Problem};
use writeback_proto::v1::{self as pb, PolicyReport};

use crate::store::{Store, StoreError};

/// How long a tenant's banned list is reused before it is read again (a
/// change through this control plane refreshes it at once).
const BANNED_TTL: Duration = Duration::from_secs(30);

/// Per-tenant banned lists, built-in plus custom.
#[derive(Default)]
pub struct BannedLists {
    lists: Mutex<HashMap<String, (Instant, Arc<BannedList>)>>,
}

impl std::fmt::Debug for BannedLists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BannedLists").finish_non_exhaustive()
    }
}

impl BannedLists {
    /// The tenant's list.
    pub async fn get(&self, store: &Store, tenant: &str) -> Result<Arc<BannedList>, StoreError> {
        if let Some((at, list)) = self.lock().get(tenant)
            && at.elapsed() < BANNED_TTL
        {
            return Ok(list.clone());
        }
        let custom = store.banned_terms(tenant).await?;
        let list = Arc::new(BannedList::builtin().with_custom(&custom));
        self.lock()
            .insert(tenant.to_owned(), (Instant::now(), list.clone()));
        Ok(list)
    }

    /// Forgets the tenant's list (after it changed).
    pub fn forget(&self, tenant: &str) {
        self.lock().remove(tenant);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<BannedList>)>> {
        self.lists
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Name tokens of a user that a password must not be built on: the
/// account name and the UPN's local part, and the display name's words.
pub fn user_tokens(account_name: &str, display_name: &str, upn: &str) -> Vec<String> {
    let local = upn.split('@').next().unwrap_or_default();
    [account_name, display_name, local]
        .iter()
        .flat_map(|s| s.split(|c: char| !c.is_alphanumeric()))
        .filter(|t| t.chars().count() >= 3)
        .map(str::to_lowercase)
        .collect()
}

/// The banned-list refusal for `password`, if it fails the list.
pub fn banned_problem(
    list: &BannedList,
    password: &str,
    tokens: &[String],
) -> Option<pb::PasswordProblem> {
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let e = list.evaluate(password, &tokens);
    e.banned.then(|| pb::PasswordProblem {
        reason_code: ReasonCode::PasswordBanned.as_str().to_owned(),
        message: format!(
            "the password is too close to commonly used or banned passwords{} (score {} of the {} needed); add unrelated words or characters",
            if e.matched_terms.is_empty() {
                String::new()
            } else {
                format!(" (it is built on: {})", e.matched_terms.join(", "))
            },
            e.score,
            e.threshold
        ),
    })
}

/// Everything writeback can judge about `password` for the user `report`
/// describes, at `now_s` (Unix seconds).
pub fn judge(
    report: &PolicyReport,
    upn: &str,
    password: &str,
    change: bool,
    now_s: i64,
    banned: &BannedList,
    breached: Option<&Path>,
) -> pb::ValidatePasswordResponse {
    let effective = report
        .effective
        .clone()
        .or_else(|| report.domain_default.clone())
        .unwrap_or_default();
    let mut problems = Vec::new();
    let length = complexity::length(password);
    if length < effective.min_length as usize {
        problems.push(problem(
            ReasonCode::PasswordTooShort,
            format!(
                "the password must be at least {} characters long (this one has {length})",
                effective.min_length
            ),
        ));
    }
    if effective.complexity {
        let flavor = if report.directory_vendor == "samba" {
            Flavor::Samba
        } else {
            Flavor::Windows
        };
        for p in complexity::problems(flavor, password, &report.account_name, &report.display_name)
        {
            problems.push(problem(
                ReasonCode::PasswordComplexity,
                complexity_sentence(&p),
            ));
        }
    }
    let tokens = user_tokens(&report.account_name, &report.display_name, upn);
    problems.extend(banned_problem(banned, password, &tokens));
    if let Some(dir) = breached {
        match RangeDir::open(dir).and_then(|d| d.count(password)) {
            Ok(0) => {}
            Ok(n) => problems.push(problem(
                ReasonCode::PasswordBreached,
                format!("the password appears {n} times in known data breaches; choose another"),
            )),
            Err(e) => tracing::warn!(error = %e, "the breached-password corpus could not be read"),
        }
    }
    let mut next_change_allowed_at = None;
    if change
        && effective.min_age_seconds > 0
        && let Some(set) = &report.password_last_set
    {
        let allowed = set
            .seconds
            .saturating_add(i64::try_from(effective.min_age_seconds).unwrap_or(i64::MAX));
        if allowed > now_s {
            next_change_allowed_at = Some(prost_types::Timestamp {
                seconds: allowed,
                nanos: 0,
            });
            problems.push(problem(
                ReasonCode::PasswordTooYoung,
                format!(
                    "the password was changed too recently; the next change is allowed at {}",
                    human_time(allowed)
                ),
            ));
        }
    }
    pb::ValidatePasswordResponse {
        ok: problems.is_empty(),
        problems,
        effective: Some(effective),
        unchecked: vec!["history".to_owned()],
        next_change_allowed_at,
    }
}

fn problem(code: ReasonCode, message: String) -> pb::PasswordProblem {
    pb::PasswordProblem {
        reason_code: code.as_str().to_owned(),
        message,
    }
}

fn complexity_sentence(p: &Problem) -> String {
    match p {
        Problem::TooFewCategories { found } => format!(
            "the password must mix at least 3 of: upper-case letters, lower-case letters, digits, symbols, other letters (it has {found})"
        ),
        Problem::ContainsAccountName => "the password must not contain the account name".to_owned(),
        Problem::ContainsNameToken(token) => {
            format!("the password must not contain a part of the user's name ({token})")
        }
    }
}

fn human_time(unix_s: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_s)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(vendor: &str) -> PolicyReport {
        PolicyReport {
            effective: Some(pb::PasswordPolicy {
                source: "pso-staff".into(),
                min_length: 10,
                complexity: true,
                min_age_seconds: 86_400,
                ..Default::default()
            }),
            account_name: "jdoe".into(),
            display_name: "Jane Doe-Smith".into(),
            password_last_set: Some(prost_types::Timestamp {
                seconds: 1_000_000,
                nanos: 0,
            }),
            directory_vendor: vendor.into(),
            ..Default::default()
        }
    }

    fn codes(v: &pb::ValidatePasswordResponse) -> Vec<&str> {
        v.problems.iter().map(|p| p.reason_code.as_str()).collect()
    }

    #[test]
    fn every_failing_rule_is_reported_and_none_repeats_the_password() {
        let list = BannedList::builtin();
        let upn = "jdoe@contoso.test";
        let v = judge(
            &report("windows"),
            upn,
            "password",
            true,
            1_000_100,
            &list,
            None,
        );
        assert!(!v.ok);
        assert_eq!(
            codes(&v),
            [
                "PASSWORD_TOO_SHORT",
                "PASSWORD_COMPLEXITY",
                "PASSWORD_BANNED",
                "PASSWORD_MIN_AGE"
            ]
        );
        assert!(v.problems.iter().all(|p| !p.message.contains("password\"")));
        assert_eq!(v.next_change_allowed_at.map(|t| t.seconds), Some(1_086_400));
        assert_eq!(v.unchecked, ["history"]);
        let good = judge(
            &report("windows"),
            upn,
            "Zq7#Wv3$Kx-Heron",
            true,
            1_100_000,
            &list,
            None,
        );
        assert!(good.ok, "{good:?}");
    }

    #[test]
    fn the_name_rule_follows_the_directory_vendor() {
        let list = BannedList::builtin();
        let upn = "jdoe@contoso.test";
        let with_name = "Zq7#Wv3$Kx-Smith";
        let windows = judge(&report("windows"), upn, with_name, false, 0, &list, None);
        assert_eq!(codes(&windows), ["PASSWORD_COMPLEXITY"], "{windows:?}");
        let samba = judge(&report("samba"), upn, with_name, false, 0, &list, None);
        assert!(samba.ok, "{samba:?}");
    }

    #[test]
    fn a_breached_password_is_found_in_the_range_files() {
        let dir = tempfile::tempdir().unwrap();
        let password = "Zq7#Wv3$Kx-Heron";
        let sha1 = hex::encode_upper(sha1_digest(password.as_bytes()));
        std::fs::write(
            dir.path().join(&sha1[..5]),
            format!("{}:42\r\n", &sha1[5..]),
        )
        .unwrap();
        let v = judge(
            &report("samba"),
            "jdoe@contoso.test",
            password,
            false,
            0,
            &BannedList::builtin(),
            Some(dir.path()),
        );
        assert_eq!(codes(&v), ["PASSWORD_BREACHED"]);
        assert!(v.problems[0].message.contains("42 times"));
    }

    fn sha1_digest(data: &[u8]) -> Vec<u8> {
        use sha1::Digest as _;
        sha1::Sha1::digest(data).to_vec()
    }

    #[test]
    fn user_tokens_come_from_every_name() {
        assert_eq!(
            user_tokens("jdoe", "Jane Doe-Smith", "j.doe@contoso.test"),
            ["jdoe", "jane", "doe", "smith", "doe"]
        );
    }
}
