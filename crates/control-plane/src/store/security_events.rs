//! The security trail: one row per refused authentication, refused password
//! operation or refused enrollment, or one summary row for many similar
//! ones (`suppressed` > 0), newest first. Rows are only ever inserted (and
//! purged after the retention period); no column holds a password or a
//! token. Written by [`crate::security_audit`], which decides what is
//! recorded and how often.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{
    Arg, AuditFilter, FilterColumns, Page, Store, StoreError, finish_page, limit_arg, query_with,
};

/// One security event, as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SecurityEvent {
    /// Its tenant; empty when no tenant could be told.
    pub tenant: String,
    /// Its id (set by the store on insert).
    pub event_id: String,
    /// When it happened (Unix milliseconds).
    pub at_ms: i64,
    /// `authentication_failed`, `operation_refused`, `enrollment_refused` or
    /// `events_dropped`.
    pub kind: String,
    /// The stable reason code the caller was answered with.
    pub reason_code: String,
    /// A finer stable code (`token_expired`, `policy`…), empty when none.
    pub detail: String,
    /// Who, or whom the refused credential claimed to be; empty when unknown.
    pub principal: String,
    /// Through which client app, when known.
    pub client_app: String,
    /// The operation's target (`upn:…`, `guid:…`), when there is one.
    pub target: String,
    /// The operation's kind (`reset`…), when there is one.
    pub operation: String,
    /// The client's address, when known.
    pub source: String,
    /// The sentence the caller was answered with.
    pub message: String,
    /// On a summary row, how many similar events were not written.
    pub suppressed: i64,
    /// Secret-free details (a JSON object).
    pub details: serde_json::Value,
}

const COLUMNS: &str = "tenant_id, event_id, at_ms, kind, reason_code, detail, principal, \
     client_app, target, operation, source, message, suppressed, details";

fn event_from_row(row: &AnyRow) -> Result<SecurityEvent, StoreError> {
    let details: String = row.try_get("details")?;
    Ok(SecurityEvent {
        tenant: row.try_get("tenant_id")?,
        event_id: row.try_get("event_id")?,
        at_ms: row.try_get("at_ms")?,
        kind: row.try_get("kind")?,
        reason_code: row.try_get("reason_code")?,
        detail: row.try_get("detail")?,
        principal: row.try_get("principal")?,
        client_app: row.try_get("client_app")?,
        target: row.try_get("target")?,
        operation: row.try_get("operation")?,
        source: row.try_get("source")?,
        message: row.try_get("message")?,
        suppressed: row.try_get("suppressed")?,
        details: serde_json::from_str(&details).map_err(|_| StoreError::Corrupt("details"))?,
    })
}

fn event_key(e: &SecurityEvent) -> String {
    format!("{}:{}", e.at_ms, e.event_id)
}

impl Store {
    /// Appends a security event (its `event_id` is chosen here) and returns
    /// its id. `at_ms` is kept as given: the recorder stamps an event when
    /// it happened, not when it is written.
    pub async fn record_security_event(&self, event: &SecurityEvent) -> Result<String, StoreError> {
        super::non_empty(&event.kind, "kind is empty")?;
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(&format!(
            "INSERT INTO security_events ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(&event.tenant)
        .bind(&id)
        .bind(event.at_ms)
        .bind(&event.kind)
        .bind(&event.reason_code)
        .bind(&event.detail)
        .bind(&event.principal)
        .bind(&event.client_app)
        .bind(&event.target)
        .bind(&event.operation)
        .bind(&event.source)
        .bind(&event.message)
        .bind(event.suppressed)
        .bind(event.details.to_string())
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// One page of the tenant's security events matching `filter`, newest
    /// first, and the next page's token. `filter.user` matches the target
    /// (`upn:<user>`), `filter.kind` the event kind, `filter.reason_code` the
    /// reason; `filter.state` does not apply and is ignored.
    pub async fn list_security_events(
        &self,
        tenant: &str,
        filter: &AuditFilter,
        page: Page,
    ) -> Result<(Vec<SecurityEvent>, Option<String>), StoreError> {
        let limit = page.limit();
        let mut sql = format!("SELECT {COLUMNS} FROM security_events WHERE tenant_id = $1");
        let mut args = vec![Arg::Text(tenant.to_owned())];
        filter.push_conditions(
            &mut sql,
            &mut args,
            FilterColumns {
                at: "at_ms",
                principal: Some("principal"),
                target: Some("target"),
                kind: Some("kind"),
                state: None,
                reason_code: Some("reason_code"),
            },
        );
        if let Some(key) = page.cursor('s')? {
            let (ms, id) = key.split_once(':').ok_or(StoreError::InvalidPageToken)?;
            let ms: i64 = ms.parse().map_err(|_| StoreError::InvalidPageToken)?;
            args.push(Arg::Int(ms));
            let ms_at = args.len();
            args.push(Arg::Text(id.to_owned()));
            let id_at = args.len();
            sql.push_str(&format!(
                " AND (at_ms < ${ms_at} OR (at_ms = ${ms_at} AND event_id < ${id_at}))"
            ));
        }
        args.push(Arg::Int(limit_arg(limit)));
        sql.push_str(&format!(
            " ORDER BY at_ms DESC, event_id DESC LIMIT ${}",
            args.len()
        ));
        let rows = query_with(&sql, args).fetch_all(&self.pool).await?;
        let mut events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = finish_page(&mut events, limit, 's', event_key);
        Ok((events, next))
    }

    /// Deletes every tenant's security events older than `before_ms` (the
    /// retention period; never through the API) and returns how many.
    pub async fn purge_security_events(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM security_events WHERE at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
