//! Enrolled agents: identity, envelope public key, result-signing public
//! key, revocation, and the certificates a renewal superseded (relays
//! refuse them).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{
    Arg, Page, Store, StoreError, finish_page, insert_error, limit_arg, non_empty, normalize_dns,
    query_with,
};

/// An agent to record at enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgent {
    /// Tenant it belongs to.
    pub tenant: String,
    /// Domain it serves (lowercased when stored).
    pub domain: String,
    /// Its id, unique in the tenant (also in its certificate's URI SAN).
    pub agent_id: String,
    /// Host name it reported.
    pub hostname: String,
    /// Software version it reported.
    pub version: String,
    /// Its HPKE X25519 public key for password envelopes.
    pub envelope_public_key: Vec<u8>,
    /// SHA-256 fingerprint of the certificate issued to it.
    pub cert_fingerprint: String,
    /// Its Ed25519 result-signing public key (32 bytes).
    pub result_signing_key: Vec<u8>,
}

/// An enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRow {
    /// Tenant it belongs to.
    pub tenant: String,
    /// Its id.
    pub agent_id: String,
    /// Domain it serves.
    pub domain: String,
    /// Host name it reported.
    pub hostname: String,
    /// Software version it reported.
    pub version: String,
    /// Its HPKE X25519 public key for password envelopes.
    pub envelope_public_key: Vec<u8>,
    /// SHA-256 fingerprint of its certificate.
    pub cert_fingerprint: String,
    /// When it enrolled (Unix milliseconds).
    pub enrolled_at_ms: i64,
    /// When it was revoked, if it was.
    pub revoked_at_ms: Option<i64>,
    /// Its result-signing public key; empty for an agent enrolled before
    /// results were signed that has not renewed since (its results are refused).
    pub result_signing_key: Vec<u8>,
    /// The certificate its current one replaced (empty before its first
    /// renewal): superseded, but it may ask again for the answer of the
    /// renewal that replaced it, for the same key.
    pub previous_cert_fingerprint: String,
}

impl AgentRow {
    /// True once revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at_ms.is_some()
    }
}

const AGENT_COLUMNS: &str = "tenant_id, agent_id, domain, hostname, version, \
     envelope_public_key, cert_fingerprint, enrolled_at_ms, revoked_at_ms, result_signing_key, \
     previous_cert_fingerprint";

fn decode_key(hex_key: &str) -> Result<Vec<u8>, StoreError> {
    hex::decode(hex_key).map_err(|_| StoreError::Corrupt("envelope_public_key"))
}

fn decode_result_key(hex_key: &str) -> Result<Vec<u8>, StoreError> {
    hex::decode(hex_key).map_err(|_| StoreError::Corrupt("result_signing_key"))
}

fn agent_from_row(row: &AnyRow) -> Result<AgentRow, StoreError> {
    let key: String = row.try_get("envelope_public_key")?;
    Ok(AgentRow {
        tenant: row.try_get("tenant_id")?,
        agent_id: row.try_get("agent_id")?,
        domain: row.try_get("domain")?,
        hostname: row.try_get("hostname")?,
        version: row.try_get("version")?,
        envelope_public_key: decode_key(&key)?,
        cert_fingerprint: row.try_get("cert_fingerprint")?,
        enrolled_at_ms: row.try_get("enrolled_at_ms")?,
        revoked_at_ms: row.try_get("revoked_at_ms")?,
        result_signing_key: decode_result_key(&row.try_get::<String, _>("result_signing_key")?)?,
        previous_cert_fingerprint: row.try_get("previous_cert_fingerprint")?,
    })
}

/// What the control plane holds to check an agent's results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultKey {
    /// The agent's result-signing public key.
    Key(Vec<u8>),
    /// The agent enrolled before results were signed and has not renewed since.
    Unregistered,
    /// The agent is revoked.
    Revoked,
    /// No such agent in the tenant.
    Unknown,
}

/// A certificate the CA just issued to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// SHA-256 of its DER (hex).
    pub fingerprint: String,
    /// SHA-256 of its SubjectPublicKeyInfo (hex): which key it is for.
    pub key_fingerprint: String,
}

/// What [`Store::renew_agent_certificate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateRenewal {
    /// The new fingerprint is recorded; the presented certificate is
    /// superseded.
    Renewed,
    /// The renewal presented the previous certificate and asked again for
    /// the current one's key (its first answer was lost): recorded, and the
    /// current certificate, never delivered, is superseded.
    Reissued,
    /// The agent is revoked (or was revoked in between): nothing changed.
    Revoked,
    /// The presented certificate is not the agent's current one (an older
    /// one a renewal superseded, or another renewal won the race): nothing
    /// changed.
    Superseded,
}

/// What a renewal did with the result-signing key it brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRegistration {
    /// Recorded now (the agent had none).
    Registered,
    /// The same key was already recorded.
    Unchanged,
    /// Another key is recorded; it stays.
    Conflict,
    /// The renewal brought none (an agent that predates result signatures).
    Missing,
}

impl KeyRegistration {
    /// A word for the administrative trail.
    pub fn word(self) -> &'static str {
        match self {
            KeyRegistration::Registered => "registered",
            KeyRegistration::Unchanged => "unchanged",
            KeyRegistration::Conflict => "conflict_kept_recorded",
            KeyRegistration::Missing => "missing",
        }
    }

    /// True when the key the renewal brought is the one recorded now.
    pub fn holds_key(self) -> bool {
        matches!(
            self,
            KeyRegistration::Registered | KeyRegistration::Unchanged
        )
    }
}

impl Store {
    /// Records an enrolled agent. `NotFound { what: "domain" }` when the tenant
    /// has no such domain, `AlreadyExists { what: "agent" }` for a reused id.
    pub async fn insert_agent(&self, agent: &NewAgent) -> Result<(), StoreError> {
        non_empty(&agent.agent_id, "agent id is empty")?;
        if agent.envelope_public_key.is_empty() {
            return Err(StoreError::InvalidArgument("envelope public key is empty"));
        }
        if agent.result_signing_key.is_empty() {
            return Err(StoreError::InvalidArgument("result-signing key is empty"));
        }
        let domain = normalize_dns(&agent.domain);
        sqlx::query(
            "INSERT INTO agents (tenant_id, agent_id, domain, hostname, version, \
             envelope_public_key, cert_fingerprint, enrolled_at_ms, result_signing_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&agent.tenant)
        .bind(&agent.agent_id)
        .bind(&domain)
        .bind(&agent.hostname)
        .bind(&agent.version)
        .bind(hex::encode(&agent.envelope_public_key))
        .bind(&agent.cert_fingerprint)
        .bind(self.now_ms())
        .bind(hex::encode(&agent.result_signing_key))
        .execute(&self.pool)
        .await
        .map_err(|e| insert_error(e, "agent", "domain"))?;
        tracing::info!(tenant = %agent.tenant, domain = %domain, agent_id = %agent.agent_id, "agent enrolled");
        Ok(())
    }

    /// One page of the tenant's agents (of one domain when `domain` is set),
    /// revoked ones included, ordered by agent id, and the next page's token.
    pub async fn list_agents(
        &self,
        tenant: &str,
        domain: Option<&str>,
        page: Page,
    ) -> Result<(Vec<AgentRow>, Option<String>), StoreError> {
        let limit = page.limit();
        let mut sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1");
        let mut args = vec![Arg::Text(tenant.to_owned())];
        if let Some(domain) = domain {
            args.push(Arg::Text(normalize_dns(domain)));
            sql.push_str(&format!(" AND domain = ${}", args.len()));
        }
        if let Some(after) = page.cursor('a')? {
            args.push(Arg::Text(after));
            sql.push_str(&format!(" AND agent_id > ${}", args.len()));
        }
        args.push(Arg::Int(limit_arg(limit)));
        sql.push_str(&format!(" ORDER BY agent_id LIMIT ${}", args.len()));
        let rows = query_with(&sql, args).fetch_all(&self.pool).await?;
        let mut agents = rows
            .iter()
            .map(agent_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = finish_page(&mut agents, limit, 'a', |a| a.agent_id.clone());
        Ok((agents, next))
    }

    /// `(agent_id, envelope public key)` of every non-revoked agent of the
    /// domain, ordered by agent id: the recipients of a password envelope.
    pub async fn agent_keys(
        &self,
        tenant: &str,
        domain: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent_id, envelope_public_key FROM agents \
             WHERE tenant_id = $1 AND domain = $2 AND revoked_at_ms IS NULL ORDER BY agent_id",
        )
        .bind(tenant)
        .bind(normalize_dns(domain))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let key: String = row.try_get("envelope_public_key")?;
                Ok((row.try_get("agent_id")?, decode_key(&key)?))
            })
            .collect()
    }

    /// Revokes an agent (idempotent: the first revocation time is kept) and
    /// returns its record. `NotFound { what: "agent" }` when the tenant has no
    /// such agent.
    /// The tenant's revocation version goes up by one in the same
    /// transaction (see [`Store::revocation_version`]).
    pub async fn revoke_agent(&self, tenant: &str, agent_id: &str) -> Result<AgentRow, StoreError> {
        let sql = format!(
            "UPDATE agents SET revoked_at_ms = COALESCE(revoked_at_ms, $3) \
             WHERE tenant_id = $1 AND agent_id = $2 RETURNING {AGENT_COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&sql)
            .bind(tenant)
            .bind(agent_id)
            .bind(self.now_ms())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound { what: "agent" })?;
        let agent = agent_from_row(&row)?;
        sqlx::query(
            "UPDATE tenants SET revocation_version = revocation_version + 1 WHERE tenant_id = $1",
        )
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(tenant, domain = %agent.domain, agent_id, "agent revoked");
        Ok(agent)
    }

    /// The tenant's revocation version: how many revocations it has seen
    /// (0 for none, or an unknown tenant). It only ever grows; read it
    /// *before* the list of revoked agents, so the list is at least as new
    /// as the version it is sent with.
    pub async fn revocation_version(&self, tenant: &str) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT revocation_version FROM tenants WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?;
        let v = match row {
            Some(r) => r.try_get::<i64, _>("revocation_version")?,
            None => 0,
        };
        Ok(u64::try_from(v).unwrap_or(0))
    }

    /// One agent of the tenant, revoked or not.
    pub async fn get_agent(
        &self,
        tenant: &str,
        agent_id: &str,
    ) -> Result<Option<AgentRow>, StoreError> {
        let sql =
            format!("SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND agent_id = $2");
        let row = sqlx::query(&sql)
            .bind(tenant)
            .bind(agent_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(agent_from_row).transpose()
    }

    /// Records a renewed certificate (`issued`) and the version the agent
    /// reported, only while the agent is not revoked, and only when the
    /// renewal presented (`presented`, a fingerprint):
    ///
    /// - the agent's current certificate: `presented` becomes the previous
    ///   one and is superseded;
    /// - or its previous one, asking for the same key as the current one
    ///   (the agent never got the answer that issued the current one, and
    ///   asks again with the key it kept): the current one, never
    ///   delivered, is superseded instead.
    ///
    /// Anything else is [`CertificateRenewal::Superseded`]. The update is a
    /// compare-and-set, so of two renewals presenting the same certificate
    /// one wins. In the same transaction the superseded certificate is
    /// recorded until `superseded_expires_at_ms` (relays refuse it) and the
    /// tenant's revocation version goes up, so the dispatcher brings every
    /// relay up to date before it routes through it again.
    /// `NotFound { what: "agent" }` when the tenant has no such agent.
    pub async fn renew_agent_certificate(
        &self,
        tenant: &str,
        agent_id: &str,
        presented: &str,
        issued: &IssuedCertificate,
        version: &str,
        superseded_expires_at_ms: i64,
    ) -> Result<CertificateRenewal, StoreError> {
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT cert_fingerprint, previous_cert_fingerprint, cert_key_sha256, revoked_at_ms \
             FROM agents WHERE tenant_id = $1 AND agent_id = $2",
        )
        .bind(tenant)
        .bind(agent_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound { what: "agent" })?;
        let current: String = row.try_get("cert_fingerprint")?;
        let previous: String = row.try_get("previous_cert_fingerprint")?;
        let current_key: String = row.try_get("cert_key_sha256")?;
        if row.try_get::<Option<i64>, _>("revoked_at_ms")?.is_some() {
            tx.rollback().await?;
            return Ok(CertificateRenewal::Revoked);
        }
        let (new_previous, superseded) = if presented == current {
            (presented, presented)
        } else if !previous.is_empty()
            && presented == previous
            && !current_key.is_empty()
            && issued.key_fingerprint == current_key
        {
            (previous.as_str(), current.as_str())
        } else {
            tx.rollback().await?;
            return Ok(CertificateRenewal::Superseded);
        };
        let updated = sqlx::query(
            "UPDATE agents SET cert_fingerprint = $1, previous_cert_fingerprint = $2, \
             cert_key_sha256 = $3, version = $4 \
             WHERE tenant_id = $5 AND agent_id = $6 AND revoked_at_ms IS NULL \
             AND cert_fingerprint = $7",
        )
        .bind(&issued.fingerprint)
        .bind(new_previous)
        .bind(&issued.key_fingerprint)
        .bind(version)
        .bind(tenant)
        .bind(agent_id)
        .bind(&current)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            return Ok(CertificateRenewal::Superseded);
        }
        sqlx::query(
            "DELETE FROM superseded_certificates WHERE tenant_id = $1 AND expires_at_ms <= $2",
        )
        .bind(tenant)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO superseded_certificates \
             (tenant_id, cert_fingerprint, agent_id, superseded_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(superseded)
        .bind(agent_id)
        .bind(now)
        .bind(superseded_expires_at_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE tenants SET revocation_version = revocation_version + 1 WHERE tenant_id = $1",
        )
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(if presented == current {
            CertificateRenewal::Renewed
        } else {
            CertificateRenewal::Reissued
        })
    }

    /// The fingerprints of the tenant's agent certificates that a renewal
    /// superseded and that have not expired, in order: what relays refuse.
    /// Read the revocation version first, like the revoked agents.
    pub async fn superseded_certificates(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT cert_fingerprint FROM superseded_certificates \
             WHERE tenant_id = $1 AND expires_at_ms > $2 ORDER BY cert_fingerprint",
        )
        .bind(tenant)
        .bind(self.now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("cert_fingerprint")?))
            .collect()
    }

    /// The key `agent_id`'s results must be signed with (one indexed read).
    pub async fn agent_result_key(
        &self,
        tenant: &str,
        agent_id: &str,
    ) -> Result<ResultKey, StoreError> {
        let row = sqlx::query(
            "SELECT result_signing_key, revoked_at_ms FROM agents \
             WHERE tenant_id = $1 AND agent_id = $2",
        )
        .bind(tenant)
        .bind(agent_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(ResultKey::Unknown);
        };
        if row.try_get::<Option<i64>, _>("revoked_at_ms")?.is_some() {
            return Ok(ResultKey::Revoked);
        }
        let key = decode_result_key(&row.try_get::<String, _>("result_signing_key")?)?;
        Ok(if key.is_empty() {
            ResultKey::Unregistered
        } else {
            ResultKey::Key(key)
        })
    }

    /// Records `key` as the agent's result-signing key if it has none
    /// (an agent enrolled before results were signed, renewing); a
    /// recorded key is never replaced.
    pub async fn register_result_key(
        &self,
        tenant: &str,
        agent_id: &str,
        key: &[u8],
    ) -> Result<KeyRegistration, StoreError> {
        if key.is_empty() {
            return Ok(KeyRegistration::Missing);
        }
        let hex_key = hex::encode(key);
        let updated = sqlx::query(
            "UPDATE agents SET result_signing_key = $1 \
             WHERE tenant_id = $2 AND agent_id = $3 AND result_signing_key = ''",
        )
        .bind(&hex_key)
        .bind(tenant)
        .bind(agent_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated > 0 {
            return Ok(KeyRegistration::Registered);
        }
        let held = self
            .get_agent(tenant, agent_id)
            .await?
            .ok_or(StoreError::NotFound { what: "agent" })?
            .result_signing_key;
        Ok(if held == key {
            KeyRegistration::Unchanged
        } else {
            KeyRegistration::Conflict
        })
    }

    /// True when the agent was revoked. `NotFound { what: "agent" }` when the
    /// tenant has no such agent (callers should refuse it as well).
    pub async fn is_agent_revoked(&self, tenant: &str, agent_id: &str) -> Result<bool, StoreError> {
        let row =
            sqlx::query("SELECT revoked_at_ms FROM agents WHERE tenant_id = $1 AND agent_id = $2")
                .bind(tenant)
                .bind(agent_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StoreError::NotFound { what: "agent" })?;
        Ok(row.try_get::<Option<i64>, _>("revoked_at_ms")?.is_some())
    }
}
