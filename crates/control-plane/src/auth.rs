//! Bearer-token authentication and role checks. API tokens look like
//! `wbt1.<64 hex>`; only their SHA-256 is stored, so a database dump yields
//! no usable token. A token may carry an expiry and can be revoked; either
//! makes it `UNAUTHENTICATED` at once. A bearer token shaped like a JWT goes
//! to [`crate::oidc`] instead.

use tonic::{Request, Status};
use writeback_core::{ReasonCode, status};
use writeback_identity::token::{random_hex, sha256_hex};

use crate::ControlPlane;
use crate::store::{Caller, Role};

/// Prefix of API tokens.
const PREFIX: &str = "wbt1.";

/// A fresh API token: (the token to hand out once, the hash to store).
pub fn new_api_token() -> (String, String) {
    let token = format!("{PREFIX}{}", random_hex(32));
    let hash = sha256_hex(token.as_bytes());
    (token, hash)
}

/// Milliseconds since the Unix epoch by the system clock. The API itself
/// asks the store's [`crate::store::Clock`] instead, so tests can move time.
pub fn now_ms() -> i64 {
    crate::store::Clock::system().now_ms()
}

/// The caller behind `req`'s `authorization: Bearer …` header: a `wbt1.`
/// API token (looked up by its hash) or an identity provider's JWT access
/// token (verified by [`crate::oidc::Verifier`]).
pub async fn authenticate<T>(cp: &ControlPlane, req: &Request<T>) -> Result<Caller, Status> {
    let unauthenticated = || {
        status(
            ReasonCode::Unauthenticated,
            "a valid bearer token is required (authorization: Bearer <wbt1.… or an identity provider's access token>)",
        )
    };
    let header = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthenticated)?;
    let token = match bearer(header).ok_or_else(unauthenticated)? {
        Bearer::Jwt(token) => {
            return cp
                .oidc
                .authenticate(&cp.store, token)
                .await
                .map_err(Status::from);
        }
        Bearer::ApiToken(token) => token,
    };
    let store = &cp.store;
    match store
        .authenticate(&sha256_hex(token.as_bytes()), store.now_ms())
        .await
    {
        Ok(Some(caller)) => Ok(caller),
        Ok(None) => Err(status(
            ReasonCode::Unauthenticated,
            "the bearer token is unknown, expired or revoked",
        )),
        Err(e) => {
            tracing::error!(error = %e, "token lookup failed");
            Err(status(
                ReasonCode::Internal,
                "the control plane could not check the token",
            ))
        }
    }
}

/// What a request presented as its credential, described without the
/// credential itself: for the security trail of a refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// No `authorization` header.
    Missing,
    /// A header that is not `Bearer <token>` of a known shape.
    Malformed,
    /// A `wbt1.` token, by its SHA-256 (the store keeps the same hash, so
    /// the token's tenant and state can be found; the token cannot).
    ApiToken {
        /// Hex SHA-256 of the token.
        hash: String,
    },
    /// A JWT and what it claims, unverified.
    Jwt {
        /// `iss`, when present.
        issuer: String,
        /// The client id (`azp`, `client_id`, `cid` or `appid`), when present.
        client_id: String,
        /// The user it names (`upn`, `preferred_username`, `email` or `sub`),
        /// when present.
        principal: String,
    },
}

/// Claims a JWT may name its user by, in the order they are tried for the
/// security trail (the issuer's own principal claim decides sign-ins).
const CLAIMED_PRINCIPAL: [&str; 4] = ["upn", "preferred_username", "email", "sub"];

/// Describes the credential of `req` for the security trail.
pub fn presented<T>(req: &Request<T>) -> Presented {
    let Some(header) = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    else {
        return if req.metadata().contains_key("authorization") {
            Presented::Malformed
        } else {
            Presented::Missing
        };
    };
    presented_header(header)
}

/// [`presented`] for the value of an `authorization` header.
pub fn presented_header(header: &str) -> Presented {
    let Some(token) = bearer(header) else {
        return Presented::Malformed;
    };
    match token {
        Bearer::ApiToken(token) => Presented::ApiToken {
            hash: sha256_hex(token.as_bytes()),
        },
        Bearer::Jwt(token) => {
            let claims = crate::oidc::unverified_claims(token).unwrap_or_default();
            let text = |name: &str| {
                claims
                    .get(name)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            Presented::Jwt {
                issuer: text("iss"),
                client_id: crate::oidc::claims::client_id(&claims)
                    .unwrap_or_default()
                    .to_owned(),
                principal: CLAIMED_PRINCIPAL
                    .iter()
                    .map(|c| text(c))
                    .find(|v| !v.is_empty())
                    .unwrap_or_default(),
            }
        }
    }
}

/// The credential in an `authorization` header, by its shape (nothing is
/// checked yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// An identity provider's access token (three dot-separated parts).
    Jwt(&'a str),
    /// One of writeback's own `wbt1.` API tokens.
    ApiToken(&'a str),
}

/// Reads `Bearer <token>` (either case of the scheme); `None` when the
/// header is not that or the token has neither known shape.
pub fn bearer(header: &str) -> Option<Bearer<'_>> {
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)?;
    if crate::oidc::looks_like_jwt(token) {
        Some(Bearer::Jwt(token))
    } else if token.starts_with(PREFIX) {
        Some(Bearer::ApiToken(token))
    } else {
        None
    }
}

/// Refuses callers that are not administrators.
pub fn require_admin(caller: &Caller) -> Result<(), Status> {
    if caller.role.is_admin() {
        Ok(())
    } else {
        Err(status(
            ReasonCode::PermissionDenied,
            "this needs an administrator role",
        ))
    }
}

/// Refuses callers that are not global administrators.
pub fn require_global_admin(caller: &Caller) -> Result<(), Status> {
    if caller.role == Role::GlobalAdmin {
        Ok(())
    } else {
        Err(status(
            ReasonCode::PermissionDenied,
            "this needs the global administrator role",
        ))
    }
}

/// A principal name as stored: trimmed and lowercase (principals are UPNs,
/// compared without regard to case). Refuses empty names, whitespace and
/// control characters, and names over 256 characters.
pub fn normalize_principal(name: &str) -> Result<String, &'static str> {
    let name = name.trim();
    if name.is_empty() {
        return Err("a principal name (a UPN) is required");
    }
    if name.chars().count() > 256 {
        return Err("a principal name is at most 256 characters");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a principal name has no spaces or control characters");
    }
    Ok(name.to_ascii_lowercase())
}
