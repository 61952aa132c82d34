//! Tenants and their three writeback toggles.

use sqlx::Row;

use super::{Store, StoreError, flag, insert_error, non_empty};

/// A tenant's writeback toggles; all `false` for a new tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// Password writeback in cloud sync (global administrators only).
    pub cloud_sync_writeback: bool,
    /// "Write back passwords to your on-premises directory?"
    pub sspr_writeback: bool,
    /// "Allow users to unlock accounts without resetting their password?"
    pub unlock_without_reset: bool,
}

/// A partial change of [`Settings`]: only the fields that are `Some` change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettingsUpdate {
    /// New value for [`Settings::cloud_sync_writeback`].
    pub cloud_sync_writeback: Option<bool>,
    /// New value for [`Settings::sspr_writeback`].
    pub sspr_writeback: Option<bool>,
    /// New value for [`Settings::unlock_without_reset`].
    pub unlock_without_reset: Option<bool>,
}

const SETTINGS_COLUMNS: &str = "cloud_sync_writeback, sspr_writeback, unlock_without_reset";

fn settings_from_row(row: &sqlx::any::AnyRow) -> Result<Settings, StoreError> {
    Ok(Settings {
        cloud_sync_writeback: row.try_get::<i64, _>("cloud_sync_writeback")? != 0,
        sspr_writeback: row.try_get::<i64, _>("sspr_writeback")? != 0,
        unlock_without_reset: row.try_get::<i64, _>("unlock_without_reset")? != 0,
    })
}

impl Store {
    /// Creates a tenant with every toggle off. `AlreadyExists { what: "tenant" }`
    /// when the id is taken.
    pub async fn create_tenant(&self, tenant_id: &str, name: &str) -> Result<(), StoreError> {
        non_empty(tenant_id, "tenant id is empty")?;
        sqlx::query("INSERT INTO tenants (tenant_id, name, created_at_ms) VALUES ($1, $2, $3)")
            .bind(tenant_id)
            .bind(name)
            .bind(self.now_ms())
            .execute(&self.pool)
            .await
            .map_err(|e| insert_error(e, "tenant", "tenant"))?;
        tracing::info!(tenant = tenant_id, "tenant created");
        Ok(())
    }

    /// True when the tenant exists.
    pub async fn tenant_exists(&self, tenant_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Every tenant's id, in order.
    pub async fn tenant_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT tenant_id FROM tenants ORDER BY tenant_id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The tenant's toggles; `NotFound { what: "tenant" }` for an unknown tenant.
    pub async fn settings(&self, tenant: &str) -> Result<Settings, StoreError> {
        let sql = format!("SELECT {SETTINGS_COLUMNS} FROM tenants WHERE tenant_id = $1");
        let row = sqlx::query(&sql)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { what: "tenant" })?;
        settings_from_row(&row)
    }

    /// Changes the toggles that are `Some` in one atomic statement and returns
    /// the resulting settings. `NotFound { what: "tenant" }` for an unknown
    /// tenant. Concurrent partial updates of different toggles never undo
    /// each other.
    pub async fn update_settings(
        &self,
        tenant: &str,
        update: SettingsUpdate,
    ) -> Result<Settings, StoreError> {
        let sql = format!(
            "UPDATE tenants SET \
               cloud_sync_writeback = COALESCE($2, cloud_sync_writeback), \
               sspr_writeback = COALESCE($3, sspr_writeback), \
               unlock_without_reset = COALESCE($4, unlock_without_reset), \
               settings_updated_at_ms = $5 \
             WHERE tenant_id = $1 RETURNING {SETTINGS_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(tenant)
            .bind(update.cloud_sync_writeback.map(flag))
            .bind(update.sspr_writeback.map(flag))
            .bind(update.unlock_without_reset.map(flag))
            .bind(self.now_ms())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { what: "tenant" })?;
        let settings = settings_from_row(&row)?;
        tracing::info!(
            tenant,
            cloud_sync_writeback = settings.cloud_sync_writeback,
            sspr_writeback = settings.sspr_writeback,
            unlock_without_reset = settings.unlock_without_reset,
            "settings updated"
        );
        Ok(settings)
    }
}
