//! Lookup and refusal rules: nothing is written for users that are not found, are
//! ambiguous, outside the scope, protected or disabled.

use writeback_agent::directory::{DirectoryError, ProtectedBy, ResetOptions, Target};
use writeback_core::ReasonCode;

use crate::{admin_config, config_as, directory, guid_of, pw, refused, start_dc, upn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_scope_and_protected_accounts() {
    let dc = start_dc().await;
    let base = dc.base_dn();
    let staff = dc.create_ou("Staff").await.unwrap();
    let inside = dc
        .create_user_in(&staff, "dana", "Start-Passw0rd!")
        .await
        .unwrap();
    dc.create_user_in(&staff, "eve", "Start-Passw0rd!")
        .await
        .unwrap();
    dc.create_user("frank", "Start-Passw0rd!").await.unwrap();
    let reset = ResetOptions::default();
    let d = directory(admin_config(&dc));

    // Not found: unknown names, filter injection, unknown GUIDs, and no guessing on
    // what only looks like a user.
    for name in [
        "nobody@contoso.test",
        "*)(sAMAccountName=*",
        "*",
        "dana@contoso.test)",
    ] {
        refused(
            d.unlock(&Target::Upn(name.to_string())).await,
            ReasonCode::UserNotFound,
        );
    }
    refused(
        d.unlock(&Target::ObjectGuid(uuid::Uuid::new_v4())).await,
        ReasonCode::UserNotFound,
    );
    // A group's GUID is not a user's.
    let domain_users = dc
        .samba_tool(&["group", "show", "Domain Users", "--attributes=objectGUID"])
        .await
        .unwrap();
    let group_guid = domain_users
        .lines()
        .find_map(|l| l.strip_prefix("objectGUID: "))
        .unwrap();
    refused(
        d.unlock(&Target::ObjectGuid(group_guid.trim().parse().unwrap()))
            .await,
        ReasonCode::UserNotFound,
    );
    refused(
        d.unlock(&Target::Upn(String::new())).await,
        ReasonCode::InvalidArgument,
    );
    refused(
        d.reset_password(&upn(&dc, "dana"), &pw(""), reset).await,
        ReasonCode::InvalidArgument,
    );

    // Scope by OU: frank (CN=Users) exists but is outside.
    let mut cfg = admin_config(&dc);
    cfg.scope_base_dns = vec![staff.clone()];
    let scoped = directory(cfg.clone());
    scoped
        .reset_password(&upn(&dc, "dana"), &pw("Scoped-Passw0rd-1"), reset)
        .await
        .unwrap();
    assert!(dc.try_bind(&inside, "Scoped-Passw0rd-1").await.unwrap());
    refused(
        scoped
            .reset_password(&upn(&dc, "frank"), &pw("Scoped-Passw0rd-1"), reset)
            .await,
        ReasonCode::UserNotInScope,
    );
    refused(
        scoped.unlock(&upn(&dc, "nobody")).await,
        ReasonCode::UserNotFound,
    );
    // A scope base that does not exist is a configuration error, not "not found".
    let mut bad = cfg.clone();
    bad.scope_base_dns = vec![format!("OU=Nowhere,{base}")];
    refused(
        directory(bad).unlock(&upn(&dc, "dana")).await,
        ReasonCode::Internal,
    );

    // Scope by group (direct members only): dana is a member, eve is not.
    dc.samba_tool(&["group", "add", "Writeback Users"])
        .await
        .unwrap();
    dc.samba_tool(&["group", "addmembers", "Writeback Users", "dana"])
        .await
        .unwrap();
    let mut grouped = cfg.clone();
    grouped.scope_group_dn = Some(format!("CN=Writeback Users,CN=Users,{base}"));
    let grouped = directory(grouped);
    grouped.unlock(&upn(&dc, "dana")).await.unwrap();
    refused(
        grouped.unlock(&upn(&dc, "eve")).await,
        ReasonCode::UserNotInScope,
    );

    // Protected accounts, even though Administrator may write them.
    // Administrator has no UPN on Samba; target it by objectGUID.
    let admin = Target::ObjectGuid(guid_of(&dc, "Administrator").await);
    let e = refused(
        d.reset_password(&admin, &pw("Admin-Passw0rd-1"), reset)
            .await,
        ReasonCode::ProtectedAccount,
    );
    assert!(e.public_message().contains("not written back"), "{e}");
    assert!(
        dc.try_bind(&dc.admin_dn(), dc.admin_password())
            .await
            .unwrap(),
        "Administrator's password is unchanged"
    );
    assert!(!dc.kinit("Administrator", "Admin-Passw0rd-1").await.unwrap());
    // Nested: grace -> Helpdesk Leads -> Domain Admins (Samba sets no adminCount).
    let grace = dc.create_user("grace", "Start-Passw0rd!").await.unwrap();
    dc.samba_tool(&["group", "add", "Helpdesk Leads"])
        .await
        .unwrap();
    dc.samba_tool(&["group", "addmembers", "Helpdesk Leads", "grace"])
        .await
        .unwrap();
    dc.samba_tool(&["group", "addmembers", "Domain Admins", "Helpdesk Leads"])
        .await
        .unwrap();
    let e = refused(
        d.unlock(&upn(&dc, "grace")).await,
        ReasonCode::ProtectedAccount,
    );
    assert!(
        matches!(
            e,
            DirectoryError::ProtectedAccount {
                by: ProtectedBy::Group("Domain Admins"),
                ..
            }
        ),
        "{e:?}"
    );
    let admin_count = dc.read_attrs(&grace, &["adminCount"]).await.unwrap();
    assert!(admin_count.is_empty(), "{admin_count:?}");
    // Directly in a builtin operators group.
    dc.create_user("heidi", "Start-Passw0rd!").await.unwrap();
    dc.samba_tool(&["group", "addmembers", "Backup Operators", "heidi"])
        .await
        .unwrap();
    let e = refused(
        d.reset_password(&upn(&dc, "heidi"), &pw("Heidi-Passw0rd-1"), reset)
            .await,
        ReasonCode::ProtectedAccount,
    );
    assert!(e.public_message().contains("Backup Operators"), "{e}");
    assert!(
        dc.try_bind("heidi@contoso.test", "Start-Passw0rd!")
            .await
            .unwrap()
    );
    assert!(!dc.kinit("heidi", "Heidi-Passw0rd-1").await.unwrap());

    // Disabled accounts are refused before anything is written.
    dc.samba_tool(&["user", "disable", "eve"]).await.unwrap();
    refused(
        d.reset_password(&upn(&dc, "eve"), &pw("Eve-Passw0rd-1"), reset)
            .await,
        ReasonCode::AccountDisabled,
    );
    refused(
        d.unlock(&upn(&dc, "eve")).await,
        ReasonCode::AccountDisabled,
    );
    dc.samba_tool(&["user", "enable", "eve"]).await.unwrap();
    assert!(
        dc.try_bind("eve@contoso.test", "Start-Passw0rd!")
            .await
            .unwrap()
    );
    assert!(!dc.kinit("eve", "Eve-Passw0rd-1").await.unwrap());
}

/// The agent never writes back its own service account (by UPN, DN or GUID,
/// whichever form the configuration names it by) nor a trust account, even
/// where its rights would allow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_and_trust_accounts_are_refused() {
    let dc = start_dc().await;
    let svc = dc.create_user("svc-self", "Svc-Passw0rd-1!").await.unwrap();
    let reset = ResetOptions::default();
    for bind in ["svc-self@contoso.test", svc.as_str()] {
        let d = directory(config_as(&dc, bind, "Svc-Passw0rd-1!"));
        for target in [
            upn(&dc, "svc-self"),
            Target::ObjectGuid(guid_of(&dc, "svc-self").await),
        ] {
            let e = refused(
                d.reset_password(&target, &pw("Chosen-Passw0rd-1"), reset)
                    .await,
                ReasonCode::ProtectedAccount,
            );
            assert!(
                matches!(
                    e,
                    DirectoryError::ProtectedAccount {
                        by: ProtectedBy::ServiceAccount,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert!(e.public_message().contains("own service account"), "{e}");
        }
    }
    assert!(
        dc.try_bind("svc-self@contoso.test", "Svc-Passw0rd-1!")
            .await
            .unwrap()
    );

    // Bound by the implicit UPN (sAMAccountName@domain; Samba's Administrator
    // has no userPrincipalName), the agent still knows itself and works.
    let implicit = directory(config_as(
        &dc,
        &format!("Administrator@{}", dc.domain()),
        dc.admin_password(),
    ));
    implicit.unlock(&upn(&dc, "svc-self")).await.unwrap();
    let admin_guid = Target::ObjectGuid(guid_of(&dc, "Administrator").await);
    let e = refused(
        implicit
            .reset_password(&admin_guid, &pw("Chosen-Passw0rd-1"), reset)
            .await,
        ReasonCode::ProtectedAccount,
    );
    assert!(
        matches!(
            e,
            DirectoryError::ProtectedAccount {
                by: ProtectedBy::ServiceAccount,
                ..
            }
        ),
        "{e:?}"
    );

    // A workstation trust account (a user object with userAccountControl 0x1000),
    // reset by an administrator-bound agent.
    let trust = dc.create_user("trusty", "Trust-Passw0rd-1!").await.unwrap();
    let mut admin = dc.ldap_admin().await.unwrap();
    let res = admin
        .modify(
            &trust,
            vec![ldap3::Mod::Replace(
                "userAccountControl",
                std::collections::HashSet::from(["4096"]),
            )],
        )
        .await
        .unwrap();
    assert_eq!(res.rc, 0, "{res:?}");
    let d = directory(admin_config(&dc));
    let e = refused(
        d.reset_password(&upn(&dc, "trusty"), &pw("Chosen-Passw0rd-1"), reset)
            .await,
        ReasonCode::ProtectedAccount,
    );
    assert!(
        matches!(
            e,
            DirectoryError::ProtectedAccount {
                by: ProtectedBy::TrustAccount,
                ..
            }
        ),
        "{e:?}"
    );
}
