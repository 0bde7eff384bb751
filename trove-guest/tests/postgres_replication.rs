//! PostgreSQL streaming replication through the guest's replication facet, on real engines: a replica restored
//! from a seed backup of its source starts as a hot standby and streams from the backup on (through its slot),
//! refuses every write, gets roles made on the source; a switchover (source fenced, replica caught up and
//! promoted, a sibling moving to the new timeline, the old source rewound with `pg_rewind`) loses nothing and
//! leaves one writable member; a killed source rejoins by rewind; a follower keeps following across a restart;
//! detach makes a standalone writable instance and drops its slot on the source.

mod common;

use common::{caught_up, take_backup, Fixture};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor, Row};
use std::sync::Arc;
use std::time::Instant;
use trove_core::memory::MemoryBackupStore;
use trove_core::model::{Manager, Secret, UserSpec};
use trove_core::ports::{
    BackupPiece, DynBackupStore, PrepareRequest, ReplicaPosition, RestoreSpec,
};

async fn connect(port: u16, user: &str, pw: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnectOptions::new()
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
    matches!(r, Err(sqlx::Error::Database(e)) if e.message().contains("read-only transaction"))
}

/// A prepare of `fx` from `seed` as a replica's seed.
fn seed_request(fx: &Fixture, seed: &BackupPiece) -> PrepareRequest {
    PrepareRequest {
        restore: Some(RestoreSpec {
            chain: vec![seed.clone()],
            restore_time: None,
            replica: true,
        }),
        ..fx.prepare_request(1)
    }
}

/// The replication slots of the instance on `port` (as its admin over TCP: the guest's secret).
async fn slots(fx: &Fixture) -> Vec<String> {
    let mut c = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(fx.port())
        .username("clerk")
        .password("clerk-pw1")
        .database("shop")
        .connect()
        .await
        .expect("connect");
    let r = c
        .fetch_all("SELECT slot_name::text FROM pg_replication_slots ORDER BY 1")
        .await
        .expect("slots");
    let _ = c.close().await;
    r.iter().map(|r| r.get::<String, _>(0)).collect()
}

fn slot_of(fx: &Fixture) -> String {
    format!("trove_{}", fx.ctx.instance_id.simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_replica_streams_switches_over_rewinds_and_detaches() {
    let store: DynBackupStore = Arc::new(MemoryBackupStore::new());
    let src = Fixture::with_backups(Manager::Postgresql, 256, store.clone());
    src.strategy
        .prepare(&src.app_request(Some("shop"), "clerk", "clerk-pw1"))
        .await
        .expect("prepare the source");
    let mut c = connect(src.port(), "clerk", "clerk-pw1")
        .await
        .expect("connect");
    c.execute("CREATE TABLE items (n BIGINT PRIMARY KEY)")
        .await
        .expect("create table");
    let _ = c.close().await;
    insert(src.port(), 1).await.expect("insert");

    // The replica: a standby from its seed, streaming from where the backup ends.
    let seed = take_backup(&src.strategy, "backups/seed").await;
    insert(src.port(), 2)
        .await
        .expect("a write after the backup");
    let rep = Fixture::with_backups(Manager::Postgresql, 256, store.clone());
    let t = Instant::now();
    rep.strategy
        .prepare(&seed_request(&rep, &seed))
        .await
        .expect("restore the replica as a standby");
    let sf = src.strategy.replication().expect("PostgreSQL replicates");
    let rf = rep.strategy.replication().expect("PostgreSQL replicates");
    let info = sf.source_info().await.expect("source info");
    assert_eq!((info.port, info.user.as_str()), (src.port(), "os_repl"));
    rf.attach(&info).await.expect("attach");
    let at = sf.position().await.expect("position");
    assert!(matches!(at, ReplicaPosition::Lsn { .. }), "{at:?}");
    eprintln!(
        "postgresql: replica restored and streaming in {:?}",
        t.elapsed()
    );
    insert(src.port(), 3).await.expect("insert");
    caught_up(sf, rf).await;
    assert_eq!(rows(rep.port()).await, [1, 2, 3], "from the backup on");
    assert!(
        read_only_refusal(insert(rep.port(), 99).await),
        "the standby refuses writes"
    );
    assert_eq!(slots(&src).await, [slot_of(&rep)], "one slot per replica");
    // A role made on the source (through the guest) reaches the replica.
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
    let listed: Vec<String> = rep
        .strategy
        .users()
        .expect("users")
        .list_users()
        .await
        .expect("the replica's guest lists users (its catalog is the source's)")
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert!(listed.contains(&"late".to_string()), "{listed:?}");
    assert!(!listed.iter().any(|u| u.starts_with("os_")), "{listed:?}");

    // A second replica (a sibling).
    let seed2 = take_backup(&src.strategy, "backups/seed2").await;
    let sib = Fixture::with_backups(Manager::Postgresql, 256, store.clone());
    sib.strategy
        .prepare(&seed_request(&sib, &seed2))
        .await
        .expect("restore the sibling");
    let bf = sib.strategy.replication().expect("PostgreSQL replicates");
    bf.attach(&info).await.expect("attach the sibling");
    caught_up(sf, bf).await;

    // A handover undone (a switchover that failed before its promote): the source takes writes again and the
    // replicas follow it again.
    sf.set_read_only(true).await.expect("source hands over");
    assert!(insert(src.port(), 90).await.is_err());
    sf.set_read_only(false).await.expect("the handover undone");
    insert(src.port(), 90)
        .await
        .expect("the source takes writes again");
    let mut c = connect(src.port(), "clerk", "clerk-pw1")
        .await
        .expect("connect");
    c.execute("DELETE FROM items WHERE n = 90")
        .await
        .expect("delete");
    let _ = c.close().await;
    caught_up(sf, rf).await;
    caught_up(sf, bf).await;

    // Switchover: the source stops taking writes, the replica catches up and is promoted, the sibling and the
    // old source (rewound) follow it.
    sf.set_read_only(true).await.expect("source read only");
    assert!(
        insert(src.port(), 98).await.is_err(),
        "the source hands over: it takes no writes"
    );
    caught_up(sf, rf).await;
    rf.promote().await.expect("promote");
    insert(rep.port(), 4)
        .await
        .expect("the new source takes writes");
    let new_info = rf.source_info().await.expect("new source info");
    bf.attach(&new_info)
        .await
        .expect("the sibling follows the new timeline");
    let t = Instant::now();
    sf.attach(&new_info)
        .await
        .expect("the old source is rewound and follows the new one");
    eprintln!(
        "postgresql: old source rewound and streaming in {:?}",
        t.elapsed()
    );
    insert(rep.port(), 5).await.expect("insert");
    caught_up(rf, sf).await;
    caught_up(rf, bf).await;
    assert_eq!(rows(src.port()).await, [1, 2, 3, 4, 5], "nothing lost");
    assert_eq!(rows(sib.port()).await, [1, 2, 3, 4, 5]);
    assert!(read_only_refusal(insert(src.port(), 97).await));
    assert!(read_only_refusal(insert(sib.port(), 97).await));

    // A restart keeps the follower a standby, following.
    src.strategy.stop().await.expect("stop");
    src.strategy.start().await.expect("start");
    assert!(read_only_refusal(insert(src.port(), 96).await));
    insert(rep.port(), 6).await.expect("insert");
    caught_up(rf, sf).await;
    assert_eq!(rows(src.port()).await, [1, 2, 3, 4, 5, 6]);

    // Failover: the source is killed and kept read only (fence); a replica is promoted; the killed one rejoins by
    // rewind (pg_rewind recovers it first).
    rep.strategy.fence().await.expect("fence the source");
    sf.promote().await.expect("promote the old source again");
    insert(src.port(), 7)
        .await
        .expect("the promoted one takes writes");
    let info3 = sf.source_info().await.expect("source info");
    bf.attach(&info3).await.expect("the sibling follows");
    rep.strategy
        .start()
        .await
        .expect("the fenced engine starts");
    assert!(
        read_only_refusal(insert(rep.port(), 95).await),
        "a fenced source comes back read only"
    );
    rf.attach(&info3)
        .await
        .expect("the fenced source rejoins as a replica");
    caught_up(sf, rf).await;
    caught_up(sf, bf).await;
    assert_eq!(rows(rep.port()).await, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(rows(sib.port()).await, [1, 2, 3, 4, 5, 6, 7]);

    // Detach: a standalone writable instance, its slot on the source dropped.
    assert!(slots(&src).await.contains(&slot_of(&sib)));
    bf.detach().await.expect("detach");
    insert(sib.port(), 8)
        .await
        .expect("the detached instance takes writes");
    insert(src.port(), 9).await.expect("so does the source");
    caught_up(sf, rf).await;
    assert_eq!(
        rows(sib.port()).await,
        [1, 2, 3, 4, 5, 6, 7, 8],
        "no longer following"
    );
    assert!(
        !slots(&src).await.contains(&slot_of(&sib)),
        "{:?}",
        slots(&src).await
    );

    // A seed whose WAL the source no longer holds (segments switched and recycled since): the replica is copied
    // afresh from the source.
    let seed3 = take_backup(&src.strategy, "backups/seed3").await;
    let mut admin = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(src.port())
        .username("os_admin")
        .password(&src.admin_secret())
        .database("shop")
        .connect()
        .await
        .expect("the source's admin connects");
    for n in 10..18 {
        admin
            .execute(format!("INSERT INTO items VALUES ({n})").as_str())
            .await
            .expect("insert");
        admin
            .execute("SELECT pg_switch_wal()")
            .await
            .expect("switch");
    }
    admin.execute("CHECKPOINT").await.expect("checkpoint");
    admin.execute("CHECKPOINT").await.expect("checkpoint");
    let _ = admin.close().await;
    let late = Fixture::with_backups(Manager::Postgresql, 256, store.clone());
    late.strategy
        .prepare(&seed_request(&late, &seed3))
        .await
        .expect("restore a late replica");
    let lf = late.strategy.replication().expect("PostgreSQL replicates");
    lf.attach(&info3)
        .await
        .expect("the late replica is copied afresh and follows");
    caught_up(sf, lf).await;
    assert_eq!(
        rows(late.port()).await,
        [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17]
    );
    assert!(read_only_refusal(insert(late.port(), 94).await));
}
