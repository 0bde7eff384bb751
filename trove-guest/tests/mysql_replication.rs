//! MariaDB GTID replication through the guest's replication facet, on real engines: a replica restored from a
//! backup of its source follows it from exactly the backup's GTID, refuses its users' writes, gets users made on
//! the source; a switchover (source read only, replica caught up, promoted, old source following the new one) loses
//! nothing and leaves one writable member; read only survives a restart; detach makes a standalone writable
//! instance.

mod common;

use common::{caught_up, restore_request, take_backup, Fixture};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection, Executor, Row};
use std::sync::Arc;
use std::time::Duration;
use trove_core::memory::MemoryBackupStore;
use trove_core::model::{Manager, Secret, UserSpec};
use trove_core::ports::DynBackupStore;

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

async fn insert(port: u16, n: i64) -> Result<(), sqlx::Error> {
    let mut c = connect(port, "clerk", "clerk-pw1").await?;
    let r = c
        .execute(format!("INSERT INTO items VALUES ({n})").as_str())
        .await
        .map(|_| ());
    let _ = c.close().await;
    r
}

async fn rows(port: u16) -> Vec<i64> {
    let mut c = connect(port, "clerk", "clerk-pw1")
        .await
        .expect("the user connects");
    let r = c
        .fetch_all("SELECT n FROM items ORDER BY n")
        .await
        .expect("select");
    let _ = c.close().await;
    r.iter()
        .map(|r| r.try_get::<i64, _>(0).expect("n"))
        .collect()
}

fn read_only_refusal(r: Result<(), sqlx::Error>) -> bool {
    matches!(r, Err(sqlx::Error::Database(e)) if e.message().contains("read-only") || e.message().contains("read_only"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_replica_follows_switches_over_and_detaches() {
    let store: DynBackupStore = Arc::new(MemoryBackupStore::new());
    let src = Fixture::with_backups(Manager::Mariadb, 256, store.clone());
    let req = src.app_request(Some("shop"), "clerk", "clerk-pw1");
    src.strategy
        .prepare(&req)
        .await
        .expect("prepare the source");
    let mut c = connect(src.port(), "clerk", "clerk-pw1")
        .await
        .expect("connect");
    c.execute("CREATE TABLE items (n BIGINT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .expect("create table");
    let _ = c.close().await;
    insert(src.port(), 1).await.expect("insert");

    // The replica: restored from a backup of the source, then following it.
    let seed = take_backup(&src.strategy, "backups/seed").await;
    insert(src.port(), 2)
        .await
        .expect("a write after the backup");
    let rep = Fixture::with_backups(Manager::Mariadb, 256, store.clone());
    rep.strategy
        .prepare(&restore_request(&rep, &seed))
        .await
        .expect("restore the replica");
    let sf = src.strategy.replication().expect("MariaDB replicates");
    let rf = rep.strategy.replication().expect("MariaDB replicates");
    let info = sf.source_info().await.expect("source info");
    assert_eq!(info.port, src.port());
    rf.attach(&info).await.expect("attach");
    insert(src.port(), 3).await.expect("insert");
    caught_up(sf, rf).await;
    assert_eq!(
        rows(rep.port()).await,
        [1, 2, 3],
        "from the backup's GTID on"
    );
    assert!(
        read_only_refusal(insert(rep.port(), 99).await),
        "the replica refuses the user's writes"
    );
    // A user made on the source (through the guest) reaches the replica.
    src.strategy
        .users()
        .expect("users")
        .create_users(&[UserSpec {
            name: "late".into(),
            password: Secret::new("late-pw1"),
            host: None,
            databases: vec!["shop".into()],
        }])
        .await
        .expect("create a user on the source");
    caught_up(sf, rf).await;
    connect(rep.port(), "late", "late-pw1")
        .await
        .expect("the source's new user logs in on the replica");

    // Switchover: the source stops taking writes, the replica catches up and is promoted, the old source follows.
    sf.set_read_only(true).await.expect("source read only");
    assert!(read_only_refusal(insert(src.port(), 98).await));
    caught_up(sf, rf).await;
    rf.promote().await.expect("promote");
    insert(rep.port(), 4)
        .await
        .expect("the new source takes writes");
    sf.attach(&rf.source_info().await.expect("new source info"))
        .await
        .expect("the old source follows the new one");
    caught_up(rf, sf).await;
    assert_eq!(rows(src.port()).await, [1, 2, 3, 4], "nothing lost");
    assert!(read_only_refusal(insert(src.port(), 97).await));

    // A restart keeps the follower read only and following.
    src.strategy.stop().await.expect("stop");
    src.strategy.start().await.expect("start");
    assert!(read_only_refusal(insert(src.port(), 96).await));
    insert(rep.port(), 5).await.expect("insert");
    caught_up(rf, sf).await;
    assert_eq!(rows(src.port()).await, [1, 2, 3, 4, 5]);

    // Detach: a standalone writable instance.
    sf.detach().await.expect("detach");
    insert(src.port(), 6)
        .await
        .expect("the detached instance takes writes");
    insert(rep.port(), 7).await.expect("so does the other");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rows(src.port()).await,
        [1, 2, 3, 4, 5, 6],
        "no longer following"
    );
}
