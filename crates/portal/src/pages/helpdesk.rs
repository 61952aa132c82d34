//! The help desk (password administrators): find a user by UPN, reset their
//! password (with "must change at next sign-in" and unlock options), unlock
//! their account, and see their operation history with each outcome.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use writeback_proto::v1 as pb;
use zeroize::Zeroizing;

use super::selfservice::operation_result;
use super::{upn, viewer, when};
use crate::App;
use crate::cp::Refusal;
use crate::layout::{csrf_field, outcome, page};
use crate::session::{Session, SignedIn};
use crate::strings as s;

/// The operations table (shared with the audit log).
pub(crate) fn history(records: &[pb::OperationRecord]) -> Markup {
    html! {
        @if records.is_empty() { p { (s::NO_HISTORY) } } @else {
            table {
                thead { tr { th { "When" } th { "What" } th { "User" } th { "By" } th { "Outcome" } } }
                tbody {
                    @for r in records {
                        @let outcome = r.outcome.clone().unwrap_or_default();
                        @let kind = pb::OperationKind::try_from(r.kind).map_or("-".to_owned(), |k| k.as_str_name().trim_start_matches("OPERATION_KIND_").to_ascii_lowercase());
                        tr {
                            td { a href=(format!("/admin/operation?id={}", r.operation_id)) { (when(r.created_at.as_ref())) } }
                            td { (kind) }
                            td { (r.target.trim_start_matches("upn:")) }
                            td { (r.principal) }
                            td data-reason=(outcome.reason_code) { (if r.state == "pending" { "pending".to_owned() } else { outcome.reason_code.clone() }) }
                        }
                    }
                }
            }
        }
    }
}

async fn render(
    app: &App,
    session: &Session,
    user: &SignedIn,
    target: &str,
    result: Option<Markup>,
) -> Markup {
    let found = if target.is_empty() {
        None
    } else {
        let audit = app
            .cp
            .audit()
            .list_audit(app.cp.request(
                &user.access_token,
                pb::ListAuditRequest {
                    user: target.to_owned(),
                    page_size: 50,
                    page_token: String::new(),
                    ..Default::default()
                },
            ))
            .await
            .map(tonic::Response::into_inner)
            .map_err(Refusal::from);
        Some(audit)
    };
    let body = html! {
        @if let Some(r) = result { (r) }
        section aria-labelledby="find" {
            h2 id="find" { (s::FIND_USER) }
            form method="get" action="/helpdesk" {
                label for="find-user" { (s::USER_UPN) }
                input id="find-user" type="email" name="user" value=(target) required autocomplete="off";
                button type="submit" { (s::SUBMIT_FIND) }
            }
        }
        @if !target.is_empty() {
            section aria-labelledby="reset" {
                h2 id="reset" { (s::HD_RESET_TITLE) " " (target) }
                form method="post" action="/helpdesk/reset" {
                    (csrf_field(&session.csrf))
                    input type="hidden" name="user" value=(target);
                    label for="hd-new" { (s::NEW_PASSWORD) }
                    input id="hd-new" type="password" name="new" required autocomplete="new-password";
                    label.check { input type="checkbox" name="must_change" value="1" checked; " " (s::MUST_CHANGE) }
                    label.check { input type="checkbox" name="unlock" value="1"; " " (s::ALSO_UNLOCK) }
                    button type="submit" { (s::SUBMIT_RESET) }
                }
            }
            section aria-labelledby="unlock" {
                h2 id="unlock" { (s::HD_UNLOCK_TITLE) " " (target) }
                form method="post" action="/helpdesk/unlock" {
                    (csrf_field(&session.csrf))
                    input type="hidden" name="user" value=(target);
                    button type="submit" { (s::SUBMIT_UNLOCK) }
                }
            }
            section aria-labelledby="history" {
                h2 id="history" { (s::HISTORY) }
                @match &found {
                    Some(Ok(page)) => (history(&page.records)),
                    Some(Err(r)) => (outcome(&r.reason, &r.message, None)),
                    None => {}
                }
            }
        }
    };
    page(s::NAV_HELPDESK, &viewer(session, user), body)
}

/// `GET /helpdesk?user=…`.
pub async fn show(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let target = q
        .get("user")
        .map(|u| u.trim().to_owned())
        .unwrap_or_default();
    let here = uri.path_and_query().map_or("/helpdesk", |p| p.as_str());
    match app.user(&headers, here) {
        Ok((_, session, user)) => render(&app, &session, &user, &target, None)
            .await
            .into_response(),
        Err(r) => *r,
    }
}

/// `POST /helpdesk/reset`.
pub async fn reset(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    axum::Form(mut form): axum::Form<HashMap<String, String>>,
) -> Response {
    let (_, session, user) = match app.form_user(&headers, &form, "/helpdesk") {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let target = form.get("user").cloned().unwrap_or_default();
    let new = Zeroizing::new(form.remove("new").unwrap_or_default());
    let r = app
        .cp
        .reset(
            &user.access_token,
            pb::ResetPasswordRequest {
                user: Some(upn(&target)),
                new_password: new.to_string(),
                must_change_at_next_logon: form.contains_key("must_change"),
                unlock: form.contains_key("unlock"),
                ..Default::default()
            },
        )
        .await;
    render(&app, &session, &user, &target, Some(operation_result(r)))
        .await
        .into_response()
}

/// `POST /helpdesk/unlock`.
pub async fn unlock(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let (_, session, user) = match app.form_user(&headers, &form, "/helpdesk") {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let target = form.get("user").cloned().unwrap_or_default();
    let r = app
        .cp
        .unlock(
            &user.access_token,
            pb::UnlockAccountRequest {
                user: Some(upn(&target)),
                ..Default::default()
            },
        )
        .await;
    render(&app, &session, &user, &target, Some(operation_result(r)))
        .await
        .into_response()
}
