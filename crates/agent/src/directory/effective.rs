//! The password policies a DC enforces: the domain's default (on the domain
//! root) and every fine-grained password policy (PSO, under the Password
//! Settings Container), and for one user the effective one — the PSO the DC
//! names in the constructed attribute `msDS-ResultantPSO` (it applies AD's
//! precedence rules itself: a PSO linked to the user beats those of their
//! groups, then the lowest precedence wins), else the domain default. Read
//! only; a user must pass the same eligibility checks as a write (found,
//! in scope, not protected, enabled).

use std::time::Duration;

use ldap3::Scope;
use tracing::debug;

use super::eligibility::User;
use super::session::Session;
use super::wire::{self, RawEntry};
use super::{Directory, DirectoryError, PasswordPolicy, Target, dn, read_policy};

const PSO_ATTRS: &[&str] = &[
    "cn",
    "msDS-PasswordSettingsPrecedence",
    "msDS-MinimumPasswordLength",
    "msDS-PasswordComplexityEnabled",
    "msDS-PasswordHistoryLength",
    "msDS-MinimumPasswordAge",
    "msDS-MaximumPasswordAge",
    "msDS-LockoutThreshold",
    "msDS-LockoutDuration",
    "msDS-PSOAppliesTo",
];

/// A fine-grained password policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FineGrainedPolicy {
    /// Its `cn`.
    pub name: String,
    /// Its DN.
    pub dn: String,
    /// `msDS-PasswordSettingsPrecedence` (lower wins).
    pub precedence: u32,
    /// Its settings.
    pub policy: PasswordPolicy,
    /// `msDS-PSOAppliesTo`: the names (first RDN values) of the groups and
    /// users it is linked to.
    pub applies_to: Vec<String>,
}

/// What the DC says about a user's password rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPolicy {
    /// `sAMAccountName`.
    pub account_name: String,
    /// `displayName`, empty when unset.
    pub display_name: String,
    /// `pwdLastSet` as Unix seconds; `None` when 0 (must change) or unset.
    pub password_last_set: Option<i64>,
    /// The name of the PSO that applies, `None` for the domain default.
    pub effective_pso: Option<String>,
}

/// The domain's policies and, when asked, one user's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFacts {
    /// The domain default.
    pub domain: PasswordPolicy,
    /// Every PSO the agent's account may read, by precedence.
    pub fine_grained: Vec<FineGrainedPolicy>,
    /// False when the Password Settings Container could not be read.
    pub fine_grained_readable: bool,
    /// The user's facts, when a user was named.
    pub user: Option<UserPolicy>,
    /// True when the DC is Samba (rootDSE `vendorName`), whose complexity
    /// rule has no name checks.
    pub samba: bool,
}

impl PolicyFacts {
    /// The user's effective policy: their PSO, else the domain default.
    pub fn effective(&self) -> (&str, &PasswordPolicy) {
        let pso = self.user.as_ref().and_then(|u| u.effective_pso.as_deref());
        match pso.and_then(|name| self.fine_grained.iter().find(|p| p.name == name)) {
            Some(p) => (p.name.as_str(), &p.policy),
            None => ("domain", &self.domain),
        }
    }
}

fn pso_from_entry(e: &RawEntry) -> FineGrainedPolicy {
    let count = |name| e.int(name).and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
    let interval = |name| e.int(name).and_then(wire::interval_to_duration);
    FineGrainedPolicy {
        name: e.text("cn").unwrap_or_default().to_owned(),
        dn: e.dn.clone(),
        precedence: count("msDS-PasswordSettingsPrecedence"),
        policy: PasswordPolicy {
            min_length: count("msDS-MinimumPasswordLength"),
            history_length: count("msDS-PasswordHistoryLength"),
            min_age: interval("msDS-MinimumPasswordAge").unwrap_or(Duration::ZERO),
            max_age: interval("msDS-MaximumPasswordAge").filter(|d| !d.is_zero()),
            complexity: e
                .text("msDS-PasswordComplexityEnabled")
                .is_some_and(|v| v.eq_ignore_ascii_case("TRUE")),
            lockout_threshold: count("msDS-LockoutThreshold"),
            lockout_duration: interval("msDS-LockoutDuration").filter(|d| !d.is_zero()),
        },
        applies_to: e
            .texts("msDS-PSOAppliesTo")
            .iter()
            .map(|d| first_rdn_value(d))
            .collect(),
    }
}

/// `alice` of `CN=alice,CN=Users,DC=…` (the whole DN if it does not parse).
fn first_rdn_value(dn: &str) -> String {
    dn.split_once(',')
        .map_or(dn, |(first, _)| first)
        .split_once('=')
        .map_or(dn, |(_, v)| v)
        .to_owned()
}

impl Directory {
    /// The domain's password policies and, for `target`, the user's
    /// effective one (see the module docs).
    #[tracing::instrument(skip_all, fields(dc))]
    pub async fn policy_facts(
        &self,
        target: Option<&Target>,
    ) -> Result<PolicyFacts, DirectoryError> {
        with_session!(self, |s| self.policy_facts_on(s, target).await)
    }

    async fn policy_facts_on(
        &self,
        s: &mut Session,
        target: Option<&Target>,
    ) -> Result<PolicyFacts, DirectoryError> {
        let domain = self.domain(s).await?;
        let policy = read_policy(s, &domain.root_dn).await?;
        let samba = s
            .search_ok("", Scope::Base, "(objectClass=*)", &["vendorName"])
            .await?
            .first()
            .and_then(|e| e.text("vendorName"))
            .is_some_and(|v| v.contains("Samba"));
        let container = format!(
            "CN=Password Settings Container,CN=System,{}",
            domain.root_dn
        );
        let (mut fine_grained, readable) = match s
            .search_ok(
                &container,
                Scope::OneLevel,
                "(objectClass=msDS-PasswordSettings)",
                PSO_ATTRS,
            )
            .await
        {
            Ok(entries) => (entries.iter().map(pso_from_entry).collect::<Vec<_>>(), true),
            Err(e) => {
                debug!(error = %e, "the password settings container is not readable");
                (Vec::new(), false)
            }
        };
        fine_grained.sort_by_key(|p| p.precedence);
        let user = match target {
            None => None,
            Some(target) => {
                let user = self.eligible_user(s, target).await?;
                Some(self.user_policy(s, &user, &fine_grained).await?)
            }
        };
        Ok(PolicyFacts {
            domain: policy,
            fine_grained,
            fine_grained_readable: readable,
            user,
            samba,
        })
    }

    /// The policy that applies to `user`: the PSO `msDS-ResultantPSO`
    /// names, else the domain default (for explaining a DC's refusal).
    pub(crate) async fn effective_policy(
        &self,
        s: &mut Session,
        user: &User,
    ) -> Result<PasswordPolicy, DirectoryError> {
        let entries = s
            .search_ok(
                &user.object_dn,
                Scope::Base,
                "(objectClass=*)",
                &["msDS-ResultantPSO"],
            )
            .await?;
        if let Some(pso_dn) = entries.first().and_then(|e| e.text("msDS-ResultantPSO")) {
            let pso_dn = pso_dn.to_owned();
            if let Some(pso) = s
                .search_ok(&pso_dn, Scope::Base, "(objectClass=*)", PSO_ATTRS)
                .await?
                .first()
            {
                return Ok(pso_from_entry(pso).policy);
            }
        }
        let domain = self.domain(s).await?;
        read_policy(s, &domain.root_dn).await
    }

    async fn user_policy(
        &self,
        s: &mut Session,
        user: &User,
        fine_grained: &[FineGrainedPolicy],
    ) -> Result<UserPolicy, DirectoryError> {
        // A constructed attribute: only returned when asked for by name.
        let entries = s
            .search_ok(
                &user.object_dn,
                Scope::Base,
                "(objectClass=*)",
                &["msDS-ResultantPSO"],
            )
            .await?;
        let resultant = entries
            .first()
            .and_then(|e| e.text("msDS-ResultantPSO"))
            .map(str::to_owned);
        let effective_pso = resultant.map(|pso_dn| {
            fine_grained
                .iter()
                .find(|p| dn::is_within(&p.dn, &pso_dn) && dn::is_within(&pso_dn, &p.dn))
                .map_or_else(|| first_rdn_value(&pso_dn), |p| p.name.clone())
        });
        Ok(UserPolicy {
            account_name: user.sam.clone(),
            display_name: user.display_name.clone().unwrap_or_default(),
            password_last_set: user
                .pwd_last_set
                .filter(|v| *v > 0)
                .and_then(wire::filetime_to_datetime)
                .map(time::OffsetDateTime::unix_timestamp),
            effective_pso,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdn_values_name_the_groups_a_pso_applies_to() {
        assert_eq!(
            first_rdn_value("CN=Helpdesk,OU=Groups,DC=c,DC=t"),
            "Helpdesk"
        );
        assert_eq!(first_rdn_value("nonsense"), "nonsense");
    }
}
