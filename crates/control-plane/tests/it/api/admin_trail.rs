//! The administrative audit trail: every administrative change through the
//! API is recorded with who made it, on what, and secret-free details.

use writeback_control_plane::store::{ClientApp, Role};
use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;

use crate::harness::TestDb;
use crate::support::{ADMIN, Options, TestCp, reason_in_details};

async fn every_administrative_change_is_recorded(db: &TestDb) {
    let t = TestCp::start(db, Options::default()).await;
    let admin = t.admin();
    admin.set_all_toggles(true).await;
    admin.add_domain("contoso.test").await;
    let enrollment = admin
        .agents()
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            domain: "contoso.test".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let minted = admin
        .tokens()
        .create_token(pb::CreateTokenRequest {
            principal: "helpdesk@contoso.test".into(),
            role: pb::Role::PasswordAdmin as i32,
            client_app: pb::ClientApp::Portal as i32,
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let token_id = minted.info.unwrap().token_id;
    admin
        .tokens()
        .revoke_token(pb::RevokeTokenRequest {
            token_id: token_id.clone(),
        })
        .await
        .unwrap();

    let events = admin
        .audit()
        .list_admin_events(pb::ListAdminEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let trail: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.action.as_str(), e.object.as_str()))
        .collect();
    let token_object = format!("token:{token_id}");
    assert_eq!(
        trail,
        [
            ("token.revoke", token_object.as_str()),
            ("token.create", token_object.as_str()),
            ("enrollment_token.create", "domain:contoso.test"),
            ("domain.add", "domain:contoso.test"),
            ("settings.update", "settings"),
        ],
        "newest first"
    );
    for e in &events {
        assert_eq!(e.principal, ADMIN);
        assert_eq!(e.client_app, "portal");
        // No secret: neither the enrollment token nor the minted token.
        assert!(!e.details_json.contains(&enrollment.token), "{e:?}");
        assert!(!e.details_json.contains(&minted.token), "{e:?}");
    }
    assert!(events[1].details_json.contains("password_admin"));
    // A change says old → new.
    let settings = events.last().unwrap();
    assert_eq!(settings.action, "settings.update");
    for toggle in [
        "cloud_sync_writeback",
        "sspr_writeback",
        "unlock_without_reset",
    ] {
        assert!(
            settings
                .details_json
                .contains(&format!(r#""{toggle}":{{"new":true,"old":false}}"#)),
            "{}",
            settings.details_json
        );
    }

    // Administrators read it; end users do not.
    let user = t
        .client(
            &t.token("eu@contoso.test", Role::User, ClientApp::Portal)
                .await,
        )
        .audit()
        .list_admin_events(pb::ListAdminEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&user), ReasonCode::PermissionDenied);
}

both_backends!(every_administrative_change_is_recorded);
