//! Principals, their bearer tokens, and one-time agent enrollment tokens.

use std::fmt;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{
    Arg, Page, Store, StoreError, constant_time_eq, finish_page, insert_error, limit_arg,
    non_empty, normalize_dns, normalize_hash, query_with,
};

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Global administrator: may change every toggle, including cloud sync
    /// writeback, and reset passwords.
    GlobalAdmin,
    /// Password administrator: may reset end users' passwords.
    PasswordAdmin,
    /// End user: self-service only.
    User,
}

impl Role {
    /// Stable lowercase name: `global_admin`, `password_admin`, `user`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::GlobalAdmin => "global_admin",
            Role::PasswordAdmin => "password_admin",
            Role::User => "user",
        }
    }

    /// Parses [`Role::as_str`]'s output (a `-` is accepted for `_`).
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s.replace('-', "_").as_str() {
            "global_admin" => Role::GlobalAdmin,
            "password_admin" => Role::PasswordAdmin,
            "user" => Role::User,
            _ => return None,
        })
    }

    /// True for the two administrator roles.
    pub fn is_admin(self) -> bool {
        !matches!(self, Role::User)
    }

    /// Privilege order: user < password administrator < global administrator.
    pub fn rank(self) -> u8 {
        match self {
            Role::User => 0,
            Role::PasswordAdmin => 1,
            Role::GlobalAdmin => 2,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The application a token was issued to: the origin of every operation made
/// with it, which the caller cannot claim otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientApp {
    /// The self-service reset portal and the administrator portal.
    Portal,
    /// The Graph-like API.
    Graph,
    /// PowerShell-style scripted administration.
    Powershell,
    /// The Microsoft 365 admin center equivalent.
    M365AdminCenter,
}

impl ClientApp {
    /// Stable lowercase name: `portal`, `graph`, `powershell`, `m365_admin_center`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientApp::Portal => "portal",
            ClientApp::Graph => "graph",
            ClientApp::Powershell => "powershell",
            ClientApp::M365AdminCenter => "m365_admin_center",
        }
    }

    /// Parses [`ClientApp::as_str`]'s output (a `-` is accepted for `_`).
    pub fn parse(s: &str) -> Option<ClientApp> {
        Some(match s.replace('-', "_").as_str() {
            "portal" => ClientApp::Portal,
            "graph" => ClientApp::Graph,
            "powershell" => ClientApp::Powershell,
            "m365_admin_center" => ClientApp::M365AdminCenter,
            _ => return None,
        })
    }
}

impl fmt::Display for ClientApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling, as an API token names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant the token belongs to.
    pub tenant: String,
    /// The principal's name.
    pub principal: String,
    /// The principal's role.
    pub role: Role,
    /// The application the token was issued to.
    pub client_app: ClientApp,
    /// The token's id (for revocation and logs; not a secret): a `wbt1`
    /// token's id, or an identity-provider token's `jti`.
    pub token_id: String,
    /// How the caller signed in.
    pub sign_in: SignIn,
    /// A user signed in through an identity provider: their immutable
    /// identifier there, which binds them to one directory user.
    pub subject: Option<Subject>,
}

/// A person's immutable identifier at one of the tenant's issuers (the
/// value of its subject claim, `sub` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The tenant's issuer.
    pub issuer_id: String,
    /// The claim's value.
    pub value: String,
}

/// How the caller signed in, which decides whether they may reset or unlock
/// their own account without the old password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    /// A `wbt1` API token, minted by an administrator for a script or for
    /// break-glass use: there is no sign-in to judge, so never a strong one.
    ApiToken,
    /// An application acting as itself (client-credentials grant).
    Application,
    /// An identity-provider token meeting the issuer's strong-authentication
    /// policy, which names a method (amr, acr or a step-up scope).
    Strong,
    /// An identity-provider token that does not; the sentence says why.
    Weak(String),
}

impl SignIn {
    /// True when a self-service reset or unlock may go ahead.
    pub fn allows_self_service(&self) -> bool {
        matches!(self, SignIn::Strong)
    }

    /// `api_token`, `application`, `strong` or `weak`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SignIn::ApiToken => "api_token",
            SignIn::Application => "application",
            SignIn::Strong => "strong",
            SignIn::Weak(_) => "weak",
        }
    }
}

pub(super) fn parse_client_app(s: &str) -> Result<ClientApp, StoreError> {
    ClientApp::parse(s).ok_or(StoreError::Corrupt("client_app"))
}

/// A bearer token's metadata; the token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Its id (not a secret).
    pub token_id: String,
    /// The principal it authenticates.
    pub principal: String,
    /// The principal's role.
    pub role: Role,
    /// The client app it was issued to (the origin of its operations).
    pub client_app: ClientApp,
    /// When it was minted (Unix milliseconds).
    pub created_at_ms: i64,
    /// When it stops working, if ever.
    pub expires_at_ms: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at_ms: Option<i64>,
}

impl TokenRow {
    /// True when the token would authenticate at `now_ms`.
    pub fn is_valid_at(&self, now_ms: i64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|e| e > now_ms)
    }
}

const TOKEN_COLUMNS: &str = "t.token_id, t.principal, p.role, t.client_app, t.created_at_ms, \
     t.expires_at_ms, t.revoked_at_ms";

fn token_from_row(row: &AnyRow) -> Result<TokenRow, StoreError> {
    let role: String = row.try_get("role")?;
    let client_app: String = row.try_get("client_app")?;
    Ok(TokenRow {
        token_id: row.try_get("token_id")?,
        principal: row.try_get("principal")?,
        role: Role::parse(&role).ok_or(StoreError::Corrupt("role"))?,
        client_app: parse_client_app(&client_app)?,
        created_at_ms: row.try_get("created_at_ms")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        revoked_at_ms: row.try_get("revoked_at_ms")?,
    })
}

impl Store {
    /// Creates a principal of the tenant. `AlreadyExists { what: "principal" }`
    /// when the name is taken, `NotFound { what: "tenant" }` for an unknown
    /// tenant.
    pub async fn create_principal(
        &self,
        tenant: &str,
        name: &str,
        role: Role,
    ) -> Result<(), StoreError> {
        non_empty(name, "principal name is empty")?;
        sqlx::query(
            "INSERT INTO principals (tenant_id, name, role, created_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(tenant)
        .bind(name)
        .bind(role.as_str())
        .bind(self.now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| insert_error(e, "principal", "tenant"))?;
        Ok(())
    }

    /// The role of principal `name`, if it exists. Names are compared
    /// without regard to ASCII case (they are UPNs); should two stored names
    /// differ only in case, the most privileged role wins, so an
    /// administrator can never pass for an end user.
    pub async fn principal_role(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<Role>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT role FROM principals WHERE tenant_id = $1 AND LOWER(name) = $2")
                .bind(tenant)
                .bind(name.trim().to_ascii_lowercase())
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::Database)?;
        let mut best: Option<Role> = None;
        for (r,) in rows {
            let role = Role::parse(&r).ok_or(StoreError::Corrupt("role"))?;
            best = Some(match best {
                Some(b) if b.rank() >= role.rank() => b,
                _ => role,
            });
        }
        Ok(best)
    }

    /// The names of the tenant's principals with an administrator role
    /// (password or global administrator), as stored. The caller compares
    /// them itself, without regard to case in full Unicode (`LOWER` in
    /// SQLite folds ASCII only, so a name like `Åsa.admin@…` would not
    /// match `åsa.admin@…` in SQL). A tenant has few administrators.
    pub async fn admin_principals(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT name FROM principals WHERE tenant_id = $1 \
             AND role IN ('global_admin', 'password_admin')",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Creates the principal when it does not exist yet (names compared
    /// without regard to case); `RoleMismatch` when it exists with another
    /// role, so a token is never minted believing in a role the principal
    /// does not have.
    pub async fn ensure_principal_with_role(
        &self,
        tenant: &str,
        name: &str,
        role: Role,
    ) -> Result<(), StoreError> {
        match self.principal_role(tenant, name).await? {
            Some(existing) if existing == role => Ok(()),
            Some(existing) => Err(StoreError::RoleMismatch { existing }),
            None => match self.create_principal(tenant, name, role).await {
                Ok(()) => Ok(()),
                // Created meanwhile by someone else: check again.
                Err(StoreError::AlreadyExists { .. }) => {
                    match self.principal_role(tenant, name).await? {
                        Some(existing) if existing != role => {
                            Err(StoreError::RoleMismatch { existing })
                        }
                        _ => Ok(()),
                    }
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Creates the principal when it does not exist yet; an existing
    /// principal keeps its role.
    pub async fn ensure_principal(
        &self,
        tenant: &str,
        name: &str,
        role: Role,
    ) -> Result<(), StoreError> {
        match self.create_principal(tenant, name, role).await {
            Ok(()) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Stores a bearer token for a principal and client app and returns its
    /// new id. `token_hash` is the hex SHA-256 of the token (see
    /// [`super::hash_secret`]); anything else is `InvalidArgument`.
    /// `expires_at_ms` `None` never expires. `NotFound { what: "principal" }`
    /// for an unknown principal, `AlreadyExists { what: "api token" }` when the
    /// hash is already stored.
    pub async fn create_api_token(
        &self,
        tenant: &str,
        principal: &str,
        client_app: ClientApp,
        token_hash: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<String, StoreError> {
        let token_hash = normalize_hash(token_hash).ok_or(StoreError::InvalidArgument(
            "token_hash is not a hex sha-256",
        ))?;
        let token_id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO api_tokens \
             (tenant_id, token_id, principal, client_app, token_hash, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant)
        .bind(&token_id)
        .bind(principal)
        .bind(client_app.as_str())
        .bind(token_hash)
        .bind(self.now_ms())
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| insert_error(e, "api token", "principal"))?;
        tracing::info!(tenant, principal, token_id = %token_id, client_app = %client_app, "api token created");
        Ok(token_id)
    }

    /// The caller a bearer token names, by its hash. `None` when the hash is
    /// unknown or malformed, the token expired (`now_ms >= expires_at_ms`) or
    /// was revoked. Looks across tenants: the token decides the tenant.
    pub async fn authenticate(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<Caller>, StoreError> {
        let Some(token_hash) = normalize_hash(token_hash) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT t.tenant_id, t.token_id, t.principal, t.client_app, p.role \
             FROM api_tokens t \
             JOIN principals p ON p.tenant_id = t.tenant_id AND p.name = t.principal \
             WHERE t.token_hash = $1 AND t.revoked_at_ms IS NULL \
               AND (t.expires_at_ms IS NULL OR t.expires_at_ms > $2)",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let role: String = row.try_get("role")?;
        let client_app: String = row.try_get("client_app")?;
        Ok(Some(Caller {
            tenant: row.try_get("tenant_id")?,
            principal: row.try_get("principal")?,
            role: Role::parse(&role).ok_or(StoreError::Corrupt("role"))?,
            client_app: parse_client_app(&client_app)?,
            token_id: row.try_get("token_id")?,
            sign_in: SignIn::ApiToken,
            subject: None,
        }))
    }

    /// A stored bearer token by its hash whatever its state, with its
    /// tenant: what the security trail says of a refused token (expired,
    /// revoked). `None` for an unknown or malformed hash. Looks across
    /// tenants, like [`Store::authenticate`].
    pub async fn api_token_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<(String, TokenRow)>, StoreError> {
        let Some(token_hash) = normalize_hash(token_hash) else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "SELECT t.tenant_id, {TOKEN_COLUMNS} FROM api_tokens t \
             JOIN principals p ON p.tenant_id = t.tenant_id AND p.name = t.principal \
             WHERE t.token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some((row.try_get("tenant_id")?, token_from_row(&row)?))),
        }
    }

    /// The `(tenant, domain)` of an enrollment token by its public id, for
    /// the security trail of a refused enrollment; `None` when unknown.
    pub async fn enrollment_token_owner(
        &self,
        token_id: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row =
            sqlx::query("SELECT tenant_id, domain FROM enrollment_tokens WHERE token_id = $1")
                .bind(token_id)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some((row.try_get("tenant_id")?, row.try_get("domain")?))),
        }
    }

    /// Revokes a bearer token of the tenant (idempotent: the first revocation
    /// time is kept). `NotFound { what: "api token" }` when the tenant has no
    /// such token.
    pub async fn revoke_api_token(&self, tenant: &str, token_id: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at_ms = COALESCE(revoked_at_ms, $3) \
             WHERE tenant_id = $1 AND token_id = $2",
        )
        .bind(tenant)
        .bind(token_id)
        .bind(self.now_ms())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "api token" });
        }
        tracing::info!(tenant, token_id, "api token revoked");
        Ok(())
    }

    /// One bearer token of the tenant (never its secret: only its metadata).
    pub async fn get_api_token(
        &self,
        tenant: &str,
        token_id: &str,
    ) -> Result<Option<TokenRow>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens t \
             JOIN principals p ON p.tenant_id = t.tenant_id AND p.name = t.principal \
             WHERE t.tenant_id = $1 AND t.token_id = $2"
        );
        let row = sqlx::query(&sql)
            .bind(tenant)
            .bind(token_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    /// One page of the tenant's bearer tokens (of one principal when
    /// `principal` is set), expired and revoked ones included, ordered by
    /// token id, and the next page's token.
    pub async fn list_api_tokens(
        &self,
        tenant: &str,
        principal: Option<&str>,
        page: Page,
    ) -> Result<(Vec<TokenRow>, Option<String>), StoreError> {
        let limit = page.limit();
        let mut sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens t \
             JOIN principals p ON p.tenant_id = t.tenant_id AND p.name = t.principal \
             WHERE t.tenant_id = $1"
        );
        let mut args = vec![Arg::Text(tenant.to_owned())];
        if let Some(principal) = principal {
            args.push(Arg::Text(principal.trim().to_ascii_lowercase()));
            sql.push_str(&format!(" AND LOWER(t.principal) = ${}", args.len()));
        }
        if let Some(after) = page.cursor('k')? {
            args.push(Arg::Text(after));
            sql.push_str(&format!(" AND t.token_id > ${}", args.len()));
        }
        args.push(Arg::Int(limit_arg(limit)));
        sql.push_str(&format!(" ORDER BY t.token_id LIMIT ${}", args.len()));
        let rows = query_with(&sql, args).fetch_all(&self.pool).await?;
        let mut tokens = rows
            .iter()
            .map(token_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = finish_page(&mut tokens, limit, 'k', |t| t.token_id.clone());
        Ok((tokens, next))
    }

    /// Stores a one-time enrollment token for an agent of `domain`.
    /// `token_id` is the token's public id, `secret_hash` the hex SHA-256 of its
    /// secret part. `NotFound { what: "domain" }` when the tenant has no such
    /// domain, `AlreadyExists { what: "enrollment token" }` for a reused id.
    pub async fn create_enrollment_token(
        &self,
        tenant: &str,
        domain: &str,
        token_id: &str,
        secret_hash: &str,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        non_empty(token_id, "enrollment token id is empty")?;
        let secret_hash = normalize_hash(secret_hash).ok_or(StoreError::InvalidArgument(
            "secret_hash is not a hex sha-256",
        ))?;
        let domain = normalize_dns(domain);
        sqlx::query(
            "INSERT INTO enrollment_tokens \
             (token_id, tenant_id, domain, secret_hash, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_id)
        .bind(tenant)
        .bind(&domain)
        .bind(secret_hash)
        .bind(self.now_ms())
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| insert_error(e, "enrollment token", "domain"))?;
        tracing::info!(tenant, domain = %domain, token_id, "enrollment token created");
        Ok(())
    }

    /// Whether an enrollment token would be accepted now — its secret
    /// matches, unused, unexpired — without using it up: `Enroll` asks this
    /// before it parses anything else the caller sent. Same errors as
    /// [`Store::consume_enrollment_token`]; the `(tenant, domain)` it is for.
    pub async fn check_enrollment_token(
        &self,
        token_id: &str,
        secret_hash: &str,
        now_ms: i64,
    ) -> Result<(String, String), StoreError> {
        let secret_hash = normalize_hash(secret_hash).ok_or(StoreError::TokenInvalid)?;
        let row = sqlx::query(
            "SELECT tenant_id, domain, secret_hash, expires_at_ms, used_at_ms \
             FROM enrollment_tokens WHERE token_id = $1",
        )
        .bind(token_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::TokenInvalid)?;
        let stored_hash: String = row.try_get("secret_hash")?;
        if !constant_time_eq(&stored_hash, &secret_hash) {
            return Err(StoreError::TokenInvalid);
        }
        if row.try_get::<Option<i64>, _>("used_at_ms")?.is_some() {
            return Err(StoreError::TokenUsed);
        }
        if now_ms >= row.try_get::<i64, _>("expires_at_ms")? {
            return Err(StoreError::TokenExpired);
        }
        Ok((row.try_get("tenant_id")?, row.try_get("domain")?))
    }

    /// Uses an enrollment token once and returns its `(tenant, domain)`.
    ///
    /// `TokenInvalid` when the id is unknown or the secret hash does not match
    /// (checked first, so a guess learns nothing else), then `TokenUsed` when
    /// it was used, then `TokenExpired` when `now_ms >= expires_at_ms`. The
    /// token is marked used by one conditional `UPDATE … WHERE used_at_ms IS
    /// NULL`, so of several concurrent consumers exactly one wins and the
    /// others get `TokenUsed`.
    pub async fn consume_enrollment_token(
        &self,
        token_id: &str,
        secret_hash: &str,
        now_ms: i64,
    ) -> Result<(String, String), StoreError> {
        let (tenant, domain) = self
            .check_enrollment_token(token_id, secret_hash, now_ms)
            .await?;
        let done = sqlx::query(
            "UPDATE enrollment_tokens SET used_at_ms = $3 \
             WHERE token_id = $1 AND tenant_id = $2 AND used_at_ms IS NULL",
        )
        .bind(token_id)
        .bind(&tenant)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::TokenUsed);
        }
        tracing::info!(tenant = %tenant, domain = %domain, token_id, "enrollment token consumed");
        Ok((tenant, domain))
    }
}
