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
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(unauthenticated)?;
    if crate::oidc::looks_like_jwt(token) {
        return cp
            .oidc
            .authenticate(&cp.store, token)
            .await
            .map_err(Status::from);
    }
    if !token.starts_with(PREFIX) {
        return Err(unauthenticated());
    }
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
