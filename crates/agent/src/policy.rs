//! `writeback-agent policy`: the domain's password policy, and warnings in plain
//! words when one of the pitfalls the seed's Troubleshooting names applies. The same
//! warnings travel in the agent's health report, so `writebackctl status` shows
//! them too.

use std::fmt::Write as _;

use crate::directory::{DomainReport, PasswordPolicy, human_duration as human};

/// The pitfalls that apply to this domain, each as one sentence saying what goes
/// wrong and what to do. Empty when none applies.
pub fn warnings(report: &DomainReport) -> Vec<String> {
    let p = &report.policy;
    let mut out = Vec::new();
    if !p.min_age.is_zero() {
        out.push(format!(
            "the minimum password age is {}: a user who changed their password cannot \
             change it again for {} (PASSWORD_MIN_AGE), so repeated changes written back \
             from the cloud are refused; set Minimum password age to 0 (resets by the \
             agent are not affected)",
            human(p.min_age),
            human(p.min_age)
        ));
    }
    if !report.policy_hints_supported && p.history_length > 0 {
        out.push(format!(
            "the domain controller does not support the password policy hints control, \
             so password history ({} remembered) is not enforced on resets written back: \
             a user can reset to a recently used password (changes still enforce it)",
            p.history_length
        ));
    }
    if p.lockout_threshold > 0 && p.lockout_duration.is_none() {
        out.push(format!(
            "accounts are locked out after {} bad passwords until an administrator \
             unlocks them: turn on self-service unlock, or users stay locked out",
            p.lockout_threshold
        ));
    }
    out
}

fn describe(p: &PasswordPolicy) -> Vec<(&'static str, String)> {
    let or_none = |d: Option<std::time::Duration>, none: &str| match d {
        Some(d) if !d.is_zero() => human(d),
        _ => none.to_string(),
    };
    vec![
        ("minimum length", format!("{} characters", p.min_length)),
        (
            "complexity",
            if p.complexity { "required" } else { "off" }.to_string(),
        ),
        (
            "history",
            format!("{} passwords remembered", p.history_length),
        ),
        (
            "minimum age",
            if p.min_age.is_zero() {
                "0 (none)".to_string()
            } else {
                human(p.min_age)
            },
        ),
        ("maximum age", or_none(p.max_age, "never expires")),
        (
            "lockout threshold",
            if p.lockout_threshold == 0 {
                "0 (never locked out)".to_string()
            } else {
                format!("{} bad passwords", p.lockout_threshold)
            },
        ),
        (
            "lockout duration",
            or_none(p.lockout_duration, "until an administrator unlocks"),
        ),
    ]
}

/// The report as text: the policy, the policy-hints support, then the warnings.
pub fn render(report: &DomainReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "domain root: {}", report.root_dn);
    let _ = writeln!(out, "domain controller: {}", report.dc_url);
    let _ = writeln!(out);
    for (name, value) in describe(&report.policy) {
        let _ = writeln!(out, "  {name:<18} {value}");
    }
    let _ = writeln!(
        out,
        "  {:<18} {}",
        "policy hints",
        if report.policy_hints_supported {
            "supported (history is enforced on resets)"
        } else {
            "not supported"
        }
    );
    let _ = writeln!(out);
    let warnings = warnings(report);
    if warnings.is_empty() {
        let _ = writeln!(
            out,
            "no warnings: nothing in this policy gets in the way of writeback"
        );
    } else {
        for w in warnings {
            let _ = writeln!(out, "warning: {w}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Samba 4.17's defaults after provisioning.
    fn samba_defaults() -> DomainReport {
        DomainReport {
            dc_url: "ldaps://dc1.contoso.test:636".into(),
            root_dn: "DC=contoso,DC=test".into(),
            policy: PasswordPolicy {
                min_length: 7,
                history_length: 24,
                min_age: Duration::from_secs(86_400),
                max_age: Some(Duration::from_secs(42 * 86_400)),
                complexity: true,
                lockout_threshold: 0,
                lockout_duration: Some(Duration::from_secs(30 * 60)),
            },
            policy_hints_supported: false,
        }
    }

    #[test]
    fn samba_defaults_warn_about_min_age_and_history_on_resets() {
        let w = warnings(&samba_defaults());
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("the minimum password age is 1 day: "),
            "{}",
            w[0]
        );
        assert!(w[0].contains("set Minimum password age to 0"));
        assert!(w[1].contains("password history (24 remembered) is not enforced on resets"));
    }

    #[test]
    fn a_writeback_friendly_policy_has_no_warnings() {
        let mut r = samba_defaults();
        r.policy.min_age = Duration::ZERO;
        r.policy_hints_supported = true;
        assert!(warnings(&r).is_empty());
        // No history to enforce: the missing control does not matter.
        r.policy_hints_supported = false;
        r.policy.history_length = 0;
        assert!(warnings(&r).is_empty());
        assert!(render(&r).contains("no warnings"));
    }

    #[test]
    fn the_age_is_given_in_words() {
        let mut r = samba_defaults();
        r.policy.min_age = Duration::from_secs(2 * 86_400);
        assert!(warnings(&r)[0].contains("is 2 days: "));
        r.policy.min_age = Duration::from_secs(90 * 60);
        assert!(warnings(&r)[0].contains("is 90 minutes: "));
        // Not a whole number of days: rounded up to hours, never early.
        r.policy.min_age = Duration::from_secs(86_400 + 30);
        assert!(warnings(&r)[0].contains("is 25 hours: "));
    }

    #[test]
    fn a_lockout_without_duration_warns() {
        let mut r = samba_defaults();
        r.policy.lockout_threshold = 5;
        r.policy.lockout_duration = None;
        let w = warnings(&r);
        assert!(
            w.iter()
                .any(|w| w.contains("locked out after 5 bad passwords until an administrator")),
            "{w:?}"
        );
        assert!(render(&r).contains("until an administrator unlocks"));
    }

    #[test]
    fn the_rendering_lists_the_policy() {
        let text = render(&samba_defaults());
        for line in [
            "  minimum length     7 characters",
            "  complexity         required",
            "  history            24 passwords remembered",
            "  minimum age        1 day",
            "  maximum age        42 days",
            "  lockout threshold  0 (never locked out)",
            "  policy hints       not supported",
            "warning: the minimum password age is 1 day",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }
}
