//! Verified claims → a writeback identity: the client id that picks the
//! registration, the principal and role of a user (or an application's own
//! identity), and whether the sign-in meets the issuer's strong-authentication
//! policy. Pure functions of the claims, the configuration and the time.

use serde_json::{Map, Value};
use writeback_core::{Failure, ReasonCode};

use crate::auth::normalize_principal;
use crate::store::{ClientRegistration, IssuerConfig, Role, SignIn, StrongAuthPolicy};

/// Claims that name the client a token was issued to, in the order they are
/// tried: OpenID Connect's `azp`, RFC 9068's `client_id`, Okta's `cid`,
/// Entra ID v1's `appid`.
pub const CLIENT_ID_CLAIMS: [&str; 4] = ["azp", "client_id", "cid", "appid"];

/// The client id the claims name, if any.
pub fn client_id(claims: &Map<String, Value>) -> Option<&str> {
    CLIENT_ID_CLAIMS
        .iter()
        .find_map(|c| claims.get(*c).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The principal: a user's name (lowercase) or `app:<client id>`.
    pub principal: String,
    /// Their role.
    pub role: Role,
    /// How strongly they signed in.
    pub sign_in: SignIn,
    /// True for an application acting as itself.
    pub application: bool,
}

fn not_mapped(why: String) -> Failure {
    Failure::new(ReasonCode::PrincipalNotMapped, why)
}

/// Maps verified `claims` to an identity under `issuer` and the `client`
/// registration, at `now_s` (Unix seconds).
pub fn identity(
    issuer: &IssuerConfig,
    client: &ClientRegistration,
    claims: &Map<String, Value>,
    now_s: i64,
) -> Result<Identity, Failure> {
    let principal_value = claims
        .get(&issuer.principal_claim)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty());
    if let Some(role) = client.application_role {
        // An application registration accepts only tokens of the application
        // itself: a user's token through the same client never gets the
        // application's role.
        if let Some(user) = principal_value.filter(|p| *p != client.client_id) {
            return Err(not_mapped(format!(
                "client {:?} is registered as an application, but the token speaks for the user {user:?}; \
                 use a client registered for users",
                client.client_id
            )));
        }
        return Ok(Identity {
            principal: format!("app:{}", client.client_id),
            role,
            sign_in: SignIn::Application,
            application: true,
        });
    }
    let principal = principal_value.ok_or_else(|| {
        not_mapped(format!(
            "the token has no {:?} claim, which the issuer {:?} names as the principal claim",
            issuer.principal_claim, issuer.issuer_id
        ))
    })?;
    let principal = normalize_principal(principal)
        .map_err(|e| not_mapped(format!("the token's principal is unusable: {e}")))?;
    let role = role_of(issuer, claims).ok_or_else(|| {
        not_mapped(format!(
            "none of the token's {:?} values maps to a writeback role and the issuer {:?} has no default role",
            issuer.role_claim, issuer.issuer_id
        ))
    })?;
    Ok(Identity {
        principal,
        role,
        sign_in: sign_in(
            &issuer.strong_auth,
            claims,
            now_s,
            issuer.clock_skew_seconds,
        ),
        application: false,
    })
}

/// The most privileged role the role claim's values map to, else the
/// issuer's default role.
fn role_of(issuer: &IssuerConfig, claims: &Map<String, Value>) -> Option<Role> {
    let values = strings(claims.get(&issuer.role_claim));
    issuer
        .role_mappings
        .iter()
        .filter(|m| values.contains(&m.value.as_str()))
        .map(|m| m.role)
        .max_by_key(|r| r.rank())
        .or(issuer.default_role)
}

/// A claim that is a string or a list of strings, as strings.
fn strings(value: Option<&Value>) -> Vec<&str> {
    match value {
        Some(Value::String(s)) => s.split(' ').filter(|s| !s.is_empty()).collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Whether the sign-in the claims describe meets `policy`.
pub fn sign_in(
    policy: &StrongAuthPolicy,
    claims: &Map<String, Value>,
    now_s: i64,
    skew_s: u32,
) -> SignIn {
    if policy.is_empty() {
        return SignIn::Strong;
    }
    if !policy.amr_any.is_empty() {
        let amr = strings(claims.get("amr"));
        if !policy.amr_any.iter().any(|a| amr.contains(&a.as_str())) {
            return SignIn::Weak(format!(
                "the sign-in used {} but a self-service reset needs one of {} (multi-factor authentication)",
                if amr.is_empty() {
                    "no stated method (no amr claim)".to_owned()
                } else {
                    amr.join(", ")
                },
                policy.amr_any.join(", ")
            ));
        }
    }
    if !policy.acr_any.is_empty() {
        let acr = claims.get("acr").and_then(Value::as_str).unwrap_or("");
        if !policy.acr_any.iter().any(|a| a == acr) {
            return SignIn::Weak(format!(
                "the sign-in's assurance level (acr) is {acr:?}; a self-service reset needs one of {}",
                policy.acr_any.join(", ")
            ));
        }
    }
    if !policy.scope_any.is_empty() {
        let mut scopes = strings(claims.get("scope"));
        scopes.extend(strings(claims.get("scp")));
        if !policy
            .scope_any
            .iter()
            .any(|a| scopes.contains(&a.as_str()))
        {
            return SignIn::Weak(format!(
                "the token was not granted {} (the identity provider grants it only after multi-factor authentication)",
                policy.scope_any.join(" or ")
            ));
        }
    }
    if policy.max_age_seconds > 0 {
        let Some(auth_time) = claims.get("auth_time").and_then(Value::as_i64) else {
            return SignIn::Weak(
                "the token does not say when the user signed in (no auth_time claim)".into(),
            );
        };
        let age = now_s - auth_time;
        if age > i64::from(policy.max_age_seconds) + i64::from(skew_s) {
            return SignIn::Weak(format!(
                "the sign-in is {} minutes old; a self-service reset needs one within the last {} minutes — sign in again",
                age / 60,
                policy.max_age_seconds.div_ceil(60)
            ));
        }
    }
    SignIn::Strong
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ClientApp, RoleMapping};

    fn issuer() -> IssuerConfig {
        IssuerConfig {
            issuer_id: "idp".into(),
            issuer_url: "https://idp.test".into(),
            audiences: vec!["writeback".into()],
            algorithms: vec!["RS256".into()],
            principal_claim: "upn".into(),
            role_claim: "groups".into(),
            role_mappings: vec![
                RoleMapping {
                    value: "helpdesk".into(),
                    role: Role::PasswordAdmin,
                },
                RoleMapping {
                    value: "admins".into(),
                    role: Role::GlobalAdmin,
                },
            ],
            default_role: Some(Role::User),
            clock_skew_seconds: 60,
            strong_auth: StrongAuthPolicy {
                amr_any: vec!["mfa".into(), "otp".into()],
                acr_any: vec![],
                max_age_seconds: 600,
                scope_any: vec![],
            },
            updated_at_ms: 0,
        }
    }

    fn client(application_role: Option<Role>) -> ClientRegistration {
        ClientRegistration {
            issuer_id: "idp".into(),
            client_id: "portal-app".into(),
            client_app: ClientApp::Portal,
            application_role,
            updated_at_ms: 0,
        }
    }

    fn claims(json: serde_json::Value) -> Map<String, Value> {
        json.as_object().unwrap().clone()
    }

    #[test]
    fn users_get_the_most_privileged_mapped_role_or_the_default() {
        let c = claims(
            serde_json::json!({"upn": "Alice@Contoso.Test", "groups": ["helpdesk", "admins"]}),
        );
        let id = identity(&issuer(), &client(None), &c, 0).unwrap();
        assert_eq!(id.principal, "alice@contoso.test");
        assert_eq!(id.role, Role::GlobalAdmin);
        let c = claims(serde_json::json!({"upn": "bob@contoso.test", "groups": "other"}));
        assert_eq!(
            identity(&issuer(), &client(None), &c, 0).unwrap().role,
            Role::User
        );
        let mut strict = issuer();
        strict.default_role = None;
        let err = identity(&strict, &client(None), &c, 0).unwrap_err();
        assert_eq!(err.reason, ReasonCode::PrincipalNotMapped);
    }

    #[test]
    fn a_token_without_the_principal_claim_is_not_mapped() {
        let c = claims(serde_json::json!({"email": "alice@contoso.test"}));
        let err = identity(&issuer(), &client(None), &c, 0).unwrap_err();
        assert_eq!(err.reason, ReasonCode::PrincipalNotMapped);
        assert!(err.message.contains("\"upn\""), "{}", err.message);
    }

    #[test]
    fn applications_act_as_themselves_and_never_for_a_user() {
        let c = claims(serde_json::json!({"azp": "portal-app"}));
        let id = identity(&issuer(), &client(Some(Role::PasswordAdmin)), &c, 0).unwrap();
        assert_eq!(id.principal, "app:portal-app");
        assert_eq!(id.role, Role::PasswordAdmin);
        assert!(id.application);
        let c = claims(serde_json::json!({"azp": "portal-app", "upn": "alice@contoso.test"}));
        let err = identity(&issuer(), &client(Some(Role::PasswordAdmin)), &c, 0).unwrap_err();
        assert_eq!(err.reason, ReasonCode::PrincipalNotMapped);
    }

    #[test]
    fn strong_sign_in_needs_the_method_and_a_recent_time() {
        let policy = issuer().strong_auth;
        let now = 1_000_000;
        let ok = claims(serde_json::json!({"amr": ["pwd", "otp"], "auth_time": now - 100}));
        assert_eq!(sign_in(&policy, &ok, now, 60), SignIn::Strong);
        let password_only = claims(serde_json::json!({"amr": ["pwd"], "auth_time": now}));
        assert!(matches!(
            sign_in(&policy, &password_only, now, 60),
            SignIn::Weak(_)
        ));
        let no_amr = claims(serde_json::json!({"auth_time": now}));
        assert!(
            matches!(sign_in(&policy, &no_amr, now, 60), SignIn::Weak(m) if m.contains("no amr"))
        );
        let old = claims(serde_json::json!({"amr": ["mfa"], "auth_time": now - 3600}));
        assert!(
            matches!(sign_in(&policy, &old, now, 60), SignIn::Weak(m) if m.contains("60 minutes old"))
        );
        let no_time = claims(serde_json::json!({"amr": ["mfa"]}));
        assert!(matches!(
            sign_in(&policy, &no_time, now, 60),
            SignIn::Weak(_)
        ));
        // Within the skew is still recent.
        let edge = claims(serde_json::json!({"amr": ["mfa"], "auth_time": now - 650}));
        assert_eq!(sign_in(&policy, &edge, now, 60), SignIn::Strong);
        let acr = StrongAuthPolicy {
            acr_any: vec!["gold".into()],
            ..StrongAuthPolicy::default()
        };
        assert!(matches!(sign_in(&acr, &ok, now, 60), SignIn::Weak(_)));
        let gold = claims(serde_json::json!({"acr": "gold"}));
        assert_eq!(sign_in(&acr, &gold, now, 60), SignIn::Strong);
        assert_eq!(
            sign_in(&StrongAuthPolicy::default(), &no_amr, now, 60),
            SignIn::Strong
        );
        let scope = StrongAuthPolicy {
            scope_any: vec!["writeback-mfa".into()],
            ..StrongAuthPolicy::default()
        };
        let granted = claims(serde_json::json!({"scope": "https://writeback.test writeback-mfa"}));
        assert_eq!(sign_in(&scope, &granted, now, 60), SignIn::Strong);
        let granted_scp = claims(serde_json::json!({"scp": ["writeback-mfa"]}));
        assert_eq!(sign_in(&scope, &granted_scp, now, 60), SignIn::Strong);
        let plain = claims(serde_json::json!({"scope": "https://writeback.test"}));
        assert!(
            matches!(sign_in(&scope, &plain, now, 60), SignIn::Weak(m) if m.contains("writeback-mfa"))
        );
    }

    #[test]
    fn the_client_id_comes_from_the_first_client_claim() {
        let c = claims(serde_json::json!({"client_id": "b", "cid": "c"}));
        assert_eq!(client_id(&c), Some("b"));
        let c = claims(serde_json::json!({"azp": "a", "client_id": "b"}));
        assert_eq!(client_id(&c), Some("a"));
        assert_eq!(client_id(&claims(serde_json::json!({"sub": "x"}))), None);
    }
}
