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
    /// A user's immutable identifier at the issuer (the issuer's subject
    /// claim); `None` for an application.
    pub subject: Option<String>,
}

fn not_mapped(why: String) -> Failure {
    Failure::new(ReasonCode::PrincipalNotMapped, why)
}

/// The subject claim an issuer names, `sub` when it names none.
pub fn subject_claim(issuer: &IssuerConfig) -> &str {
    match issuer.subject_claim.trim() {
        "" => "sub",
        claim => claim,
    }
}

/// True when the claims positively say the token was issued to the
/// application `client_id` itself (client credentials), not to a user: its
/// `sub` is the client id (RFC 9068 §2.2; Okta, Auth0's `<id>@clients`,
/// glewlwyd), or it carries `idtyp: "app"` (Entra ID's optional claim; a
/// hard-coded claim elsewhere). A token that merely lacks a user's claims
/// is not enough: a user's token can lack them too.
pub fn issued_to_application(claims: &Map<String, Value>, client_id: &str) -> bool {
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    let idtyp = claims.get("idtyp").and_then(Value::as_str).unwrap_or("");
    (!client_id.is_empty() && (sub == client_id || sub == format!("{client_id}@clients")))
        || idtyp.eq_ignore_ascii_case("app")
}

/// True when the claims say the e-mail address is verified
/// (`email_verified`: `true`, or the string `"true"` some providers send).
fn email_verified(claims: &Map<String, Value>) -> bool {
    match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
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
        // application's role, whether or not it names the user.
        if let Some(user) = principal_value.filter(|p| *p != client.client_id) {
            return Err(not_mapped(format!(
                "client {:?} is registered as an application, but the token speaks for the user {user:?}; \
                 use a client registered for users",
                client.client_id
            )));
        }
        if !issued_to_application(claims, &client.client_id) {
            return Err(not_mapped(format!(
                "client {:?} is registered as an application, but the token does not show that it was \
                 issued to the application itself: its sub is not the client id and it has no idtyp \"app\" \
                 claim (a token without a user's name may still be a user's); have the identity provider \
                 mark application tokens (see the README's provider table)",
                client.client_id
            )));
        }
        return Ok(Identity {
            principal: format!("app:{}", client.client_id),
            role,
            sign_in: SignIn::Application,
            application: true,
            subject: None,
        });
    }
    let principal = principal_value.ok_or_else(|| {
        not_mapped(format!(
            "the token has no {:?} claim, which the issuer {:?} names as the principal claim",
            issuer.principal_claim, issuer.issuer_id
        ))
    })?;
    // An e-mail address is what many providers let a user type in their
    // own profile: it names a directory account only once the provider has
    // verified it.
    if issuer.principal_claim.trim().eq_ignore_ascii_case("email") && !email_verified(claims) {
        return Err(not_mapped(format!(
            "the token's e-mail address is not verified (email_verified is not true), and the issuer {:?} \
             takes the principal from it: an unverified address is whatever the user typed in their \
             profile. Have the identity provider verify e-mail addresses, or name a claim the user \
             cannot edit as the principal claim (e.g. upn)",
            issuer.issuer_id
        )));
    }
    let principal = normalize_principal(principal)
        .map_err(|e| not_mapped(format!("the token's principal is unusable: {e}")))?;
    let subject_claim = subject_claim(issuer);
    let subject = claims
        .get(subject_claim)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            not_mapped(format!(
                "the token has no {subject_claim:?} claim, the immutable identifier the issuer {:?} \
                 names (its subject claim) that binds a person to one directory account",
                issuer.issuer_id
            ))
        })?;
    let role = role_of(issuer, claims).ok_or_else(|| {
        not_mapped(format!(
            "none of the token's {:?} values maps to a writeback role and the issuer {:?} has no default role",
            issuer.role_claim, issuer.issuer_id
        ))
    })?;
    Ok(Identity {
        principal,
        role,
        sign_in: sign_in(issuer, claims, now_s),
        application: false,
        subject: Some(subject.to_owned()),
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

/// Whether the sign-in the claims describe meets the issuer's
/// strong-authentication policy. An issuer whose policy names no method of
/// signing in (no `amr`, `acr` or step-up scope) makes no sign-in strong:
/// without one a phished password would be enough.
pub fn sign_in(issuer: &IssuerConfig, claims: &Map<String, Value>, now_s: i64) -> SignIn {
    let policy = &issuer.strong_auth;
    if !policy.names_a_method() {
        return SignIn::Weak(format!(
            "the identity provider {:?} has no strong-authentication policy, so no sign-in through it \
             counts as strong (a phished password would be enough). An administrator must name what a \
             multi-factor sign-in shows: writebackctl idp issuer add --id {} … with --strong-amr mfa, \
             --strong-acr or --strong-scope",
            issuer.issuer_id, issuer.issuer_id
        ));
    }
    method_and_age(policy, claims, now_s, issuer.clock_skew_seconds)
}

/// Whether the claims meet every condition of `policy`.
fn method_and_age(
    policy: &StrongAuthPolicy,
    claims: &Map<String, Value>,
    now_s: i64,
    skew_s: u32,
) -> SignIn {
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
            subject_claim: "sub".into(),
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
            serde_json::json!({"sub": "s-alice", "upn": "Alice@Contoso.Test", "groups": ["helpdesk", "admins"]}),
        );
        let id = identity(&issuer(), &client(None), &c, 0).unwrap();
        assert_eq!(id.principal, "alice@contoso.test");
        assert_eq!(id.role, Role::GlobalAdmin);
        let c = claims(
            serde_json::json!({"sub": "s-bob", "upn": "bob@contoso.test", "groups": "other"}),
        );
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
        let app = client(Some(Role::PasswordAdmin));
        for marked in [
            serde_json::json!({"azp": "portal-app", "sub": "portal-app"}),
            serde_json::json!({"azp": "portal-app", "sub": "portal-app@clients"}),
            serde_json::json!({"azp": "portal-app", "sub": "0f1e-sp-object-id", "idtyp": "app"}),
        ] {
            let id = identity(&issuer(), &app, &claims(marked), 0).unwrap();
            assert_eq!(id.principal, "app:portal-app");
            assert_eq!(id.role, Role::PasswordAdmin);
            assert!(id.application);
            assert_eq!(id.subject, None);
        }
        let c = claims(
            serde_json::json!({"azp": "portal-app", "sub": "portal-app", "upn": "alice@contoso.test"}),
        );
        let err = identity(&issuer(), &app, &c, 0).unwrap_err();
        assert_eq!(err.reason, ReasonCode::PrincipalNotMapped);
        // A user's token that happens to lack the principal claim is not an
        // application's: no marker, no role.
        for unmarked in [
            serde_json::json!({"azp": "portal-app"}),
            serde_json::json!({"azp": "portal-app", "sub": "user-7"}),
            serde_json::json!({"azp": "portal-app", "sub": "user-7", "idtyp": "user"}),
        ] {
            let err = identity(&issuer(), &app, &claims(unmarked), 0).unwrap_err();
            assert_eq!(err.reason, ReasonCode::PrincipalNotMapped);
            assert!(err.message.contains("idtyp"), "{}", err.message);
        }
    }

    #[test]
    fn an_email_principal_needs_a_verified_address_and_every_user_a_subject() {
        let mut by_email = issuer();
        by_email.principal_claim = "email".into();
        let user = client(None);
        for unverified in [
            serde_json::json!({"sub": "s1", "email": "alice@contoso.test"}),
            serde_json::json!({"sub": "s1", "email": "alice@contoso.test", "email_verified": false}),
            serde_json::json!({"sub": "s1", "email": "alice@contoso.test", "email_verified": "false"}),
        ] {
            let err = identity(&by_email, &user, &claims(unverified), 0).unwrap_err();
            assert_eq!(err.reason, ReasonCode::PrincipalNotMapped);
            assert!(err.message.contains("not verified"), "{}", err.message);
        }
        for verified in [
            serde_json::json!({"sub": "s1", "email": "Alice@contoso.test", "email_verified": true}),
            serde_json::json!({"sub": "s1", "email": "alice@contoso.test", "email_verified": "true"}),
        ] {
            let id = identity(&by_email, &user, &claims(verified), 0).unwrap();
            assert_eq!(id.principal, "alice@contoso.test");
            assert_eq!(id.subject.as_deref(), Some("s1"));
        }
        // Another principal claim needs no e-mail verification, but every
        // user's token needs the issuer's subject claim.
        let c = claims(serde_json::json!({"upn": "alice@contoso.test"}));
        let err = identity(&issuer(), &user, &c, 0).unwrap_err();
        assert_eq!(err.reason, ReasonCode::PrincipalNotMapped);
        assert!(err.message.contains("\"sub\""), "{}", err.message);
        let mut by_oid = issuer();
        by_oid.subject_claim = "oid".into();
        let c = claims(
            serde_json::json!({"sub": "pairwise", "oid": "0000-1", "upn": "alice@contoso.test"}),
        );
        assert_eq!(
            identity(&by_oid, &user, &c, 0).unwrap().subject.as_deref(),
            Some("0000-1")
        );
    }

    #[test]
    fn strong_sign_in_needs_the_method_and_a_recent_time() {
        let policy = issuer().strong_auth;
        let now = 1_000_000;
        let ok = claims(serde_json::json!({"amr": ["pwd", "otp"], "auth_time": now - 100}));
        assert_eq!(method_and_age(&policy, &ok, now, 60), SignIn::Strong);
        let password_only = claims(serde_json::json!({"amr": ["pwd"], "auth_time": now}));
        assert!(matches!(
            method_and_age(&policy, &password_only, now, 60),
            SignIn::Weak(_)
        ));
        let no_amr = claims(serde_json::json!({"auth_time": now}));
        assert!(
            matches!(method_and_age(&policy, &no_amr, now, 60), SignIn::Weak(m) if m.contains("no amr"))
        );
        let old = claims(serde_json::json!({"amr": ["mfa"], "auth_time": now - 3600}));
        assert!(
            matches!(method_and_age(&policy, &old, now, 60), SignIn::Weak(m) if m.contains("60 minutes old"))
        );
        let no_time = claims(serde_json::json!({"amr": ["mfa"]}));
        assert!(matches!(
            method_and_age(&policy, &no_time, now, 60),
            SignIn::Weak(_)
        ));
        // Within the skew is still recent.
        let edge = claims(serde_json::json!({"amr": ["mfa"], "auth_time": now - 650}));
        assert_eq!(method_and_age(&policy, &edge, now, 60), SignIn::Strong);
        let acr = StrongAuthPolicy {
            acr_any: vec!["gold".into()],
            ..StrongAuthPolicy::default()
        };
        assert!(matches!(
            method_and_age(&acr, &ok, now, 60),
            SignIn::Weak(_)
        ));
        let gold = claims(serde_json::json!({"acr": "gold"}));
        assert_eq!(method_and_age(&acr, &gold, now, 60), SignIn::Strong);
        // A policy that names no method makes no sign-in strong, whatever
        // the token says; a maximum age alone names none.
        let mut open = issuer();
        open.strong_auth = StrongAuthPolicy::default();
        assert!(
            matches!(sign_in(&open, &ok, now), SignIn::Weak(m) if m.contains("no strong-authentication policy") && m.contains("--strong-amr"))
        );
        open.strong_auth.max_age_seconds = 600;
        assert!(matches!(sign_in(&open, &ok, now), SignIn::Weak(_)));
        assert_eq!(sign_in(&issuer(), &ok, now), SignIn::Strong);
        let scope = StrongAuthPolicy {
            scope_any: vec!["writeback-mfa".into()],
            ..StrongAuthPolicy::default()
        };
        let granted = claims(serde_json::json!({"scope": "https://writeback.test writeback-mfa"}));
        assert_eq!(method_and_age(&scope, &granted, now, 60), SignIn::Strong);
        let granted_scp = claims(serde_json::json!({"scp": ["writeback-mfa"]}));
        assert_eq!(
            method_and_age(&scope, &granted_scp, now, 60),
            SignIn::Strong
        );
        let plain = claims(serde_json::json!({"scope": "https://writeback.test"}));
        assert!(
            matches!(method_and_age(&scope, &plain, now, 60), SignIn::Weak(m) if m.contains("writeback-mfa"))
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
