//! The web portals in a real browser (Debian's chromium through
//! chromium-driver), against the whole stack: a Samba DC, the control plane,
//! a relay and an agent, and glewlwyd as the tenant's OpenID provider,
//! signed into through its own login page. Every outcome is proven in the
//! directory by LDAPS bind (or `lockoutTime`). Screenshots of each page go
//! to `$WRITEBACK_SCREENSHOTS` when set (the README's come from there).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use writeback_portal::config::{OidcConfig, PortalConfig};
use writeback_proto::v1 as pb;
use writeback_testkit::browser::{Browser, HttpsLanding, Session, Viewport, sign_in_at_glewlwyd};
use writeback_testkit::oidc::{AUDIENCE, MFA_SCOPE, OidcProvider};
use writeback_testkit::stack::Stack;
use writeback_testkit::{SambaDc, TestCa};

const START: &str = "Qx7-Start-Vk29!";
const IDP_PASSWORD: &str = "Idp-Passw0rd!9";
const CLIENT: (&str, &str) = ("wb-portal", "portal-client-secret-1");
const HELPDESK: &str = "writeback-password-admins";
const ADMINS: &str = "writeback-global-admins";
const WAIT: Duration = Duration::from_secs(20);

struct World {
    dc: SambaDc,
    idp: OidcProvider,
    stack: Stack,
    url: String,
    browser: Browser,
    dir: tempfile::TempDir,
    /// The portal's CA, which the browser trusts.
    ca: TestCa,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn idp_name(user: &str) -> String {
    format!("{user}-contoso")
}

async fn world() -> World {
    writeback_identity::install_crypto_provider();
    writeback_core::telemetry::init();
    let dir = tempfile::tempdir().unwrap();
    let dc = SambaDc::start("contoso.test")
        .await
        .expect("samba DC (scripts/install-deps.sh)");
    dc.set_password_settings(&["--min-pwd-age=0", "--account-lockout-threshold=3"])
        .await
        .unwrap();
    let idp = OidcProvider::start().await.expect("glewlwyd");
    for (user, groups) in [
        ("alice", vec![]),
        ("carol", vec![HELPDESK]),
        ("root", vec![ADMINS]),
    ] {
        let dn = dc.create_user(user, START).await.unwrap();
        let (given, sn) = match user {
            "alice" => ("Alice", "Liddell"),
            "carol" => ("Carol", "Help"),
            _ => ("Root", "Admin"),
        };
        dc.set_names(&dn, &format!("{given} {sn}"), given, sn)
            .await
            .unwrap();
        idp.add_user(
            &idp_name(user),
            IDP_PASSWORD,
            &format!("{user}@contoso.test"),
            &groups,
        )
        .await
        .unwrap();
    }
    // The portal's address first: the provider must know its redirect URI.
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    idp.add_client_with_redirects(CLIENT.0, CLIENT.1, &[format!("{url}/callback").as_str()])
        .await
        .unwrap();
    let idp_ca = dir.path().join("idp-ca.pem");
    std::fs::write(&idp_ca, idp.ca_pem()).unwrap();
    let mut stack = Stack::start_configured("t1", 1, None, |c| {
        c.oidc.ca_file = Some(idp_ca.clone());
        c.throttle_per_user_per_hour = 0;
    })
    .await
    .unwrap();
    stack.add_domain(&dc).await.unwrap();
    stack
        .start_agent(&dc, &dc.admin_dn(), dc.admin_password())
        .await
        .unwrap();
    trust_the_provider(&stack, &idp).await;

    // The portal, over TLS from its own CA.
    let ca = TestCa::new("portal").unwrap();
    let (cert, key) = ca
        .issue_server(&["localhost".into()], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
        .unwrap();
    let (cert_file, key_file, secret_file) = (
        dir.path().join("portal.pem"),
        dir.path().join("portal.key"),
        dir.path().join("client-secret"),
    );
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    std::fs::write(&secret_file, CLIENT.1).unwrap();
    let config = PortalConfig {
        listen: listener.local_addr().unwrap(),
        public_url: url.clone(),
        tls_cert_file: cert_file,
        tls_key_file: key_file,
        control_plane_url: stack.cp_url.clone(),
        control_plane_ca_file: stack.dir.path().join("cp").join("ca.pem"),
        oidc: OidcConfig {
            issuer: idp.issuer().to_owned(),
            client_id: CLIENT.0.into(),
            client_secret_file: secret_file,
            ca_file: Some(idp_ca),
            scopes: vec![AUDIENCE.into()],
            strong_scopes: vec![MFA_SCOPE.into()],
            strong_acr_values: vec![],
            principal_claim: "upn".into(),
            resource: Some(AUDIENCE.into()),
        },
        session_idle_seconds: 900,
        metrics_listen: None,
        limits: Default::default(),
    };
    let app = writeback_portal::App::new(config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(writeback_portal::serve(app, listener, async {
        let _ = stopped.await;
    }));
    let browser = Browser::start(&[ca.cert_pem(), idp.ca_pem()])
        .await
        .expect("chromium and chromium-driver (scripts/install-deps.sh)");
    World {
        dc,
        idp,
        stack,
        url,
        browser,
        dir,
        ca,
        _stop: stop,
    }
}

/// The tenant trusts glewlwyd: principal from `upn`, the help-desk and
/// global-administrator groups mapped, everyone else a user; a
/// self-service reset or unlock needs the scope granted after HOTP.
async fn trust_the_provider(stack: &Stack, idp: &OidcProvider) {
    let admin = stack.admin().unwrap();
    let ip = admin.identity_providers();
    ip.clone()
        .put_issuer(admin.request(pb::PutIssuerRequest {
            issuer: Some(pb::Issuer {
                issuer_id: "glewlwyd".into(),
                issuer_url: idp.issuer().into(),
                audiences: vec![AUDIENCE.into()],
                algorithms: vec!["RS256".into()],
                principal_claim: "upn".into(),
                subject_claim: "sub".into(),
                role_claim: "groups".into(),
                role_mappings: vec![
                    pb::RoleMapping {
                        value: HELPDESK.into(),
                        role: pb::Role::PasswordAdmin as i32,
                    },
                    pb::RoleMapping {
                        value: ADMINS.into(),
                        role: pb::Role::GlobalAdmin as i32,
                    },
                ],
                default_role: pb::Role::User as i32,
                clock_skew_seconds: Some(5),
                strong_auth: Some(pb::StrongAuthPolicy {
                    scope_any: vec![MFA_SCOPE.into()],
                    ..Default::default()
                }),
                updated_at: None,
            }),
        }))
        .await
        .unwrap();
    ip.clone()
        .put_client(admin.request(pb::PutClientRequest {
            client: Some(pb::OidcClient {
                issuer_id: "glewlwyd".into(),
                client_id: CLIENT.0.into(),
                client_app: pb::ClientApp::Portal as i32,
                application_role: 0,
                updated_at: None,
            }),
        }))
        .await
        .unwrap();
}

impl World {
    async fn binds(&self, user: &str, password: &str) -> bool {
        self.dc
            .try_bind(&format!("{user}@contoso.test"), password)
            .await
            .unwrap()
    }

    async fn lockout_time(&self, user: &str) -> i64 {
        let dn = format!("CN={user},CN=Users,{}", self.dc.base_dn());
        self.dc
            .read_attrs(&dn, &["lockoutTime"])
            .await
            .unwrap()
            .get("lockoutTime")
            .and_then(|v| v.first())
            .map_or(0, |v| v.parse().unwrap())
    }

    /// A signed-in browser session for `user` (`strong`: password + HOTP).
    async fn signed_in(&self, user: &str, path: &str, viewport: Viewport) -> Session {
        let s = self.browser.session(viewport).await.unwrap();
        s.goto(&format!("{}{path}", self.url)).await.unwrap();
        self.sign_in(&s, user).await;
        s
    }

    /// Completes a sign-in at glewlwyd's own login page (password, and the
    /// HOTP code when a strong sign-in was asked for) until the browser is
    /// back at the portal.
    async fn sign_in(&self, s: &Session, user: &str) {
        sign_in_at_glewlwyd(s, &self.idp, &idp_name(user), IDP_PASSWORD, &self.url)
            .await
            .unwrap();
        s.wait_for("main h1", WAIT).await.unwrap();
    }

    /// The stack (kept alive for the test's length).
    #[allow(dead_code)]
    fn stack(&self) -> &Stack {
        &self.stack
    }

    fn shot(&self, name: &str) -> PathBuf {
        let dir = std::env::var_os("WRITEBACK_SCREENSHOTS")
            .map_or_else(|| self.dir.path().to_path_buf(), PathBuf::from);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(format!("{name}.png"))
    }

    async fn screenshot(&self, s: &Session, name: &str) {
        let path = self.shot(name);
        s.screenshot(&path).await.unwrap();
        let png = std::fs::read(&path).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 1000,
            "{name}: a real screenshot"
        );
    }
}

/// An attribute of the element `css` finds (empty when absent).
async fn attribute(s: &Session, css: &str, name: &str) -> String {
    s.execute(
        "const e = document.querySelector(arguments[0]); return e ? (e.getAttribute(arguments[1]) || '') : '';",
        vec![css.into(), name.into()],
    )
    .await
    .unwrap()
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

/// The pages the navigation offers (their paths, in order).
async fn nav(s: &Session) -> Vec<String> {
    let links = s
        .execute(
            "return Array.from(document.querySelectorAll('header nav a')).map(a => a.getAttribute('href'));",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(links).unwrap()
}

/// The audit page with `query`, once a row matching `css` shows (the
/// security trail is written by a background writer, so it is polled);
/// returns the page's source.
async fn audit_until(w: &World, s: &Session, query: &str, css: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        s.goto(&format!("{}/admin/audit?{query}", w.url))
            .await
            .unwrap();
        let found = s
            .execute(
                "return document.querySelectorAll(arguments[0]).length;",
                vec![css.into()],
            )
            .await
            .unwrap();
        if found.as_u64().unwrap_or(0) > 0 {
            return s.source().await.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{query}: nothing matches {css}:\n{}",
            s.source().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Clicks the submit `button` and returns the reason code of the outcome
/// box on the page that answers (not the one before it, which may hold an
/// outcome of its own: the old document is marked and waited out).
async fn submit(s: &Session, button: &str) -> String {
    s.execute("window.__wbStale = true; return true;", vec![])
        .await
        .unwrap();
    s.click(button).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        // Fails while the new document loads; true until it replaced the old.
        let stale = s.execute("return window.__wbStale === true;", vec![]).await;
        if matches!(stale, Ok(serde_json::Value::Bool(false))) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{button}: no new page"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.wait_for("div.outcome", WAIT).await.unwrap();
    attribute(s, "div.outcome", "data-reason").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_changes_resets_and_unlocks_in_the_browser() {
    let w = world().await;
    let s = w.signed_in("alice", "/me", Viewport::Desktop).await;
    let page = s.source().await.unwrap();
    assert!(page.contains("Your password rules"), "{page}");
    assert!(page.contains("alice@contoso.test"));
    // A user is offered her own account only.
    assert_eq!(nav(&s).await, ["/me"]);
    w.screenshot(&s, "self-service").await;

    // Change: current + new, answered in plain words, proven by bind.
    s.fill("#change-current", START).await.unwrap();
    s.fill("#change-new", "Portal-Change-7k#").await.unwrap();
    // The rules are checked as the user types.
    assert_eq!(attribute(&s, "li[data-rule=length]", "class").await, "pass");
    s.fill("#change-confirm", "Portal-Change-7k#")
        .await
        .unwrap();
    assert_eq!(submit(&s, "form[action='/me/change'] button").await, "OK");
    assert!(w.binds("alice", "Portal-Change-7k#").await);
    assert!(!w.binds("alice", START).await);

    // Reset needs a strong sign-in: the page offers it instead of the form.
    assert!(s.visible("#reset-new").await.unwrap().is_none());
    s.click("a[href='/signin?next=/me&strong=1']")
        .await
        .unwrap();
    w.sign_in(&s, "alice").await;
    s.wait_for("#reset-new", WAIT).await.unwrap();
    s.fill("#reset-new", "Portal-Reset-9q$").await.unwrap();
    s.fill("#reset-confirm", "Portal-Reset-9q$").await.unwrap();
    assert_eq!(submit(&s, "form[action='/me/reset'] button").await, "OK");
    assert!(w.binds("alice", "Portal-Reset-9q$").await);

    // A banned password is refused in plain words, nothing written.
    s.fill("#reset-new", "P@ssw0rd1!").await.unwrap();
    s.fill("#reset-confirm", "P@ssw0rd1!").await.unwrap();
    assert_eq!(
        submit(&s, "form[action='/me/reset'] button").await,
        "PASSWORD_BANNED"
    );
    w.screenshot(&s, "self-service-refused").await;
    assert!(w.binds("alice", "Portal-Reset-9q$").await);

    // Unlock.
    for _ in 0..4 {
        let _ = w.dc.try_bind("alice@contoso.test", "Wrong-Passw0rd!").await;
    }
    assert_ne!(w.lockout_time("alice").await, 0);
    assert_eq!(submit(&s, "form[action='/me/unlock'] button").await, "OK");
    assert_eq!(w.lockout_time("alice").await, 0);
    assert!(w.binds("alice", "Portal-Reset-9q$").await);

    // On a phone.
    let phone = w.signed_in("alice", "/me", Viewport::Phone).await;
    w.screenshot(&phone, "self-service-phone").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_help_desk_resets_and_the_administrator_switches_writeback_off_and_on() {
    let w = world().await;
    // The help desk finds alice by a fragment of her name (typed into the
    // labelled search field, submitted with the keyboard), picks her from
    // the results, resets with "must change", sees her history.
    let hd = w.signed_in("carol", "/helpdesk", Viewport::Desktop).await;
    hd.fill_by_label("Start of a name, account name or e-mail address", "lidd")
        .await
        .unwrap();
    hd.find("#find-query")
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap();
    hd.wait_for("table.users tbody tr", WAIT).await.unwrap();
    assert_eq!(
        hd.current_url().await.unwrap().as_str(),
        format!("{}/helpdesk?q=lidd", w.url)
    );
    let rows = hd
        .execute(
            "return Array.from(document.querySelectorAll('table.users tbody tr')).map(r => [r.dataset.upn, r.dataset.eligible]);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        rows,
        serde_json::json!([["alice@contoso.test", "true"]]),
        "only Alice Liddell's surname starts with lidd"
    );
    let page = hd.source().await.unwrap();
    assert!(page.contains("Alice Liddell"), "{page}");
    w.screenshot(&hd, "help-desk-search").await;
    // One character is refused in plain words.
    hd.goto(&format!("{}/helpdesk?q=l", w.url)).await.unwrap();
    assert_eq!(
        attribute(&hd, "div.outcome", "data-reason").await,
        "QUERY_TOO_SHORT"
    );
    hd.goto(&format!("{}/helpdesk?q=lidd", w.url))
        .await
        .unwrap();
    hd.click("table.users a[href='/helpdesk?user=alice%40contoso.test']")
        .await
        .unwrap();
    hd.wait_for("#hd-new", WAIT).await.unwrap();
    hd.fill("#hd-new", "Helpdesk-Set-4u!").await.unwrap();
    assert_eq!(
        submit(&hd, "form[action='/helpdesk/reset'] button").await,
        "OK"
    );
    let pwd_last_set =
        w.dc.read_attrs(
            &format!("CN=alice,CN=Users,{}", w.dc.base_dn()),
            &["pwdLastSet"],
        )
        .await
        .unwrap();
    assert_eq!(
        pwd_last_set["pwdLastSet"][0], "0",
        "must change at next logon"
    );
    hd.goto(&format!("{}/helpdesk?user=alice@contoso.test", w.url))
        .await
        .unwrap();
    let history = hd.source().await.unwrap();
    assert!(history.contains("data-reason=\"OK\""), "{history}");
    // The help desk is offered its pages and the audit log, not the
    // global administrator's.
    assert_eq!(nav(&hd).await, ["/me", "/helpdesk", "/admin/audit"]);
    w.screenshot(&hd, "help-desk").await;
    // The search on a phone, each user a card: the built-in Administrator
    // is listed as one writeback may not act on, with the reason.
    let phone = w
        .signed_in("carol", "/helpdesk?q=adm", Viewport::Phone)
        .await;
    phone.wait_for("table.users", WAIT).await.unwrap();
    assert_eq!(
        attribute(
            &phone,
            "tr[data-account='Administrator'] td[data-reason]",
            "data-reason"
        )
        .await,
        "PROTECTED_ACCOUNT",
        "{}",
        phone.source().await.unwrap()
    );
    assert_eq!(
        attribute(&phone, "tr[data-upn='root@contoso.test']", "data-eligible").await,
        "true"
    );
    w.screenshot(&phone, "help-desk-search-phone").await;

    // The global administrator: status, then writeback off.
    let admin = w.signed_in("root", "/admin", Viewport::Desktop).await;
    let page = admin.source().await.unwrap();
    assert!(page.contains("data-complete=\"true\""), "{page}");
    assert_eq!(
        nav(&admin).await,
        ["/me", "/helpdesk", "/admin", "/admin/audit"]
    );
    w.screenshot(&admin, "on-premises-integration").await;
    admin.click("input[name=sspr_writeback]").await.unwrap();
    assert_eq!(
        submit(&admin, "form[action='/admin/settings'] button").await,
        "OK"
    );
    // The help desk's next reset is refused.
    hd.fill("#hd-new", "Helpdesk-Off-5v!").await.unwrap();
    assert_eq!(
        submit(&hd, "form[action='/helpdesk/reset'] button").await,
        "WRITEBACK_DISABLED"
    );
    assert!(!w.binds("alice", "Helpdesk-Off-5v!").await);
    // On again, and it works.
    admin.goto(&format!("{}/admin", w.url)).await.unwrap();
    admin.click("input[name=sspr_writeback]").await.unwrap();
    assert_eq!(
        submit(&admin, "form[action='/admin/settings'] button").await,
        "OK"
    );
    hd.fill("#hd-new", "Helpdesk-On-6w!").await.unwrap();
    hd.click("input[name=must_change]").await.unwrap();
    assert_eq!(
        submit(&hd, "form[action='/helpdesk/reset'] button").await,
        "OK"
    );
    assert!(w.binds("alice", "Helpdesk-On-6w!").await);

    // An enrollment token, shown once with the command.
    admin
        .click("form[action='/admin/enroll'] button")
        .await
        .unwrap();
    admin
        .wait_for("pre[data-enrollment-token]", WAIT)
        .await
        .unwrap();
    let page = admin.source().await.unwrap();
    assert!(
        page.contains("writeback-agent enroll --control-plane"),
        "{page}"
    );
    // The audit log, through its filter form: carol's operations on alice.
    admin.goto(&format!("{}/admin/audit", w.url)).await.unwrap();
    assert!(admin.source().await.unwrap().contains("alice@contoso.test"));
    admin
        .fill("#audit-principal", "carol@contoso.test")
        .await
        .unwrap();
    admin
        .fill("#audit-user", "alice@contoso.test")
        .await
        .unwrap();
    admin
        .execute(
            "document.querySelector('#audit-state').value = 'succeeded'; return true;",
            vec![],
        )
        .await
        .unwrap();
    admin.click("form.filters button").await.unwrap();
    admin
        .wait_for_url(
            &format!("{}/admin/audit?kind=operations&principal=carol", w.url),
            WAIT,
        )
        .await
        .unwrap();
    let page = admin.source().await.unwrap();
    assert_eq!(
        page.matches("<td data-reason=\"OK\">").count(),
        2,
        "carol's two resets of alice: {page}"
    );
    w.screenshot(&admin, "audit-log").await;
    // Nothing failed, nothing by root, nothing tomorrow.
    for query in [
        "kind=operations&state=failed",
        "principal=root%40contoso.test",
        "since=2999-01-01",
    ] {
        admin
            .goto(&format!("{}/admin/audit?{query}", w.url))
            .await
            .unwrap();
        let page = admin.source().await.unwrap();
        assert!(page.contains("No operations yet."), "{query}: {page}");
    }
    // Administrative changes: root's two switches of the toggles.
    let page = audit_until(
        &w,
        &admin,
        "kind=administration&action=settings.update",
        "td[data-action='settings.update']",
    )
    .await;
    assert!(page.contains("root@contoso.test"), "{page}");
    // Security events: the reset refused while writeback was off.
    audit_until(
        &w,
        &admin,
        "kind=security&reason=WRITEBACK_DISABLED",
        "table[data-trail=security] td[data-reason=WRITEBACK_DISABLED]",
    )
    .await;
    // A filter the trail does not have is refused, not dropped.
    admin
        .goto(&format!(
            "{}/admin/audit?kind=administration&state=failed",
            w.url
        ))
        .await
        .unwrap();
    assert_eq!(
        attribute(&admin, "div.outcome", "data-reason").await,
        "INVALID_ARGUMENT"
    );
    // The help desk reads operations and changes, not security events.
    hd.goto(&format!("{}/admin/audit", w.url)).await.unwrap();
    let page = hd.source().await.unwrap();
    assert!(page.contains("value=\"administration\""), "{page}");
    assert!(!page.contains("value=\"security\""), "{page}");
}

/// Issue #25 item 11: a phishing link to the real sign-in whose `next` a
/// browser reads as another site — `/%09/<host>/` (the portal sees a tab,
/// the browser drops it and goes to `//<host>/`), its encoded and
/// backslash forms, an absolute URL — lands, after a genuine sign-in at
/// the provider, on the portal's own `/me`; the other site (an HTTPS page
/// the browser trusts, on loopback) is never asked for anything.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_genuine_sign_in_a_hostile_next_lands_on_the_portal() {
    let w = world().await;
    let evil = HttpsLanding::start(&w.ca, "Evil").await.unwrap();
    let host = evil
        .url()
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    for next in [
        format!("/%09/{host}/"),
        format!("/%2509/{host}/"),
        format!("/%5C{host}/"),
        format!("https://{host}/"),
    ] {
        let s = w.browser.session(Viewport::Desktop).await.unwrap();
        s.goto(&format!("{}/signin?next={next}", w.url))
            .await
            .unwrap();
        sign_in_at_glewlwyd(&s, &w.idp, &idp_name("alice"), IDP_PASSWORD, &w.url)
            .await
            .unwrap();
        // Past the callback, wherever its redirect goes.
        let deadline = std::time::Instant::now() + WAIT;
        let landed = loop {
            let url = s.current_url().await.unwrap();
            if url.path() != "/callback" && s.visible("h1").await.ok().flatten().is_some() {
                break url;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{next}: still at {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            landed.as_str(),
            format!("{}/me", w.url),
            "{next}: the browser left the portal"
        );
        s.wait_for("main h1", WAIT).await.unwrap();
        s.close().await.unwrap();
    }
    assert!(
        evil.requests().is_empty(),
        "the other site was reached: {:?}",
        evil.requests()
    );
}
