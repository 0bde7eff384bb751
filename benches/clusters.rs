//! Clusters on real engines through the embedded deployment's API (Redis Cluster and MariaDB Galera;
//! `CLUSTER_BENCH_ENGINES`, default `redis,mariadb`), each figure next to a baseline measured in the same run:
//! - time to a ready cluster of three: `create_cluster` until the cluster's task is NONE and every member ACTIVE,
//!   next to the engine's own bare start of three nodes by hand in temporary directories. Redis: three
//!   `redis-server` with `cluster-enabled yes` (and `appendonly yes`, as the instances persist), then
//!   `redis-cli --cluster create ... --cluster-yes` until every node says `cluster_state:ok`. Galera: three
//!   `mariadb-install-db` (in parallel), the first `mariadbd` with `--wsrep-new-cluster` until it is Synced, then
//!   the other two until every node is Synced in a `wsrep_cluster_size` of 3; the bare nodes transfer state with
//!   `wsrep_sst_method=rsync` (the instances use `mariabackup`, which needs an SST account).
//! - Redis throughput: `redis-benchmark --cluster -t set,get -n N -r N -q` against the cluster of three next to
//!   `redis-benchmark -t set,get` (same `-n`, `-r`) against a single Redis instance of the same flavor, and the
//!   same `--cluster` command against the bare cluster (`CLUSTER_BENCH_REQUESTS`, default 200000). Galera: a write
//!   load (`CLUSTER_BENCH_WRITERS` connections, default 4, each an `INSERT` loop for `CLUSTER_BENCH_SECS`, default
//!   10) against one member of the cluster of three next to the same load against a single MariaDB instance.
//! - Redis data moved per second during a grow from three to four: `CLUSTER_BENCH_KEYS` small keys (default
//!   200000, spread over every slot by a pipelined loader that maps each key's CRC16 slot to its node) are
//!   written to both clusters (after a FLUSHALL of the throughput run's keys); the grow request until the cluster's
//!   task is NONE, with the keys and slots moved (the grow event's figures, and the new member's DBSIZE), next to
//!   a fourth bare node started, `redis-cli --cluster add-node`, and `redis-cli --cluster rebalance
//!   --cluster-use-empty-masters` (which moves 10 keys per MIGRATE by default; the guest moves 200).
//!
//! Run: `cargo bench --bench clusters` (as root, which the bare Galera nodes need: they run as `mysql`; `redis-server`,
//! `redis-cli`, `redis-benchmark`, `mariadbd`, `mariadb-install-db`, `mariadb`, `rsync` and Galera's provider at
//! `/usr/lib/galera/libgalera_smm.so` on the machine). Every process it starts is ended by a guard, on failure
//! too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{ConnectOptions, Executor};
use trove::core::api::{
    ClusterAction, ClusterMemberRequest, ClusterView, CreateCluster, CreateInstance, InstanceView,
};
use trove::core::memory::NoAuth;
use trove::core::model::ClusterTask;
use trove::core::ports::RequestContext;
use trove::core::CoreConfig;
use trove::embedded::{Embedded, EmbeddedOptions};
use uuid::Uuid;

const FLAVOR: &str = "2";
const VOLUME_GB: u32 = 5;
const SETTLE: Duration = Duration::from_secs(600);
const GALERA_PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn t1() -> RequestContext {
    RequestContext::tenant("bench")
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn endpoint(v: &InstanceView) -> SocketAddr {
    let ip = v
        .instance
        .addresses
        .first()
        .map(|a| a.address.clone())
        .unwrap_or_else(|| "127.0.0.1".into());
    format!("{ip}:{}", v.instance.port.expect("a port"))
        .parse()
        .expect("an address")
}

fn member() -> ClusterMemberRequest {
    ClusterMemberRequest {
        flavor_ref: Some(FLAVOR.into()),
        volume_size: Some(VOLUME_GB),
        ..Default::default()
    }
}

async fn version_of(emb: &Embedded, ds: &str) -> String {
    emb.control_plane()
        .api()
        .list_datastore_versions(&t1(), ds)
        .await
        .expect("versions")
        .into_iter()
        .max_by_key(|v| v.is_default)
        .map(|v| v.version.name)
        .unwrap_or_else(|| panic!("{ds} has no version"))
}

/// Waits until the cluster's task is NONE with `n` members, every one ACTIVE (with no task of its own); answers its
/// view and when (since `since`) `n` members were first all so: built, and so (on a grow) what the cluster
/// workflow does after that (join, rebalance) is the rest.
async fn wait_cluster(
    emb: &Embedded,
    id: Uuid,
    n: usize,
    since: Instant,
) -> (ClusterView, Duration) {
    let api = emb.control_plane().api();
    let mut all_active = None;
    loop {
        let v = api.show_cluster(&t1(), id).await.expect("show cluster");
        let ready = v.members.len() == n
            && v.members.iter().all(|m| {
                m.status == "ACTIVE" && m.instance.task == trove::core::state::TaskStatus::None
            });
        if ready && all_active.is_none() {
            all_active = Some(since.elapsed());
        }
        if ready && v.cluster.task == ClusterTask::None {
            assert!(v.cluster.fault.is_none(), "{:?}", v.cluster.fault);
            let at = all_active.unwrap_or_else(|| since.elapsed());
            return (v, at);
        }
        assert!(
            v.cluster.task != ClusterTask::None || v.cluster.fault.is_none(),
            "the cluster failed: {:?}",
            v.cluster.fault
        );
        assert!(
            since.elapsed() < SETTLE,
            "the cluster did not settle: {:?}",
            v.cluster.task
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_cluster(emb: &Embedded, ds: &str, n: usize) -> (Uuid, Duration) {
    let version = version_of(emb, ds).await;
    let t = Instant::now();
    let c = emb
        .control_plane()
        .api()
        .create_cluster(
            &t1(),
            CreateCluster {
                name: format!("bench-{ds}"),
                datastore: ds.into(),
                datastore_version: version,
                instances: vec![member(); n],
                ..Default::default()
            },
        )
        .await
        .expect("create cluster");
    let id = c.cluster.id;
    wait_cluster(emb, id, n, t).await;
    (id, t.elapsed())
}

async fn delete_cluster(emb: &Embedded, id: Uuid) {
    let api = emb.control_plane().api();
    api.delete_cluster(&t1(), id).await.expect("delete cluster");
    let deadline = Instant::now() + SETTLE;
    while api.show_cluster(&t1(), id).await.is_ok() {
        assert!(Instant::now() < deadline, "cluster {id} not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A single instance of `ds` with root enabled; answers its id, address and root password.
async fn single_instance(emb: &Embedded, ds: &str) -> (Uuid, SocketAddr, String) {
    let api = emb.control_plane().api();
    let v = api
        .create_instance(
            &t1(),
            CreateInstance {
                name: format!("single-{ds}"),
                flavor_ref: Some(FLAVOR.into()),
                volume_size: Some(VOLUME_GB),
                datastore: Some(ds.into()),
                ..Default::default()
            },
        )
        .await
        .expect("create instance");
    let id = v.instance.id;
    let deadline = Instant::now() + SETTLE;
    let view = loop {
        let v = api.show_instance(&t1(), id).await.expect("show");
        if v.status == "ACTIVE" && v.instance.task == trove::core::state::TaskStatus::None {
            break v;
        }
        assert!(v.status != "ERROR", "{ds}: {:?}", v.instance.fault);
        assert!(Instant::now() < deadline, "{ds}: {}", v.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pw = api
        .root_enable(&t1(), id, None)
        .await
        .expect("root on the instance")
        .password
        .expose()
        .to_string();
    (id, endpoint(&view), pw)
}

async fn delete_instance(emb: &Embedded, id: Uuid) {
    let api = emb.control_plane().api();
    let _ = api.delete_instance(&t1(), id).await;
    let deadline = Instant::now() + SETTLE;
    while api.show_instance(&t1(), id).await.is_ok() {
        assert!(Instant::now() < deadline, "instance {id} not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Processes started by hand.

/// A process ended (SIGKILL) and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

fn port_free(p: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
}

/// A port `p` on 127.0.0.1 with `p` and `p + d` free for every `d` of `also`.
fn free_port(also: &[u16]) -> u16 {
    let _ = NEXT_PORT.compare_exchange(
        0,
        21000 + (std::process::id() % 400) as u16 * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let p = NEXT_PORT.fetch_add(5, Ordering::SeqCst);
        assert!(p < 30000, "no free port");
        if port_free(p) && also.iter().all(|d| port_free(p + d)) {
            return p;
        }
    }
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------------------------
// Redis.

/// A `redis-server` of a bare cluster, started by hand.
struct BareRedis {
    port: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl BareRedis {
    fn start() -> BareRedis {
        let dir = tempfile::Builder::new()
            .prefix("bare-redis")
            .tempdir()
            .expect("dir");
        let port = free_port(&[10000]);
        let log = dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file"])
            .arg(dir.path().join("nodes.conf"))
            .args(["--cluster-node-timeout", "3000"])
            .args(["--cluster-require-full-coverage", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--appendonly", "yes", "--save", ""])
            .arg("--logfile")
            .arg(&log)
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        BareRedis {
            port,
            _proc: Proc(child),
            _dir: dir,
        }
    }

    fn at(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// `redis-cli` against `at` (as `default` with `pw`); answers its output.
fn redis_cli(at: SocketAddr, pw: Option<&str>, args: &[&str]) -> String {
    let mut c = Command::new("redis-cli");
    c.args(["-h", &at.ip().to_string(), "-p", &at.port().to_string()]);
    if let Some(pw) = pw {
        c.args(["--no-auth-warning", "-a", pw]);
    }
    c.args(args);
    run(&mut c, &format!("redis-cli {args:?} on {at}"))
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_pong(at: SocketAddr) {
    wait_until(&format!("redis-server on {at} answers"), || {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &at.port().to_string(), "PING"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
    })
    .await;
}

/// A bare cluster of three by hand: answers its nodes and the time it took.
async fn bare_redis_cluster() -> (Vec<BareRedis>, Duration) {
    let t = Instant::now();
    let nodes: Vec<BareRedis> = (0..3).map(|_| BareRedis::start()).collect();
    for n in &nodes {
        wait_pong(n.at()).await;
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.at().to_string()).collect();
    let mut c = Command::new("redis-cli");
    c.arg("--cluster")
        .arg("create")
        .args(&addrs)
        .arg("--cluster-yes");
    run(&mut c, "redis-cli --cluster create");
    for n in &nodes {
        wait_until("cluster_state:ok on a bare node", || {
            redis_cli(n.at(), None, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
        })
        .await;
    }
    (nodes, t.elapsed())
}

/// CRC16 (XMODEM), Redis Cluster's key hash.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
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

/// The hash slot of a key without a hash tag.
fn slot(key: &str) -> u16 {
    crc16(key.as_bytes()) % 16384
}

/// One node of `CLUSTER NODES`: address, whether it is `myself`, and its slot ranges.
struct NodeLine {
    addr: SocketAddr,
    myself: bool,
    slots: Vec<(u16, u16)>,
}

fn cluster_nodes(at: SocketAddr, pw: Option<&str>) -> Vec<NodeLine> {
    redis_cli(at, pw, &["CLUSTER", "NODES"])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let addr = f[1].split('@').next()?.parse().ok()?;
            let slots = f[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .filter_map(|r| match r.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => r.parse().ok().map(|s| (s, s)),
                })
                .collect();
            Some(NodeLine {
                addr,
                myself: f[2].contains("myself"),
                slots,
            })
        })
        .collect()
}

/// The slots the node at `at` owns.
fn own_slots(at: SocketAddr, pw: Option<&str>) -> u32 {
    cluster_nodes(at, pw)
        .iter()
        .find(|n| n.myself)
        .map(|n| {
            n.slots
                .iter()
                .map(|(a, b)| u32::from(*b) - u32::from(*a) + 1)
                .sum()
        })
        .unwrap_or(0)
}

fn dbsize(at: SocketAddr, pw: Option<&str>) -> u64 {
    redis_cli(at, pw, &["DBSIZE"])
        .trim()
        .parse()
        .expect("DBSIZE")
}

async fn redis_conn(at: SocketAddr, pw: Option<&str>) -> redis::aio::MultiplexedConnection {
    let info = redis::ConnectionInfo {
        addr: redis::ConnectionAddr::Tcp(at.ip().to_string(), at.port()),
        redis: redis::RedisConnectionInfo {
            db: 0,
            username: pw.map(|_| "default".to_string()),
            password: pw.map(str::to_string),
            protocol: redis::ProtocolVersion::RESP2,
        },
    };
    redis::Client::open(info)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// Writes `n` small keys (`bench:<i>`, spread over every slot) to the cluster that `any` belongs to, each key to
/// the node owning its slot, pipelined, the nodes in parallel.
async fn load_keys(any: SocketAddr, pw: Option<&str>, n: u64) {
    let nodes = cluster_nodes(any, pw);
    let mut owner = vec![None; 16384];
    for node in &nodes {
        for &(a, b) in &node.slots {
            for s in a..=b {
                owner[usize::from(s)] = Some(node.addr);
            }
        }
    }
    let mut per_node: BTreeMap<SocketAddr, Vec<u64>> = BTreeMap::new();
    for i in 0..n {
        let at = owner[usize::from(slot(&format!("bench:{i}")))].expect("every slot owned");
        per_node.entry(at).or_default().push(i);
    }
    let mut tasks = Vec::new();
    for (at, keys) in per_node {
        let pw = pw.map(str::to_string);
        tasks.push(tokio::spawn(async move {
            let mut c = redis_conn(at, pw.as_deref()).await;
            for chunk in keys.chunks(5000) {
                let mut p = redis::pipe();
                for i in chunk {
                    p.cmd("SET")
                        .arg(format!("bench:{i}"))
                        .arg(format!("value-{i:010}"))
                        .ignore();
                }
                p.query_async::<()>(&mut c).await.expect("load");
            }
        }));
    }
    for t in tasks {
        t.await.expect("loader");
    }
}

/// The requests per second of each test in `redis-benchmark -q`'s output.
fn rps(out: &str) -> BTreeMap<String, f64> {
    out.split(['\r', '\n'])
        .filter_map(|l| {
            let (name, rest) = l.split_once(": ")?;
            let (v, _) = rest.split_once(" requests per second")?;
            let n = v.trim().parse::<f64>().ok()?;
            Some((name.trim().to_string(), n))
        })
        .collect()
}

fn redis_benchmark(
    at: SocketAddr,
    pw: Option<&str>,
    cluster: bool,
    n: u64,
) -> BTreeMap<String, f64> {
    let mut c = Command::new("redis-benchmark");
    if cluster {
        c.arg("--cluster");
    }
    c.args(["-h", &at.ip().to_string(), "-p", &at.port().to_string()]);
    if let Some(pw) = pw {
        c.args(["-a", pw]);
    }
    c.args([
        "-t",
        "set,get",
        "-n",
        &n.to_string(),
        "-r",
        &n.to_string(),
        "-q",
    ]);
    c.stdin(Stdio::null());
    // Started as a guarded child so that a failure of the bench ends it too.
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("redis-benchmark");
    let mut guard = Proc(child);
    let mut stdout = String::new();
    if let Some(mut o) = guard.0.stdout.take() {
        std::io::Read::read_to_string(&mut o, &mut stdout).expect("read redis-benchmark");
    }
    let status = guard.0.wait().expect("redis-benchmark ends");
    assert!(status.success(), "redis-benchmark: {stdout}");
    let r = rps(&stdout);
    assert!(
        r.contains_key("SET") && r.contains_key("GET"),
        "redis-benchmark printed no figures: {stdout}"
    );
    r
}

async fn bench_redis(emb: &Embedded) {
    let api = emb.control_plane().api();
    let requests = env_num("CLUSTER_BENCH_REQUESTS", 200_000);
    let keys = env_num("CLUSTER_BENCH_KEYS", 200_000);

    // 1. A ready cluster of three.
    let (mut bare, bare_took) = bare_redis_cluster().await;
    let (id, took) = create_cluster(emb, "redis", 3).await;
    println!(
        "redis: cluster of 3 ready through the API in {:.2} s; bare by hand (3 redis-server + redis-cli --cluster \
         create until cluster_state:ok) {:.2} s; ratio API / bare {:.1}x",
        secs(took),
        secs(bare_took),
        secs(took) / secs(bare_took)
    );

    // 3. Throughput: the cluster of three next to a single instance (and the bare cluster).
    let pw = api
        .cluster_root_enable(&t1(), id, None)
        .await
        .expect("cluster root")
        .password
        .expose()
        .to_string();
    let view = api.show_cluster(&t1(), id).await.expect("show");
    let members: Vec<SocketAddr> = view.members.iter().map(endpoint).collect();
    let (single, single_at, single_pw) = single_instance(emb, "redis").await;
    let on_cluster = redis_benchmark(members[0], Some(&pw), true, requests);
    let on_single = redis_benchmark(single_at, Some(&single_pw), false, requests);
    let on_bare = redis_benchmark(bare[0].at(), None, true, requests);
    for test in ["SET", "GET"] {
        println!(
            "redis: {test} with redis-benchmark -n {requests} -r {requests}: cluster of 3 {:.0} req/s; single \
             instance {:.0} req/s; ratio cluster / single {:.2}x (bare cluster of 3 by hand {:.0} req/s)",
            on_cluster[test],
            on_single[test],
            on_cluster[test] / on_single[test],
            on_bare[test]
        );
    }
    delete_instance(emb, single).await;
    for at in &members {
        redis_cli(*at, Some(&pw), &["FLUSHALL"]);
    }
    for n in &bare {
        redis_cli(n.at(), None, &["FLUSHALL"]);
    }

    // 2. Data moved per second during a grow 3 -> 4.
    let t = Instant::now();
    load_keys(members[0], Some(&pw), keys).await;
    let loaded = t.elapsed();
    let total: u64 = members.iter().map(|m| dbsize(*m, Some(&pw))).sum();
    assert_eq!(total, keys, "keys on the cluster after the load");
    load_keys(bare[0].at(), None, keys).await;
    let total: u64 = bare.iter().map(|n| dbsize(n.at(), None)).sum();
    assert_eq!(total, keys, "keys on the bare cluster after the load");
    println!(
        "redis: {keys} keys loaded in {:.2} s ({:.0} keys/s, pipelined, slot-aware)",
        secs(loaded),
        keys as f64 / secs(loaded)
    );
    let t = Instant::now();
    api.cluster_action(&t1(), id, ClusterAction::Grow(vec![member()]))
        .await
        .expect("grow");
    let (view, new_active) = wait_cluster(emb, id, 4, t).await;
    let grow_took = t.elapsed();
    let events = api.list_cluster_events(&t1(), id).await.expect("events");
    let grown = events
        .iter()
        .rev()
        .find(|e| e.kind == "cluster_grow")
        .expect("a cluster_grow event");
    let moved_keys = grown.details["moved"]["keys"].as_u64().unwrap_or(0);
    let moved_slots = grown.details["moved"]["slots"].as_u64().unwrap_or(0);
    let newest = endpoint(view.members.last().expect("members"));
    let new_keys = dbsize(newest, Some(&pw));
    let new_slots = own_slots(newest, Some(&pw));
    let after = grow_took.saturating_sub(new_active);
    println!(
        "redis: grow 3 -> 4 through the API in {:.2} s (the new member ACTIVE after {:.2} s, then join + rebalance \
         {:.2} s): {moved_keys} keys and {moved_slots} slots moved (the new member holds {new_keys} keys, {new_slots} \
         slots): {:.0} keys/s, {:.0} slots/s over the whole grow; {:.0} keys/s, {:.0} slots/s after the member was \
         ACTIVE",
        secs(grow_took),
        secs(new_active),
        secs(after),
        moved_keys as f64 / secs(grow_took),
        moved_slots as f64 / secs(grow_took),
        moved_keys as f64 / secs(after),
        moved_slots as f64 / secs(after)
    );
    let t = Instant::now();
    let fourth = BareRedis::start();
    wait_pong(fourth.at()).await;
    let mut c = Command::new("redis-cli");
    c.args(["--cluster", "add-node"])
        .arg(fourth.at().to_string())
        .arg(bare[0].at().to_string());
    run(&mut c, "redis-cli --cluster add-node");
    let all: Vec<SocketAddr> = bare
        .iter()
        .map(BareRedis::at)
        .chain([fourth.at()])
        .collect();
    for at in &all {
        wait_until("every bare node knows the fourth", || {
            cluster_nodes(*at, None).len() == 4
                && redis_cli(*at, None, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
        })
        .await;
    }
    let added = t.elapsed();
    let r = Instant::now();
    let mut c = Command::new("redis-cli");
    c.args(["--cluster", "rebalance"])
        .arg(bare[0].at().to_string())
        .arg("--cluster-use-empty-masters");
    run(&mut c, "redis-cli --cluster rebalance");
    let rebalance = r.elapsed();
    let bare_grow = t.elapsed();
    let bare_keys = dbsize(fourth.at(), None);
    let bare_slots = own_slots(fourth.at(), None);
    assert!(
        bare_slots > 0 && bare_keys > 0,
        "the rebalance moved nothing to the fourth bare node"
    );
    println!(
        "redis: bare grow by hand in {:.2} s (a 4th redis-server + add-node {:.2} s, then redis-cli --cluster \
         rebalance --cluster-use-empty-masters {:.2} s): {bare_keys} keys and {bare_slots} slots moved: {:.0} keys/s, \
         {:.0} slots/s over the whole grow; {:.0} keys/s, {:.0} slots/s during the rebalance",
        secs(bare_grow),
        secs(added),
        secs(rebalance),
        bare_keys as f64 / secs(bare_grow),
        f64::from(bare_slots) / secs(bare_grow),
        bare_keys as f64 / secs(rebalance),
        f64::from(bare_slots) / secs(rebalance)
    );
    println!(
        "redis: grow ratios API / bare: whole grow {:.1}x; data movement (join + rebalance after ACTIVE vs \
         rebalance alone) {:.1}x",
        secs(grow_took) / secs(bare_grow),
        secs(after) / secs(rebalance)
    );
    bare.push(fourth);
    drop(bare);
    delete_cluster(emb, id).await;
}

// ---------------------------------------------------------------------------------------------------------------
// MariaDB Galera.

/// A `mariadbd` of a bare Galera cluster, started by hand (its group, IST and SST ports are the engine port + 1,
/// + 2 and + 3, as the instances').
struct BareMaria {
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

impl BareMaria {
    fn cnf(&self) -> PathBuf {
        self.dir.path().join("my.cnf")
    }

    /// Writes its `my.cnf` for engine `port` among `peers` (group addresses).
    fn prepare(port: u16, peers: &str) -> BareMaria {
        let dir = tempfile::Builder::new()
            .prefix("bare-galera")
            .tempdir()
            .expect("dir");
        let d = dir.path();
        let cnf = format!(
            "[mysqld]\n\
             datadir = {data}\n\
             socket = {sock}\n\
             pid-file = {d}/mysqld.pid\n\
             log-error = {d}/error.log\n\
             port = {port}\n\
             bind-address = 127.0.0.1\n\
             skip-name-resolve\n\
             wsrep_on = ON\n\
             wsrep_provider = {GALERA_PROVIDER}\n\
             wsrep_cluster_name = bare\n\
             wsrep_cluster_address = gcomm://{peers}\n\
             wsrep_node_address = 127.0.0.1:{group}\n\
             wsrep_provider_options = \"gmcast.listen_addr=tcp://127.0.0.1:{group}; ist.recv_addr=127.0.0.1:{ist}\"\n\
             wsrep_sst_receive_address = 127.0.0.1:{sst}\n\
             wsrep_sst_method = rsync\n\
             binlog_format = ROW\n\
             innodb_autoinc_lock_mode = 2\n\
             default_storage_engine = InnoDB\n\
             [client]\n\
             socket = {sock}\n\
             user = root\n",
            data = d.join("data").display(),
            sock = d.join("mysqld.sock").display(),
            d = d.display(),
            group = port + 1,
            ist = port + 2,
            sst = port + 3,
        );
        std::fs::write(d.join("my.cnf"), cnf).expect("my.cnf");
        // The engine runs as `mysql` (the rsync daemon of an SST started by root would write as `nobody`).
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        run(
            Command::new("chown").args(["-R", "mysql:mysql"]).arg(d),
            "chown",
        );
        BareMaria { dir, proc: None }
    }

    fn install(&self) -> Child {
        Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!(
                "--datadir={}",
                self.dir.path().join("data").display()
            ))
            .args(["--user=mysql", "--skip-test-db"])
            // Each its own temporary directory: parallel bootstraps sharing /tmp once lost a temporary table.
            .env("TMPDIR", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mariadb-install-db")
    }

    fn start(&mut self, new_cluster: bool) {
        let mut c = Command::new("mariadbd");
        c.arg(format!("--defaults-file={}", self.cnf().display()))
            .arg("--user=mysql");
        if new_cluster {
            c.arg("--wsrep-new-cluster");
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        self.proc = Some(Proc(child));
    }

    /// A status variable, `None` while the server does not answer.
    fn status(&self, name: &str) -> Option<String> {
        let out = Command::new("mariadb")
            .arg(format!("--defaults-file={}", self.cnf().display()))
            .args(["-N", "-B", "-e"])
            .arg(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .map(str::to_string)
    }

    fn synced_in(&self, size: u32) -> bool {
        self.status("wsrep_local_state_comment").as_deref() == Some("Synced")
            && self.status("wsrep_cluster_size") == Some(size.to_string())
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

async fn wait_synced(node: &BareMaria, size: u32) {
    let deadline = Instant::now() + SETTLE;
    while !node.synced_in(size) {
        assert!(
            Instant::now() < deadline,
            "a bare Galera node is not Synced in a cluster of {size}: {}",
            node.error_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A bare Galera cluster of three by hand: answers its nodes and the time it took.
async fn bare_galera_cluster() -> (Vec<BareMaria>, Duration) {
    let ports: Vec<u16> = (0..3).map(|_| free_port(&[1, 2, 3])).collect();
    let peers = ports
        .iter()
        .map(|p| format!("127.0.0.1:{}", p + 1))
        .collect::<Vec<_>>()
        .join(",");
    let t = Instant::now();
    let mut nodes: Vec<BareMaria> = ports
        .iter()
        .map(|p| BareMaria::prepare(*p, &peers))
        .collect();
    let installs: Vec<Child> = nodes.iter().map(BareMaria::install).collect();
    for i in installs {
        let out = i.wait_with_output().expect("mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    nodes[0].start(true);
    wait_synced(&nodes[0], 1).await;
    for n in &mut nodes[1..] {
        n.start(false);
    }
    for n in &nodes {
        wait_synced(n, 3).await;
    }
    (nodes, t.elapsed())
}

async fn mysql_root(at: SocketAddr, pw: &str) -> sqlx::MySqlConnection {
    sqlx::mysql::MySqlConnectOptions::new()
        .host(&at.ip().to_string())
        .port(at.port())
        .username("root")
        .password(pw)
        .connect()
        .await
        .expect("root connection")
}

/// `writers` connections each running `INSERT`s into a fresh table for `dur`: answers rows per second.
async fn write_load(at: SocketAddr, pw: &str, writers: u64, dur: Duration) -> f64 {
    let mut c = mysql_root(at, pw).await;
    c.execute("CREATE DATABASE IF NOT EXISTS clusterbench")
        .await
        .expect("database");
    c.execute("DROP TABLE IF EXISTS clusterbench.t")
        .await
        .expect("drop");
    c.execute(
        "CREATE TABLE clusterbench.t (n BIGINT AUTO_INCREMENT PRIMARY KEY, v INT, pad VARCHAR(64))",
    )
    .await
    .expect("table");
    let rows = Arc::new(AtomicU64::new(0));
    let mut conns = Vec::new();
    for _ in 0..writers {
        conns.push(mysql_root(at, pw).await);
    }
    let t = Instant::now();
    let end = t + dur;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let rows = rows.clone();
            tokio::spawn(async move {
                while Instant::now() < end {
                    c.execute("INSERT INTO clusterbench.t (v, pad) VALUES (1, REPEAT('p', 64))")
                        .await
                        .expect("insert");
                    rows.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    let took = t.elapsed();
    let n = rows.load(Ordering::Relaxed);
    let counted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM clusterbench.t")
        .fetch_one(&mut c)
        .await
        .expect("count");
    assert_eq!(counted as u64, n, "every acknowledged row is there");
    n as f64 / secs(took)
}

async fn bench_galera(emb: &Embedded) {
    let api = emb.control_plane().api();
    let writers = env_num("CLUSTER_BENCH_WRITERS", 4).max(1);
    let load_secs = env_num("CLUSTER_BENCH_SECS", 10).max(1);

    // 1. A ready cluster of three.
    let (bare, bare_took) = bare_galera_cluster().await;
    drop(bare);
    let (id, took) = create_cluster(emb, "mariadb", 3).await;
    println!(
        "mariadb: Galera cluster of 3 ready through the API in {:.2} s; bare by hand (3 mariadb-install-db, the \
         first mariadbd bootstrapping, two joining by rsync SST, until all Synced in wsrep_cluster_size 3) {:.2} s; \
         ratio API / bare {:.1}x",
        secs(took),
        secs(bare_took),
        secs(took) / secs(bare_took)
    );

    // 3. A write load on one member next to a single instance.
    let pw = api
        .cluster_root_enable(&t1(), id, None)
        .await
        .expect("cluster root")
        .password
        .expose()
        .to_string();
    let view = api.show_cluster(&t1(), id).await.expect("show");
    let first = endpoint(&view.members[0]);
    let dur = Duration::from_secs(load_secs);
    let on_cluster = write_load(first, &pw, writers, dur).await;
    let (single, single_at, single_pw) = single_instance(emb, "mariadb").await;
    let on_single = write_load(single_at, &single_pw, writers, dur).await;
    println!(
        "mariadb: {writers} INSERT loops for {load_secs} s: one member of the Galera cluster of 3 {:.0} rows/s; single \
         instance {:.0} rows/s; ratio cluster / single {:.2}x",
        on_cluster,
        on_single,
        on_cluster / on_single
    );
    delete_instance(emb, single).await;
    delete_cluster(emb, id).await;
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let state = tempfile::Builder::new()
            .prefix("cb")
            .tempdir()
            .expect("state dir");
        std::fs::set_permissions(
            state.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let mut opts = EmbeddedOptions::new(state.path());
        opts.config = CoreConfig {
            agent_call_high_timeout: Duration::from_secs(600),
            ..CoreConfig::default()
        };
        let emb = Embedded::start(opts, Arc::new(NoAuth::new()))
            .await
            .expect("the embedded deployment starts");
        let engines =
            std::env::var("CLUSTER_BENCH_ENGINES").unwrap_or_else(|_| "redis,mariadb".into());
        for ds in engines.split(',').map(str::trim) {
            match ds {
                "redis" => bench_redis(&emb).await,
                "mariadb" | "galera" => bench_galera(&emb).await,
                other => panic!("unknown engine {other}: redis or mariadb"),
            }
        }
        emb.shutdown().await;
    });
}
