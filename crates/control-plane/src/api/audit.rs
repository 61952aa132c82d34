//! `AuditService`: one operation's record, and the three audit lists —
//! operations (administrators), the administrative trail (administrators)
//! and the security trail (global administrators) — newest first, paged,
//! filtered by principal, user, time and what happened. Read-only: no RPC
//! edits or deletes a record.

use writeback_proto::v1::audit_service_server::AuditService;

use super::*;
use crate::store::AuditFilter;

/// Unix milliseconds of a timestamp from a request (`None` when unset).
fn ms_of(t: Option<prost_types::Timestamp>) -> Option<i64> {
    t.map(|t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos.clamp(0, 999_999_999) / 1_000_000))
    })
}

/// A non-empty request string, trimmed.
fn given(s: String) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// The stored target key of a user given as a UPN or an objectGUID.
fn target_of(user: String) -> Option<String> {
    let user = given(user)?;
    Some(match uuid::Uuid::parse_str(&user) {
        Ok(guid) => format!("guid:{}", guid.hyphenated()),
        Err(_) => format!("upn:{}", user.to_ascii_lowercase()),
    })
}

/// The time range of a request, refused when it is empty by construction.
fn window(
    since: Option<prost_types::Timestamp>,
    until: Option<prost_types::Timestamp>,
) -> Result<(Option<i64>, Option<i64>), Status> {
    let (since, until) = (ms_of(since), ms_of(until));
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        return Err(status(
            ReasonCode::InvalidArgument,
            "`since` must be before `until`",
        ));
    }
    Ok((since, until))
}

/// A reason code filter: a known code, any case.
fn reason_filter(code: String) -> Result<Option<String>, Status> {
    let Some(code) = given(code) else {
        return Ok(None);
    };
    let upper = code.to_ascii_uppercase();
    match ReasonCode::parse(&upper) {
        Some(r) => Ok(Some(r.as_str().to_owned())),
        None => Err(status(
            ReasonCode::InvalidArgument,
            format!("{code:?} is not a reason code"),
        )),
    }
}

/// A filter value that must be one of `allowed`.
fn one_of(value: String, allowed: &[&str], what: &str) -> Result<Option<String>, Status> {
    let Some(value) = given(value) else {
        return Ok(None);
    };
    let value = value.to_ascii_lowercase();
    if allowed.contains(&value.as_str()) {
        Ok(Some(value))
    } else {
        Err(status(
            ReasonCode::InvalidArgument,
            format!("{what} is one of {}", allowed.join(", ")),
        ))
    }
}

/// Kinds of security event a filter may name.
const SECURITY_KINDS: [&str; 8] = [
    crate::security_audit::kind::AUTHENTICATION_FAILED,
    crate::security_audit::kind::OPERATION_REFUSED,
    crate::security_audit::kind::ENROLLMENT_REFUSED,
    crate::security_audit::kind::RESULT_REFUSED,
    crate::security_audit::kind::RESULT_KEY_REFUSED,
    crate::security_audit::kind::RENEWAL_REFUSED,
    crate::security_audit::kind::EVENTS_SUPPRESSED,
    crate::security_audit::kind::EVENTS_DROPPED,
];

#[tonic::async_trait]
impl AuditService for Api {
    async fn get_operation(
        &self,
        req: Request<pb::GetOperationRequest>,
    ) -> Result<Response<pb::OperationRecord>, Status> {
        let caller = self.authenticate(&req).await?;
        let id = req.into_inner().operation_id;
        let row = self
            .cp
            .store
            .get_operation(&caller.tenant, &id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| status(ReasonCode::NotFound, format!("no operation {id}")))?;
        let own = row.principal == caller.principal
            || row.target == format!("upn:{}", caller.principal.to_ascii_lowercase());
        if !caller.role.is_admin() && !own {
            return Err(status(ReasonCode::NotFound, format!("no operation {id}")));
        }
        Ok(Response::new(record_pb(row)))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        require_admin(&caller)?;
        let r = req.into_inner();
        let (since_ms, until_ms) = window(r.since, r.until)?;
        let filter = AuditFilter {
            principal: given(r.principal),
            target: target_of(r.user),
            since_ms,
            until_ms,
            kind: None,
            state: one_of(r.state, &["pending", "succeeded", "failed"], "state")?,
            reason_code: reason_filter(r.reason_code)?,
        };
        let (rows, next) = self
            .cp
            .store
            .list_operations_matching(&caller.tenant, &filter, page(r.page_size, r.page_token))
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListAuditResponse {
            records: rows.into_iter().map(record_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn list_admin_events(
        &self,
        req: Request<pb::ListAdminEventsRequest>,
    ) -> Result<Response<pb::ListAdminEventsResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        require_admin(&caller)?;
        let r = req.into_inner();
        let (since_ms, until_ms) = window(r.since, r.until)?;
        let filter = AuditFilter {
            principal: given(r.principal),
            since_ms,
            until_ms,
            kind: given(r.action),
            ..AuditFilter::default()
        };
        let (events, next) = self
            .cp
            .store
            .list_admin_events_matching(&caller.tenant, &filter, page(r.page_size, r.page_token))
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListAdminEventsResponse {
            events: events
                .into_iter()
                .map(|e| pb::AdminEvent {
                    event_id: e.event_id,
                    at: ts(e.at_ms),
                    principal: e.principal,
                    client_app: e.client_app,
                    action: e.action,
                    object: e.object,
                    details_json: e.details.to_string(),
                })
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn list_security_events(
        &self,
        req: Request<pb::ListSecurityEventsRequest>,
    ) -> Result<Response<pb::ListSecurityEventsResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let r = req.into_inner();
        let (since_ms, until_ms) = window(r.since, r.until)?;
        let filter = AuditFilter {
            principal: given(r.principal),
            target: target_of(r.user),
            since_ms,
            until_ms,
            kind: one_of(r.kind, &SECURITY_KINDS, "kind")?,
            state: None,
            reason_code: reason_filter(r.reason_code)?,
        };
        let (events, next) = self
            .cp
            .store
            .list_security_events(&caller.tenant, &filter, page(r.page_size, r.page_token))
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListSecurityEventsResponse {
            events: events
                .into_iter()
                .map(|e| pb::SecurityEvent {
                    event_id: e.event_id,
                    at: ts(e.at_ms),
                    kind: e.kind,
                    reason_code: e.reason_code,
                    detail: e.detail,
                    principal: e.principal,
                    client_app: e.client_app,
                    target: e.target,
                    operation: e.operation,
                    source: e.source,
                    message: e.message,
                    suppressed: u64::try_from(e.suppressed).unwrap_or(0),
                    details_json: e.details.to_string(),
                })
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }
}

fn record_pb(r: store::OperationRow) -> pb::OperationRecord {
    let kind = OperationKind::parse(&r.kind)
        .map_or(pb::OperationKind::Unspecified, OperationKind::to_wire);
    let outcome = r.reason_code.as_ref().map(|code| pb::OperationOutcome {
        applied: code == ReasonCode::Ok.as_str(),
        reason_code: code.clone(),
        message: r.message.clone().unwrap_or_default(),
    });
    pb::OperationRecord {
        operation_id: r.id,
        kind: kind as i32,
        target: r.target,
        domain: r.domain,
        principal: r.principal,
        client_app: client_app_pb(r.client_app) as i32,
        state: r.state.to_string(),
        outcome,
        agent_id: r.agent_id.unwrap_or_default(),
        relay_id: r.relay_id.unwrap_or_default(),
        created_at: ts(r.created_at_ms),
        finished_at: r.finished_at_ms.and_then(ts),
        duration_ms: r
            .finished_at_ms
            .map_or(0, |f| u64::try_from(f - r.created_at_ms).unwrap_or(0)),
        agent_duration_ms: ms(r.agent_duration_ms),
        trace_id: r.trace_id,
        rule: r.rule,
        relay_duration_ms: ms(r.hops.relay_duration_ms),
        directory_duration_ms: ms(r.hops.directory_duration_ms),
        dc_url: r.hops.dc_url.unwrap_or_default(),
    }
}

fn ms(d: Option<i64>) -> u64 {
    d.map_or(0, |d| u64::try_from(d).unwrap_or(0))
}
