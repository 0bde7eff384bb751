//! Replication through the real `openstack` CLI against the all-in-one server on real engines (MariaDB serving
//! `mysql` and `mariadb`, PostgreSQL, Redis): a replica of a source with data (`--replica-of`), writes on the source reach it,
//! it refuses writes, a switchover (`instance promote`) swaps the roles with no acknowledged write lost and the old
//! source follows the new one (and refuses writes), a second replica of the new source follows it, `instance
//! detach` makes a standalone writable instance, a source with replicas cannot be deleted, and freezing the source's
//! engine (SIGSTOP) makes the control plane fail it over on its own: its replica takes writes, the old source
//! resumed takes none and rejoins as a replica of the new source, and the failover is listed in the instance's
//! events.

mod api_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use api_support::{
    get_json, http_endpoint, redis_connect, wait_status, AllInOne, Engine, OpenStackCli, APP_DB,
    APP_PASSWORD, APP_USER,
};
use serde_json::Value;

const TENANT: &str = "replication-tenant";
const SETTLE: Duration = Duration::from_secs(180);

fn instance_view(base: &str, id: &str) -> Value {
    let (s, v) = get_json(&format!("{base}/v1.0/{TENANT}/instances/{id}"));
    assert_eq!(s, 200, "{v}");
    v["instance"].clone()
}

/// Writes item `n` as the application user; answers the engine's refusal, if any.
async fn write(engine: Engine, at: SocketAddr, n: i64) -> Result<(), String> {
    match engine {
        Engine::Redis => {
            let mut c = redis_connect(at, APP_USER, APP_PASSWORD)
                .await
                .map_err(|e| e.to_string())?;
            redis::cmd("SET")
                .arg(format!("item:{n}"))
                .arg(n)
                .query_async::<()>(&mut c)
                .await
                .map_err(|e| e.to_string())
        }
        _ => {
            let mut c =
                api_support::SqlConn::connect(engine, at, APP_USER, APP_PASSWORD, APP_DB).await?;
            if n == 1 {
                c.execute("CREATE TABLE items (n BIGINT PRIMARY KEY)")
                    .await?;
            }
            let r = c.execute(&format!("INSERT INTO items VALUES ({n})")).await;
            c.close().await;
            r
        }
    }
}

/// How many items the instance holds, as the application user sees them.
async fn count(engine: Engine, at: SocketAddr) -> i64 {
    match engine {
        Engine::Redis => {
            let Ok(mut c) = redis_connect(at, APP_USER, APP_PASSWORD).await else {
                return -1;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("item:*")
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            keys.len() as i64
        }
        _ => {
            let Ok(mut c) =
                api_support::SqlConn::connect(engine, at, APP_USER, APP_PASSWORD, APP_DB).await
            else {
                return -1;
            };
            let n = c.fetch_i64("SELECT COUNT(*) FROM items").await;
            c.close().await;
            n.ok().flatten().unwrap_or(-1)
        }
    }
}

/// Waits until the instance at `at` holds `n` items (replication delivered them).
fn wait_count(rt: &tokio::runtime::Runtime, engine: Engine, at: SocketAddr, n: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = rt.block_on(count(engine, at));
        if got == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {got} items, {n} expected"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn create_replica(cli: &mut OpenStackCli, name: &str, source: &str) -> String {
    cli.ok(&[
        "database",
        "instance",
        "create",
        name,
        "--replica-of",
        source,
        "-f",
        "json",
    ])
    .json()["id"]
        .as_str()
        .expect("an id")
        .to_string()
}

fn walk(server: &AllInOne, cli: &mut OpenStackCli, rt: &tokio::runtime::Runtime, ds: &str) {
    let engine = Engine::of(ds);
    let version = cli
        .ok(&["datastore", "version", "list", ds, "-f", "json"])
        .json()[0]["Name"]
        .as_str()
        .expect("a version")
        .to_string();
    let user_arg = format!("{APP_USER}:{APP_PASSWORD}");
    let mut args = vec![
        "database",
        "instance",
        "create",
        "",
        "--flavor",
        "1",
        "--size",
        "2",
        "--datastore",
        ds,
        "--datastore-version",
        &version,
        "--users",
        &user_arg,
        "-f",
        "json",
    ];
    if engine != Engine::Redis {
        args.extend(["--databases", APP_DB]);
    }
    let src_name = format!("src-{ds}");
    args[3] = &src_name;
    let src = cli.ok(&args).json()["id"]
        .as_str()
        .expect("an id")
        .to_string();
    wait_status(&server.base, TENANT, &src, "ACTIVE", SETTLE);
    let src_at = http_endpoint(&instance_view(&server.base, &src));
    rt.block_on(write(engine, src_at, 1)).expect("write 1");

    // A replica: it shows its source, the source shows it; a write on the source reaches it; it refuses writes.
    let t = Instant::now();
    let rep = create_replica(cli, &format!("rep-{ds}"), &src);
    wait_status(&server.base, TENANT, &rep, "ACTIVE", SETTLE);
    println!("{ds}: replica ACTIVE in {:.1} s", t.elapsed().as_secs_f64());
    let rep_view = instance_view(&server.base, &rep);
    assert_eq!(rep_view["replica_of"]["id"], src.as_str(), "{rep_view}");
    let src_view = instance_view(&server.base, &src);
    assert_eq!(src_view["replicas"][0]["id"], rep.as_str(), "{src_view}");
    let shown = cli
        .ok(&["database", "instance", "show", &rep, "-f", "json"])
        .json();
    assert_eq!(shown["replica_of"], src.as_str(), "{shown}");
    let rep_at = http_endpoint(&rep_view);
    wait_count(rt, engine, rep_at, 1, "the replica has the source's data");
    rt.block_on(write(engine, src_at, 2)).expect("write 2");
    wait_count(
        rt,
        engine,
        rep_at,
        2,
        "a write on the source reaches the replica",
    );
    let refused = rt.block_on(write(engine, rep_at, 100));
    assert!(refused.is_err(), "{ds}: the replica took a write");
    // Users and databases of a replica are its source's.
    if engine != Engine::Redis {
        let out = cli.run(&["database", "db", "create", &rep, "mine"]);
        assert_ne!(out.code, 0, "{ds}: a database was made on a replica");
        assert!(out.stderr.contains("is a replica of"), "{}", out.stderr);
    }
    // Redis ACL users do not replicate: a user made on the source is made on its replicas too.
    if engine == Engine::Redis {
        cli.ok(&["database", "user", "create", &src, "late", "late-Pw-12345"]);
        rt.block_on(api_support::logs_in(
            engine,
            rep_at,
            "late",
            "late-Pw-12345",
            "",
        ))
        .unwrap_or_else(|e| panic!("a user made on the source logs in on the replica: {e}"));
    }
    // A source with replicas is not deleted.
    let out = cli.run(&["database", "instance", "delete", &src]);
    assert_ne!(out.code, 0, "{ds}: a source with replicas was deleted");

    // Switchover: the replica becomes the source with every acknowledged write; the old source follows it.
    let t = Instant::now();
    cli.ok(&["database", "instance", "promote", &rep]);
    wait_status(&server.base, TENANT, &rep, "ACTIVE", SETTLE);
    wait_status(&server.base, TENANT, &src, "ACTIVE", SETTLE);
    println!("{ds}: switchover in {:.1} s", t.elapsed().as_secs_f64());
    let rep_view = instance_view(&server.base, &rep);
    assert!(rep_view.get("replica_of").is_none(), "{rep_view}");
    assert_eq!(rep_view["replicas"][0]["id"], src.as_str(), "{rep_view}");
    let src_view = instance_view(&server.base, &src);
    assert_eq!(src_view["replica_of"]["id"], rep.as_str(), "{src_view}");
    assert_eq!(
        rt.block_on(count(engine, rep_at)),
        2,
        "{ds}: writes lost in the switchover"
    );
    rt.block_on(write(engine, rep_at, 3))
        .expect("the new source takes a write");
    wait_count(rt, engine, src_at, 3, "the old source follows the new one");
    assert!(
        rt.block_on(write(engine, src_at, 101)).is_err(),
        "{ds}: the old source took a write after the switchover"
    );

    // A second replica, of the new source.
    let rep2 = create_replica(cli, &format!("rep2-{ds}"), &rep);
    wait_status(&server.base, TENANT, &rep2, "ACTIVE", SETTLE);
    let rep2_at = http_endpoint(&instance_view(&server.base, &rep2));
    rt.block_on(write(engine, rep_at, 4)).expect("write 4");
    wait_count(
        rt,
        engine,
        rep2_at,
        4,
        "the second replica follows the new source",
    );
    wait_count(rt, engine, src_at, 4, "the old source still follows");

    // Detach: the second replica stands alone and takes writes; the source's later writes no longer reach it.
    cli.ok(&["database", "instance", "detach", &rep2]);
    wait_status(&server.base, TENANT, &rep2, "ACTIVE", SETTLE);
    let rep2_view = instance_view(&server.base, &rep2);
    assert!(rep2_view.get("replica_of").is_none(), "{rep2_view}");
    rt.block_on(write(engine, rep2_at, 50))
        .expect("the detached replica takes a write");
    rt.block_on(write(engine, rep_at, 5)).expect("write 5");
    wait_count(rt, engine, src_at, 5, "the old source follows");
    assert_eq!(
        rt.block_on(count(engine, rep2_at)),
        5,
        "{ds}: items 1-4 and its own 50"
    );

    // Automatic failover: the source's engine freezes (SIGSTOP); the control plane fences it and makes its replica
    // the source, which takes writes within the target; resumed, the old source takes none.
    let pid = api_support::pid_listening_on(rep_at).expect("the source's engine listens");
    let frozen = Instant::now();
    signal(pid, "STOP");
    let took = loop {
        if rt.block_on(write(engine, src_at, 6)).is_ok() {
            break frozen.elapsed();
        }
        assert!(
            frozen.elapsed() < Duration::from_secs(60),
            "{ds}: no member took writes after the source froze"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "{ds}: failover: a new source took a write {:.1} s after the source's engine froze",
        took.as_secs_f64()
    );
    signal(pid, "CONT");
    wait_status(&server.base, TENANT, &src, "ACTIVE", SETTLE);
    let src_view = instance_view(&server.base, &src);
    assert!(src_view.get("replica_of").is_none(), "{src_view}");
    assert_eq!(src_view["replicas"][0]["id"], rep.as_str(), "{src_view}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        rt.block_on(write(engine, rep_at, 102)).is_err(),
        "{ds}: the old source took a write after it was resumed"
    );
    assert_eq!(
        rt.block_on(count(engine, src_at)),
        6,
        "{ds}: the new source has every write"
    );
    // The fenced old source came back as a replica of the new source (its guest restarted it read only).
    rt.block_on(write(engine, src_at, 7)).expect("write 7");
    wait_count(
        rt,
        engine,
        rep_at,
        7,
        "the fenced old source rejoined as a replica of the new source",
    );
    let rep_view = instance_view(&server.base, &rep);
    assert_eq!(rep_view["replica_of"]["id"], src.as_str(), "{rep_view}");
    assert!(rep_view.get("fault").is_none(), "{ds}: {rep_view}");
    let (s, ev) = get_json(&format!(
        "{}/v1.0/{TENANT}/instances/{src}/events",
        server.base
    ));
    assert_eq!(s, 200, "{ev}");
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["switchover", "failover"], "{ev}");
    let failover = &ev["events"][1];
    assert_eq!(failover["ok"], true, "{failover}");
    assert_eq!(
        failover["details"]["old_source"],
        rep.as_str(),
        "{failover}"
    );
    assert_eq!(
        failover["details"]["new_source"],
        src.as_str(),
        "{failover}"
    );
    assert!(
        failover["details"]["reason"].as_str().is_some(),
        "{failover}"
    );

    for id in [&rep2, &rep] {
        cli.ok(&["database", "instance", "delete", id]);
    }
    for id in [&rep2, &rep] {
        wait_status(&server.base, TENANT, id, "GONE", SETTLE);
    }
    cli.ok(&["database", "instance", "delete", &src]);
    wait_status(&server.base, TENANT, &src, "GONE", SETTLE);
}

/// Sends `sig` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(ok.success() || sig == "CONT", "kill -{sig} {pid}");
}

#[test]
fn replicas_switchover_and_detach_through_the_openstack_cli_on_real_engines() {
    let server = AllInOne::start(&[]);
    let endpoint = format!("{}/v1.0/{TENANT}", server.base);
    let mut cli = OpenStackCli::start(&endpoint);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // `REPL_CLI_DATASTORES` (comma-separated) narrows the walk while working on one engine.
    let only = std::env::var("REPL_CLI_DATASTORES").unwrap_or_default();
    for ds in ["mysql", "mariadb", "postgresql", "redis"] {
        if !only.is_empty() && !only.split(',').any(|d| d == ds) {
            continue;
        }
        let t = Instant::now();
        walk(&server, &mut cli, &rt, ds);
        println!(
            "{ds}: replication walk in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
}

/// Locality through the CLI on an all-in-one with two hosts: the replica of an `affinity` source lands on the
/// source's host; an `anti-affinity` source's replica lands on the other host, and a second replica (three members,
/// two hosts) is refused at once with a 400 naming the hosts.
#[test]
fn locality_places_replicas_on_hosts_and_refuses_what_cannot_fit() {
    let server = AllInOne::start(&["--host", "remote", "--noauth-admin"]);
    let endpoint = format!("{}/v1.0/{TENANT}", server.base);
    let mut cli = OpenStackCli::start(&endpoint);
    let host = |id: &str| {
        let (_, shown) = get_json(&format!(
            "{}/v1.0/{TENANT}/mgmt/instances/{id}",
            server.base
        ));
        shown["instance"]["server"]["host"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let mut ids = Vec::new();
    for (policy, same) in [("affinity", true), ("anti-affinity", false)] {
        let src = cli
            .ok(&[
                "database",
                "instance",
                "create",
                &format!("loc-{policy}"),
                "--flavor",
                "1",
                "--size",
                "1",
                "--datastore",
                "redis",
                "--locality",
                policy,
                "-f",
                "json",
            ])
            .json()["id"]
            .as_str()
            .expect("an id")
            .to_string();
        wait_status(&server.base, TENANT, &src, "ACTIVE", SETTLE);
        let rep = create_replica(&mut cli, &format!("loc-{policy}-r"), &src);
        wait_status(&server.base, TENANT, &rep, "ACTIVE", SETTLE);
        let (hs, hr) = (host(&src), host(&rep));
        assert!(!hs.is_empty() && !hr.is_empty(), "hosts {hs:?} {hr:?}");
        assert_eq!(hs == hr, same, "{policy}: source on {hs}, replica on {hr}");
        if !same {
            let out = cli.run(&[
                "database",
                "instance",
                "create",
                "loc-third",
                "--replica-of",
                &src,
            ]);
            assert_ne!(
                out.code, 0,
                "a third member of an anti-affinity set on two hosts was accepted"
            );
            assert!(
                out.stderr.contains("anti-affinity") && out.stderr.contains("remote"),
                "{}",
                out.stderr
            );
        }
        ids.push((src, rep));
    }
    for (src, rep) in &ids {
        cli.ok(&["database", "instance", "delete", rep]);
        wait_status(&server.base, TENANT, rep, "GONE", SETTLE);
        cli.ok(&["database", "instance", "delete", src]);
    }
    for (src, _) in &ids {
        wait_status(&server.base, TENANT, src, "GONE", SETTLE);
    }
}
