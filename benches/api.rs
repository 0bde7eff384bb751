//! API latency over loopback: `GET /instances/{id}` (show) and `GET /instances?limit=1000` (a 1,000-row page)
//! on the SQLite store, with baselines in the same run: a trivial axum handler and a handler answering a
//! precomputed body of the same size as the page, over the same HTTP client.
//!
//! `cargo bench --bench api` prints requests/s, p50 and p99 for one client (sequential requests) and for
//! 4 concurrent clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use trove::backends::sql::{self, StoreLocation};
use trove::core::api::DatastoreVersionSpec;
use trove::core::memory::NoAuth;
use trove::core::model::Flavor;
use trove::core::ports::{RequestContext, SystemClock};
use trove::core::CoreConfig;
use trove::http::{router, HttpConfig};
use trove::InMemoryParts;

#[path = "support/mod.rs"]
mod support;

const TENANT: &str = "bench";
const INSTANCES: usize = 1000;

struct Stats {
    name: String,
    clients: usize,
    requests: usize,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn report(s: &Stats) {
    println!(
        "{:<34} clients={} n={:<5} {:>9.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms",
        s.name,
        s.clients,
        s.requests,
        s.per_sec,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
}

async fn measure(
    name: &str,
    client: &reqwest::Client,
    url: &str,
    requests: usize,
    clients: usize,
) -> Stats {
    // warm-up
    for _ in 0..20 {
        let r = client
            .get(url)
            .header("X-Auth-Token", "t")
            .send()
            .await
            .expect("request");
        assert!(r.status().is_success(), "{url}: {}", r.status());
        let _ = r.bytes().await.expect("body");
    }
    let per_client = requests / clients;
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..clients {
        let client = client.clone();
        let url = url.to_string();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                let r = client
                    .get(&url)
                    .header("X-Auth-Token", "t")
                    .send()
                    .await
                    .expect("request");
                assert!(r.status().is_success());
                let _ = r.bytes().await.expect("body");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for h in handles {
        all.extend(h.await.expect("client task"));
    }
    let total = start.elapsed();
    all.sort();
    let pct = |p: f64| {
        all[((all.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(all.len() - 1)]
    };
    Stats {
        name: name.to_string(),
        clients,
        requests: all.len(),
        per_sec: all.len() as f64 / total.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
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
    let api = cp.api();
    let admin = RequestContext::admin("ops");
    api.mgmt_put_flavor(
        &admin,
        Flavor {
            id: "1".into(),
            name: "m1.tiny".into(),
            ram_mb: 512,
            vcpus: 1,
            disk_gb: 1,
            ephemeral_gb: 0,
        },
    )
    .await
    .expect("flavor");
    api.mgmt_create_datastore_version(
        &admin,
        DatastoreVersionSpec {
            datastore_name: "mysql".into(),
            name: "5.7".into(),
            manager: "mysql".into(),
            active: true,
            default: true,
            ..Default::default()
        },
    )
    .await
    .expect("version");
    let t = Instant::now();
    let id = support::create_instances(&api, TENANT, INSTANCES, "1", "5.7").await;
    let ctx = RequestContext::tenant(TENANT);
    println!(
        "created {INSTANCES} instances through ApiService on SQLite in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // The core alone (no HTTP, no rendering), to attribute the list time.
    let mut core = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let all = api.list_instances(&ctx, false).await.expect("list");
        assert_eq!(all.len(), INSTANCES);
        core.push(t.elapsed());
    }
    core.sort();
    println!(
        "ApiService::list_instances ({INSTANCES} rows, no HTTP): median {:.1} ms",
        core[5].as_secs_f64() * 1e3
    );
    // Where the core's time goes: the store queries a 1,000-row page makes, then the whole page.
    let store = cp.store();
    let filter = trove::core::model::InstanceFilter {
        tenant_id: Some(TENANT.into()),
        ..Default::default()
    };
    let rows = store.list_instances(&filter).await.expect("rows");
    let ids: Vec<uuid::Uuid> = rows.iter().map(|i| i.id).collect();
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    let (mut t_rows, mut t_status, mut t_replicas, mut t_page) = (vec![], vec![], vec![], vec![]);
    let page = trove::core::api::PageRequest::new(INSTANCES, None);
    for _ in 0..10 {
        let t = Instant::now();
        let _ = store.list_instances(&filter).await.expect("rows");
        t_rows.push(t.elapsed());
        let t = Instant::now();
        let _ = store.get_service_statuses(&ids).await.expect("statuses");
        t_status.push(t.elapsed());
        let t = Instant::now();
        let _ = store.list_replica_ids(&ids).await.expect("replicas");
        t_replicas.push(t.elapsed());
        let t = Instant::now();
        let p = api
            .list_instances_page(&ctx, false, &page)
            .await
            .expect("page");
        assert_eq!(p.items.len(), INSTANCES);
        t_page.push(t.elapsed());
    }
    println!(
        "  store: list_instances {:.1} ms, get_service_statuses {:.1} ms, list_replica_ids {:.1} ms; \
         ApiService::list_instances_page ({INSTANCES}) {:.1} ms (medians)",
        median(t_rows),
        median(t_status),
        median(t_replicas),
        median(t_page)
    );

    let page_bytes = {
        let app = router(api.clone(), Arc::new(NoAuth::new()), HttpConfig::default());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let a = l.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(l, app).await });
        let body = reqwest::get(format!(
            "http://{a}/v1.0/{TENANT}/instances?limit={INSTANCES}"
        ))
        .await
        .expect("page")
        .bytes()
        .await
        .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v["instances"].as_array().map(Vec::len),
            Some(INSTANCES),
            "a full page"
        );
        (a, body)
    };
    let (addr, body) = page_bytes;
    let body_len = body.len();
    let baseline = Router::new()
        .route(
            "/trivial",
            get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
        )
        .route(
            "/static-page",
            get(move || {
                let b = body.clone();
                async move { ([("content-type", "application/json")], b) }
            }),
        );
    let bl = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let baddr = bl.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(bl, baseline).await });

    let client = reqwest::Client::new();
    println!("page of {INSTANCES} instances: {body_len} bytes");
    let show = format!("http://{addr}/v1.0/{TENANT}/instances/{id}");
    let list = format!("http://{addr}/v1.0/{TENANT}/instances?limit={INSTANCES}");
    let trivial = format!("http://{baddr}/trivial");
    let static_page = format!("http://{baddr}/static-page");
    for clients in [1, 4] {
        report(
            &measure(
                "baseline: trivial axum handler",
                &client,
                &trivial,
                4000,
                clients,
            )
            .await,
        );
        report(&measure("show instance (SQLite)", &client, &show, 4000, clients).await);
        report(
            &measure(
                "baseline: static 1000-row body",
                &client,
                &static_page,
                400,
                clients,
            )
            .await,
        );
        report(&measure("list 1000 instances (SQLite)", &client, &list, 100, clients).await);
    }
    cp.shutdown().await;
}
