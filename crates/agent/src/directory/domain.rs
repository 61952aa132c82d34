//! Facts about the domain that every operation needs and that rarely change: the
//! naming context, the protected groups found in it, the configured scope bases
//! and deny groups as the DC names them (a deny group that does not exist is a
//! configuration error: nothing is written until it is fixed), the SID of the
//! agent's own service account, and the accounts as powerful as administrators
//! that no protected group names ([`super::privileged`]). Read with the first operation's session and kept
//! for [`DOMAIN_FACTS_TTL`], then read again by the next operation, so a group or
//! OU created later is seen without a restart.
//!
//! Two proofs are part of the facts, because LDAP answers an attribute the reader
//! may not see exactly as one that is absent. The built-in Administrator (RID 500)
//! always carries `adminCount=1` (AD's AdminSDHolder sets it, Samba provisions it):
//! if the service account does not read it there, it cannot be trusted to read it
//! on anyone, and the facts fail to load — every operation is refused until the
//! account may read it. And the in-chain membership check (the fallback when
//! `tokenGroups` is not readable) counts only if it finds Administrator in the
//! built-in Administrators group ([`DomainInfo::in_chain_verified`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::Scope;
use tracing::{info, warn};

use super::DirectoryError;
use super::classify;
use super::privileged::Privileged;
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
    /// The configured deny groups, as the DC names them.
    pub(crate) deny_groups: Vec<DenyGroup>,
    /// Whether the in-chain membership check found Administrator in the built-in
    /// Administrators group with the service account's rights, so that an empty
    /// answer from it means "not a member" rather than "cannot see".
    pub(crate) in_chain_verified: bool,
    /// Accounts and groups as powerful as administrators that no protected group
    /// names ([`super::privileged`]).
    pub(crate) privileged: Privileged,
}

/// A group of the agent's configuration whose members are never written back.
#[derive(Debug, Clone)]
pub(crate) struct DenyGroup {
    pub(crate) dn: String,
    pub(crate) sid: Sid,
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
        deny_groups: &[String],
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
        let info = Arc::new(load_domain(s, scope_bases, deny_groups, service_account).await?);
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

/// Domain groups (by RID) whose members are protected: AdminSDHolder's, then two
/// it leaves out that are as good as administrators — Cert Publishers (may publish
/// certificates to every user, and so map a logon certificate) and Group Policy
/// Creator Owners (may create the policies domain controllers run).
pub(crate) const PROTECTED_DOMAIN_RIDS: &[(u32, &str)] = &[
    (512, "Domain Admins"),
    (516, "Domain Controllers"),
    (518, "Schema Admins"),
    (519, "Enterprise Admins"),
    (521, "Read-only Domain Controllers"),
    (526, "Key Admins"),
    (527, "Enterprise Key Admins"),
    (517, "Cert Publishers"),
    (520, "Group Policy Creator Owners"),
];

/// The groups of [`PROTECTED_DOMAIN_RIDS`] AdminSDHolder leaves out (reported by
/// `permissions check` with their members).
pub(crate) const BEYOND_ADMINSDHOLDER: &[&str] =
    &["Cert Publishers", "Group Policy Creator Owners"];

/// Accounts (by RID) that are protected themselves: Administrator, krbtgt.
pub(crate) const PROTECTED_ACCOUNT_RIDS: &[u32] = &[500, 502];

async fn load_domain(
    s: &mut Session,
    scope_bases: &[String],
    deny_groups: &[String],
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
    let mut protected_groups = groups
        .into_iter()
        .filter_map(|g| {
            let sid = g.first("objectSid").and_then(Sid::from_bytes)?;
            let name = wanted.iter().find(|(w, _)| *w == sid)?.1;
            Some((g.dn, name))
        })
        .collect::<Vec<_>>();
    // A fixed order whatever order the DC answered in, the domain's groups
    // before the built-in ones they are nested in: a member of Domain Admins
    // is also one of Administrators, and a refusal names the group the user
    // was put in.
    let rank = |name: &str| {
        let domain = PROTECTED_DOMAIN_RIDS.iter().position(|(_, n)| *n == name);
        let builtin = PROTECTED_BUILTIN.iter().position(|(_, n)| *n == name);
        domain.map_or_else(|| (1, builtin.unwrap_or(usize::MAX)), |i| (0, i))
    };
    protected_groups.sort_by_key(|(_, name)| rank(name));
    let scope_bases = canonical_bases(s, scope_bases).await?;
    let deny_groups = resolve_deny_groups(s, deny_groups).await?;
    // Fail closed: without its own SID the agent cannot tell itself apart.
    let (service_entry, service_sid) =
        super::security::account_entry(s, &root_dn, service_account).await?;
    let privileged =
        super::privileged::load(s, &root_dn, &scope_bases, &service_entry.dn, &service_sid).await?;
    let domain_sid = domain_sid.ok_or_else(|| {
        DirectoryError::Config(
            "the domain root's objectSid is not readable by the service account".to_string(),
        )
    })?;
    let administrators = protected_groups
        .iter()
        .find(|(_, name)| *name == "Administrators")
        .map(|(dn, _)| dn.clone());
    let in_chain_verified =
        prove_reads(s, &root_dn, &domain_sid, administrators.as_deref()).await?;
    info!(
        root_dn = %root_dn,
        domain_sid = %domain_sid,
        protected_groups = protected_groups.len(),
        deny_groups = deny_groups.len(),
        in_chain_verified,
        privileged = privileged.holders.len() + privileged.named_groups.len(),
        "domain facts loaded"
    );
    if !privileged.unresolved.is_empty() {
        let unresolved: Vec<String> = privileged.unresolved.iter().map(Sid::to_string).collect();
        warn!(
            ?unresolved,
            "privileged trustees of another domain: users whose tokenGroups are unreadable will be refused"
        );
    }
    Ok(DomainInfo {
        root_dn,
        protected_groups,
        scope_bases,
        service_sid,
        deny_groups,
        in_chain_verified,
        privileged,
    })
}

/// The two proofs of the module docs, on the built-in Administrator: an error if
/// its `adminCount=1` is not readable; whether the in-chain check finds it in
/// `administrators` (the built-in Administrators group's DN).
async fn prove_reads(
    s: &mut Session,
    root_dn: &str,
    domain_sid: &Sid,
    administrators: Option<&str>,
) -> Result<bool, DirectoryError> {
    let admin_sid = domain_sid.with_rid(500);
    let filter = format!("(objectSid={})", wire::escape_bytes(&admin_sid.to_bytes()));
    let found = s
        .search_ok(root_dn, Scope::Subtree, &filter, &["adminCount"])
        .await?;
    let Some(admin) = found.first() else {
        return Err(DirectoryError::Config(
            "the built-in Administrator (RID 500) is not visible to the service account, so \
             it cannot prove it reads adminCount"
                .to_string(),
        ));
    };
    if admin.int("adminCount") != Some(1) {
        warn!("the service account does not read adminCount=1 on the built-in Administrator");
        return Err(DirectoryError::Config(
            "the service account cannot read adminCount (the built-in Administrator shows \
             none); it cannot tell protected accounts apart — grant it read access to \
             adminCount on user objects"
                .to_string(),
        ));
    }
    let Some(group) = administrators else {
        return Ok(false);
    };
    let filter = format!(
        "(memberOf:{}:={})",
        wire::IN_CHAIN_RULE,
        ldap3::ldap_escape(group)
    );
    let hit = s
        .search_ok(&admin.dn, Scope::Base, &filter, &["1.1"])
        .await?;
    if hit.is_empty() {
        warn!(
            "the in-chain membership check does not see Administrator in Administrators; users whose tokenGroups are unreadable will be refused"
        );
    }
    Ok(!hit.is_empty())
}

/// Each configured deny group as the DC names it, with its SID. A group that does
/// not exist, is not a group or whose SID is not readable is a configuration error.
async fn resolve_deny_groups(
    s: &mut Session,
    dns: &[String],
) -> Result<Vec<DenyGroup>, DirectoryError> {
    let mut out = Vec::with_capacity(dns.len());
    for dn in dns {
        let entries = match s
            .search(
                dn,
                Scope::Base,
                "(objectClass=group)",
                &["objectSid"],
                Vec::new(),
            )
            .await?
        {
            Ok(entries) => entries,
            Err(res) if res.rc == classify::rc::NO_SUCH_OBJECT => Vec::new(),
            Err(res) => return Err(unexpected("search", &s.url, res)),
        };
        let group = entries.into_iter().next().and_then(|e| {
            let sid = e.first("objectSid").and_then(Sid::from_bytes)?;
            Some(DenyGroup { dn: e.dn, sid })
        });
        match group {
            Some(g) => out.push(g),
            None => {
                warn!(group = %dn, "configured deny group not found");
                return Err(DirectoryError::Config(format!(
                    "deny group {dn:?} does not exist in the directory, is not a group or \
                     its objectSid is not readable"
                )));
            }
        }
    }
    Ok(out)
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
        assert_eq!(
            protected_group_name(&domain.with_rid(517)),
            Some("Cert Publishers")
        );
        assert_eq!(
            protected_group_name(&domain.with_rid(520)),
            Some("Group Policy Creator Owners")
        );
        assert_eq!(protected_group_name(&domain), None);
    }
}
