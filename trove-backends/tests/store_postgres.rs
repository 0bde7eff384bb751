//! The PostgreSQL store passes the InfraStore conformance suite on a fresh database (created and dropped by the
//! test; PostgreSQL must be reachable, the test fails otherwise), and checks its schema version at start-up.

mod store_support;

use trove_backends::sql::{self, PostgresStore, StoreLocation};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_passes_the_conformance_suite() {
    store_support::with_fresh_pg(|url| async move {
        let store = sql::open(&StoreLocation::Url(url)).await.expect("open");
        trove_core::testing::store::run_all(store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_schema_is_checked() {
    store_support::with_fresh_pg(|url| async move {
        let loc = StoreLocation::Url(url.clone());
        let err = sql::open_checked(&loc).await.err().expect("an empty database is refused").to_string();
        assert!(err.contains("db_sync"), "{err}");
        let status = sql::db_sync(&loc).await.expect("db_sync");
        assert!(status.up_to_date());
        assert_eq!(sql::db_sync(&loc).await.expect("again"), status);
        let store = PostgresStore::connect(&url).await.expect("connect");
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, 'from the future', TRUE, '\\x00', 0)",
        )
        .bind(status.known + 1)
        .execute(store.pool())
        .await
        .expect("insert a future migration");
        let msg = sql::open(&loc).await.err().expect("a newer schema is refused").to_string();
        assert!(msg.contains("newer than this trove-rs build knows"), "{msg}");
        store.close().await;
    })
    .await;
}
