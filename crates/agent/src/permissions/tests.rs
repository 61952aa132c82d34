//! The check's reading of DACLs and the ACEs `grant` adds, on hand-built
//! security descriptors.

use super::*;
use crate::directory::sd::{AceBody, INHERITED_ACE};

fn sid(s: &str) -> Sid {
    Sid::parse_str(s).unwrap()
}

const SVC: &str = "S-1-5-21-1-2-3-1105";
const GROUP: &str = "S-1-5-21-1-2-3-1200";

fn sids() -> HashSet<Sid> {
    [sid(SVC), sid(GROUP), sid("S-1-1-0")].into()
}

fn root_with(aces: Vec<Ace>) -> SecurityDescriptor {
    SecurityDescriptor {
        revision: 1,
        rm_control: 0,
        control: sd::SE_SELF_RELATIVE | sd::SE_DACL_PRESENT | 0x0400,
        owner: None,
        group: None,
        sacl: None,
        dacl: Some(Acl {
            revision: sd::ACL_REVISION_DS,
            aces,
        }),
    }
}

fn basic(ace_type: u8, flags: u8, mask: u32, who: &str) -> Ace {
    Ace {
        ace_type,
        flags,
        body: AceBody::Basic {
            mask,
            sid: sid(who),
            trailing: Vec::new(),
        },
    }
}

fn all_held(dacl: &SecurityDescriptor, sids: &HashSet<Sid>) -> Vec<Holding> {
    REQUIRED
        .iter()
        .map(|r| evaluate(dacl.dacl.as_ref(), *r, sids))
        .collect()
}

#[test]
fn the_aces_grant_adds_are_the_ones_the_check_accepts() {
    let empty = root_with(vec![basic(
        sd::ACCESS_ALLOWED,
        CONTAINER_INHERIT_ACE,
        0x000f_01ff,
        "S-1-5-18",
    )]);
    assert_eq!(all_held(&empty, &sids()), vec![Holding::Missing; 4]);
    let (new, added, denied) = plan_grant(&empty, &sid(SVC), &sids(), &REQUIRED);
    assert_eq!(added, REQUIRED.to_vec());
    assert!(denied.is_empty());
    let new = new.unwrap();
    assert_eq!(all_held(&new, &sids()), vec![Holding::Granted; 4]);
    // Through bytes, too, and a second plan adds nothing.
    let again = SecurityDescriptor::parse(&new.to_bytes().unwrap()).unwrap();
    assert_eq!(again, new);
    let (none, added, _) = plan_grant(&again, &sid(SVC), &sids(), &REQUIRED);
    assert!(none.is_none());
    assert!(added.is_empty());
    // The exact ACEs: object type, inherited object type, flags, mask.
    let aces = &new.dacl.as_ref().unwrap().aces;
    assert_eq!(aces.len(), 5);
    assert_eq!(
        aces[1],
        Ace::allow_object(
            CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE,
            CONTROL_ACCESS,
            Some(RESET_PASSWORD),
            Some(USER_CLASS),
            sid(SVC)
        )
    );
    assert_eq!(
        aces[4],
        Ace::allow_object(
            CONTAINER_INHERIT_ACE,
            CONTROL_ACCESS,
            Some(UNEXPIRE_PASSWORD),
            None,
            sid(SVC)
        )
    );
}

#[test]
fn only_the_missing_rights_are_added() {
    let have_reset = grant_ace(Right::ResetPassword, &sid(GROUP));
    let root = root_with(vec![have_reset]);
    let (new, added, _) = plan_grant(&root, &sid(SVC), &sids(), &REQUIRED);
    assert_eq!(
        added,
        vec![
            Right::WriteLockoutTime,
            Right::WritePwdLastSet,
            Right::UnexpirePassword
        ]
    );
    assert_eq!(new.unwrap().dacl.unwrap().aces.len(), 4);
    // A right the check found (e.g. delegated on the scope OU) is not added.
    let (new, added, _) = plan_grant(&root, &sid(SVC), &sids(), &[Right::WritePwdLastSet]);
    assert_eq!(added, vec![Right::WritePwdLastSet]);
    assert_eq!(new.unwrap().dacl.unwrap().aces.len(), 2);
}

#[test]
fn broad_aces_count_and_narrow_or_misplaced_ones_do_not() {
    let s = sids();
    let held = |ace: Ace| all_held(&root_with(vec![ace]), &s);
    use Holding::{Granted as G, Missing as M};
    // Full control inherited by every object (and applying to the root).
    assert_eq!(
        held(basic(
            sd::ACCESS_ALLOWED,
            CONTAINER_INHERIT_ACE,
            0x000f_01ff,
            SVC
        )),
        vec![G, G, G, G]
    );
    // GENERIC_ALL, to Everyone.
    assert_eq!(
        held(basic(
            sd::ACCESS_ALLOWED,
            CONTAINER_INHERIT_ACE,
            GENERIC_ALL,
            "S-1-1-0"
        )),
        vec![G, G, G, G]
    );
    // GENERIC_WRITE: properties, not extended rights.
    assert_eq!(
        held(basic(
            sd::ACCESS_ALLOWED,
            CONTAINER_INHERIT_ACE,
            GENERIC_WRITE,
            SVC
        )),
        vec![M, G, G, M]
    );
    // All extended rights, only on the root (no inheritance).
    assert_eq!(
        held(basic(sd::ACCESS_ALLOWED, 0, CONTROL_ACCESS, SVC)),
        vec![M, M, M, G]
    );
    // Inherit-only extended rights: descendants, not the root.
    assert_eq!(
        held(basic(
            sd::ACCESS_ALLOWED,
            CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE,
            CONTROL_ACCESS,
            SVC
        )),
        vec![G, M, M, M]
    );
    // No-propagate: children only, not users in OUs.
    assert_eq!(
        held(basic(
            sd::ACCESS_ALLOWED,
            CONTAINER_INHERIT_ACE | NO_PROPAGATE_INHERIT_ACE,
            WRITE_PROP,
            SVC
        )),
        vec![M, M, M, M]
    );
    // The property set holding pwdLastSet.
    assert_eq!(
        held(Ace::allow_object(
            CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE,
            WRITE_PROP,
            Some(USER_ACCOUNT_RESTRICTIONS),
            Some(USER_CLASS),
            sid(SVC)
        )),
        vec![M, M, G, M]
    );
    // Inherited by computers, not users.
    assert_eq!(
        held(Ace::allow_object(
            CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE,
            CONTROL_ACCESS,
            Some(RESET_PASSWORD),
            Some(Uuid::from_u128(0xbf967a86_0de6_11d0_a285_00aa003049e2)),
            sid(SVC)
        )),
        vec![M, M, M, M]
    );
    // Someone else's right.
    assert_eq!(
        held(grant_ace(Right::ResetPassword, &sid("S-1-5-21-1-2-3-9999"))),
        vec![M, M, M, M]
    );
    // An inherited copy on an OU counts like the original.
    let mut inherited = grant_ace(Right::WriteLockoutTime, &sid(SVC));
    inherited.flags |= INHERITED_ACE;
    assert_eq!(held(inherited), vec![M, G, M, M]);
}

#[test]
fn a_deny_wins_and_grant_leaves_it_alone() {
    let mut deny = grant_ace(Right::ResetPassword, &sid(GROUP));
    deny.ace_type = sd::ACCESS_DENIED_OBJECT;
    let root = root_with(vec![deny, grant_ace(Right::ResetPassword, &sid(SVC))]);
    assert_eq!(
        evaluate(root.dacl.as_ref(), Right::ResetPassword, &sids()),
        Holding::Denied
    );
    let (_, added, denied) = plan_grant(&root, &sid(SVC), &sids(), &REQUIRED);
    assert_eq!(denied, vec![Right::ResetPassword]);
    assert!(!added.contains(&Right::ResetPassword));
}

fn report_with(holdings: [Holding; 4], protected: Option<Vec<String>>) -> PermissionReport {
    PermissionReport {
        dc_url: "ldaps://dc1:636".into(),
        root_dn: "DC=contoso,DC=test".into(),
        account_dn: "CN=svc,CN=Users,DC=contoso,DC=test".into(),
        account_sid: SVC.into(),
        rights: REQUIRED
            .iter()
            .zip(holdings)
            .map(|(r, h)| RightCheck {
                right: *r,
                at: "DC=contoso,DC=test".into(),
                holding: h,
            })
            .collect(),
        protected_users: protected,
        privileged: None,
    }
}

#[test]
fn the_report_says_what_is_missing_and_what_to_do() {
    use Holding::{Denied as D, Granted as G, Missing as M};
    let r = report_with([G, M, G, M], Some(vec![]));
    assert!(!r.rights_ok());
    assert_eq!(
        r.missing(),
        vec![Right::WriteLockoutTime, Right::UnexpirePassword]
    );
    assert_eq!(r.reason(), ReasonCode::InsufficientAccess);
    let text = r.render();
    assert!(text.contains("[MISSING] write lockoutTime on descendant user objects"));
    assert!(text.contains("[ok     ] Reset Password on descendant user objects"));
    assert!(text.contains("inheritance: enabled on every in-scope user"));
    assert!(r.verdict().starts_with(
        "INSUFFICIENT_ACCESS: the service account lacks write lockoutTime on descendant \
         user objects, Unexpire Password on the domain root; run `writeback-agent \
         permissions grant"
    ));
    let r = report_with([D, G, G, G], None);
    assert!(r.verdict().contains("remove the deny entries"));
    let r = report_with(
        [G; 4],
        Some(vec!["CN=judy,OU=Staff,DC=contoso,DC=test".into()]),
    );
    assert!(r.rights_ok());
    assert_eq!(r.reason(), ReasonCode::InheritanceDisabled);
    assert!(
        r.render()
            .contains("inheritance disabled on 1 in-scope user(s)")
    );
    assert!(r.render().contains("  CN=judy,OU=Staff,DC=contoso,DC=test"));
    let r = report_with([G; 4], None);
    assert_eq!(r.reason(), ReasonCode::Ok);
    assert!(r.verdict().starts_with("OK:"));
}

#[test]
fn the_report_lists_privileged_accounts_without_changing_the_verdict() {
    let mut r = report_with([Holding::Granted; 4], None);
    assert!(!r.render().contains("privileged accounts"));
    r.privileged = Some(Vec::new());
    assert!(
        r.render()
            .contains("privileged accounts: none beyond the protected administrative groups")
    );
    r.privileged = Some(vec![
        PrivilegedAccount {
            name: "CN=svc-sync,CN=Users,DC=contoso,DC=test".into(),
            group: false,
            by: ProtectedBy::Replication,
            members: Vec::new(),
        },
        PrivilegedAccount {
            name: "CN=DnsAdmins,CN=Users,DC=contoso,DC=test".into(),
            group: true,
            by: ProtectedBy::Group("DnsAdmins"),
            members: vec!["CN=dina,CN=Users,DC=contoso,DC=test".into()],
        },
    ]);
    let text = r.render();
    assert!(
        text.contains(
            "  CN=svc-sync,CN=Users,DC=contoso,DC=test: holds a replication right on the domain"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "  CN=DnsAdmins,CN=Users,DC=contoso,DC=test (group): members are refused as members \
             of DnsAdmins\n    CN=dina,CN=Users,DC=contoso,DC=test\n"
        ),
        "{text}"
    );
    assert_eq!(r.reason(), ReasonCode::Ok);
}
