//! Read-path throughput over loopback with 16 concurrent keep-alive connections (issue 10, "speed of the read
//! path"): `GET /datastores`, `GET /datastores/{id}/versions`, `GET /flavors`, `GET /instances/{id}` and
//! `GET /instances` (default page) served by the real HTTP app on the embedded defaults (SQLite store in a temporary
//! directory, `noauth`, the default flavors, four seeded datastores with one version each, 50 instances), next to
//! a trivial axum handler returning a small JSON body, measured in the same run by the same client.
//!
//! `cargo bench --bench read_path --no-default-features --features sqlite` prints, per route, requests/s, p50,
//! p99 and the ratio of its requests/s to the trivial handler's. The server runs on its own 2-thread runtime, the
//! load (16 hyper HTTP/1.1 connections, one task each, like `wrk -t2 -c16`) on another 2-thread runtime.
//! The routes are measured in interleaved rounds (one second per route and round, after a short warm-up), so
//! that other load on the machine weighs on all of them alike. `TROVE_BENCH_SECS` sets the number of rounds,
//! i.e. the measured seconds per route (default 5);
//! `TROVE_BENCH_ONLY=TEXT` measures only the routes whose name contains `TEXT` (and the trivial handler), e.g.
//! to profile one route.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use trove::backends::sql::{self, StoreLocation};
use trove::core::manage::{Manage, VersionUpdate};
use trove::core::memory::NoAuth;
use trove::core::model::Flavor;
use trove::core::ports::SystemClock;
use trove::core::CoreConfig;
use trove::http::{router, HttpConfig};
use trove::InMemoryParts;

#[path = "support/mod.rs"]
mod support;

const TENANT: &str = "bench";
const INSTANCES: usize = 50;
const CONNECTIONS: usize = 16;

/// The flavors the all-in-one registers on first start (`trove::embedded::DEFAULT_FLAVORS`, which needs the
/// `engines` feature).
const FLAVORS: [(&str, &str, u32, u32, u32); 6] = [
    ("1", "m1.tiny", 512, 1, 1),
    ("2", "m1.small", 2048, 1, 20),
    ("3", "m1.medium", 4096, 2, 40),
    ("4", "m1.large", 8192, 4, 80),
    ("5", "m1.xlarge", 16384, 8, 160),
    ("6", "d1.micro", 256, 1, 1),
];

/// Datastores as the all-in-one seeds them for detected engines: (datastore = manager, version).
const DATASTORES: [(&str, &str); 4] = [
    ("mysql", "8.0.36"),
    ("mariadb", "10.11.6"),
    ("postgresql", "15.6"),
    ("redis", "7.0.15"),
];

/// The latencies of one route over all rounds, and the time spent measuring it.
struct Samples {
    route: String,
    latencies: Vec<Duration>,
    measured: Duration,
    /// CPU time of the server's threads (runtime workers and SQLite workers) while measuring.
    server_cpu: Duration,
}

/// CPU time (user + system) used so far by this process's server-side threads: the server runtime's workers and
/// the store's SQLite worker threads (`/proc/self/task/*/stat`; zero where that is not available).
fn server_cpu() -> Duration {
    let tick = 100.0; // USER_HZ on Linux
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        if !(comm.starts_with("server") || comm.starts_with("sqlx")) {
            continue;
        }
        // After the command: state, then fields 4.. of stat(5); utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        for i in [11, 12] {
            ticks += fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_secs_f64(ticks as f64 / tick)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

/// One keep-alive connection sending `GET path` back to back until `until`; latencies of the requests that
/// started after `from`.
async fn connection(
    addr: SocketAddr,
    path: Arc<str>,
    from: Instant,
    until: Instant,
) -> Vec<Duration> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let host = addr.to_string();
    let mut lat = Vec::with_capacity(1 << 16);
    loop {
        let t = Instant::now();
        if t >= until {
            break;
        }
        let req = hyper::Request::get(&*path)
            .header(hyper::header::HOST, &host)
            .header("X-Auth-Token", "t")
            .body(Empty::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("send");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert!(
            status.is_success(),
            "{path}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        if t >= from {
            lat.push(t.elapsed());
        }
    }
    lat
}

/// `CONNECTIONS` connections on `path` for `warmup` (not recorded) then `secs`; the latencies.
async fn measure(addr: SocketAddr, path: &str, warmup: Duration, secs: Duration) -> Vec<Duration> {
    let path: Arc<str> = path.into();
    let from = Instant::now() + warmup;
    let until = from + secs;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(connection(addr, path.clone(), from, until)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("connection task"));
    }
    all
}

/// Seeds the store as the all-in-one does on first start, then creates the instances through `ApiService`;
/// returns (a datastore id, an instance id).
async fn seed(cp: &trove::ControlPlane) -> (String, String) {
    let manage = Manage::new(cp.store());
    for (id, name, ram_mb, vcpus, disk_gb) in FLAVORS {
        manage
            .flavor_create(&Flavor {
                id: id.into(),
                name: name.into(),
                ram_mb,
                vcpus,
                disk_gb,
                ephemeral_gb: 0,
            })
            .await
            .expect("flavor");
    }
    for (ds, version) in DATASTORES {
        let req = VersionUpdate::new(ds, version, ds, "/usr/bin", "", "1").expect("version");
        manage
            .datastore_version_update(&req)
            .await
            .expect("version");
        manage.datastore_update(ds, version).await.expect("default");
    }
    let api = cp.api();
    let last = support::create_instances(&api, TENANT, INSTANCES, "2", "8.0.36").await;
    let ds = cp
        .store()
        .get_datastore("mysql")
        .await
        .expect("get")
        .expect("mysql");
    (ds.id.to_string(), last.to_string())
}

fn main() {
    let secs: f64 = std::env::var("TROVE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()
        .expect("server runtime");
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("client")
        .enable_all()
        .build()
        .expect("client runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cp, app_addr, trivial_addr, ds_id, instance_id) = server.block_on(async {
        let store = sql::open(&StoreLocation::StateDir(dir.path().to_path_buf()))
            .await
            .expect("sqlite store");
        // Only the API is measured: no task manager picks up the create workflows.
        let cp = InMemoryParts::new(CoreConfig::default(), Arc::new(SystemClock))
            .builder()
            .store(store)
            .without_taskmanager()
            .without_conductor()
            .without_health_monitor()
            .start()
            .await
            .expect("control plane");
        let (ds_id, instance_id) = seed(&cp).await;
        let app = router(cp.api(), Arc::new(NoAuth::new()), HttpConfig::default());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let app_addr = l.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(l, app).await });
        let trivial = Router::new().route(
            "/trivial",
            get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let trivial_addr = l.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(l, trivial).await });
        (cp, app_addr, trivial_addr, ds_id, instance_id)
    });

    let load_before = loadavg();
    let routes: Vec<(&str, SocketAddr, String)> = vec![
        ("trivial axum handler", trivial_addr, "/trivial".into()),
        (
            "GET /datastores",
            app_addr,
            format!("/v1.0/{TENANT}/datastores"),
        ),
        (
            "GET /datastores/{id}/versions",
            app_addr,
            format!("/v1.0/{TENANT}/datastores/{ds_id}/versions"),
        ),
        ("GET /flavors", app_addr, format!("/v1.0/{TENANT}/flavors")),
        (
            "GET /instances/{id}",
            app_addr,
            format!("/v1.0/{TENANT}/instances/{instance_id}"),
        ),
        (
            "GET /instances",
            app_addr,
            format!("/v1.0/{TENANT}/instances"),
        ),
    ];
    let only = std::env::var("TROVE_BENCH_ONLY").unwrap_or_default();
    let routes: Vec<_> = routes
        .into_iter()
        .filter(|(r, _, _)| r.starts_with("trivial") || r.contains(only.as_str()))
        .collect();
    // Interleaved rounds of one second per route, so that other load on the machine (the shared cores) weighs
    // on every route alike and the ratios to the trivial handler stay meaningful.
    let mut samples: Vec<Samples> = routes
        .iter()
        .map(|(r, _, _)| Samples {
            route: r.to_string(),
            latencies: Vec::new(),
            measured: Duration::ZERO,
            server_cpu: Duration::ZERO,
        })
        .collect();
    for (_, addr, path) in &routes {
        client.block_on(measure(
            *addr,
            path,
            Duration::ZERO,
            Duration::from_millis(500),
        ));
    }
    let rounds = secs.ceil().max(1.0) as usize;
    for _ in 0..rounds {
        for ((_, addr, path), s) in routes.iter().zip(&mut samples) {
            let slice = Duration::from_secs(1);
            let cpu = server_cpu();
            let lat = client.block_on(measure(*addr, path, Duration::from_millis(100), slice));
            s.server_cpu += server_cpu().saturating_sub(cpu);
            s.latencies.extend(lat);
            s.measured += slice;
        }
    }
    let load_after = loadavg();
    let rate = |s: &Samples| s.latencies.len() as f64 / s.measured.as_secs_f64();
    let trivial = rate(&samples[0]);
    println!(
        "read path: {CONNECTIONS} keep-alive connections, {rounds} interleaved rounds of 1 s per route, SQLite store, \
         {INSTANCES} instances"
    );
    println!(
        "{:<30} {:>9} {:>10} {:>9} {:>9} {:>8} {:>14}",
        "route", "requests", "req/s", "p50 ms", "p99 ms", "ratio", "server CPU/req"
    );
    for s in &mut samples {
        s.latencies.sort();
        let all = &s.latencies;
        let pct = |p: f64| {
            all[((all.len() as f64 * p).ceil() as usize)
                .saturating_sub(1)
                .min(all.len() - 1)]
        };
        println!(
            "{:<30} {:>9} {:>10.0} {:>9.3} {:>9.3} {:>7.2}x {:>11.1} us",
            s.route,
            all.len(),
            rate(s),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            rate(s) / trivial,
            // The warm-up of each slice (0.1 s) is included in the CPU time but not in the requests.
            s.server_cpu.as_secs_f64() * 1e6
                / (rate(s) * (s.measured.as_secs_f64() + 0.1 * rounds as f64))
        );
    }
    println!("load average (1, 5, 15 min): before {load_before}, after {load_after}");
    server.block_on(cp.shutdown());
}
