//! Redis replication through the guest's replication facet, on real engines: a replica (restored from a backup of
//! its source, so the source's ACL users come along) follows it as the `os_repl` user, refuses writes; a switchover
//! (source writes paused, replica caught up, promoted, old source following) loses nothing; a restart keeps the
//! follower following; detach makes a standalone writable instance.

mod common;

use common::{caught_up, restore_request, take_backup, Fixture};
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, ConnectionAddr, ConnectionInfo, ProtocolVersion, RedisConnectionInfo};
use std::sync::Arc;
use std::time::Duration;
use trove_core::memory::MemoryBackupStore;
use trove_core::model::Manager;
use trove_core::ports::DynBackupStore;

async fn connect(port: u16) -> MultiplexedConnection {
    let info = ConnectionInfo {
        addr: ConnectionAddr::Tcp("127.0.0.1".into(), port),
        redis: RedisConnectionInfo {
            db: 0,
            username: Some("alice".into()),
            password: Some("alice-pw".into()),
            protocol: ProtocolVersion::RESP2,
        },
    };
    redis::Client::open(info)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("alice connects")
}

async fn set(port: u16, k: &str) -> redis::RedisResult<()> {
    let mut c = connect(port).await;
    c.set(k, "v").await
}

async fn keys(port: u16) -> Vec<String> {
    let mut c = connect(port).await;
    let mut k: Vec<String> = c.keys("k*").await.expect("KEYS");
    k.sort();
    k
}

fn read_only_refusal(r: redis::RedisResult<()>) -> bool {
    matches!(r, Err(e) if e.code() == Some("READONLY"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replica_follows_switches_over_and_detaches() {
    let store: DynBackupStore = Arc::new(MemoryBackupStore::new());
    let src = Fixture::with_backups(Manager::Redis, 256, store.clone());
    let req = src.app_request(None, "alice", "alice-pw");
    src.strategy
        .prepare(&req)
        .await
        .expect("prepare the source");
    set(src.port(), "k1").await.expect("set");
    let seed = take_backup(&src.strategy, "backups/seed").await;
    set(src.port(), "k2")
        .await
        .expect("a write after the backup");
    let rep = Fixture::with_backups(Manager::Redis, 256, store.clone());
    rep.strategy
        .prepare(&restore_request(&rep, &seed))
        .await
        .expect("restore the replica");
    let sf = src.strategy.replication().expect("Redis replicates");
    let rf = rep.strategy.replication().expect("Redis replicates");
    rf.attach(&sf.source_info().await.expect("source info"))
        .await
        .expect("attach");
    set(src.port(), "k3").await.expect("set");
    caught_up(sf, rf).await;
    assert_eq!(keys(rep.port()).await, ["k1", "k2", "k3"]);
    assert!(
        read_only_refusal(set(rep.port(), "k99").await),
        "the replica refuses writes"
    );

    // Switchover.
    sf.set_read_only(true)
        .await
        .expect("pause the source's writes");
    caught_up(sf, rf).await;
    rf.promote().await.expect("promote");
    set(rep.port(), "k4")
        .await
        .expect("the new source takes writes");
    sf.attach(&rf.source_info().await.expect("new source info"))
        .await
        .expect("the old source follows");
    caught_up(rf, sf).await;
    assert_eq!(
        keys(src.port()).await,
        ["k1", "k2", "k3", "k4"],
        "nothing lost"
    );
    assert!(read_only_refusal(set(src.port(), "k98").await));

    // A restart keeps following.
    src.strategy.stop().await.expect("stop");
    src.strategy.start().await.expect("start");
    assert!(read_only_refusal(set(src.port(), "k97").await));
    set(rep.port(), "k5").await.expect("set");
    caught_up(rf, sf).await;
    assert_eq!(keys(src.port()).await, ["k1", "k2", "k3", "k4", "k5"]);

    // Detach.
    sf.detach().await.expect("detach");
    set(src.port(), "k6")
        .await
        .expect("the detached instance takes writes");
    set(rep.port(), "k7").await.expect("so does the other");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        keys(src.port()).await,
        ["k1", "k2", "k3", "k4", "k5", "k6"],
        "no longer following"
    );
}
