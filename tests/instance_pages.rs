//! Instance listings over HTTP are paged by the core before any view is built: `limit`/`marker` keep the
//! upstream semantics (newest first, the marker is the last id of the previous page, a `next` link only when
//! more follow), the default page is 20, and every listed row equals the instance's own show view (status,
//! datastore, configuration and replicas included). Run on the in-memory store and on SQLite.

mod api_support;

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;
use trove::control_plane::ControlPlane;
use trove::http::HttpConfig;
use trove::InMemoryParts;
use trove_core::api::CreateInstance;
use trove_core::ports::{ChangeSet, DynStore, Expect, RequestContext, SystemClock, Write};
use trove_core::CoreConfig;
use uuid::Uuid;

use api_support::{
    admin, alpha_beta_ops_tokens, seed_tiny_mysql, serve_in_process, with_fresh_pg,
    HttpClient as Client,
};

/// Instances per tenant: enough for pages past the default 20 (SQL stores) and for the parallel rendering of
/// long pages (in memory, more than the handler's 200-row threshold).
const SQLITE_COUNT: usize = 27;
const MEMORY_COUNT: usize = 230;

fn ids(page: &Value) -> Vec<String> {
    page["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("no instances array: {page}"))
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect()
}

fn next_link(page: &Value) -> Option<String> {
    let links = page.get("links")?;
    assert_eq!(links[0]["rel"], "next", "{links}");
    Some(links[0]["href"].as_str().expect("href").to_string())
}

/// Flavor, version, `count` instances of tenant alpha (no task manager: states stay as created), two of them
/// made replicas of the oldest one, and an HTTP server.
async fn setup(store: Option<DynStore>, count: usize) -> (ControlPlane, Client, Vec<Uuid>) {
    let mut b = InMemoryParts::new(CoreConfig::default(), Arc::new(SystemClock)).builder();
    if let Some(s) = store {
        b = b.store(s);
    }
    let cp = b
        .without_taskmanager()
        .without_conductor()
        .without_health_monitor()
        .start()
        .await
        .expect("control plane");
    let api = cp.api();
    seed_tiny_mysql(&api).await;
    let unlimited = [("instances", -1), ("volumes", -1), ("ram", -1)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    api.update_quota(&admin(), "alpha", unlimited)
        .await
        .expect("quota");
    let ctx = RequestContext::tenant("alpha");
    let mut created = Vec::new();
    for i in 0..count {
        let v = api
            .create_instance(
                &ctx,
                CreateInstance {
                    name: format!("db{i}"),
                    flavor_ref: Some("1".into()),
                    volume_size: Some(1),
                    datastore: Some("mysql".into()),
                    datastore_version: Some("5.7".into()),
                    ..Default::default()
                },
            )
            .await
            .expect("create");
        created.push(v.instance.id);
    }
    // Two replicas of the first instance, written straight to the store (replication itself needs guests).
    let store = cp.store();
    for r in [created[3], created[5]] {
        let mut i = store.get_instance(r).await.expect("get").expect("row");
        i.replica_of = Some(created[0]);
        let expect = Expect::Version(i.version);
        store
            .commit(ChangeSet::new().with(Write::Instance {
                instance: i,
                expect,
            }))
            .await
            .expect("make replica");
    }
    let base = serve_in_process(
        api,
        Arc::new(alpha_beta_ops_tokens()),
        HttpConfig::default(),
    )
    .await;
    (cp, Client::new(base, ""), created)
}

async fn check_pages(cp: ControlPlane, c: Client, created: Vec<Uuid>) {
    let count = created.len();
    // The whole listing in one page: every instance once, newest first, no next link.
    let (s, all) = c
        .get("/v1.0/alpha/instances/detail?limit=1000", "tok-a")
        .await;
    assert_eq!(s, 200, "{all}");
    let everything = ids(&all);
    assert_eq!(everything.len(), count);
    assert_eq!(
        everything.iter().collect::<HashSet<_>>(),
        created
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .iter()
            .collect::<HashSet<_>>()
    );
    assert!(all.get("links").is_none(), "single page: {all}");
    let created_at: Vec<&str> = all["instances"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|i| i["created"].as_str().expect("created"))
        .collect();
    assert!(
        created_at.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {created_at:?}"
    );

    // Every row of the detail listing is the instance's show view.
    for row in all["instances"].as_array().expect("rows") {
        let id = row["id"].as_str().expect("id");
        let (s, show) = c.get(&format!("/v1.0/alpha/instances/{id}"), "tok-a").await;
        assert_eq!(s, 200);
        assert_eq!(&show["instance"], row, "list row differs from show of {id}");
    }
    // The replicas are listed on their source.
    let source = all["instances"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|i| i["id"] == created[0].to_string())
        .expect("source row");
    let replicas: HashSet<&str> = source["replicas"]
        .as_array()
        .unwrap_or_else(|| panic!("replicas on the source: {source}"))
        .iter()
        .map(|r| r["id"].as_str().expect("replica id"))
        .collect();
    let (r3, r5) = (created[3].to_string(), created[5].to_string());
    assert_eq!(replicas, HashSet::from([r3.as_str(), r5.as_str()]));

    // Default page size 20, then the rest through the next link.
    let (s, p1) = c.get("/v1.0/alpha/instances", "tok-a").await;
    assert_eq!(s, 200);
    assert_eq!(ids(&p1), everything[..20].to_vec());
    let next = next_link(&p1).expect("a next link after a full default page");
    assert!(
        next.contains(&format!("marker={}", everything[19])),
        "{next}"
    );
    assert!(next.starts_with(&c.base), "{next}");
    let (s, p2) = c.get(&next, "tok-a").await;
    assert_eq!(s, 200);
    assert_eq!(ids(&p2), everything[20..count.min(40)].to_vec());
    assert_eq!(next_link(&p2).is_some(), count > 40, "{p2}");
    // The same listing, basic view, as one long page and as default pages: the same rows in the same order.
    let (_, long) = c.get("/v1.0/alpha/instances?limit=1000", "tok-a").await;
    let mut paged = Vec::new();
    let mut path = "/v1.0/alpha/instances".to_string();
    loop {
        let (s, p) = c.get(&path, "tok-a").await;
        assert_eq!(s, 200, "{p}");
        paged.extend(p["instances"].as_array().expect("rows").iter().cloned());
        match next_link(&p) {
            Some(n) => path = n,
            None => break,
        }
        assert!(paged.len() <= count, "runaway paging");
    }
    assert_eq!(long["instances"].as_array().expect("rows"), &paged);
    assert!(long.get("links").is_none(), "{long}");

    // Explicit limit and marker, walking the whole list.
    let mut walked = Vec::new();
    let mut path = "/v1.0/alpha/instances?limit=7".to_string();
    let mut pages = 0;
    loop {
        let (s, p) = c.get(&path, "tok-a").await;
        assert_eq!(s, 200, "{p}");
        let got = ids(&p);
        assert!(got.len() <= 7 && !got.is_empty(), "{p}");
        walked.extend(got.clone());
        pages += 1;
        match next_link(&p) {
            Some(n) => {
                assert!(n.contains("limit=7"), "{n}");
                assert!(n.contains(&format!("marker={}", got[got.len() - 1])), "{n}");
                path = n;
            }
            None => break,
        }
        assert!(pages <= count, "too many pages");
    }
    assert_eq!(walked, everything);
    assert_eq!(pages, count.div_ceil(7));
    // A page that exactly reaches the end has no next link.
    let (_, p) = c
        .get(
            &format!(
                "/v1.0/alpha/instances?limit=3&marker={}",
                everything[count - 4]
            ),
            "tok-a",
        )
        .await;
    assert_eq!(ids(&p), everything[count - 3..].to_vec());
    assert!(next_link(&p).is_none(), "{p}");

    // Unknown marker and bad limit are 400 faults; another tenant sees nothing.
    let (s, f) = c
        .get(
            &format!("/v1.0/alpha/instances?marker={}", Uuid::new_v4()),
            "tok-a",
        )
        .await;
    assert_eq!(s, 400, "{f}");
    let (s, _) = c.get("/v1.0/alpha/instances?limit=0", "tok-a").await;
    assert_eq!(s, 400);
    let (s, b) = c.get("/v1.0/beta/instances", "tok-b").await;
    assert_eq!(s, 200);
    assert!(ids(&b).is_empty(), "{b}");

    // The mgmt listing pages the same way.
    let mut walked = Vec::new();
    let mut path = "/v1.0/ops/mgmt/instances?project_id=alpha&limit=10".to_string();
    loop {
        let (s, p) = c.get(&path, "tok-ops").await;
        assert_eq!(s, 200, "{p}");
        walked.extend(ids(&p));
        match next_link(&p) {
            Some(n) => path = n,
            None => break,
        }
        assert!(walked.len() <= count, "runaway paging");
    }
    assert_eq!(walked, everything);
    let (s, _) = c.get("/v1.0/alpha/mgmt/instances", "tok-a").await;
    assert_eq!(s, 403);
    // The admin check comes before query faults, as before paging moved into the core.
    let (s, _) = c.get("/v1.0/alpha/mgmt/instances?limit=x", "tok-a").await;
    assert_eq!(s, 403);
    let (s, _) = c.get("/v1.0/ops/mgmt/instances?limit=x", "tok-ops").await;
    assert_eq!(s, 400);
    let (s, _) = c
        .get(
            &format!("/v1.0/ops/mgmt/instances?marker={}", Uuid::new_v4()),
            "tok-ops",
        )
        .await;
    assert_eq!(s, 400);
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_pages_in_memory() {
    let (cp, c, created) = setup(None, MEMORY_COUNT).await;
    check_pages(cp, c, created).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_pages_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = trove::backends::sql::open(&trove::backends::sql::StoreLocation::StateDir(
        dir.path().to_path_buf(),
    ))
    .await
    .expect("sqlite store");
    let (cp, c, created) = setup(Some(store), SQLITE_COUNT).await;
    check_pages(cp, c, created).await;
}

/// The same on PostgreSQL (a fresh database per run, dropped afterwards; the test fails when the server is
/// missing): covers the SQL `list_replica_ids` there too.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_pages_on_postgres() {
    with_fresh_pg(|url| async move {
        let store = trove::backends::sql::open(&trove::backends::sql::StoreLocation::Url(url))
            .await
            .expect("postgres store");
        let (cp, c, created) = setup(Some(store), SQLITE_COUNT).await;
        check_pages(cp, c, created).await;
    })
    .await;
}
