//! Load-driven scaling on real engines through the all-in-one's HTTP API: a cluster of three with a scaling policy
//! (its timings shortened) grows to four while real load runs against it and shrinks back to three after the load
//! stops; no key or row is lost; each decision is a `scaling` event with the metric values that made it. Redis:
//! `redis-benchmark --cluster` drives commands per second; Galera: a write loop on one member drives statements per
//! second. `CLUSTER_AUTOSCALE_DATASTORES` (comma-separated: `redis`, `mariadb`) narrows it.

mod api_support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_support::{blocking, get_json, http_endpoint, post_json, AllInOne, Engine, SqlConn};
use serde_json::{json, Value};

const TENANT: &str = "autoscale-tenant";
const SETTLE: Duration = Duration::from_secs(300);

fn url(server: &AllInOne, path: &str) -> String {
    format!("{}/v1.0/{TENANT}{path}", server.base)
}

fn version_of(server: &AllInOne, ds: &str) -> String {
    let (s, v) = get_json(&url(server, &format!("/datastores/{ds}/versions")));
    assert_eq!(s, 200, "{v}");
    v["versions"][0]["name"]
        .as_str()
        .expect("a version")
        .to_string()
}

fn cluster(server: &AllInOne, id: &str) -> Value {
    let (s, v) = get_json(&url(server, &format!("/clusters/{id}")));
    assert_eq!(s, 200, "{v}");
    v["cluster"].clone()
}

/// Waits until the cluster has `n` ACTIVE members and no task; answers the member ids.
fn wait_members(server: &AllInOne, id: &str, n: usize, what: &str) -> Vec<String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let v = cluster(server, id);
        let members = v["instances"].as_array().cloned().unwrap_or_default();
        if v["task"]["name"] == "NONE"
            && members.len() == n
            && members.iter().all(|m| m["status"] == "ACTIVE")
        {
            assert!(
                v.get("fault").is_none(),
                "{what}: the cluster has a fault: {v}"
            );
            return members
                .iter()
                .map(|m| m["id"].as_str().expect("id").to_string())
                .collect();
        }
        assert!(Instant::now() < deadline, "{what}: {v}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn member_at(server: &AllInOne, id: &str) -> SocketAddr {
    let (s, v) = get_json(&url(server, &format!("/instances/{id}")));
    assert_eq!(s, 200, "{v}");
    http_endpoint(&v["instance"])
}

/// A cluster of three of `ds` with root enabled; answers (cluster id, root password).
fn make_cluster(server: &AllInOne, ds: &str) -> (String, String) {
    let version = version_of(server, ds);
    let member = json!({"flavorRef": "1", "volume": {"size": 2}});
    let body = json!({"cluster": {"name": format!("auto-{ds}"), "datastore": {"type": ds, "version": version},
        "instances": [member, member, member]}});
    let (s, v) = post_json(&url(server, "/clusters"), &body.to_string());
    assert_eq!(s, 200, "{v}");
    let id = v["cluster"]["id"].as_str().expect("id").to_string();
    wait_members(server, &id, 3, "built");
    let (s, v) = post_json(&url(server, &format!("/clusters/{id}/root")), "{}");
    assert_eq!(s, 200, "{v}");
    let pw = v["user"]["password"]
        .as_str()
        .expect("password")
        .to_string();
    (id, pw)
}

fn set_policy(server: &AllInOne, id: &str, metric: &str, grow_above: f64, shrink_below: f64) {
    let body = json!({"scaling_policy": {"min_members": 3, "max_members": 4, "metric": metric,
        "grow_above": grow_above, "shrink_below": shrink_below, "breach_secs": 4, "cooldown_secs": 5,
        "step": 1}});
    let (s, v) = blocking(
        "PUT",
        &url(server, &format!("/clusters/{id}/scaling_policy")),
        Some(&body.to_string()),
    );
    assert_eq!(s, 200, "{v}");
}

/// The `scaling` decisions recorded for the cluster, in order.
fn decisions(server: &AllInOne, id: &str) -> Vec<Value> {
    let (s, v) = get_json(&url(server, &format!("/clusters/{id}/events")));
    assert_eq!(s, 200, "{v}");
    v["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["kind"] == "scaling")
        .collect()
}

fn delete(server: &AllInOne, id: &str) {
    let (s, v) = blocking("DELETE", &url(server, &format!("/clusters/{id}")), None);
    assert_eq!(s, 202, "{v}");
    let deadline = Instant::now() + SETTLE;
    while get_json(&url(server, &format!("/clusters/{id}"))).0 != 404 {
        assert!(Instant::now() < deadline, "the cluster is not deleted");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Checks the two decisions: a grow made above the threshold, then a shrink below it, each with every member's
/// value.
fn check_decisions(server: &AllInOne, id: &str, grow_above: f64, shrink_below: f64) {
    let d = decisions(server, id);
    let actions: Vec<&str> = d
        .iter()
        .map(|e| e["details"]["action"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(actions, vec!["grow", "shrink"], "{d:?}");
    assert!(
        d[0]["details"]["average"].as_f64().unwrap_or(0.0) > grow_above,
        "{}",
        d[0]
    );
    assert_eq!(
        d[0]["details"]["values"].as_array().map(Vec::len),
        Some(3),
        "{}",
        d[0]
    );
    assert!(
        d[1]["details"]["average"].as_f64().unwrap_or(1e9) < shrink_below,
        "{}",
        d[1]
    );
    assert_eq!(
        d[1]["details"]["values"].as_array().map(Vec::len),
        Some(4),
        "{}",
        d[1]
    );
    println!(
        "decisions: grow at an average of {:.0}, shrink at {:.1}",
        d[0]["details"]["average"].as_f64().unwrap_or(0.0),
        d[1]["details"]["average"].as_f64().unwrap_or(0.0)
    );
}

struct Load(Child);

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every key of the cluster: the sum of its members' DBSIZE.
fn redis_count(server: &AllInOne, id: &str, pw: &str) -> usize {
    let v = cluster(server, id);
    let mut total = 0;
    for m in v["instances"].as_array().cloned().unwrap_or_default() {
        let at = member_at(server, m["id"].as_str().expect("id"));
        let out = Command::new("redis-cli")
            .args(["-h", &at.ip().to_string(), "-p", &at.port().to_string()])
            .args(["--no-auth-warning", "-a", pw, "DBSIZE"])
            .output()
            .expect("redis-cli");
        let text = String::from_utf8_lossy(&out.stdout);
        total += text.trim().parse::<usize>().unwrap_or_else(|_| {
            panic!(
                "DBSIZE of {at}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    }
    total
}

fn redis_autoscale(server: &AllInOne) {
    let (id, pw) = make_cluster(server, "redis");
    let members = wait_members(server, &id, 3, "built");
    let first = member_at(server, &members[0]);
    // Keys that must survive both moves.
    let fill = Command::new("redis-benchmark")
        .args([
            "--cluster",
            "-h",
            &first.ip().to_string(),
            "-p",
            &first.port().to_string(),
        ])
        .args(["-a", &pw, "-t", "set", "-n", "20000", "-r", "5000", "-q"])
        .output()
        .expect("redis-benchmark");
    assert!(
        fill.status.success(),
        "redis-benchmark: {}{}",
        String::from_utf8_lossy(&fill.stdout),
        String::from_utf8_lossy(&fill.stderr)
    );
    let keys = redis_count(server, &id, &pw);
    assert!(
        keys > 1000,
        "{keys} keys written: {}",
        String::from_utf8_lossy(&fill.stdout)
    );
    set_policy(server, &id, "ops_per_sec", 2000.0, 200.0);
    let t = Instant::now();
    let load = Load(
        Command::new("redis-benchmark")
            .args([
                "--cluster",
                "-h",
                &first.ip().to_string(),
                "-p",
                &first.port().to_string(),
            ])
            .args([
                "-a",
                &pw,
                "-t",
                "get",
                "-n",
                "100000000",
                "-r",
                "5000",
                "-c",
                "8",
                "-q",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-benchmark"),
    );
    wait_members(server, &id, 4, "grown under load");
    println!(
        "redis: grown under load {:.1} s after it started",
        t.elapsed().as_secs_f64()
    );
    drop(load);
    let t = Instant::now();
    wait_members(server, &id, 3, "shrunk after the load");
    println!(
        "redis: shrunk {:.1} s after the load stopped",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        redis_count(server, &id, &pw),
        keys,
        "keys lost across the grow and the shrink"
    );
    check_decisions(server, &id, 2000.0, 200.0);
    delete(server, &id);
}

async fn galera_rows(at: SocketAddr, pw: &str) -> Result<i64, String> {
    let mut c = SqlConn::connect(Engine::Mysql, at, "root", pw, "loadtest").await?;
    let n = c.fetch_i64("SELECT COUNT(*) FROM t").await?;
    c.close().await;
    Ok(n.unwrap_or(-1))
}

fn galera_autoscale(server: &AllInOne, rt: &tokio::runtime::Runtime) {
    let (id, pw) = make_cluster(server, "mariadb");
    let members = wait_members(server, &id, 3, "built");
    let first = member_at(server, &members[0]);
    rt.block_on(async {
        let mut c = SqlConn::connect(Engine::Mysql, first, "root", &pw, "mysql")
            .await
            .expect("root");
        c.execute("CREATE DATABASE loadtest").await.expect("db");
        c.execute("CREATE TABLE loadtest.t (n BIGINT AUTO_INCREMENT PRIMARY KEY, v INT)")
            .await
            .expect("table");
        c.close().await;
    });
    set_policy(server, &id, "ops_per_sec", 60.0, 20.0);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let t = Instant::now();
    let writer = {
        let (stop, written, pw) = (stop.clone(), written.clone(), pw.clone());
        rt.spawn(async move {
            let mut c = SqlConn::connect(Engine::Mysql, first, "root", &pw, "loadtest")
                .await
                .expect("root");
            while !stop.load(Ordering::SeqCst) {
                if c.execute("INSERT INTO t (v) VALUES (1)").await.is_ok() {
                    written.fetch_add(1, Ordering::SeqCst);
                }
            }
            c.close().await;
        })
    };
    wait_members(server, &id, 4, "grown under load");
    println!(
        "mariadb: grown under load {:.1} s after it started",
        t.elapsed().as_secs_f64()
    );
    stop.store(true, Ordering::SeqCst);
    rt.block_on(writer).expect("the writer ends");
    let t = Instant::now();
    wait_members(server, &id, 3, "shrunk after the load");
    println!(
        "mariadb: shrunk {:.1} s after the load stopped",
        t.elapsed().as_secs_f64()
    );
    let n = written.load(Ordering::SeqCst);
    let members = wait_members(server, &id, 3, "after");
    for m in &members {
        let got = rt.block_on(galera_rows(member_at(server, m), &pw));
        assert_eq!(got, Ok(n), "member {m} holds every acknowledged row");
    }
    check_decisions(server, &id, 60.0, 20.0);
    delete(server, &id);
}

#[test]
fn clusters_grow_under_real_load_and_shrink_after_it() {
    let server = AllInOne::start(&[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let only = std::env::var("CLUSTER_AUTOSCALE_DATASTORES").unwrap_or_default();
    let wanted = |ds: &str| only.is_empty() || only.split(',').any(|d| d == ds);
    if wanted("redis") {
        let t = Instant::now();
        redis_autoscale(&server);
        println!(
            "redis: autoscaling test in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    if wanted("mariadb") {
        let t = Instant::now();
        galera_autoscale(&server, &rt);
        println!(
            "mariadb: autoscaling test in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
}
