//! Integration tests of the control plane: its store, and its public gRPC
//! API served in-process against a fake relay (`support`), including the
//! authorization matrix of the seed's supported/unsupported operations and
//! `writebackctl` run against it. Every `both_backends!` test function runs
//! twice: against a fresh SQLite file and against a fresh PostgreSQL database
//! (`WRITEBACK_TEST_POSTGRES_URL`, default
//! `postgres://writeback_test@127.0.0.1:5432/postgres`). The PostgreSQL variants
//! fail, never skip, when the server is unreachable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Generates `sqlite::<name>` and `postgres::<name>` tests for each async test
/// function `async fn <name>(db: &TestDb)` of the invoking module.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::harness::TestDb::sqlite();
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::harness::TestDb::postgres().await;
                    super::$name(&db).await;
                }
            )*
        }
    };
}

mod administrators;
mod agents;
mod api;
mod banned;
mod crash;
mod domains;
mod enrollment;
mod forged_results;
mod harness;
mod identity;
mod lying_relay;
mod notify;
mod operations;
mod support;
mod tenants;
mod throttle;
mod tokens;
