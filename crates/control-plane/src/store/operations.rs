//! The audit log: one record per operation, written as pending before
//! dispatch and finished exactly once.

use std::fmt;

use sqlx::Row;
use sqlx::any::AnyRow;
use writeback_core::ReasonCode;

use super::auth::parse_client_app;
use super::{
    Arg, AuditFilter, ClientApp, FilterColumns, Page, Store, StoreError, finish_page, insert_error,
    limit_arg, non_empty, query_with,
};

/// The reasons a failed operation is known never to have run, which a
/// retry with its id may run ([`Store::reopen_operation`]): no agent ever
/// received it (`NOT_APPLIED`, from the agents' ledgers), or it expired on
/// its way and the agent it was bound to refused it, signed, before
/// touching the directory (`OPERATION_EXPIRED`). A record whose outcome is
/// still to be confirmed by the agents (`reconcile_after_ms` set: an
/// unknown outcome, or a relay's own refusal) is never reopened.
pub const NEVER_RAN: [ReasonCode; 2] = [ReasonCode::NotApplied, ReasonCode::OperationExpired];

/// The message of an operation closed by [`Store::close_expired_pending`].
pub const RESTART_TIMEOUT_MESSAGE: &str = "outcome unknown: the control plane handling this operation stopped before the answer arrived; the change may or may not have been applied, so check the account before retrying";

/// Where an operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationState {
    /// Recorded and dispatched; no outcome yet.
    Pending,
    /// Applied to the directory.
    Succeeded,
    /// Refused, failed or timed out.
    Failed,
}

impl OperationState {
    /// `pending`, `succeeded` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::Pending => "pending",
            OperationState::Succeeded => "succeeded",
            OperationState::Failed => "failed",
        }
    }

    /// Parses [`OperationState::as_str`]'s output.
    pub fn parse(s: &str) -> Option<OperationState> {
        Some(match s {
            "pending" => OperationState::Pending,
            "succeeded" => OperationState::Succeeded,
            "failed" => OperationState::Failed,
            _ => return None,
        })
    }
}

impl fmt::Display for OperationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation to record as pending before it is dispatched. Holds no
/// password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOperation {
    /// Operation id (a UUID), unique in the tenant.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Kind, e.g. `OperationKind::as_str()`: `reset`, `change`, `forced_change`, `unlock`.
    pub kind: String,
    /// Target user as given (e.g. `upn:alice@contoso.test`); matched exactly by
    /// [`Store::list_operations`] and [`Store::count_operations_since`], so
    /// normalize it before storing.
    pub target: String,
    /// Domain it is routed to (may be empty when none was found).
    pub domain: String,
    /// Principal that asked.
    pub principal: String,
    /// Origin (the token's client app).
    pub client_app: ClientApp,
    /// When it was accepted (Unix milliseconds).
    pub created_at_ms: i64,
    /// After this instant no outcome is expected any more.
    pub deadline_at_ms: i64,
    /// Its trace id (32 hex digits; empty when none).
    pub trace_id: String,
    /// The policy rule that allowed it.
    pub rule: String,
}

/// The final state of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// [`OperationState::Succeeded`] or [`OperationState::Failed`];
    /// `Pending` is refused as `InvalidArgument`.
    pub state: OperationState,
    /// The outcome's reason code (`OK` on success).
    pub reason_code: ReasonCode,
    /// A sentence a help desk can act on; no password, token or DN.
    pub message: String,
    /// Agent that answered, if any.
    pub agent_id: Option<String>,
    /// Relay that routed it, if any.
    pub relay_id: Option<String>,
    /// When the outcome arrived (Unix milliseconds).
    pub finished_at_ms: i64,
    /// Time the agent reported, if any.
    pub agent_duration_ms: Option<i64>,
    /// Where the rest of the time went.
    pub hops: Hops,
}

/// Per-hop figures of a finished operation, as the relay and the agent
/// reported them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hops {
    /// The relay's time from receiving the dispatch to answering it (its
    /// queue, the transit to the agent and back, and the agent's time).
    pub relay_duration_ms: Option<i64>,
    /// The agent's time in LDAP requests to the domain controller.
    pub directory_duration_ms: Option<i64>,
    /// The domain controller that answered (its URL).
    pub dc_url: Option<String>,
}

/// The durable record of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRow {
    /// Operation id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Kind (`reset`, `change`, `forced_change`, `unlock`).
    pub kind: String,
    /// Target user as given.
    pub target: String,
    /// Domain it was routed to.
    pub domain: String,
    /// Principal that asked.
    pub principal: String,
    /// Origin.
    pub client_app: ClientApp,
    /// Pending, succeeded or failed.
    pub state: OperationState,
    /// The reason code once finished (a [`ReasonCode`] string form).
    pub reason_code: Option<String>,
    /// The outcome message once finished.
    pub message: Option<String>,
    /// Agent that answered.
    pub agent_id: Option<String>,
    /// Relay that routed it.
    pub relay_id: Option<String>,
    /// When it was accepted.
    pub created_at_ms: i64,
    /// Its deadline.
    pub deadline_at_ms: i64,
    /// When it finished.
    pub finished_at_ms: Option<i64>,
    /// Time the agent reported.
    pub agent_duration_ms: Option<i64>,
    /// Its trace id (empty for operations recorded before traces were kept).
    pub trace_id: String,
    /// The policy rule that allowed it (empty for older records).
    pub rule: String,
    /// Per-hop figures.
    pub hops: Hops,
    /// Set while the outcome is unknown (failed with `TIMEOUT`): when the
    /// control plane next asks the domain's agents what happened.
    pub reconcile_after_ms: Option<i64>,
}

impl OperationRow {
    /// True while the outcome is not known (see [`Store::operations_to_reconcile`]).
    pub fn outcome_unknown(&self) -> bool {
        self.reconcile_after_ms.is_some()
    }

    /// True when the change was applied (the operation succeeded).
    pub fn applied(&self) -> bool {
        self.state == OperationState::Succeeded
    }

    /// Total time in the control plane, once finished.
    pub fn duration_ms(&self) -> Option<i64> {
        self.finished_at_ms
            .map(|f| f.saturating_sub(self.created_at_ms).max(0))
    }
}

const OPERATION_COLUMNS: &str = "tenant_id, id, kind, target, domain, principal, client_app, \
     state, reason_code, message, agent_id, relay_id, created_at_ms, deadline_at_ms, \
     finished_at_ms, agent_duration_ms, trace_id, rule, relay_duration_ms, \
     directory_duration_ms, dc_url, reconcile_after_ms";

fn operation_from_row(row: &AnyRow) -> Result<OperationRow, StoreError> {
    let client_app: String = row.try_get("client_app")?;
    let state: String = row.try_get("state")?;
    Ok(OperationRow {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant_id")?,
        kind: row.try_get("kind")?,
        target: row.try_get("target")?,
        domain: row.try_get("domain")?,
        principal: row.try_get("principal")?,
        client_app: parse_client_app(&client_app)?,
        state: OperationState::parse(&state).ok_or(StoreError::Corrupt("state"))?,
        reason_code: row.try_get("reason_code")?,
        message: row.try_get("message")?,
        agent_id: row.try_get("agent_id")?,
        relay_id: row.try_get("relay_id")?,
        created_at_ms: row.try_get("created_at_ms")?,
        deadline_at_ms: row.try_get("deadline_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
        agent_duration_ms: row.try_get("agent_duration_ms")?,
        trace_id: row
            .try_get::<Option<String>, _>("trace_id")?
            .unwrap_or_default(),
        rule: row
            .try_get::<Option<String>, _>("rule")?
            .unwrap_or_default(),
        hops: Hops {
            relay_duration_ms: row.try_get("relay_duration_ms")?,
            directory_duration_ms: row.try_get("directory_duration_ms")?,
            dc_url: row.try_get("dc_url")?,
        },
        reconcile_after_ms: row.try_get("reconcile_after_ms")?,
    })
}

/// A throttle's window for [`Store::insert_operation_within`].
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    /// Operations allowed in the window.
    pub max: u32,
    /// The kinds counted (every kind when empty).
    pub kinds: &'a [&'a str],
    /// The window's start (Unix milliseconds).
    pub since_ms: i64,
}

/// The statement inserting `op` as pending.
fn insert_query(
    op: &NewOperation,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(
        "INSERT INTO operations (tenant_id, id, kind, target, domain, principal, \
         client_app, state, created_at_ms, deadline_at_ms, trace_id, rule) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10, $11)",
    )
    .bind(&op.tenant)
    .bind(&op.id)
    .bind(&op.kind)
    .bind(&op.target)
    .bind(&op.domain)
    .bind(&op.principal)
    .bind(op.client_app.as_str())
    .bind(op.created_at_ms)
    .bind(op.deadline_at_ms)
    .bind((!op.trace_id.is_empty()).then_some(op.trace_id.as_str()))
    .bind((!op.rule.is_empty()).then_some(op.rule.as_str()))
}

/// `COUNT(*) AS n, MIN(created_at_ms) AS oldest` of the operations on any
/// of `targets` of `kinds` (every kind when empty) since `since_ms`.
fn count_query(
    tenant: &str,
    targets: &[String],
    kinds: &[&str],
    since_ms: i64,
) -> (String, Vec<Arg>) {
    fn list(values: impl Iterator<Item = String>, args: &mut Vec<Arg>) -> String {
        let mut placeholders = Vec::new();
        for v in values {
            args.push(Arg::Text(v));
            placeholders.push(format!("${}", args.len()));
        }
        placeholders.join(", ")
    }
    let mut args = vec![Arg::Text(tenant.to_owned()), Arg::Int(since_ms)];
    let targets = list(targets.iter().cloned(), &mut args);
    let mut sql = format!(
        "SELECT COUNT(*) AS n, MIN(created_at_ms) AS oldest FROM operations \
         WHERE tenant_id = $1 AND created_at_ms >= $2 AND target IN ({targets})"
    );
    if !kinds.is_empty() {
        let kinds = list(kinds.iter().map(|k| (*k).to_owned()), &mut args);
        sql.push_str(&format!(" AND kind IN ({kinds})"));
    }
    (sql, args)
}

/// The keyset of the audit log's order: `(created_at_ms, id)`, newest first.
fn operation_key(op: &OperationRow) -> String {
    format!("{}:{}", op.created_at_ms, op.id)
}

fn parse_operation_key(key: &str) -> Result<(i64, String), StoreError> {
    let (ms, id) = key.split_once(':').ok_or(StoreError::InvalidPageToken)?;
    let ms = ms.parse().map_err(|_| StoreError::InvalidPageToken)?;
    Ok((ms, id.to_owned()))
}

impl Store {
    /// Records an operation as pending; call it before dispatching.
    /// `AlreadyExists { what: "operation" }` when the tenant already has the
    /// id (a repeated id is never applied twice), `NotFound { what: "tenant" }`
    /// for an unknown tenant.
    pub async fn insert_operation(&self, op: &NewOperation) -> Result<(), StoreError> {
        non_empty(&op.id, "operation id is empty")?;
        insert_query(op)
            .execute(&self.pool)
            .await
            .map_err(|e| insert_error(e, "operation", "tenant"))?;
        Ok(())
    }

    /// [`Store::insert_operation`], unless the operation's target already
    /// has `window.max` operations of `window.kinds` since
    /// `window.since_ms`: then nothing is recorded and the answer is the
    /// oldest of them (`created_at_ms`; the window frees up an hour after
    /// it, say). The target counts as the person it names: its operations
    /// under every alias [`Store::link_person`] recorded (a UPN and a GUID)
    /// are counted together. Counting and recording are one transaction,
    /// serialized per person (SQLite: the write lock; PostgreSQL: an
    /// advisory lock on the tenant and the person, or the target while no
    /// agent has said whom it names), so concurrent requests — on one
    /// control plane or on replicas — cannot both take the last free place.
    pub async fn insert_operation_within(
        &self,
        op: &NewOperation,
        window: &Window<'_>,
    ) -> Result<Option<i64>, StoreError> {
        non_empty(&op.id, "operation id is empty")?;
        let mut tx = self.begin_write().await?;
        // The person the target names, when an agent has said (see
        // `Store::link_person`): every alias of it counts, and requests for
        // it under any alias wait for one another.
        let person: Option<String> = sqlx::query_scalar(
            "SELECT person FROM person_aliases WHERE tenant_id = $1 AND alias = $2",
        )
        .bind(&op.tenant)
        .bind(&op.target)
        .fetch_optional(&mut *tx)
        .await?;
        let bucket = person.as_deref().unwrap_or(&op.target);
        if self.is_postgres() {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("operations\n{}\n{bucket}", op.tenant))
                .execute(&mut *tx)
                .await?;
        }
        let mut targets = match &person {
            Some(p) => {
                sqlx::query_scalar(
                    "SELECT alias FROM person_aliases WHERE tenant_id = $1 AND person = $2",
                )
                .bind(&op.tenant)
                .bind(p)
                .fetch_all(&mut *tx)
                .await?
            }
            None => Vec::new(),
        };
        if !targets.contains(&op.target) {
            targets.push(op.target.clone());
        }
        let (sql, args) = count_query(&op.tenant, &targets, window.kinds, window.since_ms);
        let row = query_with(&sql, args).fetch_one(&mut *tx).await?;
        let (count, oldest): (i64, Option<i64>) = (row.try_get("n")?, row.try_get("oldest")?);
        if count >= i64::from(window.max) {
            return Ok(Some(oldest.unwrap_or(op.created_at_ms)));
        }
        insert_query(op)
            .execute(&mut *tx)
            .await
            .map_err(|e| insert_error(e, "operation", "tenant"))?;
        tx.commit().await?;
        Ok(None)
    }

    /// The person (`guid:…` key) an agent said the throttle key `alias`
    /// names; `None` while no agent has ([`Store::link_person`]).
    pub async fn person_of(&self, tenant: &str, alias: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT person FROM person_aliases WHERE tenant_id = $1 AND alias = $2",
        )
        .bind(tenant)
        .bind(alias)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every alias (`upn:…`, `guid:…`) of the person the agents have said
    /// `alias` names ([`Store::link_person`]), `alias` itself included;
    /// empty while no agent has named it.
    pub async fn aliases_with(&self, tenant: &str, alias: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT alias FROM person_aliases WHERE tenant_id = $1 AND person = \
             (SELECT person FROM person_aliases WHERE tenant_id = $1 AND alias = $2)",
        )
        .bind(tenant)
        .bind(alias)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records that the throttle keys `aliases` (`upn:…`, `guid:…`) name the
    /// person `person` (its `guid:…` key), as an agent reported after
    /// finding the user; a later report moves an alias (a UPN given to
    /// someone else). The throttle then counts the person's operations
    /// under every alias ([`Store::insert_operation_within`]).
    pub async fn link_person(
        &self,
        tenant: &str,
        person: &str,
        aliases: &[String],
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        for alias in aliases {
            sqlx::query(
                "INSERT INTO person_aliases (tenant_id, alias, person, updated_at_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, alias) \
                 DO UPDATE SET person = excluded.person, updated_at_ms = excluded.updated_at_ms",
            )
            .bind(tenant)
            .bind(alias)
            .bind(person)
            .bind(now)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Moves a pending operation to its final state. Only `pending → final`
    /// happens: `AlreadyFinished` when it already has one (the first outcome
    /// stands), `NotFound { what: "operation" }` when the tenant has no such
    /// operation.
    pub async fn finish_operation(
        &self,
        tenant: &str,
        id: &str,
        fin: &Finish,
    ) -> Result<(), StoreError> {
        self.finish_operation_then(tenant, id, fin, None).await
    }

    /// [`Store::finish_operation`]; with `reconcile_after_ms`, the outcome is
    /// not known (`fin` is a `TIMEOUT`) and the control plane asks the
    /// domain's agents from that instant on ([`Store::resolve_operation`]).
    pub async fn finish_operation_then(
        &self,
        tenant: &str,
        id: &str,
        fin: &Finish,
        reconcile_after_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        if fin.state == OperationState::Pending {
            return Err(StoreError::InvalidArgument(
                "an operation cannot finish as pending",
            ));
        }
        let done = sqlx::query(
            "UPDATE operations SET state = $3, reason_code = $4, message = $5, agent_id = $6, \
             relay_id = $7, finished_at_ms = $8, agent_duration_ms = $9, \
             relay_duration_ms = $10, directory_duration_ms = $11, dc_url = $12, \
             reconcile_after_ms = $13 \
             WHERE tenant_id = $1 AND id = $2 AND state = 'pending'",
        )
        .bind(tenant)
        .bind(id)
        .bind(fin.state.as_str())
        .bind(fin.reason_code.as_str())
        .bind(&fin.message)
        .bind(fin.agent_id.as_deref())
        .bind(fin.relay_id.as_deref())
        .bind(fin.finished_at_ms)
        .bind(fin.agent_duration_ms)
        .bind(fin.hops.relay_duration_ms)
        .bind(fin.hops.directory_duration_ms)
        .bind(fin.hops.dc_url.as_deref())
        .bind(reconcile_after_ms)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        let exists = sqlx::query("SELECT 1 FROM operations WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match exists {
            Some(_) => Err(StoreError::AlreadyFinished),
            None => Err(StoreError::NotFound { what: "operation" }),
        }
    }

    /// One operation of the tenant.
    pub async fn get_operation(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<OperationRow>, StoreError> {
        let sql =
            format!("SELECT {OPERATION_COLUMNS} FROM operations WHERE tenant_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(operation_from_row).transpose()
    }

    /// One page of the tenant's audit log, newest first (by `created_at_ms`,
    /// then id), only operations whose target equals `user` when set, and
    /// the next page's token. Keyset pagination: rows inserted meanwhile never
    /// make a page repeat or skip an older row.
    pub async fn list_operations(
        &self,
        tenant: &str,
        user: Option<&str>,
        page: Page,
    ) -> Result<(Vec<OperationRow>, Option<String>), StoreError> {
        let filter = AuditFilter {
            target: user.map(str::to_owned),
            ..AuditFilter::default()
        };
        self.list_operations_matching(tenant, &filter, page).await
    }

    /// [`Store::list_operations`] with every field of `filter`: principal,
    /// target, time (`created_at_ms`), kind, state and reason code.
    pub async fn list_operations_matching(
        &self,
        tenant: &str,
        filter: &AuditFilter,
        page: Page,
    ) -> Result<(Vec<OperationRow>, Option<String>), StoreError> {
        let limit = page.limit();
        let mut sql = format!("SELECT {OPERATION_COLUMNS} FROM operations WHERE tenant_id = $1");
        let mut args = vec![Arg::Text(tenant.to_owned())];
        filter.push_conditions(
            &mut sql,
            &mut args,
            FilterColumns {
                at: "created_at_ms",
                principal: Some("principal"),
                target: Some("target"),
                kind: Some("kind"),
                state: Some("state"),
                reason_code: Some("reason_code"),
            },
        );
        if let Some(key) = page.cursor('o')? {
            let (ms, id) = parse_operation_key(&key)?;
            args.push(Arg::Int(ms));
            let ms_at = args.len();
            args.push(Arg::Text(id));
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
        let mut ops = rows
            .iter()
            .map(operation_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = finish_page(&mut ops, limit, 'o', operation_key);
        Ok((ops, next))
    }

    /// How many operations of `kinds` (every kind when empty) targeted `target`
    /// at or after `since_ms`, in any state, and the oldest `created_at_ms`
    /// among them (when the window frees up). For the per-user throttle.
    pub async fn count_operations_since(
        &self,
        tenant: &str,
        target: &str,
        kinds: &[&str],
        since_ms: i64,
    ) -> Result<(i64, Option<i64>), StoreError> {
        let (sql, args) = count_query(tenant, &[target.to_owned()], kinds, since_ms);
        let row = query_with(&sql, args).fetch_one(&self.pool).await?;
        Ok((row.try_get("n")?, row.try_get("oldest")?))
    }

    /// Closes, in every tenant, each pending operation whose deadline has
    /// passed (`deadline_at_ms <= now_ms`) as failed with `TIMEOUT` and
    /// [`RESTART_TIMEOUT_MESSAGE`], its outcome unknown until reconciled
    /// ([`Store::operations_to_reconcile`]); returns how many.
    pub async fn close_expired_pending(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.close_pending_due_by(now_ms, now_ms).await
    }

    /// Like [`Store::close_expired_pending`], closing the pending operations
    /// whose deadline is at or before `cutoff_ms` and recording `now_ms` as
    /// their end. The control plane runs it at start-up and periodically
    /// with a cutoff a grace period in the past, so an operation that a live
    /// replica is still finishing is left to that replica.
    pub async fn close_pending_due_by(
        &self,
        cutoff_ms: i64,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE operations SET state = 'failed', reason_code = $1, message = $2, \
             finished_at_ms = $3, reconcile_after_ms = $3 \
             WHERE state = 'pending' AND deadline_at_ms <= $4",
        )
        .bind(ReasonCode::Timeout.as_str())
        .bind(RESTART_TIMEOUT_MESSAGE)
        .bind(now_ms)
        .bind(cutoff_ms)
        .execute(&self.pool)
        .await?;
        let closed = done.rows_affected();
        if closed > 0 {
            tracing::warn!(closed, "closed pending operations whose deadline passed");
        }
        Ok(closed)
    }

    /// Operations of every tenant whose outcome is unknown and due to be
    /// asked about (`reconcile_after_ms <= now_ms`), oldest first.
    pub async fn operations_to_reconcile(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<OperationRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {OPERATION_COLUMNS} FROM operations \
             WHERE reconcile_after_ms IS NOT NULL AND reconcile_after_ms <= $1 \
             ORDER BY reconcile_after_ms LIMIT $2"
        ))
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(operation_from_row).collect()
    }

    /// Records the truth about an operation whose outcome was unknown;
    /// false when it is not (or no longer) unknown — another replica got
    /// there first.
    pub async fn resolve_operation(
        &self,
        tenant: &str,
        id: &str,
        fin: &Finish,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE operations SET state = $3, reason_code = $4, message = $5, \
             agent_id = COALESCE($6, agent_id), relay_id = COALESCE($7, relay_id), \
             finished_at_ms = $8, agent_duration_ms = COALESCE($9, agent_duration_ms), \
             dc_url = COALESCE($10, dc_url), reconcile_after_ms = NULL \
             WHERE tenant_id = $1 AND id = $2 AND reconcile_after_ms IS NOT NULL",
        )
        .bind(tenant)
        .bind(id)
        .bind(fin.state.as_str())
        .bind(fin.reason_code.as_str())
        .bind(&fin.message)
        .bind(fin.agent_id.as_deref())
        .bind(fin.relay_id.as_deref())
        .bind(fin.finished_at_ms)
        .bind(fin.agent_duration_ms)
        .bind(fin.hops.dc_url.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Asks about an unknown outcome again at `next_ms`, or never again
    /// (the `TIMEOUT` stands) with `None`.
    pub async fn postpone_reconcile(
        &self,
        tenant: &str,
        id: &str,
        next_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE operations SET reconcile_after_ms = $3 \
             WHERE tenant_id = $1 AND id = $2 AND reconcile_after_ms IS NOT NULL",
        )
        .bind(tenant)
        .bind(id)
        .bind(next_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Puts an operation known never to have run (failed with a reason of
    /// [`NEVER_RAN`], confirmed) back to pending with a new deadline, for a
    /// retry with its id; an `OPERATION_EXPIRED` one only when its deadline
    /// is at or before `expired_before_ms` (the caller passes now less the
    /// agents' clock tolerance: until then an agent with a slow clock could
    /// still take the old copy for a live one). False when it is in any
    /// other state (another request reopened it first) or too recent.
    pub async fn reopen_operation(
        &self,
        tenant: &str,
        id: &str,
        deadline_at_ms: i64,
        expired_before_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE operations SET state = 'pending', reason_code = NULL, message = NULL, \
             finished_at_ms = NULL, agent_id = NULL, relay_id = NULL, deadline_at_ms = $3 \
             WHERE tenant_id = $1 AND id = $2 AND state = 'failed' \
             AND (reason_code = $4 OR (reason_code = $5 AND deadline_at_ms <= $6)) \
             AND reconcile_after_ms IS NULL",
        )
        .bind(tenant)
        .bind(id)
        .bind(deadline_at_ms)
        .bind(NEVER_RAN[0].as_str())
        .bind(NEVER_RAN[1].as_str())
        .bind(expired_before_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
