//! A help desk, and an administrator by another name (issue 25, item 1),
//! against a real Samba DC through a real relay and agent: the own-account
//! and other-administrator rules judge the person a target names, not the
//! spelling. A password administrator who finds a global administrator with
//! the help desk's search and copies the objectGUID cannot reset, unlock or
//! read the policy of that account; an administrator cannot reset their own
//! account through the administrators' path by naming it by objectGUID; a
//! UPN that differs from an administrator's principal only in the case of a
//! non-ASCII letter names that administrator too. Ordinary users are still
//! reset by objectGUID. Every search the help desk makes is recorded in the
//! administrative trail with whom it showed (item 13).

use writeback_control_plane::store::{ClientApp, Role};
use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;
use writeback_testkit::stack::{Client, Stack};
use writeback_testkit::{SambaDc, burst};

use crate::harness::TestDb;

const START: &str = "Start-Pass-1!";

async fn guid_of(dc: &SambaDc, dn: &str) -> String {
    let entry = dc.read_entry(dn, &["objectGUID"]).await.unwrap();
    uuid::Uuid::from_slice_le(&entry.bin_attrs["objectGUID"][0])
        .unwrap()
        .to_string()
}

fn by_guid(guid: &str) -> Option<pb::UserRef> {
    Some(pb::UserRef {
        by: Some(pb::user_ref::By::ObjectGuid(guid.to_owned())),
    })
}

fn by_upn(upn: &str) -> Option<pb::UserRef> {
    Some(pb::UserRef {
        by: Some(pb::user_ref::By::Upn(upn.to_owned())),
    })
}

fn reason<T>(answer: Result<T, tonic::Status>) -> ReasonCode {
    match answer {
        Ok(_) => ReasonCode::Ok,
        Err(s) => writeback_core::failure_of(&s).reason,
    }
}

async fn reset(c: &Client, user: Option<pb::UserRef>, domain: &str, password: &str) -> ReasonCode {
    reason(
        c.passwords()
            .reset_password(c.request(pb::ResetPasswordRequest {
                user,
                domain: domain.to_owned(),
                new_password: password.to_owned(),
                ..Default::default()
            }))
            .await,
    )
}

async fn administrators_are_judged_by_whom_the_target_names(db: &TestDb) {
    let dc = burst::fault_dc("contoso.test").await;
    let domain = dc.domain().to_owned();
    // Writeback administrators whose directory accounts are ordinary users
    // (no adminCount, no protected group): only the control plane's rules
    // stand between a help desk and them.
    let carol_dn = dc.create_user("carol.admin", START).await.unwrap();
    let asa_dn = dc.create_user("åsa.admin", START).await.unwrap();
    let dave_dn = dc.create_user("dave", START).await.unwrap();
    let carol_guid = guid_of(&dc, &carol_dn).await;
    let dave_guid = guid_of(&dc, &dave_dn).await;
    let mut stack = Stack::start_with("t1", 1, Some(db.url().to_owned()))
        .await
        .unwrap();
    let helpdesk = stack.serve_domain(&dc).await.unwrap();
    let carol = stack
        .client(
            "carol.admin@contoso.test",
            Role::GlobalAdmin,
            ClientApp::Graph,
        )
        .await
        .unwrap();
    // Stored as `Åsa.admin@contoso.test` (principal names fold ASCII only).
    stack
        .client(
            "ÅSA.ADMIN@contoso.test",
            Role::PasswordAdmin,
            ClientApp::Portal,
        )
        .await
        .unwrap();
    let writes = |dn: String| {
        let dc = &dc;
        async move { dc.password_writes(&dn).await.unwrap() }
    };
    let (carol_before, asa_before, dave_before) = (
        writes(carol_dn.clone()).await,
        writes(asa_dn.clone()).await,
        writes(dave_dn.clone()).await,
    );

    // The help desk finds Carol and her objectGUID with its search.
    let found = helpdesk
        .directory()
        .search_users(helpdesk.request(pb::SearchUsersRequest {
            query: "carol".into(),
            domain: domain.clone(),
            limit: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    let shown = found
        .users
        .iter()
        .find(|u| u.upn == "carol.admin@contoso.test")
        .unwrap_or_else(|| panic!("carol not found: {found:?}"));
    assert_eq!(shown.object_guid, carol_guid);
    assert!(
        !shown.eligible,
        "an administrator is not eligible: {shown:?}"
    );
    assert_eq!(shown.ineligible_reason, "UNSUPPORTED_OPERATION");

    // By objectGUID, Carol is still another administrator: no reset, no
    // unlock, no reading her policy.
    assert_eq!(
        reset(&helpdesk, by_guid(&carol_guid), &domain, "Helpdesk-Took-1!").await,
        ReasonCode::UnsupportedOperation,
        "a password administrator reset a global administrator by objectGUID"
    );
    assert_eq!(
        reason(
            helpdesk
                .passwords()
                .unlock_account(helpdesk.request(pb::UnlockAccountRequest {
                    user: by_guid(&carol_guid),
                    domain: domain.clone(),
                    ..Default::default()
                }))
                .await
        ),
        ReasonCode::UnsupportedOperation
    );
    assert_eq!(
        reason(
            helpdesk
                .password_quality()
                .get_password_policy(helpdesk.request(pb::GetPasswordPolicyRequest {
                    user: by_guid(&carol_guid),
                    domain: domain.clone(),
                }))
                .await
        ),
        ReasonCode::UnsupportedOperation
    );
    // An upper-case GUID is the same person.
    assert_eq!(
        reset(
            &helpdesk,
            by_guid(&carol_guid.to_uppercase()),
            &domain,
            "Helpdesk-Took-2!"
        )
        .await,
        ReasonCode::UnsupportedOperation
    );

    // Carol's own account by objectGUID through the administrators' path
    // (Graph) is her own account: not the password reset tool's to reset.
    assert_eq!(
        reset(&carol, by_guid(&carol_guid), &domain, "Carol-Own-Pass-1!").await,
        ReasonCode::UnsupportedOperation,
        "an administrator reset their own account through the admin path by objectGUID"
    );

    // A UPN differing from an administrator's principal only in the case
    // of a non-ASCII letter names that administrator.
    assert_eq!(
        reset(
            &helpdesk,
            by_upn("åsa.admin@contoso.test"),
            "",
            "Helpdesk-Took-3!"
        )
        .await,
        ReasonCode::UnsupportedOperation,
        "a password administrator reset an administrator by a case variant of the UPN"
    );

    // Nothing was written to either administrator.
    assert_eq!(writes(carol_dn.clone()).await, carol_before);
    assert_eq!(writes(asa_dn.clone()).await, asa_before);
    assert!(dc.try_bind(&carol_dn, START).await.unwrap());
    assert!(dc.try_bind(&asa_dn, START).await.unwrap());

    // An ordinary user is still reset by objectGUID.
    assert_eq!(
        reset(&helpdesk, by_guid(&dave_guid), &domain, "Dave-New-Pass-1!").await,
        ReasonCode::Ok
    );
    assert_eq!(writes(dave_dn.clone()).await, dave_before + 1);
    assert!(dc.try_bind(&dave_dn, "Dave-New-Pass-1!").await.unwrap());
}

/// Every search is recorded in the administrative trail before it is
/// answered: who searched, for what, where, and each user shown with its
/// objectGUID and lockout state.
async fn every_search_is_recorded_with_whom_it_showed(db: &TestDb) {
    let dc = burst::fault_dc("contoso.test").await;
    let dn = dc.create_user("erin.search", START).await.unwrap();
    let guid = guid_of(&dc, &dn).await;
    let mut stack = Stack::start_with("t1", 1, Some(db.url().to_owned()))
        .await
        .unwrap();
    let helpdesk = stack.serve_domain(&dc).await.unwrap();
    let found = helpdesk
        .directory()
        .search_users(helpdesk.request(pb::SearchUsersRequest {
            query: "erin.s".into(),
            domain: String::new(),
            limit: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.users.len(), 1, "{found:?}");
    let admin = stack.admin().unwrap();
    let events = admin
        .audit()
        .list_admin_events(admin.request(pb::ListAdminEventsRequest {
            action: "directory.search".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 1, "one search, one record: {events:?}");
    let e = &events[0];
    assert_eq!(e.principal, "helpdesk@contoso.test");
    assert_eq!(e.client_app, "portal");
    let details: serde_json::Value = serde_json::from_str(&e.details_json).unwrap();
    assert_eq!(details["query"], "erin.s");
    assert_eq!(details["domains"], serde_json::json!(["contoso.test"]));
    assert_eq!(details["found"], 1);
    assert_eq!(details["users"][0]["upn"], "erin.search@contoso.test");
    assert_eq!(details["users"][0]["object_guid"], guid.as_str());
    assert_eq!(details["users"][0]["locked_out"], false);
}

both_backends!(
    administrators_are_judged_by_whom_the_target_names,
    every_search_is_recorded_with_whom_it_showed,
);
