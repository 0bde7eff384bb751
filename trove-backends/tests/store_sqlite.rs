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

/// The API's catalog cache over SQLite: writes through the API's own store are seen at once; writes through
/// another handle on the same file (another process, e.g. `trove-manage`) once `catalog_cache_ttl` has passed,
/// and at once with a ttl of 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_cache_sees_writes_of_this_process_at_once_and_others_within_the_ttl() {
    use std::sync::Arc;
    use std::time::Duration;
    use trove_core::api::ApiService;
    use trove_core::memory::MemoryBus;
    use trove_core::ports::{RequestContext, SystemClock};
    use trove_core::testing::store::fixtures::flavor;
    use trove_core::CoreConfig;

    let dir = tempfile::tempdir().expect("tempdir");
    let loc = StoreLocation::StateDir(dir.path().to_path_buf());
    let ours = sql::open(&loc).await.expect("open");
    let other = sql::open(&loc).await.expect("open a second handle");
    let api = |ttl: Duration| {
        ApiService::new(
            ours.clone(),
            Arc::new(MemoryBus::new()),
            Arc::new(SystemClock),
            CoreConfig {
                catalog_cache_ttl: ttl,
                ..CoreConfig::default()
            },
        )
    };
    let ctx = RequestContext::tenant("t");
    async fn flavor_ids(api: &ApiService, ctx: &RequestContext) -> Vec<String> {
        api.list_flavors(ctx)
            .await
            .expect("flavors")
            .into_iter()
            .map(|f| f.id)
            .collect()
    }

    let long = api(Duration::from_secs(600));
    let short = api(Duration::from_millis(200));
    let uncached = api(Duration::ZERO);
    for a in [&long, &short, &uncached] {
        assert!(flavor_ids(a, &ctx).await.is_empty());
    }
    other.put_flavor(&flavor("1")).await.expect("put");
    assert!(
        flavor_ids(&long, &ctx).await.is_empty(),
        "another process's write is not seen within the ttl"
    );
    assert_eq!(flavor_ids(&uncached, &ctx).await, ["1"], "ttl 0: no cache");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        flavor_ids(&short, &ctx).await,
        ["1"],
        "seen once the ttl has passed"
    );
    // Any catalog write through this process's store invalidates the copy: both writes are seen.
    ours.put_flavor(&flavor("2")).await.expect("put");
    assert_eq!(flavor_ids(&long, &ctx).await, ["1", "2"]);
    // A show of what the copy lacks reads the store rather than answering 404.
    other.put_flavor(&flavor("3")).await.expect("put");
    assert_eq!(
        long.show_flavor(&ctx, "3").await.expect("shown").id,
        "3",
        "no false 404 from a stale copy"
    );
}
