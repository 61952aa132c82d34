//! The checks before any write fail closed and hold until the write (#16): members
//! of a configured deny group are refused, however they are members; a deny group
//! that does not exist stops everything; and the object checked is the object
//! written, even when it is renamed — and another user takes its DN — between the
//! check and the write.

use std::collections::HashSet;

use writeback_agent::directory::{DirectoryError, ProtectedBy, ResetOptions};
use writeback_core::ReasonCode;
use writeback_testkit::SambaDc;

use crate::proxy::{Event, StallProxy};
use crate::{admin_config, directory, protected_by, pw, refused, start_dc, upn};

/// The RID of a group, from `samba-tool group show`.
async fn group_rid(dc: &SambaDc, name: &str) -> u32 {
    let out = dc
        .samba_tool(&["group", "show", name, "--attributes=objectSid"])
        .await
        .unwrap();
    let sid = out
        .lines()
        .find_map(|l| l.strip_prefix("objectSid: "))
        .unwrap();
    sid.trim().rsplit('-').next().unwrap().parse().unwrap()
}

async fn samba(dc: &SambaDc, args: &[&str]) {
    dc.samba_tool(args).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_a_deny_group_are_refused_however_they_are_members() {
    let dc = start_dc().await;
    let base = dc.base_dn();
    let old = "Start-Passw0rd!";
    for sam in ["kim", "lee", "mia", "nora"] {
        dc.create_user(sam, old).await.unwrap();
    }
    samba(&dc, &["group", "add", "Tier0 Staff"]).await;
    samba(&dc, &["group", "add", "Nested Ops"]).await;
    // kim directly; lee through Nested Ops; mia by primary group only.
    samba(
        &dc,
        &["group", "addmembers", "Tier0 Staff", "kim,Nested Ops"],
    )
    .await;
    samba(&dc, &["group", "addmembers", "Nested Ops", "lee"]).await;
    samba(&dc, &["group", "addmembers", "Tier0 Staff", "mia"]).await;
    let rid = group_rid(&dc, "Tier0 Staff").await.to_string();
    let mia = format!("CN=mia,CN=Users,{base}");
    let mut admin = dc.ldap_admin().await.unwrap();
    let res = admin
        .modify(
            &mia,
            vec![ldap3::Mod::Replace(
                "primaryGroupID",
                HashSet::from([rid.as_str()]),
            )],
        )
        .await
        .unwrap();
    assert_eq!(res.rc, 0, "{res:?}");
    // A user whose primary group is Tier0 Staff is no longer listed in its member.
    let members = dc
        .read_attrs(&format!("CN=Tier0 Staff,CN=Users,{base}"), &["member"])
        .await
        .unwrap();
    assert!(
        !members["member"].iter().any(|m| m.starts_with("CN=mia,")),
        "{members:?}"
    );

    let mut cfg = admin_config(&dc);
    cfg.deny_group_dns = vec![format!("CN=Tier0 Staff,CN=Users,{base}")];
    let d = directory(cfg.clone());
    let reset = ResetOptions::default();
    for sam in ["kim", "lee", "mia"] {
        let e = refused(
            d.reset_password(&upn(&dc, sam), &pw("Chosen-Passw0rd-1"), reset)
                .await,
            ReasonCode::ProtectedAccount,
        );
        assert!(
            matches!(&e, DirectoryError::ProtectedAccount { by: ProtectedBy::DenyGroup(g), .. }
                if g.starts_with("CN=Tier0 Staff,")),
            "{sam}: {e:?}"
        );
        assert!(e.public_message().contains("deny group"), "{e}");
        refused(d.unlock(&upn(&dc, sam)).await, ReasonCode::ProtectedAccount);
        let who = format!("{sam}@{}", dc.domain());
        assert!(dc.try_bind(&who, old).await.unwrap(), "{sam} unchanged");
        assert!(!dc.try_bind(&who, "Chosen-Passw0rd-1").await.unwrap());
    }
    // Not a member: written back.
    d.reset_password(&upn(&dc, "nora"), &pw("Nora-Passw0rd-1"), reset)
        .await
        .unwrap();
    assert!(
        dc.try_bind("nora@contoso.test", "Nora-Passw0rd-1")
            .await
            .unwrap()
    );

    // A deny group that does not exist (a typo, a deleted group) refuses
    // everything rather than protecting no one.
    let mut typo = cfg.clone();
    typo.deny_group_dns = vec![format!("CN=Tier0 Staf,CN=Users,{base}")];
    let e = refused(
        directory(typo)
            .reset_password(&upn(&dc, "nora"), &pw("Nora-Passw0rd-2"), reset)
            .await,
        ReasonCode::Internal,
    );
    assert!(
        matches!(e, DirectoryError::Config(ref m) if m.contains("deny group")),
        "{e:?}"
    );
    // So does a deny "group" that is a user.
    let mut not_group = cfg;
    not_group.deny_group_dns = vec![format!("CN=kim,CN=Users,{base}")];
    refused(
        directory(not_group)
            .reset_password(&upn(&dc, "nora"), &pw("Nora-Passw0rd-2"), reset)
            .await,
        ReasonCode::Internal,
    );
    assert!(
        dc.try_bind("nora@contoso.test", "Nora-Passw0rd-1")
            .await
            .unwrap()
    );
}

/// The write addresses the user by `<GUID=…>`: the modify is held on the wire after
/// every check passed, alice is renamed and mallory is renamed to alice's old DN,
/// then the modify goes on. Alice gets the password, mallory keeps hers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_checked_is_the_user_written_even_if_renamed_meanwhile() {
    let dc = start_dc().await;
    let base = dc.base_dn();
    let alice = dc.create_user("alice", "Start-Passw0rd!").await.unwrap();
    let mallory = dc
        .create_user("mallory", "Mallory-Passw0rd!")
        .await
        .unwrap();
    dc.create_user("bob", "Start-Passw0rd!").await.unwrap();
    let reset = ResetOptions::default();

    // Which request of a reset on a fresh handle is the modify (the last before the
    // unbind).
    let mut cfg = admin_config(&dc);
    let modify = crate::proxy::requests_of_a_fresh_reset(&dc, &cfg, "bob").await - 1;

    let mut proxy = StallProxy::hold(dc.ip(), modify).await;
    cfg.urls = vec![proxy.url()];
    let d = directory(cfg);
    let target = upn(&dc, "alice");
    let write = tokio::spawn(async move {
        d.reset_password(&target, &pw("Alice-Passw0rd-1"), reset)
            .await
    });
    assert_eq!(proxy.next().await, Event::Held { request: modify });
    let mut admin = dc.ldap_admin().await.unwrap();
    let res = admin
        .modifydn(&alice, "CN=alice-renamed", true, None)
        .await
        .unwrap();
    assert_eq!(res.rc, 0, "{res:?}");
    let res = admin
        .modifydn(&mallory, "CN=alice", true, None)
        .await
        .unwrap();
    assert_eq!(res.rc, 0, "{res:?}");
    assert_eq!(mallory.replace("mallory", "alice"), alice);
    proxy.release();
    write.await.unwrap().unwrap();

    let renamed = format!("CN=alice-renamed,CN=Users,{base}");
    assert!(dc.try_bind(&renamed, "Alice-Passw0rd-1").await.unwrap());
    assert!(!dc.try_bind(&renamed, "Start-Passw0rd!").await.unwrap());
    // The object now at alice's old DN is mallory, untouched.
    assert!(dc.try_bind(&alice, "Mallory-Passw0rd!").await.unwrap());
    assert!(
        dc.try_bind("mallory@contoso.test", "Mallory-Passw0rd!")
            .await
            .unwrap()
    );
    assert!(!dc.try_bind(&alice, "Alice-Passw0rd-1").await.unwrap());
}

/// schemaIDGUIDs of the attributes the service account is denied in the test below.
const ADMIN_COUNT: &str = "bf967918-0de6-11d0-a285-00aa003049e2";
const TOKEN_GROUPS: &str = "b7c69e6d-2cc7-11d2-854e-00a0c983f608";
const MEMBER_OF: &str = "bf967991-0de6-11d0-a285-00aa003049e2";
const USER_ACCOUNT_CONTROL: &str = "bf967a68-0de6-11d0-a285-00aa003049e2";

/// Deny `sid` reading the attribute `attr` on `dn` (and, with `inherit`, below it).
async fn deny_read(dc: &SambaDc, dn: &str, attr: &str, sid: &str, inherit: bool) {
    let flags = if inherit { "CI" } else { "" };
    samba(
        dc,
        &[
            "dsacl",
            "set",
            &format!("--objectdn={dn}"),
            &format!("--sddl=(OD;{flags};RP;{attr};;{sid})"),
        ],
    )
    .await;
}

/// What the service account cannot read is never taken as "not protected": an
/// unreadable `adminCount` stops everything, an unreadable `tokenGroups` falls back
/// to the in-chain check only while that check is proven to work, else the user is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facts_the_service_account_cannot_read_fail_closed() {
    let dc = start_dc().await;
    let base = dc.base_dn();
    let old = "Start-Passw0rd!";
    dc.create_user("olga", old).await.unwrap();
    dc.create_user("pete", old).await.unwrap();
    samba(&dc, &["group", "addmembers", "Domain Admins", "pete"]).await;
    dc.create_user("svc-reader", "Svc-Passw0rd-1!")
        .await
        .unwrap();
    let sid = crate::show_attr(&dc, "svc-reader", "objectSid").await;
    let svc = || {
        directory(crate::config_as(
            &dc,
            "svc-reader@contoso.test",
            "Svc-Passw0rd-1!",
        ))
    };
    // An ordinary account with no rights: reaching the write is INSUFFICIENT_ACCESS.
    refused(
        svc().unlock(&upn(&dc, "olga")).await,
        ReasonCode::InsufficientAccess,
    );
    assert_eq!(
        protected_by(svc().unlock(&upn(&dc, "pete")).await),
        ProtectedBy::Group("Domain Admins")
    );

    // tokenGroups unreadable on every user: the in-chain check, proven on
    // Administrator, still finds pete in Domain Admins and lets olga through.
    deny_read(&dc, &base, TOKEN_GROUPS, &sid, true).await;
    assert_eq!(
        protected_by(svc().unlock(&upn(&dc, "pete")).await),
        ProtectedBy::Group("Domain Admins")
    );
    refused(
        svc().unlock(&upn(&dc, "olga")).await,
        ReasonCode::InsufficientAccess,
    );

    // memberOf unreadable as well: the in-chain check is no longer proven, so
    // nobody whose tokenGroups is unreadable is written.
    deny_read(&dc, &base, MEMBER_OF, &sid, true).await;
    for sam in ["olga", "pete"] {
        let e = refused(
            svc().unlock(&upn(&dc, sam)).await,
            ReasonCode::ProtectedAccount,
        );
        assert!(
            matches!(
                e,
                DirectoryError::ProtectedAccount {
                    by: ProtectedBy::Unverifiable("tokenGroups"),
                    ..
                }
            ),
            "{sam}: {e:?}"
        );
        assert!(e.public_message().contains("could not verify"), "{e}");
    }

    // userAccountControl unreadable on one user: refused, whatever else.
    dc.create_user("quinn", old).await.unwrap();
    let quinn = format!("CN=quinn,CN=Users,{base}");
    deny_read(&dc, &quinn, USER_ACCOUNT_CONTROL, &sid, false).await;
    assert_eq!(
        protected_by(svc().unlock(&upn(&dc, "quinn")).await),
        ProtectedBy::Unverifiable("userAccountControl")
    );

    // adminCount unreadable where it must be set: every operation is refused.
    let admin = format!("CN=Administrator,CN=Users,{base}");
    deny_read(&dc, &admin, ADMIN_COUNT, &sid, false).await;
    let e = refused(svc().unlock(&upn(&dc, "olga")).await, ReasonCode::Internal);
    assert!(
        matches!(e, DirectoryError::Config(ref m) if m.contains("adminCount")),
        "{e:?}"
    );
    // The administrator-bound agent is not affected.
    let d = directory(admin_config(&dc));
    d.reset_password(
        &upn(&dc, "olga"),
        &pw("Olga-Passw0rd-1"),
        ResetOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        dc.try_bind("olga@contoso.test", "Olga-Passw0rd-1")
            .await
            .unwrap()
    );
}

/// A referral is never an answer (#25, item 5): with `tokenGroups` unreadable, the
/// protected-account check falls back to the in-chain membership search; a DC that
/// answers that search with a referral (result code 10, no entries) must not be
/// read as "not a member". Through [`crate::referral::ReferringDc`] in front of a
/// real DC, the agent — bound as its least-privilege service account, rights from
/// `permissions grant` — refuses a Domain Admin and an ordinary user alike, and
/// writes nothing; straight to the DC, the same agent refuses the Domain Admin as
/// such and writes the ordinary user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_in_the_membership_check_fails_closed() {
    use crate::permissions::SVC_PASSWORD;
    use crate::referral::ReferringDc;
    use writeback_agent::permissions;

    let dc = start_dc().await;
    let base = dc.base_dn();
    let old = "Start-Passw0rd!";
    dc.create_user("olga", old).await.unwrap();
    dc.create_user("pete", old).await.unwrap();
    samba(&dc, &["group", "addmembers", "Domain Admins", "pete"]).await;
    dc.create_user("svc-writeback", SVC_PASSWORD).await.unwrap();
    let granted = permissions::grant(&directory(admin_config(&dc)), "svc-writeback@contoso.test")
        .await
        .unwrap();
    assert!(granted.report.rights_ok(), "{}", granted.render());
    let sid = crate::show_attr(&dc, "svc-writeback", "objectSid").await;
    deny_read(&dc, &base, TOKEN_GROUPS, &sid, true).await;
    let svc = crate::config_as(&dc, "svc-writeback@contoso.test", SVC_PASSWORD);
    let reset = ResetOptions::default();

    let mitm = ReferringDc::start(&dc);
    let mut referred = svc.clone();
    referred.urls = vec![mitm.url()];
    referred.ca_pem = mitm.ca_pem();
    let d = directory(referred);
    for sam in ["pete", "olga"] {
        let e = refused(
            d.reset_password(&upn(&dc, sam), &pw("Chosen-Passw0rd-1"), reset)
                .await,
            ReasonCode::ProtectedAccount,
        );
        assert!(
            matches!(
                e,
                DirectoryError::ProtectedAccount {
                    by: ProtectedBy::Referral,
                    ..
                }
            ),
            "{sam}: {e:?}"
        );
        assert!(e.public_message().contains("referred"), "{e}");
        let who = format!("{sam}@{}", dc.domain());
        assert!(dc.try_bind(&who, old).await.unwrap(), "{sam} unchanged");
    }
    assert!(mitm.referrals() >= 2, "{}", mitm.referrals());

    // Straight to the DC: the in-chain check answers, pete is a Domain Admin and
    // olga is written.
    let direct = directory(svc);
    assert_eq!(
        protected_by(
            direct
                .reset_password(&upn(&dc, "pete"), &pw("Chosen-Passw0rd-1"), reset)
                .await
        ),
        ProtectedBy::Group("Domain Admins")
    );
    direct
        .reset_password(&upn(&dc, "olga"), &pw("Olga-Passw0rd-1"), reset)
        .await
        .unwrap();
    assert!(
        dc.try_bind("olga@contoso.test", "Olga-Passw0rd-1")
            .await
            .unwrap()
    );
}
