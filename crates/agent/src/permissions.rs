//! `writeback-agent permissions check` and `grant`: whether the agent's service
//! account holds the rights password writeback needs (the seed's Troubleshooting
//! list), and adding exactly the missing ones — the
//! `Set-AADCloudSyncPermissions -PermissionType PasswordWriteBack` equivalent.
//!
//! | right | object | ACE `grant` adds for the service account |
//! |---|---|---|
//! | Reset Password (extended right 00299570-…) | descendant user objects | allow-object, CI+IO, `CONTROL_ACCESS`, inherited object type user |
//! | write `lockoutTime` (28630ebf-…) | descendant user objects | allow-object, CI+IO, `WRITE_PROP`, inherited object type user |
//! | write `pwdLastSet` (bf967a0a-…) | descendant user objects | allow-object, CI+IO, `WRITE_PROP`, inherited object type user |
//! | Unexpire Password (extended right ccc2dc7d-…) | the domain root | allow-object, CI ("this object and all descendant objects"), `CONTROL_ACCESS` |
//!
//! The check reads the DACL of the domain root (and of each configured scope base,
//! where rights delegated on an OU and the ones inherited from the root both show)
//! and evaluates it for the account's SID and every SID of its token
//! (`tokenGroups` plus the well-known logon SIDs). An ACE counts when it is an allow
//! (basic or object) for one of those SIDs whose mask has the access bit (or a
//! generic right implying it), whose object type is absent or names the right (or,
//! for `pwdLastSet`, its property set User-Account-Restrictions), and which applies
//! where needed: for descendant users, container-inherit without no-propagate, and
//! an inherited object type absent or user; for the root, not inherit-only. A deny
//! ACE that would match the same way makes the right denied, which `grant` does not
//! override. This is a reading of the ACL, not the DC's access check: rights that
//! come from ownership or privileges are not seen.
//!
//! The report also lists the accounts the agent refuses as privileged beyond
//! AdminSDHolder's groups (see `directory/privileged.rs`): who holds a replication
//! right on the domain, who may reset the passwords of users in scope (other
//! agents' service accounts among them), who may change this service account, and
//! the members of DnsAdmins, Cert Publishers and Group Policy Creator Owners.
//!
//! The grant, bound as an administrator, reads the same, adds one ACE per right
//! the check finds missing that the root lacks (after the explicit ACEs, before
//! inherited ones), writes the DACL only (SD-flags 4) and reads everything again to
//! report. It refuses to write a DACL it would not re-encode byte for byte, so the
//! write changes nothing but the added ACEs. When nothing is missing it writes
//! nothing, so a second run changes nothing.

use std::collections::HashSet;
use std::fmt::Write as _;

use tracing::{info, warn};
use uuid::Uuid;
use writeback_core::ReasonCode;

use crate::directory::sd::{
    self, Ace, Acl, CONTAINER_INHERIT_ACE, INHERIT_ONLY_ACE, NO_PROPAGATE_INHERIT_ACE,
    SecurityDescriptor,
};
use crate::directory::{
    Directory, DirectoryError, PrivilegedAccount, ProtectedBy, Right, SecuritySnapshot, Sid,
};

/// The Reset Password extended right.
pub const RESET_PASSWORD: Uuid = Uuid::from_u128(0x00299570_246d_11d0_a768_00aa006e0529);
/// The `lockoutTime` attribute.
pub const LOCKOUT_TIME: Uuid = Uuid::from_u128(0x28630ebf_41d5_11d1_a9c1_0000f80367c1);
/// The `pwdLastSet` attribute.
pub const PWD_LAST_SET: Uuid = Uuid::from_u128(0xbf967a0a_0de6_11d0_a285_00aa003049e2);
/// The User-Account-Restrictions property set, which holds `pwdLastSet`.
pub const USER_ACCOUNT_RESTRICTIONS: Uuid = Uuid::from_u128(0x4c164200_20c0_11d0_a768_00aa006e0529);
/// The Unexpire Password extended right.
pub const UNEXPIRE_PASSWORD: Uuid = Uuid::from_u128(0xccc2dc7d_a6ad_4a7a_8846_c04e3cc53501);
/// The Change Password extended right.
pub const CHANGE_PASSWORD: Uuid = Uuid::from_u128(0xab721a53_1e2f_11d0_9819_00aa0040529b);
/// The `user` class.
pub const USER_CLASS: Uuid = Uuid::from_u128(0xbf967aba_0de6_11d0_a285_00aa003049e2);

/// `ADS_RIGHT_DS_CONTROL_ACCESS`: extended rights.
const CONTROL_ACCESS: u32 = 0x0000_0100;
/// `ADS_RIGHT_DS_WRITE_PROP`.
const WRITE_PROP: u32 = 0x0000_0020;
const GENERIC_ALL: u32 = 0x1000_0000;
const GENERIC_WRITE: u32 = 0x4000_0000;

/// Every right the service account needs, in report order.
pub const REQUIRED: [Right; 4] = [
    Right::ResetPassword,
    Right::WriteLockoutTime,
    Right::WritePwdLastSet,
    Right::UnexpirePassword,
];

/// Where a right must apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppliesTo {
    /// User objects below the object whose DACL it is in.
    DescendantUsers,
    /// The object itself (the domain root).
    Object,
}

/// What an ACE must say to grant `right`.
struct Need {
    applies_to: AppliesTo,
    access: u32,
    /// Object types that carry the right (besides "no object type": all of them).
    object_types: &'static [Uuid],
}

fn need(right: Right) -> Need {
    match right {
        Right::ResetPassword => Need {
            applies_to: AppliesTo::DescendantUsers,
            access: CONTROL_ACCESS,
            object_types: &[RESET_PASSWORD],
        },
        Right::WriteLockoutTime => Need {
            applies_to: AppliesTo::DescendantUsers,
            access: WRITE_PROP,
            object_types: &[LOCKOUT_TIME],
        },
        Right::WritePwdLastSet => Need {
            applies_to: AppliesTo::DescendantUsers,
            access: WRITE_PROP,
            object_types: &[PWD_LAST_SET, USER_ACCOUNT_RESTRICTIONS],
        },
        Right::UnexpirePassword => Need {
            applies_to: AppliesTo::Object,
            access: CONTROL_ACCESS,
            object_types: &[UNEXPIRE_PASSWORD],
        },
        // Not delegated: granted to Everyone by default, refused per user.
        Right::ChangePassword => Need {
            applies_to: AppliesTo::DescendantUsers,
            access: CONTROL_ACCESS,
            object_types: &[CHANGE_PASSWORD],
        },
    }
}

/// How the report names a right.
pub fn label(right: Right) -> &'static str {
    match right {
        Right::ResetPassword => "Reset Password on descendant user objects",
        Right::WriteLockoutTime => "write lockoutTime on descendant user objects",
        Right::WritePwdLastSet => "write pwdLastSet on descendant user objects",
        Right::UnexpirePassword => "Unexpire Password on the domain root",
        Right::ChangePassword => "Change Password on user objects",
    }
}

/// The ACE `grant` adds for `right`.
fn grant_ace(right: Right, sid: &Sid) -> Ace {
    let n = need(right);
    let (flags, inherited) = match n.applies_to {
        AppliesTo::DescendantUsers => (CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE, Some(USER_CLASS)),
        AppliesTo::Object => (CONTAINER_INHERIT_ACE, None),
    };
    Ace::allow_object(
        flags,
        n.access,
        n.object_types.first().copied(),
        inherited,
        sid.clone(),
    )
}

/// Whether `ace` (allow or deny alike) would carry `right` for one of `sids`.
fn ace_matches(ace: &Ace, right: Right, sids: &HashSet<Sid>) -> bool {
    let n = need(right);
    let (Some(sid), Some(mask)) = (ace.sid(), ace.mask()) else {
        return false;
    };
    if !sids.contains(sid) {
        return false;
    }
    let implied = mask & GENERIC_ALL != 0 || (n.access == WRITE_PROP && mask & GENERIC_WRITE != 0);
    if mask & n.access == 0 && !implied {
        return false;
    }
    let (object_type, inherited_type) = ace.object_types();
    if object_type.is_some_and(|t| !n.object_types.contains(&t)) {
        return false;
    }
    match n.applies_to {
        AppliesTo::DescendantUsers => {
            ace.flags & CONTAINER_INHERIT_ACE != 0
                && ace.flags & NO_PROPAGATE_INHERIT_ACE == 0
                && inherited_type.is_none_or(|t| t == USER_CLASS)
        }
        AppliesTo::Object => ace.flags & INHERIT_ONLY_ACE == 0 && inherited_type.is_none(),
    }
}

const ALLOW_TYPES: [u8; 2] = [sd::ACCESS_ALLOWED, sd::ACCESS_ALLOWED_OBJECT];
const DENY_TYPES: [u8; 2] = [sd::ACCESS_DENIED, sd::ACCESS_DENIED_OBJECT];

/// Whether a right is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// An allow ACE grants it and no deny ACE takes it away.
    Granted,
    /// No ACE grants it.
    Missing,
    /// A deny ACE takes it away (`grant` does not remove deny ACEs).
    Denied,
}

fn evaluate(dacl: Option<&Acl>, right: Right, sids: &HashSet<Sid>) -> Holding {
    let Some(dacl) = dacl else {
        return Holding::Missing;
    };
    let hit = |types: &[u8]| {
        dacl.aces
            .iter()
            .any(|a| types.contains(&a.ace_type) && ace_matches(a, right, sids))
    };
    if hit(&DENY_TYPES) {
        Holding::Denied
    } else if hit(&ALLOW_TYPES) {
        Holding::Granted
    } else {
        Holding::Missing
    }
}

/// One right, where it was evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RightCheck {
    /// The right.
    pub right: Right,
    /// The DN whose DACL was read (the domain root, or a scope base).
    pub at: String,
    /// The verdict.
    pub holding: Holding,
}

/// What `permissions check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionReport {
    /// The DC that answered.
    pub dc_url: String,
    /// The domain root.
    pub root_dn: String,
    /// The service account's DN.
    pub account_dn: String,
    /// Its SID.
    pub account_sid: String,
    /// Each required right at each place it was evaluated.
    pub rights: Vec<RightCheck>,
    /// In-scope users whose DACL is protected (inheritance disabled), when listed.
    pub protected_users: Option<Vec<String>>,
    /// The accounts and groups the agent refuses as privileged beyond AdminSDHolder's
    /// groups (replication rights, password reset over users, write access to the
    /// service account, DnsAdmins, Cert Publishers, Group Policy Creator Owners),
    /// for the administrator to review; they change no verdict. Listed with the
    /// users.
    pub privileged: Option<Vec<PrivilegedAccount>>,
}

impl PermissionReport {
    /// Every required right is granted everywhere it was evaluated.
    pub fn rights_ok(&self) -> bool {
        self.rights.iter().all(|c| c.holding == Holding::Granted)
    }

    /// The rights not granted somewhere, each once, in report order.
    pub fn missing(&self) -> Vec<Right> {
        REQUIRED
            .into_iter()
            .filter(|r| {
                self.rights
                    .iter()
                    .any(|c| c.right == *r && c.holding != Holding::Granted)
            })
            .collect()
    }

    /// `OK`; `INSUFFICIENT_ACCESS` when a right is missing; `INHERITANCE_DISABLED`
    /// when the rights are complete but some in-scope users do not inherit them.
    pub fn reason(&self) -> ReasonCode {
        if !self.rights_ok() {
            ReasonCode::InsufficientAccess
        } else if self.protected_users.as_ref().is_some_and(|u| !u.is_empty()) {
            ReasonCode::InheritanceDisabled
        } else {
            ReasonCode::Ok
        }
    }

    /// The report as text for the operator (it names DNs: it is for the domain's
    /// own administrators, not for the cloud).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "service account: {} ({})",
            self.account_dn, self.account_sid
        );
        let _ = writeln!(out, "domain controller: {}", self.dc_url);
        let _ = writeln!(out, "domain root: {}", self.root_dn);
        let _ = writeln!(out);
        for c in &self.rights {
            let mark = match c.holding {
                Holding::Granted => "ok     ",
                Holding::Missing => "MISSING",
                Holding::Denied => "DENIED ",
            };
            let _ = writeln!(out, "  [{mark}] {}  (on {})", label(c.right), c.at);
        }
        match self.privileged.as_deref() {
            None => {}
            Some([]) => {
                let _ = writeln!(out);
                let _ = writeln!(
                    out,
                    "privileged accounts: none beyond the protected administrative groups"
                );
            }
            Some(privileged) => {
                let _ = writeln!(out);
                let _ = writeln!(
                    out,
                    "privileged accounts, never written back (beyond the protected \
                     administrative groups):"
                );
                for p in privileged {
                    let kind = if p.group { " (group)" } else { "" };
                    let _ = writeln!(out, "  {}{kind}: {}", p.name, privilege(&p.by));
                    for member in &p.members {
                        let _ = writeln!(out, "    {member}");
                    }
                }
            }
        }
        if let Some(users) = &self.protected_users {
            let _ = writeln!(out);
            if users.is_empty() {
                let _ = writeln!(out, "inheritance: enabled on every in-scope user");
            } else {
                let _ = writeln!(
                    out,
                    "inheritance disabled on {} in-scope user(s); rights delegated on the \
                     domain or an OU do not reach them:",
                    users.len()
                );
                for dn in users {
                    let _ = writeln!(out, "  {dn}");
                }
                let _ = writeln!(
                    out,
                    "re-enable inheritance on each (Active Directory Users and Computers: \
                     Security > Advanced > Enable inheritance)"
                );
            }
        }
        out
    }

    /// The closing line: `OK: …` or `REASON_CODE: what to do`.
    pub fn verdict(&self) -> String {
        match self.reason() {
            ReasonCode::Ok => "OK: the service account holds every right password writeback \
                               needs"
                .to_string(),
            ReasonCode::InheritanceDisabled => format!(
                "{}: the rights are complete, but inheritance is disabled on the users \
                 listed above, so their passwords cannot be written back",
                ReasonCode::InheritanceDisabled
            ),
            reason => {
                let mut names: Vec<&str> = self.missing().into_iter().map(label).collect();
                names.dedup();
                let denied = self.rights.iter().any(|c| c.holding == Holding::Denied);
                format!(
                    "{reason}: the service account lacks {}; run `writeback-agent permissions \
                     grant --admin-dn <domain admin>`{}",
                    names.join(", "),
                    if denied {
                        " and remove the deny entries that take rights away"
                    } else {
                        ""
                    }
                )
            }
        }
    }
}

/// Why an account is listed as privileged, for the report.
fn privilege(by: &ProtectedBy) -> String {
    match by {
        ProtectedBy::Replication => {
            "holds a replication right on the domain (DCSync), or may grant itself one".into()
        }
        ProtectedBy::PasswordResetter => {
            "may reset the passwords of the users in scope (another writeback agent, a sync \
             service or a delegated administrator)"
                .into()
        }
        ProtectedBy::ServiceAccountWriter => "may change this service account".into(),
        ProtectedBy::Group(name) => format!("members are refused as members of {name}"),
        other => other.to_string(),
    }
}

/// Why a check or grant could not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PermissionsError {
    /// The directory could not be read or written.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// A security descriptor could not be parsed or rebuilt.
    #[error("the security descriptor of {dn} cannot be used: {detail}")]
    Descriptor {
        /// Whose descriptor.
        dn: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The administrator may not change the domain root's DACL.
    #[error(
        "the administrator account may not change the permissions of the domain root \
         (it needs Modify permissions, as a Domain or Enterprise Admin has): {text}"
    )]
    WriteDenied {
        /// The DC's text.
        text: String,
    },
}

impl PermissionsError {
    /// The stable reason code to exit with.
    pub fn reason(&self) -> ReasonCode {
        match self {
            PermissionsError::Directory(e) => e.reason(),
            PermissionsError::Descriptor { .. } => ReasonCode::DirectoryError,
            PermissionsError::WriteDenied { .. } => ReasonCode::InsufficientAccess,
        }
    }
}

fn parse_sd(dn: &str, bytes: &[u8]) -> Result<SecurityDescriptor, PermissionsError> {
    SecurityDescriptor::parse(bytes).map_err(|e| PermissionsError::Descriptor {
        dn: dn.to_string(),
        detail: e.to_string(),
    })
}

fn token(snapshot: &SecuritySnapshot) -> HashSet<Sid> {
    let mut sids: HashSet<Sid> = snapshot.account.groups.iter().cloned().collect();
    sids.insert(snapshot.account.sid.clone());
    sids
}

/// Evaluate a snapshot: descendant-user rights at each scope base (or the root when
/// the whole domain is in scope), Unexpire Password at the root.
fn report(snapshot: SecuritySnapshot) -> Result<PermissionReport, PermissionsError> {
    let sids = token(&snapshot);
    let root = parse_sd(&snapshot.root_dn, &snapshot.root_sd)?;
    let mut bases = Vec::new();
    for (dn, bytes) in &snapshot.scope_sds {
        bases.push((dn.clone(), parse_sd(dn, bytes)?));
    }
    let mut rights = Vec::new();
    for right in REQUIRED {
        let at_root = need(right).applies_to == AppliesTo::Object || bases.is_empty();
        if at_root {
            rights.push(RightCheck {
                right,
                at: snapshot.root_dn.clone(),
                holding: evaluate(root.dacl.as_ref(), right, &sids),
            });
        } else {
            for (dn, sd) in &bases {
                rights.push(RightCheck {
                    right,
                    at: dn.clone(),
                    holding: evaluate(sd.dacl.as_ref(), right, &sids),
                });
            }
        }
    }
    Ok(PermissionReport {
        dc_url: snapshot.dc_url,
        root_dn: snapshot.root_dn,
        account_dn: snapshot.account.dn,
        account_sid: snapshot.account.sid.to_string(),
        rights,
        protected_users: snapshot.protected_users,
        privileged: snapshot.privileged,
    })
}

/// Check the rights of the service account `directory` binds as; with `list_users`,
/// also list the in-scope users whose DACL is protected (reads every in-scope user's
/// DACL: for the command, not for periodic health) and the accounts refused as
/// privileged, with their members.
pub async fn check(
    directory: &Directory,
    list_users: bool,
) -> Result<PermissionReport, PermissionsError> {
    let snapshot = directory
        .security_snapshot(directory.bind_dn(), list_users)
        .await?;
    let report = report(snapshot)?;
    if !report.rights_ok() {
        warn!(missing = ?report.missing(), "the service account lacks rights");
    }
    Ok(report)
}

/// What `permissions grant` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantOutcome {
    /// The rights an ACE was added for (empty: nothing was written).
    pub added: Vec<Right>,
    /// The rights a deny ACE at the root takes away; not overridden.
    pub denied: Vec<Right>,
    /// The check, read again after the write.
    pub report: PermissionReport,
}

impl GrantOutcome {
    /// The outcome as text for the operator.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.added.is_empty() {
            let _ = writeln!(
                out,
                "nothing to grant: every right is already on the domain root"
            );
        } else {
            let _ = writeln!(out, "granted on {}:", self.report.root_dn);
            for r in &self.added {
                let _ = writeln!(out, "  + {}", label(*r));
            }
        }
        for r in &self.denied {
            let _ = writeln!(
                out,
                "  ! {} is denied by a deny entry on the domain root; remove it by hand",
                label(*r)
            );
        }
        for c in self
            .report
            .rights
            .iter()
            .filter(|c| c.holding == Holding::Missing && c.at != self.report.root_dn)
        {
            let _ = writeln!(
                out,
                "  ! {} is on the domain root but does not reach {}: re-enable inheritance \
                 on it",
                label(c.right),
                c.at
            );
        }
        let _ = writeln!(out);
        out.push_str(&self.report.render());
        out
    }
}

/// The domain root's descriptor with one ACE added for each of the `missing` rights
/// that `sids` lack at the root, the rights added, and the rights a deny ACE at the
/// root takes away. `None` when nothing is to be added.
fn plan_grant(
    root: &SecurityDescriptor,
    account: &Sid,
    sids: &HashSet<Sid>,
    missing: &[Right],
) -> (Option<SecurityDescriptor>, Vec<Right>, Vec<Right>) {
    let mut added = Vec::new();
    let mut denied = Vec::new();
    let mut dacl = root.dacl.clone().unwrap_or(Acl {
        revision: sd::ACL_REVISION_DS,
        aces: Vec::new(),
    });
    for right in missing.iter().copied() {
        match evaluate(root.dacl.as_ref(), right, sids) {
            Holding::Granted => {}
            Holding::Denied => denied.push(right),
            Holding::Missing => {
                dacl.add_explicit(grant_ace(right, account));
                added.push(right);
            }
        }
    }
    if added.is_empty() {
        return (None, added, denied);
    }
    let new = SecurityDescriptor {
        revision: root.revision,
        rm_control: root.rm_control,
        control: root.control | sd::SE_DACL_PRESENT | sd::SE_SELF_RELATIVE,
        owner: None,
        group: None,
        sacl: None,
        dacl: Some(dacl),
    };
    (Some(new), added, denied)
}

/// Bound as an administrator (`admin`), add to the domain root's DACL the ACEs
/// `account` (the service account's DN or UPN) lacks, then check again.
pub async fn grant(admin: &Directory, account: &str) -> Result<GrantOutcome, PermissionsError> {
    let before = admin.security_snapshot(account, false).await?;
    let root = parse_sd(&before.root_dn, &before.root_sd)?;
    // What we write back is what we read plus our ACEs, nothing else: refuse a
    // descriptor our encoding would not reproduce byte for byte.
    if root.to_bytes().ok().as_deref() != Some(before.root_sd.as_slice()) {
        return Err(PermissionsError::Descriptor {
            dn: before.root_dn.clone(),
            detail: "it does not re-encode to the same bytes; refusing to write it back \
                     (grant the rights by hand)"
                .to_string(),
        });
    }
    let sids = token(&before);
    let missing = report(before.clone())?.missing();
    let (new, added, denied) = plan_grant(&root, &before.account.sid, &sids, &missing);
    if let Some(new) = new {
        let bytes = new.to_bytes().map_err(|e| PermissionsError::Descriptor {
            dn: before.root_dn.clone(),
            detail: e.to_string(),
        })?;
        match admin.write_root_dacl(&bytes).await {
            Ok(()) => {}
            Err(DirectoryError::Directory { rc: 50, text, .. }) => {
                return Err(PermissionsError::WriteDenied { text });
            }
            Err(e) => return Err(e.into()),
        }
        info!(account = %before.account.dn, ?added, "rights granted on the domain root");
    }
    let after = report(admin.security_snapshot(account, true).await?)?;
    Ok(GrantOutcome {
        added,
        denied,
        report: after,
    })
}

#[cfg(test)]
mod tests;
