//! Clusters through the real `openstack` CLI against the all-in-one server on real engines: a Redis Cluster of
//! three (keys written and read back in cluster mode with `redis-cli -c`), grown to four (the new member owns hash
//! slots and keys, none lost), shrunk to three (the leaving member's slots and keys move first, none lost), and
//! deleted; a MariaDB Galera cluster of three (a write on one member is read on another, `wsrep_cluster_size` 3),
//! grown to four, shrunk to three, one member's engine killed with SIGKILL (the cluster keeps taking writes; the
//! member is restarted by the compute's supervision and rejoins with the writes it missed), every engine killed at
//! once (the control plane starts the cluster again from its most advanced member, every write kept), and deleted.
//! Both are then upgraded to a second version record (`openstack database cluster upgrade`) and restarted, one
//! member at a time: every member runs a new engine process afterwards, no key or row is lost, and Galera takes
//! every write sent meanwhile; a configuration group attached to the Galera cluster reaches every member and leaves
//! on detach. A second Redis cluster has a replica per shard: a user made through one member reads every key
//! through another, a frozen primary's replica takes its shard over, a grow afterwards learns the swapped roles,
//! and the cluster is force-deleted.
//! `CLUSTER_CLI_DATASTORES` (comma-separated: `redis`, `mariadb`) narrows the walk.

mod api_support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use api_support::{get_json, http_endpoint, post_json, AllInOne, Engine, OpenStackCli, SqlConn};
use serde_json::Value;

const TENANT: &str = "cluster-tenant";
const SETTLE: Duration = Duration::from_secs(300);

fn cluster_view(base: &str, id: &str) -> Value {
    let (s, v) = get_json(&format!("{base}/v1.0/{TENANT}/clusters/{id}"));
    assert_eq!(s, 200, "{v}");
    v["cluster"].clone()
}

/// Waits until the cluster's task is NONE with `n` members, every one ACTIVE; answers its view.
fn wait_cluster(base: &str, id: &str, n: usize) -> Value {
    let deadline = Instant::now() + SETTLE;
    loop {
        let v = cluster_view(base, id);
        let members = v["instances"].as_array().cloned().unwrap_or_default();
        if v["task"]["name"] == "NONE"
            && members.len() == n
            && members.iter().all(|m| m["status"] == "ACTIVE")
        {
            assert!(v.get("fault").is_none(), "the cluster has a fault: {v}");
            return v;
        }
        assert!(
            v.get("fault").is_none() || v["task"]["name"] != "NONE",
            "the cluster failed: {v}"
        );
        assert!(Instant::now() < deadline, "the cluster did not settle: {v}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn member_ids(v: &Value) -> Vec<String> {
    v["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect()
}

fn member_at(base: &str, id: &str) -> SocketAddr {
    let (s, v) = get_json(&format!("{base}/v1.0/{TENANT}/instances/{id}"));
    assert_eq!(s, 200, "{v}");
    http_endpoint(&v["instance"])
}

/// Registers a second version of `ds` on the default version's binaries (mgmt API), for a rolling upgrade;
/// answers its name.
fn add_version(server: &AllInOne, ds: &str) -> String {
    let (s, list) = get_json(&format!(
        "{}/v1.0/{TENANT}/mgmt/datastore-versions",
        server.base
    ));
    assert_eq!(s, 200, "{list}");
    let v = list["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["datastore_name"] == ds && v["default"] == true)
        .unwrap_or_else(|| panic!("no default version of {ds} in {list}"))
        .clone();
    let name = format!("{ds}-rolled");
    let body = serde_json::json!({"version": {
        "name": name, "datastore_name": ds, "datastore_manager": v["datastore_manager"],
        "image": v["image"], "active": true,
    }});
    let (s, b) = post_json(
        &format!("{}/v1.0/{TENANT}/mgmt/datastore-versions", server.base),
        &body.to_string(),
    );
    assert!(s == 200 || s == 202, "add version {name}: {s} {b}");
    name
}

/// The datastore version every member of `v` runs (from the members' own views).
fn member_versions(base: &str, v: &Value) -> Vec<String> {
    member_ids(v)
        .iter()
        .map(|m| {
            let (s, i) = get_json(&format!("{base}/v1.0/{TENANT}/instances/{m}"));
            assert_eq!(s, 200, "{i}");
            i["instance"]["datastore"]["version"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The engine processes serving `at`.
fn engine_pids(at: &[SocketAddr]) -> Vec<u32> {
    at.iter()
        .map(|a| api_support::pid_listening_on(*a).expect("a member's engine listens"))
        .collect()
}

/// Upgrades cluster `id` (of `n` members at `at`) through the CLI to a second version of `ds`, then restarts it
/// (`{"restart": {}}`, which the CLI has no command for); after each, every member runs a new engine process and
/// the cluster and every member name the new version. `during` runs while each roll goes on (answers when the
/// roll ended, polled by the caller's own check).
fn roll(
    server: &AllInOne,
    cli: &mut OpenStackCli,
    id: &str,
    ds: &str,
    at: &[SocketAddr],
    mut during: impl FnMut(),
) {
    let version = add_version(server, ds);
    let before = engine_pids(at);
    let t = Instant::now();
    cli.ok(&["database", "cluster", "upgrade", id, &version]);
    let v = cluster_view(&server.base, id);
    assert_eq!(v["task"]["name"], "UPGRADING_CLUSTER", "{v}");
    during();
    let v = wait_cluster(&server.base, id, at.len());
    println!(
        "{ds}: rolling upgrade of {} members in {:.1} s",
        at.len(),
        t.elapsed().as_secs_f64()
    );
    assert_eq!(v["datastore"]["version"], version.as_str(), "{v}");
    assert!(
        member_versions(&server.base, &v)
            .iter()
            .all(|m| *m == version),
        "every member runs {version}"
    );
    let upgraded = engine_pids(at);
    for (b, a) in before.iter().zip(&upgraded) {
        assert_ne!(
            b, a,
            "every member's engine was started again on the new version"
        );
    }
    // The same version again: refused, nothing runs.
    let out = cli.run(&["database", "cluster", "upgrade", id, &version]);
    assert!(
        out.code != 0 && out.stderr.contains("400"),
        "{}",
        out.stderr
    );

    let t = Instant::now();
    let (s, b) = post_json(
        &format!("{}/v1.0/{TENANT}/clusters/{id}", server.base),
        r#"{"restart": {}}"#,
    );
    assert_eq!(s, 202, "{b}");
    during();
    wait_cluster(&server.base, id, at.len());
    println!(
        "{ds}: rolling restart of {} members in {:.1} s",
        at.len(),
        t.elapsed().as_secs_f64()
    );
    for (b, a) in upgraded.iter().zip(engine_pids(at)) {
        assert_ne!(*b, a, "every member's engine was restarted");
    }
    let (_, events) = get_json(&format!(
        "{}/v1.0/{TENANT}/clusters/{id}/events",
        server.base
    ));
    for kind in ["cluster_upgrade", "cluster_restart"] {
        assert!(
            events["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["kind"] == kind && e["ok"] == true)),
            "no {kind} event: {events}"
        );
    }
}

fn version_of(cli: &mut OpenStackCli, ds: &str) -> String {
    cli.ok(&["datastore", "version", "list", ds, "-f", "json"])
        .json()[0]["Name"]
        .as_str()
        .expect("a version")
        .to_string()
}

fn create_cluster(cli: &mut OpenStackCli, name: &str, ds: &str, n: usize) -> String {
    let version = version_of(cli, ds);
    let mut args = vec![
        "database".to_string(),
        "cluster".into(),
        "create".into(),
        name.into(),
        ds.into(),
        version,
    ];
    for _ in 0..n {
        args.push("--instance".into());
        args.push("flavor=1,volume=2".into());
    }
    args.extend(["-f".into(), "json".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    cli.ok(&refs).json()["id"]
        .as_str()
        .expect("an id")
        .to_string()
}

/// Grows cluster `id` by one member through the CLI; answers its view once it has `n` members, all ACTIVE.
fn grow_by_one(server: &AllInOne, cli: &mut OpenStackCli, id: &str, n: usize) -> Value {
    cli.ok(&[
        "database",
        "cluster",
        "grow",
        id,
        "--instance",
        "flavor=1,volume=2",
    ]);
    wait_cluster(&server.base, id, n)
}

fn enable_root(cli: &mut OpenStackCli, cluster: &str) -> String {
    let out = cli
        .ok(&["database", "root", "enable", cluster, "-f", "json"])
        .json();
    out["password"].as_str().expect("a password").to_string()
}

/// Runs `redis-cli` in cluster mode against `at` as root (the cluster's root password) with `input` on its
/// standard input; answers its output lines.
fn redis_cli(at: SocketAddr, password: &str, args: &[&str], input: &str) -> Vec<String> {
    redis_cli_as(at, &["-a", password], args, input)
}

/// [`redis_cli`] with the authentication arguments `auth` (e.g. `--user U --pass P`).
fn redis_cli_as(at: SocketAddr, auth: &[&str], args: &[&str], input: &str) -> Vec<String> {
    let mut child = Command::new("redis-cli")
        .args([
            "-c",
            "-h",
            &at.ip().to_string(),
            "-p",
            &at.port().to_string(),
        ])
        .arg("--no-auth-warning")
        .args(auth)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write commands");
    let out = child.wait_with_output().expect("redis-cli output");
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn redis_set(at: SocketAddr, pw: &str, from: usize, to: usize) {
    let input: String = (from..to)
        .map(|i| format!("SET key:{i} value-{i}\n"))
        .collect();
    let out = redis_cli(at, pw, &[], &input);
    assert!(
        out.iter().filter(|l| l.as_str() == "OK").count() == to - from,
        "not every SET was acknowledged: {:?}",
        &out[..out.len().min(5)]
    );
}

/// Every key of `0..n` reads back with its value through `at`, in cluster mode.
fn redis_all_there(at: SocketAddr, pw: &str, n: usize, what: &str) {
    let input: String = (0..n).map(|i| format!("GET key:{i}\n")).collect();
    let out = redis_cli(at, pw, &[], &input);
    let values: Vec<&String> = out.iter().filter(|l| l.starts_with("value-")).collect();
    assert_eq!(
        values.len(),
        n,
        "{what}: {} of {n} keys read back",
        values.len()
    );
    for (i, v) in values.iter().enumerate() {
        assert_eq!(**v, format!("value-{i}"), "{what}: key:{i}");
    }
}

/// One member's own figures: `(slots it owns, keys it holds)`.
fn redis_member(at: SocketAddr, pw: &str) -> (u32, u64) {
    let nodes = redis_cli(at, pw, &["CLUSTER", "NODES"], "");
    let mine = nodes
        .iter()
        .find(|l| l.contains("myself"))
        .unwrap_or_else(|| panic!("CLUSTER NODES names no node as myself: {nodes:?}"));
    let slots: u32 = mine
        .split_whitespace()
        .skip(8)
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<u32>().unwrap_or(0) - a.parse::<u32>().unwrap_or(0) + 1,
            None => u32::from(r.parse::<u32>().is_ok()),
        })
        .sum();
    let keys = redis_cli(at, pw, &["DBSIZE"], "")[0]
        .trim()
        .parse()
        .unwrap_or(0);
    (slots, keys)
}

fn redis_walk(server: &AllInOne, cli: &mut OpenStackCli) {
    const KEYS: usize = 2000;
    let t = Instant::now();
    let id = create_cluster(cli, "rc", "redis", 3);
    let v = wait_cluster(&server.base, &id, 3);
    println!(
        "redis: cluster of 3 ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let listed = cli
        .ok(&[
            "database",
            "cluster",
            "list",
            "instances",
            &id,
            "-f",
            "json",
        ])
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
    // Members are instances, listed only when asked for.
    let plain = cli
        .ok(&["database", "instance", "list", "-f", "json"])
        .json();
    assert_eq!(plain.as_array().map(Vec::len), Some(0), "{plain}");
    let pw = enable_root(cli, &id);
    let members = member_ids(&v);
    let first = member_at(&server.base, &members[0]);
    redis_set(first, &pw, 0, KEYS);
    redis_all_there(first, &pw, KEYS, "after the writes");
    for m in &members {
        let (slots, keys) = redis_member(member_at(&server.base, m), &pw);
        assert!(
            (5461..=5462).contains(&slots) && keys > 0,
            "{m}: {slots} slots, {keys} keys"
        );
    }

    // Grow: the new member owns a fair share of the slots, with their keys.
    let t = Instant::now();
    let v = grow_by_one(server, cli, &id, 4);
    println!("redis: grown to 4 in {:.1} s", t.elapsed().as_secs_f64());
    let newest = member_ids(&v)[3].clone();
    let (slots, keys) = redis_member(member_at(&server.base, &newest), &pw);
    assert!(
        (4095..=4096).contains(&slots) && keys > 0,
        "the new member: {slots} slots, {keys} keys"
    );
    redis_all_there(first, &pw, KEYS, "after the grow");

    // Shrink: the leaving member's slots and keys move to the others before it is deleted.
    let t = Instant::now();
    cli.ok(&["database", "cluster", "shrink", &id, &newest]);
    let v = wait_cluster(&server.base, &id, 3);
    println!("redis: shrunk to 3 in {:.1} s", t.elapsed().as_secs_f64());
    assert!(!member_ids(&v).contains(&newest));
    let mut total = 0;
    for m in member_ids(&v) {
        let (slots, _) = redis_member(member_at(&server.base, &m), &pw);
        total += slots;
    }
    assert_eq!(total, 16384, "every slot is owned by a staying member");
    redis_all_there(first, &pw, KEYS, "after the shrink");

    // Rolling upgrade and restart: one member away at a time; every key is there after each.
    let at: Vec<SocketAddr> = member_ids(&v)
        .iter()
        .map(|m| member_at(&server.base, m))
        .collect();
    roll(server, cli, &id, "redis", &at, || {});
    redis_all_there(first, &pw, KEYS, "after the rolling upgrade and restart");
    let total: u32 = at.iter().map(|a| redis_member(*a, &pw).0).sum();
    assert_eq!(total, 16384, "every slot is still owned");

    delete_cluster(server, cli, &id);
}

/// The replication role a Redis member's engine reports (`master` or `slave`).
fn redis_role(at: SocketAddr, pw: &str) -> String {
    redis_cli(at, pw, &["INFO", "replication"], "")
        .iter()
        .find_map(|l| l.trim().strip_prefix("role:").map(str::to_string))
        .unwrap_or_default()
}

/// Sends `signal` to the engine serving `at`.
fn signal_engine(at: SocketAddr, signal: &str) {
    let pid = api_support::pid_listening_on(at).expect("the member's engine listens");
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -{signal} {pid}");
}

/// Polls `check` every 200 ms until it holds (panics with `what` after `within`); answers how long it took.
fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !check() {
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    t.elapsed()
}

/// How many of the keys `0..n` the user `alice` reads through `at` in cluster mode.
fn keys_read_as_alice(at: SocketAddr, n: usize) -> usize {
    let input: String = (0..n).map(|i| format!("GET key:{i}\n")).collect();
    redis_cli_as(
        at,
        &["--user", "alice", "--pass", "Alice-pw-0123"],
        &[],
        &input,
    )
    .iter()
    .filter(|l| l.starts_with("value-"))
    .count()
}

/// A Redis cluster with a replica per shard: `type=replica` members serve the primaries' shards; a primary's
/// engine frozen (SIGSTOP) is replaced by its replica and every key stays readable and writable; resumed, it
/// follows the new primary; a grow afterwards learns the swapped roles (the view shows them) and spreads the slots
/// over the primaries of now; the cluster is force-deleted.
fn redis_replicas_walk(server: &AllInOne, cli: &mut OpenStackCli) {
    const KEYS: usize = 1000;
    let version = version_of(cli, "redis");
    let t = Instant::now();
    let mut args = vec!["database", "cluster", "create", "rr", "redis", &version];
    for _ in 0..3 {
        args.extend(["--instance", "flavor=1,volume=2"]);
    }
    for _ in 0..3 {
        args.extend(["--instance", "flavor=1,volume=2,type=replica"]);
    }
    args.extend(["-f", "json"]);
    let id = cli.ok(&args).json()["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let v = wait_cluster(&server.base, &id, 6);
    println!(
        "redis: cluster of 3 primaries and 3 replicas ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let types: Vec<&str> = v["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|m| m["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        ["member", "member", "member", "replica", "replica", "replica"],
        "{v}"
    );
    let ids = member_ids(&v);
    let at: Vec<SocketAddr> = ids.iter().map(|m| member_at(&server.base, m)).collect();
    let pw = enable_root(cli, &id);
    redis_set(at[0], &pw, 0, KEYS);
    // A user made through one member is on every member: a cluster-mode client of it reads every key through
    // another member.
    cli.ok(&[
        "database",
        "user",
        "create",
        &ids[0],
        "alice",
        "Alice-pw-0123",
    ]);
    let read = keys_read_as_alice(at[2], KEYS);
    assert_eq!(read, KEYS, "the user made through member 1 reads every key");
    // Each replica holds its primary's keys and owns no slot.
    let primary_of = |m: &Value| -> usize {
        let p = m["replica_of"]
            .as_str()
            .expect("a replica names its primary");
        ids.iter().position(|i| i == p).expect("a member")
    };
    let members = v["instances"].as_array().expect("instances").clone();
    for (r, m) in members.iter().enumerate().skip(3) {
        let p = primary_of(m);
        wait_until(
            "a replica holds its primary's keys",
            Duration::from_secs(20),
            || {
                let (ps, pk) = redis_member(at[p], &pw);
                let (rs, rk) = redis_member(at[r], &pw);
                rs == 0 && ps > 0 && rk == pk && pk > 0
            },
        );
    }

    // Freeze the first primary: its replica takes its shard over; every key reads and a write succeeds.
    let frozen = 0;
    let heir = members
        .iter()
        .enumerate()
        .skip(3)
        .find(|(_, m)| primary_of(m) == frozen)
        .map(|(i, _)| i)
        .expect("the first primary has a replica");
    signal_engine(at[frozen], "STOP");
    let took = wait_until(
        "the frozen primary's replica serves its shard",
        Duration::from_secs(60),
        || redis_role(at[heir], &pw) == "master",
    );
    println!(
        "redis: a frozen primary's replica took its shard over in {:.1} s",
        took.as_secs_f64()
    );
    wait_until(
        "every key reads after the failover",
        Duration::from_secs(30),
        || {
            let input: String = (0..KEYS).map(|i| format!("GET key:{i}\n")).collect();
            redis_cli(at[1], &pw, &[], &input)
                .iter()
                .filter(|l| l.starts_with("value-"))
                .count()
                == KEYS
        },
    );
    redis_set(at[1], &pw, KEYS, KEYS + 100);
    signal_engine(at[frozen], "CONT");
    wait_until(
        "the old primary follows its replica",
        Duration::from_secs(60),
        || redis_role(at[frozen], &pw) == "slave",
    );

    // A grow learns the roles of now: four primaries share the slots, the view shows the swap, no key is lost.
    let t = Instant::now();
    let v = grow_by_one(server, cli, &id, 7);
    println!(
        "redis: grown after the failover in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let view = v["instances"].as_array().expect("instances").clone();
    assert_eq!(view[frozen]["type"], "replica", "{v}");
    assert_eq!(view[frozen]["replica_of"], ids[heir].as_str(), "{v}");
    assert_eq!(view[heir]["type"], "member", "{v}");
    let newest = member_at(&server.base, &member_ids(&v)[6]);
    let (slots, _) = redis_member(newest, &pw);
    assert!(
        (4095..=4096).contains(&slots),
        "the new primary owns {slots} slots"
    );
    redis_all_there(at[1], &pw, KEYS + 100, "after the grow");
    // The grown member got the cluster's users: alice reads every key through it.
    let read = keys_read_as_alice(newest, KEYS);
    assert_eq!(
        read, KEYS,
        "the user reads every key through the grown member"
    );

    // Force delete (the client's reset-status, then DELETE).
    delete_with(server, cli, &id, &["force", "delete"]);
}

async fn galera_status(at: SocketAddr, pw: &str) -> Result<i64, String> {
    let mut c = SqlConn::connect(Engine::Mysql, at, "root", pw, "mysql").await?;
    let n = c
        .fetch_i64(
            "SELECT CAST(VARIABLE_VALUE AS SIGNED) FROM information_schema.GLOBAL_STATUS \
             WHERE VARIABLE_NAME = 'WSREP_CLUSTER_SIZE'",
        )
        .await?;
    c.close().await;
    Ok(n.unwrap_or(0))
}

/// A global variable of a member's engine, as a number.
async fn galera_variable(at: SocketAddr, pw: &str, name: &str) -> Result<i64, String> {
    let mut c = SqlConn::connect(Engine::Mysql, at, "root", pw, "mysql").await?;
    let n = c
        .fetch_i64(&format!("SELECT CAST(@@GLOBAL.{name} AS SIGNED)"))
        .await?;
    c.close().await;
    Ok(n.unwrap_or(-1))
}

async fn galera_count(at: SocketAddr, pw: &str) -> Result<i64, String> {
    let mut c = SqlConn::connect(Engine::Mysql, at, "root", pw, "shop").await?;
    let n = c.fetch_i64("SELECT COUNT(*) FROM items").await?;
    c.close().await;
    Ok(n.unwrap_or(-1))
}

async fn galera_write(at: SocketAddr, pw: &str, n: i64) -> Result<(), String> {
    let mut c = SqlConn::connect(Engine::Mysql, at, "root", pw, "shop").await?;
    let r = c.execute(&format!("INSERT INTO items VALUES ({n})")).await;
    c.close().await;
    r
}

fn wait_for<T, F, Fut>(rt: &tokio::runtime::Runtime, what: &str, want: T, mut get: F)
where
    T: std::fmt::Debug + PartialEq,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + SETTLE;
    loop {
        let got = rt.block_on(get());
        if got.as_ref().ok() == Some(&want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {got:?}, {want:?} expected"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn galera_walk(server: &AllInOne, cli: &mut OpenStackCli, rt: &tokio::runtime::Runtime) {
    let t = Instant::now();
    let id = create_cluster(cli, "gc", "mariadb", 3);
    let v = wait_cluster(&server.base, &id, 3);
    println!(
        "mariadb: Galera cluster of 3 ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let pw = enable_root(cli, &id);
    let members = member_ids(&v);
    let at: Vec<SocketAddr> = members.iter().map(|m| member_at(&server.base, m)).collect();
    rt.block_on(async {
        let mut c = SqlConn::connect(Engine::Mysql, at[0], "root", &pw, "mysql")
            .await
            .expect("root on member 1");
        c.execute("CREATE DATABASE shop").await.expect("database");
        c.execute("CREATE TABLE shop.items (n BIGINT PRIMARY KEY)")
            .await
            .expect("table");
        c.execute("INSERT INTO shop.items VALUES (1)")
            .await
            .expect("write");
        c.close().await;
    });
    wait_for(rt, "the write on member 1 read on member 3", 1, || {
        galera_count(at[2], &pw)
    });
    wait_for(rt, "wsrep_cluster_size", 3, || galera_status(at[1], &pw));

    // Grow to four: the new member receives the data by state transfer.
    let t = Instant::now();
    let v = grow_by_one(server, cli, &id, 4);
    println!("mariadb: grown to 4 in {:.1} s", t.elapsed().as_secs_f64());
    let members = member_ids(&v);
    let newest = members[3].clone();
    let new_at = member_at(&server.base, &newest);
    wait_for(rt, "wsrep_cluster_size after the grow", 4, || {
        galera_status(at[0], &pw)
    });
    wait_for(rt, "the new member has the data", 1, || {
        galera_count(new_at, &pw)
    });

    // Shrink back to three.
    let t = Instant::now();
    cli.ok(&["database", "cluster", "shrink", &id, &newest]);
    wait_cluster(&server.base, &id, 3);
    println!("mariadb: shrunk to 3 in {:.1} s", t.elapsed().as_secs_f64());
    wait_for(rt, "wsrep_cluster_size after the shrink", 3, || {
        galera_status(at[0], &pw)
    });

    // kill -9 of one member's engine: the others keep taking writes; the member comes back with them.
    let pid = api_support::pid_listening_on(at[1]).expect("member 2's engine listens");
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let t = Instant::now();
    rt.block_on(galera_write(at[0], &pw, 2))
        .expect("the cluster takes a write with a member down");
    wait_for(rt, "member 2 rejoined with the write it missed", 2, || {
        galera_count(at[1], &pw)
    });
    wait_for(rt, "wsrep_cluster_size after the rejoin", 3, || {
        galera_status(at[1], &pw)
    });
    println!(
        "mariadb: a killed member rejoined in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // A full stop (every engine killed at once): no member may start the cluster on its own; the control plane
    // starts it again from the most advanced member, with every acknowledged write.
    rt.block_on(galera_write(at[2], &pw, 3)).expect("write 3");
    for a in &at {
        let pid = api_support::pid_listening_on(*a).expect("a member's engine listens");
        let killed = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
    }
    let t = Instant::now();
    for a in &at {
        wait_for(rt, "a member is back after the full stop", 3, || {
            galera_count(*a, &pw)
        });
    }
    wait_for(rt, "wsrep_cluster_size after the full stop", 3, || {
        galera_status(at[0], &pw)
    });
    wait_cluster(&server.base, &id, 3);
    let (_, events) = get_json(&format!(
        "{}/v1.0/{TENANT}/clusters/{id}/events",
        server.base
    ));
    assert!(
        events["events"].as_array().is_some_and(|e| e
            .iter()
            .any(|e| e["kind"] == "cluster_recover" && e["ok"] == true)),
        "{events}"
    );
    println!(
        "mariadb: started again after a full stop in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // A configuration group attached to the cluster reaches every member's engine (one member at a time), and
    // leaves it on detach.
    let version = version_of(cli, "mariadb");
    let group = cli
        .ok(&[
            "database",
            "configuration",
            "create",
            "gcfg",
            r#"{"max_connections": 151}"#,
            "--datastore",
            "mariadb",
            "--datastore-version",
            &version,
            "-f",
            "json",
        ])
        .json()["id"]
        .as_str()
        .expect("a configuration id")
        .to_string();
    let url = format!("{}/v1.0/{TENANT}/clusters/{id}", server.base);
    let t = Instant::now();
    let (s, b) = post_json(
        &url,
        &serde_json::json!({"configuration_attach": {"configuration_id": group}}).to_string(),
    );
    assert_eq!(s, 202, "{b}");
    let v = wait_cluster(&server.base, &id, 3);
    assert_eq!(v["configuration"], group.as_str(), "{v}");
    for a in &at {
        wait_for(rt, "the group's value on every member", 151, || {
            galera_variable(*a, &pw, "max_connections")
        });
    }
    println!(
        "mariadb: a configuration group on every member in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (s, b) = post_json(&url, r#"{"configuration_detach": {}}"#);
    assert_eq!(s, 202, "{b}");
    let v = wait_cluster(&server.base, &id, 3);
    assert!(v.get("configuration").is_none_or(Value::is_null), "{v}");
    for a in &at {
        let n = rt
            .block_on(galera_variable(*a, &pw, "max_connections"))
            .expect("max_connections");
        assert_ne!(n, 151, "a member keeps the detached group's value");
    }
    cli.ok(&["database", "configuration", "delete", &group]);

    // Rolling upgrade and restart: a writer keeps writing to whichever member answers; with one member away at a
    // time the cluster never refuses a write, and every row is on every member afterwards.
    let mut next = 100;
    let mut refused = 0;
    let base = server.base.clone();
    roll(server, cli, &id, "mariadb", &at, || loop {
        let ok = at
            .iter()
            .any(|a| rt.block_on(galera_write(*a, &pw, next)).is_ok());
        if ok {
            next += 1;
        } else {
            refused += 1;
        }
        if cluster_view(&base, &id)["task"]["name"] == "NONE" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    });
    assert_eq!(
        refused, 0,
        "writes refused by every member during the rolls"
    );
    let rows = 3 + (next - 100);
    println!(
        "mariadb: {} writes during the rolls, none refused",
        next - 100
    );
    for a in &at {
        wait_for(
            rt,
            "every row on every member after the rolls",
            rows,
            || galera_count(*a, &pw),
        );
    }
    wait_for(rt, "wsrep_cluster_size after the rolls", 3, || {
        galera_status(at[0], &pw)
    });

    delete_cluster(server, cli, &id);
}

fn delete_cluster(server: &AllInOne, cli: &mut OpenStackCli, id: &str) {
    delete_with(server, cli, id, &["delete"]);
}

/// Deletes cluster `id` with `openstack database cluster <command…> ID`; waits until it and every member are gone.
fn delete_with(server: &AllInOne, cli: &mut OpenStackCli, id: &str, command: &[&str]) {
    let mut args = vec!["database", "cluster"];
    args.extend_from_slice(command);
    args.push(id);
    cli.ok(&args);
    let deadline = Instant::now() + SETTLE;
    loop {
        let (s, _) = get_json(&format!("{}/v1.0/{TENANT}/clusters/{id}", server.base));
        if s == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster is not deleted");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, all) = get_json(&format!(
        "{}/v1.0/{TENANT}/instances?include_clustered=true",
        server.base
    ));
    assert_eq!(all["instances"].as_array().map(Vec::len), Some(0), "{all}");
}

#[test]
fn clusters_through_the_openstack_cli_on_real_engines() {
    // Every caller is an admin of its tenant: the rolling upgrade registers its second version through mgmt.
    let server = AllInOne::start(&["--noauth-admin"]);
    let endpoint = format!("{}/v1.0/{TENANT}", server.base);
    let mut cli = OpenStackCli::start(&endpoint);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let only = std::env::var("CLUSTER_CLI_DATASTORES").unwrap_or_default();
    let wanted = |ds: &str| only.is_empty() || only.split(',').any(|d| d == ds);
    // PostgreSQL has no cluster type: a clean 4xx pointing at replicas.
    let version = version_of(&mut cli, "postgresql");
    let out = cli.run(&[
        "database",
        "cluster",
        "create",
        "pg",
        "postgresql",
        &version,
        "--instance",
        "flavor=1,volume=2",
        "--instance",
        "flavor=1,volume=2",
        "--instance",
        "flavor=1,volume=2",
    ]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("replica") && out.stderr.contains("400"),
        "{}",
        out.stderr
    );
    if wanted("redis") {
        let t = Instant::now();
        redis_walk(&server, &mut cli);
        println!("redis: cluster walk in {:.1} s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        redis_replicas_walk(&server, &mut cli);
        println!("redis: replicas walk in {:.1} s", t.elapsed().as_secs_f64());
    }
    if wanted("mariadb") {
        let t = Instant::now();
        galera_walk(&server, &mut cli, &rt);
        println!(
            "mariadb: cluster walk in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
}
