//! The `postgresql` strategy on the real PostgreSQL binaries.

mod common;

use common::{wait_status, Fixture};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor, Row};
use std::time::Instant;
use trove_core::model::{DatabaseSpec, Manager, Secret, UserSpec, UserUpdate};
use trove_core::state::ServiceStatus;

async fn connect(port: u16, user: &str, pw: &str, db: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username(user)
        .password(pw)
        .database(db)
        .connect()
        .await
}

async fn shared_buffers_mb(port: u16, root_pw: &str) -> i64 {
    let mut c = connect(port, "root", root_pw, "postgres")
        .await
        .expect("root connects");
    let row = c
        .fetch_one(
            "SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'",
        )
        .await
        .expect("query");
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_real_engine_journey() {
    let fx = Fixture::new(Manager::Postgresql, 256);
    let s = fx.strategy.clone();
    let port = fx.port();

    let req = fx.app_request(Some("first_db"), "early", "early-pw");
    let t = Instant::now();
    s.prepare(&req).await.expect("prepare");
    eprintln!("postgresql: prepare took {:?}", t.elapsed());
    assert_eq!(s.status().await.status, ServiceStatus::Healthy);
    connect(port, "early", "early-pw", "first_db")
        .await
        .expect("initial user reaches initial database");
    s.prepare(&req).await.expect("second prepare is harmless");

    let pw = "p'w\"\\x; --";
    s.databases()
        .expect("databases facet")
        .create_databases(&[DatabaseSpec {
            name: "app_db".into(),
            character_set: Some("UTF8".into()),
            collate: None,
        }])
        .await
        .expect("create database");
    s.users()
        .expect("users facet")
        .create_users(&[UserSpec {
            name: "alice".into(),
            password: Secret::new(pw),
            host: None,
            databases: vec!["app_db".into()],
        }])
        .await
        .expect("create user");
    let names: Vec<_> = s
        .databases()
        .expect("databases facet")
        .list_databases()
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["app_db", "first_db"]);
    let users = s
        .users()
        .expect("users facet")
        .list_users()
        .await
        .expect("list users");
    assert_eq!(
        users
            .iter()
            .find(|u| u.name == "alice")
            .expect("alice")
            .databases,
        ["app_db"]
    );
    assert!(users.iter().all(|u| u.name != "os_admin"), "{users:?}");

    // Write and read as that user.
    let mut c = connect(port, "alice", pw, "app_db")
        .await
        .expect("alice connects");
    c.execute("CREATE TABLE t (id int primary key, v text)")
        .await
        .expect("create table");
    c.execute("INSERT INTO t VALUES (1, 'kept')")
        .await
        .expect("insert");
    let v: String = c
        .fetch_one("SELECT v FROM t WHERE id = 1")
        .await
        .expect("select")
        .get(0);
    assert_eq!(v, "kept");
    c.close().await.expect("close");
    assert!(
        connect(port, "alice", pw, "first_db").await.is_err(),
        "alice reaches a database not granted"
    );
    assert!(
        connect(port, "alice", "wrong", "app_db").await.is_err(),
        "a wrong password is accepted"
    );

    // Injection attempts are 400s.
    let e = s
        .users()
        .expect("users facet")
        .create_users(&[UserSpec {
            name: "x\"; DROP ROLE os_admin; --".into(),
            password: Secret::new("pw"),
            host: None,
            databases: vec![],
        }])
        .await
        .expect_err("bad user name");
    assert_eq!(e.fault().status, 400);

    // Revoke takes effect, grant gives access back.
    s.databases()
        .expect("databases facet")
        .revoke_access("alice", "%", "app_db")
        .await
        .expect("revoke");
    assert!(
        connect(port, "alice", pw, "app_db").await.is_err(),
        "revoked user still connects"
    );
    s.databases()
        .expect("databases facet")
        .grant_access("alice", "%", &["app_db".into()])
        .await
        .expect("grant");
    connect(port, "alice", pw, "app_db")
        .await
        .expect("granted again");

    s.users()
        .expect("users facet")
        .update_user(
            "alice",
            "%",
            &UserUpdate {
                name: Some("alice2".into()),
                password: Some(Secret::new("new-pw")),
                host: None,
            },
        )
        .await
        .expect("update user");
    connect(port, "alice2", "new-pw", "app_db")
        .await
        .expect("renamed user connects");

    // Root and the rendered memory setting (25 % of 256 MB).
    let root_pw = s
        .root()
        .expect("root facet")
        .enable_root(Some(Secret::new("root-pw")))
        .await
        .expect("enable root");
    assert_eq!(shared_buffers_mb(port, root_pw.expose()).await, 64);

    s.restart().await.expect("restart");
    let mut c = connect(port, "alice2", "new-pw", "app_db")
        .await
        .expect("after restart");
    let v: String = c
        .fetch_one("SELECT v FROM t WHERE id = 1")
        .await
        .expect("select")
        .get(0);
    assert_eq!(v, "kept");
    c.close().await.expect("close");

    s.apply_flavor(512).await.expect("apply flavor");
    assert_eq!(shared_buffers_mb(port, root_pw.expose()).await, 128);

    let fs = s.filesystem_stats().await.expect("fs");
    assert!(
        fs.used_bytes > 1024 * 1024 && fs.total_bytes == 1024 * 1024 * 1024,
        "{fs:?}"
    );
    s.resize_fs(2).await.expect("resize");
    assert_eq!(
        s.filesystem_stats().await.expect("fs").total_bytes,
        2 * 1024 * 1024 * 1024
    );

    assert_eq!(
        fx.reopen().status().await.status,
        ServiceStatus::Healthy,
        "a new strategy adopts the engine"
    );

    s.root()
        .expect("root facet")
        .disable_root()
        .await
        .expect("disable root");
    assert!(connect(port, "root", root_pw.expose(), "postgres")
        .await
        .is_err());

    s.users()
        .expect("users facet")
        .delete_user("alice2", "%")
        .await
        .expect("delete user");
    assert!(connect(port, "alice2", "new-pw", "app_db").await.is_err());
    assert!(s
        .users()
        .expect("users facet")
        .list_users()
        .await
        .expect("list")
        .iter()
        .all(|u| u.name != "alice2"));
    s.databases()
        .expect("databases facet")
        .delete_database("app_db")
        .await
        .expect("delete db");
    assert!(s
        .databases()
        .expect("databases facet")
        .list_databases()
        .await
        .expect("list")
        .iter()
        .all(|d| d.name != "app_db"));

    s.stop().await.expect("stop");
    assert_eq!(s.status().await.status, ServiceStatus::Shutdown);
    s.start().await.expect("start");
    assert_eq!(s.status().await.status, ServiceStatus::Healthy);

    let pid = fx.kill_engine();
    let st = wait_status(&s, ServiceStatus::Crashed).await;
    assert_eq!(st.status, ServiceStatus::Crashed, "{st:?}");
    assert!(
        st.reason
            .as_deref()
            .unwrap_or("")
            .contains(&pid.to_string()),
        "{st:?}"
    );
    s.start().await.expect("start after crash");
    connect(port, "early", "early-pw", "first_db")
        .await
        .expect("data survived the crash");
    s.stop().await.expect("final stop");
    assert_eq!(s.status().await.status, ServiceStatus::Shutdown);
}

/// A full backup (`pg_basebackup`) restored into a new instance: its data, its users with their passwords, the
/// new instance's own admin secret, port and settings; a damaged object restores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_backup_restores_into_a_new_instance() {
    use common::{damaged_copy, empty_dir, restore_request, take_backup};
    use std::sync::Arc;
    use trove_core::memory::MemoryBackupStore;
    use trove_core::ports::DynBackupStore;

    let store: DynBackupStore = Arc::new(MemoryBackupStore::new());
    let src = Fixture::with_backups(Manager::Postgresql, 256, store.clone());
    let req = src.app_request(Some("app_db"), "alice", "alice-pw");
    src.strategy
        .prepare(&req)
        .await
        .expect("prepare the source");
    let mut c = connect(src.port(), "alice", "alice-pw", "app_db")
        .await
        .expect("alice connects");
    c.execute("CREATE TABLE t (id int primary key, v text)")
        .await
        .expect("create table");
    c.execute("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g")
        .await
        .expect("insert");
    let piece = take_backup(&src.strategy, "backups/pg-full").await;
    assert!(
        !src.ctx.server_dir.join("engine/backup.pgpass").exists(),
        "the passfile goes with the backup"
    );
    // What is written after the backup is not in it.
    c.execute("INSERT INTO t VALUES (6000, 'after')")
        .await
        .expect("insert after");
    let _ = c.close().await;

    let dst = Fixture::with_backups(Manager::Postgresql, 256, store.clone());
    let t = Instant::now();
    dst.strategy
        .prepare(&restore_request(&dst, &piece))
        .await
        .expect("restoring prepare");
    eprintln!("postgresql: restoring prepare took {:?}", t.elapsed());
    assert_eq!(dst.strategy.status().await.status, ServiceStatus::Healthy);
    assert_ne!(src.admin_secret(), dst.admin_secret());
    let mut c = connect(dst.port(), "alice", "alice-pw", "app_db")
        .await
        .expect("the source's user logs in on the restored instance");
    let n: i64 = c
        .fetch_one("SELECT count(*) FROM t")
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 5000);
    let port: String = c.fetch_one("SHOW port").await.expect("port").get(0);
    assert_eq!(port, dst.port().to_string(), "the instance's own settings");
    let _ = c.close().await;
    assert!(
        connect(dst.port(), "os_admin", &src.admin_secret(), "postgres")
            .await
            .is_err(),
        "the source's admin password is gone"
    );
    // The guest's admin works: users through the facet, and a new user.
    let users = dst
        .strategy
        .users()
        .expect("users")
        .list_users()
        .await
        .expect("list");
    assert!(users.iter().any(|u| u.name == "alice"), "{users:?}");
    dst.strategy
        .users()
        .expect("users")
        .create_users(&[UserSpec {
            name: "bob".into(),
            password: Secret::new("bob-pw"),
            host: None,
            databases: vec!["app_db".into()],
        }])
        .await
        .expect("create a user on the restored instance");
    connect(dst.port(), "bob", "bob-pw", "app_db")
        .await
        .expect("bob connects");
    // A restart keeps it all.
    dst.strategy.stop().await.expect("stop");
    dst.strategy.start().await.expect("start");
    assert_eq!(dst.strategy.status().await.status, ServiceStatus::Healthy);

    // A damaged object: the checksum error, and nothing in the data directory.
    let bad = damaged_copy(&store, &piece).await;
    let third = Fixture::with_backups(Manager::Postgresql, 256, store.clone());
    let e = third
        .strategy
        .prepare(&restore_request(&third, &bad))
        .await
        .expect_err("a damaged backup");
    assert!(e.to_string().contains("damaged"), "{e}");
    assert!(empty_dir(&third.data_dir()), "nothing was restored");
    assert!(third.engine_pid().is_none());
}

/// Inserts a row into `t` as alice.
async fn insert(port: u16, id: i32, v: &'static str) {
    let mut c = connect(port, "alice", "alice-pw", "app_db")
        .await
        .expect("alice connects");
    sqlx::query("INSERT INTO t VALUES ($1, $2)")
        .bind(id)
        .bind(v)
        .execute(&mut c)
        .await
        .expect("insert");
    let _ = c.close().await;
}

/// The values of `t.v` on the instance at `port`, in order.
async fn values(port: u16) -> Vec<String> {
    let mut c = connect(port, "alice", "alice-pw", "app_db")
        .await
        .expect("alice connects");
    let rows = c
        .fetch_all("SELECT v FROM t ORDER BY id")
        .await
        .expect("select");
    let _ = c.close().await;
    rows.iter().map(|r| r.get::<String, _>(0)).collect()
}

/// Incrementals ship the WAL since their parent from the instance's archive; a chain restores to its end, or to a
/// moment between two writes (point-in-time restore) showing the first and not the second; an incremental on a
/// parent whose WAL a later backup pruned is refused, and the archive keeps only what the latest backup needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_incrementals_and_point_in_time_restore() {
    use common::{take_backup, take_backup_on};
    use std::sync::Arc;
    use trove_core::memory::MemoryBackupStore;
    use trove_core::ports::{DynBackupStore, PrepareRequest, RestoreSpec};

    let store: DynBackupStore = Arc::new(MemoryBackupStore::new());
    let src = Fixture::with_backups(Manager::Postgresql, 256, store.clone());
    let req = src.app_request(Some("app_db"), "alice", "alice-pw");
    src.strategy
        .prepare(&req)
        .await
        .expect("prepare the source");
    let write = |id: i32, v: &'static str| insert(src.port(), id, v);
    let mut c = connect(src.port(), "alice", "alice-pw", "app_db")
        .await
        .expect("alice connects");
    c.execute("CREATE TABLE t (id int primary key, v text)")
        .await
        .expect("create table");
    let _ = c.close().await;
    write(1, "before the full").await;
    let full = take_backup(&src.strategy, "backups/pg-full").await;
    let spool = src.data_dir().with_file_name("wal-archive");
    assert!(spool.is_dir(), "the first full backup starts the archive");
    write(2, "first").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    write(3, "second").await;
    // While the full backup lives (the task manager names it in retain_from), its WAL stays: a second
    // incremental on it is taken after the first.
    let inc1 = take_backup_on(&src.strategy, "backups/pg-inc1", Some(&full), Some(&full)).await;
    let again = take_backup_on(&src.strategy, "backups/pg-inc1b", Some(&full), Some(&full)).await;
    assert!(again.size > 0);
    write(4, "third").await;
    let inc2 = take_backup_on(&src.strategy, "backups/pg-inc2", Some(&inc1), None).await;
    assert!(
        inc1.size < full.size,
        "an incremental holds WAL, not the data directory ({} vs {})",
        inc1.size,
        full.size
    );
    let time = |p: &trove_core::ports::BackupPiece| {
        p.position
            .as_ref()
            .and_then(|v| v["time"].as_str())
            .map(str::to_string)
            .expect("a recorded time")
    };
    assert!(time(&full) < time(&inc1) && time(&inc1) < time(&inc2));
    // inc2, told of no older live backup, pruned what the full needed: an incremental on it is refused.
    let facet = src.strategy.backup().expect("backups");
    let e = facet
        .backup(
            &trove_core::ports::BackupJob {
                backup_id: uuid::Uuid::new_v4(),
                key: "backups/pg-late".into(),
                parent: Some(full.clone()),
                retain_from: None,
            },
            &trove_core::ports::BackupProgress::default(),
        )
        .await
        .expect_err("the WAL since the full is gone");
    assert_eq!(e.fault().status, 422, "{e}");
    assert!(e.to_string().contains("latest backup"), "{e}");
    assert!(
        store.get("backups/pg-late").await.is_err(),
        "nothing written"
    );

    let restore = |chain: Vec<trove_core::ports::BackupPiece>,
                   at: Option<chrono::DateTime<chrono::Utc>>| {
        let store = store.clone();
        async move {
            let dst = Fixture::with_backups(Manager::Postgresql, 256, store);
            let req = PrepareRequest {
                restore: Some(RestoreSpec {
                    chain,
                    restore_time: at,
                    replica: false,
                }),
                ..dst.prepare_request(1)
            };
            let t = Instant::now();
            dst.strategy.prepare(&req).await.expect("restoring prepare");
            eprintln!("postgresql: restore of a chain took {:?}", t.elapsed());
            let v = values(dst.port()).await;
            (dst, v)
        }
    };
    let (_whole, v) = restore(vec![full.clone(), inc1.clone(), inc2.clone()], None).await;
    assert_eq!(v, ["before the full", "first", "second", "third"]);
    let (pit, v) = restore(vec![full.clone(), inc1.clone()], Some(between)).await;
    assert_eq!(
        v,
        ["before the full", "first"],
        "stopped between the writes"
    );
    // The point-in-time instance is a writable primary with its own archive after its first backup.
    let mut c = connect(pit.port(), "alice", "alice-pw", "app_db")
        .await
        .expect("alice connects");
    c.execute("INSERT INTO t VALUES (9, 'after the restore')")
        .await
        .expect("the restored instance takes writes");
    let _ = c.close().await;
    let again = take_backup(&pit.strategy, "backups/pg-pit-full").await;
    assert!(again.size > 0);
}
