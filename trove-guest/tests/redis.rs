//! The `redis` strategy on the real Redis server.

mod common;

use common::{wait_status, Fixture};
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, ConnectionAddr, ConnectionInfo, ProtocolVersion, RedisConnectionInfo};
use std::time::Instant;
use trove_core::model::{DatabaseSpec, Manager, Secret, UserSpec, UserUpdate};
use trove_core::rpc::DatabasesRequest;
use trove_core::state::ServiceStatus;

async fn connect(
    port: u16,
    user: Option<&str>,
    pw: &str,
) -> redis::RedisResult<MultiplexedConnection> {
    let info = ConnectionInfo {
        addr: ConnectionAddr::Tcp("127.0.0.1".into(), port),
        redis: RedisConnectionInfo {
            db: 0,
            username: user.map(str::to_string),
            password: Some(pw.to_string()),
            protocol: ProtocolVersion::RESP2,
        },
    };
    redis::Client::open(info)?
        .get_multiplexed_async_connection()
        .await
}

async fn maxmemory_mb(port: u16, root_pw: &str) -> u64 {
    let mut c = connect(port, None, root_pw)
        .await
        .expect("root (default user) connects");
    let (_, v): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query_async(&mut c)
        .await
        .expect("config get");
    v.parse::<u64>().expect("number") / (1024 * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_real_engine_journey() {
    let fx = Fixture::new(Manager::Redis, 256);
    let s = fx.strategy.clone();
    let port = fx.port();

    let req = fx.app_request(None, "early", "early-pw");
    let t = Instant::now();
    s.prepare(&req).await.expect("prepare");
    eprintln!("redis: prepare took {:?}", t.elapsed());
    assert_eq!(s.status().await.status, ServiceStatus::Healthy);
    s.prepare(&req).await.expect("second prepare is harmless");

    // Unauthenticated clients get nothing.
    let anon = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
    if let Ok(mut c) = anon.get_multiplexed_async_connection().await {
        let r: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
        assert!(r.is_err(), "an unauthenticated client may run commands");
    }

    // Databases are not a Redis concept: no databases facet, and the guest answers 422 (for grants too).
    assert!(s.databases().is_none());
    assert!(s.logs().is_none(), "redis exposes no guest logs");
    let create = DatabasesRequest::CreateDatabase {
        databases: vec![DatabaseSpec {
            name: "x".into(),
            character_set: None,
            collate: None,
        }],
    };
    let grant = DatabasesRequest::GrantAccess {
        username: "early".into(),
        hostname: "%".into(),
        databases: vec!["x".into()],
    };
    for req in [create, DatabasesRequest::ListDatabases, grant] {
        let e = req.serve_on(s.as_ref()).await.expect_err("databases");
        assert_eq!(e.fault().status, 422, "{e}");
    }
    let mut with_db = req.clone();
    with_db.databases = vec![DatabaseSpec {
        name: "x".into(),
        character_set: None,
        collate: None,
    }];
    let e = s
        .prepare(&with_db)
        .await
        .expect_err("prepare with databases");
    assert_eq!(e.fault().status, 422);

    // A user: write and read as that user.
    let pw = "p'w\" \\x";
    s.users()
        .expect("users facet")
        .create_users(&[UserSpec {
            name: "alice".into(),
            password: Secret::new(pw),
            host: None,
            databases: vec![],
        }])
        .await
        .expect("create user");
    let names: Vec<_> = s
        .users()
        .expect("users facet")
        .list_users()
        .await
        .expect("list")
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "early"]);
    let mut c = connect(port, Some("alice"), pw)
        .await
        .expect("alice connects");
    let _: () = c.set("k", "kept").await.expect("set");
    let v: String = c.get("k").await.expect("get");
    assert_eq!(v, "kept");
    let admin: redis::RedisResult<redis::Value> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query_async(&mut c)
        .await;
    assert!(admin.is_err(), "users may not run administrative commands");
    assert!(connect(port, Some("alice"), "wrong").await.is_err());

    let e = s
        .users()
        .expect("users facet")
        .create_users(&[UserSpec {
            name: "bad user >x".into(),
            password: Secret::new("pw"),
            host: None,
            databases: vec![],
        }])
        .await
        .expect_err("bad name");
    assert_eq!(e.fault().status, 400);

    // Password change.
    s.users()
        .expect("users facet")
        .update_user(
            "alice",
            "%",
            &UserUpdate {
                name: None,
                password: Some(Secret::new("new-pw")),
                host: None,
            },
        )
        .await
        .expect("change password");
    assert!(connect(port, Some("alice"), pw).await.is_err());
    connect(port, Some("alice"), "new-pw")
        .await
        .expect("new password works");

    // Root = the default user with a password; the rendered memory setting (50 % of 256 MB).
    let root_pw = s
        .root()
        .expect("root facet")
        .enable_root(None)
        .await
        .expect("enable root");
    assert_eq!(maxmemory_mb(port, root_pw.expose()).await, 128);

    // Restart keeps data and users.
    s.restart().await.expect("restart");
    let mut c = connect(port, Some("alice"), "new-pw")
        .await
        .expect("alice after restart");
    let v: String = c.get("k").await.expect("get");
    assert_eq!(v, "kept");

    s.apply_flavor(512).await.expect("apply flavor");
    assert_eq!(maxmemory_mb(port, root_pw.expose()).await, 256);

    let fs = s.filesystem_stats().await.expect("fs");
    assert!(
        fs.used_bytes > 0 && fs.total_bytes == 1024 * 1024 * 1024,
        "{fs:?}"
    );

    assert_eq!(fx.reopen().status().await.status, ServiceStatus::Healthy);

    s.root()
        .expect("root facet")
        .disable_root()
        .await
        .expect("disable root");
    assert!(connect(port, None, root_pw.expose()).await.is_err());

    // Deleting the user takes its access away.
    s.users()
        .expect("users facet")
        .delete_user("alice", "%")
        .await
        .expect("delete user");
    assert!(
        connect(port, Some("alice"), "new-pw").await.is_err(),
        "deleted user still connects"
    );

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
    let mut c = connect(port, Some("early"), "early-pw")
        .await
        .expect("users survived the crash");
    let _: Option<String> = c.get("k").await.expect("get");
    s.stop().await.expect("final stop");
    assert_eq!(s.status().await.status, ServiceStatus::Shutdown);
}

/// A full backup (an RDB snapshot and the ACL file) restored into a new instance: its keys, its users with their
/// passwords, the new instance's own admin secret; the restored data persists across a restart (the append-only
/// file took it); a damaged object restores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backup_restores_into_a_new_instance() {
    use common::{damaged_copy, empty_dir, restore_request, take_backup};
    use std::sync::Arc;
    use trove_core::memory::MemoryBackupStore;
    use trove_core::ports::DynBackupStore;

    let store: DynBackupStore = Arc::new(MemoryBackupStore::new());
    let src = Fixture::with_backups(Manager::Redis, 256, store.clone());
    let req = src.app_request(None, "alice", "alice-pw");
    src.strategy
        .prepare(&req)
        .await
        .expect("prepare the source");
    let mut c = connect(src.port(), Some("alice"), "alice-pw")
        .await
        .expect("alice connects");
    for i in 0..2000 {
        let _: () = c.set(format!("k{i}"), format!("v{i}")).await.expect("set");
    }
    let piece = take_backup(&src.strategy, "backups/redis-full").await;
    assert!(
        !src.dir.path().join("vol/backup-snapshot").exists(),
        "the snapshot's links go with the backup"
    );
    // What is written after the backup is not in it.
    let _: () = c.set("after", "1").await.expect("set after");

    let dst = Fixture::with_backups(Manager::Redis, 256, store.clone());
    let t = Instant::now();
    dst.strategy
        .prepare(&restore_request(&dst, &piece))
        .await
        .expect("restoring prepare");
    eprintln!("redis: restoring prepare took {:?}", t.elapsed());
    assert_eq!(dst.strategy.status().await.status, ServiceStatus::Healthy);
    assert_ne!(src.admin_secret(), dst.admin_secret());
    let check = |port: u16| async move {
        let mut c = connect(port, Some("alice"), "alice-pw")
            .await
            .expect("the source's user logs in on the restored instance");
        let v: String = c.get("k1999").await.expect("get");
        assert_eq!(v, "v1999");
        let n: u64 = redis::cmd("DBSIZE")
            .query_async(&mut c)
            .await
            .expect("dbsize");
        assert_eq!(n, 2000);
        let after: Option<String> = c.get("after").await.expect("get after");
        assert_eq!(after, None);
    };
    check(dst.port()).await;
    assert!(
        connect(dst.port(), Some("os_admin"), &src.admin_secret())
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
            databases: vec![],
        }])
        .await
        .expect("create a user on the restored instance");
    // A restart keeps it all: the data is in the append-only file now.
    dst.strategy.stop().await.expect("stop");
    dst.strategy.start().await.expect("start");
    assert_eq!(dst.strategy.status().await.status, ServiceStatus::Healthy);
    check(dst.port()).await;
    connect(dst.port(), Some("bob"), "bob-pw")
        .await
        .expect("bob connects after the restart");
    // A second backup of the restored instance works too.
    take_backup(&dst.strategy, "backups/redis-again").await;

    // A damaged object: the checksum error, and nothing in the data directory.
    let bad = damaged_copy(&store, &piece).await;
    let third = Fixture::with_backups(Manager::Redis, 256, store.clone());
    let e = third
        .strategy
        .prepare(&restore_request(&third, &bad))
        .await
        .expect_err("a damaged backup");
    assert!(e.to_string().contains("damaged"), "{e}");
    assert!(empty_dir(&third.data_dir()), "nothing was restored");
    assert!(third.engine_pid().is_none());
}
