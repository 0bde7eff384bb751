//! Shared helpers of the store tests: a fresh PostgreSQL database per test, dropped afterwards.
#![allow(dead_code)] // each test binary uses a subset

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use sqlx::Connection;

/// The maintenance database the tests connect to in order to create and drop their own databases
/// (`TROVE_TEST_PG_URL`, default: the local server with trust authentication).
pub fn admin_url() -> String {
    std::env::var("TROVE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

fn url_for(db: &str) -> String {
    let admin = admin_url();
    let (base, _) = admin.rsplit_once('/').unwrap_or((admin.as_str(), ""));
    format!("{base}/{db}")
}

async fn admin() -> sqlx::PgConnection {
    match sqlx::PgConnection::connect(&admin_url()).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL is required for this test and is not reachable at {} ({e}); start it (tests/run.sh does) \
             or set TROVE_TEST_PG_URL",
            trove_backends::sql::redact_url(&admin_url())
        ),
    }
}

/// Creates a fresh database, runs `test` with its URL, and drops the database (also when the test panics).
pub async fn with_fresh_pg<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = format!("trove_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = admin().await;
    sqlx::query(&format!("CREATE DATABASE \"{db}\""))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let outcome = AssertUnwindSafe(test(url_for(&db))).catch_unwind().await;
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await;
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
    dropped.expect("drop test database");
}
