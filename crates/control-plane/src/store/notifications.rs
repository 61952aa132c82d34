//! The outbox of e-mail notifications: a row per message and recipient,
//! inserted when something worth telling happened and sent later by the
//! background sender (`crate::notify`).
//!
//! Several control-plane replicas may share one PostgreSQL database, so a
//! row is sent by the one sender that *claims* it: [`Store::claim_notification`]
//! is an `UPDATE` conditional on the state, attempt count and due time the
//! sender read, which bumps the attempt count and moves the due time to the
//! end of a lease. Exactly one concurrent claimer sees its update applied;
//! the others see no row changed and skip it. The attempt count the claim
//! wrote is the claim's token: the outcome is recorded only while it still
//! matches, so a sender whose lease ran out cannot overwrite a newer
//! claim's result.

use std::fmt;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Arg, Page, Store, StoreError, finish_page, insert_error, limit_arg, query_with};

/// Longest `last_error` kept, in characters.
const MAX_ERROR_CHARS: usize = 1000;

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationState {
    /// Waiting to be sent (again) at `next_attempt_at_ms`.
    Queued,
    /// Accepted by the SMTP relay.
    Sent,
    /// Given up after the last allowed attempt.
    Failed,
}

impl NotificationState {
    /// `queued`, `sent` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationState::Queued => "queued",
            NotificationState::Sent => "sent",
            NotificationState::Failed => "failed",
        }
    }

    /// Parses [`NotificationState::as_str`]'s output.
    pub fn parse(s: &str) -> Option<NotificationState> {
        Some(match s {
            "queued" => NotificationState::Queued,
            "sent" => NotificationState::Sent,
            "failed" => NotificationState::Failed,
            _ => return None,
        })
    }
}

impl fmt::Display for NotificationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message to queue. Holds no password and no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// Tenant.
    pub tenant: String,
    /// What it tells: `reset`, `unlock`, `admin_reset_attempt`.
    pub kind: String,
    /// One e-mail address.
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// One row of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    /// Tenant.
    pub tenant: String,
    /// Id (a UUID), unique in the tenant.
    pub id: String,
    /// What it tells.
    pub kind: String,
    /// The e-mail address.
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// Queued, sent or failed.
    pub state: NotificationState,
    /// When it was queued.
    pub created_at_ms: i64,
    /// Attempts so far (claims, whatever their outcome).
    pub attempts: i64,
    /// When it is due (or, while claimed, when the claim's lease ends).
    pub next_attempt_at_ms: i64,
    /// When the relay accepted it.
    pub sent_at_ms: Option<i64>,
    /// The last sending error.
    pub last_error: Option<String>,
}

const NOTIFICATION_COLUMNS: &str = "tenant_id, id, kind, recipient, subject, body, state, \
     created_at_ms, attempts, next_attempt_at_ms, sent_at_ms, last_error";

fn notification_from_row(row: &AnyRow) -> Result<NotificationRow, StoreError> {
    let state: String = row.try_get("state")?;
    Ok(NotificationRow {
        tenant: row.try_get("tenant_id")?,
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        recipient: row.try_get("recipient")?,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        state: NotificationState::parse(&state).ok_or(StoreError::Corrupt("state"))?,
        created_at_ms: row.try_get("created_at_ms")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at_ms: row.try_get("next_attempt_at_ms")?,
        sent_at_ms: row.try_get("sent_at_ms")?,
        last_error: row.try_get("last_error")?,
    })
}

fn notification_key(n: &NotificationRow) -> String {
    format!("{}:{}", n.created_at_ms, n.id)
}

fn truncate_error(error: &str) -> String {
    error.chars().take(MAX_ERROR_CHARS).collect()
}

impl Store {
    /// Queues a notification, due at once; returns its id.
    /// `NotFound { what: "tenant" }` for an unknown tenant.
    pub async fn enqueue_notification(&self, n: &NewNotification) -> Result<String, StoreError> {
        if n.recipient.trim().is_empty() {
            return Err(StoreError::InvalidArgument(
                "notification recipient is empty",
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.now_ms();
        sqlx::query(
            "INSERT INTO notifications (tenant_id, id, kind, recipient, subject, body, state, \
             created_at_ms, attempts, next_attempt_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, 0, $7)",
        )
        .bind(&n.tenant)
        .bind(&id)
        .bind(&n.kind)
        .bind(&n.recipient)
        .bind(&n.subject)
        .bind(&n.body)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| insert_error(e, "notification", "tenant"))?;
        Ok(id)
    }

    /// Up to `limit` queued notifications of every tenant due at `now_ms`,
    /// the longest-waiting first. Reading them claims nothing: see
    /// [`Store::claim_notification`].
    pub async fn due_notifications(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications \
             WHERE state = 'queued' AND next_attempt_at_ms <= $1 \
             ORDER BY next_attempt_at_ms, id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(now_ms)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(notification_from_row).collect()
    }

    /// Claims `row` (as [`Store::due_notifications`] returned it) for one
    /// sending attempt until `lease_until_ms`: counts the attempt and moves
    /// the due time to the lease's end, only if nobody changed the row since
    /// it was read. Returns the claimed row (its `attempts` is the claim's
    /// token), or `None` when another sender got there first.
    pub async fn claim_notification(
        &self,
        row: &NotificationRow,
        lease_until_ms: i64,
    ) -> Result<Option<NotificationRow>, StoreError> {
        let done = sqlx::query(
            "UPDATE notifications SET attempts = attempts + 1, next_attempt_at_ms = $3 \
             WHERE tenant_id = $1 AND id = $2 AND state = 'queued' \
             AND attempts = $4 AND next_attempt_at_ms = $5",
        )
        .bind(&row.tenant)
        .bind(&row.id)
        .bind(lease_until_ms)
        .bind(row.attempts)
        .bind(row.next_attempt_at_ms)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        Ok(Some(NotificationRow {
            attempts: row.attempts.saturating_add(1),
            next_attempt_at_ms: lease_until_ms,
            ..row.clone()
        }))
    }

    /// Records that the relay accepted the claimed notification. False when
    /// the claim was lost meanwhile (its lease ran out and another sender
    /// claimed the row).
    pub async fn notification_sent(
        &self,
        claimed: &NotificationRow,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE notifications SET state = 'sent', sent_at_ms = $3 \
             WHERE tenant_id = $1 AND id = $2 AND state = 'queued' AND attempts = $4",
        )
        .bind(&claimed.tenant)
        .bind(&claimed.id)
        .bind(now_ms)
        .bind(claimed.attempts)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed attempt of the claimed notification: queued again
    /// for `retry_at_ms`, or given up (`failed`) when that is `None`. The
    /// error (truncated) is kept either way. False when the claim was lost.
    pub async fn notification_failed(
        &self,
        claimed: &NotificationRow,
        error: &str,
        retry_at_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let state = match retry_at_ms {
            Some(_) => NotificationState::Queued,
            None => NotificationState::Failed,
        };
        let done = sqlx::query(
            "UPDATE notifications SET state = $3, last_error = $4, next_attempt_at_ms = $5 \
             WHERE tenant_id = $1 AND id = $2 AND state = 'queued' AND attempts = $6",
        )
        .bind(&claimed.tenant)
        .bind(&claimed.id)
        .bind(state.as_str())
        .bind(truncate_error(error))
        .bind(retry_at_ms.unwrap_or(claimed.next_attempt_at_ms))
        .bind(claimed.attempts)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One notification of the tenant.
    pub async fn get_notification(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<NotificationRow>, StoreError> {
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE tenant_id = $1 AND id = $2"
        );
        let row = sqlx::query(&sql)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(notification_from_row).transpose()
    }

    /// One page of the tenant's outbox, newest first, and the next page's
    /// token.
    pub async fn list_notifications(
        &self,
        tenant: &str,
        page: Page,
    ) -> Result<(Vec<NotificationRow>, Option<String>), StoreError> {
        let limit = page.limit();
        let mut sql =
            format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE tenant_id = $1");
        let mut args = vec![Arg::Text(tenant.to_owned())];
        if let Some(key) = page.cursor('n')? {
            let (ms, id) = key.split_once(':').ok_or(StoreError::InvalidPageToken)?;
            let ms: i64 = ms.parse().map_err(|_| StoreError::InvalidPageToken)?;
            args.push(Arg::Int(ms));
            let ms_at = args.len();
            args.push(Arg::Text(id.to_owned()));
            let id_at = args.len();
            sql.push_str(&format!(
                " AND (created_at_ms < ${ms_at} OR (created_at_ms = ${ms_at} AND id < ${id_at}))"
            ));
        }
        args.push(Arg::Int(limit_arg(limit)));
        sql.push_str(&format!(
            " ORDER BY created_at_ms DESC, id DESC LIMIT ${}",
            args.len()
        ));
        let rows = query_with(&sql, args).fetch_all(&self.pool).await?;
        let mut list = rows
            .iter()
            .map(notification_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = finish_page(&mut list, limit, 'n', notification_key);
        Ok((list, next))
    }

    /// Deletes, in every tenant, the sent and given-up notifications queued
    /// before `before_ms`; returns how many.
    pub async fn purge_notifications(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM notifications WHERE state IN ('sent', 'failed') AND created_at_ms < $1",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
