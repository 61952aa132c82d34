//! "On-premises integration" (global administrators): the seed's three
//! toggles, each domain's agent set-up with every problem and warning, the
//! agents with version, health and revoke, one-time enrollment tokens with
//! the exact command to run, and one operation's detail (linked from the
//! audit log, [`super::audit`]).
//! The control plane refuses whatever the viewer's role may not do; the
//! page shows that refusal in plain words.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use writeback_proto::v1 as pb;

use super::{viewer, when};
use crate::App;
use crate::cp::Refusal;
use crate::layout::{csrf_field, outcome, page};
use crate::session::{Session, SignedIn};
use crate::strings as s;

fn refusal(r: &Refusal) -> Markup {
    outcome(&r.reason, &r.message, None)
}

fn toggle(name: &str, label: &str, on: bool) -> Markup {
    html! {
        label.check { input type="checkbox" name=(name) value="1" checked[on]; " " (label) }
    }
}

async fn render(app: &App, session: &Session, user: &SignedIn, result: Option<Markup>) -> Markup {
    let token = &user.access_token;
    let status = app
        .cp
        .settings()
        .get_status(app.cp.request(token, pb::GetStatusRequest {}))
        .await
        .map(tonic::Response::into_inner)
        .map_err(Refusal::from);
    let agents = app
        .cp
        .agents()
        .list_agents(app.cp.request(token, pb::ListAgentsRequest::default()))
        .await
        .map(tonic::Response::into_inner)
        .map_err(Refusal::from);
    let body = html! {
        @if let Some(r) = result { (r) }
        @match &status {
            Err(r) => (refusal(r)),
            Ok(st) => {
                @let settings = st.settings.unwrap_or_default();
                section aria-labelledby="toggles" {
                    h2 id="toggles" { (s::TOGGLES_TITLE) }
                    form method="post" action="/admin/settings" {
                        (csrf_field(&session.csrf))
                        (toggle("cloud_sync_writeback", s::TOGGLE_CLOUD_SYNC, settings.cloud_sync_writeback))
                        (toggle("sspr_writeback", s::TOGGLE_SSPR, settings.sspr_writeback))
                        (toggle("unlock_without_reset", s::TOGGLE_UNLOCK, settings.unlock_without_reset))
                        button type="submit" { (s::SAVE) }
                    }
                }
                section aria-labelledby="domains" {
                    h2 id="domains" { (s::DOMAINS_TITLE) }
                    @for d in &st.domains {
                        h3 { (d.domain) }
                        p data-domain=(d.domain) data-complete=(d.setup_complete) {
                            (if d.setup_complete { s::SETUP_COMPLETE } else { s::SETUP_INCOMPLETE })
                            " (" (d.agents_online) " of " (d.agents_enrolled) " agents online)"
                        }
                        @if !d.problems.is_empty() { ul.problems { @for p in &d.problems { li { (p) } } } }
                        @if !d.warnings.is_empty() { ul.warnings { @for w in &d.warnings { li { (w) } } } }
                    }
                }
                section aria-labelledby="enroll" {
                    h2 id="enroll" { (s::ENROLL_TITLE) }
                    p { (s::ENROLL_HELP) }
                    form method="post" action="/admin/enroll" {
                        (csrf_field(&session.csrf))
                        label for="enroll-domain" { (s::DOMAIN) }
                        select id="enroll-domain" name="domain" {
                            @for d in &st.domains { option value=(d.domain) { (d.domain) } }
                        }
                        button type="submit" { (s::ENROLL_SUBMIT) }
                    }
                }
            }
        }
        section aria-labelledby="agents" {
            h2 id="agents" { (s::AGENTS_TITLE) }
            @match &agents {
                Err(r) => (refusal(r)),
                Ok(list) => table {
                    thead { tr { th { "Agent" } th { (s::DOMAIN) } th { "Host" } th { "Version" } th { "Health" } th {} } }
                    tbody {
                        @for a in &list.agents {
                            tr {
                                td { code { (a.agent_id) } }
                                td { (a.domain) }
                                td { (a.hostname) }
                                td { (a.version) }
                                td { (if a.revoked { "revoked" } else if a.online { "online" } else { "offline" }) }
                                td {
                                    @if !a.revoked {
                                        form method="post" action="/admin/revoke" {
                                            (csrf_field(&session.csrf))
                                            input type="hidden" name="agent_id" value=(a.agent_id);
                                            button type="submit" aria-label=(format!("{} {}", s::REVOKE, a.agent_id)) { (s::REVOKE) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                },
            }
        }
    };
    page(s::NAV_ADMIN, &viewer(session, user), body)
}

/// `GET /admin`.
pub async fn show(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match app.user(&headers, "/admin") {
        Ok((_, session, user)) => render(&app, &session, &user, None).await.into_response(),
        Err(r) => *r,
    }
}

fn ok_box(message: &str) -> Markup {
    outcome("OK", message, None)
}

/// `POST /admin/settings`: the three toggles, as one update.
pub async fn settings(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let (_, session, user) = match app.form_user(&headers, &form, "/admin") {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let r = app
        .cp
        .settings()
        .update_settings(app.cp.request(
            &user.access_token,
            pb::UpdateSettingsRequest {
                cloud_sync_writeback: Some(form.contains_key("cloud_sync_writeback")),
                sspr_writeback: Some(form.contains_key("sspr_writeback")),
                unlock_without_reset: Some(form.contains_key("unlock_without_reset")),
            },
        ))
        .await;
    let result = match r {
        Ok(_) => ok_box("the settings were saved"),
        Err(e) => refusal(&Refusal::from(e)),
    };
    render(&app, &session, &user, Some(result))
        .await
        .into_response()
}

/// `POST /admin/revoke`.
pub async fn revoke(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let (_, session, user) = match app.form_user(&headers, &form, "/admin") {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let id = form.get("agent_id").cloned().unwrap_or_default();
    let r = app
        .cp
        .agents()
        .revoke_agent(app.cp.request(
            &user.access_token,
            pb::RevokeAgentRequest {
                agent_id: id.clone(),
            },
        ))
        .await;
    let result = match r {
        Ok(_) => ok_box(&format!("agent {id} was revoked")),
        Err(e) => refusal(&Refusal::from(e)),
    };
    render(&app, &session, &user, Some(result))
        .await
        .into_response()
}

/// `POST /admin/enroll`: the token is shown once, in this answer only.
pub async fn enroll(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let (_, session, user) = match app.form_user(&headers, &form, "/admin") {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let domain = form.get("domain").cloned().unwrap_or_default();
    let r = app
        .cp
        .agents()
        .create_enrollment_token(app.cp.request(
            &user.access_token,
            pb::CreateEnrollmentTokenRequest {
                domain: domain.clone(),
                ttl_seconds: 0,
            },
        ))
        .await;
    let result = match r {
        Ok(t) => {
            let t = t.into_inner();
            html! {
                div.outcome.ok role="status" {
                    p { "Enrollment token for " (domain) " (expires " (when(t.expires_at.as_ref())) "). " (s::ENROLL_SHOWN_ONCE) }
                    pre data-enrollment-token { (t.token) }
                    pre { "writeback-agent enroll --control-plane " (app.config.control_plane_url) " --token-file token --state-dir /var/lib/writeback-agent" }
                }
            }
        }
        Err(e) => refusal(&Refusal::from(e)),
    };
    render(&app, &session, &user, Some(result))
        .await
        .into_response()
}

/// `GET /admin/operation?id=…`.
pub async fn operation(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let here = uri.path_and_query().map_or("/admin/audit", |p| p.as_str());
    let (_, session, user) = match app.user(&headers, here) {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let id = q.get("id").cloned().unwrap_or_default();
    let r = app
        .cp
        .audit()
        .get_operation(app.cp.request(
            &user.access_token,
            pb::GetOperationRequest { operation_id: id },
        ))
        .await
        .map(tonic::Response::into_inner)
        .map_err(Refusal::from);
    let body = match &r {
        Err(e) => refusal(e),
        Ok(op) => {
            let o = op.outcome.clone().unwrap_or_default();
            html! {
                dl {
                    dt { "Operation" } dd { code { (op.operation_id) } }
                    dt { "User" } dd { (op.target.trim_start_matches("upn:")) }
                    dt { (s::DOMAIN) } dd { (op.domain) }
                    dt { "Asked by" } dd { (op.principal) }
                    dt { "State" } dd { (op.state) }
                    dt { "Accepted" } dd { (when(op.created_at.as_ref())) }
                    dt { "Finished" } dd { (when(op.finished_at.as_ref())) }
                    dt { "Agent" } dd { (op.agent_id) }
                    dt { "Relay" } dd { (op.relay_id) }
                    dt { "Time" } dd { (op.duration_ms) " ms (agent " (op.agent_duration_ms) " ms)" }
                }
                (outcome(&o.reason_code, &o.message, None))
            }
        }
    };
    page(s::OPERATION_TITLE, &viewer(&session, &user), body).into_response()
}
