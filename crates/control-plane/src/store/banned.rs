//! A tenant's custom banned-password terms.

use super::{Store, StoreError};

impl Store {
    /// The tenant's custom banned terms, sorted.
    pub async fn banned_terms(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT term FROM banned_passwords WHERE tenant_id = $1 ORDER BY term")
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(t,)| t).collect())
    }

    /// Replaces the tenant's custom banned terms in one transaction.
    pub async fn set_banned_terms(&self, tenant: &str, terms: &[String]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM banned_passwords WHERE tenant_id = $1")
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        for term in terms {
            sqlx::query("INSERT INTO banned_passwords (tenant_id, term) VALUES ($1, $2)")
                .bind(tenant)
                .bind(term)
                .execute(&mut *tx)
                .await
                .map_err(|e| super::insert_error(e, "banned term", "tenant"))?;
        }
        tx.commit().await?;
        Ok(())
    }
}
