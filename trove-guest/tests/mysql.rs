//! The `mysql` and `mariadb` strategies on the real MariaDB binaries.

mod common;

use common::{wait_status, Fixture};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection, Executor, Row};
use std::time::Instant;
use trove_core::model::{DatabaseSpec, Manager, Secret, UserSpec, UserUpdate};
use trove_core::state::ServiceStatus;

fn opts(port: u16, user: &str, pw: &str, db: Option<&str>) -> MySqlConnectOptions {
    let o = MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username(user)
        .password(pw);
    match db {
        Some(d) => o.database(d),
        None => o,
    }
}

async fn connect(
    port: u16,
    user: &str,
    pw: &str,
    db: Option<&str>,
) -> Result<MySqlConnection, sqlx::Error> {
    opts(port, user, pw, db).connect().await
}

async fn buffer_pool_mb(port: u16, root_pw: &str) -> u64 {
    let mut c = connect(port, "root", root_pw, None)
        .await
        .expect("root connects");
    let row = c
        .fetch_one("SELECT @@innodb_buffer_pool_size")
        .await
        .expect("query");
    let bytes: u64 = row.try_get(0).expect("u64");
    bytes / (1024 * 1024)
}

async fn journey(manager: Manager) {
    let fx = Fixture::new(manager, 256);
    let s = fx.strategy.clone();
    assert_eq!(s.manager(), manager);
    let port = fx.port();

    // prepare: init, start, initial database and user.
    let req = fx.app_request(Some("first_db"), "early", "early-pw");
    let t = Instant::now();
    s.prepare(&req).await.expect("prepare");
    eprintln!("{manager}: prepare took {:?}", t.elapsed());
    assert_eq!(s.status().await.status, ServiceStatus::Healthy);
    connect(port, "early", "early-pw", Some("first_db"))
        .await
        .expect("initial user reaches initial database");
    // prepare is idempotent.
    s.prepare(&req).await.expect("second prepare");

    // A database and a user with a password full of quoting characters.
    let pw = "p'w\"`\\x; --";
    s.databases()
        .expect("databases facet")
        .create_databases(&[DatabaseSpec {
            name: "app_db".into(),
            character_set: Some("utf8mb4".into()),
            collate: None,
        }])
        .await
        .expect("create database");
    s.users()
        .expect("users facet")
        .create_users(&[UserSpec {
            name: "alice".into(),
            password: Secret::new(pw),
            host: Some("%".into()),
            databases: vec!["app_db".into()],
        }])
        .await
        .expect("create user");
    let dbs = s
        .databases()
        .expect("databases facet")
        .list_databases()
        .await
        .expect("list dbs");
    let names: Vec<_> = dbs.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["app_db", "first_db"], "system schemas are hidden");
    let users = s
        .users()
        .expect("users facet")
        .list_users()
        .await
        .expect("list users");
    let alice = users
        .iter()
        .find(|u| u.name == "alice")
        .expect("alice listed");
    assert_eq!(alice.databases, ["app_db"]);
    assert!(
        users
            .iter()
            .all(|u| u.name != "os_admin" && u.name != "root"),
        "{users:?}"
    );

    // Connect as that user and write and read.
    let mut c = connect(port, "alice", pw, Some("app_db"))
        .await
        .expect("alice connects");
    c.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
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
    // alice cannot reach the other database.
    assert!(connect(port, "alice", pw, Some("first_db")).await.is_err());

    // Injection attempts are refused before they reach the engine.
    let bad = s
        .databases()
        .expect("databases facet")
        .create_databases(&[DatabaseSpec {
            name: "x`; DROP DATABASE app_db; --".into(),
            character_set: None,
            collate: None,
        }])
        .await
        .expect_err("bad name");
    assert_eq!(bad.fault().status, 400);
    let bad = s
        .databases()
        .expect("databases facet")
        .grant_access("alice", "%' OR '1", &["app_db".into()])
        .await
        .expect_err("bad host");
    assert_eq!(bad.fault().status, 400);

    // Revoke takes effect: alice loses the database; grant gives it back.
    s.databases()
        .expect("databases facet")
        .revoke_access("alice", "%", "app_db")
        .await
        .expect("revoke");
    assert!(
        connect(port, "alice", pw, Some("app_db")).await.is_err(),
        "revoked user still reaches the database"
    );
    assert!(s
        .users()
        .expect("users facet")
        .list_users()
        .await
        .expect("list")
        .iter()
        .any(|u| u.name == "alice" && u.databases.is_empty()));
    s.databases()
        .expect("databases facet")
        .grant_access("alice", "%", &["app_db".into()])
        .await
        .expect("grant");
    connect(port, "alice", pw, Some("app_db"))
        .await
        .expect("granted again");

    // Password change and rename.
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
    assert!(connect(port, "alice", pw, Some("app_db")).await.is_err());
    connect(port, "alice2", "new-pw", Some("app_db"))
        .await
        .expect("renamed user connects");

    // Root: enable, query the rendered memory setting (50 % of 256 MB).
    let root_pw = s
        .root()
        .expect("root facet")
        .enable_root(None)
        .await
        .expect("enable root");
    assert_eq!(buffer_pool_mb(port, root_pw.expose()).await, 128);

    // Restart keeps the data.
    s.restart().await.expect("restart");
    assert_eq!(s.status().await.status, ServiceStatus::Healthy);
    let mut c = connect(port, "alice2", "new-pw", Some("app_db"))
        .await
        .expect("after restart");
    let v: String = c
        .fetch_one("SELECT v FROM t WHERE id = 1")
        .await
        .expect("select")
        .get(0);
    assert_eq!(v, "kept");
    c.close().await.expect("close");

    // Resize flavor: the buffer pool follows (50 % of 512 MB).
    s.apply_flavor(512).await.expect("apply flavor");
    assert_eq!(buffer_pool_mb(port, root_pw.expose()).await, 256);

    // Usage and the volume limit.
    let fs = s.filesystem_stats().await.expect("fs stats");
    assert!(fs.used_bytes > 1024 * 1024, "{fs:?}");
    assert_eq!(fs.total_bytes, 1024 * 1024 * 1024);
    s.resize_fs(3).await.expect("resize fs");
    assert_eq!(
        s.filesystem_stats().await.expect("fs").total_bytes,
        3 * 1024 * 1024 * 1024
    );

    // A restarted control plane adopts the running engine.
    let adopted = fx.reopen();
    assert_eq!(adopted.status().await.status, ServiceStatus::Healthy);

    // Root disabled: root no longer connects.
    s.root()
        .expect("root facet")
        .disable_root()
        .await
        .expect("disable root");
    assert!(connect(port, "root", root_pw.expose(), None).await.is_err());

    // Delete user and database.
    s.users()
        .expect("users facet")
        .delete_user("alice2", "%")
        .await
        .expect("delete user");
    assert!(connect(port, "alice2", "new-pw", None).await.is_err());
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

    // Clean stop: SHUTDOWN; start again: HEALTHY.
    s.stop().await.expect("stop");
    let st = s.status().await;
    assert_eq!(st.status, ServiceStatus::Shutdown, "{st:?}");
    assert!(
        connect(port, "early", "early-pw", None).await.is_err(),
        "stopped engine still answers"
    );
    s.start().await.expect("start");
    assert_eq!(s.status().await.status, ServiceStatus::Healthy);

    // A killed engine is CRASHED with a reason, and starts again.
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
    assert_eq!(s.status().await.status, ServiceStatus::Healthy);
    connect(port, "early", "early-pw", Some("first_db"))
        .await
        .expect("data survived the crash");
    s.stop().await.expect("final stop");
    assert_eq!(s.status().await.status, ServiceStatus::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_real_engine_journey() {
    journey(Manager::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_real_engine_journey() {
    journey(Manager::Mysql).await;
}

#[tokio::test]
async fn status_before_prepare_is_new() {
    let fx = Fixture::new(Manager::Mariadb, 128);
    assert_eq!(fx.strategy.status().await.status, ServiceStatus::New);
}
