//! Whether an operation may touch its target: find the user (domain-wide, so a
//! duplicated UPN is refused wherever the copies are), then the scope (configured
//! OUs and group), the protected accounts and disabled accounts — before anything
//! is written.
//!
//! Round trips on a warm session: one subtree search for the user, one base search
//! of the user that reads `tokenGroups` and, when a scope group is configured,
//! matches it in the same request. The scope bases are compared with the user's DN
//! locally ([`super::dn`]); the protected groups' and the configured deny groups'
//! DNs and SIDs come from the cached domain facts. Only a service account that may
//! not read `tokenGroups` costs one more search (the in-chain membership check).
//!
//! Everything after the first search addresses the user as `<GUID=…>` (the
//! extended DN form AD and Samba accept), the `objectGUID` that search returned: the
//! object checked is the object written, even if it is renamed or moved meanwhile.
//!
//! The checks fail closed. A user whose `objectGUID`, `objectSid`,
//! `userAccountControl` or `primaryGroupID` cannot be read is refused
//! ([`ProtectedBy::Unverifiable`]); so is one whose `tokenGroups` comes back empty
//! (it always holds at least the primary group, so empty means "not readable")
//! unless the domain facts proved that the in-chain membership check works for the
//! service account. LDAP cannot tell an absent attribute from an unreadable one on
//! one entry, so `adminCount` is trusted as absent only because the domain facts
//! proved the service account reads it where it must be set (see [`super::domain`]).

use ldap3::{Scope, ldap_escape};
use tracing::{debug, warn};

use super::classify::rc;
use super::domain::{
    DomainInfo, PROTECTED_ACCOUNT_RIDS, PROTECTED_DOMAIN_RIDS, protected_group_name,
};
use super::privileged::LOGON_SIDS;
use super::session::{Session, unexpected};
use super::wire::{self, RawEntry, Sid};
use super::{Directory, DirectoryError, ProtectedBy, Target, dn};

pub(crate) const USER_ATTRS: &[&str] = &[
    "sAMAccountName",
    "displayName",
    "userAccountControl",
    "adminCount",
    "objectSid",
    "objectGUID",
    "primaryGroupID",
    "pwdLastSet",
];

/// The target user as read before any write.
#[derive(Debug, Clone)]
pub(crate) struct User {
    /// The DN the first search found it under (for logs; may go stale).
    pub(crate) dn: String,
    /// `<GUID=…>`: how every later read and the write address the user.
    pub(crate) object_dn: String,
    pub(crate) sam: String,
    pub(crate) display_name: Option<String>,
    pub(crate) uac: u32,
    pub(crate) admin_count: i64,
    pub(crate) sid: Option<Sid>,
    pub(crate) guid: Option<uuid::Uuid>,
    pub(crate) primary_group_id: Option<u32>,
    pub(crate) pwd_last_set: Option<i64>,
}

impl User {
    pub(crate) fn from_entry(entry: RawEntry) -> User {
        let guid = entry
            .first("objectGUID")
            .and_then(|b| uuid::Uuid::from_slice_le(b).ok());
        User {
            object_dn: guid.map_or_else(|| entry.dn.clone(), |g| guid_dn(&g)),
            guid,
            sam: entry.text("sAMAccountName").unwrap_or_default().to_string(),
            display_name: entry.text("displayName").map(str::to_string),
            uac: entry
                .int("userAccountControl")
                .and_then(|v| u32::try_from(v & 0xffff_ffff).ok())
                .unwrap_or(0),
            admin_count: entry.int("adminCount").unwrap_or(0),
            sid: entry.first("objectSid").and_then(Sid::from_bytes),
            primary_group_id: entry
                .int("primaryGroupID")
                .and_then(|v| u32::try_from(v).ok()),
            pwd_last_set: entry.int("pwdLastSet"),
            dn: entry.dn,
        }
    }
}

impl Directory {
    /// Find the target and apply every refusal rule; nothing has been written yet.
    pub(crate) async fn eligible_user(
        &self,
        s: &mut Session,
        target: &Target,
    ) -> Result<User, DirectoryError> {
        let domain = self.domain(s).await?;
        let filter = user_filter(target)?;
        // Domain-wide first: a UPN held by two users is ambiguous wherever they are.
        let mut found = s
            .search_ok(&domain.root_dn, Scope::Subtree, &filter, USER_ATTRS)
            .await?;
        let entry = match found.len() {
            0 => return Err(DirectoryError::UserNotFound),
            1 => found.remove(0),
            count => {
                let dns: Vec<&str> = found.iter().map(|e| e.dn.as_str()).collect();
                warn!(
                    count,
                    ?dns,
                    "target matches several users; refusing to guess"
                );
                return Err(DirectoryError::UserAmbiguous { count });
            }
        };
        let uac_read = entry.first("userAccountControl").is_some();
        let user = User::from_entry(entry);
        debug!(dn = %user.dn, "target user found");
        if !domain.scope_bases.is_empty()
            && !domain
                .scope_bases
                .iter()
                .any(|b| dn::is_within(&user.dn, b))
        {
            return Err(self.not_in_scope(&user));
        }
        // Fail closed: what the checks below need must have been read.
        if let Some(attr) = unreadable(&user, uac_read) {
            warn!(dn = %user.dn, attr, "a fact the protected-account check needs is not readable; refusing");
            // The usual cause: inheritance disabled on the user, so the read rights
            // delegated above it do not reach it. Say so when it is the case.
            if user.guid.is_some() && super::explain::dacl_protected(s, &user).await {
                return Err(DirectoryError::InheritanceDisabled {
                    dn: user.dn,
                    text: format!("{attr} not readable"),
                });
            }
            return Err(DirectoryError::ProtectedAccount {
                dn: user.dn,
                by: ProtectedBy::Unverifiable(attr),
            });
        }
        let token = self.token_in_scope(s, &user).await?;
        check_protected(s, &domain, &user, token).await?;
        if user.uac & wire::UF_ACCOUNTDISABLE != 0 {
            return Err(DirectoryError::AccountDisabled { dn: user.dn });
        }
        Ok(user)
    }

    fn not_in_scope(&self, user: &User) -> DirectoryError {
        DirectoryError::UserNotInScope {
            dn: user.dn.clone(),
        }
    }

    /// The user's `tokenGroups`, in one base search that also checks the scope
    /// group when one is configured (the entry comes back only if the user is a
    /// direct member).
    async fn token_in_scope(
        &self,
        s: &mut Session,
        user: &User,
    ) -> Result<Vec<Sid>, DirectoryError> {
        let filter = match &self.inner.config.scope_group_dn {
            Some(group) => format!("(memberOf={})", ldap_escape(group.as_str())),
            None => "(objectClass=*)".to_string(),
        };
        let entries = s
            .search_ok(&user.object_dn, Scope::Base, &filter, &["tokenGroups"])
            .await?;
        let Some(entry) = entries.first() else {
            return Err(self.not_in_scope(user));
        };
        Ok(entry
            .values("tokenGroups")
            .iter()
            .filter_map(|v| Sid::from_bytes(v))
            .collect())
    }
}

/// The first fact the protected-account checks need that could not be read
/// (`uac_read`: whether the entry carried `userAccountControl`).
pub(super) fn unreadable(user: &User, uac_read: bool) -> Option<&'static str> {
    if user.guid.is_none() {
        Some("objectGUID")
    } else if user.sid.is_none() {
        Some("objectSid")
    } else if !uac_read {
        Some("userAccountControl")
    } else if user.primary_group_id.is_none() {
        Some("primaryGroupID")
    } else {
        None
    }
}

/// `(&(objectCategory=person)(objectClass=user)(...))` for the target, values escaped.
pub(crate) fn user_filter(target: &Target) -> Result<String, DirectoryError> {
    let clause = match target {
        Target::Upn(upn) => {
            if upn.trim().is_empty() {
                return Err(DirectoryError::InvalidRequest("empty user principal name"));
            }
            format!("(userPrincipalName={})", ldap_escape(upn.as_str()))
        }
        Target::ObjectGuid(guid) => {
            format!("(objectGUID={})", wire::escape_bytes(&guid.to_bytes_le()))
        }
    };
    Ok(format!(
        "(&(objectCategory=person)(objectClass=user){clause})"
    ))
}

/// `<GUID=…>`, the extended DN form AD and Samba accept for any object.
pub(crate) fn guid_dn(guid: &uuid::Uuid) -> String {
    format!("<GUID={}>", guid.hyphenated())
}

/// Protected accounts are never written back: the agent's own service account,
/// trust accounts, `adminCount=1`, the built-in
/// Administrator and krbtgt, members — direct, nested or by primary group — of
/// the protected groups and of the configured deny groups, and the accounts the
/// domain facts found as powerful as administrators ([`super::privileged`]:
/// replication rights, password reset over users, write access to the service
/// account, DnsAdmins), themselves or through a group. Membership is read from
/// `tokenGroups` (transitive, includes the primary group and universal groups of
/// other domains; never empty, since it holds the primary group); when the service
/// account may not read it (empty), membership is checked with
/// `LDAP_MATCHING_RULE_IN_CHAIN` against the groups found in this domain instead —
/// only if the domain facts proved that check works, else the user is refused.
pub(super) async fn check_protected(
    s: &mut Session,
    domain: &DomainInfo,
    user: &User,
    sids: Vec<Sid>,
) -> Result<(), DirectoryError> {
    let protected = |by| DirectoryError::ProtectedAccount {
        dn: user.dn.clone(),
        by,
    };
    if user.sid.as_ref() == Some(&domain.service_sid) {
        return Err(protected(ProtectedBy::ServiceAccount));
    }
    if user.uac & wire::UF_TRUST_ACCOUNTS != 0 {
        return Err(protected(ProtectedBy::TrustAccount));
    }
    if user.admin_count == 1 {
        return Err(protected(ProtectedBy::AdminCount));
    }
    if let Some(sid) = &user.sid
        && sid.is_domain_account()
        && sid
            .rid()
            .is_some_and(|rid| PROTECTED_ACCOUNT_RIDS.contains(&rid))
    {
        return Err(protected(ProtectedBy::BuiltinAccount));
    }
    if let Some(pg) = user.primary_group_id
        && let Some((_, name)) = PROTECTED_DOMAIN_RIDS.iter().find(|(r, _)| *r == pg)
    {
        return Err(protected(ProtectedBy::Group(name)));
    }
    let primary = user.primary_group_id.and_then(|pg| {
        user.sid
            .as_ref()
            .and_then(Sid::domain)
            .map(|d| d.with_rid(pg))
    });
    if let Some(deny) = domain
        .deny_groups
        .iter()
        .find(|g| Some(&g.sid) == primary.as_ref())
    {
        return Err(protected(ProtectedBy::DenyGroup(deny.dn.clone())));
    }
    if let Some(name) = sids.iter().find_map(protected_group_name) {
        return Err(protected(ProtectedBy::Group(name)));
    }
    // Privileged beyond the protected groups: the whole token — the user's own SID,
    // its primary group and the logon SIDs as well as tokenGroups (only those when
    // tokenGroups is unreadable; the groups are then checked in chain below).
    let token: Vec<Sid> = sids
        .iter()
        .cloned()
        .chain(user.sid.iter().cloned())
        .chain(primary.iter().cloned())
        .chain(LOGON_SIDS.iter().filter_map(|s| Sid::parse_str(s)))
        .collect();
    if let Some(by) = domain.privileged.check(&token) {
        return Err(protected(by));
    }
    if let Some(deny) = domain.deny_groups.iter().find(|g| sids.contains(&g.sid)) {
        return Err(protected(ProtectedBy::DenyGroup(deny.dn.clone())));
    }
    if !sids.is_empty() {
        return Ok(());
    }
    if !domain.in_chain_verified {
        warn!(dn = %user.dn, "tokenGroups not readable and the in-chain check is not proven; refusing");
        return Err(protected(ProtectedBy::Unverifiable("tokenGroups")));
    }
    if !domain.privileged.unresolved.is_empty() {
        warn!(dn = %user.dn, "tokenGroups not readable and a privileged trustee is not in this directory; refusing");
        return Err(protected(ProtectedBy::Unverifiable("tokenGroups")));
    }
    debug!("tokenGroups not readable; relying on the in-chain check");
    let groups: Vec<(&str, ProtectedBy)> = domain
        .protected_groups
        .iter()
        .map(|(dn, name)| (dn.as_str(), ProtectedBy::Group(name)))
        .chain(domain.privileged.groups())
        .chain(
            domain
                .deny_groups
                .iter()
                .map(|g| (g.dn.as_str(), ProtectedBy::DenyGroup(g.dn.clone()))),
        )
        .collect();
    if groups.is_empty() {
        return Err(protected(ProtectedBy::Unverifiable("tokenGroups")));
    }
    let any: String = groups.iter().map(|(dn, _)| in_chain_clause(dn)).collect();
    if !in_chain_hit(s, user, &format!("(|{any})")).await? {
        return Ok(());
    }
    // Name the group (rare path: only for protected users).
    for (dn, by) in groups {
        if in_chain_hit(s, user, &in_chain_clause(dn)).await? {
            return Err(protected(by));
        }
    }
    Err(protected(ProtectedBy::Group("a protected group")))
}

/// Whether `user` matches the in-chain `filter` (one base search of the user).
/// Only an answer from the DC counts: a referral (it does not hold the user, or
/// names another server) is neither "a member" nor "not a member" — the user is
/// refused, never read as matching nothing.
async fn in_chain_hit(s: &mut Session, user: &User, filter: &str) -> Result<bool, DirectoryError> {
    match s
        .search(&user.object_dn, Scope::Base, filter, &["1.1"], Vec::new())
        .await?
    {
        Ok(hits) => Ok(!hits.is_empty()),
        Err(res) if res.rc == rc::REFERRAL => {
            warn!(dn = %user.dn, referral = ?res.refs, "the in-chain membership check was answered with a referral; refusing");
            Err(DirectoryError::ProtectedAccount {
                dn: user.dn.clone(),
                by: ProtectedBy::Referral,
            })
        }
        Err(res) => Err(unexpected("search", &s.url, res)),
    }
}

fn in_chain_clause(group_dn: &str) -> String {
    format!(
        "(memberOf:{}:={})",
        wire::IN_CHAIN_RULE,
        ldap_escape(group_dn)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_escape_what_the_caller_sends() {
        let f = user_filter(&Target::Upn("*)(sAMAccountName=*".into())).unwrap();
        assert_eq!(
            f,
            "(&(objectCategory=person)(objectClass=user)(userPrincipalName=\\2a\\29\\28sAMAccountName=\\2a))"
        );
        assert!(ldap3::parse_filter(&f).is_ok());
        let guid = uuid::Uuid::parse_str("01020304-0506-0708-090a-0b0c0d0e0f10").unwrap();
        let f = user_filter(&Target::ObjectGuid(guid)).unwrap();
        assert!(f.contains("(objectGUID=\\04\\03\\02\\01\\06\\05\\08\\07\\09\\0a"));
        assert!(matches!(
            user_filter(&Target::Upn(" ".into())),
            Err(DirectoryError::InvalidRequest(_))
        ));
        let c = in_chain_clause("CN=Admins (EU),OU=x,DC=contoso,DC=test");
        assert_eq!(
            c,
            "(memberOf:1.2.840.113556.1.4.1941:=CN=Admins \\28EU\\29,OU=x,DC=contoso,DC=test)"
        );
        assert!(ldap3::parse_filter(&c).is_ok());
    }
}
