//! The portal's Prometheus metrics after real requests: its router, built
//! against the real OpenID provider's discovery and a running control
//! plane, answers a visitor who is not signed in and a sign-in answer that
//! matches nothing; the registry `metrics_listen` serves counts both by
//! route template, the sign-in by outcome and the session held.

use std::net::{IpAddr, Ipv4Addr};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt as _;
use writeback_portal::config::{OidcConfig, PortalConfig};
use writeback_testkit::TestCa;

use crate::metrics::value;
use writeback_testkit::oidc::OidcProvider;
use writeback_testkit::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_counts_requests_by_route_and_sign_ins_by_outcome() {
    writeback_identity::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let idp = OidcProvider::start().await.expect("glewlwyd");
    let url = "https://127.0.0.1:8999";
    idp.add_client_with_redirects("wb-portal", "secret-1", &[&format!("{url}/callback")])
        .await
        .unwrap();
    let stack = Stack::start("t1", 1).await.unwrap();
    let ca = TestCa::new("portal").unwrap();
    let (cert, key) = ca
        .issue_server(&["localhost".into()], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
        .unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let config = PortalConfig {
        public_url: url.into(),
        tls_cert_file: file("portal.pem", &cert),
        tls_key_file: file("portal.key", &key),
        control_plane_url: stack.cp_url.clone(),
        control_plane_ca_file: stack.dir.path().join("cp").join("ca.pem"),
        oidc: OidcConfig {
            issuer: idp.issuer().to_owned(),
            client_id: "wb-portal".into(),
            client_secret_file: file("secret", "secret-1"),
            ca_file: Some(file("idp-ca.pem", &idp.ca_pem())),
            ..OidcConfig::default()
        },
        ..PortalConfig::default()
    };
    let app = writeback_portal::App::new(config).await.unwrap();
    let router = writeback_portal::router(app.clone());
    let get = |uri: &str, cookie: Option<&str>| {
        let mut r = Request::get(uri);
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        router.clone().oneshot(r.body(Body::empty()).unwrap())
    };

    // Not signed in: sent to sign in, which sends the browser to the provider.
    let me = get("/me", None).await.unwrap();
    assert_eq!(me.status(), StatusCode::SEE_OTHER);
    let signin = get("/signin?next=%2Fme&strong=0", None).await.unwrap();
    assert_eq!(signin.status(), StatusCode::SEE_OTHER);
    let location = signin.headers()[header::LOCATION].to_str().unwrap();
    assert!(location.starts_with(idp.issuer()), "{location}");
    let cookie = signin.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    // An answer whose state is not the one the sign-in sent.
    let forged = get("/callback?code=c&state=not-the-state", Some(&cookie))
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    let unknown = get("/no-such-page", None).await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &app.metrics.registry).unwrap();
    let requests = |route: &str, status: u16| {
        value(
            &text,
            &format!(
                "writeback_portal_requests_total{{route=\"{route}\",method=\"GET\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(requests("/me", 303), 1.0);
    assert_eq!(requests("/signin", 303), 1.0);
    assert_eq!(requests("/callback", 400), 1.0);
    assert_eq!(
        value(
            &text,
            "writeback_portal_request_duration_seconds_count{route=\"/signin\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "writeback_portal_sign_ins_total{outcome=\"mismatched\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&text, "writeback_portal_sessions{state=\"anonymous\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "writeback_portal_sessions{state=\"signed_in\"}"),
        0.0
    );
    assert!(
        !text.contains("no-such-page"),
        "no label from an unknown path"
    );
    assert!(value(&text, "writeback_process_resident_memory_bytes") > 0.0);
    drop(stack);
}
