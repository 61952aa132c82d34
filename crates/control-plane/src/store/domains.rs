//! On-premises AD domains and the UPN suffixes routed to them.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Row;

use super::{
    Page, Store, StoreError, finish_page, insert_error, limit_arg, non_empty, normalize_dns,
};

/// A registered domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRow {
    /// DNS name, lowercase.
    pub name: String,
    /// UPN suffixes routed to it, lowercase and sorted.
    pub upn_suffixes: Vec<String>,
    /// When it was added (Unix milliseconds).
    pub created_at_ms: i64,
}

impl Store {
    /// Registers a domain and its UPN suffixes in one transaction. Names and
    /// suffixes are lowercased (a leading `@` on a suffix is dropped); no
    /// suffixes means the domain name itself. `AlreadyExists { what: "domain" }`
    /// when the tenant has the domain, `AlreadyExists { what: "upn suffix" }`
    /// when a suffix belongs to another domain of the tenant (nothing is
    /// written then), `NotFound { what: "tenant" }` for an unknown tenant.
    pub async fn add_domain(
        &self,
        tenant: &str,
        name: &str,
        upn_suffixes: &[String],
    ) -> Result<DomainRow, StoreError> {
        let name = normalize_dns(name);
        non_empty(&name, "domain name is empty")?;
        let mut suffixes: BTreeSet<String> =
            upn_suffixes.iter().map(|s| normalize_dns(s)).collect();
        if suffixes.iter().any(String::is_empty) {
            return Err(StoreError::InvalidArgument("upn suffix is empty"));
        }
        if suffixes.is_empty() {
            suffixes.insert(name.clone());
        }
        let created_at_ms = self.now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO domains (tenant_id, name, created_at_ms) VALUES ($1, $2, $3)")
            .bind(tenant)
            .bind(&name)
            .bind(created_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(|e| insert_error(e, "domain", "tenant"))?;
        for suffix in &suffixes {
            sqlx::query("INSERT INTO upn_suffixes (tenant_id, suffix, domain) VALUES ($1, $2, $3)")
                .bind(tenant)
                .bind(suffix)
                .bind(&name)
                .execute(&mut *tx)
                .await
                .map_err(|e| insert_error(e, "upn suffix", "domain"))?;
        }
        tx.commit().await?;
        tracing::info!(tenant, domain = %name, "domain added");
        Ok(DomainRow {
            name,
            upn_suffixes: suffixes.into_iter().collect(),
            created_at_ms,
        })
    }

    /// One page of the tenant's domains, ordered by name, and the token of
    /// the next page (`None` at the end).
    pub async fn list_domains(
        &self,
        tenant: &str,
        page: Page,
    ) -> Result<(Vec<DomainRow>, Option<String>), StoreError> {
        let limit = page.limit();
        let after = page.cursor('d')?.unwrap_or_default();
        let rows = sqlx::query(
            "SELECT name, created_at_ms FROM domains \
             WHERE tenant_id = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(tenant)
        .bind(&after)
        .bind(limit_arg(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut domains = rows
            .iter()
            .map(|row| {
                Ok(DomainRow {
                    name: row.try_get("name")?,
                    upn_suffixes: Vec::new(),
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next = finish_page(&mut domains, limit, 'd', |d| d.name.clone());
        if let Some(last) = domains.last() {
            let rows = sqlx::query(
                "SELECT domain, suffix FROM upn_suffixes \
                 WHERE tenant_id = $1 AND domain > $2 AND domain <= $3",
            )
            .bind(tenant)
            .bind(&after)
            .bind(&last.name)
            .fetch_all(&self.pool)
            .await?;
            let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for row in &rows {
                by_domain
                    .entry(row.try_get("domain")?)
                    .or_default()
                    .push(row.try_get("suffix")?);
            }
            for domain in &mut domains {
                if let Some(mut suffixes) = by_domain.remove(&domain.name) {
                    suffixes.sort();
                    domain.upn_suffixes = suffixes;
                }
            }
        }
        Ok((domains, next))
    }

    /// The domain a UPN suffix is routed to (the suffix is lowercased first).
    pub async fn domain_for_upn_suffix(
        &self,
        tenant: &str,
        suffix: &str,
    ) -> Result<Option<String>, StoreError> {
        let row =
            sqlx::query("SELECT domain FROM upn_suffixes WHERE tenant_id = $1 AND suffix = $2")
                .bind(tenant)
                .bind(normalize_dns(suffix))
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.try_get("domain")).transpose()?)
    }

    /// True when the tenant has the domain (the name is lowercased first).
    pub async fn domain_exists(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM domains WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(normalize_dns(name))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }
}
