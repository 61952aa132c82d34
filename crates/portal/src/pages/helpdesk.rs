//! The help desk (password administrators): find a user by the start of a
//! name (`GET /helpdesk?q=…`, the control plane's `SearchUsers`, answered
//! by the domains' agents within their scope) in a table linking each user
//! to their page (`GET /helpdesk?user=…`): reset their password (with "must
//! change at next sign-in" and unlock options), unlock their account, and
//! see their operation history with each outcome. No script: a plain GET
//! form and links.

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

/// The search form, keeping what was typed.
fn search_form(query: &str) -> Markup {
    html! {
        section aria-labelledby="find" {
            h2 id="find" { (s::FIND_USER) }
            form.search method="get" action="/helpdesk" role="search" {
                label for="find-query" { (s::SEARCH_LABEL) }
                p.hint id="find-hint" { (s::SEARCH_HINT) }
                input id="find-query" type="search" name="q" value=(query) required minlength="2"
                    maxlength="64" autocomplete="off" spellcheck="false" aria-describedby="find-hint";
                button type="submit" { (s::SUBMIT_FIND) }
            }
        }
    }
}

/// The page of the user `upn` (the query string encoded).
fn user_link(upn: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("user", upn)
        .finish();
    format!("/helpdesk?{query}")
}

/// What a search found, as a table: each user links to their page.
fn search_results(query: &str, found: &Result<pb::SearchUsersResponse, Refusal>) -> Markup {
    html! {
        section aria-labelledby="results" data-results {
            h2 id="results" { (s::RESULTS_CAPTION) " “" (query) "”" }
            @match found {
                Err(r) => (outcome(&r.reason, &r.message, None)),
                Ok(found) => {
                    @for p in &found.problems {
                        p.note role="status" data-problem=(p.reason_code) {
                            (s::DOMAIN_NOT_SEARCHED) " " (p.domain) " — " (s::explain(&p.reason_code, &p.message))
                        }
                    }
                    @if found.users.is_empty() {
                        p role="status" data-found="0" { (s::NO_USER_FOUND) }
                    } @else {
                        {
                            table.users data-found=(found.users.len()) {
                                caption.visually-hidden { (s::RESULTS_CAPTION) " “" (query) "”" }
                                thead { tr {
                                    th scope="col" { (s::COL_NAME) }
                                    th scope="col" { (s::COL_UPN) }
                                    th scope="col" { (s::COL_STATE) }
                                    th scope="col" { (s::COL_WRITEBACK) }
                                } }
                                tbody {
                                    @for u in &found.users {
                                        @let name = if u.display_name.is_empty() { u.account_name.as_str() } else { u.display_name.as_str() };
                                        tr data-upn=(u.upn) data-account=(u.account_name) data-eligible=(u.eligible) {
                                            th scope="row" {
                                                @if u.upn.is_empty() { (name) } @else {
                                                    a href=(user_link(&u.upn)) { (name) }
                                                }
                                            }
                                            td data-label=(s::COL_UPN) { (if u.upn.is_empty() { &u.account_name } else { &u.upn }) }
                                            td data-label=(s::COL_STATE) {
                                                (if u.enabled { s::STATE_ENABLED } else { s::STATE_DISABLED })
                                                @if u.locked_out { ", " strong data-locked { (s::STATE_LOCKED) } }
                                            }
                                            td data-label=(s::COL_WRITEBACK) data-reason=(u.ineligible_reason) {
                                                @if u.eligible { (s::ELIGIBLE) } @else {
                                                    (s::NOT_ELIGIBLE) " " (s::explain(&u.ineligible_reason, ""))
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        @if found.truncated { p.note role="status" data-truncated { (s::MORE_RESULTS) } }
                    }
                }
            }
        }
    }
}

/// `GET /helpdesk?q=…`: the search form and what it found.
async fn render_search(app: &App, session: &Session, user: &SignedIn, query: &str) -> Markup {
    let found = app.cp.search_users(&user.access_token, query).await;
    let body = html! {
        (search_form(query))
        (search_results(query, &found))
    };
    page(s::NAV_HELPDESK, &viewer(session, user), body)
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
        (search_form(""))
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

/// `GET /helpdesk`, `GET /helpdesk?q=…` (search) or `GET /helpdesk?user=…`
/// (one user's page).
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
    let query = q.get("q").map(|q| q.trim().to_owned()).unwrap_or_default();
    match app.user(&headers, here) {
        Ok((_, session, user)) if target.is_empty() && !query.is_empty() => {
            render_search(&app, &session, &user, &query)
                .await
                .into_response()
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn user(upn: &str, name: &str, eligible: bool) -> pb::DirectoryUser {
        pb::DirectoryUser {
            upn: upn.into(),
            display_name: name.into(),
            enabled: true,
            eligible,
            ineligible_reason: if eligible {
                String::new()
            } else {
                "PROTECTED_ACCOUNT".into()
            },
            ..Default::default()
        }
    }

    /// Results are a table with headers, each user a link to their page
    /// (the UPN encoded), the ineligible ones said so in plain words, and
    /// what was typed is escaped.
    #[test]
    fn results_are_an_accessible_table_of_links() {
        let found = Ok(pb::SearchUsersResponse {
            users: vec![
                user("alice+x@contoso.test", "Alice <Liddell>", true),
                user("administrator@contoso.test", "", false),
            ],
            truncated: true,
            problems: vec![],
        });
        let html = search_results("al<i", &found).into_string();
        assert!(html.contains("<th scope=\"col\">"), "{html}");
        assert!(
            html.contains("href=\"/helpdesk?user=alice%2Bx%40contoso.test\""),
            "{html}"
        );
        assert!(html.contains("Alice &lt;Liddell&gt;"), "{html}");
        assert!(html.contains("al&lt;i"), "{html}");
        assert!(html.contains("data-reason=\"PROTECTED_ACCOUNT\""), "{html}");
        assert!(html.contains("data-truncated"), "{html}");
        let refused = Err(Refusal {
            reason: "QUERY_TOO_SHORT".into(),
            message: "type at least 2 characters".into(),
            retry_after: None,
        });
        let html = search_results("a", &refused).into_string();
        assert!(html.contains("data-reason=\"QUERY_TOO_SHORT\""), "{html}");
    }
}
