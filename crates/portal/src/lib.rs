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

#![forbid(unsafe_code)]

pub mod config;
pub mod cp;
mod layout;
pub mod metrics;
mod pages;
pub mod session;
pub mod signin;
pub mod strings;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

pub use config::PortalConfig;
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
}

impl App {
    /// Discovers the provider and connects (lazily) to the control plane.
    pub async fn new(config: PortalConfig) -> anyhow::Result<Arc<App>> {
        let signin = signin::SignIn::discover(&config.oidc, &config.public_url).await?;
        let cp =
            cp::ControlPlane::connect(&config.control_plane_url, &config.control_plane_ca_file)?;
        let sessions = Arc::new(Sessions::new(Duration::from_secs(
            config.session_idle_seconds.max(60),
        )));
        Ok(Arc::new(App {
            metrics: metrics::Metrics::new(sessions.clone()),
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

/// A path of this portal, or `/me` (never an absolute URL: no open redirect).
pub(crate) fn local_path(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next.to_owned()
    } else {
        "/me".to_owned()
    }
}

fn signin_redirect(next: &str, strong: bool) -> Response {
    let next: String = url::form_urlencoded::byte_serialize(local_path(next).as_bytes()).collect();
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
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let next = local_path(q.get("next").map(String::as_str).unwrap_or("/me"));
    let strong = q.get("strong").is_some_and(|v| v == "1");
    let (url, pending) = app.signin.start(strong, &next);
    let (id, mut s) = match app.session(&headers) {
        Some(found) => found,
        None => app.sessions.create(),
    };
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
            let (new_id, mut fresh) = app.sessions.create();
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

/// Serves `router(app)` over TLS on `listener` until `shutdown` resolves.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let chain = std::fs::read_to_string(&app.config.tls_cert_file)?;
    let key = std::fs::read_to_string(&app.config.tls_key_file)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        writeback_identity::tls::certs_from_pem(&chain)?,
        writeback_identity::tls::key_from_pem(&key)?,
    )?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let service = router(app);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                tracing::debug!(%peer, "TLS handshake failed");
                return;
            };
            let hyper_service = hyper_util::service::TowerToHyperService::new(service);
            if let Err(e) =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), hyper_service)
                    .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_returns_only_to_paths_of_this_portal() {
        assert_eq!(local_path("/helpdesk?user=a"), "/helpdesk?user=a");
        assert_eq!(local_path("https://evil.example/"), "/me");
        assert_eq!(local_path("//evil.example/"), "/me");
        assert_eq!(local_path("/\\evil.example"), "/me");
        assert_eq!(local_path(""), "/me");
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
