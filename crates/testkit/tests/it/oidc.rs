//! The test OpenID provider (glewlwyd): every kind of token, its claims, discovery,
//! JWKS, signatures and key rotation.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use writeback_testkit::TestkitError;
use writeback_testkit::oidc::{AUDIENCE, MFA_SCOPE, OidcProvider, jwt_parts};

use crate::init_tracing;

const ADMIN_GROUP: &str = "writeback-password-admins";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Decode a token, check what every access token carries, return (header, claims).
fn access_claims(provider: &OidcProvider, token: &str) -> (Value, Value) {
    let (header, claims) = jwt_parts(token).unwrap();
    assert_eq!(header["alg"], "RS256", "{header}");
    assert_eq!(header["typ"], "at+jwt", "{header}");
    assert_eq!(header["kid"], provider.kid(), "{header}");
    assert_eq!(claims["iss"], provider.issuer(), "{claims}");
    assert_eq!(claims["aud"], AUDIENCE, "{claims}");
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!((iat - now()).abs() < 120, "{claims}");
    assert_eq!(exp - iat, 3600, "{claims}");
    assert!(
        claims["jti"].as_str().is_some_and(|j| !j.is_empty()),
        "{claims}"
    );
    // glewlwyd puts no authentication context into access tokens.
    for absent in ["amr", "acr", "auth_time"] {
        assert!(claims.get(absent).is_none(), "{absent} in {claims}");
    }
    (header, claims)
}

/// Verify the RS256 signature with the key the JWKS publishes under the token's kid.
fn verify_with_jwks(jwks: &Value, token: &str) {
    let (header, _) = jwt_parts(token).unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap_or_else(|| panic!("kid {} not in {jwks}", header["kid"]));
    assert_eq!(key["kty"], "RSA");
    let b64 = |v: &Value| URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap();
    let (n, e) = (b64(&key["n"]), b64(&key["e"]));
    let public = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
    let (signed, signature) = token.rsplit_once('.').unwrap();
    public
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            signed.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .expect("signature verifies with the published key");
}

async fn get_json(provider: &OidcProvider, url: &str) -> Value {
    let ca = reqwest::Certificate::from_pem(provider.ca_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let resp = client.get(url).send().await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_issues_password_mfa_and_client_tokens_and_rotates_keys() {
    init_tracing();
    let started = Instant::now();
    let mut provider = OidcProvider::start().await.unwrap();
    let start_time = started.elapsed();
    assert!(
        start_time < Duration::from_secs(30),
        "start took {start_time:?}"
    );
    assert!(provider.issuer().starts_with("https://127.0.0.1:"));
    assert_eq!(provider.audience(), AUDIENCE);

    // Discovery and JWKS over TLS verified against the test CA only.
    let discovery = get_json(&provider, &provider.discovery_url()).await;
    assert_eq!(discovery["issuer"], provider.issuer());
    assert_eq!(discovery["jwks_uri"], provider.jwks_uri());
    assert_eq!(discovery["token_endpoint"], provider.token_endpoint());
    let jwks = get_json(&provider, &provider.jwks_uri()).await;
    assert_eq!(jwks["keys"][0]["kid"], provider.kid());
    assert_eq!(jwks["keys"][0]["alg"], "RS256");

    provider
        .add_user(
            "alice",
            "Alice-Passw0rd!",
            "alice@contoso.test",
            &[ADMIN_GROUP, "staff"],
        )
        .await
        .unwrap();
    provider
        .add_client("writeback-cli", "cli-secret-1")
        .await
        .unwrap();
    provider
        .add_client("stranger", "stranger-secret")
        .await
        .unwrap();

    // Password grant: user claims, no MFA.
    let token = provider
        .password_token("writeback-cli", "cli-secret-1", "alice", "Alice-Passw0rd!")
        .await
        .unwrap();
    let (_, claims) = access_claims(&provider, &token);
    eprintln!("password token claims: {claims}");
    assert_eq!(claims["upn"], "alice@contoso.test");
    assert_eq!(claims["groups"], format!("{ADMIN_GROUP},staff"));
    assert_eq!(claims["client_id"], "writeback-cli");
    assert_eq!(claims["scope"], AUDIENCE);
    let alice_sub = claims["sub"].as_str().unwrap().to_string();
    assert_ne!(alice_sub, "alice", "sub is opaque");
    verify_with_jwks(&jwks, &token);

    let wrong = provider
        .password_token("writeback-cli", "cli-secret-1", "alice", "wrong")
        .await
        .unwrap_err();
    assert!(
        matches!(wrong, TestkitError::OidcApi { status: 403, .. }),
        "{wrong}"
    );
    let bad_client = provider
        .password_token(
            "writeback-cli",
            "not-the-secret",
            "alice",
            "Alice-Passw0rd!",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(bad_client, TestkitError::OidcApi { .. }),
        "{bad_client}"
    );

    // Password + HOTP through the authorization code flow (twice: the counter moves).
    for _ in 0..2 {
        let token = provider
            .mfa_token("writeback-cli", "cli-secret-1", "alice", "Alice-Passw0rd!")
            .await
            .unwrap();
        let (_, claims) = access_claims(&provider, &token);
        eprintln!("mfa token claims: {claims}");
        let scopes: Vec<&str> = claims["scope"].as_str().unwrap().split(' ').collect();
        assert!(
            scopes.contains(&AUDIENCE) && scopes.contains(&MFA_SCOPE),
            "{claims}"
        );
        assert_eq!(claims["sub"], alice_sub);
        assert_eq!(claims["upn"], "alice@contoso.test");
        verify_with_jwks(&jwks, &token);
    }

    // The profile's e-mail address rides along, never verified; a profile
    // edit changes the claims of the next token, not its sub.
    assert_eq!(claims["email"], "alice@contoso.test");
    assert!(claims.get("email_verified").is_none(), "{claims}");
    provider
        .update_user(
            "alice",
            serde_json::json!({"email": "someone@contoso.test", "upn": "someone@contoso.test"}),
        )
        .await
        .unwrap();
    let token = provider
        .password_token("writeback-cli", "cli-secret-1", "alice", "Alice-Passw0rd!")
        .await
        .unwrap();
    let (_, edited) = access_claims(&provider, &token);
    assert_eq!(edited["email"], "someone@contoso.test", "{edited}");
    assert_eq!(edited["upn"], "someone@contoso.test", "{edited}");
    assert_eq!(edited["sub"], alice_sub);
    assert_eq!(
        edited["groups"],
        format!("{ADMIN_GROUP},staff"),
        "the rest stays"
    );
    provider
        .update_user(
            "alice",
            serde_json::json!({"email": "alice@contoso.test", "upn": "alice@contoso.test"}),
        )
        .await
        .unwrap();
    let no_mfa = provider
        .mfa_token("writeback-cli", "cli-secret-1", "alice", "wrong")
        .await
        .unwrap_err();
    assert!(matches!(no_mfa, TestkitError::OidcApi { .. }), "{no_mfa}");

    // Client credentials: the client itself, no user claims.
    let token = provider
        .client_credentials_token("writeback-cli", "cli-secret-1")
        .await
        .unwrap();
    let (_, claims) = access_claims(&provider, &token);
    eprintln!("client credentials token claims: {claims}");
    assert_eq!(claims["sub"], "writeback-cli");
    assert_eq!(claims["client_id"], "writeback-cli");
    assert!(claims.get("upn").is_none() && claims.get("groups").is_none());

    // A second client (one writeback will not know) gets tokens just the same.
    let token = provider
        .password_token("stranger", "stranger-secret", "alice", "Alice-Passw0rd!")
        .await
        .unwrap();
    let (_, claims) = access_claims(&provider, &token);
    assert_eq!(claims["client_id"], "stranger");

    // Key rotation while running: a new kid, published alone, used for new tokens.
    let old_kid = provider.kid().to_string();
    let old_token = token;
    let new_kid = provider.rotate_signing_key().await.unwrap();
    assert_ne!(new_kid, old_kid);
    let jwks = get_json(&provider, &provider.jwks_uri()).await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![new_kid.as_str()]);
    let token = provider
        .client_credentials_token("writeback-cli", "cli-secret-1")
        .await
        .unwrap();
    let (header, _) = access_claims(&provider, &token);
    assert_eq!(header["kid"], new_kid);
    verify_with_jwks(&jwks, &token);
    let (old_header, _) = jwt_parts(&old_token).unwrap();
    assert_eq!(old_header["kid"], old_kid);

    let dir = provider.dir().to_path_buf();
    let pid = provider.pid().unwrap();
    drop(provider);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "glewlwyd stopped on drop"
    );
    if std::env::var_os("WRITEBACK_TESTKIT_KEEP").is_none() {
        assert!(!dir.exists(), "directory removed on drop");
    }
    eprintln!("provider start took {start_time:?}");
}
