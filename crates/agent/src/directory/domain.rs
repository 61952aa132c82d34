//! Facts about the domain that every operation needs and that rarely change: the
//! naming context, the protected groups found in it, the configured scope bases
//! as the DC names them, and the SID of the agent's own service account. Read with the first operation's session and kept for
//! [`DOMAIN_FACTS_TTL`], then read again by the next operation, so a group or OU
//! created later is seen without a restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::Scope;
use tracing::{info, warn};

use super::DirectoryError;
use super::classify;
use super::session::{Session, unexpected};
use super::wire::{self, Sid};

/// How long the domain facts are kept before they are read again.
pub const DOMAIN_FACTS_TTL: Duration = Duration::from_secs(600);

/// Facts about the domain, read once per [`DOMAIN_FACTS_TTL`].
#[derive(Debug, Clone)]
pub(crate) struct DomainInfo {
    pub(crate) root_dn: String,
    /// Protected groups found in this domain: (DN, well-known name).
    pub(crate) protected_groups: Vec<(String, &'static str)>,
    /// The configured scope bases as the DC names them (same order).
    pub(crate) scope_bases: Vec<String>,
    /// The agent's own service account, never written back.
    pub(crate) service_sid: Sid,
}

/// The cached facts.
#[derive(Default)]
pub(crate) struct DomainCache {
    facts: Mutex<Option<(Instant, Arc<DomainInfo>)>>,
}

impl DomainCache {
    /// The facts, read on `s` when there are none or they are older than the TTL.
    /// A failed read is not kept: the next operation tries again.
    pub(crate) async fn get(
        &self,
        s: &mut Session,
        scope_bases: &[String],
        service_account: &str,
    ) -> Result<Arc<DomainInfo>, DirectoryError> {
        {
            let facts = self
                .facts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, info)) = facts.as_ref()
                && at.elapsed() < DOMAIN_FACTS_TTL
            {
                return Ok(Arc::clone(info));
            }
        }
        let info = Arc::new(load_domain(s, scope_bases, service_account).await?);
        *self
            .facts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), Arc::clone(&info)));
        Ok(info)
    }
}

/// BUILTIN aliases whose members are protected (AdminSDHolder's list).
pub(crate) const PROTECTED_BUILTIN: &[(u32, &str)] = &[
    (544, "Administrators"),
    (548, "Account Operators"),
    (549, "Server Operators"),
    (550, "Print Operators"),
    (551, "Backup Operators"),
    (552, "Replicator"),
];

/// Domain groups (by RID) whose members are protected.
pub(crate) const PROTECTED_DOMAIN_RIDS: &[(u32, &str)] = &[
    (512, "Domain Admins"),
    (516, "Domain Controllers"),
    (518, "Schema Admins"),
    (519, "Enterprise Admins"),
    (521, "Read-only Domain Controllers"),
    (526, "Key Admins"),
    (527, "Enterprise Key Admins"),
];

/// Accounts (by RID) that are protected themselves: Administrator, krbtgt.
pub(crate) const PROTECTED_ACCOUNT_RIDS: &[u32] = &[500, 502];

async fn load_domain(
    s: &mut Session,
    scope_bases: &[String],
    service_account: &str,
) -> Result<DomainInfo, DirectoryError> {
    let root = s
        .search_ok(
            "",
            Scope::Base,
            "(objectClass=*)",
            &["defaultNamingContext"],
        )
        .await?;
    let root_dn = root
        .first()
        .and_then(|e| e.text("defaultNamingContext"))
        .map(str::to_string)
        .ok_or_else(|| DirectoryError::Directory {
            op: "search",
            rc: 0,
            text: "rootDSE has no defaultNamingContext".to_string(),
        })?;
    let domain = s
        .search_ok(&root_dn, Scope::Base, "(objectClass=*)", &["objectSid"])
        .await?;
    let domain_sid = domain
        .first()
        .and_then(|e| e.first("objectSid"))
        .and_then(Sid::from_bytes);
    let mut wanted: Vec<(Sid, &'static str)> = PROTECTED_BUILTIN
        .iter()
        .map(|(rid, name)| (Sid::builtin(*rid), *name))
        .collect();
    if let Some(sid) = &domain_sid {
        wanted.extend(
            PROTECTED_DOMAIN_RIDS
                .iter()
                .map(|(rid, name)| (sid.with_rid(*rid), *name)),
        );
    }
    let clauses: String = wanted
        .iter()
        .map(|(sid, _)| format!("(objectSid={})", wire::escape_bytes(&sid.to_bytes())))
        .collect();
    let filter = format!("(&(objectClass=group)(|{clauses}))");
    let groups = s
        .search_ok(&root_dn, Scope::Subtree, &filter, &["objectSid"])
        .await?;
    let protected_groups = groups
        .into_iter()
        .filter_map(|g| {
            let sid = g.first("objectSid").and_then(Sid::from_bytes)?;
            let name = wanted.iter().find(|(w, _)| *w == sid)?.1;
            Some((g.dn, name))
        })
        .collect::<Vec<_>>();
    let scope_bases = canonical_bases(s, scope_bases).await?;
    // Fail closed: without its own SID the agent cannot tell itself apart.
    let (_, service_sid) = super::security::account_entry(s, &root_dn, service_account).await?;
    info!(
        root_dn = %root_dn,
        domain_sid = ?domain_sid.as_ref().map(ToString::to_string),
        protected_groups = protected_groups.len(),
        "domain facts loaded"
    );
    Ok(DomainInfo {
        root_dn,
        protected_groups,
        scope_bases,
        service_sid,
    })
}

/// The well-known name of a protected group SID, if it is one.
pub(crate) fn protected_group_name(sid: &Sid) -> Option<&'static str> {
    let rid = sid.rid()?;
    if sid.is_builtin() {
        PROTECTED_BUILTIN
            .iter()
            .find(|(r, _)| *r == rid)
            .map(|(_, n)| *n)
    } else if sid.is_domain_account() {
        PROTECTED_DOMAIN_RIDS
            .iter()
            .find(|(r, _)| *r == rid)
            .map(|(_, n)| *n)
    } else {
        None
    }
}

/// Each configured scope base as the DC names it; a base that does not exist is a
/// configuration error.
async fn canonical_bases(s: &mut Session, bases: &[String]) -> Result<Vec<String>, DirectoryError> {
    let mut out = Vec::with_capacity(bases.len());
    for base in bases {
        match s
            .search(base, Scope::Base, "(objectClass=*)", &["1.1"], Vec::new())
            .await?
        {
            Ok(entries) => match entries.into_iter().next() {
                Some(e) => out.push(e.dn),
                None => out.push(base.clone()),
            },
            Err(res) if res.rc == classify::rc::NO_SUCH_OBJECT => {
                warn!(base = %base, "configured scope base does not exist");
                return Err(DirectoryError::Config(format!(
                    "scope base {base:?} does not exist in the directory"
                )));
            }
            Err(res) => return Err(unexpected("search", &s.url, res)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_groups_are_known_by_sid() {
        assert_eq!(
            protected_group_name(&Sid::builtin(544)),
            Some("Administrators")
        );
        assert_eq!(
            protected_group_name(&Sid::builtin(551)),
            Some("Backup Operators")
        );
        assert_eq!(protected_group_name(&Sid::builtin(545)), None); // Users
        let domain = Sid::from_bytes(&[
            1, 4, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0,
        ])
        .unwrap();
        assert_eq!(
            protected_group_name(&domain.with_rid(512)),
            Some("Domain Admins")
        );
        assert_eq!(
            protected_group_name(&domain.with_rid(519)),
            Some("Enterprise Admins")
        );
        assert_eq!(protected_group_name(&domain.with_rid(513)), None); // Domain Users
        assert_eq!(protected_group_name(&domain), None);
    }
}
