//! Tenants and the three toggles.

use writeback_control_plane::store::{Settings, SettingsUpdate, StoreError};

use crate::harness::TestDb;

async fn new_tenant_has_every_toggle_off(db: &TestDb) {
    let store = db.store().await;
    assert!(!store.tenant_exists("t1").await.unwrap());
    store.create_tenant("t1", "Tenant One").await.unwrap();
    assert!(store.tenant_exists("t1").await.unwrap());
    assert_eq!(store.settings("t1").await.unwrap(), Settings::default());
    assert!(matches!(
        store.create_tenant("t1", "again").await,
        Err(StoreError::AlreadyExists { what: "tenant" })
    ));
    assert!(matches!(
        store.settings("nope").await,
        Err(StoreError::NotFound { what: "tenant" })
    ));
    assert!(matches!(
        store
            .update_settings("nope", SettingsUpdate::default())
            .await,
        Err(StoreError::NotFound { what: "tenant" })
    ));
}

async fn partial_update_changes_only_the_given_toggles(db: &TestDb) {
    let store = db.store_with_tenants().await;
    let s = store
        .update_settings(
            "t1",
            SettingsUpdate {
                cloud_sync_writeback: Some(true),
                ..SettingsUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        s,
        Settings {
            cloud_sync_writeback: true,
            sspr_writeback: false,
            unlock_without_reset: false
        }
    );
    let s = store
        .update_settings(
            "t1",
            SettingsUpdate {
                sspr_writeback: Some(true),
                unlock_without_reset: Some(true),
                ..SettingsUpdate::default()
            },
        )
        .await
        .unwrap();
    assert!(s.cloud_sync_writeback && s.sspr_writeback && s.unlock_without_reset);
    let s = store
        .update_settings(
            "t1",
            SettingsUpdate {
                cloud_sync_writeback: Some(false),
                ..SettingsUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        s,
        Settings {
            cloud_sync_writeback: false,
            sspr_writeback: true,
            unlock_without_reset: true
        }
    );
    assert_eq!(store.settings("t1").await.unwrap(), s);
    // An empty update changes nothing and returns the current settings.
    assert_eq!(
        store
            .update_settings("t1", SettingsUpdate::default())
            .await
            .unwrap(),
        s
    );
    // The other tenant is untouched.
    assert_eq!(store.settings("t2").await.unwrap(), Settings::default());
}

async fn two_stores_see_each_others_toggles(db: &TestDb) {
    let a = db.store().await;
    let b = db.store().await;
    a.create_tenant("t1", "Tenant One").await.unwrap();
    assert!(b.tenant_exists("t1").await.unwrap());
    a.update_settings(
        "t1",
        SettingsUpdate {
            sspr_writeback: Some(true),
            ..SettingsUpdate::default()
        },
    )
    .await
    .unwrap();
    assert!(b.settings("t1").await.unwrap().sspr_writeback);
    b.update_settings(
        "t1",
        SettingsUpdate {
            unlock_without_reset: Some(true),
            ..SettingsUpdate::default()
        },
    )
    .await
    .unwrap();
    let seen = a.settings("t1").await.unwrap();
    assert!(seen.sspr_writeback && seen.unlock_without_reset && !seen.cloud_sync_writeback);
}

async fn connect_is_idempotent_and_reports_the_backend(db: &TestDb) {
    let first = db.store().await;
    let again = db.store().await;
    let expected = if db.url().starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    assert_eq!(first.backend(), expected);
    assert_eq!(again.backend(), expected);
    again.ping().await.unwrap();
}

both_backends!(
    new_tenant_has_every_toggle_off,
    partial_update_changes_only_the_given_toggles,
    two_stores_see_each_others_toggles,
    connect_is_idempotent_and_reports_the_backend,
);

#[tokio::test]
async fn sqlite_file_is_created_in_wal_mode() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub-less.db");
    let url = format!("sqlite://{}", path.display());
    let store = writeback_control_plane::store::Store::connect(&url)
        .await
        .unwrap();
    store.create_tenant("t1", "One").await.unwrap();
    assert!(path.exists());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    conn.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_in_memory_and_bad_urls() {
    use writeback_control_plane::store::{Store, StoreError};
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.create_tenant("t1", "One").await.unwrap();
    assert!(store.tenant_exists("t1").await.unwrap());
    assert_eq!(store.backend(), "sqlite");
    assert!(matches!(
        Store::connect("mysql://localhost/db").await,
        Err(StoreError::UnsupportedUrl)
    ));
}
