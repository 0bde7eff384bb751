//! MariaDB backups with the real `mariadb-backup`: full, incremental on top of it, restore of the chain to a new
//! instance (its data and users exactly as at the incremental), and a damaged object refused before anything is
//! applied.

mod common;

use common::Fixture;
use futures::StreamExt;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection, Executor, Row};
use std::sync::Arc;
use trove_core::memory::MemoryBackupStore;
use trove_core::model::Manager;
use trove_core::ports::{
    BackupJob, BackupOutcome, BackupPiece, BackupProgress, BackupStore, DynBackupStore, RestoreSpec,
};
use uuid::Uuid;

async fn connect(port: u16, user: &str, pw: &str) -> Result<MySqlConnection, sqlx::Error> {
    MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username(user)
        .password(pw)
        .database("shop")
        .connect()
        .await
}

async fn rows(port: u16) -> Vec<i64> {
    let mut c = connect(port, "clerk", "clerk-pw1")
        .await
        .expect("the user connects");
    let r = c
        .fetch_all("SELECT n FROM items ORDER BY n")
        .await
        .expect("select");
    r.iter()
        .map(|r| r.try_get::<i64, _>(0).expect("n"))
        .collect()
}

fn piece(o: &BackupOutcome, id: Uuid, incremental: bool) -> BackupPiece {
    BackupPiece {
        backup_id: id,
        key: o.object.key.clone(),
        checksum: o.object.checksum.clone(),
        size: o.object.size,
        position: o.position.clone(),
        incremental,
    }
}

async fn backup(fx: &Fixture, key: &str, parent: Option<BackupPiece>) -> (BackupOutcome, u64) {
    let facet = fx
        .strategy
        .backup()
        .expect("MariaDB offers backups with a store");
    let progress = BackupProgress::default();
    let job = BackupJob {
        backup_id: Uuid::new_v4(),
        key: key.into(),
        parent,
        retain_from: None,
    };
    let o = facet.backup(&job, &progress).await.expect("backup");
    (o, progress.bytes())
}

#[tokio::test]
async fn full_and_incremental_backups_restore_to_a_new_instance() {
    let store: DynBackupStore = Arc::new(MemoryBackupStore::new());
    let src = Fixture::with_backups(Manager::Mariadb, 256, store.clone());
    let req = src.app_request(Some("shop"), "clerk", "clerk-pw1");
    src.strategy.prepare(&req).await.expect("prepare");
    let mut c = connect(src.port(), "clerk", "clerk-pw1")
        .await
        .expect("connect");
    c.execute("CREATE TABLE items (n BIGINT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .expect("create table");
    c.execute("INSERT INTO items VALUES (1), (2)")
        .await
        .expect("insert");

    let (full, bytes) = backup(&src, "backups/full", None).await;
    assert!(
        full.object.size > 0 && bytes == full.object.size,
        "progress counts the object: {bytes} vs {}",
        full.object.size
    );
    let lsn = full
        .position
        .as_ref()
        .and_then(|p| p.get("to_lsn"))
        .and_then(|v| v.as_u64());
    assert!(
        lsn.is_some_and(|l| l > 0),
        "the full backup records its LSN: {:?}",
        full.position
    );
    let full_piece = piece(&full, Uuid::new_v4(), false);

    c.execute("INSERT INTO items VALUES (3)")
        .await
        .expect("insert after the full backup");
    let (inc, _) = backup(&src, "backups/inc", Some(full_piece.clone())).await;
    let inc_lsn = inc
        .position
        .as_ref()
        .and_then(|p| p.get("to_lsn"))
        .and_then(|v| v.as_u64());
    // (to_lsn is a checkpoint's: equal when none happened in between; the restore below checks the data.)
    assert!(
        inc_lsn >= lsn,
        "the incremental ends no earlier: {inc_lsn:?} vs {lsn:?}"
    );
    assert!(
        inc.object.size < full.object.size,
        "the incremental ({}) is smaller than the full ({})",
        inc.object.size,
        full.object.size
    );
    c.execute("INSERT INTO items VALUES (4)")
        .await
        .expect("insert after the incremental");
    let _ = c.close().await;

    // Restore the chain to a new instance: the rows of the incremental, not the later one; the source's user.
    let dst = Fixture::with_backups(Manager::Mariadb, 256, store.clone());
    let mut req = dst.prepare_request(1);
    req.restore = Some(RestoreSpec {
        chain: vec![full_piece.clone(), piece(&inc, Uuid::new_v4(), true)],
        restore_time: None,
        replica: false,
    });
    dst.strategy.prepare(&req).await.expect("restoring prepare");
    assert_eq!(rows(dst.port()).await, vec![1, 2, 3]);
    // The guest's own admin works on the restored instance (its password was reset to this instance's).
    let users = dst
        .strategy
        .users()
        .expect("users")
        .list_users()
        .await
        .expect("list users");
    assert!(users.iter().any(|u| u.name == "clerk"), "{users:?}");
    // A repeated prepare (the answer was lost) keeps the data.
    dst.strategy.prepare(&req).await.expect("prepare again");
    assert_eq!(rows(dst.port()).await, vec![1, 2, 3]);

    // The full one alone restores to rows 1 and 2.
    let dst2 = Fixture::with_backups(Manager::Mariadb, 256, store.clone());
    let mut req = dst2.prepare_request(1);
    req.restore = Some(RestoreSpec {
        chain: vec![full_piece.clone()],
        restore_time: None,
        replica: false,
    });
    dst2.strategy
        .prepare(&req)
        .await
        .expect("restore the full backup");
    assert_eq!(rows(dst2.port()).await, vec![1, 2]);
}

#[tokio::test]
async fn a_damaged_backup_is_refused_before_anything_is_applied() {
    let store: Arc<MemoryBackupStore> = Arc::new(MemoryBackupStore::new());
    let dyn_store: DynBackupStore = store.clone();
    let src = Fixture::with_backups(Manager::Mariadb, 256, dyn_store.clone());
    src.strategy
        .prepare(&src.prepare_request(1))
        .await
        .expect("prepare");
    let (full, _) = backup(&src, "backups/full", None).await;
    // Rewrite the object with one byte changed: its recorded checksum no longer matches.
    let mut bytes = Vec::new();
    let mut s = store.get("backups/full").await.expect("get");
    while let Some(c) = s.next().await {
        bytes.extend(c.expect("chunk"));
    }
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    store
        .put("backups/full", futures::stream::iter([Ok(bytes)]).boxed())
        .await
        .expect("put the damaged copy");

    let dst = Fixture::with_backups(Manager::Mariadb, 256, dyn_store);
    let mut req = dst.prepare_request(1);
    req.restore = Some(RestoreSpec {
        chain: vec![piece(&full, Uuid::new_v4(), false)],
        restore_time: None,
        replica: false,
    });
    let e = dst
        .strategy
        .prepare(&req)
        .await
        .expect_err("a damaged object");
    assert!(e.to_string().contains("damaged"), "{e}");
    let data = dst.dir.path().join("vol/data");
    let left: Vec<_> = std::fs::read_dir(&data)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "nothing reached the data directory: {left:?}"
    );
}

/// Point-in-time restore: each backup records the binary log file it starts with and the moment it covers up to,
/// an incremental ships the binary log since its parent as its archive object, and a restore to a moment applies
/// the backups that ended before it and replays the next one's archive up to it: the write before the moment is
/// there, the one after is not. An incremental on a parent whose binary log a later backup pruned is refused.
#[tokio::test]
async fn point_in_time_restore_replays_the_binary_log_to_the_moment() {
    use std::time::Duration;
    let store: DynBackupStore = Arc::new(MemoryBackupStore::new());
    let src = Fixture::with_backups(Manager::Mariadb, 256, store.clone());
    let req = src.app_request(Some("shop"), "clerk", "clerk-pw1");
    src.strategy.prepare(&req).await.expect("prepare");
    let mut c = connect(src.port(), "clerk", "clerk-pw1")
        .await
        .expect("connect");
    c.execute("CREATE TABLE items (n BIGINT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .expect("create table");
    c.execute("INSERT INTO items VALUES (1)")
        .await
        .expect("insert");
    let (full, _) = backup(&src, "backups/pit-full", None).await;
    let full = piece(&full, Uuid::new_v4(), false);
    assert!(
        full.position
            .as_ref()
            .is_some_and(|p| p["binlog"].is_string() && p["time"].is_string()),
        "{:?}",
        full.position
    );
    // Binary log times are whole seconds: a second either side of each moment.
    let pause = || tokio::time::sleep(Duration::from_millis(1100));
    c.execute("INSERT INTO items VALUES (2)")
        .await
        .expect("insert");
    pause().await;
    let first = chrono::Utc::now();
    pause().await;
    c.execute("INSERT INTO items VALUES (3)")
        .await
        .expect("insert");
    let (inc, _) = backup(&src, "backups/pit-inc", Some(full.clone())).await;
    let inc = piece(&inc, Uuid::new_v4(), true);
    let archive =
        trove_core::ports::archive_piece(&inc).expect("the incremental carries an archive");
    assert!(
        store.get(&archive.key).await.is_ok(),
        "the archive object is stored"
    );
    pause().await;
    let second = chrono::Utc::now();
    pause().await;
    c.execute("INSERT INTO items VALUES (4)")
        .await
        .expect("insert");
    let (inc2, _) = backup(&src, "backups/pit-inc2", Some(inc.clone())).await;
    let inc2 = piece(&inc2, Uuid::new_v4(), true);
    let _ = c.close().await;

    // inc2 pruned the binary log inc needed: an incremental on the full again is refused, nothing written.
    let facet = src.strategy.backup().expect("backups");
    let e = facet
        .backup(
            &BackupJob {
                backup_id: Uuid::new_v4(),
                key: "backups/pit-late".into(),
                parent: Some(full.clone()),
                retain_from: None,
            },
            &BackupProgress::default(),
        )
        .await
        .expect_err("the binary log since the full is gone");
    assert_eq!(e.fault().status, 422, "{e}");
    assert!(store.get("backups/pit-late").await.is_err());

    let chain = vec![full.clone(), inc.clone(), inc2.clone()];
    for (at, want) in [(first, vec![1, 2]), (second, vec![1, 2, 3])] {
        let dst = Fixture::with_backups(Manager::Mariadb, 256, store.clone());
        let mut req = dst.prepare_request(1);
        req.restore = Some(RestoreSpec {
            chain: chain.clone(),
            restore_time: Some(at),
            replica: false,
        });
        let t = std::time::Instant::now();
        dst.strategy
            .prepare(&req)
            .await
            .expect("restore to a moment");
        eprintln!("mariadb: restore to a moment took {:?}", t.elapsed());
        assert_eq!(rows(dst.port()).await, want, "restored to {at}");
    }
}
