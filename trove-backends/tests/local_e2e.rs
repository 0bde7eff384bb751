//! The whole embedded path on a real engine: ApiService → TaskManager → LocalCompute + DirBlockStorage →
//! InProcessLauncher → GuestAgent → the real MariaDB strategy → Conductor → ACTIVE; then a database and a user
//! through the API, a client connecting as that user, and delete removing process, port and files.

use sqlx::{ConnectOptions, Connection, Executor, Row};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use trove_backends::local::{DirBlockStorage, LocalCompute, LocalComputeConfig};
use trove_core::api::{ApiService, CreateInstance};
use trove_core::conductor::Conductor;
use trove_core::guest_agent::InProcessLauncher;
use trove_core::memory::{MemoryBus, MemoryStore};
use trove_core::model::{DatabaseSpec, Secret, UserSpec};
use trove_core::ports::{StrategyFactory, SystemClock};
use trove_core::state::TaskStatus;
use trove_core::taskmanager::{TaskManager, TaskManagerConfig};
use trove_core::testing::fixtures::{
    add_flavors, add_versions, eventually, flavor, tenant, version, wait_view,
};
use trove_core::CoreConfig;
use trove_guest::{EngineConfig, EngineStrategyFactory};

/// How long the engine may take for one step.
const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_create_use_delete_on_real_mariadb() {
    let dir = tempfile::Builder::new()
        .prefix("e2e")
        .tempdir()
        .expect("tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = CoreConfig {
        report_interval: Duration::from_millis(500),
        agent_call_high_timeout: Duration::from_secs(120),
        ..CoreConfig::default()
    };
    let store = Arc::new(MemoryStore::new());
    let bus = Arc::new(MemoryBus::new());
    let clock = Arc::new(SystemClock);
    let engines: Arc<dyn StrategyFactory> =
        Arc::new(EngineStrategyFactory::new(EngineConfig::default()));
    let launcher = Arc::new(InProcessLauncher::new(
        bus.clone(),
        clock.clone(),
        engines.clone(),
        config.report_interval,
    ));
    let mut cc = LocalComputeConfig::single(dir.path());
    cc.port_min = 36000 + (std::process::id() % 100) as u16 * 20;
    cc.port_max = cc.port_min + 19;
    let compute = Arc::new(
        LocalCompute::open(cc, launcher.clone())
            .expect("compute")
            .with_engines(engines.clone()),
    );
    let volumes = Arc::new(DirBlockStorage::open(dir.path().join("volumes")).expect("volumes"));
    let (stop, rx) = watch::channel(false);
    let conductor = Conductor::new(store.clone(), bus.clone(), clock.clone(), None);
    let rx2 = rx.clone();
    tokio::spawn(async move { conductor.run(rx2).await });
    let tm = TaskManager::new(
        store.clone(),
        bus.clone(),
        compute.clone(),
        volumes.clone(),
        clock.clone(),
        config.clone(),
        TaskManagerConfig {
            poll_interval: Duration::from_millis(10),
            ..TaskManagerConfig::default()
        },
    );
    tokio::spawn(async move { tm.run(rx).await });
    let api = ApiService::new(store.clone(), bus.clone(), clock.clone(), config);
    add_versions(&api, [version("mariadb", "10.11", true)]).await;
    add_flavors(&api, [flavor("1", "small", 256, 1)]).await;

    let t1 = tenant("t1");
    let started = Instant::now();
    let created = api
        .create_instance(
            &t1,
            CreateInstance {
                name: "db1".into(),
                flavor_ref: Some("1".into()),
                volume_size: Some(1),
                datastore: Some("mariadb".into()),
                databases: vec![DatabaseSpec {
                    name: "shop".into(),
                    character_set: None,
                    collate: None,
                }],
                ..Default::default()
            },
        )
        .await
        .expect("create");
    let id = created.instance.id;
    let v = wait_view(&api, &t1, id, "ACTIVE", WAIT, |v| {
        v.status == "ACTIVE" && v.instance.task == TaskStatus::None
    })
    .await;
    eprintln!("POST /instances to ACTIVE: {:?}", started.elapsed());
    let port = v.instance.port.expect("the view shows the engine port");
    let addr = v
        .instance
        .addresses
        .first()
        .map(|a| a.address.clone())
        .expect("the view shows the address");
    // An address of the instance's own with MariaDB's standard port (the default address pool).
    assert!(
        addr.starts_with("127.") && addr != "127.0.0.1",
        "{addr} is not an address of the instance's own"
    );
    assert_eq!(port, 3306);

    // A user through the API, then a client connecting as that user.
    api.create_users(
        &t1,
        id,
        vec![UserSpec {
            name: "app".into(),
            password: Secret::new("app-pw-1"),
            host: None,
            databases: vec!["shop".into()],
        }],
    )
    .await
    .expect("create user");
    let mut c = sqlx::mysql::MySqlConnectOptions::new()
        .host(&addr)
        .port(port)
        .username("app")
        .password("app-pw-1")
        .database("shop")
        .connect()
        .await
        .expect("the user connects to the instance");
    c.execute("CREATE TABLE t (v INT)").await.expect("create");
    c.execute("INSERT INTO t VALUES (42)")
        .await
        .expect("insert");
    let n: i32 = c.fetch_one("SELECT v FROM t").await.expect("select").get(0);
    assert_eq!(n, 42);
    c.close().await.expect("close");

    // Delete: the process, the port and the files go.
    api.delete_instance(&t1, id).await.expect("delete");
    eventually(
        "the instance is deleted",
        Duration::from_secs(60),
        || async {
            match api.show_instance(&t1, id).await {
                Ok(v) => Err(v.status),
                Err(_) => Ok(()),
            }
        },
    )
    .await;
    eventually(
        "the engine leaves its port",
        Duration::from_secs(10),
        || async {
            match std::net::TcpStream::connect((addr.as_str(), port)) {
                Ok(_) => Err(format!("{addr}:{port} still answers")),
                Err(_) => Ok(()),
            }
        },
    )
    .await;
    assert!(
        !dir.path().join("servers").join(id.to_string()).exists(),
        "server directory left"
    );
    assert!(
        !dir.path().join("volumes").join(id.to_string()).exists(),
        "volume left"
    );
    let _ = stop.send(true);
}
