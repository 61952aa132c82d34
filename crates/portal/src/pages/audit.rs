//! The audit log (administrators): the three trails the control plane
//! keeps — password operations, administrative changes and security events
//! (global administrators only) — with the filters its API has, as
//! `writebackctl audit list` offers them: principal, user, a time window
//! (dates, UTC), and for operations the state and the reason code, for
//! administrative changes the action, for security events the reason code.
//! A filter the chosen trail does not have is refused in plain words, not
//! silently dropped. The filters live in the URL (a GET form), so a page of
//! results can be bookmarked and followed page by page.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use writeback_proto::v1 as pb;

use super::helpdesk::history;
use super::{viewer, when};
use crate::App;
use crate::cp::Refusal;
use crate::layout::{outcome, page};
use crate::strings as s;

/// Records per page.
const PAGE_SIZE: u32 = 50;

/// Which trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Operations,
    Administration,
    Security,
}

impl Kind {
    fn parse(v: &str) -> Option<Kind> {
        match v {
            "" | "operations" => Some(Kind::Operations),
            "administration" => Some(Kind::Administration),
            "security" => Some(Kind::Security),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Operations => "operations",
            Kind::Administration => "administration",
            Kind::Security => "security",
        }
    }
}

/// The filters of one request, as the form and the URL carry them.
#[derive(Debug, Default)]
struct Filters {
    kind: String,
    principal: String,
    user: String,
    since: String,
    until: String,
    state: String,
    reason: String,
    action: String,
}

impl Filters {
    fn from_query(q: &HashMap<String, String>) -> Filters {
        let get = |k: &str| q.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
        Filters {
            kind: get("kind"),
            principal: get("principal"),
            user: get("user"),
            since: get("since"),
            until: get("until"),
            state: get("state"),
            reason: get("reason"),
            action: get("action"),
        }
    }

    /// The query string of these filters (for the next page's link).
    fn query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("kind", &self.kind),
            ("principal", &self.principal),
            ("user", &self.user),
            ("since", &self.since),
            ("until", &self.until),
            ("state", &self.state),
            ("reason", &self.reason),
            ("action", &self.action),
        ] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        q.finish()
    }

    /// Refuses a filter the trail does not have (as `writebackctl` does).
    fn check(&self, kind: Kind) -> Result<(), String> {
        let refuse = |what: &str, kinds: &str| Err(format!("{what} {kinds}"));
        match kind {
            Kind::Operations if !self.action.is_empty() => {
                refuse(s::AUDIT_FILTER_ACTION, s::AUDIT_ONLY_ADMINISTRATION)
            }
            Kind::Administration if !self.user.is_empty() => {
                refuse(s::AUDIT_FILTER_USER, s::AUDIT_NOT_ADMINISTRATION)
            }
            Kind::Administration if !self.reason.is_empty() => {
                refuse(s::AUDIT_FILTER_REASON, s::AUDIT_NOT_ADMINISTRATION)
            }
            Kind::Administration | Kind::Security if !self.state.is_empty() => {
                refuse(s::AUDIT_FILTER_STATE, s::AUDIT_ONLY_OPERATIONS)
            }
            Kind::Security if !self.action.is_empty() => {
                refuse(s::AUDIT_FILTER_ACTION, s::AUDIT_ONLY_ADMINISTRATION)
            }
            _ => Ok(()),
        }
    }
}

/// A date (`YYYY-MM-DD`, what `<input type=date>` sends; midnight UTC) or
/// an RFC 3339 time. `end_of_day`: a bare date stands for the end of that
/// day (the "until" of a window that includes it).
fn parse_time(v: &str, end_of_day: bool) -> Result<Option<prost_types::Timestamp>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let bad = || format!("{v:?}: {}", s::AUDIT_BAD_TIME);
    let t = if let Ok(t) =
        time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
    {
        t
    } else {
        let mut parts = v.splitn(3, '-').map(str::parse::<i32>);
        let (Some(Ok(y)), Some(Ok(m)), Some(Ok(d))) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let month = u8::try_from(m)
            .ok()
            .and_then(|m| time::Month::try_from(m).ok())
            .ok_or_else(bad)?;
        let day = u8::try_from(d).map_err(|_| bad())?;
        let date = time::Date::from_calendar_date(y, month, day).map_err(|_| bad())?;
        let date = if end_of_day {
            date.next_day().ok_or_else(bad)?
        } else {
            date
        };
        date.midnight().assume_utc()
    };
    Ok(Some(writeback_core::operation::to_timestamp(t)))
}

/// `GET /admin/audit?kind=…&principal=…&user=…&since=…&until=…&state=…&reason=…&action=…&page=…`.
pub async fn show(
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
    let f = Filters::from_query(&q);
    let page_token = q.get("page").cloned().unwrap_or_default();
    let result = match list(&app, &user.access_token, &f, page_token).await {
        Ok(found) => found,
        Err(refused) => html! { (outcome(&refused.reason, &refused.message, None)) },
    };
    let global = user.role == Some(pb::Role::GlobalAdmin);
    let body = html! {
        (form(&f, global))
        (result)
    };
    page(s::AUDIT_TITLE, &viewer(&session, &user), body).into_response()
}

fn invalid(message: String) -> Refusal {
    Refusal {
        reason: "INVALID_ARGUMENT".into(),
        message,
        retry_after: None,
    }
}

/// One page of the chosen trail, rendered; or why not.
async fn list(
    app: &App,
    token: &secrecy::SecretString,
    f: &Filters,
    page_token: String,
) -> Result<Markup, Refusal> {
    let kind = Kind::parse(&f.kind).ok_or_else(|| invalid(s::AUDIT_BAD_KIND.into()))?;
    f.check(kind).map_err(invalid)?;
    let since = parse_time(&f.since, false).map_err(invalid)?;
    let until = parse_time(&f.until, true).map_err(invalid)?;
    let audit = app.cp.audit();
    let (table, next) = match kind {
        Kind::Operations => {
            let r = audit
                .clone()
                .list_audit(app.cp.request(
                    token,
                    pb::ListAuditRequest {
                        user: f.user.clone(),
                        page_size: PAGE_SIZE,
                        page_token,
                        principal: f.principal.clone(),
                        since,
                        until,
                        state: f.state.clone(),
                        reason_code: f.reason.clone(),
                    },
                ))
                .await?
                .into_inner();
            (history(&r.records), r.next_page_token)
        }
        Kind::Administration => {
            let r = audit
                .clone()
                .list_admin_events(app.cp.request(
                    token,
                    pb::ListAdminEventsRequest {
                        page_size: PAGE_SIZE,
                        page_token,
                        principal: f.principal.clone(),
                        since,
                        until,
                        action: f.action.clone(),
                    },
                ))
                .await?
                .into_inner();
            (admin_events(&r.events), r.next_page_token)
        }
        Kind::Security => {
            let r = audit
                .clone()
                .list_security_events(app.cp.request(
                    token,
                    pb::ListSecurityEventsRequest {
                        page_size: PAGE_SIZE,
                        page_token,
                        principal: f.principal.clone(),
                        user: f.user.clone(),
                        since,
                        until,
                        kind: String::new(),
                        reason_code: f.reason.clone(),
                    },
                ))
                .await?
                .into_inner();
            (security_events(&r.events), r.next_page_token)
        }
    };
    Ok(html! {
        (table)
        @if !next.is_empty() {
            @let sep = if f.query().is_empty() { "" } else { "&" };
            a href=(format!("/admin/audit?{}{sep}page={}", f.query(), url_encode(&next))) { (s::NEXT_PAGE) }
        }
    })
}

fn url_encode(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// The filter form (security events only for global administrators, who
/// alone may read them).
fn form(f: &Filters, global: bool) -> Markup {
    let kind = Kind::parse(&f.kind).unwrap_or(Kind::Operations);
    let mut kinds = vec![
        (Kind::Operations, s::AUDIT_KIND_OPERATIONS),
        (Kind::Administration, s::AUDIT_KIND_ADMINISTRATION),
    ];
    if global {
        kinds.push((Kind::Security, s::AUDIT_KIND_SECURITY));
    }
    let text = |id: &str, name: &str, label: &str, value: &str, kind: &str| {
        html! {
            div.field {
                label for=(id) { (label) }
                input id=(id) type=(kind) name=(name) value=(value) autocomplete="off";
            }
        }
    };
    html! {
        form.filters method="get" action="/admin/audit" aria-label=(s::FILTER) {
            div.field {
                label for="audit-kind" { (s::AUDIT_FILTER_KIND) }
                select id="audit-kind" name="kind" {
                    @for (k, label) in &kinds {
                        option value=(k.as_str()) selected[*k == kind] { (label) }
                    }
                }
            }
            (text("audit-principal", "principal", s::AUDIT_FILTER_PRINCIPAL, &f.principal, "text"))
            (text("audit-user", "user", s::AUDIT_FILTER_USER, &f.user, "text"))
            (text("audit-since", "since", s::AUDIT_FILTER_SINCE, &f.since, "date"))
            (text("audit-until", "until", s::AUDIT_FILTER_UNTIL, &f.until, "date"))
            div.field {
                label for="audit-state" { (s::AUDIT_FILTER_STATE) }
                select id="audit-state" name="state" {
                    @for (v, label) in [("", s::AUDIT_ANY), ("pending", "pending"), ("succeeded", "succeeded"), ("failed", "failed")] {
                        option value=(v) selected[f.state == v] { (label) }
                    }
                }
            }
            (text("audit-reason", "reason", s::AUDIT_FILTER_REASON, &f.reason, "text"))
            (text("audit-action", "action", s::AUDIT_FILTER_ACTION, &f.action, "text"))
            button type="submit" { (s::FILTER) }
        }
    }
}

fn admin_events(events: &[pb::AdminEvent]) -> Markup {
    html! {
        @if events.is_empty() { p { (s::NO_HISTORY) } } @else {
            table data-trail="administration" {
                thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Object" } th { "Details" } } }
                tbody {
                    @for e in events {
                        tr {
                            td { (when(e.at.as_ref())) }
                            td { (e.principal) }
                            td data-action=(e.action) { (e.action) }
                            td { (e.object) }
                            td { code { (e.details_json) } }
                        }
                    }
                }
            }
        }
    }
}

fn security_events(events: &[pb::SecurityEvent]) -> Markup {
    html! {
        @if events.is_empty() { p { (s::NO_HISTORY) } } @else {
            table data-trail="security" {
                thead { tr { th { "When" } th { "What" } th { "Who" } th { "User" } th { "From" } th { "Outcome" } } }
                tbody {
                    @for e in events {
                        tr {
                            td { (when(e.at.as_ref())) }
                            td { (e.kind) @if !e.detail.is_empty() { " (" (e.detail) ")" } }
                            td { (e.principal) }
                            td { (e.target.trim_start_matches("upn:")) }
                            td { (e.source) }
                            td data-reason=(e.reason_code) {
                                (e.reason_code)
                                @if e.suppressed > 0 { " (+" (e.suppressed) ")" }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_whole_utc_days_and_rfc3339_is_accepted() {
        let since = parse_time("2026-03-01", false).unwrap().unwrap();
        let until = parse_time("2026-03-01", true).unwrap().unwrap();
        assert_eq!(until.seconds - since.seconds, 86_400);
        assert_eq!(since.seconds, 1_772_323_200);
        let t = parse_time("2026-03-01T08:00:00Z", false).unwrap().unwrap();
        assert_eq!(t.seconds, since.seconds + 8 * 3600);
        assert_eq!(parse_time("", true).unwrap(), None);
        assert!(parse_time("2026-02-30", false).is_err());
        assert!(parse_time("yesterday", false).is_err());
    }

    #[test]
    fn a_filter_the_trail_lacks_is_refused_not_dropped() {
        let f = Filters {
            state: "failed".into(),
            ..Filters::default()
        };
        assert!(f.check(Kind::Operations).is_ok());
        assert!(f.check(Kind::Administration).is_err());
        assert!(f.check(Kind::Security).is_err());
        let f = Filters {
            action: "settings.update".into(),
            ..Filters::default()
        };
        assert!(f.check(Kind::Administration).is_ok());
        assert!(f.check(Kind::Operations).is_err());
    }

    #[test]
    fn the_next_page_keeps_the_filters() {
        let f = Filters {
            kind: "operations".into(),
            user: "alice@contoso.test".into(),
            ..Filters::default()
        };
        assert_eq!(f.query(), "kind=operations&user=alice%40contoso.test");
    }
}
