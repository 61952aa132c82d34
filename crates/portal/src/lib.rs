//! The writeback web portals, one service: **self-service** (change, reset
//! after a strong sign-in, unlock — with the account's password rules shown
//! and checked as the user types), the **help desk** (find a user by the
//! start of a name, reset, unlock, their history), the **audit log** (the three trails with the
//! control plane's filters) and the global administrator's **on-premises
//! integration** page (the three toggles, each domain's set-up status,
//! agents, enrollment tokens). The navigation offers each person the pages
//! of the role the control plane names for their token (`WhoAmI`).
//!
//! People sign in through the tenant's OpenID Connect provider
//! ([`signin`]: authorization code + PKCE) and the portal calls the control
//! plane's gRPC API with their access token ([`cp`]), so the control plane
//! decides what each person may do. Server-rendered HTML with one
//! first-party script; a strict Content-Security-Policy and other security
//! headers on every answer; a CSRF token in every form; server-side
//! sessions ([`session`]) behind a `__Host-` cookie; no password or token in
//! a URL, a cookie or a log line. Every sentence lives in [`strings`].
//! Requests, sign-ins and sessions are counted for Prometheus ([`metrics`],
//! served on `metrics_listen` when set).
//!
//! After a sign-in the browser goes back only to one of the portal's own
//! pages ([`return_path`]: a known route, with a query of safe characters),
//! never to an address a link chose. What one source address may take —
//! connections, handshake and header time, sign-ins, sessions — is bounded
//! ([`limits`], served by [`serve`]), with a `429` page past a limit.

#![forbid(unsafe_code)]

pub mod config;
pub mod cp;
mod layout;
pub mod limits;
pub mod metrics;
mod pages;
mod server;
pub mod session;
pub mod signin;
pub mod strings;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

pub use config::PortalConfig;
use limits::Peer;
pub use server::serve;
use session::{Session, Sessions, SignedIn};

/// Everything the handlers share.
#[derive(Debug)]
pub struct App {
    /// Configuration.
    pub config: PortalConfig,
    /// The control plane.
    pub cp: cp::ControlPlane,
    /// The identity provider.
    pub signin: signin::SignIn,
    /// Sessions.
    pub sessions: Arc<Sessions>,
    /// Prometheus metrics.
    pub metrics: metrics::Metrics,
    /// What one source may take.
    pub limits: limits::Limits,
}

impl App {
    /// Discovers the provider and connects (lazily) to the control plane.
    pub async fn new(config: PortalConfig) -> anyhow::Result<Arc<App>> {
        let signin = signin::SignIn::discover(&config.oidc, &config.public_url).await?;
        App::with_sign_in(config, signin)
    }

    /// [`App::new`] with the provider already set up.
    pub fn with_sign_in(config: PortalConfig, signin: signin::SignIn) -> anyhow::Result<Arc<App>> {
        let cp =
            cp::ControlPlane::connect(&config.control_plane_url, &config.control_plane_ca_file)?;
        let sessions = Arc::new(Sessions::new(
            Duration::from_secs(config.session_idle_seconds.max(60)),
            config.limits.max_sessions,
            config.limits.max_pending_signins_per_source,
        ));
        Ok(Arc::new(App {
            metrics: metrics::Metrics::new(sessions.clone()),
            limits: limits::Limits::new(&config.limits),
            sessions,
            config,
            cp,
            signin,
        }))
    }

    /// The session behind the request's cookie, if it is alive.
    pub(crate) fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = session::cookie_id(headers)?;
        let s = self.sessions.get(&id)?;
        Some((id, s))
    }

    /// The signed-in person, or a redirect to sign in and come back to `here`.
    pub(crate) fn user(
        &self,
        headers: &HeaderMap,
        here: &str,
    ) -> Result<(String, Session, SignedIn), Box<Response>> {
        match self.session(headers) {
            Some((id, s)) => match s.user.clone() {
                Some(u) => Ok((id, s, u)),
                None => Err(Box::new(signin_redirect(here, false))),
            },
            None => Err(Box::new(signin_redirect(here, false))),
        }
    }

    /// [`App::user`] for a form POST: the CSRF token must match.
    pub(crate) fn form_user(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
        here: &str,
    ) -> Result<(String, Session, SignedIn), Box<Response>> {
        let (id, s, u) = self.user(headers, here)?;
        let sent = form.get("csrf").map(String::as_str).unwrap_or("");
        if !constant_time_eq(sent.as_bytes(), s.csrf.as_bytes()) {
            let expired = (
                StatusCode::FORBIDDEN,
                "the form has expired; reload the page",
            );
            return Err(Box::new(expired.into_response()));
        }
        Ok((id, s, u))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Longest `next` a sign-in returns to.
const MAX_RETURN: usize = 2048;

/// Where a sign-in may send the browser back to: `next` when its path is
/// one of the portal's own pages ([`pages::RETURN_PATHS`], compared whole)
/// and its query, if any, holds only letters, digits, `-._~*=&+@:,` and
/// well-formed `%XX` escapes; anything else is `/me`. Nothing a link
/// chooses can then make the browser leave the portal: no scheme, no host,
/// no `//` or `/\`, no tab or newline a browser would strip, no encoded
/// form of them (the path must be a known one byte for byte).
pub fn return_path(next: &str) -> String {
    let (path, query) = match next.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (next, None),
    };
    let known = pages::RETURN_PATHS.contains(&path);
    if known && next.len() <= MAX_RETURN && query.is_none_or(safe_query) {
        next.to_owned()
    } else {
        "/me".to_owned()
    }
}

/// A query of form-encoded pairs and nothing else.
fn safe_query(query: &str) -> bool {
    let bytes = query.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b"-._~*=&+@:,".contains(&b) => i += 1,
            _ => return false,
        }
    }
    true
}

fn signin_redirect(next: &str, strong: bool) -> Response {
    let next: String = url::form_urlencoded::byte_serialize(return_path(next).as_bytes()).collect();
    Redirect::to(&format!("/signin?next={next}&strong={}", u8::from(strong))).into_response()
}

/// Adds the security headers to every answer.
async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "strict-transport-security", "max-age=31536000");
    set(h, "cache-control", "no-store");
    response
}

/// The portal's routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/me") }))
        .route("/signin", get(start_signin))
        .route("/callback", get(callback))
        .route("/signout", post(signout))
        .route("/static/app.css", get(css))
        .route("/static/check.js", get(js))
        .merge(pages::routes())
        // After routing, so each request is counted by its route template.
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            metrics::count,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(app)
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css")],
        include_str!("../static/app.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript")],
        include_str!("../static/check.js"),
    )
}

async fn start_signin(
    State(app): State<Arc<App>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let peer = peer.map(|Extension(p)| p);
    if let Err(refused) = app.limits.sign_in(peer) {
        return *refused;
    }
    let next = return_path(q.get("next").map(String::as_str).unwrap_or("/me"));
    let strong = q.get("strong").is_some_and(|v| v == "1");
    let (id, mut s) = match app.session(&headers) {
        Some(found) => found,
        None => match app.sessions.create(peer.map(|Peer(a)| a.ip())) {
            Ok(made) => made,
            Err(full) => return session_refused(full),
        },
    };
    let (url, pending) = app.signin.start(strong, &next);
    s.pending = Some(pending);
    app.sessions.put(&id, s);
    (
        [(header::SET_COOKIE, session::set_cookie(&id))],
        Redirect::to(&url),
    )
        .into_response()
}

async fn callback(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    use metrics::SignInOutcome;
    let Some((id, mut s)) = app.session(&headers) else {
        app.metrics.sign_in(SignInOutcome::Mismatched);
        return (
            StatusCode::BAD_REQUEST,
            "no sign-in in progress; start again",
        )
            .into_response();
    };
    let Some(pending) = s.pending.take() else {
        app.metrics.sign_in(SignInOutcome::Mismatched);
        return (
            StatusCode::BAD_REQUEST,
            "no sign-in in progress; start again",
        )
            .into_response();
    };
    if let Some(e) = q.get("error") {
        tracing::info!(error = %e, "the provider refused the sign-in");
        app.metrics.sign_in(SignInOutcome::Refused);
        return (StatusCode::FORBIDDEN, format!("sign-in refused: {e}")).into_response();
    }
    let state = q.get("state").map(String::as_str).unwrap_or("");
    if !constant_time_eq(state.as_bytes(), pending.state.as_bytes()) {
        app.metrics.sign_in(SignInOutcome::Mismatched);
        return (
            StatusCode::BAD_REQUEST,
            "the sign-in answer does not match; start again",
        )
            .into_response();
    }
    let Some(code) = q.get("code") else {
        app.metrics.sign_in(SignInOutcome::Mismatched);
        return (StatusCode::BAD_REQUEST, "the provider sent no code").into_response();
    };
    match app.signin.finish(&pending, code).await {
        Ok(mut user) => {
            user.role = role_of(&app, &user).await;
            app.metrics.sign_in(SignInOutcome::Ok);
            tracing::info!(principal = %user.principal, strong = user.strong, role = ?user.role, "signed in");
            // A fresh session id after sign-in (no session fixation).
            app.sessions.remove(&id);
            let (new_id, mut fresh) = match app.sessions.create(None) {
                Ok(made) => made,
                Err(full) => return session_refused(full),
            };
            fresh.user = Some(user);
            app.sessions.put(&new_id, fresh);
            (
                [(header::SET_COOKIE, session::set_cookie(&new_id))],
                Redirect::to(&pending.next),
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "sign-in failed");
            app.metrics.sign_in(SignInOutcome::Failed);
            app.sessions.put(&id, s);
            (
                StatusCode::FORBIDDEN,
                Html(format!(
                    "<p>Sign-in failed: {}</p>",
                    maud::html!((e.to_string())).into_string()
                )),
            )
                .into_response()
        }
    }
}

/// The answer when no session could be made: `503` when every session is
/// taken, `429` when the source holds its share of sign-ins in progress.
fn session_refused(full: session::Full) -> Response {
    tracing::info!(?full, "sign-in refused: no session can be made");
    match full {
        session::Full::Total => limits::busy(Duration::from_secs(60)),
        session::Full::Source => limits::too_many(Duration::from_secs(60)),
    }
}

/// The signed-in person's role (`WhoAmI`), asked up to three times when the
/// control plane answers with a transient failure: the answer sets the
/// navigation for the whole session. `None` when it will not tell.
async fn role_of(app: &App, user: &SignedIn) -> Option<writeback_proto::v1::Role> {
    for attempt in 1..=3u64 {
        match app.cp.role(&user.access_token).await {
            Ok(role) => return Some(role),
            Err(r) => {
                tracing::info!(principal = %user.principal, reason = %r.reason, attempt,
                    "the control plane did not tell the role");
                if !matches!(r.reason.as_str(), "INTERNAL" | "UNAVAILABLE" | "TIMEOUT") {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(250 * attempt)).await;
            }
        }
    }
    None
}

async fn signout(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    if let Ok((id, ..)) = app.form_user(&headers, &form, "/me") {
        app.sessions.remove(&id);
    }
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/signed-out"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_returns_to_the_portal_s_own_pages() {
        for ok in [
            "/me",
            "/helpdesk",
            "/helpdesk?user=alice%40contoso.test",
            "/admin",
            "/admin/audit?kind=security&since=2026-01-01&reason=THROTTLED",
            "/admin/operation?id=0f5c3f0e-6a4e-4a8e-9f0e-2b1d6f1c9a11",
            "/admin/audit?user=a+b&until=2026-12-01T10:00:00Z",
        ] {
            assert_eq!(return_path(ok), ok);
        }
    }

    /// Everything a phishing link could put in `next` (as the portal sees
    /// it, once decoded from the sign-in URL) ends on `/me`.
    #[test]
    fn sign_in_never_returns_elsewhere() {
        for hostile in [
            "",
            "me",
            "https://evil.example/",
            "http:/evil.example",
            "javascript:alert(1)",
            "//evil.example/",
            "///evil.example/",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "\t//evil.example",
            "/%09/evil.example",
            "/%2F/evil.example",
            "/%2f%2fevil.example",
            "/%5Cevil.example",
            "/%5c%5cevil.example",
            "%2F%2Fevil.example",
            "/ /evil.example",
            "/me/../..//evil.example",
            "/me/",
            "/ME",
            "/me#//evil.example",
            "/me@evil.example",
            "/unknown",
            "/signin?next=//evil.example",
            "/callback?code=x",
            "/static/app.css",
            "/me?next=//evil.example#x",
            "/me?a=\\evil",
            "/me?a=b c",
            "/me?a=%zz",
            "/me?a=%2",
            "/helpdesk?user=\n",
        ] {
            assert_eq!(return_path(hostile), "/me", "{hostile:?}");
        }
        let long = format!("/helpdesk?user={}", "a".repeat(MAX_RETURN));
        assert_eq!(return_path(&long), "/me");
    }

    #[test]
    fn every_reason_gets_plain_words_and_a_next_step() {
        for code in writeback_core::ReasonCode::ALL {
            let text = strings::explain(code.as_str(), "details");
            assert!(!text.is_empty());
        }
        assert!(strings::explain("PASSWORD_MIN_AGE", "").contains("Wait until"));
        assert!(strings::explain("THROTTLED", "").contains("Wait until"));
        assert!(!strings::explain("OK", "ignored").contains("ignored"));
    }
}
