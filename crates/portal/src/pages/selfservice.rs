//! "My account": the person's password rules (their effective policy, read
//! from the directory), then change, reset (after a strong sign-in) and
//! unlock, each answered in plain words with the next step.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use writeback_proto::v1 as pb;
use zeroize::Zeroizing;

use super::{upn, viewer, when};
use crate::App;
use crate::cp::Refusal;
use crate::layout::{csrf_field, outcome, page};
use crate::session::{Session, SignedIn};
use crate::strings as s;

fn duration(seconds: u64) -> String {
    match seconds {
        0 => "none".to_owned(),
        d if d % 86_400 == 0 => format!("{} days", d / 86_400),
        d if d % 3600 == 0 => format!("{} hours", d / 3600),
        d => format!("{} minutes", d.div_ceil(60)),
    }
}

/// The rules, and the attributes the as-you-type check reads.
fn rules(report: &pb::PolicyReport) -> (Markup, u32, bool, String) {
    let p = report.effective.clone().unwrap_or_default();
    let markup = html! {
        section aria-labelledby="rules" {
            h2 id="rules" { (s::POLICY_TITLE) }
            dl {
                dt { (s::POLICY_MIN_LENGTH) } dd data-policy="min-length" { (p.min_length) }
                dt { (if p.complexity { s::POLICY_COMPLEXITY } else { s::POLICY_NO_COMPLEXITY }) } dd {}
                dt { (s::POLICY_HISTORY) } dd { (p.history_length) }
                dt { (s::POLICY_MIN_AGE) } dd { (duration(p.min_age_seconds)) }
                dt { (s::POLICY_MAX_AGE) } dd {
                    (if p.max_age_seconds == 0 { s::POLICY_NEVER.to_owned() } else { duration(p.max_age_seconds) })
                }
            }
        }
    };
    (
        markup,
        p.min_length,
        p.complexity,
        report.account_name.clone(),
    )
}

/// The live checklist under a new-password field.
fn checklist(min: u32, complexity: bool) -> Markup {
    html! {
        ul.rules aria-live="polite" aria-label=(s::LIVE_CHECK_LABEL) {
            li data-rule="length" { (s::POLICY_MIN_LENGTH) ": " (min) }
            @if complexity { li data-rule="mix" { (s::POLICY_COMPLEXITY) } }
            li data-rule="account" { (s::POLICY_ACCOUNT_NAME) }
        }
    }
}

fn new_password_fields(prefix: &str, min: u32, complexity: bool) -> Markup {
    html! {
        label for=(format!("{prefix}-new")) { (s::NEW_PASSWORD) }
        input id=(format!("{prefix}-new")) type="password" name="new" required
            autocomplete="new-password" data-new-password;
        (checklist(min, complexity))
        label for=(format!("{prefix}-confirm")) { (s::CONFIRM_PASSWORD) }
        input id=(format!("{prefix}-confirm")) type="password" name="confirm" required autocomplete="new-password";
    }
}

async fn render(app: &App, session: &Session, user: &SignedIn, result: Option<Markup>) -> Markup {
    let report = app
        .cp
        .quality()
        .get_password_policy(app.cp.request(
            &user.access_token,
            pb::GetPasswordPolicyRequest {
                user: Some(upn(&user.principal)),
                domain: String::new(),
            },
        ))
        .await;
    let (policy, min, complexity, account) = match report {
        Ok(r) => rules(&r.into_inner().report.unwrap_or_default()),
        Err(e) => {
            let r = Refusal::from(e);
            (
                outcome(&r.reason, &r.message, None),
                0,
                false,
                String::new(),
            )
        }
    };
    let body = html! {
        p { (s::WELCOME) }
        @if let Some(r) = result { (r) }
        (policy)
        section aria-labelledby="change" {
            h2 id="change" { (s::CHANGE_TITLE) }
            p { (s::CHANGE_HELP) }
            form method="post" action="/me/change" data-min-length=(min)
                data-complexity=(complexity) data-account=(account) {
                (csrf_field(&session.csrf))
                label for="change-current" { (s::CURRENT_PASSWORD) }
                input id="change-current" type="password" name="current" required autocomplete="current-password";
                (new_password_fields("change", min, complexity))
                button type="submit" { (s::SUBMIT_CHANGE) }
            }
        }
        section aria-labelledby="reset" {
            h2 id="reset" { (s::RESET_TITLE) }
            p { (s::RESET_HELP) }
            @if user.strong {
                form method="post" action="/me/reset" data-min-length=(min)
                    data-complexity=(complexity) data-account=(account) {
                    (csrf_field(&session.csrf))
                    (new_password_fields("reset", min, complexity))
                    button type="submit" { (s::SUBMIT_RESET) }
                }
            } @else {
                a.button href="/signin?next=/me&strong=1" { (s::STRONG_SIGN_IN) }
            }
        }
        section aria-labelledby="unlock" {
            h2 id="unlock" { (s::UNLOCK_TITLE) }
            p { (s::UNLOCK_HELP) }
            @if user.strong {
                form method="post" action="/me/unlock" {
                    (csrf_field(&session.csrf))
                    button type="submit" { (s::SUBMIT_UNLOCK) }
                }
            } @else {
                a.button href="/signin?next=/me&strong=1" { (s::STRONG_SIGN_IN) }
            }
        }
    };
    page(s::NAV_ME, &viewer(session, user), body)
}

/// `GET /me`.
pub async fn show(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match app.user(&headers, "/me") {
        Ok((_, session, user)) => render(&app, &session, &user, None).await.into_response(),
        Err(r) => *r,
    }
}

/// The answer to an operation as a result box; `THROTTLED` and
/// `PASSWORD_MIN_AGE` say when to retry.
pub(crate) fn operation_result(r: Result<pb::OperationResponse, Refusal>) -> Markup {
    match r {
        Ok(ok) => {
            let o = ok.outcome.unwrap_or_default();
            outcome(&o.reason_code, &o.message, None)
        }
        Err(refusal) => {
            let retry = refusal.retry_after.map(|secs| {
                let at = time::OffsetDateTime::now_utc()
                    + time::Duration::seconds(i64::try_from(secs).unwrap_or(0));
                format!(
                    "Retry after {}",
                    when(Some(&prost_types::Timestamp {
                        seconds: at.unix_timestamp(),
                        nanos: 0
                    }))
                )
            });
            outcome(&refusal.reason, &refusal.message, retry.as_deref())
        }
    }
}

fn take(form: &mut HashMap<String, String>, name: &str) -> Zeroizing<String> {
    Zeroizing::new(form.remove(name).unwrap_or_default())
}

/// `POST /me/change`.
pub async fn change(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    axum::Form(mut form): axum::Form<HashMap<String, String>>,
) -> Response {
    let (_, session, user) = match app.form_user(&headers, &form, "/me") {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let (current, new, confirm) = (
        take(&mut form, "current"),
        take(&mut form, "new"),
        take(&mut form, "confirm"),
    );
    let result = if *new != *confirm {
        outcome("INVALID_ARGUMENT", s::MISMATCH, None)
    } else {
        let r = app
            .cp
            .change(
                &user.access_token,
                pb::ChangePasswordRequest {
                    user: Some(upn(&user.principal)),
                    old_password: current.to_string(),
                    new_password: new.to_string(),
                    ..Default::default()
                },
            )
            .await;
        operation_result(r)
    };
    render(&app, &session, &user, Some(result))
        .await
        .into_response()
}

/// `POST /me/reset` (strong sign-in only; the control plane checks again).
pub async fn reset(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    axum::Form(mut form): axum::Form<HashMap<String, String>>,
) -> Response {
    let (_, session, user) = match app.form_user(&headers, &form, "/me") {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let (new, confirm) = (take(&mut form, "new"), take(&mut form, "confirm"));
    let result = if *new != *confirm {
        outcome("INVALID_ARGUMENT", s::MISMATCH, None)
    } else {
        let r = app
            .cp
            .reset(
                &user.access_token,
                pb::ResetPasswordRequest {
                    user: Some(upn(&user.principal)),
                    new_password: new.to_string(),
                    ..Default::default()
                },
            )
            .await;
        operation_result(r)
    };
    render(&app, &session, &user, Some(result))
        .await
        .into_response()
}

/// `POST /me/unlock`.
pub async fn unlock(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let (_, session, user) = match app.form_user(&headers, &form, "/me") {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let r = app
        .cp
        .unlock(
            &user.access_token,
            pb::UnlockAccountRequest {
                user: Some(upn(&user.principal)),
                ..Default::default()
            },
        )
        .await;
    render(&app, &session, &user, Some(operation_result(r)))
        .await
        .into_response()
}
