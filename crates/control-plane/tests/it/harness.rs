//! Test databases: a SQLite file in a temporary directory, or a PostgreSQL
//! database created for one test and dropped (with `FORCE`) when the test
//! ends, even when it panics.

use std::time::Duration;

use sqlx::Connection;
use writeback_control_plane::store::{Store, hash_secret};

/// The PostgreSQL server the tests use unless overridden.
const DEFAULT_POSTGRES_URL: &str = "postgres://writeback_test@127.0.0.1:5432/postgres";

/// One test's database.
pub enum TestDb {
    /// A SQLite file; the directory goes away on drop.
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    /// A PostgreSQL database of its own.
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl TestDb {
    /// A fresh SQLite database file.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        TestDb::Sqlite { _dir: dir, url }
    }

    /// A fresh PostgreSQL database; panics with the reason when the server
    /// cannot be reached.
    pub async fn postgres() -> TestDb {
        let admin_url = std::env::var("WRITEBACK_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let connect = tokio::time::timeout(
            Duration::from_secs(15),
            sqlx::PgConnection::connect(&admin_url),
        )
        .await;
        let mut admin = match connect {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => panic!(
                "PostgreSQL is required for the postgres store tests but {admin_url} is not \
                 reachable: {e}. Start it (pg_ctlcluster --skip-systemctl-redirect <version> main \
                 start) or point WRITEBACK_TEST_POSTGRES_URL at a server."
            ),
            Err(_) => panic!(
                "PostgreSQL is required for the postgres store tests but connecting to \
                 {admin_url} timed out after 15 s; set WRITEBACK_TEST_POSTGRES_URL."
            ),
        };
        let name = format!("wb_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin_url}: {e}"));
        let _ = admin.close().await;
        let mut url = url::Url::parse(&admin_url).expect("WRITEBACK_TEST_POSTGRES_URL is a URL");
        url.set_path(&format!("/{name}"));
        TestDb::Postgres {
            admin_url,
            name,
            url: url.to_string(),
        }
    }

    /// The database URL a store connects to.
    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    /// A new store (a pool of its own) on this database.
    pub async fn store(&self) -> Store {
        Store::connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()))
    }

    /// A new store with tenant `t1` (and `t2`, for isolation checks).
    pub async fn store_with_tenants(&self) -> Store {
        let store = self.store().await;
        store.create_tenant("t1", "Tenant One").await.unwrap();
        store.create_tenant("t2", "Tenant Two").await.unwrap();
        store
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let TestDb::Postgres {
            admin_url, name, ..
        } = self
        else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop runs inside the test's runtime: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = admin.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database: {e}");
        }
    }
}

/// The hex SHA-256 of a test secret.
pub fn h(secret: &str) -> String {
    hash_secret(secret.as_bytes())
}
