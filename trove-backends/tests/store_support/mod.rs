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

async fn create_database() -> (String, sqlx::PgConnection) {
    let db = format!("trove_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = admin().await;
    sqlx::query(&format!("CREATE DATABASE \"{db}\""))
        .execute(&mut conn)
        .await
        .expect("create test database");
    (db, conn)
}

async fn drop_database(conn: &mut sqlx::PgConnection, db: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .execute(conn)
        .await
        .map(drop)
}

/// Creates a fresh database, runs `test` with its URL, and drops the database (also when the test panics).
pub async fn with_fresh_pg<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let (db, mut conn) = create_database().await;
    let outcome = AssertUnwindSafe(test(url_for(&db))).catch_unwind().await;
    let dropped = drop_database(&mut conn, &db).await;
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
    dropped.expect("drop test database");
}

/// A fresh database for as long as this value lives (dropped, with its sessions, on drop: pass or fail), for
/// tests whose database outlives one closure.
pub struct FreshPg {
    /// Its URL.
    pub url: String,
    name: String,
}

impl FreshPg {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates it.
    pub async fn create() -> FreshPg {
        let (name, _) = create_database().await;
        FreshPg {
            url: url_for(&name),
            name,
        }
    }
}

impl Drop for FreshPg {
    fn drop(&mut self) {
        // Drop cannot wait: a runtime of its own on a thread of its own drops the database.
        let name = std::mem::take(&mut self.name);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut conn = admin().await;
                let _ = drop_database(&mut conn, &name).await;
            })
        })
        .join();
    }
}
