//! Accounts as powerful as the protected groups' members that no protected group
//! names: who may replicate the domain's secrets (DCSync, e.g. a sync service's
//! account), who may reset other users' passwords (another writeback agent's
//! service account, a delegated password administrator), who may take over the
//! agent's own service account, and the members of DnsAdmins (found by name: it has
//! no well-known RID; Group Policy Creator Owners and Cert Publishers do, and are in
//! [`super::domain`]'s list). Resetting any of them through writeback would hand
//! over more than that one account, so they are refused like administrators.
//!
//! Read with the domain facts from three kinds of descriptor, and checked against
//! every target's token in [`super::eligibility::check_protected`]:
//!
//! | refused as | read from | an allow ACE counts when it grants |
//! |---|---|---|
//! | [`ProtectedBy::Replication`] | the domain root's DACL, ACEs on the root itself (not inherit-only) | control access for Get-Changes, Get-Changes-All, Get-Changes-In-Filtered-Set or every extended right; or full control, write DACL, take ownership (it may grant itself one) |
//! | [`ProtectedBy::PasswordResetter`] | the DACLs of the domain root and each scope base, container-inherit ACEs for users (inherited object type absent, user or inetOrgPerson) | control access for Reset Password or every extended right; full control, write DACL, take ownership |
//! | [`ProtectedBy::ServiceAccountWriter`] | the service account's owner and DACL, ACEs on it (not inherit-only) | full control, generic write, write DACL, take ownership; write property on all properties or on one that hands over the account (`servicePrincipalName`, `msDS-KeyCredentialLink`, `altSecurityIdentities`, `userAccountControl` and its property set, `scriptPath`, `msDS-AllowedToActOnBehalfOfOtherIdentity`); Reset Password or every extended right; a validated write |
//!
//! A reading of ACLs, not the DC's access check, leaning towards "privileged": a
//! deny ACE does not take an account off the list, and ACE trustees that are never
//! in a user's token (SYSTEM, Enterprise Domain Controllers, Creator Owner,
//! Principal Self) are left out. A trustee that is a group makes every member,
//! however nested, privileged; one that is Everyone or Authenticated Users makes
//! every user privileged, which stops writeback rather than protect no one. Rights
//! delegated on an OU between the domain root and the users are not read (only the
//! root and the configured scope bases): name such groups in
//! `directory.deny_group_dns`.

use std::collections::HashSet;

use ldap3::Scope;
use tracing::warn;
use uuid::Uuid;

use super::sd::{self, Acl, CONTAINER_INHERIT_ACE, INHERIT_ONLY_ACE, SdError, SecurityDescriptor};
use super::session::{Session, unexpected};
use super::wire::{self, Sid};
use super::{DirectoryError, ProtectedBy};

/// DS-Replication-Get-Changes.
pub(crate) const GET_CHANGES: Uuid = Uuid::from_u128(0x1131f6aa_9c07_11d1_f79f_00c04fc2dcd2);
/// DS-Replication-Get-Changes-All: with Get-Changes, every secret (DCSync).
pub(crate) const GET_CHANGES_ALL: Uuid = Uuid::from_u128(0x1131f6ad_9c07_11d1_f79f_00c04fc2dcd2);
/// DS-Replication-Get-Changes-In-Filtered-Set.
pub(crate) const GET_CHANGES_IN_FILTERED_SET: Uuid =
    Uuid::from_u128(0x89e95b76_444d_4c62_991a_0facbeda640c);
/// The Reset Password extended right.
const RESET_PASSWORD: Uuid = Uuid::from_u128(0x00299570_246d_11d0_a768_00aa006e0529);
/// The `user` class.
const USER_CLASS: Uuid = Uuid::from_u128(0xbf967aba_0de6_11d0_a285_00aa003049e2);
/// The `inetOrgPerson` class (a kind of user).
const INET_ORG_PERSON: Uuid = Uuid::from_u128(0x4828cc14_1437_45bc_9b07_ad6f015e5f28);

/// Attributes (and the property set) whose write hands over an account: a
/// service principal name (Kerberoasting), a key credential (shadow
/// credentials), a certificate mapping, the account flags, a logon script,
/// resource-based delegation.
const TAKEOVER_ATTRIBUTES: &[Uuid] = &[
    // servicePrincipalName (also its validated write)
    Uuid::from_u128(0xf3a64788_5306_11d1_a9c5_0000f80367c1),
    // msDS-KeyCredentialLink
    Uuid::from_u128(0x5b47d60f_6090_40b2_9f37_2a4de88f3063),
    // altSecurityIdentities
    Uuid::from_u128(0x00fbf30c_91fe_11d1_aebc_0000f80367c1),
    // userAccountControl
    Uuid::from_u128(0xbf967a68_0de6_11d0_a285_00aa003049e2),
    // User-Account-Restrictions (holds userAccountControl, pwdLastSet, …)
    Uuid::from_u128(0x4c164200_20c0_11d0_a768_00aa006e0529),
    // scriptPath
    Uuid::from_u128(0xbf9679a8_0de6_11d0_a285_00aa003049e2),
    // msDS-AllowedToActOnBehalfOfOtherIdentity
    Uuid::from_u128(0x3f78c3e5_f79a_46bd_a0b8_9d18116ddc79),
];

/// `ADS_RIGHT_DS_SELF`: validated writes.
const SELF_WRITE: u32 = 0x0000_0008;
/// `ADS_RIGHT_DS_WRITE_PROP`.
const WRITE_PROP: u32 = 0x0000_0020;
/// `ADS_RIGHT_DS_CONTROL_ACCESS`: extended rights.
const CONTROL_ACCESS: u32 = 0x0000_0100;
/// `WRITE_DAC`.
const WRITE_DAC: u32 = 0x0004_0000;
/// `WRITE_OWNER`.
const WRITE_OWNER: u32 = 0x0008_0000;
const GENERIC_ALL: u32 = 0x1000_0000;
const GENERIC_WRITE: u32 = 0x4000_0000;

/// Rights that let a trustee rewrite the object's permissions, so grant itself
/// anything on it.
const TAKES_OVER: u32 = GENERIC_ALL | WRITE_DAC | WRITE_OWNER;

/// Trustees that are never in a user's token: Creator Owner, Creator Group,
/// Owner Rights, Enterprise Domain Controllers, Principal Self, SYSTEM, LOCAL
/// SERVICE, NETWORK SERVICE.
const NEVER_A_USER: &[&str] = &[
    "S-1-3-0", "S-1-3-1", "S-1-3-4", "S-1-5-9", "S-1-5-10", "S-1-5-18", "S-1-5-19", "S-1-5-20",
];

/// Well-known SIDs in every network logon's token, which `tokenGroups` leaves out:
/// Everyone, NETWORK, Authenticated Users, This Organization.
pub(crate) const LOGON_SIDS: &[&str] = &["S-1-1-0", "S-1-5-2", "S-1-5-11", "S-1-5-15"];

/// A trustee with a power of the module's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) sid: Sid,
    /// Why its members are refused: [`ProtectedBy::Replication`],
    /// [`ProtectedBy::ServiceAccountWriter`] or [`ProtectedBy::PasswordResetter`].
    pub(crate) by: ProtectedBy,
    /// Its DN when the directory holds it (for the report).
    pub(crate) dn: Option<String>,
    /// Whether it is a group of this directory (its members are checked with the
    /// in-chain rule when `tokenGroups` is not readable).
    pub(crate) group: bool,
}

/// A privileged group found by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamedGroup {
    pub(crate) dn: String,
    pub(crate) sid: Sid,
    pub(crate) name: &'static str,
}

/// Groups with no well-known RID that are privileged, by `sAMAccountName`.
const NAMED_GROUPS: &[&str] = &["DnsAdmins"];

/// Everything of the module's table, for one domain and one service account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Privileged {
    /// Strongest power first, one entry per SID.
    pub(crate) holders: Vec<Holder>,
    /// DnsAdmins, when the domain has it.
    pub(crate) named_groups: Vec<NamedGroup>,
    /// Holders the in-chain membership check cannot cover: not found in this
    /// directory (a group of another domain) and not a SID compared directly.
    pub(crate) unresolved: Vec<Sid>,
}

impl Privileged {
    /// Why an account whose token holds `token` (its own SID, its groups, the
    /// logon SIDs) is privileged, if it is.
    pub(crate) fn check(&self, token: &[Sid]) -> Option<ProtectedBy> {
        let held = |sid: &Sid| token.contains(sid);
        if let Some(g) = self.named_groups.iter().find(|g| held(&g.sid)) {
            return Some(ProtectedBy::Group(g.name));
        }
        self.holders
            .iter()
            .find(|h| held(&h.sid))
            .map(|h| h.by.clone())
    }

    /// The groups of this directory whose members are privileged, with why: for
    /// the in-chain membership check.
    pub(crate) fn groups(&self) -> impl Iterator<Item = (&str, ProtectedBy)> {
        self.named_groups
            .iter()
            .map(|g| (g.dn.as_str(), ProtectedBy::Group(g.name)))
            .chain(
                self.holders
                    .iter()
                    .filter(|h| h.group)
                    .filter_map(|h| h.dn.as_deref().map(|dn| (dn, h.by.clone()))),
            )
    }
}

/// Which power names a trustee that holds several: replication, then password
/// reset over users (another agent's account also resets this one's), then
/// write access to the service account.
fn strength(by: &ProtectedBy) -> u8 {
    match by {
        ProtectedBy::Replication => 0,
        ProtectedBy::PasswordResetter => 1,
        _ => 2,
    }
}

fn allow_aces(acl: Option<&Acl>) -> impl Iterator<Item = &sd::Ace> {
    acl.into_iter()
        .flat_map(|a| a.aces.iter())
        .filter(|a| a.ace_type == sd::ACCESS_ALLOWED || a.ace_type == sd::ACCESS_ALLOWED_OBJECT)
}

/// Whether `object_type` is absent (the ACE covers them all) or one of `wanted`.
fn covers(object_type: Option<Uuid>, wanted: &[Uuid]) -> bool {
    object_type.is_none_or(|t| wanted.contains(&t))
}

/// Trustees of the domain root's DACL that hold a replication right on it, or may
/// grant themselves one.
pub(crate) fn replication_holders(root: &SecurityDescriptor) -> Vec<Sid> {
    allow_aces(root.dacl.as_ref())
        .filter(|a| a.flags & INHERIT_ONLY_ACE == 0)
        .filter(|a| {
            let (object_type, _) = a.object_types();
            let mask = a.mask().unwrap_or(0);
            mask & TAKES_OVER != 0
                || (mask & CONTROL_ACCESS != 0
                    && covers(
                        object_type,
                        &[GET_CHANGES, GET_CHANGES_ALL, GET_CHANGES_IN_FILTERED_SET],
                    ))
        })
        .filter_map(|a| a.sid().cloned())
        .collect()
}

/// Trustees of a container's DACL (the domain root, a scope base) that may reset
/// the passwords of the users below it.
pub(crate) fn password_resetters(container: &SecurityDescriptor) -> Vec<Sid> {
    allow_aces(container.dacl.as_ref())
        .filter(|a| a.flags & CONTAINER_INHERIT_ACE != 0)
        .filter(|a| {
            let (object_type, inherited) = a.object_types();
            let mask = a.mask().unwrap_or(0);
            covers(inherited, &[USER_CLASS, INET_ORG_PERSON])
                && (mask & TAKES_OVER != 0
                    || (mask & CONTROL_ACCESS != 0 && covers(object_type, &[RESET_PASSWORD])))
        })
        .filter_map(|a| a.sid().cloned())
        .collect()
}

/// Who may change the account whose descriptor (owner and DACL) this is.
pub(crate) fn account_writers(account: &SecurityDescriptor) -> Vec<Sid> {
    let aces = allow_aces(account.dacl.as_ref())
        .filter(|a| a.flags & INHERIT_ONLY_ACE == 0)
        .filter(|a| {
            let (object_type, _) = a.object_types();
            let mask = a.mask().unwrap_or(0);
            mask & (TAKES_OVER | GENERIC_WRITE) != 0
                || (mask & WRITE_PROP != 0 && covers(object_type, TAKEOVER_ATTRIBUTES))
                || (mask & SELF_WRITE != 0 && covers(object_type, TAKEOVER_ATTRIBUTES))
                || (mask & CONTROL_ACCESS != 0 && covers(object_type, &[RESET_PASSWORD]))
        })
        .filter_map(|a| a.sid().cloned());
    account.owner.iter().cloned().chain(aces).collect()
}

/// The holders of each power, strongest first, one entry per SID, leaving out
/// `own` (the service account, refused as such) and trustees never in a user's
/// token.
fn rank(found: Vec<(Sid, ProtectedBy)>, own: &Sid) -> Vec<(Sid, ProtectedBy)> {
    let never: Vec<Sid> = NEVER_A_USER
        .iter()
        .filter_map(|s| Sid::parse_str(s))
        .collect();
    let mut found = found;
    found.sort_by_key(|(_, by)| strength(by));
    let mut seen = HashSet::new();
    found
        .into_iter()
        .filter(|(sid, _)| sid != own && !never.contains(sid) && seen.insert(sid.clone()))
        .collect()
}

fn parse(dn: &str, bytes: &[u8]) -> Result<SecurityDescriptor, DirectoryError> {
    SecurityDescriptor::parse(bytes).map_err(|e: SdError| DirectoryError::Directory {
        op: "search",
        rc: 0,
        text: format!("the security descriptor of {dn} cannot be read: {e}"),
    })
}

/// The descriptor of `dn` (the parts the control asks for); a configuration error
/// when the service account cannot read it: it could not tell who is privileged.
async fn read_sd(
    s: &mut Session,
    dn: &str,
    control: ldap3::controls::RawControl,
) -> Result<SecurityDescriptor, DirectoryError> {
    let entries = match s
        .search(
            dn,
            Scope::Base,
            "(objectClass=*)",
            &["nTSecurityDescriptor"],
            vec![control],
        )
        .await?
    {
        Ok(entries) => entries,
        Err(res) => return Err(unexpected("search", &s.url, res)),
    };
    match entries
        .first()
        .and_then(|e| e.first("nTSecurityDescriptor"))
    {
        Some(bytes) => parse(dn, bytes),
        None => {
            warn!(
                dn,
                "the service account cannot read a security descriptor it must check"
            );
            Err(DirectoryError::Config(format!(
                "the service account cannot read the permissions of {dn}, so it cannot tell \
                 which accounts may replicate the directory, reset passwords or change it — \
                 let it read the object's permissions (Read permissions)"
            )))
        }
    }
}

/// Read and resolve the module's table for the account `account_dn` (SID
/// `account_sid`), the domain root `root_dn` and the scope bases as the DC names
/// them.
pub(crate) async fn load(
    s: &mut Session,
    root_dn: &str,
    scope_bases: &[String],
    account_dn: &str,
    account_sid: &Sid,
) -> Result<Privileged, DirectoryError> {
    let root = read_sd(s, root_dn, wire::sd_flags_dacl_control()).await?;
    let mut found: Vec<(Sid, ProtectedBy)> = replication_holders(&root)
        .into_iter()
        .map(|sid| (sid, ProtectedBy::Replication))
        .collect();
    found.extend(
        password_resetters(&root)
            .into_iter()
            .map(|sid| (sid, ProtectedBy::PasswordResetter)),
    );
    for base in scope_bases {
        let sd = read_sd(s, base, wire::sd_flags_dacl_control()).await?;
        found.extend(
            password_resetters(&sd)
                .into_iter()
                .map(|sid| (sid, ProtectedBy::PasswordResetter)),
        );
    }
    let account = read_sd(s, account_dn, wire::sd_flags_owner_dacl_control()).await?;
    found.extend(
        account_writers(&account)
            .into_iter()
            .map(|sid| (sid, ProtectedBy::ServiceAccountWriter)),
    );
    let found = rank(found, account_sid);

    // Which of them the directory holds, and which are groups.
    let mut objects: Vec<(Sid, String, bool)> = Vec::new();
    if !found.is_empty() {
        let clauses: String = found
            .iter()
            .map(|(sid, _)| format!("(objectSid={})", wire::escape_bytes(&sid.to_bytes())))
            .collect();
        for e in s
            .search_ok(
                root_dn,
                Scope::Subtree,
                &format!("(|{clauses})"),
                &["objectSid", "objectClass"],
            )
            .await?
        {
            let Some(sid) = e.first("objectSid").and_then(Sid::from_bytes) else {
                continue;
            };
            let classes = e.texts("objectClass");
            let group = classes.iter().any(|c| c.eq_ignore_ascii_case("group"));
            let foreign = classes
                .iter()
                .any(|c| c.eq_ignore_ascii_case("foreignSecurityPrincipal"));
            if !foreign {
                objects.push((sid, e.dn, group));
            }
        }
    }
    let domain = account_sid.domain();
    let logon: Vec<Sid> = LOGON_SIDS
        .iter()
        .filter_map(|s| Sid::parse_str(s))
        .collect();
    let mut unresolved = Vec::new();
    let holders = found
        .into_iter()
        .map(|(sid, by)| {
            let object = objects.iter().find(|(s, ..)| *s == sid);
            // Compared directly, or gone: an account of this domain or a BUILTIN
            // alias the directory does not hold is in no one's token (SIDs are not
            // reused).
            let direct = logon.contains(&sid)
                || (object.is_none() && (sid.domain() == domain || sid.is_builtin()));
            if object.is_none() && !direct {
                unresolved.push(sid.clone());
            }
            Holder {
                dn: object.map(|(_, dn, _)| dn.clone()),
                group: object.is_some_and(|(.., g)| *g),
                sid,
                by,
            }
        })
        .collect();

    let mut named_groups = Vec::new();
    for name in NAMED_GROUPS {
        let filter = format!(
            "(&(objectClass=group)(sAMAccountName={}))",
            ldap3::ldap_escape(*name)
        );
        for e in s
            .search_ok(root_dn, Scope::Subtree, &filter, &["objectSid"])
            .await?
        {
            if let Some(sid) = e.first("objectSid").and_then(Sid::from_bytes) {
                named_groups.push(NamedGroup {
                    dn: e.dn,
                    sid,
                    name,
                });
            }
        }
    }
    Ok(Privileged {
        holders,
        named_groups,
        unresolved,
    })
}

/// An account or group the agent refuses as privileged beyond AdminSDHolder's
/// groups, as `permissions check` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivilegedAccount {
    /// Its DN, or its SID when the directory does not hold it.
    pub name: String,
    /// Whether it is a group (every member is refused).
    pub group: bool,
    /// Why it is refused.
    pub by: ProtectedBy,
    /// A group's users, however nested (membership by primary group is not
    /// listed, though it is refused too).
    pub members: Vec<String>,
}

/// Users read per page when listing a group's members.
const PAGE_SIZE: i32 = 500;

/// The report of `privileged` and of `groups` (protected groups found in the
/// domain that AdminSDHolder leaves out: (DN, name)), with each group's members.
/// Holders that are AdminSDHolder's own groups are left out: they are protected
/// anyway and reported nowhere else either.
pub(crate) async fn report(
    s: &mut Session,
    root_dn: &str,
    privileged: &Privileged,
    groups: &[(String, &'static str)],
) -> Result<Vec<PrivilegedAccount>, DirectoryError> {
    let logon: Vec<Sid> = LOGON_SIDS
        .iter()
        .filter_map(|s| Sid::parse_str(s))
        .collect();
    let mut out: Vec<PrivilegedAccount> = groups
        .iter()
        .map(|(dn, name)| PrivilegedAccount {
            name: dn.clone(),
            group: true,
            by: ProtectedBy::Group(name),
            members: Vec::new(),
        })
        .chain(privileged.named_groups.iter().map(|g| PrivilegedAccount {
            name: g.dn.clone(),
            group: true,
            by: ProtectedBy::Group(g.name),
            members: Vec::new(),
        }))
        .chain(
            privileged
                .holders
                .iter()
                .filter(|h| super::domain::protected_group_name(&h.sid).is_none())
                .map(|h| PrivilegedAccount {
                    name: h.dn.clone().unwrap_or_else(|| {
                        if logon.contains(&h.sid) {
                            format!("{} (every user)", h.sid)
                        } else {
                            h.sid.to_string()
                        }
                    }),
                    group: h.group,
                    by: h.by.clone(),
                    members: Vec::new(),
                }),
        )
        .collect();
    for account in out.iter_mut().filter(|a| a.group) {
        let filter = format!(
            "(&(objectCategory=person)(objectClass=user)(memberOf:{}:={}))",
            wire::IN_CHAIN_RULE,
            ldap3::ldap_escape(account.name.as_str())
        );
        account.members = match s
            .search_paged(root_dn, &filter, &["1.1"], Vec::new(), PAGE_SIZE)
            .await?
        {
            Ok(entries) => entries.into_iter().map(|e| e.dn).collect(),
            Err(res) => return Err(unexpected("search", &s.url, res)),
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::sd::{Ace, AceBody};

    fn sid(s: &str) -> Sid {
        Sid::parse_str(s).unwrap()
    }

    fn basic(flags: u8, mask: u32, who: &str) -> Ace {
        Ace {
            ace_type: sd::ACCESS_ALLOWED,
            flags,
            body: AceBody::Basic {
                mask,
                sid: sid(who),
                trailing: Vec::new(),
            },
        }
    }

    fn object(
        flags: u8,
        mask: u32,
        object_type: Option<Uuid>,
        inherited: Option<Uuid>,
        who: &str,
    ) -> Ace {
        Ace::allow_object(flags, mask, object_type, inherited, sid(who))
    }

    fn descriptor(owner: Option<&str>, aces: Vec<Ace>) -> SecurityDescriptor {
        SecurityDescriptor {
            revision: 1,
            rm_control: 0,
            control: sd::SE_DACL_PRESENT | sd::SE_SELF_RELATIVE,
            owner: owner.map(sid),
            group: None,
            sacl: None,
            dacl: Some(Acl {
                revision: sd::ACL_REVISION_DS,
                aces,
            }),
        }
    }

    const D: &str = "S-1-5-21-1-2-3";

    #[test]
    fn replication_rights_and_rights_to_grant_one_are_found_on_the_root() {
        let sync = format!("{D}-1101");
        let filtered = format!("{D}-1102");
        let dacl_writer = format!("{D}-1103");
        let all_extended = format!("{D}-1104");
        let unexpire = format!("{D}-1105");
        let inherit_only = format!("{D}-1106");
        let root = descriptor(
            None,
            vec![
                object(0, CONTROL_ACCESS, Some(GET_CHANGES_ALL), None, &sync),
                object(
                    0,
                    CONTROL_ACCESS,
                    Some(GET_CHANGES_IN_FILTERED_SET),
                    None,
                    &filtered,
                ),
                basic(0, WRITE_DAC, &dacl_writer),
                basic(0, CONTROL_ACCESS, &all_extended),
                // Not a replication right.
                object(
                    0,
                    CONTROL_ACCESS,
                    Some(Uuid::from_u128(0xccc2dc7d_a6ad_4a7a_8846_c04e3cc53501)),
                    None,
                    &unexpire,
                ),
                // Only for the objects below.
                object(
                    CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE,
                    CONTROL_ACCESS,
                    Some(GET_CHANGES_ALL),
                    None,
                    &inherit_only,
                ),
                // Read access to everything is not a replication right.
                basic(0, 0x0002_0094, "S-1-5-11"),
            ],
        );
        let got = replication_holders(&root);
        assert_eq!(
            got,
            vec![
                sid(&sync),
                sid(&filtered),
                sid(&dacl_writer),
                sid(&all_extended)
            ]
        );
    }

    #[test]
    fn reset_password_over_users_is_found_on_containers() {
        let agent = format!("{D}-1201");
        let helpdesk = format!("{D}-1202");
        let groups_only = format!("{D}-1203");
        let not_inherited = format!("{D}-1204");
        let lockout_only = format!("{D}-1205");
        let full = format!("{D}-1206");
        let ou = descriptor(
            None,
            vec![
                // What `permissions grant` writes.
                object(
                    CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE,
                    CONTROL_ACCESS,
                    Some(RESET_PASSWORD),
                    Some(USER_CLASS),
                    &agent,
                ),
                // All extended rights on every descendant.
                basic(CONTAINER_INHERIT_ACE, CONTROL_ACCESS, &helpdesk),
                // On groups only.
                object(
                    CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE,
                    CONTROL_ACCESS,
                    Some(RESET_PASSWORD),
                    Some(Uuid::from_u128(0xbf967a9c_0de6_11d0_a285_00aa003049e2)),
                    &groups_only,
                ),
                // On the container itself only.
                object(
                    0,
                    CONTROL_ACCESS,
                    Some(RESET_PASSWORD),
                    None,
                    &not_inherited,
                ),
                // Another right.
                object(
                    CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE,
                    WRITE_PROP,
                    Some(Uuid::from_u128(0x28630ebf_41d5_11d1_a9c1_0000f80367c1)),
                    Some(USER_CLASS),
                    &lockout_only,
                ),
                basic(CONTAINER_INHERIT_ACE, GENERIC_ALL, &full),
            ],
        );
        assert_eq!(
            password_resetters(&ou),
            vec![sid(&agent), sid(&helpdesk), sid(&full)]
        );
    }

    #[test]
    fn who_may_change_the_service_account_is_found_on_it() {
        let owner = format!("{D}-1300");
        let generic = format!("{D}-1301");
        let shadow = format!("{D}-1302");
        let resetter = format!("{D}-1303");
        let phone = format!("{D}-1304");
        let spn = format!("{D}-1305");
        let account = descriptor(
            Some(&owner),
            vec![
                basic(0, GENERIC_WRITE, &generic),
                object(
                    0,
                    WRITE_PROP,
                    Some(Uuid::from_u128(0x5b47d60f_6090_40b2_9f37_2a4de88f3063)),
                    None,
                    &shadow,
                ),
                object(
                    sd::INHERITED_ACE,
                    CONTROL_ACCESS,
                    Some(RESET_PASSWORD),
                    Some(USER_CLASS),
                    &resetter,
                ),
                // Personal information: not a takeover.
                object(
                    0,
                    WRITE_PROP,
                    Some(Uuid::from_u128(0x77b5b886_944a_11d1_aebd_0000f80367c1)),
                    None,
                    &phone,
                ),
                object(
                    0,
                    SELF_WRITE,
                    Some(Uuid::from_u128(0xf3a64788_5306_11d1_a9c5_0000f80367c1)),
                    None,
                    &spn,
                ),
            ],
        );
        assert_eq!(
            account_writers(&account),
            vec![
                sid(&owner),
                sid(&generic),
                sid(&shadow),
                sid(&resetter),
                sid(&spn)
            ]
        );
    }

    #[test]
    fn the_strongest_power_names_a_holder_once() {
        let own = sid(&format!("{D}-1000"));
        let sync = sid(&format!("{D}-1101"));
        let agent = sid(&format!("{D}-1201"));
        let found = vec![
            (sync.clone(), ProtectedBy::PasswordResetter),
            (own.clone(), ProtectedBy::PasswordResetter),
            (sid("S-1-5-18"), ProtectedBy::Replication),
            (agent.clone(), ProtectedBy::ServiceAccountWriter),
            (sync.clone(), ProtectedBy::Replication),
            (agent.clone(), ProtectedBy::PasswordResetter),
            (sid("S-1-5-10"), ProtectedBy::ServiceAccountWriter),
        ];
        assert_eq!(
            rank(found, &own),
            vec![
                (sync, ProtectedBy::Replication),
                (agent, ProtectedBy::PasswordResetter)
            ]
        );
    }

    #[test]
    fn a_token_holding_a_holder_is_privileged() {
        let group = sid(&format!("{D}-1400"));
        let dns = sid(&format!("{D}-1101"));
        let p = Privileged {
            holders: vec![Holder {
                sid: group.clone(),
                by: ProtectedBy::Replication,
                dn: Some("CN=Sync,DC=c,DC=t".into()),
                group: true,
            }],
            named_groups: vec![NamedGroup {
                dn: "CN=DnsAdmins,DC=c,DC=t".into(),
                sid: dns.clone(),
                name: "DnsAdmins",
            }],
            unresolved: Vec::new(),
        };
        let user = sid(&format!("{D}-2000"));
        assert_eq!(p.check(std::slice::from_ref(&user)), None);
        assert_eq!(
            p.check(&[user.clone(), group]),
            Some(ProtectedBy::Replication)
        );
        assert_eq!(p.check(&[user, dns]), Some(ProtectedBy::Group("DnsAdmins")));
        let groups: Vec<_> = p.groups().collect();
        assert_eq!(
            groups,
            vec![
                ("CN=DnsAdmins,DC=c,DC=t", ProtectedBy::Group("DnsAdmins")),
                ("CN=Sync,DC=c,DC=t", ProtectedBy::Replication),
            ]
        );
    }
}
