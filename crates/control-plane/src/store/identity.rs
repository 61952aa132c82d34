//! The OpenID Connect issuers a tenant trusts and the client applications
//! registered with them. Lists and maps are stored as JSON text (the schema
//! is portable TEXT/BIGINT). A token's tenant is decided by its `(iss, client
//! id)` pair, unique across the control plane: see [`Store::client_by_issuer_url`].

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::auth::parse_client_app;
use super::{ClientApp, Role, Store, StoreError, insert_error, non_empty};

/// A role claim value and the role it grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleMapping {
    /// The claim value, compared exactly.
    pub value: String,
    /// The role it grants.
    pub role: Role,
}

/// What a self-service reset or unlock requires of the user's sign-in; every
/// non-empty condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrongAuthPolicy {
    /// At least one of these `amr` values.
    #[serde(default)]
    pub amr_any: Vec<String>,
    /// The token's `acr` is one of these.
    #[serde(default)]
    pub acr_any: Vec<String>,
    /// The sign-in (`auth_time`) is at most this old; 0 = any age.
    #[serde(default)]
    pub max_age_seconds: u32,
    /// The token was granted at least one of these scopes (`scope` or
    /// `scp`): for providers that express a step-up sign-in only as a scope
    /// granted after multi-factor authentication.
    #[serde(default)]
    pub scope_any: Vec<String>,
}

impl StrongAuthPolicy {
    /// True when the policy asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.amr_any.is_empty()
            && self.acr_any.is_empty()
            && self.max_age_seconds == 0
            && self.scope_any.is_empty()
    }

    /// True when the policy asks for a method of signing in (an `amr`,
    /// `acr` or step-up scope): only such a policy can tell a second factor
    /// from a password alone. A maximum age alone cannot.
    pub fn names_a_method(&self) -> bool {
        !(self.amr_any.is_empty() && self.acr_any.is_empty() && self.scope_any.is_empty())
    }
}

/// Whom a person signed in through an issuer is bound to, and who is bound
/// to the directory user they name ([`Store::identity_bindings`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityBindings {
    /// The directory user (`guid:…`) the subject is bound to.
    pub person_of_subject: Option<String>,
    /// The subject bound to the directory user.
    pub subject_of_person: Option<String>,
}

/// A trusted issuer of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    /// Short name within the tenant.
    pub issuer_id: String,
    /// The exact `iss` of its tokens.
    pub issuer_url: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// Accepted JWS algorithms (names as in JOSE: `RS256`…).
    pub algorithms: Vec<String>,
    /// Claim holding the principal name.
    pub principal_claim: String,
    /// Claim holding the person's immutable identifier (`sub`, `oid`,
    /// `uid`): what a person is bound to their directory user by
    /// ([`Store::bind_identity`]).
    pub subject_claim: String,
    /// Claim holding groups or roles; empty = none.
    pub role_claim: String,
    /// Claim values and the roles they grant.
    pub role_mappings: Vec<RoleMapping>,
    /// Role of an unmapped user; `None` refuses them.
    pub default_role: Option<Role>,
    /// Tolerated clock difference, seconds.
    pub clock_skew_seconds: u32,
    /// What a self-service reset or unlock requires.
    pub strong_auth: StrongAuthPolicy,
    /// When it was last changed (Unix milliseconds; set by the store).
    pub updated_at_ms: i64,
}

/// A client application registered with one of the tenant's issuers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRegistration {
    /// The issuer that issues its tokens.
    pub issuer_id: String,
    /// Its client id as tokens name it.
    pub client_id: String,
    /// The origin of every operation made with its tokens.
    pub client_app: ClientApp,
    /// `None`: acts for signed-in users; otherwise an application acting as
    /// itself with this role.
    pub application_role: Option<Role>,
    /// When it was last changed (Unix milliseconds; set by the store).
    pub updated_at_ms: i64,
}

const ISSUER_COLUMNS: &str = "issuer_id, issuer_url, audiences, algorithms, principal_claim, \
     role_claim, role_mappings, default_role, clock_skew_seconds, strong_auth, updated_at_ms, \
     subject_claim";

fn json<T: for<'de> Deserialize<'de>>(row: &AnyRow, column: &'static str) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|_| StoreError::Corrupt(column))
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing plain structs, strings and vectors cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn optional_role(row: &AnyRow, column: &'static str) -> Result<Option<Role>, StoreError> {
    let value: Option<String> = row.try_get(column)?;
    value
        .map(|r| Role::parse(&r).ok_or(StoreError::Corrupt(column)))
        .transpose()
}

fn issuer_from_row(row: &AnyRow) -> Result<IssuerConfig, StoreError> {
    let skew: i64 = row.try_get("clock_skew_seconds")?;
    Ok(IssuerConfig {
        issuer_id: row.try_get("issuer_id")?,
        issuer_url: row.try_get("issuer_url")?,
        audiences: json(row, "audiences")?,
        algorithms: json(row, "algorithms")?,
        principal_claim: row.try_get("principal_claim")?,
        subject_claim: row.try_get("subject_claim")?,
        role_claim: row.try_get("role_claim")?,
        role_mappings: json(row, "role_mappings")?,
        default_role: optional_role(row, "default_role")?,
        clock_skew_seconds: u32::try_from(skew).map_err(|_| StoreError::Corrupt("clock skew"))?,
        strong_auth: json(row, "strong_auth")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

const CLIENT_COLUMNS: &str = "issuer_id, client_id, client_app, application_role, updated_at_ms";

fn client_from_row(row: &AnyRow) -> Result<ClientRegistration, StoreError> {
    let app: String = row.try_get("client_app")?;
    Ok(ClientRegistration {
        issuer_id: row.try_get("issuer_id")?,
        client_id: row.try_get("client_id")?,
        client_app: parse_client_app(&app)?,
        application_role: optional_role(row, "application_role")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

impl Store {
    /// Creates or replaces the tenant's issuer `issuer.issuer_id` and returns
    /// it as stored. Changing the URL of an issuer that has clients is
    /// refused (`InvalidArgument`): delete them first, so no registration
    /// silently moves to another issuer.
    pub async fn put_issuer(
        &self,
        tenant: &str,
        issuer: &IssuerConfig,
    ) -> Result<IssuerConfig, StoreError> {
        non_empty(&issuer.issuer_id, "issuer_id is empty")?;
        non_empty(&issuer.issuer_url, "issuer_url is empty")?;
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        let old: Option<(String, String)> = sqlx::query_as(
            "SELECT issuer_url, subject_claim FROM oidc_issuers WHERE tenant_id = $1 AND issuer_id = $2",
        )
        .bind(tenant)
        .bind(&issuer.issuer_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((url, subject_claim)) = &old
            && (*url != issuer.issuer_url || *subject_claim != issuer.subject_claim)
        {
            // The identifiers bound so far name people of another issuer,
            // or are another claim's values: they bind no one any more.
            sqlx::query("DELETE FROM identity_bindings WHERE tenant_id = $1 AND issuer_id = $2")
                .bind(tenant)
                .bind(&issuer.issuer_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some((url, _)) = old
            && url != issuer.issuer_url
        {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM oidc_clients WHERE tenant_id = $1 AND issuer_id = $2",
            )
            .bind(tenant)
            .bind(&issuer.issuer_id)
            .fetch_one(&mut *tx)
            .await?;
            if n > 0 {
                return Err(StoreError::InvalidArgument(
                    "the issuer has client registrations; delete them before changing its URL",
                ));
            }
        }
        // One upsert for both backends (SQLite 3.24+ and PostgreSQL).
        sqlx::query(&format!(
            "INSERT INTO oidc_issuers (tenant_id, {ISSUER_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (tenant_id, issuer_id) DO UPDATE SET issuer_url = excluded.issuer_url, \
             audiences = excluded.audiences, algorithms = excluded.algorithms, \
             principal_claim = excluded.principal_claim, role_claim = excluded.role_claim, \
             role_mappings = excluded.role_mappings, default_role = excluded.default_role, \
             clock_skew_seconds = excluded.clock_skew_seconds, \
             strong_auth = excluded.strong_auth, updated_at_ms = excluded.updated_at_ms, \
             subject_claim = excluded.subject_claim"
        ))
        .bind(tenant)
        .bind(&issuer.issuer_id)
        .bind(&issuer.issuer_url)
        .bind(to_json(&issuer.audiences))
        .bind(to_json(&issuer.algorithms))
        .bind(&issuer.principal_claim)
        .bind(&issuer.role_claim)
        .bind(to_json(&issuer.role_mappings))
        .bind(issuer.default_role.map(Role::as_str))
        .bind(i64::from(issuer.clock_skew_seconds))
        .bind(to_json(&issuer.strong_auth))
        .bind(now)
        .bind(&issuer.subject_claim)
        .execute(&mut *tx)
        .await
        .map_err(|e| insert_error(e, "issuer", "tenant"))?;
        tx.commit().await?;
        self.get_issuer(tenant, &issuer.issuer_id).await
    }

    /// The tenant's issuer `issuer_id`; `NotFound { what: "issuer" }`.
    pub async fn get_issuer(
        &self,
        tenant: &str,
        issuer_id: &str,
    ) -> Result<IssuerConfig, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ISSUER_COLUMNS} FROM oidc_issuers WHERE tenant_id = $1 AND issuer_id = $2"
        ))
        .bind(tenant)
        .bind(issuer_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound { what: "issuer" })?;
        issuer_from_row(&row)
    }

    /// The tenant's issuers, ordered by id.
    pub async fn list_issuers(&self, tenant: &str) -> Result<Vec<IssuerConfig>, StoreError> {
        sqlx::query(&format!(
            "SELECT {ISSUER_COLUMNS} FROM oidc_issuers WHERE tenant_id = $1 ORDER BY issuer_id"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(issuer_from_row)
        .collect()
    }

    /// True when any tenant trusts an issuer with this exact URL (across
    /// tenants: a token's `iss` is checked before its tenant is known).
    pub async fn issuer_url_trusted(&self, issuer_url: &str) -> Result<bool, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT tenant_id FROM oidc_issuers WHERE issuer_url = $1 LIMIT 1")
                .bind(issuer_url)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }

    /// Removes the tenant's issuer, its client registrations and the
    /// identities bound through it, returning the issuer as it was.
    pub async fn delete_issuer(
        &self,
        tenant: &str,
        issuer_id: &str,
    ) -> Result<IssuerConfig, StoreError> {
        let issuer = self.get_issuer(tenant, issuer_id).await?;
        let mut tx = self.begin_write().await?;
        for table in ["identity_bindings", "oidc_clients", "oidc_issuers"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE tenant_id = $1 AND issuer_id = $2"
            ))
            .bind(tenant)
            .bind(issuer_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(issuer)
    }

    /// Creates or replaces a client registration of the tenant's issuer
    /// `client.issuer_id` (`NotFound { what: "issuer" }` when there is none).
    /// `AlreadyExists { what: "client" }` when another tenant registered the
    /// same client id with an issuer of the same URL.
    pub async fn put_client(
        &self,
        tenant: &str,
        client: &ClientRegistration,
    ) -> Result<ClientRegistration, StoreError> {
        non_empty(&client.client_id, "client_id is empty")?;
        let issuer = self.get_issuer(tenant, &client.issuer_id).await?;
        let now = self.now_ms();
        let role = client.application_role.map(Role::as_str);
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE oidc_clients SET client_app = $4, application_role = $5, updated_at_ms = $6 \
             WHERE tenant_id = $1 AND issuer_id = $2 AND client_id = $3",
        )
        .bind(tenant)
        .bind(&client.issuer_id)
        .bind(&client.client_id)
        .bind(client.client_app.as_str())
        .bind(role)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO oidc_clients (tenant_id, issuer_id, issuer_url, client_id, \
                 client_app, application_role, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(tenant)
            .bind(&client.issuer_id)
            .bind(&issuer.issuer_url)
            .bind(&client.client_id)
            .bind(client.client_app.as_str())
            .bind(role)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| insert_error(e, "client", "issuer"))?;
        }
        tx.commit().await?;
        self.get_client(tenant, &client.issuer_id, &client.client_id)
            .await
    }

    /// One client registration; `NotFound { what: "client" }`.
    pub async fn get_client(
        &self,
        tenant: &str,
        issuer_id: &str,
        client_id: &str,
    ) -> Result<ClientRegistration, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oidc_clients \
             WHERE tenant_id = $1 AND issuer_id = $2 AND client_id = $3"
        ))
        .bind(tenant)
        .bind(issuer_id)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound { what: "client" })?;
        client_from_row(&row)
    }

    /// The tenant's client registrations (of one issuer when given), ordered
    /// by issuer and client id.
    pub async fn list_clients(
        &self,
        tenant: &str,
        issuer_id: Option<&str>,
    ) -> Result<Vec<ClientRegistration>, StoreError> {
        let rows = match issuer_id {
            Some(issuer) => {
                sqlx::query(&format!(
                    "SELECT {CLIENT_COLUMNS} FROM oidc_clients WHERE tenant_id = $1 \
                     AND issuer_id = $2 ORDER BY issuer_id, client_id"
                ))
                .bind(tenant)
                .bind(issuer)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {CLIENT_COLUMNS} FROM oidc_clients WHERE tenant_id = $1 \
                     ORDER BY issuer_id, client_id"
                ))
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(client_from_row).collect()
    }

    /// Removes a client registration, returning it as it was.
    pub async fn delete_client(
        &self,
        tenant: &str,
        issuer_id: &str,
        client_id: &str,
    ) -> Result<ClientRegistration, StoreError> {
        let client = self.get_client(tenant, issuer_id, client_id).await?;
        sqlx::query(
            "DELETE FROM oidc_clients WHERE tenant_id = $1 AND issuer_id = $2 AND client_id = $3",
        )
        .bind(tenant)
        .bind(issuer_id)
        .bind(client_id)
        .execute(&self.pool)
        .await?;
        Ok(client)
    }

    /// The registration of `client_id` with an issuer whose URL is
    /// `issuer_url`, with its tenant and issuer. Looks across tenants: the
    /// pair decides the tenant of a token.
    pub async fn client_by_issuer_url(
        &self,
        issuer_url: &str,
        client_id: &str,
    ) -> Result<Option<(String, IssuerConfig, ClientRegistration)>, StoreError> {
        // One query on every identity-provider request: the registration and
        // its issuer together (the issuer's columns keep their names).
        let issuer_columns: Vec<String> = ISSUER_COLUMNS
            .split(", ")
            .map(|c| format!("i.{c}"))
            .collect();
        let row = sqlx::query(&format!(
            "SELECT c.tenant_id, c.client_id, c.client_app, c.application_role, \
             c.updated_at_ms AS client_updated_at_ms, {} \
             FROM oidc_clients c JOIN oidc_issuers i \
             ON i.tenant_id = c.tenant_id AND i.issuer_id = c.issuer_id \
             WHERE c.issuer_url = $1 AND c.client_id = $2",
            issuer_columns.join(", ")
        ))
        .bind(issuer_url)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let issuer = issuer_from_row(&row)?;
        let app: String = row.try_get("client_app")?;
        let client = ClientRegistration {
            issuer_id: issuer.issuer_id.clone(),
            client_id: row.try_get("client_id")?,
            client_app: parse_client_app(&app)?,
            application_role: optional_role(&row, "application_role")?,
            updated_at_ms: row.try_get("client_updated_at_ms")?,
        };
        Ok(Some((row.try_get("tenant_id")?, issuer, client)))
    }

    /// Raises the stored role of principal `name` to `role` (creating the
    /// principal when new), never lowering it: a role learnt from a sign-in
    /// makes an administrator a protected target at once, and a role given
    /// to a `wbt1` token is never taken away by a token from elsewhere.
    pub async fn raise_principal_role(
        &self,
        tenant: &str,
        name: &str,
        role: Role,
    ) -> Result<(), StoreError> {
        match self.principal_role(tenant, name).await? {
            None => self.ensure_principal(tenant, name, role).await,
            Some(existing) if existing.rank() >= role.rank() => Ok(()),
            Some(_) => {
                sqlx::query(
                    "UPDATE principals SET role = $3 WHERE tenant_id = $1 AND LOWER(name) = $2",
                )
                .bind(tenant)
                .bind(name.trim().to_ascii_lowercase())
                .bind(role.as_str())
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }
    }

    /// The bindings of `subject` (a person's immutable identifier at the
    /// tenant's issuer `issuer_id`) and of `person` (a directory user's
    /// `guid:…` key) through that issuer.
    pub async fn identity_bindings(
        &self,
        tenant: &str,
        issuer_id: &str,
        subject: &str,
        person: &str,
    ) -> Result<IdentityBindings, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT subject, person FROM identity_bindings WHERE tenant_id = $1 \
             AND issuer_id = $2 AND (subject = $3 OR person = $4)",
        )
        .bind(tenant)
        .bind(issuer_id)
        .bind(subject)
        .bind(person)
        .fetch_all(&self.pool)
        .await?;
        let mut found = IdentityBindings::default();
        for (s, p) in rows {
            if s == subject {
                found.person_of_subject = Some(p.clone());
            }
            if p == person {
                found.subject_of_person = Some(s);
            }
        }
        Ok(found)
    }

    /// Binds `subject` at the tenant's issuer `issuer_id` to the directory
    /// user `person` (`guid:…`), unless either is bound already (the first
    /// binding stands); true when this call bound them.
    pub async fn bind_identity(
        &self,
        tenant: &str,
        issuer_id: &str,
        subject: &str,
        person: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO identity_bindings (tenant_id, issuer_id, subject, person, bound_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(issuer_id)
        .bind(subject)
        .bind(person)
        .bind(self.now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
