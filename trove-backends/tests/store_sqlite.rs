//! The SQLite store passes the InfraStore conformance suite, keeps its data across reopenings, and checks its
//! schema version at start-up.

mod store_support;

use trove_backends::sql::{self, SchemaStatus, SqliteStore, StoreLocation};
use trove_core::ports::InfraStore as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sql::open(&StoreLocation::StateDir(dir.path().to_path_buf()))
        .await
        .expect("open");
    trove_core::testing::store::run_all(store).await;
    assert!(
        dir.path().join("trove.sqlite").exists(),
        "the database lives in the state dir"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopening_and_wal_mode_is_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loc = StoreLocation::StateDir(dir.path().to_path_buf());
    let ds = trove_core::testing::store::fixtures::datastore("mysql");
    {
        let store = sql::open(&loc).await.expect("open");
        store.put_datastore(&ds).await.expect("put");
    }
    let store = SqliteStore::open(&dir.path().join("trove.sqlite"))
        .await
        .expect("reopen");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!(sync, 2, "synchronous = FULL");
    assert_eq!(store.get_datastore(&ds.name).await.expect("get"), Some(ds));
}

#[tokio::test]
async fn db_sync_is_idempotent_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loc = StoreLocation::StateDir(dir.path().to_path_buf());
    let err = match sql::open_checked(&loc).await {
        Ok(_) => panic!("an empty database must be refused by open_checked"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("db_sync"), "{err}");
    let first = sql::db_sync(&loc).await.expect("db_sync");
    assert!(first.up_to_date(), "{first:?}");
    let again = sql::db_sync(&loc).await.expect("db_sync again");
    assert_eq!(first, again);
    sql::open_checked(&loc)
        .await
        .expect("an up-to-date schema opens");

    // Pretend a newer trove-rs migrated the database.
    let store = SqliteStore::open(&dir.path().join("trove.sqlite"))
        .await
        .expect("open");
    let known = store.schema_status().await.expect("status").known;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from the future', TRUE, x'00', 0)",
    )
    .bind(known + 1)
    .execute(store.pool())
    .await
    .expect("insert a future migration");
    assert_eq!(
        store.schema_status().await.expect("status"),
        SchemaStatus {
            applied: Some(known + 1),
            known
        }
    );
    for result in [
        sql::open(&loc).await.map(|_| ()),
        sql::db_sync(&loc).await.map(|_| ()),
    ] {
        let msg = result
            .expect_err("a newer schema must be refused")
            .to_string();
        assert!(
            msg.contains("newer than this trove-rs build knows"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn bad_locations_are_refused_clearly() {
    let err = sql::open(&StoreLocation::Url("mysql://x/y".into()))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("Unsupported database URL"), "{err}");
}

#[tokio::test]
async fn a_new_state_dir_is_traversable_and_its_database_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("new").join("state");
    sql::db_sync(&StoreLocation::StateDir(state.clone()))
        .await
        .expect("db_sync");
    let mode = std::fs::metadata(&state)
        .expect("state dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o711, "state dir mode {mode:o}");
    let db = std::fs::metadata(state.join("trove.sqlite"))
        .expect("database file")
        .permissions()
        .mode();
    assert_eq!(db & 0o777, 0o600, "database file mode {db:o}");
}
