//! Durable state of the control plane behind one [`Store`] handle: tenants and
//! their toggles, domains and UPN suffixes, principals and API tokens,
//! one-time enrollment tokens, agents, the operation audit log, the OpenID
//! Connect issuers and clients a tenant trusts, the administrative audit
//! trail, the security trail (refused authentications, operations and
//! enrollments), and the outbox of e-mail notifications. The three audit
//! lists share one [`AuditFilter`].
//!
//! The store talks to SQLite (`sqlite://path`, the default, created when
//! missing) or PostgreSQL (`postgres://…`, when several control-plane replicas
//! share state) through sqlx's `Any` driver, with one portable set of embedded
//! migrations run by [`Store::connect`].
//!
//! Conventions:
//! - every table has a `tenant_id` and every query filters by it, except the
//!   ones that discover the tenant or sweep all of them:
//!   [`Store::authenticate`], [`Store::api_token_by_hash`],
//!   [`Store::enrollment_token_owner`], [`Store::client_by_issuer_url`],
//!   [`Store::issuer_url_trusted`], [`Store::consume_enrollment_token`],
//!   [`Store::close_expired_pending`], the notification sender's
//!   [`Store::due_notifications`] and [`Store::purge_notifications`], and
//!   [`Store::purge_security_events`]; `security_events` rows may have an
//!   empty `tenant_id` (no tenant could be told) and are then served to no
//!   tenant;
//! - no secret is stored: token columns hold lowercase hex SHA-256 hashes that
//!   the caller computes (see [`hash_secret`]); a value that is not such a hash
//!   is refused, so a plaintext token cannot be stored by mistake;
//! - time is injected as Unix milliseconds wherever it decides an outcome
//!   (expiry, deadlines); bookkeeping timestamps (`created_at_ms` of a domain,
//!   `revoked_at_ms` of an agent…) come from the store's [`Clock`] (the
//!   system clock unless a test moved it, see [`Store::with_clock`]);
//! - domain names and UPN suffixes are stored lowercase; every method that
//!   takes one lowercases it first.

mod admin_events;
mod agents;
mod auth;
mod banned;
mod domains;
mod filter;
mod identity;
mod notifications;
mod operations;
mod security_events;
mod tenants;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::any::{AnyArguments, AnyPoolOptions};
use sqlx::error::ErrorKind;
use sqlx::query::Query;
use sqlx::{Any, AnyPool};
use writeback_core::ReasonCode;

pub use admin_events::{AdminEvent, NewAdminEvent};
pub use agents::{
    AgentRow, CertificateRenewal, IssuedCertificate, KeyRegistration, NewAgent, ResultKey,
};
pub use auth::{Caller, ClientApp, Role, SignIn, Subject, TokenRow};
pub use domains::DomainRow;
pub use filter::AuditFilter;
use filter::FilterColumns;
pub use identity::{
    ClientRegistration, IdentityBindings, IssuerConfig, RoleMapping, StrongAuthPolicy,
};
pub use notifications::{NewNotification, NotificationRow, NotificationState};
pub use operations::{
    Finish, Hops, NEVER_RAN, NewOperation, OperationRow, OperationState, RESTART_TIMEOUT_MESSAGE,
    Window,
};
pub use security_events::SecurityEvent;
pub use tenants::{Settings, SettingsUpdate};

/// Page size used when a request asks for 0 entries.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page a list method returns; larger requests are clamped.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Set on every SQLite connection: wait up to 10 s for another writer rather
/// than failing at once, enforce foreign keys, and fsync less often (safe
/// with WAL).
const SQLITE_PRAGMAS: [&str; 3] = [
    "PRAGMA busy_timeout = 10000",
    "PRAGMA foreign_keys = ON",
    "PRAGMA synchronous = NORMAL",
];
/// Connections per pool.
const MAX_CONNECTIONS: u32 = 8;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Everything a [`Store`] method can fail with. Each variant maps to a stable
/// [`ReasonCode`] through [`StoreError::reason_code`]; callers may refine it
/// (a missing domain while routing is `DOMAIN_NOT_FOUND`, for instance).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named object does not exist (`what` is e.g. `"tenant"`, `"domain"`,
    /// `"operation"`, `"agent"`, `"api token"`, `"principal"`).
    #[error("{what} not found")]
    NotFound {
        /// Kind of object that is missing.
        what: &'static str,
    },
    /// The object exists already (`what` is e.g. `"tenant"`, `"domain"`,
    /// `"upn suffix"`, `"operation"`, `"agent"`).
    #[error("{what} already exists")]
    AlreadyExists {
        /// Kind of object that collides.
        what: &'static str,
    },
    /// The principal exists with another role than the one asked for.
    #[error("principal exists with role {existing}")]
    RoleMismatch {
        /// The role the principal has.
        existing: Role,
    },
    /// The operation already has its final state; it is never finished twice.
    #[error("operation already finished")]
    AlreadyFinished,
    /// The enrollment token was already used.
    #[error("enrollment token already used")]
    TokenUsed,
    /// The enrollment token expired.
    #[error("enrollment token expired")]
    TokenExpired,
    /// The enrollment token is unknown or its secret does not match.
    #[error("enrollment token invalid")]
    TokenInvalid,
    /// A page token that no list method of this store issued.
    #[error("invalid page token")]
    InvalidPageToken,
    /// An argument the store refuses (empty name, a token that is not a hash…).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The database URL names no supported backend.
    #[error("unsupported database url (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
    /// A stored value could not be decoded (unknown role, malformed hex…).
    #[error("corrupt stored value in {0}")]
    Corrupt(&'static str),
    /// Applying the embedded migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// The default stable reason code for this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            StoreError::NotFound { .. } => ReasonCode::NotFound,
            StoreError::AlreadyExists { .. }
            | StoreError::AlreadyFinished
            | StoreError::RoleMismatch { .. } => ReasonCode::AlreadyExists,
            StoreError::TokenUsed => ReasonCode::EnrollmentTokenUsed,
            StoreError::TokenExpired => ReasonCode::EnrollmentTokenExpired,
            StoreError::TokenInvalid => ReasonCode::EnrollmentTokenInvalid,
            StoreError::InvalidPageToken | StoreError::InvalidArgument(_) => {
                ReasonCode::InvalidArgument
            }
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_),
            ) => ReasonCode::Unavailable,
            StoreError::UnsupportedUrl
            | StoreError::Corrupt(_)
            | StoreError::Migrate(_)
            | StoreError::Database(_) => ReasonCode::Internal,
        }
    }
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The control plane's notion of "now": the system clock plus an offset.
/// Production never moves it; tests share one clock between the store and
/// the API and move it forward to expire tokens, free the throttle window or
/// pass deadlines without sleeping. Clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        system_now_ms().saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every clone) forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// A cheap-to-clone handle on the control plane's database (a connection pool
/// inside). Every clone shares the pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    clock: Clock,
}

impl Store {
    /// Connects to `url` and applies the embedded migrations.
    ///
    /// `sqlite://path` (or `sqlite:path`) opens a SQLite file, creating it
    /// when the URL has no `mode=` parameter (`mode=rwc` is added); the
    /// connection uses WAL, foreign keys and a busy timeout. `sqlite::memory:`
    /// is a private in-memory database on a single connection (tests only).
    /// `postgres://…` or `postgresql://…` opens PostgreSQL; several stores may
    /// share one PostgreSQL database (migrations take an advisory lock).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = normalize_url(url)?;
        let in_memory =
            backend == Backend::Sqlite && (url.contains(":memory:") || url.contains("mode=memory"));
        let mut options = AnyPoolOptions::new()
            .max_connections(if in_memory { 1 } else { MAX_CONNECTIONS })
            .acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    for pragma in SQLITE_PRAGMAS {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await?;
        if backend == Backend::Sqlite && !in_memory {
            // Persistent in the file; needs an exclusive lock, so it is set
            // once here rather than on every connection.
            sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_all(&pool)
                .await?;
        }
        MIGRATOR.run(&pool).await?;
        tracing::info!(
            backend = backend_name(backend),
            "store connected and migrated"
        );
        Ok(Store {
            pool,
            backend,
            clock: Clock::system(),
        })
    }

    /// This store with `clock` as its notion of now (for tests that move time).
    pub fn with_clock(mut self, clock: Clock) -> Store {
        self.clock = clock;
        self
    }

    /// The store's clock; the API uses it too, so both agree on "now".
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// [`Clock::now_ms`] of the store's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// True on PostgreSQL.
    fn is_postgres(&self) -> bool {
        self.backend == Backend::Postgres
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        backend_name(self.backend)
    }

    /// Starts a transaction that will write. On SQLite it takes the write
    /// lock at once (`BEGIN IMMEDIATE`): a deferred transaction that reads
    /// and then writes fails with `SQLITE_BUSY_SNAPSHOT` ("database is
    /// locked", no busy wait) when another connection wrote in between.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Checks that the database answers (for readiness probes).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool; every clone of this store stops working.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// Picks the backend and adds `mode=rwc` to a file SQLite URL without a mode.
fn normalize_url(url: &str) -> Result<(Backend, String), StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_owned()));
    }
    if !url.starts_with("sqlite:") {
        return Err(StoreError::UnsupportedUrl);
    }
    if url.contains(":memory:") || url.contains("mode=") {
        return Ok((Backend::Sqlite, url.to_owned()));
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok((Backend::Sqlite, format!("{url}{sep}mode=rwc")))
}

/// The lowercase hex SHA-256 of a secret: what every `*_hash` argument of the
/// store expects.
pub fn hash_secret(secret: &[u8]) -> String {
    hex::encode(Sha256::digest(secret))
}

/// Lowercases a hash and checks that it is 64 hex digits.
fn normalize_hash(hash: &str) -> Option<String> {
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hash.to_ascii_lowercase())
}

/// Compares two strings in time independent of where they differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn non_empty(value: &str, what: &'static str) -> Result<(), StoreError> {
    if value.trim().is_empty() {
        Err(StoreError::InvalidArgument(what))
    } else {
        Ok(())
    }
}

/// Lowercase, trimmed DNS name (domain or UPN suffix, a leading `@` dropped).
fn normalize_dns(name: &str) -> String {
    name.trim().trim_start_matches('@').to_ascii_lowercase()
}

/// The system clock in Unix milliseconds, for bookkeeping timestamps.
fn system_now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// Maps an insert's constraint violations: a unique violation means `exists`
/// is taken, a foreign-key violation means the parent `missing` is unknown.
fn insert_error(e: sqlx::Error, exists: &'static str, missing: &'static str) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        match db.kind() {
            ErrorKind::UniqueViolation => return StoreError::AlreadyExists { what: exists },
            ErrorKind::ForeignKeyViolation => return StoreError::NotFound { what: missing },
            _ => {}
        }
    }
    StoreError::Database(e)
}

/// One positional argument of a query assembled at run time.
#[derive(Debug, Clone)]
enum Arg {
    Text(String),
    Int(i64),
}

/// Builds a query from SQL with `$n` placeholders and its arguments in order.
fn query_with<'q>(sql: &'q str, args: Vec<Arg>) -> Query<'q, Any, AnyArguments<'q>> {
    let mut q = sqlx::query(sql);
    for arg in args {
        q = match arg {
            Arg::Text(s) => q.bind(s),
            Arg::Int(i) => q.bind(i),
        };
    }
    q
}

/// One page of a list: how many entries and where to start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Maximum entries to return; 0 means [`DEFAULT_PAGE_SIZE`], anything over
    /// [`MAX_PAGE_SIZE`] is clamped to it.
    pub size: u32,
    /// The `next` token of the previous page; `None` (or empty) for the first.
    pub token: Option<String>,
}

impl Page {
    /// The first page, with `size` entries at most.
    pub fn first(size: u32) -> Page {
        Page { size, token: None }
    }

    /// The page after the one that returned `token`.
    pub fn after(size: u32, token: impl Into<String>) -> Page {
        Page {
            size,
            token: Some(token.into()),
        }
    }

    /// The effective page size.
    fn limit(&self) -> usize {
        let size = match self.size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        usize::try_from(size).unwrap_or(usize::MAX)
    }

    /// The token's key for list `kind`, `None` on the first page.
    fn cursor(&self, kind: char) -> Result<Option<String>, StoreError> {
        match self.token.as_deref() {
            None | Some("") => Ok(None),
            Some(token) => decode_page_token(kind, token).map(Some),
        }
    }
}

/// Page tokens are hex of `<kind>:<key>`: opaque to callers, checked on the
/// way back in.
pub(crate) fn encode_page_token(kind: char, key: &str) -> String {
    hex::encode(format!("{kind}:{key}"))
}

pub(crate) fn decode_page_token(kind: char, token: &str) -> Result<String, StoreError> {
    let bytes = hex::decode(token).map_err(|_| StoreError::InvalidPageToken)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::InvalidPageToken)?;
    let (k, key) = text.split_once(':').ok_or(StoreError::InvalidPageToken)?;
    if k.len() != 1 || !k.starts_with(kind) || key.is_empty() {
        return Err(StoreError::InvalidPageToken);
    }
    Ok(key.to_owned())
}

/// Trims a page fetched with one extra row: returns the next token when the
/// extra row proves there is more.
fn finish_page<T>(
    rows: &mut Vec<T>,
    limit: usize,
    kind: char,
    key: impl Fn(&T) -> String,
) -> Option<String> {
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|last| encode_page_token(kind, &key(last)))
    } else {
        None
    }
}

fn limit_arg(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_a_backend_and_create_sqlite_files() {
        assert_eq!(
            normalize_url("sqlite:///var/lib/wb.db").unwrap(),
            (Backend::Sqlite, "sqlite:///var/lib/wb.db?mode=rwc".into())
        );
        assert_eq!(
            normalize_url("sqlite://wb.db?mode=ro").unwrap().1,
            "sqlite://wb.db?mode=ro"
        );
        assert_eq!(
            normalize_url("sqlite://wb.db?cache=shared").unwrap().1,
            "sqlite://wb.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            normalize_url("postgresql://h/db").unwrap().0,
            Backend::Postgres
        );
        assert!(matches!(
            normalize_url("mysql://h/db"),
            Err(StoreError::UnsupportedUrl)
        ));
    }

    #[test]
    fn page_tokens_round_trip_and_reject_other_lists() {
        let t = encode_page_token('o', "17:abc:def");
        assert_eq!(decode_page_token('o', &t).unwrap(), "17:abc:def");
        assert!(matches!(
            decode_page_token('d', &t),
            Err(StoreError::InvalidPageToken)
        ));
        assert!(matches!(
            decode_page_token('o', "zz"),
            Err(StoreError::InvalidPageToken)
        ));
        assert_eq!(Page::first(0).limit(), 100);
        assert_eq!(Page::first(5000).limit(), 1000);
    }

    #[test]
    fn hashes_are_checked_and_compared_in_constant_time() {
        let h = hash_secret(b"secret");
        assert_eq!(h.len(), 64);
        assert_eq!(normalize_hash(&h.to_uppercase()).unwrap(), h);
        assert!(normalize_hash("plaintext-token").is_none());
        assert!(constant_time_eq(&h, &h));
        assert!(!constant_time_eq(&h, &hash_secret(b"other")));
    }
}
