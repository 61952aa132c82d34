//! The real browser (headless Chromium over chromedriver): it trusts the test CAs
//! it is given and no others, emulates desktop and phone widths, and signs users
//! in through glewlwyd's own login page with the authorization code flow + PKCE,
//! with and without HOTP.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use writeback_testkit::browser::{
    Browser, HttpsLanding, SignInStep, Viewport, sign_in_at_glewlwyd,
};
use writeback_testkit::oidc::{AUDIENCE, MFA_SCOPE, OidcProvider, Pkce, jwt_parts};
use writeback_testkit::{Session, TestCa, TestkitError};

use crate::init_tracing;

const WAIT: Duration = Duration::from_secs(15);

async fn inner_size(session: &Session) -> (u64, u64) {
    let size = session
        .execute("return [window.innerWidth, window.innerHeight];", vec![])
        .await
        .unwrap();
    (size[0].as_u64().unwrap(), size[1].as_u64().unwrap())
}

/// Whether any process of the process group `pgid` still exists.
fn group_alive(pgid: u32) -> bool {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pgid).unwrap());
    nix::sys::signal::killpg(pid, None).is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_browser_trusts_only_the_given_test_cas_and_emulates_a_phone() {
    init_tracing();
    let trusted = TestCa::new("writeback browser test CA").unwrap();
    let other = TestCa::new("writeback untrusted test CA").unwrap();
    let good = HttpsLanding::start(&trusted, "trusted page").await.unwrap();
    let bad = HttpsLanding::start(&other, "untrusted page").await.unwrap();

    let started = Instant::now();
    let browser = Browser::start(&[trusted.cert_pem()]).await.unwrap();
    let browser_ready = started.elapsed();
    let desktop = browser.session(Viewport::Desktop).await.unwrap();
    let session_ready = started.elapsed() - browser_ready;
    eprintln!("browser start {browser_ready:?}, first session {session_ready:?}");

    // Real TLS: the page from the trusted CA loads, without an interstitial.
    desktop.goto(&format!("{}hello", good.url())).await.unwrap();
    assert_eq!(desktop.title().await.unwrap(), "trusted page");
    assert_eq!(
        desktop
            .wait_for("#landing", WAIT)
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "trusted page"
    );
    assert_eq!(good.requests().first().map(String::as_str), Some("/hello"));
    assert_eq!(inner_size(&desktop).await, (1280, 900));

    // A certificate from any other CA is refused (nothing ignores cert errors).
    let err = desktop.goto(bad.url()).await.unwrap_err();
    assert!(
        matches!(&err, TestkitError::Browser { detail, .. }
            if detail.contains("NET::ERR_CERT_AUTHORITY_INVALID")),
        "{err}"
    );
    assert!(bad.requests().is_empty(), "{:?}", bad.requests());

    let phone = browser.session(Viewport::Phone).await.unwrap();
    phone.goto(good.url()).await.unwrap();
    assert_eq!(inner_size(&phone).await, (390, 844));
    let shot = tempfile::tempdir().unwrap();
    let png = shot.path().join("phone.png");
    let bytes = phone.screenshot(&png).await.unwrap();
    assert!(bytes > 1000, "{bytes}");
    phone.close().await.unwrap();

    // Dropping the browser ends chromedriver and every Chromium it started.
    let pgid = browser.pid().unwrap();
    assert!(group_alive(pgid));
    drop(desktop);
    let stopping = Instant::now();
    drop(browser);
    eprintln!("browser stop {:?}", stopping.elapsed());
    assert!(
        !group_alive(pgid),
        "process group {pgid} still has processes"
    );
}

/// A browser at the client's redirect URI after `/auth`: the code, checked state.
fn code_from(url: &url::Url, state: &str) -> String {
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(query.get("state").map(String::as_str), Some(state), "{url}");
    assert!(!query.contains_key("error"), "{url}");
    query
        .get("code")
        .cloned()
        .unwrap_or_else(|| panic!("no code in {url}"))
}

/// The token endpoint's answer to an authorization code exchange.
async fn exchange(
    provider: &OidcProvider,
    client: (&str, &str),
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> (reqwest::StatusCode, Value) {
    let ca = reqwest::Certificate::from_pem(provider.ca_pem().as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let resp = http
        .post(provider.token_endpoint())
        .basic_auth(client.0, Some(client.1))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

fn scopes(claims: &Value) -> Vec<String> {
    claims["scope"]
        .as_str()
        .unwrap()
        .split(' ')
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_signs_in_through_glewlwyds_login_page_with_pkce_and_hotp() {
    init_tracing();
    let provider = OidcProvider::start().await.unwrap();
    let landing_ca = TestCa::new("writeback portal test CA").unwrap();
    let landing = HttpsLanding::start(&landing_ca, "signed in").await.unwrap();
    let redirect_uri = format!("{}callback", landing.url());
    let client = ("portal-e2e", "portal-e2e-secret");
    provider
        .add_client_with_redirects(client.0, client.1, &[&redirect_uri])
        .await
        .unwrap();
    provider
        .add_user("alice", "Alice-Pass-1", "alice@contoso.test", &["staff"])
        .await
        .unwrap();
    let browser = Browser::start(&[provider.ca_pem(), landing_ca.cert_pem()])
        .await
        .unwrap();
    let artifacts = tempfile::tempdir().unwrap();

    // 1. Password only, on a desktop.
    let desktop = browser.session(Viewport::Desktop).await.unwrap();
    let pkce = Pkce::new().unwrap();
    let state = "state-password-1";
    let scope = format!("openid {AUDIENCE}");
    let auth = provider
        .authorization_url(client.0, &redirect_uri, &scope, state, &pkce)
        .unwrap();
    desktop.goto(auth.as_str()).await.unwrap();
    // /auth sent the browser to glewlwyd's own login page.
    desktop
        .wait_for("#passwordForm #password", WAIT)
        .await
        .unwrap();
    let login_url = desktop.current_url().await.unwrap();
    assert!(
        login_url.as_str().starts_with(&provider.login_page_url()),
        "{login_url}"
    );
    let png = artifacts.path().join("glewlwyd-login.png");
    let bytes = desktop.screenshot(&png).await.unwrap();
    let on_disk = std::fs::read(&png).unwrap();
    assert!(bytes > 1000 && on_disk.len() as u64 == bytes);
    assert!(on_disk.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(desktop.field_by_label("Password").await.is_ok());

    let signed = sign_in_at_glewlwyd(&desktop, &provider, "alice", "Alice-Pass-1", &redirect_uri)
        .await
        .unwrap();
    eprintln!(
        "password sign-in: {:?} in {:?}",
        signed.steps, signed.elapsed
    );
    assert_eq!(signed.steps.first(), Some(&SignInStep::Password));
    assert!(
        !signed.steps.contains(&SignInStep::Otp),
        "{:?}",
        signed.steps
    );
    let code = code_from(&signed.url, state);
    assert_eq!(
        desktop
            .wait_for("#landing", WAIT)
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "signed in"
    );
    assert!(
        landing
            .requests()
            .iter()
            .any(|r| r.starts_with("/callback?") && r.contains(&format!("code={code}"))),
        "{:?}",
        landing.requests()
    );
    let (status, body) = exchange(&provider, client, &code, &redirect_uri, &pkce.verifier).await;
    assert!(status.is_success(), "{status}: {body}");
    let (_, claims) = jwt_parts(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["aud"], AUDIENCE, "{claims}");
    assert_eq!(claims["upn"], "alice@contoso.test", "{claims}");
    let granted = scopes(&claims);
    assert!(granted.iter().any(|s| s == AUDIENCE), "{claims}");
    assert!(!granted.iter().any(|s| s == MFA_SCOPE), "{claims}");
    // The code is used up.
    let (status, _) = exchange(&provider, client, &code, &redirect_uri, &pkce.verifier).await;
    assert!(status.is_client_error(), "{status}");

    // 2. With writeback-mfa, on a phone: the login page asks for the HOTP code too.
    let phone = browser.session(Viewport::Phone).await.unwrap();
    let pkce = Pkce::new().unwrap();
    let state = "state-mfa-2";
    let scope = format!("openid {AUDIENCE} {MFA_SCOPE}");
    let auth = provider
        .authorization_url(client.0, &redirect_uri, &scope, state, &pkce)
        .unwrap();
    phone.goto(auth.as_str()).await.unwrap();
    let signed = sign_in_at_glewlwyd(&phone, &provider, "alice", "Alice-Pass-1", &redirect_uri)
        .await
        .unwrap();
    eprintln!("mfa sign-in: {:?} in {:?}", signed.steps, signed.elapsed);
    assert!(
        signed.steps.contains(&SignInStep::Password),
        "{:?}",
        signed.steps
    );
    assert!(
        signed.steps.contains(&SignInStep::Otp),
        "{:?}",
        signed.steps
    );
    let code = code_from(&signed.url, state);
    let (status, body) = exchange(&provider, client, &code, &redirect_uri, &pkce.verifier).await;
    assert!(status.is_success(), "{status}: {body}");
    let (_, claims) = jwt_parts(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["aud"], AUDIENCE, "{claims}");
    let granted = scopes(&claims);
    assert!(granted.iter().any(|s| s == MFA_SCOPE), "{claims}");
    let (_, id_claims) = jwt_parts(body["id_token"].as_str().unwrap()).unwrap();
    assert!(
        id_claims["amr"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "otp"),
        "{id_claims}"
    );

    // 3. The phone's session is signed in already: a new request goes straight
    // through, and its code is worth nothing without the right PKCE verifier.
    let pkce = Pkce::new().unwrap();
    let state = "state-again-3";
    let auth = provider
        .authorization_url(client.0, &redirect_uri, &scope, state, &pkce)
        .unwrap();
    phone.goto(auth.as_str()).await.unwrap();
    let signed = sign_in_at_glewlwyd(&phone, &provider, "alice", "Alice-Pass-1", &redirect_uri)
        .await
        .unwrap();
    assert!(
        !signed.steps.contains(&SignInStep::Password) && !signed.steps.contains(&SignInStep::Otp),
        "{:?}",
        signed.steps
    );
    let code = code_from(&signed.url, state);
    let wrong = Pkce::new().unwrap();
    let (status, body) = exchange(&provider, client, &code, &redirect_uri, &wrong.verifier).await;
    assert!(status.is_client_error(), "{status}: {body}");
}
