//! Redis Cluster through the guest's cluster facet, on real engines: three members join and the first rebalance
//! spreads the slots; keys written through a cluster-mode client (following MOVED and ASK) survive a fourth
//! member joining (a rebalance moves a quarter of the slots while a client keeps writing and reading), that
//! member's drain, and the failure of a primary whose replica Redis promotes.

mod common;

use common::{cluster_port, Fixture};
use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, ProtocolVersion, RedisConnectionInfo};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trove_core::model::{Manager, Secret};
use trove_core::ports::{ClusterFacet, ClusterMember, ClusterSpec};
use uuid::Uuid;

/// CRC16 (XMODEM), as Redis Cluster hashes keys.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for b in data {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of a key (hash tags included).
fn key_slot(key: &str) -> usize {
    let b = key.as_bytes();
    let hashed = match b.iter().position(|c| *c == b'{') {
        Some(open) => match b[open + 1..].iter().position(|c| *c == b'}') {
            Some(len) if len > 0 => &b[open + 1..open + 1 + len],
            _ => b,
        },
        None => b,
    };
    usize::from(crc16(hashed) % 16384)
}

async fn connect(
    port: u16,
    user: &str,
    password: &str,
) -> redis::RedisResult<MultiplexedConnection> {
    let info = ConnectionInfo {
        addr: ConnectionAddr::Tcp("127.0.0.1".into(), port),
        redis: RedisConnectionInfo {
            db: 0,
            username: Some(user.into()),
            password: Some(password.into()),
            protocol: ProtocolVersion::RESP2,
        },
    };
    redis::Client::open(info)?
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Duration::from_secs(1))
                .set_response_timeout(Duration::from_secs(5)),
        )
        .await
}

/// A minimal cluster-mode client (as user `alice`): a slot map learned from MOVED, ASK followed once.
struct Client {
    ports: Vec<u16>,
    slot_port: Vec<u16>,
    conns: HashMap<u16, MultiplexedConnection>,
    redirects: u64,
}

impl Client {
    fn new(ports: &[u16]) -> Client {
        Client {
            ports: ports.to_vec(),
            slot_port: vec![ports[0]; 16384],
            conns: HashMap::new(),
            redirects: 0,
        }
    }

    async fn run(&mut self, key: &str, cmd: redis::Cmd) -> redis::RedisResult<redis::Value> {
        let slot = key_slot(key);
        let mut port = self.slot_port[slot];
        let mut asking = false;
        let mut last = None;
        for attempt in 0..200 {
            let conn = match self.conns.get(&port) {
                Some(c) => Ok(c.clone()),
                None => connect(port, "alice", "alice-pw").await,
            };
            let r = match conn {
                Ok(mut c) => {
                    self.conns.insert(port, c.clone());
                    if asking {
                        redis::pipe()
                            .cmd("ASKING")
                            .ignore()
                            .add_command(cmd.clone())
                            .query_async::<(redis::Value,)>(&mut c)
                            .await
                            .map(|(v,)| v)
                    } else {
                        cmd.query_async(&mut c).await
                    }
                }
                Err(e) => Err(e),
            };
            match r {
                Ok(v) => return Ok(v),
                Err(e) if matches!(e.kind(), ErrorKind::Moved | ErrorKind::Ask) => {
                    self.redirects += 1;
                    // `MOVED|ASK <slot> <host>:<port>`
                    let p = e
                        .detail()
                        .and_then(|d| d.rsplit(':').next())
                        .and_then(|p| p.trim().parse().ok())
                        .expect("a redirect names its node");
                    asking = e.kind() == ErrorKind::Ask;
                    if !asking {
                        self.slot_port[slot] = p;
                    }
                    port = p;
                }
                Err(e)
                    if e.is_io_error()
                        || e.is_connection_refusal()
                        || e.is_connection_dropped()
                        || e.is_timeout()
                        || matches!(e.kind(), ErrorKind::ClusterDown | ErrorKind::TryAgain) =>
                {
                    // A node gone or reset (a drain), a failover under way, a slot briefly unserved: ask the
                    // other nodes, waiting a little once all were asked.
                    self.conns.remove(&port);
                    asking = false;
                    port = self.ports[attempt % self.ports.len()];
                    self.slot_port[slot] = port;
                    last = Some(e);
                    if attempt >= self.ports.len() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("an error"))
    }

    async fn set(&mut self, key: &str, value: &str) -> redis::RedisResult<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        self.run(key, cmd).await.map(|_| ())
    }

    async fn get(&mut self, key: &str) -> redis::RedisResult<Option<String>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        let v = self.run(key, cmd).await?;
        redis::from_redis_value(&v)
    }
}

fn member(fx: &Fixture, replica_of: Option<Uuid>) -> ClusterMember {
    ClusterMember {
        instance_id: fx.ctx.instance_id,
        host: "127.0.0.1".into(),
        port: fx.port(),
        replica_of,
    }
}

fn facet(fx: &Fixture) -> &dyn ClusterFacet {
    fx.strategy
        .cluster()
        .expect("Redis offers the cluster facet")
}

/// Every one of `n` keys reads back with its value.
async fn all_readable(c: &mut Client, n: usize) {
    for i in 0..n {
        let k = format!("key:{i}");
        assert_eq!(
            c.get(&k).await.expect("GET"),
            Some(format!("value-{i}")),
            "{k} kept its value"
        );
    }
}

/// `CLUSTER NODES` of a member, as its admin.
async fn cluster_nodes(fx: &Fixture) -> String {
    let mut c = connect(fx.port(), "os_admin", &fx.admin_secret())
        .await
        .expect("admin connects");
    redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut c)
        .await
        .expect("CLUSTER NODES")
}

async fn prepared(ports: &mut BTreeSet<u16>) -> Fixture {
    let port = loop {
        let p = cluster_port();
        if ports.insert(p) {
            break p;
        }
    };
    let fx = Fixture::on_port(Manager::Redis, 256, port);
    fx.strategy
        .prepare(&fx.app_request(None, "alice", "alice-pw"))
        .await
        .expect("prepare");
    fx
}

const KEYS: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_grows_shrinks_and_fails_over() {
    let test_started = Instant::now();
    let mut ports = BTreeSet::new();
    let mut fx = Vec::new();
    for _ in 0..3 {
        fx.push(prepared(&mut ports).await);
    }
    let mut spec = ClusterSpec {
        cluster_id: Uuid::new_v4(),
        members: fx.iter().map(|f| member(f, None)).collect(),
        secret: Secret::new("the-cluster-secret-42"),
    };

    // Three members join; the first rebalance assigns every slot.
    for (i, f) in fx.iter().enumerate() {
        let t = Instant::now();
        facet(f).join(&spec).await.expect("join");
        eprintln!("member {i} joined in {:?}", t.elapsed());
    }
    facet(&fx[0])
        .join(&spec)
        .await
        .expect("joining again is a no-op");
    let t = Instant::now();
    let moved = facet(&fx[2])
        .rebalance(&spec)
        .await
        .expect("first rebalance");
    eprintln!("first rebalance: {moved:?} in {:?}", t.elapsed());
    assert_eq!((moved.slots, moved.keys), (16384, 0));
    for (i, f) in fx.iter().enumerate() {
        let st = facet(f).status().await.expect("status");
        assert!(st.ready, "member {i}: {st:?}");
        assert_eq!(st.state, "ok");
        assert_eq!(st.members_seen, 3);
        assert_eq!(st.slots, Some(if i == 0 { 5462 } else { 5461 }));
    }

    let users = fx[0]
        .strategy
        .users()
        .expect("users")
        .list_users()
        .await
        .expect("list_users");
    assert_eq!(
        users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["alice"],
        "the cluster account is the guest's own"
    );

    let all_ports: Vec<u16> = fx.iter().map(Fixture::port).collect();
    let mut client = Client::new(&all_ports);
    let t = Instant::now();
    for i in 0..KEYS {
        client
            .set(&format!("key:{i}"), &format!("value-{i}"))
            .await
            .expect("SET");
    }
    eprintln!(
        "{KEYS} keys written in {:?} ({} redirects)",
        t.elapsed(),
        client.redirects
    );
    all_readable(&mut client, KEYS).await;
    let keys: u64 = {
        let mut n = 0;
        for f in &fx {
            n += facet(f).status().await.expect("status").keys.unwrap_or(0);
        }
        n
    };
    assert_eq!(keys, KEYS as u64, "every key is on exactly one member");

    // Grow: a fourth primary, rebalanced while a client keeps writing and reading.
    fx.push(prepared(&mut ports).await);
    spec.members.push(member(&fx[3], None));
    let t = Instant::now();
    facet(&fx[3]).join(&spec).await.expect("the fourth joins");
    eprintln!("member 3 joined a serving cluster in {:?}", t.elapsed());
    for f in &fx {
        facet(f).set_members(&spec).await.expect("set_members");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let live = {
        let (stop, ports) = (
            stop.clone(),
            fx.iter().map(Fixture::port).collect::<Vec<_>>(),
        );
        tokio::spawn(async move {
            let mut c = Client::new(&ports);
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let k = format!("live:{n}");
                c.set(&k, &n.to_string())
                    .await
                    .expect("a write during the rebalance");
                assert_eq!(
                    c.get(&k).await.expect("a read during the rebalance"),
                    Some(n.to_string())
                );
                n += 1;
            }
            (n, c.redirects)
        })
    };
    let t = Instant::now();
    let moved = facet(&fx[1]).rebalance(&spec).await.expect("rebalance");
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (live_keys, live_redirects) = live.await.expect("the live client");
    eprintln!(
        "grow rebalance: {moved:?} in {took:?} ({:.0} slots/s, {:.0} keys/s); meanwhile {live_keys} writes+reads, \
         {live_redirects} redirects",
        f64::from(moved.slots) / took.as_secs_f64(),
        moved.keys as f64 / took.as_secs_f64()
    );
    assert_eq!(moved.slots, 4096);
    assert!(moved.keys > 0);
    for (i, f) in fx.iter().enumerate() {
        let st = facet(f).status().await.expect("status");
        assert_eq!(st.slots, Some(4096), "member {i}");
        assert!(st.ready);
    }
    all_readable(&mut client, KEYS).await;
    let mut c = Client::new(&all_ports);
    for n in 0..live_keys {
        assert_eq!(
            c.get(&format!("live:{n}")).await.expect("GET"),
            Some(n.to_string())
        );
    }
    let again = facet(&fx[0])
        .rebalance(&spec)
        .await
        .expect("rebalance again");
    assert_eq!((again.slots, again.keys), (0, 0), "nothing to move");

    // Shrink: the fourth is drained and forgotten.
    let leaving = fx[3].ctx.instance_id;
    let refused = facet(&fx[0])
        .drain(
            &spec,
            &spec
                .members
                .iter()
                .map(|m| m.instance_id)
                .collect::<Vec<_>>(),
        )
        .await;
    assert!(
        matches!(refused, Err(ref e) if e.fault().status / 100 == 4),
        "no primary would stay: {refused:?}"
    );
    let t = Instant::now();
    let moved = facet(&fx[0]).drain(&spec, &[leaving]).await.expect("drain");
    let took = t.elapsed();
    eprintln!(
        "drain: {moved:?} in {took:?} ({:.0} slots/s, {:.0} keys/s)",
        f64::from(moved.slots) / took.as_secs_f64(),
        moved.keys as f64 / took.as_secs_f64()
    );
    assert_eq!(moved.slots, 4096);
    assert_eq!(facet(&fx[3]).status().await.expect("status").slots, Some(0));
    let gone = format!("127.0.0.1:{}@", fx[3].port());
    for f in &fx[..3] {
        assert!(
            !cluster_nodes(f).await.contains(&gone),
            "the drained node is forgotten"
        );
        let st = facet(f).status().await.expect("status");
        assert_eq!(st.members_seen, 3);
        assert!(st.ready);
    }
    spec.members.pop();
    all_readable(&mut client, KEYS).await;

    // A replica of the first member, then the first member's engine dies: Redis promotes the replica.
    fx.push(prepared(&mut ports).await);
    spec.members
        .push(member(&fx[4], Some(fx[0].ctx.instance_id)));
    let t = Instant::now();
    facet(&fx[4]).join(&spec).await.expect("the replica joins");
    eprintln!("the replica joined and follows in {:?}", t.elapsed());
    let st = facet(&fx[4]).status().await.expect("status");
    assert_eq!(st.slots, Some(0));
    assert!(st.ready);
    fx[0].kill_engine();
    let t = Instant::now();
    let mut client = Client::new(&[fx[1].port(), fx[2].port(), fx[4].port()]);
    all_readable(&mut client, KEYS).await;
    eprintln!("every key readable {:?} after member 0 died", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(20));
    let st = facet(&fx[4]).status().await.expect("status");
    assert_eq!(
        st.slots,
        Some(5462),
        "the replica serves its primary's slots"
    );
    client
        .set("after-failover", "yes")
        .await
        .expect("writes go on");
    eprintln!("the whole scenario took {:?}", test_started.elapsed());
}
