//! MariaDB Galera through the guest's cluster facet, on real engines sharing 127.0.0.1 (each member's group, IST
//! and SST ports are its engine port + 1 to + 3): three prepared instances join (the first bootstraps, the others
//! receive a state transfer) and see each other's writes; a fourth joins and leaves again; a member killed -9 and
//! started again catches up; after every member was killed, the most advanced one (by `recovery_position`) starts
//! the cluster again and nothing committed is lost.

mod common;

use common::{free_port_run, Fixture};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection, Executor, Row};
use std::time::{Duration, Instant};
use trove_core::model::{DatabaseSpec, Manager, Secret, UserSpec};
use trove_core::ports::{ClusterFacet, ClusterMember, ClusterSpec, Moved};
use trove_guest::{EngineConfig, EngineStrategyFactory};
use uuid::Uuid;

async fn connect(port: u16) -> Result<MySqlConnection, sqlx::Error> {
    MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("clerk")
        .password("clerk-pw1")
        .database("shop")
        .connect()
        .await
}

async fn insert(port: u16, n: i64) {
    let mut c = connect(port).await.expect("the user connects");
    c.execute(format!("INSERT INTO items VALUES ({n})").as_str())
        .await
        .expect("insert");
    let _ = c.close().await;
}

async fn rows(port: u16) -> Vec<i64> {
    let mut c = connect(port).await.expect("the user connects");
    // Reads wait until this member applied what the cluster committed before them.
    c.execute("SET SESSION wsrep_sync_wait = 1")
        .await
        .expect("causal reads");
    let r = c
        .fetch_all("SELECT n FROM items ORDER BY n")
        .await
        .expect("select");
    let _ = c.close().await;
    r.iter()
        .map(|r| r.try_get::<i64, _>(0).expect("n"))
        .collect()
}

fn spec(id: Uuid, secret: &str, members: &[&Fixture]) -> ClusterSpec {
    ClusterSpec {
        cluster_id: id,
        members: members
            .iter()
            .map(|f| ClusterMember {
                instance_id: f.ctx.instance_id,
                host: "127.0.0.1".into(),
                port: f.port(),
                replica_of: None,
            })
            .collect(),
        secret: Secret::new(secret),
    }
}

fn facet(f: &Fixture) -> &dyn ClusterFacet {
    f.strategy
        .cluster()
        .expect("MariaDB offers the cluster facet")
}

/// Waits (60 s at most) until `f` is synced and sees `size` members.
async fn wait_size(f: &Fixture, size: u32) {
    let start = Instant::now();
    loop {
        let st = facet(f).status().await;
        if let Ok(s) = &st {
            if s.ready && s.members_seen == size {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "member on port {} never saw {size} members: {st:?}",
            f.port()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// On a failure, keeps the members' server logs (their directories go with the fixtures) in the temp dir.
struct KeepLogs<'a>(&'a [Fixture]);

impl Drop for KeepLogs<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (i, f) in self.0.iter().enumerate() {
            let to = std::env::temp_dir().join(format!("galera-test-m{}.log", i + 1));
            let _ = std::fs::copy(f.ctx.server_dir.join("engine/mysqld.log"), &to);
            eprintln!("m{} log kept in {}", i + 1, to.display());
        }
    }
}

/// Engine ports whose runs of four (engine, group, IST, SST) do not overlap.
fn ports(n: usize) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::new();
    while out.len() < n {
        let p = free_port_run(3);
        if out.iter().all(|q| p.abs_diff(*q) > 3) {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn galera_members_join_grow_shrink_rejoin_and_restart_after_a_full_stop() {
    let total = Instant::now();
    let p = ports(4);
    let clusters = EngineStrategyFactory::new(EngineConfig::default());
    let fx: Vec<Fixture> = p
        .iter()
        .map(|port| Fixture::with_factory_on(Manager::Mariadb, 256, clusters.clone(), *port))
        .collect();
    // Bounded, so that the fixtures' guards kill every engine even when a step hangs.
    let _logs = KeepLogs(&fx);
    tokio::time::timeout(Duration::from_secs(220), scenario(&fx))
        .await
        .expect("the scenario ends in time");
    eprintln!("total: {:?}", total.elapsed());
}

async fn scenario(fx: &[Fixture]) {
    let (m1, m2, m3, m4) = (&fx[0], &fx[1], &fx[2], &fx[3]);
    let t = Instant::now();
    for f in fx {
        f.strategy
            .prepare(&f.prepare_request(1))
            .await
            .expect("prepare a standalone member");
    }
    eprintln!("prepare x4: {:?}", t.elapsed());
    let cnf = |f: &Fixture| {
        std::fs::read_to_string(f.ctx.server_dir.join("engine/my.cnf")).expect("my.cnf")
    };
    assert!(
        !cnf(m1).contains("wsrep"),
        "no Galera section before a join"
    );

    let id = Uuid::new_v4();
    let secret = "sst-Secret-0123456789";
    let three = spec(id, secret, &[m1, m2, m3]);
    let t = Instant::now();
    facet(m1)
        .join(&three)
        .await
        .expect("the first member bootstraps");
    eprintln!("bootstrap (m1 join): {:?}", t.elapsed());
    for (name, f) in [("m2", m2), ("m3", m3)] {
        let t = Instant::now();
        facet(f).join(&three).await.expect("a member joins by SST");
        eprintln!("{name} join (SST): {:?}", t.elapsed());
    }
    for f in [m1, m2, m3] {
        let st = facet(f).status().await.expect("status");
        assert!(st.ready, "{st:?}");
        assert_eq!(st.members_seen, 3);
        assert_eq!(st.state, "Synced");
        assert_eq!(st.slots, None);
    }
    // The configuration holds the SST secret: the engine user's only.
    let meta = std::fs::metadata(m2.ctx.server_dir.join("engine/my.cnf")).expect("my.cnf");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    assert!(cnf(m2).contains(&format!("wsrep_node_address = 127.0.0.1:{}", m2.port() + 1)));
    assert!(cnf(m2).contains(&format!("127.0.0.1:{}", m1.port() + 1)));
    assert!(!cnf(m2).contains(&format!("127.0.0.1:{},", m2.port() + 1)));
    // The state transfer's socat listens on the member's own address only, in the last option group.
    assert!(
        cnf(m2).ends_with("[sst]\nsockopt = bind=127.0.0.1\n"),
        "{}",
        cnf(m2)
    );
    // The SST secret is in no server log (donor m1, joiner m2).
    for f in [m1, m2] {
        let log = std::fs::read_to_string(f.ctx.server_dir.join("engine/mysqld.log")).expect("log");
        assert!(
            !log.contains(secret),
            "the SST secret leaked into a server log"
        );
    }
    // Joining again changes nothing.
    let t = Instant::now();
    facet(m2).join(&three).await.expect("a second join");
    assert!(t.elapsed() < Duration::from_secs(5), "a no-op");

    // Users and data made on one member are everywhere.
    let s1 = &m1.strategy;
    s1.databases()
        .expect("databases")
        .create_databases(&[DatabaseSpec {
            name: "shop".into(),
            character_set: None,
            collate: None,
        }])
        .await
        .expect("create a database on m1");
    s1.users()
        .expect("users")
        .create_users(&[UserSpec {
            name: "clerk".into(),
            password: Secret::new("clerk-pw1"),
            host: None,
            databases: vec!["shop".into()],
        }])
        .await
        .expect("create a user on m1");
    let mut c = connect(m1.port()).await.expect("connect m1");
    c.execute("CREATE TABLE items (n BIGINT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .expect("create table");
    let _ = c.close().await;
    insert(m1.port(), 1).await;
    assert_eq!(rows(m3.port()).await, [1], "written on m1, read on m3");
    assert_eq!(
        facet(m1).rebalance(&three).await.expect("rebalance"),
        Moved::default()
    );
    let l1 = facet(m1).load().await.expect("load");
    assert!(l1.connections.is_some_and(|c| c >= 1), "{l1:?}");
    assert!(l1.flow_control_paused.is_some(), "{l1:?}");
    insert(m1.port(), 10).await;
    let l2 = facet(m1).load().await.expect("load");
    assert!(l2.ops_per_sec.is_some_and(|o| o > 0.0), "{l2:?}");
    assert!(l2.volume_used.is_some(), "{l2:?}");

    // Grow: a fourth member joins by SST.
    let four = spec(id, secret, &[m1, m2, m3, m4]);
    let t = Instant::now();
    facet(m4).join(&four).await.expect("the fourth joins");
    eprintln!("m4 join (SST): {:?}", t.elapsed());
    wait_size(m1, 4).await;
    assert_eq!(
        rows(m4.port()).await,
        [1, 10],
        "the state transfer brought the data"
    );
    for f in [m1, m2, m3, m4] {
        facet(f).set_members(&four).await.expect("set members (4)");
    }
    assert!(cnf(m1).contains(&format!("127.0.0.1:{}", m4.port() + 1)));

    // Shrink: the fourth drained (nothing to move), stopped cleanly, forgotten.
    assert!(
        matches!(
            facet(m1)
                .drain(
                    &four,
                    &[
                        m1.ctx.instance_id,
                        m2.ctx.instance_id,
                        m3.ctx.instance_id,
                        m4.ctx.instance_id
                    ]
                )
                .await,
            Err(trove_core::Error::BadRequest { .. })
        ),
        "nobody would stay"
    );
    assert_eq!(
        facet(m1)
            .drain(&four, &[m4.ctx.instance_id])
            .await
            .expect("drain m4"),
        Moved::default()
    );
    m4.strategy.stop().await.expect("stop m4");
    for f in [m1, m2, m3] {
        facet(f).set_members(&three).await.expect("set members (3)");
    }
    assert!(!cnf(m1).contains(&format!("127.0.0.1:{}", m4.port() + 1)));
    wait_size(m1, 3).await;

    // A member killed -9: the others go on taking writes; started again, it catches up.
    m2.kill_engine();
    wait_size(m1, 2).await;
    insert(m1.port(), 2).await;
    let t = Instant::now();
    m2.strategy.start().await.expect("start m2 again");
    wait_size(m2, 3).await;
    eprintln!("m2 rejoin after kill -9: {:?}", t.elapsed());
    let log =
        std::fs::read_to_string(m2.ctx.server_dir.join("engine/mysqld.log")).unwrap_or_default();
    eprintln!(
        "m2 caught up by {}",
        if log.contains("IST received") {
            "IST"
        } else {
            "SST"
        }
    );
    assert_eq!(
        rows(m2.port()).await,
        [1, 2, 10],
        "it sees the write it missed"
    );

    // Every member killed: the most advanced one starts the cluster again, the others join it.
    insert(m3.port(), 3).await;
    for f in [m1, m2, m3] {
        f.kill_engine();
    }
    let t = Instant::now();
    let mut best: Option<(u64, &Fixture)> = None;
    for (name, f) in [("m1", m1), ("m2", m2), ("m3", m3)] {
        let pos = facet(f)
            .recovery_position()
            .await
            .expect("recovery position")
            .expect("a Galera member has one");
        eprintln!("{name} recovered seqno {pos}");
        if best.is_none_or(|(b, _)| pos > b) {
            best = Some((pos, f));
        }
    }
    let (_, first) = best.expect("a member");
    facet(first)
        .bootstrap(&three)
        .await
        .expect("bootstrap the most advanced");
    for f in [m1, m2, m3] {
        if f.ctx.instance_id != first.ctx.instance_id {
            facet(f)
                .join(&three)
                .await
                .expect("join the restarted cluster");
        }
    }
    wait_size(m1, 3).await;
    eprintln!("full-stop recovery: {:?}", t.elapsed());
    for f in [m1, m2, m3] {
        assert_eq!(rows(f.port()).await, [1, 2, 3, 10], "no committed row lost");
    }
    insert(m2.port(), 4).await;
    assert_eq!(rows(m3.port()).await, [1, 2, 3, 4, 10]);
}
