//! Bearer tokens: `init` writes the first global administrator's token to
//! a 0600 file and never prints it; tokens are minted, listed, expire and
//! are revoked through the TokenService (and `writebackctl token`).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use writeback_control_plane::store::{ClientApp, Role};
use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;

use crate::harness::TestDb;
use crate::support::{self, Options, TestCp, reason_in_details};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_the_admin_token_0600_and_never_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token_file = dir.path().join("admin.token");
    let init = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_writeback-control-plane"))
            .env("WRITEBACK_CP_DATA_DIR", &data)
            .env("WRITEBACK_LOG", "debug")
            .args(["init", "--tenant", "t9", "--admin", "Admin@Contoso.test"])
            .arg("--token-file")
            .arg(&token_file)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let out = init(&[]);
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();
    assert!(token.starts_with("wbt1.") && token.len() > 40, "{token}");
    assert_eq!(mode(&token_file), 0o600);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!printed.contains(&token[5..]), "init printed the token");
    assert!(
        printed.contains(&token_file.display().to_string()),
        "{printed}"
    );
    assert_eq!(mode(&data.join("ca.key")), 0o600);

    // Run again over a token file someone made world-readable: the new
    // token still lands in a 0600 file.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = init(&[]);
    let second = std::fs::read_to_string(&token_file).unwrap();
    assert_ne!(second.trim(), token);
    assert_eq!(mode(&token_file), 0o600);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&second.trim()[5..]));

    // The offline `token` command behaves the same, with an expiry.
    let user_file = dir.path().join("user.token");
    let out = Command::new(env!("CARGO_BIN_EXE_writeback-control-plane"))
        .env("WRITEBACK_CP_DATA_DIR", &data)
        .args(["token", "--tenant", "t9", "--principal", "bob@contoso.test"])
        .args([
            "--role",
            "user",
            "--client-app",
            "graph",
            "--ttl-seconds",
            "60",
        ])
        .arg("--token-file")
        .arg(&user_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user = std::fs::read_to_string(&user_file).unwrap();
    assert_eq!(mode(&user_file), 0o600);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&user.trim()[5..]));
}

async fn tokens_are_minted_expire_and_are_revoked_through_the_api(db: &TestDb) {
    let t = TestCp::start(db, Options::default()).await;
    let admin = t.admin();

    // Minted by a global administrator, for a new principal.
    let created = admin
        .tokens()
        .create_token(pb::CreateTokenRequest {
            principal: " HelpDesk@Contoso.test ".into(),
            role: pb::Role::PasswordAdmin as i32,
            client_app: pb::ClientApp::Graph as i32,
            ttl_seconds: 600,
        })
        .await
        .unwrap()
        .into_inner();
    let info = created.info.clone().unwrap();
    assert_eq!(info.principal, "helpdesk@contoso.test");
    assert_eq!(info.role, pb::Role::PasswordAdmin as i32);
    assert_eq!(info.client_app, pb::ClientApp::Graph as i32);
    assert!(info.expires_at.is_some() && info.revoked_at.is_none());
    let helpdesk = t.client(&created.token);
    helpdesk
        .domains()
        .list_domains(pb::ListDomainsRequest::default())
        .await
        .expect("the new token works");
    // WhoAmI: any caller learns who their token names.
    let me = helpdesk
        .tokens()
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.principal, "helpdesk@contoso.test");
    assert_eq!(me.role, pb::Role::PasswordAdmin as i32);
    assert_eq!(me.client_app, pb::ClientApp::Graph as i32);
    assert_eq!(me.sign_in, "api_token");

    // Only global administrators mint and list tokens.
    let err = helpdesk
        .tokens()
        .create_token(pb::CreateTokenRequest {
            principal: "x@contoso.test".into(),
            role: pb::Role::User as i32,
            client_app: pb::ClientApp::Portal as i32,
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::PermissionDenied);
    let err = helpdesk
        .tokens()
        .list_tokens(pb::ListTokensRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::PermissionDenied);
    // A principal keeps its role; a mismatching role or a missing field is refused.
    for (principal, role, app, want) in [
        (
            "helpdesk@contoso.test",
            pb::Role::User,
            pb::ClientApp::Portal,
            ReasonCode::AlreadyExists,
        ),
        (
            "y@contoso.test",
            pb::Role::Unspecified,
            pb::ClientApp::Portal,
            ReasonCode::InvalidArgument,
        ),
        (
            "y@contoso.test",
            pb::Role::User,
            pb::ClientApp::Unspecified,
            ReasonCode::InvalidArgument,
        ),
        (
            "",
            pb::Role::User,
            pb::ClientApp::Portal,
            ReasonCode::InvalidArgument,
        ),
        (
            "two words@contoso.test",
            pb::Role::User,
            pb::ClientApp::Portal,
            ReasonCode::InvalidArgument,
        ),
    ] {
        let err = admin
            .tokens()
            .create_token(pb::CreateTokenRequest {
                principal: principal.into(),
                role: role as i32,
                client_app: app as i32,
                ttl_seconds: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(
            reason_in_details(&err),
            want,
            "{principal} {role:?} {app:?}"
        );
    }

    // Expiry: ten minutes later the token no longer authenticates.
    t.clock.advance(Duration::from_secs(601));
    let err = helpdesk
        .domains()
        .list_domains(pb::ListDomainsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::Unauthenticated);

    // Revocation by a global administrator takes effect at once.
    let never = admin
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
    assert!(never.info.as_ref().unwrap().expires_at.is_none());
    let helpdesk = t.client(&never.token);
    helpdesk
        .settings()
        .get_settings(pb::GetSettingsRequest {})
        .await
        .unwrap();
    // …but a non-global administrator cannot revoke someone else's token
    // (nor learn that it exists).
    let err = helpdesk
        .tokens()
        .revoke_token(pb::RevokeTokenRequest {
            token_id: admin_token_id(&t).await,
        })
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::NotFound);
    let revoked = admin
        .tokens()
        .revoke_token(pb::RevokeTokenRequest {
            token_id: never.info.as_ref().unwrap().token_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_at.is_some());
    let err = helpdesk
        .settings()
        .get_settings(pb::GetSettingsRequest {})
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::Unauthenticated);

    // Anyone may revoke the token they call with (sign out).
    let bob = t
        .client_for("bob@contoso.test", Role::User, ClientApp::Portal)
        .await;
    bob.tokens()
        .revoke_token(pb::RevokeTokenRequest::default())
        .await
        .unwrap();
    let err = bob
        .tokens()
        .revoke_token(pb::RevokeTokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::Unauthenticated);

    // The list shows metadata, never a token, in pages.
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .tokens()
            .list_tokens(pb::ListTokensRequest {
                principal: String::new(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.tokens);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // admin (init), helpdesk ×2, bob.
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(!format!("{all:?}").contains(&created.token[5..]));
    let helpdesk_tokens = admin
        .tokens()
        .list_tokens(pb::ListTokensRequest {
            principal: "HELPDESK@contoso.test".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(helpdesk_tokens.len(), 2);
    assert_eq!(
        helpdesk_tokens
            .iter()
            .filter(|t| t.revoked_at.is_some())
            .count(),
        1
    );
}

async fn admin_token_id(t: &TestCp) -> String {
    t.admin()
        .tokens()
        .list_tokens(pb::ListTokensRequest {
            principal: support::ADMIN.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tokens[0]
        .token_id
        .clone()
}

async fn writebackctl_mints_lists_and_revokes_tokens(db: &TestDb) {
    let t = TestCp::start(db, Options::default()).await;
    let out_file = t.dir.path().join("portal.token");
    // Even over an existing world-readable file.
    std::fs::write(&out_file, "old").unwrap();
    std::fs::set_permissions(&out_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (r, out) = support::ctl(
        &t,
        &t.admin_token,
        &[
            "token",
            "create",
            "--principal",
            "alice@contoso.test",
            "--role",
            "user",
            "--client-app",
            "portal",
            "--ttl-seconds",
            "3600",
            "--out",
            &out_file.display().to_string(),
        ],
    )
    .await;
    r.unwrap();
    let token = std::fs::read_to_string(&out_file).unwrap();
    let token = token.trim();
    assert!(token.starts_with("wbt1."));
    assert_eq!(mode(&out_file), 0o600);
    assert!(!out.contains(&token[5..]), "printed the token: {out}");
    let id = out.split_whitespace().nth(1).unwrap().to_owned();

    let (r, out) = support::ctl(&t, &t.admin_token, &["token", "list"]).await;
    r.unwrap();
    assert!(
        out.contains(&id) && out.contains("alice@contoso.test\tuser\tportal"),
        "{out}"
    );
    assert!(!out.contains(&token[5..]));

    // Alice may revoke her own token; from then on it does not work.
    let (r, out) = support::ctl(&t, token, &["token", "revoke", &id]).await;
    r.unwrap();
    assert!(
        out.contains(&format!("revoked token {id} of alice@contoso.test")),
        "{out}"
    );
    let (r, _) = support::ctl(&t, token, &["token", "revoke"]).await;
    assert_eq!(r.unwrap_err().reason(), Some(ReasonCode::Unauthenticated));
    let (r, out) = support::ctl(
        &t,
        &t.admin_token,
        &["token", "list", "--principal", "alice@contoso.test"],
    )
    .await;
    r.unwrap();
    assert!(out.contains("\trevoked "), "{out}");
}

/// `agent enroll-token --out FILE` puts the one-time token in a new file
/// only its owner can read, not on standard output; it replaces an existing
/// file only with `--force` (and makes it 0600); without `--out` it prints
/// the token only to a terminal, or when `--stdout` says so.
async fn an_enrollment_token_goes_to_a_private_file(db: &TestDb) {
    let t = support::ready(db, Options::default()).await;
    let enroll_token = |extra: &[&str]| {
        let mut args = vec!["agent", "enroll-token", "--domain", "contoso.test"];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        let t = &t;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            support::ctl(t, &t.admin_token, &args).await
        }
    };
    let file = t.dir.path().join("enroll.token");
    let path = file.display().to_string();
    let (r, out) = enroll_token(&["--out", &path]).await;
    r.unwrap();
    let token = std::fs::read_to_string(&file).unwrap();
    let token = token.trim().to_owned();
    assert!(token.starts_with("wbe1."), "{token:?}");
    assert!(
        !out.contains(&token),
        "the token reached standard output: {out}"
    );
    assert!(out.contains("written to"), "{out}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // An existing file (here world-readable) is not replaced without --force.
    std::fs::write(&file, "old").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (r, _) = enroll_token(&["--out", &path]).await;
    let e = r.unwrap_err().to_string();
    assert!(e.contains("exists; give --force"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "old");
    let (r, _) = enroll_token(&["--out", &path, "--force"]).await;
    r.unwrap();
    let replaced = std::fs::read_to_string(&file).unwrap();
    assert!(replaced.starts_with("wbe1.") && replaced.trim() != token);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Standard output that is not a terminal: refused before any token is
    // made (the administrative trail counts the tokens made), unless
    // --stdout.
    let made = || async {
        t.admin()
            .audit()
            .list_admin_events(pb::ListAdminEventsRequest {
                action: "enrollment_token.create".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events
            .len()
    };
    let before = made().await;
    let (r, out) = enroll_token(&[]).await;
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("not a terminal") && e.contains("--out FILE"),
        "{e}"
    );
    assert!(out.is_empty(), "{out}");
    assert_eq!(made().await, before);
    let (r, out) = enroll_token(&["--stdout"]).await;
    r.unwrap();
    assert!(out.starts_with("wbe1."), "{out}");
    assert_eq!(made().await, before + 1);
}

both_backends!(
    tokens_are_minted_expire_and_are_revoked_through_the_api,
    writebackctl_mints_lists_and_revokes_tokens,
    an_enrollment_token_goes_to_a_private_file,
);
