//! The administrative audit trail: one row per change an administrator made
//! (an issuer trusted, a client registered…), newest first. Details are a
//! JSON object without secrets.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{
    Arg, AuditFilter, FilterColumns, Page, Store, StoreError, finish_page, limit_arg, non_empty,
    query_with,
};

/// One administrative change.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminEvent {
    /// Its id.
    pub event_id: String,
    /// When it happened (Unix milliseconds).
    pub at_ms: i64,
    /// Who made it.
    pub principal: String,
    /// Through which client app.
    pub client_app: String,
    /// What was done, e.g. `issuer.put`, `client.delete`.
    pub action: String,
    /// On what, e.g. `issuer:entra`.
    pub object: String,
    /// Secret-free details.
    pub details: serde_json::Value,
}

/// An administrative change to record.
#[derive(Debug, Clone)]
pub struct NewAdminEvent<'a> {
    /// Who made it.
    pub principal: &'a str,
    /// Through which client app.
    pub client_app: &'a str,
    /// What was done.
    pub action: &'a str,
    /// On what.
    pub object: &'a str,
    /// Secret-free details.
    pub details: serde_json::Value,
}

const EVENT_COLUMNS: &str = "event_id, at_ms, principal, client_app, action, object, details";

fn event_from_row(row: &AnyRow) -> Result<AdminEvent, StoreError> {
    let details: String = row.try_get("details")?;
    Ok(AdminEvent {
        event_id: row.try_get("event_id")?,
        at_ms: row.try_get("at_ms")?,
        principal: row.try_get("principal")?,
        client_app: row.try_get("client_app")?,
        action: row.try_get("action")?,
        object: row.try_get("object")?,
        details: serde_json::from_str(&details).map_err(|_| StoreError::Corrupt("details"))?,
    })
}

fn event_key(e: &AdminEvent) -> String {
    format!("{}:{}", e.at_ms, e.event_id)
}

impl Store {
    /// Records an administrative change of the tenant and returns its id.
    pub async fn record_admin_event(
        &self,
        tenant: &str,
        event: NewAdminEvent<'_>,
    ) -> Result<String, StoreError> {
        non_empty(event.action, "action is empty")?;
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(&format!(
            "INSERT INTO admin_events (tenant_id, {EVENT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(tenant)
        .bind(&id)
        .bind(self.now_ms())
        .bind(event.principal)
        .bind(event.client_app)
        .bind(event.action)
        .bind(event.object)
        .bind(event.details.to_string())
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// The tenant's administrative changes, newest first.
    pub async fn list_admin_events(
        &self,
        tenant: &str,
        page: Page,
    ) -> Result<(Vec<AdminEvent>, Option<String>), StoreError> {
        self.list_admin_events_matching(tenant, &AuditFilter::default(), page)
            .await
    }

    /// [`Store::list_admin_events`] matching `filter`: principal, time and
    /// kind (the action); the target, state and reason code do not apply and
    /// are ignored.
    pub async fn list_admin_events_matching(
        &self,
        tenant: &str,
        filter: &AuditFilter,
        page: Page,
    ) -> Result<(Vec<AdminEvent>, Option<String>), StoreError> {
        let limit = page.limit();
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM admin_events WHERE tenant_id = $1");
        let mut args = vec![Arg::Text(tenant.to_owned())];
        filter.push_conditions(
            &mut sql,
            &mut args,
            FilterColumns {
                at: "at_ms",
                principal: Some("principal"),
                target: None,
                kind: Some("action"),
                state: None,
                reason_code: None,
            },
        );
        if let Some(key) = page.cursor('a')? {
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
        let next = finish_page(&mut events, limit, 'a', event_key);
        Ok((events, next))
    }
}
