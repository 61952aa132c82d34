//! The administrative audit trail: every administrative change through the
//! API is recorded with who made it, on what, and secret-free details; so
//! are the offline commands of `writeback-control-plane` (issue 25, item
//! 13), as the operating-system account that ran them.

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

/// The real binary's offline commands — `init`, `token`, `relay-cert`,
/// `signing-key rotate` and `promote` — each leave a row in the tenant's
/// administrative trail naming the account that ran it (`offline:<user>`,
/// client app `offline`), without the token they wrote; `relay-cert` for a
/// tenant the database does not have issues nothing.
async fn offline_commands_are_recorded(db: &TestDb) {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_writeback-control-plane"))
            .env("WRITEBACK_CP_DATA_DIR", &data)
            .env("WRITEBACK_CP_DATABASE_URL", db.url())
            .env("USER", "opal")
            .env_remove("SUDO_USER")
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let admin_file = dir.path().join("admin.token");
    let user_file = dir.path().join("user.token");
    let relay_dir = dir.path().join("relay");
    let admin_path = admin_file.to_str().unwrap();
    ok(&[
        "init",
        "--tenant",
        "t1",
        "--admin",
        "root@contoso.test",
        "--token-file",
        admin_path,
    ]);
    ok(&[
        "token",
        "--tenant",
        "t1",
        "--principal",
        "ghost@contoso.test",
        "--role",
        "global_admin",
        "--client-app",
        "graph",
        "--token-file",
        user_file.to_str().unwrap(),
    ]);
    ok(&[
        "relay-cert",
        "--tenant",
        "t1",
        "--relay-id",
        "relay-7",
        "--dns",
        "relay.test",
        "--out-dir",
        relay_dir.to_str().unwrap(),
    ]);
    ok(&["signing-key", "rotate"]);
    ok(&["signing-key", "promote"]);
    // No tenant, no certificate.
    let other = dir.path().join("other");
    let out = run(&[
        "relay-cert",
        "--tenant",
        "nobody",
        "--out-dir",
        other.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("init"));
    assert!(!other.join("relay.pem").exists());

    let store = db.store().await;
    let (events, _) = store
        .list_admin_events("t1", writeback_control_plane::store::Page::first(100))
        .await
        .unwrap();
    // Rows of one millisecond have no order among themselves: compare sets.
    let mut trail: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.action.as_str(), e.object.as_str()))
        .collect();
    trail.sort_unstable();
    let actions: Vec<&str> = trail.iter().map(|(a, _)| *a).collect();
    assert_eq!(
        actions,
        [
            "relay.issue_certificate",
            "signing_key.promote",
            "signing_key.rotate",
            "tenant.init",
            "token.create",
            "token.create",
        ],
        "{trail:?}"
    );
    assert!(trail.contains(&("relay.issue_certificate", "relay:relay-7")));
    assert!(trail.contains(&("tenant.init", "tenant:t1")));
    let event = |action: &str, principal: &str| {
        events
            .iter()
            .find(|e| e.action == action && e.details["principal"] == principal)
            .unwrap_or_else(|| panic!("no {action} for {principal}: {events:?}"))
    };
    assert_eq!(
        event("token.create", "ghost@contoso.test").details["role"],
        "global_admin"
    );
    assert_eq!(
        event("token.create", "root@contoso.test").details["role"],
        "global_admin"
    );
    let tokens = [
        std::fs::read_to_string(&admin_file).unwrap(),
        std::fs::read_to_string(&user_file).unwrap(),
    ];
    for e in &events {
        assert_eq!(e.principal, "offline:opal", "{e:?}");
        assert_eq!(e.client_app, "offline", "{e:?}");
        let details = e.details.to_string();
        for t in &tokens {
            assert!(!details.contains(&t.trim()[5..]), "a token in {e:?}");
        }
    }
    let init = events.iter().find(|e| e.action == "tenant.init").unwrap();
    assert_eq!(init.details["created_ca"], true);
}

both_backends!(
    every_administrative_change_is_recorded,
    offline_commands_are_recorded
);
