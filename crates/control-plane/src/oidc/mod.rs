//! The control plane as an OAuth 2.0 resource server: it accepts the JWT
//! access tokens of the OpenID Connect issuers a tenant trusts, beside its
//! own `wbt1.` tokens.
//!
//! A token is checked in this order, and the first failure answers:
//! 1. it is a signed JWS whose `alg` is asymmetric (`none` and HMAC are
//!    refused before anything else);
//! 2. its `iss` is an issuer some tenant trusts, and `(iss, client id)` names
//!    a registered client (the client id from `azp`, `client_id`, `cid` or
//!    `appid`) — that registration decides the tenant; an unregistered client
//!    of a trusted issuer is told `CLIENT_NOT_REGISTERED` only after its
//!    signature verified;
//! 3. `alg` is one the issuer allows and the issuer publishes the key named by
//!    `kid` for it ([`keys`]: discovery + JWKS, refreshed on rotation);
//! 4. signature, `exp`/`nbf` (with the issuer's clock skew), `iss` and `aud`
//!    (one of the issuer's audiences) verify, by the `jsonwebtoken` crate;
//! 5. the claims map to a principal and role, or an application
//!    ([`claims`]): a user needs the issuer's subject claim (the immutable
//!    identifier that binds them to one directory user, checked by the
//!    operation's authorize stage), and an e-mail principal a verified
//!    address; an application registration needs a token marked as the
//!    application's own (`sub` = client id, or `idtyp: app`). The sign-in is
//!    judged against the issuer's strong-authentication policy — none that
//!    names a method makes no sign-in strong — and enforced later, by the
//!    policy, for self-service resets and unlocks.
//!
//! A user's role learnt from a token is recorded (only ever raised), so an
//! administrator who signs in becomes a protected target for other
//! administrators at once.

pub mod claims;
pub mod keys;

use std::collections::HashSet;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use writeback_core::{Failure, ReasonCode};

use crate::config::OidcConfig;
use crate::store::{Caller, IssuerConfig, Role, Store, Subject};
use keys::{KeyCache, KeyError};

/// Algorithms an issuer accepts when its configuration names none.
pub const DEFAULT_ALGORITHMS: [&str; 2] = ["RS256", "ES256"];

/// Algorithms an issuer may be configured to accept: asymmetric only.
pub const ALLOWED_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// How many principals' recorded roles are remembered before the memory is
/// cleared (it only saves database writes).
const RECORDED_ROLES_CAP: usize = 10_000;

/// Verifies identity-provider tokens.
#[derive(Debug)]
pub struct Verifier {
    keys: KeyCache,
    recorded_roles: Mutex<HashSet<(String, String, Role)>>,
}

fn unauthenticated(message: impl Into<String>) -> Failure {
    Failure::new(ReasonCode::Unauthenticated, message)
}

/// True when `token` has the shape of a compact JWS (three dot-separated
/// parts), so it is routed here rather than to the `wbt1` tokens.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && !token.starts_with("wbt1.")
}

/// The JOSE header fields used here.
#[derive(Debug, serde::Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// Decodes one base64url JSON part of a JWS without verifying anything: the
/// values only pick the configuration and key the token is then verified
/// with.
fn part<T: for<'de> serde::Deserialize<'de>>(part: &str, what: &str) -> Result<T, Failure> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| unauthenticated(format!("the token's {what} is not base64url")))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| unauthenticated(format!("the token's {what} is not a JSON object")))
}

/// The claims of a JWT's payload, unverified: only for describing a refused
/// token in the security trail (which issuer, client and user it claimed),
/// never for deciding anything. `None` when the payload does not decode.
pub fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    part(payload, "payload").ok()
}

/// A JWT's header, the algorithm it names and its payload, decoded and not
/// verified: they pick the issuer, key and algorithm it is verified with.
fn unverified_parts(token: &str) -> Result<(Header, Algorithm, Map<String, Value>), Failure> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(unauthenticated("the bearer token is not a JWT"));
    };
    let header: Header = part(h, "header")?;
    let alg = algorithm(&header.alg)?;
    let unverified: Map<String, Value> = part(p, "payload")?;
    Ok((header, alg, unverified))
}

/// The issuer of [`fuzz_token`] and of the unit tests: `https://idp.test`,
/// audience `writeback`, the default algorithms.
fn example_issuer() -> IssuerConfig {
    IssuerConfig {
        issuer_id: "idp".into(),
        issuer_url: "https://idp.test".into(),
        audiences: vec!["writeback".into()],
        algorithms: vec![],
        principal_claim: "upn".into(),
        subject_claim: "sub".into(),
        role_claim: String::new(),
        role_mappings: vec![],
        default_role: None,
        clock_skew_seconds: 60,
        strong_auth: crate::store::StrongAuthPolicy::default(),
        updated_at_ms: 0,
    }
}

/// The fuzz target's entry point (`fuzz/fuzz_targets/token.rs`): a
/// bearer token through every step that reads it before its signature holds —
/// the unverified header and payload, the client id, the security trail's
/// description — and then `jsonwebtoken`'s verification against a fixed
/// Ed25519 key, which must refuse it (nothing here can hold that key's
/// private half). Not an API.
#[doc(hidden)]
pub fn fuzz_token(token: &str) {
    let _ = unverified_claims(token);
    let Ok((_, alg, claims)) = unverified_parts(token) else {
        return;
    };
    let _ = claims::client_id(&claims);
    // 32 arbitrary bytes as an Ed25519 public key (jsonwebtoken takes the
    // raw key for EdDSA): no one holds a private key that matches them.
    const PUBLIC: [u8; 32] = [
        0xea, 0x4a, 0x6c, 0x63, 0xe2, 0x9c, 0x52, 0x0a, 0xbe, 0xf5, 0x50, 0x7b, 0x13, 0x2e, 0xc5,
        0xf9, 0x95, 0x47, 0x76, 0xae, 0xbe, 0xbe, 0x7b, 0x92, 0x42, 0x1e, 0xea, 0x69, 0x14, 0x46,
        0xd2, 0x2c,
    ];
    let key = jsonwebtoken::DecodingKey::from_ed_der(&PUBLIC);
    let issuer = example_issuer();
    assert!(
        check_token(token, &key, &issuer, alg).is_err(),
        "a token no one could sign was accepted"
    );
}

/// The algorithm a token's header names, if writeback could ever accept it.
fn algorithm(alg: &str) -> Result<Algorithm, Failure> {
    if alg.eq_ignore_ascii_case("none") {
        return Err(unauthenticated(
            "the token is not signed (alg \"none\"); only signed tokens are accepted",
        ));
    }
    if !ALLOWED_ALGORITHMS.contains(&alg) {
        return Err(unauthenticated(format!(
            "the token is signed with {alg:?}; only asymmetric algorithms ({}) are accepted",
            ALLOWED_ALGORITHMS.join(", ")
        )));
    }
    alg.parse()
        .map_err(|_| unauthenticated(format!("unknown algorithm {alg:?}")))
}

impl Verifier {
    /// A verifier fetching keys with `config`'s trust roots and intervals.
    pub fn new(config: &OidcConfig) -> anyhow::Result<Verifier> {
        Ok(Verifier {
            keys: KeyCache::new(config)?,
            recorded_roles: Mutex::new(HashSet::new()),
        })
    }

    /// The key cache (for checking an issuer before it is trusted).
    pub fn keys(&self) -> &KeyCache {
        &self.keys
    }

    /// The caller `token` speaks for, or why it is refused.
    pub async fn authenticate(&self, store: &Store, token: &str) -> Result<Caller, Failure> {
        let (header, alg, unverified) = unverified_parts(token)?;
        let iss = unverified
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| unauthenticated("the token has no issuer (iss)"))?
            .to_owned();
        let client_id = claims::client_id(&unverified).map(str::to_owned);
        let registration = match &client_id {
            Some(c) => store
                .client_by_issuer_url(&iss, c)
                .await
                .map_err(store_failure)?,
            None => None,
        };
        let Some((tenant, issuer, client)) = registration else {
            return Err(self
                .unregistered(
                    store,
                    token,
                    &iss,
                    alg,
                    header.kid.as_deref(),
                    client_id.as_deref(),
                )
                .await);
        };
        let verified = self
            .verify(token, &issuer, alg, header.kid.as_deref())
            .await?;
        let identity = claims::identity(&issuer, &client, &verified, store.now_ms() / 1000)?;
        if !identity.application {
            self.record_role(store, &tenant, &identity.principal, identity.role)
                .await;
        }
        Ok(Caller {
            tenant,
            principal: identity.principal,
            role: identity.role,
            client_app: client.client_app,
            token_id: verified
                .get("jti")
                .and_then(Value::as_str)
                .map_or_else(|| format!("oidc:{}", issuer.issuer_id), str::to_owned),
            sign_in: identity.sign_in,
            subject: identity.subject.map(|value| Subject {
                issuer_id: issuer.issuer_id.clone(),
                value,
            }),
        })
    }

    /// The answer for a token whose `(iss, client id)` has no registration:
    /// `CLIENT_NOT_REGISTERED` when the issuer is trusted and the signature
    /// verifies, `UNAUTHENTICATED` otherwise.
    async fn unregistered(
        &self,
        store: &Store,
        token: &str,
        iss: &str,
        alg: Algorithm,
        kid: Option<&str>,
        client_id: Option<&str>,
    ) -> Failure {
        match store.issuer_url_trusted(iss).await {
            Ok(true) => {}
            Ok(false) => {
                return unauthenticated(format!(
                    "the token's issuer {iss:?} is not trusted (writebackctl idp issuer add)"
                ));
            }
            Err(e) => return store_failure(e),
        }
        let key = match self.keys.key(iss, kid, alg).await {
            Ok(key) => key,
            Err(e) => return key_failure(e),
        };
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        if let Err(e) = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation) {
            return jwt_failure(&e, iss);
        }
        match client_id {
            Some(c) => Failure::new(
                ReasonCode::ClientNotRegistered,
                format!(
                    "the client application {c:?} of issuer {iss:?} is not registered with writeback (writebackctl idp client add)"
                ),
            ),
            None => Failure::new(
                ReasonCode::ClientNotRegistered,
                "the token names no client application (azp, client_id, cid or appid)",
            ),
        }
    }

    /// Verifies signature, algorithm, expiry, issuer and audience.
    async fn verify(
        &self,
        token: &str,
        issuer: &IssuerConfig,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Map<String, Value>, Failure> {
        let allowed: Vec<&str> = if issuer.algorithms.is_empty() {
            DEFAULT_ALGORITHMS.to_vec()
        } else {
            issuer.algorithms.iter().map(String::as_str).collect()
        };
        if !allowed.iter().any(|a| format!("{alg:?}") == *a) {
            return Err(unauthenticated(format!(
                "the token is signed with {alg:?}, which the issuer {:?} is not configured to use ({})",
                issuer.issuer_id,
                allowed.join(", ")
            )));
        }
        let key = self
            .keys
            .key(&issuer.issuer_url, kid, alg)
            .await
            .map_err(key_failure)?;
        check_token(token, &key, issuer, alg)
    }

    /// Records a user's role from a token once per (tenant, principal, role)
    /// this process has seen; a failure only costs a log line (the role is
    /// recorded again on the next token).
    async fn record_role(&self, store: &Store, tenant: &str, principal: &str, role: Role) {
        let key = (tenant.to_owned(), principal.to_owned(), role);
        {
            let seen = self
                .recorded_roles
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if seen.contains(&key) {
                return;
            }
        }
        match store.raise_principal_role(tenant, principal, role).await {
            Ok(()) => {
                let mut seen = self
                    .recorded_roles
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if seen.len() >= RECORDED_ROLES_CAP {
                    seen.clear();
                }
                seen.insert(key);
            }
            Err(e) => {
                tracing::warn!(tenant, principal, error = %e, "recording a signed-in principal's role failed")
            }
        }
    }
}

/// Signature, expiry (`exp`, `nbf`, with the issuer's clock skew), issuer
/// and audience of `token`, by `jsonwebtoken`; its claims when all hold.
fn check_token(
    token: &str,
    key: &jsonwebtoken::DecodingKey,
    issuer: &IssuerConfig,
    alg: Algorithm,
) -> Result<Map<String, Value>, Failure> {
    let mut validation = Validation::new(alg);
    validation.leeway = u64::from(issuer.clock_skew_seconds);
    validation.validate_nbf = true;
    validation.set_issuer(&[&issuer.issuer_url]);
    validation.set_audience(&issuer.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| jwt_failure(&e, &issuer.issuer_url))
}

fn store_failure(e: crate::store::StoreError) -> Failure {
    tracing::error!(error = %e, "identity-provider lookup failed");
    Failure::new(
        ReasonCode::Internal,
        "the control plane could not look up the token's issuer",
    )
}

fn key_failure(e: KeyError) -> Failure {
    match e {
        KeyError::Unreachable(why) => Failure::new(
            ReasonCode::IssuerUnreachable,
            format!("the token's issuer could not be reached to check its signature: {why}"),
        ),
        KeyError::NoKey(why) => unauthenticated(why),
    }
}

fn jwt_failure(e: &jsonwebtoken::errors::Error, iss: &str) -> Failure {
    match e.kind() {
        ErrorKind::ExpiredSignature => Failure::new(
            ReasonCode::TokenExpired,
            "the token expired; get a fresh one from the identity provider",
        ),
        ErrorKind::ImmatureSignature => unauthenticated("the token is not valid yet (nbf)"),
        ErrorKind::InvalidAudience => unauthenticated(
            "the token's audience (aud) is not one the issuer's configuration accepts",
        ),
        ErrorKind::InvalidIssuer => unauthenticated(format!("the token's issuer is not {iss:?}")),
        ErrorKind::InvalidSignature => unauthenticated(format!(
            "the token's signature does not verify with the keys of {iss:?}"
        )),
        ErrorKind::MissingRequiredClaim(c) => {
            unauthenticated(format!("the token has no {c:?} claim"))
        }
        ErrorKind::InvalidAlgorithm => {
            unauthenticated("the token's algorithm does not match the issuer's key")
        }
        _ => unauthenticated(format!("the token is malformed ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_and_hmac_tokens_are_refused_by_their_header() {
        assert!(
            algorithm("none")
                .unwrap_err()
                .message
                .contains("not signed")
        );
        assert!(algorithm("NONE").is_err());
        assert!(
            algorithm("HS256")
                .unwrap_err()
                .message
                .contains("asymmetric")
        );
        assert_eq!(algorithm("RS256").unwrap(), Algorithm::RS256);
        assert_eq!(algorithm("EdDSA").unwrap(), Algorithm::EdDSA);
    }

    use jsonwebtoken::{DecodingKey, EncodingKey, Header as JwtHeader};

    /// A test ES256 key (unit tests only; the end-to-end tests use a real
    /// identity provider): (signing key, verifying key).
    fn test_key() -> (EncodingKey, DecodingKey) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let signing = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let verifying = DecodingKey::from_ec_pem(pair.public_key_pem().as_bytes()).unwrap();
        (signing, verifying)
    }

    fn issuer() -> IssuerConfig {
        IssuerConfig {
            default_role: Some(Role::User),
            ..super::example_issuer()
        }
    }

    fn now() -> i64 {
        i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap()
    }

    fn sign(key: &EncodingKey, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&JwtHeader::new(Algorithm::ES256), &claims, key).unwrap()
    }

    fn claims(exp: i64) -> serde_json::Value {
        serde_json::json!({"iss": "https://idp.test", "aud": "writeback", "exp": exp, "upn": "a@b.test"})
    }

    #[test]
    fn tokens_are_checked_for_signature_time_issuer_and_audience() {
        let (signing, verifying) = test_key();
        let check = |t: &str| check_token(t, &verifying, &issuer(), Algorithm::ES256);
        let good = sign(&signing, claims(now() + 300));
        assert_eq!(check(&good).unwrap()["upn"], "a@b.test");
        // Expired beyond the skew; within it still fine.
        let expired = sign(&signing, claims(now() - 120));
        assert_eq!(
            check(&expired).unwrap_err().reason,
            ReasonCode::TokenExpired
        );
        assert!(check(&sign(&signing, claims(now() - 30))).is_ok());
        let mut c = claims(now() + 300);
        c["aud"] = "someone-else".into();
        assert!(
            check(&sign(&signing, c))
                .unwrap_err()
                .message
                .contains("audience")
        );
        let mut c = claims(now() + 300);
        c["iss"] = "https://evil.test".into();
        assert!(
            check(&sign(&signing, c))
                .unwrap_err()
                .message
                .contains("issuer")
        );
        let mut c = claims(now() + 300);
        c["nbf"] = (now() + 600).into();
        assert!(
            check(&sign(&signing, c))
                .unwrap_err()
                .message
                .contains("not valid yet")
        );
        let mut c = claims(now() + 300);
        c.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            check(&sign(&signing, c)).unwrap_err().reason,
            ReasonCode::Unauthenticated
        );
        // Another key's signature, and a tampered payload.
        let (other, _) = test_key();
        let forged = sign(&other, claims(now() + 300));
        assert!(check(&forged).unwrap_err().message.contains("signature"));
        let mut parts: Vec<&str> = good.split('.').collect();
        let tampered_payload = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&serde_json::json!({"iss": "https://idp.test", "aud": "writeback", "exp": now() + 300, "upn": "admin@b.test"})).unwrap(),
        );
        parts[1] = &tampered_payload;
        assert!(
            check(&parts.join("."))
                .unwrap_err()
                .message
                .contains("signature")
        );
    }

    #[test]
    fn an_hmac_token_keyed_with_the_public_key_never_verifies() {
        // The classic confusion attack: HS256 "signed" with the issuer's
        // public key. Refused by its header, and the key family would not
        // match either.
        let (_, verifying) = test_key();
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let hmac = EncodingKey::from_secret(pair.public_key_pem().as_bytes());
        let token = jsonwebtoken::encode(
            &JwtHeader::new(Algorithm::HS256),
            &claims(now() + 300),
            &hmac,
        )
        .unwrap();
        let header: Header = part(token.split('.').next().unwrap(), "header").unwrap();
        assert!(algorithm(&header.alg).is_err());
        assert!(check_token(&token, &verifying, &issuer(), Algorithm::ES256).is_err());
    }

    #[test]
    fn jwts_are_told_from_api_tokens() {
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("wbt1.0123"));
        assert!(!looks_like_jwt("a.b"));
    }
}
