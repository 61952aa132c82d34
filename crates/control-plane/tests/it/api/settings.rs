//! The tenant toggles: who may change them, and what switching writeback
//! off does to operations in flight and to new ones.

use writeback_control_plane::store::{ClientApp, Role};
use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;

use crate::harness::TestDb;
use crate::support::{self, Mode, Options, TestCp, reason_in_details, upn_ref};

async fn only_global_administrators_change_the_toggles(db: &TestDb) {
    let t = TestCp::start(db, Options::default()).await;
    let pa = t
        .token(
            "pa@contoso.test",
            Role::PasswordAdmin,
            ClientApp::Powershell,
        )
        .await;
    let user = t
        .token("eu@contoso.test", Role::User, ClientApp::Portal)
        .await;
    for token in [&pa, &user] {
        // `settings set --cloud-sync-writeback` is the
        // Set-AADCloudSyncPasswordWritebackConfiguration step.
        let (r, _) = support::ctl(
            &t,
            token,
            &["settings", "set", "--cloud-sync-writeback", "on"],
        )
        .await;
        let err = r.expect_err("refused");
        assert_eq!(err.reason(), Some(ReasonCode::PermissionDenied), "{err}");
        assert_eq!(err.exit_code(), std::process::ExitCode::from(1));
        let err = t
            .client(token)
            .settings()
            .update_settings(pb::UpdateSettingsRequest {
                sspr_writeback: Some(true),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(reason_in_details(&err), ReasonCode::PermissionDenied);
    }
    // A password administrator may read them; an end user may not.
    let (r, out) = support::ctl(&t, &pa, &["settings", "show"]).await;
    r.unwrap();
    assert!(out.contains("cloud-sync-writeback: off"), "{out}");
    let (r, _) = support::ctl(&t, &user, &["settings", "show"]).await;
    assert_eq!(r.unwrap_err().reason(), Some(ReasonCode::PermissionDenied));

    let (r, out) = support::ctl(
        &t,
        &t.admin_token,
        &[
            "settings",
            "set",
            "--cloud-sync-writeback",
            "on",
            "--sspr-writeback",
            "on",
        ],
    )
    .await;
    r.unwrap();
    assert!(out.contains("cloud-sync-writeback: on"), "{out}");
    assert!(out.contains("sspr-writeback: on"), "{out}");
    assert!(
        out.contains("unlock-without-reset: off"),
        "partial update: {out}"
    );
    let s = t
        .client(&pa)
        .settings()
        .get_settings(pb::GetSettingsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(s.cloud_sync_writeback && s.sspr_writeback && !s.unlock_without_reset);
}

async fn switching_writeback_off_stops_new_operations_at_once(db: &TestDb) {
    let t = support::ready(db, Options::default()).await;
    let admin = t.admin();
    let mut ops = t.admin().passwords();

    // Operation A is accepted, recorded as pending and dispatched; the
    // relay holds it (the agent is applying it).
    t.relay.set_mode(Mode::Hold);
    let a_id = uuid::Uuid::new_v4().to_string();
    let a = {
        let admin = admin.clone();
        let id = a_id.clone();
        tokio::spawn(async move {
            admin
                .reset_with_id("alice@contoso.test", "Before-Off-Passw0rd!1", &id)
                .await
        })
    };
    t.relay.wait_dispatched(1).await;
    let pending = admin
        .audit()
        .get_operation(pb::GetOperationRequest {
            operation_id: a_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.state, "pending", "recorded before dispatch");

    // Writeback off: every new operation is refused at once, while A is
    // still in flight (nothing waits behind it), and nothing more reaches
    // the relay.
    admin
        .settings()
        .update_settings(pb::UpdateSettingsRequest {
            cloud_sync_writeback: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    let portal_user = t
        .client_for("bob@contoso.test", Role::User, ClientApp::Portal)
        .await;
    assert_eq!(
        admin
            .reset("carol@contoso.test", "After-Off-Passw0rd!1")
            .await,
        Err(ReasonCode::WritebackDisabled)
    );
    assert_eq!(
        portal_user
            .reset("bob@contoso.test", "After-Off-Passw0rd!1")
            .await,
        Err(ReasonCode::WritebackDisabled)
    );
    let err = ops
        .unlock_account(pb::UnlockAccountRequest {
            user: Some(upn_ref("carol@contoso.test")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::WritebackDisabled);
    // Retrying A's operation id does not send it again either.
    assert_eq!(
        admin
            .reset_with_id("alice@contoso.test", "Before-Off-Passw0rd!1", &a_id)
            .await,
        Err(ReasonCode::WritebackDisabled)
    );
    assert_eq!(t.relay.dispatched_ids(), vec![a_id.clone()]);

    // A finishes with what the agent did before the switch, and its record
    // says so; the refused operations left no record.
    t.relay.release();
    assert_eq!(a.await.unwrap(), Ok(a_id.clone()));
    let done = admin
        .audit()
        .get_operation(pb::GetOperationRequest {
            operation_id: a_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, "succeeded");
    let audit = admin
        .audit()
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audit.records.len(), 1, "{:?}", audit.records);

    // Back on, operations flow again.
    admin.set_all_toggles(true).await;
    t.relay.set_mode(Mode::Answer(ReasonCode::Ok));
    assert!(
        admin
            .reset("carol@contoso.test", "On-Again-Passw0rd!1")
            .await
            .is_ok()
    );
    assert_eq!(t.relay.dispatched().len(), 2);
}

both_backends!(
    only_global_administrators_change_the_toggles,
    switching_writeback_off_stops_new_operations_at_once,
);
