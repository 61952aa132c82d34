//! Sign-in through a real OpenID provider: glewlwyd, started by the harness
//! over HTTPS, issues real RS256 JWT access tokens through its real token
//! endpoint (password grant, authorization code after password + HOTP, client
//! credentials). The control plane trusts it as the tenant's issuer, and the
//! seed's scenarios run with those tokens in two forests, every result proven
//! in the directory; then every way a token is refused, each with its reason.

use serde_json::Value;
use writeback_core::{ReasonCode, failure_of};
use writeback_proto::v1 as pb;
use writeback_testkit::SambaDc;
use writeback_testkit::oidc::{AUDIENCE, MFA_SCOPE, OidcProvider};
use writeback_testkit::stack::{Client, Stack};

const DOMAINS: [&str; 2] = ["contoso.test", "fabrikam.test"];
const START: &str = "Start-Passw0rd!1";
const IDP_PASSWORD: &str = "Idp-Passw0rd!9";
const PORTAL: (&str, &str) = ("wb-portal", "portal-client-secret-1");
const GRAPH: (&str, &str) = ("wb-graph", "graph-client-secret-1");
const ROGUE: (&str, &str) = ("wb-rogue", "rogue-client-secret-1");
const HELPDESK_GROUP: &str = "writeback-password-admins";

struct World {
    dcs: Vec<SambaDc>,
    idp: OidcProvider,
    stack: Stack,
    _ca_dir: tempfile::TempDir,
}

/// The provider's name for `user` of `dc`.
fn idp_name(user: &str, dc: &SambaDc) -> String {
    format!("{user}-{}", dc.netbios().to_ascii_lowercase())
}

fn upn(user: &str, dc: &SambaDc) -> String {
    format!("{user}@{}", dc.domain())
}

fn user_ref(user: &str, dc: &SambaDc) -> pb::UserRef {
    pb::UserRef {
        by: Some(pb::user_ref::By::Upn(upn(user, dc))),
    }
}

/// The issuer configuration the tests trust glewlwyd with: principal from
/// `upn`, the help-desk group maps to password administrator, everyone else
/// is a user, and a self-service reset needs the scope glewlwyd grants only
/// after password + HOTP.
fn issuer(idp: &OidcProvider) -> pb::Issuer {
    pb::Issuer {
        issuer_id: "glewlwyd".into(),
        issuer_url: idp.issuer().to_owned(),
        audiences: vec![AUDIENCE.into()],
        algorithms: vec!["RS256".into()],
        principal_claim: "upn".into(),
        subject_claim: "sub".into(),
        role_claim: "groups".into(),
        role_mappings: vec![pb::RoleMapping {
            value: HELPDESK_GROUP.into(),
            role: pb::Role::PasswordAdmin as i32,
        }],
        default_role: pb::Role::User as i32,
        clock_skew_seconds: Some(5),
        strong_auth: Some(pb::StrongAuthPolicy {
            scope_any: vec![MFA_SCOPE.into()],
            ..Default::default()
        }),
        updated_at: None,
    }
}

async fn put_issuer(admin: &Client, issuer: pb::Issuer) -> Result<pb::Issuer, tonic::Status> {
    admin
        .identity_providers()
        .put_issuer(admin.request(pb::PutIssuerRequest {
            issuer: Some(issuer),
        }))
        .await
        .map(tonic::Response::into_inner)
}

async fn put_client(admin: &Client, client_id: &str, app: pb::ClientApp, role: pb::Role) {
    admin
        .identity_providers()
        .put_client(admin.request(pb::PutClientRequest {
            client: Some(pb::OidcClient {
                issuer_id: "glewlwyd".into(),
                client_id: client_id.into(),
                client_app: app as i32,
                application_role: role as i32,
                updated_at: None,
            }),
        }))
        .await
        .unwrap();
}

/// Samba DCs for `domains`, glewlwyd with alice (a user) and carol (help
/// desk) per domain and three clients, and a stack trusting it.
async fn world(domains: &[&str]) -> World {
    writeback_identity::install_crypto_provider();
    writeback_core::telemetry::init();
    let dcs = futures_join(domains).await;
    let idp = OidcProvider::start()
        .await
        .expect("glewlwyd (scripts/install-deps.sh)");
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("idp-ca.pem");
    std::fs::write(&ca_file, idp.ca_pem()).unwrap();
    let mut stack = Stack::start_configured("t1", 1, None, |c| {
        c.oidc.ca_file = Some(ca_file.clone());
        // Rotation is noticed by the first token with the new key id.
        c.oidc.jwks_min_refetch_seconds = 0;
    })
    .await
    .unwrap();
    for dc in &dcs {
        dc.set_password_settings(&["--min-pwd-age=0", "--account-lockout-threshold=3"])
            .await
            .unwrap();
        for (user, groups) in [("alice", vec![]), ("carol", vec![HELPDESK_GROUP])] {
            dc.create_user(user, START).await.unwrap();
            idp.add_user(&idp_name(user, dc), IDP_PASSWORD, &upn(user, dc), &groups)
                .await
                .unwrap();
        }
        stack.add_domain(dc).await.unwrap();
        stack
            .start_agent(dc, &dc.admin_dn(), dc.admin_password())
            .await
            .unwrap();
    }
    for (id, secret) in [PORTAL, GRAPH, ROGUE] {
        idp.add_client(id, secret).await.unwrap();
    }
    let admin = stack.admin().unwrap();
    put_issuer(&admin, issuer(&idp)).await.unwrap();
    put_client(
        &admin,
        PORTAL.0,
        pb::ClientApp::Portal,
        pb::Role::Unspecified,
    )
    .await;
    put_client(
        &admin,
        GRAPH.0,
        pb::ClientApp::Graph,
        pb::Role::PasswordAdmin,
    )
    .await;
    World {
        dcs,
        idp,
        stack,
        _ca_dir: ca_dir,
    }
}

async fn futures_join(domains: &[&str]) -> Vec<SambaDc> {
    let mut started = Vec::new();
    let handles: Vec<_> = domains
        .iter()
        .map(|d| {
            let d = (*d).to_owned();
            tokio::spawn(async move { SambaDc::start(&d).await })
        })
        .collect();
    for h in handles {
        started.push(
            h.await
                .unwrap()
                .expect("samba DC (scripts/install-deps.sh)"),
        );
    }
    started
}

impl World {
    async fn password_token(&self, user: &str, dc: &SambaDc) -> String {
        self.idp
            .password_token(PORTAL.0, PORTAL.1, &idp_name(user, dc), IDP_PASSWORD)
            .await
            .unwrap()
    }

    async fn mfa_token(&self, user: &str, dc: &SambaDc) -> String {
        self.idp
            .mfa_token(PORTAL.0, PORTAL.1, &idp_name(user, dc), IDP_PASSWORD)
            .await
            .unwrap()
    }

    fn client(&self, token: &str) -> Client {
        self.stack.client_with_token(token).unwrap()
    }
}

async fn reset(
    c: &Client,
    user: pb::UserRef,
    password: &str,
) -> Result<pb::OperationResponse, tonic::Status> {
    c.passwords()
        .reset_password(c.request(pb::ResetPasswordRequest {
            user: Some(user),
            new_password: password.into(),
            ..Default::default()
        }))
        .await
        .map(tonic::Response::into_inner)
}

async fn unlock(c: &Client, user: pb::UserRef) -> Result<pb::OperationResponse, tonic::Status> {
    c.passwords()
        .unlock_account(c.request(pb::UnlockAccountRequest {
            user: Some(user),
            ..Default::default()
        }))
        .await
        .map(tonic::Response::into_inner)
}

fn reason<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (ReasonCode, String) {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(s) => {
            let f = failure_of(&s);
            (f.reason, f.message)
        }
    }
}

async fn record(admin: &Client, id: &str) -> pb::OperationRecord {
    admin
        .audit()
        .get_operation(admin.request(pb::GetOperationRequest {
            operation_id: id.into(),
        }))
        .await
        .unwrap()
        .into_inner()
}

async fn binds(dc: &SambaDc, user: &str, password: &str) -> bool {
    dc.try_bind(&upn(user, dc), password).await.unwrap()
}

async fn lockout_time(dc: &SambaDc, user: &str) -> i64 {
    let dn = format!("CN={user},CN=Users,{}", dc.base_dn());
    let attrs = dc.read_attrs(&dn, &["lockoutTime"]).await.unwrap();
    attrs
        .get("lockoutTime")
        .and_then(|v| v.first())
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn real_provider_tokens_drive_the_seeds_scenarios_in_both_forests() {
    let w = world(&DOMAINS).await;
    let admin = w.stack.admin().unwrap();
    for dc in &w.dcs {
        // A password-only sign-in cannot reset without the old password.
        let weak = w.client(&w.password_token("alice", dc).await);
        let (code, message) = reason(reset(&weak, user_ref("alice", dc), "Weak-Sign1n!x").await);
        assert_eq!(code, ReasonCode::StrongAuthenticationRequired, "{message}");
        assert!(message.contains(MFA_SCOPE), "{message}");
        assert!(binds(dc, "alice", START).await, "nothing was written");

        // After password + HOTP it can (SSPR from the portal).
        let strong = w.client(&w.mfa_token("alice", dc).await);
        let sspr = reset(&strong, user_ref("alice", dc), "Sspr-Passw0rd!2")
            .await
            .unwrap();
        assert!(binds(dc, "alice", "Sspr-Passw0rd!2").await);
        assert!(!binds(dc, "alice", START).await);
        let r = record(&admin, &sspr.operation_id).await;
        assert_eq!(r.principal, upn("alice", dc));
        assert_eq!(r.client_app, pb::ClientApp::Portal as i32);

        // A change proves the old password: a password-only sign-in will do.
        weak.passwords()
            .change_password(weak.request(pb::ChangePasswordRequest {
                user: Some(user_ref("alice", dc)),
                old_password: "Sspr-Passw0rd!2".into(),
                new_password: "Change-Horizon!3".into(),
                ..Default::default()
            }))
            .await
            .unwrap();
        assert!(binds(dc, "alice", "Change-Horizon!3").await);

        // carol's group makes her a password administrator: she resets alice
        // from the portal.
        let carol = w.client(&w.password_token("carol", dc).await);
        reset(&carol, user_ref("alice", dc), "Helpdesk-Passw0rd!4")
            .await
            .unwrap();
        assert!(binds(dc, "alice", "Helpdesk-Passw0rd!4").await);
        // ...and, having signed in as an administrator, is protected from
        // other administrators' resets from then on.
        let graph_token = w
            .idp
            .client_credentials_token(GRAPH.0, GRAPH.1)
            .await
            .unwrap();
        let graph = w.client(&graph_token);
        let (code, _) = reason(reset(&graph, user_ref("carol", dc), "Nope-Passw0rd!5").await);
        assert_eq!(code, ReasonCode::UnsupportedOperation);

        // The Graph-style application resets alice with its own role.
        let by_app = reset(&graph, user_ref("alice", dc), "Graph-Passw0rd!6")
            .await
            .unwrap();
        assert!(binds(dc, "alice", "Graph-Passw0rd!6").await);
        let r = record(&admin, &by_app.operation_id).await;
        assert_eq!(r.principal, format!("app:{}", GRAPH.0));
        assert_eq!(r.client_app, pb::ClientApp::Graph as i32);

        // Self-service unlock needs the strong sign-in too.
        for _ in 0..4 {
            let _ = dc.try_bind(&upn("alice", dc), "Wrong-Passw0rd!").await;
        }
        assert_ne!(lockout_time(dc, "alice").await, 0, "alice is locked out");
        let (code, _) = reason(unlock(&weak, user_ref("alice", dc)).await);
        assert_eq!(code, ReasonCode::StrongAuthenticationRequired);
        assert_ne!(lockout_time(dc, "alice").await, 0, "still locked");
        unlock(&strong, user_ref("alice", dc)).await.unwrap();
        assert_eq!(lockout_time(dc, "alice").await, 0);
        assert!(binds(dc, "alice", "Graph-Passw0rd!6").await);

        // An end user's token cannot reset someone else.
        let (code, _) = reason(reset(&weak, user_ref("carol", dc), "Nope-Passw0rd!7").await);
        assert_eq!(code, ReasonCode::PermissionDenied);
    }

    // The configuration is in the administrative audit trail.
    let events = admin
        .audit()
        .list_admin_events(admin.request(pb::ListAdminEventsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.action.as_str(), e.object.as_str()))
        .collect();
    assert!(
        actions.contains(&("issuer.put", "issuer:glewlwyd")),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("client.put", "client:glewlwyd/wb-graph")),
        "{actions:?}"
    );
    let issuer_event = events.iter().find(|e| e.action == "issuer.put").unwrap();
    assert_eq!(issuer_event.principal, "admin@writeback.test");
    let details: Value = serde_json::from_str(&issuer_event.details_json).unwrap();
    assert_eq!(details["issuer_url"], w.idp.issuer());
}

/// Re-signs nothing: swaps a token's header for `{"alg":"none"}` and drops
/// the signature.
fn unsigned(token: &str) -> String {
    use base64::Engine as _;
    let header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = token.split('.').nth(1).unwrap();
    format!("{header}.{payload}.")
}

/// Flips one character of the signature.
fn bad_signature(token: &str) -> String {
    let (rest, sig) = token.rsplit_once('.').unwrap();
    let mut sig: Vec<char> = sig.chars().collect();
    let i = sig.len() / 2;
    sig[i] = if sig[i] == 'A' { 'B' } else { 'A' };
    format!("{rest}.{}", sig.into_iter().collect::<String>())
}

/// Runs writebackctl against the stack (as the global administrator unless
/// `token_file` names another token) with `stdin`; its output.
pub(crate) async fn ctl(
    stack: &Stack,
    token_file: Option<&std::path::Path>,
    args: &[&str],
    stdin: &str,
) -> Result<String, writeback_cli::CliError> {
    use clap::Parser as _;
    let ca_file = stack.dir.path().join("cp").join("ca.pem");
    let token_file = token_file.unwrap_or(&stack.admin_token_file);
    let mut argv = vec![
        "writebackctl".to_owned(),
        "--control-plane".to_owned(),
        stack.cp_url.clone(),
        "--ca-file".to_owned(),
        ca_file.display().to_string(),
        "--token-file".to_owned(),
        token_file.display().to_string(),
    ];
    argv.extend(args.iter().map(|s| (*s).to_owned()));
    let mut out = Vec::new();
    writeback_cli::run(
        writeback_cli::Cli::parse_from(argv),
        &mut stdin.as_bytes(),
        &mut out,
    )
    .await?;
    Ok(String::from_utf8(out).unwrap())
}

/// An SSPR reset of alice with `token`.
async fn attempt(
    stack: &Stack,
    dc: &SambaDc,
    token: String,
) -> Result<pb::OperationResponse, tonic::Status> {
    let c = stack.client_with_token(&token).unwrap();
    reset(&c, user_ref("alice", dc), "Never-Passw0rd!1").await
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_refused_with_their_reason() {
    let mut w = world(&DOMAINS[..1]).await;
    let dc = &w.dcs[0];
    let admin = w.stack.admin().unwrap();
    let token = w.mfa_token("alice", dc).await;

    // alg none, and a signature that does not verify.
    let (code, message) = reason(attempt(&w.stack, dc, unsigned(&token)).await);
    assert_eq!(code, ReasonCode::Unauthenticated);
    assert!(message.contains("not signed"), "{message}");
    let (code, message) = reason(attempt(&w.stack, dc, bad_signature(&token)).await);
    assert_eq!(code, ReasonCode::Unauthenticated);
    assert!(message.contains("signature"), "{message}");

    // An expired token: the provider issues two-second tokens for a moment;
    // the issuer tolerates 5 s of skew.
    w.idp.set_access_token_duration(2).await.unwrap();
    let short = w.mfa_token("alice", dc).await;
    w.idp.set_access_token_duration(3600).await.unwrap();
    attempt(&w.stack, dc, short.clone())
        .await
        .expect("a fresh short-lived token is accepted");
    assert!(binds(dc, "alice", "Never-Passw0rd!1").await);
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let (code, message) = reason(attempt(&w.stack, dc, short).await);
    assert_eq!(code, ReasonCode::TokenExpired, "{message}");

    // A client the provider knows but writeback does not.
    let rogue = w
        .idp
        .password_token(ROGUE.0, ROGUE.1, &idp_name("alice", dc), IDP_PASSWORD)
        .await
        .unwrap();
    let (code, message) = reason(attempt(&w.stack, dc, rogue).await);
    assert_eq!(code, ReasonCode::ClientNotRegistered, "{message}");
    assert!(message.contains(ROGUE.0), "{message}");

    // Wrong audience: the issuer now expects another one.
    let mut other_audience = issuer(&w.idp);
    other_audience.audiences = vec!["https://someone-else.test".into()];
    put_issuer(&admin, other_audience).await.unwrap();
    let (code, message) = reason(attempt(&w.stack, dc, token.clone()).await);
    assert_eq!(code, ReasonCode::Unauthenticated);
    assert!(message.contains("audience"), "{message}");

    // Unmapped principal: no default role, and alice is in no mapped group.
    let mut strict = issuer(&w.idp);
    strict.default_role = pb::Role::Unspecified as i32;
    put_issuer(&admin, strict).await.unwrap();
    let (code, _) = reason(attempt(&w.stack, dc, token.clone()).await);
    assert_eq!(code, ReasonCode::PrincipalNotMapped);

    // Back to the working configuration, through writebackctl this time:
    // the same token is accepted.
    let printed = ctl(
        &w.stack,
        None,
        &[
            "idp",
            "issuer",
            "add",
            "--id",
            "glewlwyd",
            "--url",
            w.idp.issuer(),
            "--audience",
            AUDIENCE,
            "--algorithm",
            "RS256",
            "--principal-claim",
            "upn",
            "--role-claim",
            "groups",
            "--map",
            &format!("{HELPDESK_GROUP}=password_admin"),
            "--default-role",
            "user",
            "--clock-skew-seconds",
            "5",
            "--strong-scope",
            MFA_SCOPE,
        ],
        "",
    )
    .await
    .unwrap();
    assert!(
        printed.contains(&format!("{HELPDESK_GROUP} -> password_admin")),
        "{printed}"
    );
    let ok = attempt(&w.stack, dc, token.clone()).await.unwrap();
    assert!(binds(dc, "alice", "Never-Passw0rd!1").await, "{ok:?}");
    let listed = ctl(&w.stack, None, &["idp", "client", "list"], "")
        .await
        .unwrap();
    assert!(
        listed.contains(
            "client glewlwyd/wb-graph  origin graph  application with role password_admin"
        ),
        "{listed}"
    );
    assert!(
        listed.contains("client glewlwyd/wb-portal  origin portal  acts for signed-in users"),
        "{listed}"
    );
    let trail = ctl(&w.stack, None, &["audit", "admin", "--all"], "")
        .await
        .unwrap();
    assert_eq!(
        trail.lines().filter(|l| l.contains("issuer.put")).count(),
        4,
        "{trail}"
    );

    // writebackctl with the provider's token in its token file.
    let token_file = w.stack.dir.path().join("alice-idp.token");
    std::fs::write(&token_file, w.mfa_token("alice", dc).await).unwrap();
    let printed = ctl(
        &w.stack,
        Some(&token_file),
        &["password", "reset", "--user", &upn("alice", dc)],
        "Cli-Passw0rd!8\n",
    )
    .await
    .unwrap();
    assert!(printed.starts_with("OK: "), "{printed}");
    assert!(binds(dc, "alice", "Cli-Passw0rd!8").await);

    // A rotated key: the provider's new key is fetched for the first token
    // naming it; the old key is gone from its JWKS, so once the control plane
    // has refreshed, tokens signed with it no longer verify.
    let old_kid = w.idp.kid().to_owned();
    let new_kid = w.idp.rotate_signing_key().await.unwrap();
    assert_ne!(old_kid, new_kid);
    let rotated = w.mfa_token("alice", dc).await;
    let c = w.client(&rotated);
    reset(&c, user_ref("alice", dc), "Rotated-Passw0rd!2")
        .await
        .unwrap();
    assert!(binds(dc, "alice", "Rotated-Passw0rd!2").await);
    let (code, message) = reason(attempt(&w.stack, dc, token.clone()).await);
    assert_eq!(code, ReasonCode::Unauthenticated);
    assert!(message.contains(&old_kid), "{message}");

    // An issuer no tenant trusts any more.
    admin
        .identity_providers()
        .delete_issuer(admin.request(pb::DeleteIssuerRequest {
            issuer_id: "glewlwyd".into(),
        }))
        .await
        .unwrap();
    let (code, message) = reason(attempt(&w.stack, dc, rotated).await);
    assert_eq!(code, ReasonCode::Unauthenticated);
    assert!(message.contains("not trusted"), "{message}");

    // Trusting an issuer that cannot be reached is refused up front.
    let mut unreachable = issuer(&w.idp);
    unreachable.issuer_url = "https://127.0.0.1:9/nowhere".into();
    let (code, _) = reason(put_issuer(&admin, unreachable).await);
    assert_eq!(code, ReasonCode::IssuerUnreachable);
}

/// Issue 25, item 2: an issuer configured without a strong-authentication
/// policy made every sign-in strong, so a phished cloud password reset the
/// on-premises password. Now no sign-in through it allows a self-service
/// reset or unlock — password only or with MFA the issuer shows nothing of —
/// and the refusal tells the administrator what to configure; once the
/// issuer names the step-up scope, the MFA sign-in resets and unlocks.
#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_without_a_strong_sign_in_method_allows_no_self_service() {
    let w = world(&DOMAINS[..1]).await;
    let dc = &w.dcs[0];
    let admin = w.stack.admin().unwrap();
    let mut open = issuer(&w.idp);
    open.strong_auth = None;
    put_issuer(&admin, open).await.unwrap();

    // The attacker has the phished password: a password-only sign-in.
    let phished = w.client(&w.password_token("alice", dc).await);
    let (code, message) =
        reason(reset(&phished, user_ref("alice", dc), "Phished-Passw0rd!1").await);
    assert_eq!(code, ReasonCode::StrongAuthenticationRequired, "{message}");
    assert!(
        message.contains("no strong-authentication policy") && message.contains("--strong-amr"),
        "the refusal says what to configure: {message}"
    );
    assert!(binds(dc, "alice", START).await, "nothing was written");
    let mfa = w.client(&w.mfa_token("alice", dc).await);
    let (code, _) = reason(reset(&mfa, user_ref("alice", dc), "Phished-Passw0rd!1").await);
    assert_eq!(code, ReasonCode::StrongAuthenticationRequired);
    // A change proves the old password: it needs no strong sign-in.
    phished
        .passwords()
        .change_password(phished.request(pb::ChangePasswordRequest {
            user: Some(user_ref("alice", dc)),
            old_password: START.into(),
            new_password: "Changed-Passw0rd!2".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(binds(dc, "alice", "Changed-Passw0rd!2").await);

    for _ in 0..4 {
        let _ = dc.try_bind(&upn("alice", dc), "Wrong-Passw0rd!").await;
    }
    assert_ne!(lockout_time(dc, "alice").await, 0, "alice is locked out");
    let (code, _) = reason(unlock(&phished, user_ref("alice", dc)).await);
    assert_eq!(code, ReasonCode::StrongAuthenticationRequired);
    assert_ne!(lockout_time(dc, "alice").await, 0, "still locked");

    // A maximum age alone names no method either.
    let mut age_only = issuer(&w.idp);
    age_only.strong_auth = Some(pb::StrongAuthPolicy {
        max_age_seconds: 600,
        ..Default::default()
    });
    put_issuer(&admin, age_only).await.unwrap();
    let (code, _) = reason(unlock(&phished, user_ref("alice", dc)).await);
    assert_eq!(code, ReasonCode::StrongAuthenticationRequired);

    // The safe configuration: the scope the provider grants only after MFA.
    put_issuer(&admin, issuer(&w.idp)).await.unwrap();
    let (code, _) = reason(reset(&phished, user_ref("alice", dc), "Phished-Passw0rd!1").await);
    assert_eq!(code, ReasonCode::StrongAuthenticationRequired);
    unlock(&mfa, user_ref("alice", dc)).await.unwrap();
    assert_eq!(lockout_time(dc, "alice").await, 0);
    reset(&mfa, user_ref("alice", dc), "Strong-Passw0rd!3")
        .await
        .unwrap();
    assert!(binds(dc, "alice", "Strong-Passw0rd!3").await);
}

/// Issue 25, item 3: the principal came from any claim, verified or not. A
/// provider's user who types a victim's UPN as their e-mail address (glewlwyd
/// never verifies one) no longer "resets their own password" when the
/// issuer takes the principal from `email`.
#[tokio::test(flavor = "multi_thread")]
async fn an_unverified_email_names_no_directory_user() {
    let w = world(&DOMAINS[..1]).await;
    let dc = &w.dcs[0];
    let admin = w.stack.admin().unwrap();
    let mut by_email = issuer(&w.idp);
    by_email.principal_claim = "email".into();
    put_issuer(&admin, by_email).await.unwrap();
    // mallory's e-mail address is the one she typed: alice's UPN.
    w.idp
        .add_user("mallory", IDP_PASSWORD, &upn("mallory", dc), &[])
        .await
        .unwrap();
    w.idp
        .update_user("mallory", serde_json::json!({"email": upn("alice", dc)}))
        .await
        .unwrap();
    let mallory = w.client(
        &w.idp
            .mfa_token(PORTAL.0, PORTAL.1, "mallory", IDP_PASSWORD)
            .await
            .unwrap(),
    );
    let (code, message) =
        reason(reset(&mallory, user_ref("alice", dc), "Mallory-Passw0rd!1").await);
    assert_eq!(code, ReasonCode::PrincipalNotMapped, "{message}");
    assert!(message.contains("not verified"), "{message}");
    assert!(binds(dc, "alice", START).await, "nothing was written");
    // alice's own address is just as unverified: e-mail names no one here.
    let alice = w.client(&w.mfa_token("alice", dc).await);
    let (code, _) = reason(reset(&alice, user_ref("alice", dc), "Alice-Passw0rd!2").await);
    assert_eq!(code, ReasonCode::PrincipalNotMapped);
}

/// Issue 25, item 3: a person is bound, by the issuer's immutable subject
/// claim (`sub`), to the directory user their first operation wrote. A
/// provider's user whose principal claim was changed to another person's
/// UPN (a profile edit, an administrator's slip) cannot act on that
/// person's account — neither a new user carrying a bound person's name,
/// nor a bound person whose name now points elsewhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_sign_in_is_bound_to_the_directory_user_it_first_wrote() {
    let w = world(&DOMAINS[..1]).await;
    let dc = &w.dcs[0];
    dc.create_user("bob", START).await.unwrap();
    w.idp
        .add_user(&idp_name("bob", dc), IDP_PASSWORD, &upn("bob", dc), &[])
        .await
        .unwrap();
    // alice's first self-service reset binds her to her directory user.
    let alice = w.client(&w.mfa_token("alice", dc).await);
    reset(&alice, user_ref("alice", dc), "Alice-Passw0rd!1")
        .await
        .unwrap();
    assert!(binds(dc, "alice", "Alice-Passw0rd!1").await);

    // mallory, another user of the provider, now carries alice's UPN.
    w.idp
        .add_user("mallory", IDP_PASSWORD, &upn("mallory", dc), &[])
        .await
        .unwrap();
    w.idp
        .update_user("mallory", serde_json::json!({"upn": upn("alice", dc)}))
        .await
        .unwrap();
    let mallory = w.client(
        &w.idp
            .mfa_token(PORTAL.0, PORTAL.1, "mallory", IDP_PASSWORD)
            .await
            .unwrap(),
    );
    let (code, message) =
        reason(reset(&mallory, user_ref("alice", dc), "Mallory-Passw0rd!2").await);
    assert_eq!(code, ReasonCode::PrincipalNotMapped, "{message}");
    assert!(message.contains("bound to another account"), "{message}");
    let (code, _) = reason(unlock(&mallory, user_ref("alice", dc)).await);
    assert_eq!(code, ReasonCode::PrincipalNotMapped);
    assert!(
        binds(dc, "alice", "Alice-Passw0rd!1").await,
        "nothing was written"
    );

    // alice's own UPN claim now names bob: her sign-in still acts on her
    // own directory user only.
    w.idp
        .update_user(
            &idp_name("alice", dc),
            serde_json::json!({"upn": upn("bob", dc)}),
        )
        .await
        .unwrap();
    let renamed = w.client(&w.mfa_token("alice", dc).await);
    let (code, message) = reason(reset(&renamed, user_ref("bob", dc), "Renamed-Passw0rd!3").await);
    assert_eq!(code, ReasonCode::PrincipalNotMapped, "{message}");
    assert!(
        message.contains("bound to another directory account"),
        "{message}"
    );
    assert!(binds(dc, "bob", START).await, "nothing was written");

    // bob himself, never bound before: his reset works and binds him.
    let bob = w.client(&w.mfa_token("bob", dc).await);
    reset(&bob, user_ref("bob", dc), "Bob-Passw0rd!4")
        .await
        .unwrap();
    assert!(binds(dc, "bob", "Bob-Passw0rd!4").await);

    // The refusals are in the security trail (written in the background).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = ctl(&w.stack, None, &["audit", "list", "--kind", "security"], "")
            .await
            .unwrap();
        if out.contains("PRINCIPAL_NOT_MAPPED/identity_binding") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Issue 25, item 14: an application registration gave its role to any
/// token without the principal claim. A user's token through the
/// application's client (the issuer's principal claim is one not every
/// token carries: `preferred_username` here, `upn` of an unsynced user in
/// real life) is now refused; the application's own client-credentials
/// token (`sub` = its client id) still acts with its role.
#[tokio::test(flavor = "multi_thread")]
async fn an_application_role_needs_a_token_marked_as_the_applications_own() {
    let w = world(&DOMAINS[..1]).await;
    let dc = &w.dcs[0];
    let admin = w.stack.admin().unwrap();
    let mut sparse = issuer(&w.idp);
    sparse.principal_claim = "preferred_username".into();
    put_issuer(&admin, sparse).await.unwrap();
    // alice signs in (password only) through the Graph application's client.
    let as_app = w
        .idp
        .password_token(GRAPH.0, GRAPH.1, &idp_name("alice", dc), IDP_PASSWORD)
        .await
        .unwrap();
    let c = w.client(&as_app);
    let (code, message) = reason(reset(&c, user_ref("carol", dc), "Taken-Over-Passw0rd!1").await);
    assert_eq!(code, ReasonCode::PrincipalNotMapped, "{message}");
    assert!(message.contains("idtyp"), "{message}");
    assert!(binds(dc, "carol", START).await, "nothing was written");
    // The application itself.
    let app = w.client(
        &w.idp
            .client_credentials_token(GRAPH.0, GRAPH.1)
            .await
            .unwrap(),
    );
    let done = reset(&app, user_ref("carol", dc), "By-App-Passw0rd!2")
        .await
        .unwrap();
    assert!(binds(dc, "carol", "By-App-Passw0rd!2").await);
    assert_eq!(
        record(&admin, &done.operation_id).await.principal,
        format!("app:{}", GRAPH.0)
    );
}
