//! What the permission check reads from the directory, and the one write the grant
//! makes: the service account's SIDs, the DACLs of the domain root and the scope
//! bases, the in-scope users whose DACL is protected, the accounts refused as
//! privileged ([`super::privileged`]), and a DACL-only write of the domain root's
//! descriptor. The analysis of what was read is in
//! [`crate::permissions`]; this is only LDAP.
//!
//! # What Samba 4.17 does (measured; the integration tests pin it)
//! - Any account may read its own `objectSid` and `tokenGroups` and the DACL (with
//!   the SD-flags control) of the domain root, OUs and users.
//! - `tokenGroups` includes BUILTIN aliases: Administrator's token carries
//!   BUILTIN\Administrators, whose container-inherit full-control ACE on the root
//!   gives it all four rights.
//! - The default domain DACL grants Unexpire Password to Authenticated Users
//!   (`(OA;;CR;ccc2dc7d-…;;AU)`, as Windows does), so an ordinary account lacks
//!   only the three user rights.
//! - Writing the domain root's DACL with the SD-flags control (value 4, critical)
//!   replaces the DACL only; Samba then recomputes the inherited ACEs of every
//!   object below, so a grant at the root reaches existing users at once (and an
//!   OU's DACL shows the inherited copies). The DACL-only descriptor Samba returns
//!   re-encodes byte for byte with [`super::sd`].

use std::collections::HashSet;

use ldap3::{Mod, Scope, ldap_escape};
use tracing::{debug, info};

use super::domain::BEYOND_ADMINSDHOLDER;
use super::privileged::{self, LOGON_SIDS, PrivilegedAccount};
use super::session::{Session, unexpected};
use super::wire::{self, RawEntry, Sid};
use super::{Directory, DirectoryError};

/// Users read per page when listing descriptors.
const PAGE_SIZE: i32 = 500;

/// An account as the directory knows it.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    /// Its DN.
    pub(crate) dn: String,
    /// Its `objectSid`.
    pub(crate) sid: Sid,
    /// Every SID its access token carries besides its own: groups (transitively,
    /// with the primary group) and the well-known logon SIDs.
    pub(crate) groups: Vec<Sid>,
}

/// What the permission check needs, read in one session.
#[derive(Debug, Clone)]
pub(crate) struct SecuritySnapshot {
    /// The DC that answered.
    pub(crate) dc_url: String,
    /// `defaultNamingContext`.
    pub(crate) root_dn: String,
    /// The account whose rights are checked.
    pub(crate) account: Principal,
    /// The domain root's descriptor (DACL only).
    pub(crate) root_sd: Vec<u8>,
    /// Each configured scope base and its descriptor (DACL only).
    pub(crate) scope_sds: Vec<(String, Vec<u8>)>,
    /// In-scope users whose DACL is protected, when asked for.
    pub(crate) protected_users: Option<Vec<String>>,
    /// The accounts refused as privileged beyond AdminSDHolder's groups, with
    /// `account` as the service account, when asked for (with the users).
    pub(crate) privileged: Option<Vec<PrivilegedAccount>>,
}

impl Directory {
    /// The DN or UPN the agent binds as.
    pub(crate) fn bind_dn(&self) -> &str {
        &self.inner.config.bind_dn
    }

    /// Read what the permission check needs about `account` (a DN, a UPN or
    /// `DOMAIN\name`), and with `list_users` every in-scope user with a protected DACL
    /// and the accounts refused as privileged, with their members.
    #[tracing::instrument(skip_all, fields(dc))]
    pub(crate) async fn security_snapshot(
        &self,
        account: &str,
        list_users: bool,
    ) -> Result<SecuritySnapshot, DirectoryError> {
        with_session!(self, |s| self.snapshot_on(s, account, list_users).await)
    }

    /// Replace the DACL of the domain root with the one in `sd` (a self-relative
    /// descriptor): only the DACL is written (SD-flags 4, critical).
    #[tracing::instrument(skip_all, fields(dc))]
    pub(crate) async fn write_root_dacl(&self, sd: &[u8]) -> Result<(), DirectoryError> {
        with_session!(self, |s| {
            let root_dn = self.domain(s).await?.root_dn.clone();
            let mods = vec![Mod::Replace(
                b"nTSecurityDescriptor".as_slice(),
                HashSet::from([sd]),
            )];
            match s
                .modify(&root_dn, mods, vec![wire::sd_flags_dacl_write_control()])
                .await?
            {
                Ok(()) => {
                    info!(%root_dn, "domain root DACL written");
                    Ok(())
                }
                Err(res) => Err(unexpected("modify", &s.url, res)),
            }
        })
    }

    async fn snapshot_on(
        &self,
        s: &mut Session,
        account: &str,
        list_users: bool,
    ) -> Result<SecuritySnapshot, DirectoryError> {
        let domain = self.domain(s).await?;
        let root_dn = domain.root_dn.clone();
        let principal = principal(s, &root_dn, account).await?;
        let privileged = if list_users {
            let found = privileged::load(
                s,
                &root_dn,
                &domain.scope_bases,
                &principal.dn,
                &principal.sid,
            )
            .await?;
            let beyond: Vec<(String, &'static str)> = domain
                .protected_groups
                .iter()
                .filter(|(_, name)| BEYOND_ADMINSDHOLDER.contains(name))
                .cloned()
                .collect();
            Some(privileged::report(s, &root_dn, &found, &beyond).await?)
        } else {
            None
        };
        let root_sd = read_dacl(s, &root_dn).await?;
        let mut scope_sds = Vec::new();
        for base in &self.inner.config.scope_base_dns {
            scope_sds.push((base.clone(), read_dacl(s, base).await?));
        }
        let protected_users = if list_users {
            Some(self.protected_users(s, &root_dn).await?)
        } else {
            None
        };
        Ok(SecuritySnapshot {
            dc_url: s.url.clone(),
            root_dn,
            account: principal,
            root_sd,
            scope_sds,
            protected_users,
            privileged,
        })
    }

    /// DNs of in-scope users (not `adminCount=1`: protected accounts are refused
    /// anyway) whose DACL has `SE_DACL_PROTECTED`.
    async fn protected_users(
        &self,
        s: &mut Session,
        root_dn: &str,
    ) -> Result<Vec<String>, DirectoryError> {
        let cfg = &self.inner.config;
        let group = cfg
            .scope_group_dn
            .as_deref()
            .map(|g| format!("(memberOf={})", ldap_escape(g)))
            .unwrap_or_default();
        let filter =
            format!("(&(objectCategory=person)(objectClass=user)(!(adminCount=1)){group})");
        let bases: Vec<&str> = if cfg.scope_base_dns.is_empty() {
            vec![root_dn]
        } else {
            cfg.scope_base_dns.iter().map(String::as_str).collect()
        };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for base in bases {
            let entries = match s
                .search_paged(
                    base,
                    &filter,
                    &["nTSecurityDescriptor"],
                    vec![wire::sd_flags_dacl_control()],
                    PAGE_SIZE,
                )
                .await?
            {
                Ok(entries) => entries,
                Err(res) => return Err(unexpected("search", &s.url, res)),
            };
            debug!(base, users = entries.len(), "user descriptors read");
            for e in entries {
                let protected = e
                    .first("nTSecurityDescriptor")
                    .and_then(super::sd::dacl_protected)
                    == Some(true);
                if protected && seen.insert(e.dn.to_ascii_lowercase()) {
                    out.push(e.dn);
                }
            }
        }
        Ok(out)
    }
}

/// The DACL-only descriptor of `dn`.
async fn read_dacl(s: &mut Session, dn: &str) -> Result<Vec<u8>, DirectoryError> {
    let entries = match s
        .search(
            dn,
            Scope::Base,
            "(objectClass=*)",
            &["nTSecurityDescriptor"],
            vec![wire::sd_flags_dacl_control()],
        )
        .await?
    {
        Ok(entries) => entries,
        Err(res) => return Err(unexpected("search", &s.url, res)),
    };
    entries
        .first()
        .and_then(|e| e.first("nTSecurityDescriptor"))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| DirectoryError::Directory {
            op: "search",
            rc: 50,
            text: format!("the security descriptor of {dn} is not readable"),
        })
}

/// Find `account` and the SIDs of its token.
/// The entry (DN, `objectSid`, `primaryGroupID`) of `account`, a DN, a UPN or
/// `DOMAIN\\name`, and its SID; a missing or ambiguous account, or one whose SID
/// cannot be read, is an error.
pub(crate) async fn account_entry(
    s: &mut Session,
    root_dn: &str,
    account: &str,
) -> Result<(RawEntry, Sid), DirectoryError> {
    let attrs = &["objectSid", "primaryGroupID"];
    let found = if account.contains('=') {
        match s
            .search(
                account,
                Scope::Base,
                "(objectClass=user)",
                attrs,
                Vec::new(),
            )
            .await?
        {
            Ok(entries) => entries,
            Err(res) if res.rc == super::classify::rc::NO_SUCH_OBJECT => Vec::new(),
            Err(res) => return Err(unexpected("search", &s.url, res)),
        }
    } else {
        let clause = match account.split_once('\\') {
            Some((_, sam)) => format!("(sAMAccountName={})", ldap_escape(sam)),
            // An explicit userPrincipalName, or the implicit one every account
            // binds with: sAMAccountName@domain (Samba's Administrator has no
            // userPrincipalName at all).
            None => match account.split_once('@') {
                Some((local, _)) => format!(
                    "(|(userPrincipalName={})(sAMAccountName={}))",
                    ldap_escape(account),
                    ldap_escape(local)
                ),
                None => format!("(sAMAccountName={})", ldap_escape(account)),
            },
        };
        let found = s
            .search_ok(
                root_dn,
                Scope::Subtree,
                &format!("(&(objectClass=user){clause})"),
                &["objectSid", "primaryGroupID", "userPrincipalName"],
            )
            .await?;
        // An explicit UPN wins over another account's implicit one.
        let explicit: Vec<RawEntry> = found
            .iter()
            .filter(|e| {
                e.text("userPrincipalName")
                    .is_some_and(|u| u.eq_ignore_ascii_case(account))
            })
            .cloned()
            .collect();
        if explicit.is_empty() { found } else { explicit }
    };
    let entry = match found.len() {
        1 => found.into_iter().next().unwrap_or_default(),
        0 => {
            return Err(DirectoryError::Config(format!(
                "the service account {account:?} was not found in the directory"
            )));
        }
        n => {
            return Err(DirectoryError::Config(format!(
                "{n} accounts match the service account {account:?}"
            )));
        }
    };
    let sid = entry
        .first("objectSid")
        .and_then(Sid::from_bytes)
        .ok_or_else(|| DirectoryError::Directory {
            op: "search",
            rc: 0,
            text: format!("{} has no readable objectSid", entry.dn),
        })?;
    Ok((entry, sid))
}

async fn principal(
    s: &mut Session,
    root_dn: &str,
    account: &str,
) -> Result<Principal, DirectoryError> {
    let (entry, sid) = account_entry(s, root_dn, account).await?;
    let mut groups = token_groups(s, &entry.dn).await?;
    if groups.is_empty() {
        debug!("tokenGroups not readable; reading group membership instead");
        groups = groups_by_membership(s, root_dn, &entry, &sid).await?;
    }
    groups.extend(LOGON_SIDS.iter().filter_map(|w| Sid::parse_str(w)));
    Ok(Principal {
        dn: entry.dn,
        sid,
        groups,
    })
}

async fn token_groups(s: &mut Session, dn: &str) -> Result<Vec<Sid>, DirectoryError> {
    let token = s
        .search_ok(dn, Scope::Base, "(objectClass=*)", &["tokenGroups"])
        .await?;
    Ok(token
        .first()
        .map(|e| {
            e.values("tokenGroups")
                .iter()
                .filter_map(|v| Sid::from_bytes(v))
                .collect()
        })
        .unwrap_or_default())
}

/// Groups containing the account, transitively, and its primary group.
async fn groups_by_membership(
    s: &mut Session,
    root_dn: &str,
    entry: &RawEntry,
    sid: &Sid,
) -> Result<Vec<Sid>, DirectoryError> {
    let filter = format!(
        "(&(objectClass=group)(member:{}:={}))",
        wire::IN_CHAIN_RULE,
        ldap_escape(entry.dn.as_str())
    );
    let groups = s
        .search_ok(root_dn, Scope::Subtree, &filter, &["objectSid"])
        .await?;
    let mut out: Vec<Sid> = groups
        .iter()
        .filter_map(|g| g.first("objectSid").and_then(Sid::from_bytes))
        .collect();
    if let Some(rid) = entry
        .int("primaryGroupID")
        .and_then(|v| u32::try_from(v).ok())
        && let Some(domain) = sid.domain()
    {
        out.push(domain.with_rid(rid));
    }
    Ok(out)
}
