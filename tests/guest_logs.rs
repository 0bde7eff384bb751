//! Guest logs (`GET`/`POST /v1.0/{tenant}/instances/{id}/log`) through the REST API.
//!
//! On the REAL engines (embedded deployment: SQLite store, local-process compute, in-process guests publishing to
//! the filesystem backup store): MariaDB (`mysql`) and PostgreSQL expose their logs Disabled; enabling `general`
//! makes the engine log the statements a user runs (Ready, bytes pending); publishing copies them into the object
//! store (Published; the object holds the user's statements); more statements show Partial; logging stays on
//! across an engine restart; disabling stops the growth; discarding deletes the published objects. Redis exposes
//! no log. Bad input (unknown log, two actions, a non-UUID id, another tenant's instance) gets its fault.
//!
//! On the in-memory control plane (simulated engines): the upstream sample bodies, the 422 of an instance whose
//! engine is down, and the 501 of a guest without a log store.
//!
//! The engine tests take the same cross-process lock as `tests/engines_api.rs` and run one at a time (real engines
//! on a small machine). Heartbeats and the supervisor are slowed down in the
//! engine tests: their probes are sessions like any other, which a general log records, and the statuses checked
//! here must only move by the test's own statements.

mod api_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use uuid::Uuid;

use trove::backends::auth::NoAuth;
use trove::control_plane::{ControlPlane, InMemoryParts};
use trove::core::api::InstanceView;
use trove::core::model::{Secret, UserSpec};
use trove::core::ports::{DynBackupStore, SystemClock};
use trove::core::CoreConfig;
use trove::http::HttpConfig;

use api_support::{
    add_flavors, add_versions, api_sample, app_execute, endpoint, engine_instance, eventually,
    idle_healthy, serve_in_process, t1, tiny_flavor, version, wait_view, Engine, EngineEnv,
    HttpClient, SqlConn,
};

/// How long any single wait may take (generous: the machine is shared and loaded).
const WAIT: Duration = Duration::from_secs(60);
/// The container guests publish to.
const CONTAINER: &str = "database_logs";

// ------------------------------------------------------------------ HTTP

/// The log routes of project `t1`.
struct Http(HttpClient);

impl Http {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.0.send(method, path, body.as_ref()).await
    }

    async fn list(&self, id: Uuid) -> Vec<Value> {
        let (s, b) = self
            .send("GET", &format!("/v1.0/t1/instances/{id}/log"), None)
            .await;
        assert_eq!(s, 200, "list logs: {b}");
        b["logs"].as_array().expect("a logs array").clone()
    }

    /// `POST /log` with `body`; the answer's status and body.
    async fn action(&self, id: Uuid, body: Value) -> (u16, Value) {
        self.send("POST", &format!("/v1.0/t1/instances/{id}/log"), Some(body))
            .await
    }

    /// `POST /log` that must succeed; the log view.
    async fn log(&self, id: Uuid, body: Value) -> Value {
        let (s, b) = self.action(id, body.clone()).await;
        assert_eq!(s, 200, "{body} answered {s}: {b}");
        b["log"].clone()
    }
}

/// A view's byte count (`published`/`pending` are strings).
fn bytes(view: &Value, field: &str) -> u64 {
    view[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {view}"))
        .parse()
        .unwrap_or_else(|e| panic!("{field} of {view}: {e}"))
}

/// Every field of a log view is a string, and the names follow `<id>/<manager>-<log>`.
fn check_view_shape(v: &Value, id: Uuid, manager: &str, name: &str) {
    for f in [
        "name",
        "type",
        "status",
        "published",
        "pending",
        "container",
        "prefix",
        "metafile",
    ] {
        assert!(v[f].is_string(), "{f} is not a string in {v}");
    }
    assert_eq!(v["name"], name, "{v}");
    assert_eq!(v["type"], "USER", "{v}");
    assert_eq!(
        v["metafile"],
        format!("{id}/{manager}-{name}_metafile"),
        "{v}"
    );
    if bytes(v, "published") > 0 {
        assert_eq!(v["container"], CONTAINER, "{v}");
        assert_eq!(v["prefix"], format!("{id}/{manager}-{name}/"), "{v}");
    } else {
        assert_eq!(v["container"], "None", "{v}");
        assert_eq!(v["prefix"], "None", "{v}");
    }
}

// ------------------------------------------------------------------ the object store

async fn read_object(store: &DynBackupStore, key: &str) -> Vec<u8> {
    let mut s = store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("object {key}: {e}"));
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend(c.expect("object chunk"));
    }
    out
}

/// The published parts of a log, concatenated, and how many there are.
async fn published_text(store: &DynBackupStore, view: &Value) -> (String, usize) {
    let prefix = format!("{CONTAINER}/{}", view["prefix"].as_str().expect("prefix"));
    let parts = store.list(&prefix).await.expect("list parts");
    let mut all = Vec::new();
    for p in &parts {
        all.extend(read_object(store, &p.key).await);
    }
    (String::from_utf8_lossy(&all).into_owned(), parts.len())
}

// ------------------------------------------------------------------ the embedded deployment

struct Env {
    engines: EngineEnv,
    http: Http,
    store: DynBackupStore,
}

impl Env {
    async fn start() -> Env {
        // Guests report right after prepare and restart; periodic probes (which a general log would record) are
        // kept out of the test's way.
        let engines = EngineEnv::start_with(|opts| {
            opts.config = CoreConfig {
                report_interval: Duration::from_secs(600),
                agent_heartbeat_expiry: Duration::from_secs(3600),
                ..opts.config.clone()
            };
            opts.supervise_interval = Duration::from_secs(600);
        })
        .await;
        let store = engines
            .control_plane()
            .backup_store()
            .expect("the embedded deployment has a backup store");
        let base = serve_in_process(
            engines.api.clone(),
            Arc::new(NoAuth::new()),
            HttpConfig::default(),
        )
        .await;
        Env {
            engines,
            http: Http(HttpClient::new(base, "t")),
            store,
        }
    }

    async fn stop(self) {
        self.engines.stop().await;
    }

    /// Creates an instance of `ds` (with database `shop` and user `app` for SQL engines) and waits for HEALTHY.
    async fn instance(&self, ds: &str, sql: bool) -> (Uuid, SocketAddr) {
        let created = self
            .engines
            .api
            .create_instance(&t1(), engine_instance(&format!("{ds}-logs"), ds, sql))
            .await
            .expect("create");
        let id = created.instance.id;
        let v = self.wait_healthy(id, "HEALTHY after create").await;
        (id, endpoint(&v.instance))
    }

    async fn wait_healthy(&self, id: Uuid, what: &str) -> InstanceView {
        wait_view(&self.engines.api, &t1(), id, what, WAIT, idle_healthy).await
    }
}

// ------------------------------------------------------------------ clients of the engines

/// Runs `statements` as user `app` on database `shop`, over TCP like any client.
async fn run_sql(kind: Engine, at: SocketAddr, statements: &[String]) {
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    app_execute(kind, at, &statements).await;
}

/// A setting as the user sees it (MariaDB: an integer; PostgreSQL: text).
async fn setting(kind: Engine, at: SocketAddr, query: &str) -> String {
    let mut c = SqlConn::app(kind, at).await;
    let v = match kind {
        Engine::Mysql => c
            .fetch_i64(query)
            .await
            .map(|v| v.expect("a row").to_string()),
        _ => c.fetch_text(query).await,
    }
    .unwrap_or_else(|e| panic!("{e}"));
    c.close().await;
    v
}

fn marker(tag: &str) -> String {
    format!("{tag}-{}", Uuid::new_v4().simple())
}

// ------------------------------------------------------------------ the scenario on a SQL engine

/// The whole life of the `general` log of a SQL instance, through the REST API.
async fn general_log_scenario(env: &Env, ds: &str, kind: Engine, logs: &[&str]) {
    let (id, at) = env.instance(ds, true).await;
    let h = &env.http;
    let mut t = Instant::now();
    let mut step = |what: &str| {
        eprintln!("[{ds}] {what}: {:.2?}", t.elapsed());
        t = Instant::now();
    };

    // ---- the exposed logs, all off.
    let listed = h.list(id).await;
    let names: Vec<&str> = listed.iter().filter_map(|l| l["name"].as_str()).collect();
    assert_eq!(names, logs, "{listed:?}");
    for (l, name) in listed.iter().zip(logs) {
        check_view_shape(l, id, ds, name);
        assert_eq!(l["status"], "Disabled", "{l}");
        assert_eq!(l["published"], "0", "{l}");
    }
    let before_enable = bytes(&listed[0], "pending");

    // ---- enable: the engine logs what a user runs.
    let v = h.log(id, json!({"name": "general", "enable": 1})).await;
    check_view_shape(&v, id, ds, "general");
    // Not `Enabled`: MariaDB opens its general log with a header, PostgreSQL's server log has its start-up lines.
    assert_eq!(v["status"], "Ready", "{v}");
    step("enable general");
    let m1 = marker("first");
    let q1 = vec![
        "CREATE TABLE IF NOT EXISTS t (v VARCHAR(64))".to_string(),
        format!("INSERT INTO t VALUES ('{m1}')"),
        format!("SELECT '{m1}'"),
    ];
    run_sql(kind, at, &q1).await;
    // A user created through the API while the log is on: its password never reaches the log.
    env.engines
        .api
        .create_users(
            &t1(),
            id,
            vec![UserSpec {
                name: "auditor".into(),
                password: Secret::new("Never-In-Logs-7q"),
                host: None,
                databases: vec!["shop".into()],
            }],
        )
        .await
        .expect("create a user while the log is on");
    let v = h.log(id, json!({"name": "general"})).await;
    assert_eq!(v["status"], "Ready", "{v}");
    let pending = bytes(&v, "pending");
    assert!(
        pending > before_enable + m1.len() as u64,
        "the user's statements are pending: {v}"
    );
    assert_eq!(v["published"], "0");

    // ---- publish: everything written so far goes to the object store.
    let started = Instant::now();
    let v = h.log(id, json!({"name": "general", "publish": 1})).await;
    let took = started.elapsed();
    check_view_shape(&v, id, ds, "general");
    assert_eq!(v["status"], "Published", "{v}");
    assert_eq!(v["pending"], "0", "{v}");
    let published1 = bytes(&v, "published");
    assert!(published1 >= pending, "{v}");
    let (text, parts) = published_text(&env.store, &v).await;
    assert_eq!(parts, 1, "one part per publish");
    assert_eq!(text.len() as u64, published1);
    assert!(
        text.contains(&format!("INSERT INTO t VALUES ('{m1}')")),
        "the published log holds the user's statement: {text}"
    );
    assert!(
        !text.contains("Never-In-Logs-7q"),
        "a password reached the published log: {text}"
    );
    if kind == Engine::Postgres {
        // The guest's own sessions (here: its wait for the reload after enabling) are not logged.
        assert!(
            !text.contains("pg_conf_load_time"),
            "the guest's own statements are in the log: {text}"
        );
    }
    let meta = read_object(
        &env.store,
        &format!("{CONTAINER}/{}", v["metafile"].as_str().unwrap()),
    )
    .await;
    let meta: Value = serde_json::from_slice(&meta).expect("the metafile is JSON");
    assert_eq!(meta["log_size"], published1, "{meta}");
    eprintln!("[{ds}] publish of {published1} bytes took {took:.2?}");
    step("run SQL, publish");

    // ---- more statements: Partial.
    let m2 = marker("second");
    run_sql(kind, at, &[format!("SELECT '{m2}'")]).await;
    let v = h.log(id, json!({"name": "general"})).await;
    assert_eq!(v["status"], "Partial", "{v}");
    assert_eq!(bytes(&v, "published"), published1);
    assert!(bytes(&v, "pending") > m2.len() as u64, "{v}");

    // ---- logging stays on across a restart of the engine.
    env.engines
        .api
        .restart_instance(&t1(), id)
        .await
        .expect("restart");
    env.wait_healthy(id, "HEALTHY after restart").await;
    let (query, on) = match kind {
        Engine::Mysql => ("SELECT CAST(@@global.general_log AS SIGNED)", "1"),
        _ => ("SHOW log_statement", "all"),
    };
    assert_eq!(
        setting(kind, at, query).await,
        on,
        "logging is on after the restart"
    );
    let m3 = marker("after-restart");
    run_sql(kind, at, &[format!("SELECT '{m3}'")]).await;
    let v = h.log(id, json!({"name": "general", "publish": 1})).await;
    assert_eq!(v["status"], "Published", "{v}");
    let published2 = bytes(&v, "published");
    assert!(published2 > published1, "{v}");
    let (text, parts) = published_text(&env.store, &v).await;
    assert_eq!(parts, 2, "a second publish adds a second part");
    assert_eq!(text.len() as u64, published2);
    assert!(text.contains(&m2) && text.contains(&m3), "{text}");
    step("Partial, restart, publish again");

    // ---- a bigger log: the figure of a publish of a few MB.
    let filler = "x".repeat(1000);
    let batch: Vec<String> = (0..2000)
        .map(|i| format!("SELECT '{i}-{filler}'"))
        .collect();
    run_sql(kind, at, &batch).await;
    let v = h.log(id, json!({"name": "general"})).await;
    let big = bytes(&v, "pending");
    assert!(big > 2_000_000, "{v}");
    let started = Instant::now();
    let v = h.log(id, json!({"name": "general", "publish": 1})).await;
    let took = started.elapsed();
    assert_eq!(v["status"], "Published", "{v}");
    assert_eq!(bytes(&v, "published"), published2 + big);
    eprintln!(
        "[{ds}] publish of {:.2} MB took {took:.2?}",
        big as f64 / 1_048_576.0
    );
    let published3 = bytes(&v, "published");
    step("publish 2 MB");

    // ---- disable: the engine stops logging.
    let v = h.log(id, json!({"name": "general", "disable": 1})).await;
    assert_eq!(v["status"], "Disabled", "{v}");
    let off = match kind {
        Engine::Mysql => "0",
        _ => "none",
    };
    assert_eq!(setting(kind, at, query).await, off, "logging is off");
    let size_off = bytes(&v, "published") + bytes(&v, "pending");
    let m4 = marker("while-off");
    run_sql(kind, at, &[format!("SELECT '{m4}'")]).await;
    let v = h.log(id, json!({"name": "general"})).await;
    assert_eq!(v["status"], "Disabled", "{v}");
    if kind == Engine::Mysql {
        // MariaDB's general log is its own file: nothing more is written to it.
        assert_eq!(
            bytes(&v, "published") + bytes(&v, "pending"),
            size_off,
            "{v}"
        );
    }

    // ---- discard: the published objects go.
    let v = h.log(id, json!({"name": "general", "discard": 1})).await;
    check_view_shape(&v, id, ds, "general");
    assert_eq!(v["published"], "0", "{v}");
    assert_eq!(v["prefix"], "None", "{v}");
    assert!(bytes(&v, "pending") >= published3, "{v}");
    let left = env
        .store
        .list(&format!("{CONTAINER}/{id}/"))
        .await
        .expect("list");
    assert!(left.is_empty(), "objects left after discard: {left:?}");
    step("disable, discard");

    // ---- every other exposed log can be turned on and off too.
    for name in &logs[1..] {
        let v = h.log(id, json!({"name": name, "enable": 1})).await;
        assert_ne!(v["status"], "Disabled", "{v}");
        let v = h.log(id, json!({"name": name, "disable": 1})).await;
        assert_eq!(v["status"], "Disabled", "{v}");
    }

    // ---- bad input.
    let (s, b) = h.action(id, json!({"name": "audit"})).await;
    assert_eq!(s, 404, "unknown log: {b}");
    assert!(b["itemNotFound"].is_object(), "{b}");
    // Flags combine as the client's `log set --discard --publish` sends them: discard, then publish afresh.
    let (s, b) = h
        .action(id, json!({"name": "general", "discard": 1, "publish": 1}))
        .await;
    assert_eq!(s, 200, "discard then publish: {b}");
    assert_eq!(
        b["log"]["container"], "database_logs",
        "published again: {b}"
    );
    let (s, b) = h
        .action(id, json!({"name": "general", "enable": 1, "disable": 1}))
        .await;
    assert_eq!(s, 400, "enable and disable: {b}");
    let (s, b) = h.action(id, json!({"enable": 1})).await;
    assert_eq!(s, 400, "no name: {b}");
    let (s, b) = h
        .send("GET", "/v1.0/t1/instances/not-a-uuid/log", None)
        .await;
    assert_eq!(s, 404, "non-UUID id: {b}");
    let (s, b) = h
        .send("GET", &format!("/v1.0/t2/instances/{id}/log"), None)
        .await;
    assert_eq!(s, 404, "another tenant's instance: {b}");
    let (s, b) = h
        .send(
            "POST",
            &format!("/v1.0/t2/instances/{id}/log"),
            Some(json!({"name": "general"})),
        )
        .await;
    assert_eq!(s, 404, "another tenant's instance: {b}");
    step("faults");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_general_log_through_the_api() {
    let env = Env::start().await;
    general_log_scenario(&env, "mysql", Engine::Mysql, &["general", "slow_query"]).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_general_log_and_redis_without_logs_through_the_api() {
    let env = Env::start().await;
    general_log_scenario(&env, "postgresql", Engine::Postgres, &["general"]).await;

    // Redis exposes no log.
    let (id, _) = env.instance("redis", false).await;
    assert!(env.http.list(id).await.is_empty());
    let (s, b) = env.http.action(id, json!({"name": "general"})).await;
    assert_eq!(s, 404, "{b}");
    env.stop().await;
}

// ------------------------------------------------------------------ the in-memory control plane

async fn in_memory() -> (ControlPlane, InMemoryParts, Http) {
    let config = CoreConfig {
        report_interval: Duration::from_millis(100),
        ..CoreConfig::default()
    };
    let parts = InMemoryParts::new(config, Arc::new(SystemClock));
    let cp = parts.builder().start().await.expect("control plane");
    let api = cp.api();
    add_flavors(&api, [tiny_flavor()]).await;
    add_versions(
        &api,
        [version("mysql", "5.7", true), version("redis", "7", true)],
    )
    .await;
    let base = serve_in_process(api, Arc::new(NoAuth::new()), HttpConfig::default()).await;
    (cp, parts, Http(HttpClient::new(base, "t")))
}

async fn create(h: &Http, ds: &str) -> Uuid {
    let (s, b) = h
        .send(
            "POST",
            "/v1.0/t1/instances",
            Some(
                json!({"instance": {"name": "db1", "flavorRef": "1", "volume": {"size": 1},
                "datastore": {"type": ds}}}),
            ),
        )
        .await;
    assert_eq!(s, 200, "create: {b}");
    let id = b["instance"]["id"].as_str().expect("id").to_string();
    h.0.wait_instance(&format!("/v1.0/t1/instances/{id}"), &["ACTIVE"], WAIT)
        .await;
    id.parse().expect("uuid")
}

/// The upstream sample requests, in the order a user would send them, on simulated engines: each answers 200
/// with the shape of the sample response, and the simulated engine's log moves through the same statuses as a
/// real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_samples_on_simulated_engines() {
    let (cp, parts, h) = in_memory().await;
    let id = create(&h, "mysql").await;
    let engine = parts.engines.engine(id);

    let listed = h.list(id).await;
    let want = api_sample("instance-log-list-response.json");
    assert_eq!(listed.len(), want["logs"].as_array().unwrap().len());
    for (got, want) in listed.iter().zip(want["logs"].as_array().unwrap()) {
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(got), keys(want), "{got} vs {want}");
        assert_eq!(got["name"], want["name"]);
        assert_eq!(got["status"], "Disabled");
        check_view_shape(got, id, "mysql", got["name"].as_str().unwrap());
    }

    let v = h
        .log(id, api_sample("instance-log-enable-request.json"))
        .await;
    assert_eq!(v["status"], "Enabled", "{v}");
    engine.query("SELECT 1");
    let v = h
        .log(id, api_sample("instance-log-show-request.json"))
        .await;
    assert_eq!(v["status"], "Ready", "{v}");
    assert_eq!(v["pending"], "15", "{v}");
    let v = h
        .log(id, api_sample("instance-log-publish-request.json"))
        .await;
    assert_eq!(
        (
            v["status"].as_str(),
            v["published"].as_str(),
            v["pending"].as_str()
        ),
        (Some("Published"), Some("15"), Some("0")),
        "{v}"
    );
    let store: DynBackupStore = parts.backup_store.clone();
    let (text, parts_n) = published_text(&store, &v).await;
    assert_eq!((text.as_str(), parts_n), ("Query\tSELECT 1\n", 1));
    engine.query("SELECT 2");
    let v = h
        .log(id, api_sample("instance-log-show-request.json"))
        .await;
    assert_eq!(v["status"], "Partial", "{v}");
    let v = h
        .log(id, api_sample("instance-log-disable-request.json"))
        .await;
    assert_eq!(v["status"], "Disabled", "{v}");
    engine.query("SELECT 3");
    assert_eq!(
        engine.log_contents("general").len(),
        30,
        "nothing logged while off"
    );
    let v = h
        .log(id, api_sample("instance-log-discard-request.json"))
        .await;
    assert_eq!(
        (
            v["published"].as_str(),
            v["pending"].as_str(),
            v["prefix"].as_str()
        ),
        (Some("0"), Some("30"), Some("None")),
        "{v}"
    );
    assert!(store
        .list(&format!("{CONTAINER}/{id}/"))
        .await
        .unwrap()
        .is_empty());

    // The engine goes down: guest-backed calls are 422 until it is back.
    engine.stop();
    eventually("422 while the engine is down", WAIT, || async {
        let (s, b) = h
            .send("GET", &format!("/v1.0/t1/instances/{id}/log"), None)
            .await;
        match s {
            422 => Ok(()),
            200 => Err(b.to_string()),
            _ => panic!("{s}: {b}"),
        }
    })
    .await;
    let (s, b) = h.action(id, json!({"name": "general"})).await;
    assert_eq!(s, 422, "{b}");

    // Redis: no logs.
    let rid = create(&h, "redis").await;
    assert!(h.list(rid).await.is_empty());
    let (s, _) = h.action(rid, json!({"name": "general", "enable": 1})).await;
    assert_eq!(s, 404);
    cp.shutdown().await;
}

/// A guest without a log store refuses to publish with a clear 501, and still lists, enables and disables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_without_a_log_store_is_refused() {
    use trove::core::guest_log::{log_action, GuestLogContext, MemoryLogs};
    use trove::core::model::{LogAction, LogActionRequest, LogStatus, Manager};
    let mem = MemoryLogs::new();
    let engine = mem.engine(Manager::Postgresql);
    let ctx = GuestLogContext {
        instance_id: Uuid::new_v4(),
        store: None,
    };
    let v = log_action(
        &engine,
        &ctx,
        &LogActionRequest::new("general", LogAction::Enable),
    )
    .await
    .expect("enable");
    assert_eq!(v.status, LogStatus::Enabled);
    let e = log_action(
        &engine,
        &ctx,
        &LogActionRequest::new("general", LogAction::Publish),
    )
    .await
    .expect_err("no store");
    assert_eq!(e.fault().status, 501);
    assert!(e.to_string().contains("no log store is configured"), "{e}");
}
