//! The distributed deployment end to end: `trove-api`, `trove-taskmanager`, `trove-conductor` as separate
//! processes (examples, built once by `cargo test`), a fresh PostgreSQL database (dropped afterwards) and a
//! private RabbitMQ node (the test restarts it; the shared broker on 5672 is never touched). The task manager's
//! local compute starts one `trove-guestagent` process per instance, running a real MariaDB.
//!
//! Checked, in order: create through the REST API → ACTIVE with signed heartbeats arriving; a report signed with
//! a wrong key is rejected and logged without any key; a broker restart → everything reconnects, no instance
//! turns ERROR and no heartbeat gap exceeds the expiry; `kill -9` of the task manager during a create → a new one
//! finishes it; a `kill -9`ed guest agent is relaunched; delete stops the guest processes. Apart: `trove-api` with
//! `[api] tls_cert`/`tls_key` serves HTTPS, and refuses to start with a key that is not the certificate's. And
//! secrets at rest: passwords given as probe strings (users at create and through the API, a root password) under
//! debug logs of every role and guest; after stopping everything no probe is in the deployment's directory (state,
//! role and guest logs), the private RabbitMQ node's directory, a pg_dump of the trove database or the PostgreSQL
//! files that hold it (its directory under `base/`, and `pg_wal`); the broker password (a probe too) is only in the
//! guests' own 0600 files; a restart of every role still creates with the sealing key, and the passwords still log
//! in.
//!
//! The kill -9 sweep of a create (issue 14, the distributed half of `tests/kill_anywhere.rs`): the task manager
//! dies (SIGKILL, by itself) instead of one of its journal writes and a new one takes over after its lease, or the
//! guest agent dies once inside its engine's prepare and the task manager relaunches it; the instance must become
//! ACTIVE with the user given at create, and its delete must leave no process and nothing named after it. Each
//! case prints its convergence time and how often the task manager asked the guest to prepare again (a relaunched
//! agent mostly finishes the prepare the broker redelivers to it: the agent acknowledges a request only once it is
//! done). CI runs a subset on MariaDB (journal writes 4 and 6, `prepare:after_init`); `TROVE_KILL_SWEEP=full` runs
//! every point on MariaDB, PostgreSQL and Redis, `TROVE_KILL_ONLY=<text>` only the cases whose description
//! contains the text. The full sweep runs longer than the default nextest profile allows a test:
//! `TROVE_KILL_SWEEP=full cargo nextest run --profile sweep --all-features --test distributed --no-capture
//! create_converges`.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust), RabbitMQ's server binaries and MariaDB; it fails
//! (never skips) when they are missing. Run: `cargo test --features postgres,amqp` or the nextest run of
//! `tests/run.sh` (both build the examples). With a `--test distributed` filter cargo does NOT rebuild the
//! examples: build them first (`cargo build --features postgres,amqp --examples`).

mod api_support;
#[path = "../trove-amqp/tests/common/mod.rs"]
#[allow(unused_imports)]
mod broker;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trove::backends::local::KEY_FILE;
use trove::backends::sql::{self, StoreLocation};
use trove::core::api::ApiService;
use trove::core::memory::MemoryBus;
use trove::core::model::Secret;
use trove::core::ports::{DynStore, MessageBus, SystemClock};
use trove::core::rpc::{ConductorRequest, Envelope, CONDUCTOR_TOPIC};
use trove::core::state::ServiceStatus;
use trove::core::CoreConfig;
use uuid::Uuid;

use api_support::{
    add_flavors, add_versions, engines_under, eventually, example_binary, flavor, free_port,
    https_addr, https_get_async, named_after, tls_material, version, FreshPg, HttpClient,
    KillGuard,
};

const REPORT_INTERVAL_SECS: f64 = 0.5;
const HEARTBEAT_EXPIRY_SECS: u64 = 20;

/// One role process; killed (SIGKILL) on drop.
struct Role {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Role {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    /// The exit status when the process ended (by itself: a kill point), `None` while it runs.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Deployment {
    dir: PathBuf,
    env: Vec<(String, String)>,
    api: HttpClient,
}

impl Deployment {
    /// Starts a role and waits for its readiness line in its output.
    fn start(&self, role: &str, tag: &str, extra_env: &[(&str, &str)]) -> Role {
        let log = self.dir.join(format!("{role}-{tag}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(example_binary(role))
            .arg("--config")
            .arg(self.dir.join("trove.toml"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("start {role}: {e}"));
        let mut r = Role {
            name: format!("{role} ({tag})"),
            child,
            log,
        };
        let start = Instant::now();
        let ready = if role == "trove-api" {
            "listening on"
        } else {
            ": ready"
        };
        while !r.log().contains(ready) {
            r.assert_running();
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} not ready:\n{}",
                r.name,
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.api.send(method.as_str(), path, body.as_ref()).await
    }

    async fn create(&self, name: &str) -> Uuid {
        self.post_create(json!({"instance": {
            "name": name, "flavorRef": "1", "volume": {"size": 1},
            "datastore": {"type": "mariadb", "version": "10.11"}
        }}))
        .await
    }

    /// Posts a create request; answers the new instance's id.
    async fn post_create(&self, create: Value) -> Uuid {
        let (status, body) = self
            .request(reqwest::Method::POST, "/v1.0/t1/instances", Some(create))
            .await;
        assert_eq!(status, 200, "create: {body}");
        body["instance"]["id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .unwrap_or_else(|| panic!("no id in {body}"))
    }

    /// Deletes the instances one after another, each gone (404) before the next.
    async fn delete_in_order(&self, ids: &[Uuid]) {
        for id in ids {
            let (code, _) = self
                .request(
                    reqwest::Method::DELETE,
                    &format!("/v1.0/t1/instances/{id}"),
                    None,
                )
                .await;
            assert_eq!(code, 202);
            let start = Instant::now();
            while self.status(*id).await.0 != 404 {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "instance {id} not deleted"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    async fn status(&self, id: Uuid) -> (u16, String) {
        let (code, body) = self
            .request(
                reqwest::Method::GET,
                &format!("/v1.0/t1/instances/{id}"),
                None,
            )
            .await;
        (
            code,
            body["instance"]["status"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    }

    async fn wait_active(&self, id: Uuid, limit: Duration, roles: &mut [&mut Role]) {
        self.wait_view(id, limit, roles, "instance", "ACTIVE", |i| {
            i["status"] == "ACTIVE"
        })
        .await;
    }

    /// Polls instance `id` until `done` holds for its view (`what` names it in messages, `who` the case); panics
    /// when it shows an error, when one of `roles` exited, or after `limit`.
    async fn wait_view(
        &self,
        id: Uuid,
        limit: Duration,
        roles: &mut [&mut Role],
        who: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) {
        let start = Instant::now();
        loop {
            let (code, body) = self
                .request(
                    reqwest::Method::GET,
                    &format!("/v1.0/t1/instances/{id}"),
                    None,
                )
                .await;
            assert_eq!(code, 200, "{who}: show {id}: {body}");
            let i = &body["instance"];
            if done(i) {
                return;
            }
            let status = i["status"].as_str().unwrap_or_default();
            assert!(
                !status.contains("ERROR") && status != "FAILED",
                "{who}: instance {id} turned {status}: {body}"
            );
            for r in roles.iter_mut() {
                r.assert_running();
            }
            assert!(
                start.elapsed() < limit,
                "{who}: instance {id} not {what} after {limit:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn heartbeat_at(
    store: &DynStore,
    id: Uuid,
) -> Option<(ServiceStatus, chrono::DateTime<chrono::Utc>)> {
    store
        .get_service_status(id)
        .await
        .expect("read service status")
        .map(|r| (r.status, r.updated_at))
}

/// Waits until a heartbeat newer than `after` arrives.
async fn next_heartbeat(
    store: &DynStore,
    id: Uuid,
    after: Option<chrono::DateTime<chrono::Utc>>,
    limit: Duration,
) -> chrono::DateTime<chrono::Utc> {
    let start = Instant::now();
    loop {
        if let Some((status, at)) = heartbeat_at(store, id).await {
            if after.is_none_or(|a| at > a) {
                assert_eq!(status, ServiceStatus::Healthy, "heartbeat of {id}");
                return at;
            }
        }
        assert!(
            start.elapsed() < limit,
            "no new heartbeat of {id} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// mariadb 10.11 (default), PostgreSQL and Redis at the versions installed here (when they are), and flavor 1
/// `small` (256 MB, 1 GB).
async fn seed(store: DynStore) {
    let api = ApiService::new(
        store,
        Arc::new(MemoryBus::new()),
        Arc::new(SystemClock),
        CoreConfig::default(),
    );
    add_versions(&api, [version("mariadb", "10.11", true)]).await;
    let others = trove_guest::detect_engines()
        .found
        .into_iter()
        .filter(|e| matches!(e.manager.as_str(), "postgresql" | "redis"))
        .map(|e| version(e.manager.as_str(), &e.version, true));
    add_versions(&api, others).await;
    add_flavors(&api, [flavor("1", "small", 256, 1)]).await;
}

/// Everything one run needs; dropped in field order (roles, broker, database, leftovers, files).
struct Setup {
    d: Deployment,
    rabbit: broker::PrivateBroker,
    store: DynStore,
    run: String,
    _db: FreshPg,
    _reaper: KillGuard,
    _tmp: tempfile::TempDir,
}

/// The tests share the machine's two cores: one deployment at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh database, a private broker, and the shared config file; `extra_toml` is appended to it.
async fn setup(
    port_offset: u16,
    extra_toml: impl FnOnce(&broker::PrivateBroker) -> String,
) -> Setup {
    let tmp = tempfile::Builder::new()
        .prefix("trove-dist")
        .tempdir()
        .expect("tmp");
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let dir = tmp.path().to_path_buf();
    let reaper = KillGuard(dir.clone());
    let db = FreshPg::create().await;
    let rabbit = tokio::task::spawn_blocking(broker::PrivateBroker::start)
        .await
        .expect("private broker");
    let run = Uuid::new_v4().simple().to_string();
    let api_port = free_port();
    // Each test of a run has a range of 20 ports of its own (offsets 0, 20 and 40).
    let port_min = 37000 + (std::process::id() % 50) as u16 * 60 + port_offset;
    // The shared file names the deployment; the environment overrides what is per run (as an operator would).
    std::fs::write(
        dir.join("trove.toml"),
        format!(
            "[amqp]\nport = {}\nexchange = \"trove-dist-{run}\"\n[core]\nreport_interval = {REPORT_INTERVAL_SECS}\n\
             agent_heartbeat_expiry = {HEARTBEAT_EXPIRY_SECS}\nhealth_sweep_interval = 1\n[compute]\nstate_dir = \"{}\"\n{}",
            rabbit.port,
            dir.join("state").display(),
            extra_toml(&rabbit),
        ),
    )
    .expect("config");
    let env: Vec<(String, String)> = vec![
        ("TROVE_DATABASE__URL".into(), db.url.clone()),
        (
            "TROVE_AMQP__QUEUE_PREFIX".into(),
            format!("d{}.", &run[..10]),
        ),
        ("TROVE_AMQP__RECONNECT_MAX_MS".into(), "1000".into()),
        ("TROVE_AMQP__PUBLISH_TIMEOUT_MS".into(), "60000".into()),
        ("TROVE_API__LISTEN".into(), format!("127.0.0.1:{api_port}")),
        ("TROVE_CORE__WORKFLOW_LEASE".into(), "4".into()),
        ("TROVE_CORE__AGENT_CALL_HIGH_TIMEOUT".into(), "120".into()),
        ("TROVE_COMPUTE__PORT_MIN".into(), port_min.to_string()),
        (
            "TROVE_COMPUTE__PORT_MAX".into(),
            (port_min + 19).to_string(),
        ),
        (
            "TROVE_GUEST__AGENT_PROGRAM".into(),
            example_binary("trove-guestagent").display().to_string(),
        ),
        ("RUST_LOG".into(), "info".into()),
    ];
    let store = sql::open(&StoreLocation::Url(db.url.clone()))
        .await
        .expect("open the fresh database");
    seed(store.clone()).await;
    Setup {
        d: Deployment {
            dir,
            env,
            api: HttpClient::new(format!("http://127.0.0.1:{api_port}"), "t"),
        },
        rabbit,
        store,
        run,
        _db: db,
        _reaper: reaper,
        _tmp: tmp,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_roles_as_processes_on_postgresql_and_rabbitmq() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Setup {
        d,
        mut rabbit,
        store,
        run,
        _db,
        _reaper,
        _tmp,
    } = setup(0, |_| String::new()).await;
    let dir = d.dir.clone();
    let mut conductor = d.start("trove-conductor", "1", &[]);
    let mut tm = d.start(
        "trove-taskmanager",
        "1",
        &[("TROVE_TASKMANAGER__WORKER_ID", "tm-1")],
    );
    let mut api = d.start("trove-api", "1", &[]);

    // 1. Create through the REST API → ACTIVE, with heartbeats arriving from the guest process.
    let started = Instant::now();
    let first = d.create("db1").await;
    d.wait_active(
        first,
        Duration::from_secs(120),
        &mut [&mut conductor, &mut tm, &mut api],
    )
    .await;
    eprintln!("create → ACTIVE across processes: {:?}", started.elapsed());
    let hb1 = next_heartbeat(&store, first, None, Duration::from_secs(10)).await;
    let hb2 = next_heartbeat(&store, first, Some(hb1), Duration::from_secs(10)).await;
    assert!(hb2 > hb1);
    let server_dir = dir.join("state").join("servers").join(first.to_string());
    let guest_pids = engines_under(&server_dir);
    assert!(
        !guest_pids.is_empty(),
        "a trove-guestagent process runs for the instance"
    );
    let real_key = std::fs::read_to_string(server_dir.join(KEY_FILE)).expect("guest key file");
    let mode = std::fs::metadata(server_dir.join(KEY_FILE))
        .expect("key meta")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // 2. A forged report (signed with a wrong key) claiming the engine shut down: rejected, logged without a key.
    let mut bus_cfg = broker::unique_config(rabbit.port);
    bus_cfg.exchange = format!("trove-dist-{run}");
    bus_cfg.queue_prefix = format!("d{}.", &run[..10]);
    let forger = trove_amqp::AmqpBus::connect(bus_cfg.clone())
        .await
        .expect("connect to the private broker");
    let wrong_key = Secret::new(format!("forged-key-{run}"));
    let forged = Envelope::new(
        trove::core::conductor::guest_sender(first),
        ConductorRequest::Heartbeat {
            instance_id: first,
            status: ServiceStatus::Shutdown,
            reason: Some("forged".into()),
            fs: None,
            load: None,
        },
    )
    .signed(&wrong_key)
    .expect("sign")
    .encode()
    .expect("encode");
    let (_, before_forgery) = heartbeat_at(&store, first).await.expect("status");
    forger
        .cast(CONDUCTOR_TOPIC, forged)
        .await
        .expect("cast forged");
    let start = Instant::now();
    while !conductor.log().contains("rejecting a guest report") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the conductor did not log the rejection:\n{}",
            conductor.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = conductor.log();
    assert!(
        log.contains(&first.to_string()),
        "the rejection names the instance"
    );
    assert!(
        !log.contains(wrong_key.expose()),
        "the forged key is not logged"
    );
    assert!(
        !log.contains(real_key.trim()),
        "the guest key is not logged"
    );
    let guest_log = std::fs::read_to_string(server_dir.join("guest-agent.log")).unwrap_or_default();
    assert!(
        guest_log.contains("guest agent serving"),
        "the guest agent logs: {guest_log}"
    );
    for (what, text) in [
        ("task manager", tm.log()),
        ("api", api.log()),
        ("guest agent", guest_log),
    ] {
        assert!(
            !text.contains(real_key.trim()),
            "the guest key appears in the {what} log"
        );
    }
    // The report recorded after the forgery (the conductor takes reports in order) is the guest's HEALTHY one.
    next_heartbeat(&store, first, Some(before_forgery), Duration::from_secs(10)).await;
    let (s, _) = heartbeat_at(&store, first).await.expect("status");
    assert_eq!(
        s,
        ServiceStatus::Healthy,
        "the forged SHUTDOWN report was not applied"
    );
    assert_eq!(d.status(first).await.1, "ACTIVE");
    forger.close().await;

    // 3. Broker restart: everything reconnects; no instance turns ERROR; no heartbeat gap beyond the expiry.
    let before = next_heartbeat(&store, first, None, Duration::from_secs(10)).await;
    let restart_started = Instant::now();
    let mut r2 = tokio::task::spawn_blocking(move || {
        rabbit.stop_server();
        std::thread::sleep(Duration::from_secs(1));
        rabbit.start_server();
        rabbit
    });
    let mut last = before;
    let mut max_gap = Duration::ZERO;
    let mut seen = std::collections::BTreeSet::new();
    let rabbit_back = loop {
        tokio::select! {
            r = &mut r2 => break r.expect("broker restart"),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if let Some((_, at)) = heartbeat_at(&store, first).await {
                    if at > last { last = at; }
                }
                let gap = (chrono::Utc::now() - last).to_std().unwrap_or_default();
                max_gap = max_gap.max(gap);
                // The API (store only) keeps answering, and the instance never shows an error state.
                let (code, status) = d.status(first).await;
                assert_eq!(code, 200, "the API answers during the broker outage");
                seen.insert(status);
            }
        }
    };
    rabbit = rabbit_back;
    eprintln!("broker restarted in {:?}", restart_started.elapsed());
    let after = next_heartbeat(
        &store,
        first,
        Some(last),
        Duration::from_secs(HEARTBEAT_EXPIRY_SECS),
    )
    .await;
    max_gap = max_gap.max((after - last).to_std().unwrap_or_default());
    eprintln!("largest heartbeat gap over the broker restart: {max_gap:?}; statuses seen {seen:?}");
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["ACTIVE".to_string()],
        "the instance stays ACTIVE through the broker restart"
    );
    assert!(
        max_gap < Duration::from_secs(HEARTBEAT_EXPIRY_SECS),
        "heartbeat gap {max_gap:?} exceeds the expiry"
    );
    for r in [&mut conductor, &mut tm, &mut api] {
        r.assert_running();
    }
    assert_eq!(
        d.status(first).await.1,
        "ACTIVE",
        "no ERROR after the broker restart"
    );

    // 3b. kill -9 of a guest agent: the task manager relaunches it; heartbeats resume, the instance stays ACTIVE.
    let pid_file = dir.join("state").join("run").join(format!("{first}.pid"));
    let agent_pid = |f: &Path| -> Option<u32> {
        std::fs::read_to_string(f)
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    };
    let old_pid = agent_pid(&pid_file).expect("the guest agent's pid is recorded");
    let killed = Command::new("kill")
        .args(["-KILL", &old_pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let killed_at = chrono::Utc::now();
    let start = Instant::now();
    loop {
        let new_pid = agent_pid(&pid_file);
        if new_pid
            .is_some_and(|p| p != old_pid && std::path::Path::new(&format!("/proc/{p}")).exists())
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the killed guest agent was not relaunched; task manager log:\n{}",
            tm.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    next_heartbeat(&store, first, Some(killed_at), Duration::from_secs(15)).await;
    assert_eq!(
        d.status(first).await.1,
        "ACTIVE",
        "ACTIVE after the agent restart"
    );

    // 4. kill -9 of the task manager during a create: a new one finishes it.
    let second = d.create("db2").await;
    let second_dir = dir.join("state").join("servers").join(second.to_string());
    let start = Instant::now();
    while !second_dir.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "create never reached compute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tm.kill9();
    let (_, mid) = d.status(second).await;
    eprintln!("task manager killed with the create at {mid}");
    assert_eq!(
        mid, "BUILD",
        "the create was still running when the task manager died"
    );
    let mut tm2 = d.start(
        "trove-taskmanager",
        "2",
        &[("TROVE_TASKMANAGER__WORKER_ID", "tm-2")],
    );
    d.wait_active(
        second,
        Duration::from_secs(120),
        &mut [&mut conductor, &mut tm2, &mut api],
    )
    .await;
    next_heartbeat(&store, second, None, Duration::from_secs(10)).await;
    assert_eq!(d.status(first).await.1, "ACTIVE");

    // 5. Delete both: their guest processes end.
    for id in [first, second] {
        let (code, body) = d
            .request(
                reqwest::Method::DELETE,
                &format!("/v1.0/t1/instances/{id}"),
                None,
            )
            .await;
        assert_eq!(code, 202, "delete {id}: {body}");
    }
    let start = Instant::now();
    for id in [first, second] {
        while d.status(id).await.0 != 404 {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{id} never deleted"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let state = dir.join("state");
    eventually(
        "no guest agent or engine left after delete",
        Duration::from_secs(30),
        || async {
            let left = engines_under(&state);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
    drop((api, tm2, conductor));
    drop(rabbit);
}

/// `rabbitmqctl list_users` on the private node.
fn list_users(b: &broker::PrivateBroker) -> String {
    let out = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
        .envs(b.ctl_env().iter().filter_map(|kv| kv.split_once('=')))
        .args(["-q", "list_users"])
        .output()
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl list_users: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Per-guest broker credentials in the deployment: each guest process runs with a broker user of its own, which can
/// serve its own queue and report to the conductor but cannot read another guest's queue; delete removes the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_guest_broker_users() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup(20, |b| {
        let env: Vec<String> = b.ctl_env().iter().map(|e| format!("{e:?}")).collect();
        format!(
            "[guest]\ncredentials = \"per-guest\"\nrabbitmqctl = \"/usr/lib/rabbitmq/bin/rabbitmqctl\"\n\
             rabbitmqctl_env = [{}]\n",
            env.join(", ")
        )
    })
    .await;
    let d = &s.d;
    let mut conductor = d.start("trove-conductor", "1", &[]);
    let mut tm = d.start("trove-taskmanager", "1", &[]);
    let mut api = d.start("trove-api", "1", &[]);
    let (a, b) = (d.create("ga").await, d.create("gb").await);
    for id in [a, b] {
        d.wait_active(
            id,
            Duration::from_secs(120),
            &mut [&mut conductor, &mut tm, &mut api],
        )
        .await;
        // Heartbeats travel with the guest's own user (it may publish to the conductor).
        let hb = next_heartbeat(&s.store, id, None, Duration::from_secs(10)).await;
        next_heartbeat(&s.store, id, Some(hb), Duration::from_secs(10)).await;
    }
    let guest_file = |id: Uuid| {
        trove::backends::local::GuestFile::read(
            &d.dir
                .join("state")
                .join("servers")
                .join(id.to_string())
                .join(trove::backends::local::GUEST_FILE),
        )
        .expect("guest file")
    };
    let (fa, fb) = (guest_file(a), guest_file(b));
    let mut ca: trove_amqp::AmqpConfig = serde_json::from_value(fa.bus.clone()).expect("a's bus");
    let cb: trove_amqp::AmqpConfig = serde_json::from_value(fb.bus.clone()).expect("b's bus");
    assert_eq!(ca.username, format!("trove-guest-{a}"));
    assert_eq!(cb.username, format!("trove-guest-{b}"));
    assert_ne!(ca.password.expose(), cb.password.expose());
    assert_ne!(
        ca.password.expose(),
        "guest",
        "not the control plane's password"
    );
    assert_ne!(fa.key, fb.key, "each guest signs with its own key");
    for (f, id) in [(&fa, a), (&fb, b)] {
        let mode = std::fs::metadata(f.spec.server_dir.join(trove::backends::local::GUEST_FILE))
            .expect("meta")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600,
            "guest file of {id} is private"
        );
    }
    // Guest a's user cannot read guest b's queue, nor the conductor's.
    ca.publish_timeout_ms = 3_000;
    let as_a = trove_amqp::AmqpBus::connect(ca.clone())
        .await
        .expect("a's user connects");
    let other = as_a.subscribe(&trove::core::rpc::guest_topic(b)).await;
    assert!(other.is_err(), "guest a must not consume guest b's queue");
    let cond = as_a.subscribe(CONDUCTOR_TOPIC).await;
    assert!(
        cond.is_err(),
        "guest a must not consume the conductor's queue"
    );
    as_a.close().await;
    // A report for b signed with a's (valid) key is rejected, and logged without either key.
    let mut cp_cfg = broker::unique_config(s.rabbit.port);
    cp_cfg.exchange = format!("trove-dist-{}", s.run);
    cp_cfg.queue_prefix = format!("d{}.", &s.run[..10]);
    let cp = trove_amqp::AmqpBus::connect(cp_cfg)
        .await
        .expect("control-plane user connects");
    let forged = Envelope::new(
        trove::core::conductor::guest_sender(b),
        ConductorRequest::Heartbeat {
            instance_id: b,
            status: ServiceStatus::Shutdown,
            reason: Some("forged by a".into()),
            fs: None,
            load: None,
        },
    )
    .signed(&fa.key)
    .expect("sign")
    .encode()
    .expect("encode");
    cp.cast(CONDUCTOR_TOPIC, forged).await.expect("cast");
    let start = Instant::now();
    while !conductor
        .log()
        .lines()
        .any(|l| l.contains("rejecting a guest report") && l.contains(&b.to_string()))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no rejection of the report signed by another guest:\n{}",
            conductor.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = conductor.log();
    assert!(
        !log.contains(fa.key.expose()) && !log.contains(fb.key.expose()),
        "a key was logged"
    );
    cp.close().await;
    // b is still served and reporting, and was never marked shut down.
    let (st, _) = heartbeat_at(&s.store, b).await.expect("status of b");
    assert_eq!(st, ServiceStatus::Healthy);
    let hb = next_heartbeat(&s.store, b, None, Duration::from_secs(10)).await;
    next_heartbeat(&s.store, b, Some(hb), Duration::from_secs(10)).await;

    // Delete a: its broker user is gone, b's stays.
    let (code, body) = d
        .request(
            reqwest::Method::DELETE,
            &format!("/v1.0/t1/instances/{a}"),
            None,
        )
        .await;
    assert_eq!(code, 202, "delete: {body}");
    let start = Instant::now();
    while d.status(a).await.0 != 404 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{a} never deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let users = list_users(&s.rabbit);
    assert!(
        !users.contains(&format!("trove-guest-{a}")),
        "a's user left: {users}"
    );
    assert!(
        users.contains(&format!("trove-guest-{b}")),
        "b's user missing: {users}"
    );
    let gone = trove_amqp::AmqpBus::connect(ca).await;
    assert!(gone.is_err(), "a's credentials no longer connect");
    assert_eq!(d.status(b).await.1, "ACTIVE");
    drop((api, tm, conductor));
}

// ------------------------------------------------------------------ kill -9 sweep of a create

/// Where the create of a sweep case dies.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// The task manager dies instead of its N-th journal write (create: volume 1-2, server 3-4, prepare 5-6,
    /// wait_healthy 7-8; each step's `Started` then `Completed`).
    TaskManager(u32),
    /// The guest agent dies once at this point of its engine's prepare.
    Guest(&'static str),
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kill::TaskManager(n) => write!(f, "task manager killed before journal write {n}"),
            Kill::Guest(p) => write!(f, "guest agent killed at prepare:{p}"),
        }
    }
}

const PREPARE_POINTS: [&str; 5] = [
    "after_init",
    "after_start",
    "after_bootstrap",
    "after_seed",
    "after_prepared",
];

/// One case of the sweep: a create on datastore `ds`, killed at `kill`.
#[derive(Debug, Clone, Copy)]
struct KillCase {
    ds: &'static str,
    kill: Kill,
}

impl std::fmt::Display for KillCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "create on {}, {}", self.ds, self.kill)
    }
}

/// The sweep's cases: a representative subset on MariaDB (the kill points are the same code on every engine; the
/// engines' own prepare after a kill is swept by `tests/kill_anywhere.rs`), or every point on MariaDB, PostgreSQL
/// and Redis with `TROVE_KILL_SWEEP=full`; only those whose description contains `TROVE_KILL_ONLY` when it is set.
fn kill_cases() -> Vec<KillCase> {
    let full = std::env::var("TROVE_KILL_SWEEP").is_ok_and(|v| v == "full");
    let mut out: Vec<KillCase> = if full {
        ["mariadb", "postgresql", "redis"]
            .into_iter()
            .flat_map(|ds| {
                (1..=8)
                    .map(Kill::TaskManager)
                    .chain(PREPARE_POINTS.map(Kill::Guest))
                    .map(move |kill| KillCase { ds, kill })
            })
            .collect()
    } else {
        [
            Kill::TaskManager(4),
            Kill::TaskManager(6),
            Kill::Guest("after_init"),
        ]
        .map(|kill| KillCase {
            ds: "mariadb",
            kill,
        })
        .to_vec()
    };
    if let Ok(only) = std::env::var("TROVE_KILL_ONLY") {
        if !only.is_empty() {
            out.retain(|k| k.to_string().contains(&only));
        }
    }
    out
}

/// The user (and its database) given at create in the sweep.
const KILL_USER: (&str, &str) = ("app", "app-Pw-1x");
/// The bound on a case's convergence (the create's own duration on 2 loaded cores, plus the dead task manager's
/// lease or the guest's relaunch).
const KILL_CONVERGE: Duration = Duration::from_secs(120);

impl Deployment {
    /// Creates an instance of datastore `ds` (its default version) named `name` with the sweep's user and, on SQL
    /// engines, its database `shop`.
    async fn create_with_user(&self, ds: &str, name: &str) -> Uuid {
        let mut create = json!({"instance": {
            "name": name, "flavorRef": "1", "volume": {"size": 1},
            "datastore": {"type": ds},
            "users": [{"name": KILL_USER.0, "password": KILL_USER.1}],
        }});
        if ds != "redis" {
            create["instance"]["databases"] = json!([{"name": "shop"}]);
            create["instance"]["users"][0]["databases"] = json!([{"name": "shop"}]);
        }
        self.post_create(create).await
    }

    /// Polls instance `id` until it is ACTIVE and HEALTHY; panics when it shows an error, when one of `roles`
    /// exited, or after `limit`.
    async fn wait_healthy(&self, id: Uuid, limit: Duration, roles: &mut [&mut Role], case: &str) {
        self.wait_view(id, limit, roles, case, "ACTIVE and HEALTHY", |i| {
            i["status"] == "ACTIVE" && i["operating_status"] == "HEALTHY"
        })
        .await;
    }
}

/// How a case converged: the time from the kill to ACTIVE, and how many times the task manager that finished the
/// create asked the guest to prepare again because it reported waiting to be prepared.
struct Converged {
    took: Duration,
    asked_again: usize,
}

/// Runs one case of the sweep on a deployment whose conductor and API run: starts a task manager with the kill
/// point in its environment (its guest agents inherit it), creates, observes the kill, starts a new task manager
/// when the first one died, waits for ACTIVE, checks the user, deletes and checks nothing is left.
async fn create_killed_at(
    d: &Deployment,
    n: usize,
    c: KillCase,
    conductor: &mut Role,
    api: &mut Role,
) -> Converged {
    let (case, kill) = (c.to_string(), c.kill);
    let once = d.dir.join(format!("crash-once-{n}"));
    let mut env: Vec<(&str, String)> =
        vec![("TROVE_TASKMANAGER__WORKER_ID", format!("tm-kill-{n}-a"))];
    match kill {
        Kill::TaskManager(at) => env.push(("TROVE_CRASH_BEFORE_JOURNAL_WRITE", at.to_string())),
        Kill::Guest(point) => {
            env.push(("TROVE_CRASH_POINT", format!("prepare:{point}")));
            env.push(("TROVE_CRASH_ONCE", once.display().to_string()));
        }
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut tm = d.start("trove-taskmanager", &format!("kill{n}a"), &env);
    let id = d.create_with_user(c.ds, &format!("kill-{n}")).await;

    let (mut tm, killed_at) = match kill {
        Kill::TaskManager(at) => {
            // The task manager dies by itself at its kill point; the instance waits in BUILD meanwhile.
            let start = Instant::now();
            let status = loop {
                if let Some(status) = tm.exited() {
                    break status;
                }
                let (code, status) = d.status(id).await;
                assert_eq!(code, 200, "{case}: show {id}");
                assert_eq!(
                    status,
                    "BUILD",
                    "{case}: the create ended before the kill point:\n{}",
                    tm.log()
                );
                assert!(
                    start.elapsed() < KILL_CONVERGE,
                    "{case}: the kill point was never reached:\n{}",
                    tm.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let killed_at = Instant::now();
            assert!(!status.success(), "{case}: the task manager exited cleanly");
            assert!(
                tm.log()
                    .contains(&format!("injected crash (before journal write {at})")),
                "{case}: the task manager died of something else:\n{}",
                tm.log()
            );
            let worker = format!("tm-kill-{n}-b");
            let tm2 = d.start(
                "trove-taskmanager",
                &format!("kill{n}b"),
                &[("TROVE_TASKMANAGER__WORKER_ID", worker.as_str())],
            );
            (tm2, Some(killed_at))
        }
        Kill::Guest(_) => (tm, None),
    };
    d.wait_healthy(
        id,
        KILL_CONVERGE,
        &mut [&mut *conductor, &mut tm, &mut *api],
        &case,
    )
    .await;
    let took = match (kill, killed_at) {
        (_, Some(at)) => at.elapsed(),
        // The guest agent died when it created the file (just before its SIGKILL).
        (Kill::Guest(point), None) => {
            let died = std::fs::metadata(&once)
                .and_then(|m| m.modified())
                .unwrap_or_else(|e| {
                    panic!(
                        "{case}: the guest agent never reached its kill point ({e}); task manager log:\n{}",
                        tm.log()
                    )
                });
            let server_dir = d.dir.join("state").join("servers").join(id.to_string());
            let guest_log =
                std::fs::read_to_string(server_dir.join("guest-agent.log")).unwrap_or_default();
            assert_eq!(
                guest_log
                    .matches(&format!("injected crash (prepare:{point})"))
                    .count(),
                1,
                "{case}: the guest agent dies exactly once at its kill point:\n{guest_log}"
            );
            assert!(
                tm.log()
                    .contains("guest agent process is gone; relaunching it"),
                "{case}: the task manager did not relaunch the guest agent:\n{}",
                tm.log()
            );
            std::time::SystemTime::now()
                .duration_since(died)
                .unwrap_or_default()
        }
        (Kill::TaskManager(_), None) => unreachable!("a task manager kill is timed from its death"),
    };

    // The user given at create exists (the guest's seed ran to its end).
    let (code, users) = d
        .request(
            reqwest::Method::GET,
            &format!("/v1.0/t1/instances/{id}/users"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{case}: list users: {users}");
    let has_shop = |u: &Value| {
        c.ds == "redis"
            || u["databases"]
                .as_array()
                .is_some_and(|dbs| dbs.iter().any(|db| db["name"] == "shop"))
    };
    assert!(
        users["users"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u["name"] == KILL_USER.0 && has_shop(u))),
        "{case}: the user given at create (with its database) is missing: {users}"
    );

    // Delete: nothing of the instance is left (no guest agent, no engine, no file named after it).
    let (code, body) = d
        .request(
            reqwest::Method::DELETE,
            &format!("/v1.0/t1/instances/{id}"),
            None,
        )
        .await;
    assert_eq!(code, 202, "{case}: delete: {body}");
    let start = Instant::now();
    while d.status(id).await.0 != 404 {
        assert!(
            start.elapsed() < KILL_CONVERGE,
            "{case}: {id} never deleted"
        );
        tm.assert_running();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let state = d.dir.join("state");
    eventually(
        &format!("{case}: nothing left after delete"),
        Duration::from_secs(30),
        || async {
            let procs = engines_under(&state);
            let paths: Vec<String> = named_after(&state, &id.to_string())
                .into_iter()
                .chain(named_after(&state, &id.simple().to_string()))
                .collect();
            if procs.is_empty() && paths.is_empty() {
                Ok(())
            } else {
                Err(format!("processes {procs:?}, paths {paths:?}"))
            }
        },
    )
    .await;
    let asked_again = tm.log().matches("asking again").count();
    drop(tm);
    Converged { took, asked_again }
}

/// Kill -9 anywhere on the distributed deployment, for create: the task manager killed at journal writes, the
/// guest agent killed inside its prepare (see the module docs). One database and broker serve every case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_converges_when_the_task_manager_or_the_guest_agent_is_killed() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup(40, |_| String::new()).await;
    let d = &s.d;
    let mut conductor = d.start("trove-conductor", "kill", &[]);
    let mut api = d.start("trove-api", "kill", &[]);
    let cases = kill_cases();
    assert!(!cases.is_empty(), "TROVE_KILL_ONLY matches no case");
    let started = Instant::now();
    let mut longest = (Duration::ZERO, String::new());
    for (n, case) in cases.iter().enumerate() {
        let Converged { took, asked_again } =
            create_killed_at(d, n, *case, &mut conductor, &mut api).await;
        eprintln!("converged in {took:>6.2?}: {case} (prepare asked again {asked_again} time(s))");
        if took > longest.0 {
            longest = (took, case.to_string());
        }
    }
    eprintln!(
        "distributed kill sweep: {} cases, all converged, longest {:.2?} ({}), whole sweep {:.0?}",
        cases.len(),
        longest.0,
        longest.1,
        started.elapsed()
    );
    drop((api, conductor));
}

/// `trove-api` with `[api] tls_cert`/`tls_key` serves HTTPS only (it answers without a broker), and prints
/// `listening on https://ADDR`; a key that is not the certificate's refuses to start with a message naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trove_api_serves_https_from_its_config() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = tls_material(tmp.path());
    let db = FreshPg::create().await;
    let config = |name: &str, key: &Path| {
        let path = tmp.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[amqp]\nport = {}\n[api]\nlisten = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\n",
                free_port(),
                m.chain.display().to_string(),
                key.display().to_string(),
            ),
        )
        .expect("config");
        path
    };
    let api = |config: &Path, log: &Path| {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        Role {
            name: "trove-api (tls)".into(),
            child: Command::new(example_binary("trove-api"))
                .arg("--config")
                .arg(config)
                .env("TROVE_DATABASE__URL", &db.url)
                .stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .spawn()
                .expect("start trove-api"),
            log: log.to_path_buf(),
        }
    };

    let mut refused = api(
        &config("bad.toml", &m.other_key),
        &tmp.path().join("bad.log"),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = refused.exited() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "trove-api started with a key that is not the certificate's:\n{}",
            refused.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(1), "{}", refused.log());
    assert!(
        refused.log().contains(&format!(
            "TLS key {} does not match the certificate {}",
            m.other_key.display(),
            m.chain.display()
        )),
        "{}",
        refused.log()
    );

    let mut served = api(&config("good.toml", &m.key), &tmp.path().join("good.log"));
    let start = Instant::now();
    let base = loop {
        served.assert_running();
        let log = served.log();
        if let Some(at) = log.find("listening on https://") {
            let rest = &log[at + "listening on ".len()..];
            if let Some(line) = rest.lines().next().filter(|_| rest.contains('\n')) {
                break line.trim().to_string();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "trove-api not listening:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, body) = https_get_async(https_addr(&base), &m.ca, "/v1.0/t1/flavors")
        .await
        .expect("HTTPS GET");
    assert_eq!(status, 200, "{body}");
    let (status, body) = https_get_async(https_addr(&base), &m.ca, "/")
        .await
        .expect("HTTPS GET /");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("{base}/v1.0/")),
        "https links: {body}"
    );
}

/// Where the shared PostgreSQL keeps the files of database `name` (its `base/<oid>` directory) and its WAL.
async fn pg_files_of(name: &str) -> Vec<PathBuf> {
    use sqlx::{Connection, Row};
    let mut c = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .expect("connect to PostgreSQL as postgres");
    sqlx::query("CHECKPOINT")
        .execute(&mut c)
        .await
        .expect("CHECKPOINT (needs a superuser)");
    let dir: String = sqlx::query("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
        .fetch_one(&mut c)
        .await
        .expect("data_directory")
        .get(0);
    let oid: i64 = sqlx::query("SELECT oid::int8 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut c)
        .await
        .expect("database oid")
        .get(0);
    let dir = PathBuf::from(dir);
    vec![dir.join("base").join(oid.to_string()), dir.join("pg_wal")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_rests_in_clear_in_the_distributed_deployment() {
    use api_support::{files_holding, probe, Engine, SqlConn};
    let _one = ONE_AT_A_TIME.lock().await;
    let Setup {
        d,
        mut rabbit,
        store: _store,
        run: _run,
        _db,
        _reaper,
        _tmp,
    } = setup(40, |_| String::new()).await;
    // The roles reach the broker as a user whose password is a probe too (given in the environment).
    let broker_pw = probe("dist-broker");
    rabbit.ctl(&["add_user", "trove-probe", &broker_pw]);
    rabbit.ctl(&[
        "set_permissions",
        "-p",
        "/",
        "trove-probe",
        ".*",
        ".*",
        ".*",
    ]);
    let debug = [
        ("RUST_LOG", "debug"),
        ("TROVE_AMQP__USERNAME", "trove-probe"),
        ("TROVE_AMQP__PASSWORD", broker_pw.as_str()),
    ];
    let mut conductor = d.start("trove-conductor", "1", &debug);
    let mut tm = d.start("trove-taskmanager", "1", &debug);
    let mut api = d.start("trove-api", "1", &debug);
    let mut probes = Vec::new();
    let mut logins: Vec<(Uuid, String, String)> = Vec::new();

    // An instance with a user given at create; a user added and root enabled with a password through the API.
    let with_app = |name: &str, pw: &str| {
        json!({"instance": {
            "name": name, "flavorRef": "1", "volume": {"size": 1},
            "datastore": {"type": "mariadb", "version": "10.11"},
            "databases": [{"name": "shop"}],
            "users": [{"name": "app", "password": pw, "databases": [{"name": "shop"}]}],
        }})
    };
    let at_create = probe("dist-create");
    let first = d.post_create(with_app("sealed-1", &at_create)).await;
    d.wait_active(
        first,
        Duration::from_secs(120),
        &mut [&mut conductor, &mut tm, &mut api],
    )
    .await;
    logins.push((first, "app".into(), at_create.clone()));
    probes.push(at_create);
    let added = probe("dist-user");
    let (s, b) = d
        .request(
            reqwest::Method::POST,
            &format!("/v1.0/t1/instances/{first}/users"),
            Some(json!({"users": [{"name": "u2", "password": added, "databases": [{"name": "shop"}]}]})),
        )
        .await;
    assert_eq!(s, 202, "user create: {b}");
    logins.push((first, "u2".into(), added.clone()));
    probes.push(added);
    let root = probe("dist-root");
    let (s, b) = d
        .request(
            reqwest::Method::POST,
            &format!("/v1.0/t1/instances/{first}/root"),
            Some(json!({ "password": root })),
        )
        .await;
    assert_eq!(s, 200, "root enable: {b}");
    logins.push((first, "root".into(), root.clone()));
    probes.push(root);

    // A restart of every role: the new API and task manager seal and open with the same key (a create with a
    // user), and the guests answer the new roles.
    drop((conductor, tm, api));
    let mut conductor = d.start("trove-conductor", "2", &debug);
    let mut tm = d.start("trove-taskmanager", "2", &debug);
    let mut api = d.start("trove-api", "2", &debug);
    let after_restart = probe("dist-after-restart");
    let second = d.post_create(with_app("sealed-2", &after_restart)).await;
    d.wait_active(
        second,
        Duration::from_secs(120),
        &mut [&mut conductor, &mut tm, &mut api],
    )
    .await;
    logins.push((second, "app".into(), after_restart.clone()));
    probes.push(after_restart);
    for (id, user, pw) in &logins {
        let (_, body) = d
            .request(
                reqwest::Method::GET,
                &format!("/v1.0/t1/instances/{id}"),
                None,
            )
            .await;
        let at = api_support::http_endpoint(&body["instance"]);
        let db = if user == "root" { "mysql" } else { "shop" };
        eventually(
            &format!("{user} logs in on {id}"),
            Duration::from_secs(60),
            || async {
                SqlConn::connect(Engine::Mysql, at, user, pw, db)
                    .await
                    .map(|_| ())
            },
        )
        .await;
    }

    // Stop everything, then look.
    drop((conductor, tm, api));
    api_support::kill_engines_under(&d.dir);
    rabbit.stop_server();
    let dump = std::process::Command::new("pg_dump")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "--no-password",
            _db.name(),
        ])
        .output()
        .expect("run pg_dump");
    assert!(
        dump.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump_text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump_text.contains("workflows"),
        "the dump holds the trove tables"
    );
    let mut leaks: Vec<(PathBuf, String)> = probes
        .iter()
        .filter(|p| dump_text.contains(p.as_str()))
        .map(|p| (PathBuf::from("pg_dump"), p.clone()))
        .collect();
    leaks.extend(files_holding(&d.dir, &probes));
    leaks.extend(files_holding(rabbit.data_dir(), &probes));
    for dir in pg_files_of(_db.name()).await {
        leaks.extend(files_holding(&dir, &probes));
    }
    let logs: Vec<PathBuf> = std::fs::read_dir(&d.dir)
        .expect("deployment dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    assert!(
        logs.iter().any(|l| std::fs::read_to_string(l)
            .unwrap_or_default()
            .contains("DEBUG")),
        "the role logs are not at debug level: {logs:?}"
    );
    // The broker password is only in the guests' own files (mode 0600), never in a log, the store or the broker's
    // files.
    let mut broker_leaks = files_holding(&d.dir, std::slice::from_ref(&broker_pw));
    broker_leaks.retain(|(path, _)| {
        let private = path
            .file_name()
            .is_some_and(|n| n == trove::backends::local::GUEST_FILE);
        if private {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(path).expect("guest file").permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "{} is not private", path.display());
        }
        !private
    });
    broker_leaks.extend(files_holding(
        rabbit.data_dir(),
        std::slice::from_ref(&broker_pw),
    ));
    if dump_text.contains(broker_pw.as_str()) {
        broker_leaks.push((PathBuf::from("pg_dump"), broker_pw.clone()));
    }
    leaks.extend(broker_leaks);
    assert!(
        leaks.is_empty(),
        "secrets at rest in clear (file, probe): {leaks:#?}"
    );
}

/// Backups in the distributed deployment: the guest agent process streams a MariaDB backup into the store named
/// in `[backups]`, the task manager process runs the workflow and purges deleted backups' objects, and a restore
/// to a new instance holds the source's user and database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_across_processes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let backups = tempfile::tempdir().expect("backups dir");
    let bdir = backups.path().to_path_buf();
    let s = setup(40, move |_| {
        format!("[backups]\nstore = \"fs\"\ndir = \"{}\"\n", bdir.display())
    })
    .await;
    let d = &s.d;
    let mut conductor = d.start("trove-conductor", "bk", &[]);
    let mut tm = d.start("trove-taskmanager", "bk", &[]);
    let mut api = d.start("trove-api", "bk", &[]);
    let src = d.create_with_user("mariadb", "src").await;
    d.wait_healthy(
        src,
        Duration::from_secs(120),
        &mut [&mut conductor, &mut tm, &mut api],
        "source",
    )
    .await;
    let (code, b) = d
        .request(
            reqwest::Method::POST,
            "/v1.0/t1/backups",
            Some(json!({"backup": {"name": "b1", "instance": src.to_string()}})),
        )
        .await;
    assert_eq!(code, 202, "backup create: {b}");
    let bid = b["backup"]["id"].as_str().expect("backup id").to_string();
    let start = Instant::now();
    let done = loop {
        let (_, v) = d
            .request(
                reqwest::Method::GET,
                &format!("/v1.0/t1/backups/{bid}"),
                None,
            )
            .await;
        let st = v["backup"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if st == "COMPLETED" {
            break v;
        }
        assert_ne!(st, "FAILED", "{v}");
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "backup not COMPLETED: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let objects = |dir: &std::path::Path| -> usize {
        std::fs::read_dir(dir.join("database_backups"))
            .map(|r| {
                r.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".obj"))
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(objects(backups.path()), 1, "{done}");
    let copy = d
        .post_create(json!({"instance": {
            "name": "copy", "flavorRef": "1", "volume": {"size": 1},
            "datastore": {"type": "mariadb"}, "restorePoint": {"backupRef": bid},
        }}))
        .await;
    d.wait_healthy(
        copy,
        Duration::from_secs(120),
        &mut [&mut conductor, &mut tm, &mut api],
        "copy",
    )
    .await;
    let (code, users) = d
        .request(
            reqwest::Method::GET,
            &format!("/v1.0/t1/instances/{copy}/users"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{users}");
    assert!(
        users["users"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u["name"] == KILL_USER.0)),
        "the source's user is on the copy: {users}"
    );
    let (code, _) = d
        .request(
            reqwest::Method::DELETE,
            &format!("/v1.0/t1/backups/{bid}"),
            None,
        )
        .await;
    assert_eq!(code, 202);
    let start = Instant::now();
    while objects(backups.path()) != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the task manager did not purge the object"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    d.delete_in_order(&[copy, src]).await;
    drop((api, tm, conductor));
}

/// Automatic failover with the four roles as processes: a MariaDB source and a replica seeded from a backup of it
/// (taken and restored by guest agent processes), then the source's engine freezes (SIGSTOP): the task manager
/// process fences it through its guest agent and promotes the replica, which takes writes; the failover is listed
/// in the instance's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_across_processes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let backups = tempfile::tempdir().expect("backups dir");
    let bdir = backups.path().to_path_buf();
    let s = setup(40, move |_| {
        format!("[backups]\nstore = \"fs\"\ndir = \"{}\"\n", bdir.display())
    })
    .await;
    let d = &s.d;
    let mut conductor = d.start("trove-conductor", "fo", &[]);
    let mut tm = d.start("trove-taskmanager", "fo", &[]);
    let mut api = d.start("trove-api", "fo", &[]);
    let src = d.create_with_user("mariadb", "src").await;
    d.wait_healthy(
        src,
        Duration::from_secs(120),
        &mut [&mut conductor, &mut tm, &mut api],
        "source",
    )
    .await;
    let rep = d
        .post_create(json!({"instance": {"name": "rep", "replica_of": src.to_string()}}))
        .await;
    d.wait_healthy(
        rep,
        Duration::from_secs(120),
        &mut [&mut conductor, &mut tm, &mut api],
        "replica",
    )
    .await;
    let view = |id: Uuid| async move {
        let (code, v) = d
            .request(
                reqwest::Method::GET,
                &format!("/v1.0/t1/instances/{id}"),
                None,
            )
            .await;
        assert_eq!(code, 200, "{v}");
        v["instance"].clone()
    };
    assert_eq!(view(rep).await["replica_of"]["id"], src.to_string());
    let at = api_support::http_endpoint(&view(src).await);
    let pid = api_support::pid_listening_on(at).expect("the source's engine listens");
    let frozen = Instant::now();
    assert!(Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("kill")
        .success());
    loop {
        let v = view(rep).await;
        if v.get("replica_of").is_none() && v["status"] == "ACTIVE" {
            break;
        }
        assert!(
            frozen.elapsed() < Duration::from_secs(60),
            "the replica did not take over: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "failover across processes: the replica is the source {:.1} s after the freeze",
        frozen.elapsed().as_secs_f64()
    );
    let _ = Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status();
    let (code, ev) = d
        .request(
            reqwest::Method::GET,
            &format!("/v1.0/t1/instances/{rep}/events"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{ev}");
    assert_eq!(ev["events"][0]["kind"], "failover", "{ev}");
    assert_eq!(
        ev["events"][0]["details"]["new_source"],
        rep.to_string(),
        "{ev}"
    );
    assert_eq!(view(src).await["replica_of"]["id"], rep.to_string());
    // The old source is a replica of the new one now: it goes first.
    d.delete_in_order(&[src, rep]).await;
    drop((api, tm, conductor));
}
