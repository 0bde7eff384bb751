//! LocalCompute: the core's Compute conformance suite, ports, re-adoption, and a real engine's whole life.

use async_trait::async_trait;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

use trove_backends::local::{DirBlockStorage, LocalCompute, LocalComputeConfig, LocalHost};
use trove_core::memory::RecordingLauncher;
use trove_core::model::Manager;
use trove_core::ports::{
    BlockStorage, Compute, DynCompute, GuestLauncher, GuestSpec, PrepareRequest, StrategyFactory,
};
use trove_core::state::{ServerStatus, ServiceStatus};
use trove_core::testing::fixtures::eventually;
use trove_core::testing::{compute::run_all, sample_server_spec};
use trove_guest::{EngineConfig, EngineStrategyFactory};

fn tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("lc")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// A configuration whose port range and address pool nobody else in this test binary uses (tests run in
/// parallel).
fn config(dir: &Path, hosts: usize, slot: u16) -> LocalComputeConfig {
    let port_min = range_base(slot);
    LocalComputeConfig {
        address_pool: Some(pool_of(slot)),
        hosts: (0..hosts)
            .map(|i| LocalHost {
                name: format!("h{i}"),
                root: dir.join(format!("h{i}")),
            })
            .collect(),
        port_min,
        port_max: port_min + 200,
        crash_report_grace: Duration::from_millis(300),
        ..LocalComputeConfig::default()
    }
}

/// A port range nobody else in this test binary uses.
fn range_base(slot: u16) -> u16 {
    30000 + (std::process::id() % 50) as u16 * 600 + slot * 200
}

/// An address block nobody else in this test binary uses.
fn pool_of(slot: u16) -> String {
    format!("127.{}.{slot}.0/24", 100 + std::process::id() % 100)
}

fn server_dirs(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|h| h.path().is_dir())
                .map(|h| std::fs::read_dir(h.path()).map(|r| r.count()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn passes_the_compute_suite_on_three_hosts() {
    let dir = tempdir();
    let launcher = RecordingLauncher::new();
    let compute =
        LocalCompute::open(config(dir.path(), 3, 0), Arc::new(launcher.clone())).expect("open");
    run_all(Arc::new(compute) as DynCompute, &launcher).await;
    assert_eq!(
        server_dirs(dir.path()),
        0,
        "the suite's servers left directories behind"
    );
    assert!(launcher.running().is_empty());
}

#[tokio::test]
async fn passes_the_compute_suite_on_one_host() {
    let dir = tempdir();
    let launcher = RecordingLauncher::new();
    let compute =
        LocalCompute::open(config(dir.path(), 1, 1), Arc::new(launcher.clone())).expect("open");
    run_all(Arc::new(compute) as DynCompute, &launcher).await;
    assert_eq!(server_dirs(dir.path()), 0);
}

#[tokio::test]
async fn without_a_pool_ports_are_unique_recorded_and_survive_reopen() {
    let dir = tempdir();
    let base = range_base(2);
    let cfg = LocalComputeConfig {
        address_pool: None,
        ..config(dir.path(), 2, 2)
    };
    let launcher = RecordingLauncher::new();
    let compute = LocalCompute::open(cfg.clone(), Arc::new(launcher.clone())).expect("open");
    // Something else holds the third port of the range: it must be skipped. (When another process holds it
    // already, e.g. as the ephemeral port of a connection, it is just as unusable and the check is the same.)
    let squatter = std::net::TcpListener::bind(("127.0.0.1", base + 2)).ok();
    let mut servers = Vec::new();
    for _ in 0..4 {
        let spec = sample_server_spec(Manager::Mariadb);
        servers.push(compute.create_server(&spec).await.expect("create"));
    }
    let mut ports: Vec<u16> = servers.iter().map(|s| s.port.expect("port")).collect();
    assert!(
        !ports.contains(&(base + 2)),
        "a port in use by someone else was handed out: {ports:?}"
    );
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 4, "ports collide");
    for s in &servers {
        assert_eq!(s.addresses[0].address, "127.0.0.1");
        assert_eq!(s.status, ServerStatus::Active);
        assert_eq!(
            launcher.spec(s.instance_id).expect("guest").port,
            s.port.expect("port")
        );
        let rec = dir
            .path()
            .join(&s.host)
            .join(s.instance_id.to_string())
            .join("server.json");
        let text = std::fs::read_to_string(&rec).expect("server record");
        assert!(
            text.contains(&format!("\"port\": {}", s.port.expect("port"))),
            "{text}"
        );
    }
    // Without locality, servers spread over the hosts.
    assert!(servers.iter().any(|s| s.host == "h0") && servers.iter().any(|s| s.host == "h1"));
    drop(squatter);

    // A restarted control plane finds every server again, with its host and port.
    drop(compute);
    let reopened = LocalCompute::open(cfg, Arc::new(launcher.clone())).expect("reopen");
    for s in &servers {
        assert_eq!(
            reopened
                .get_server(s.instance_id)
                .await
                .expect("get")
                .as_ref(),
            Some(s)
        );
    }
    let adopted = reopened.adopt_all().await;
    assert_eq!(adopted.len(), 4);
    let fresh = reopened
        .create_server(&sample_server_spec(Manager::Redis))
        .await
        .expect("create");
    assert!(
        !servers.iter().any(|s| s.port == fresh.port),
        "a reopened compute reused a port"
    );
    for s in servers.iter().chain([&fresh]) {
        reopened.delete_server(s.instance_id).await.expect("delete");
    }
    assert_eq!(server_dirs(dir.path()), 0);
}

#[tokio::test]
async fn each_server_gets_an_address_of_its_own_with_the_engine_standard_port() {
    let dir = tempdir();
    let cfg = config(dir.path(), 2, 5);
    let launcher = RecordingLauncher::new();
    let compute = LocalCompute::open(cfg.clone(), Arc::new(launcher.clone())).expect("open");
    let pool = compute
        .address_pool()
        .expect("Linux routes all of 127.0.0.0/8 to the loopback device");
    let specs: Vec<_> = [
        Manager::Mariadb,
        Manager::Postgresql,
        Manager::Redis,
        Manager::Mysql,
    ]
    .into_iter()
    .map(sample_server_spec)
    .collect();
    // Something else listens on the standard port of the first address the first server would get: skipped.
    let first_try = pool
        .candidates(specs[0].instance_id.as_u128())
        .next()
        .expect("an address");
    let squatter = std::net::TcpListener::bind((first_try, 3306)).expect("bind");
    let mut servers = Vec::new();
    for spec in &specs {
        servers.push(compute.create_server(spec).await.expect("create"));
    }
    let addrs: Vec<std::net::Ipv4Addr> = servers
        .iter()
        .map(|s| s.addresses[0].address.parse().expect("an IPv4 address"))
        .collect();
    assert!(addrs.iter().all(|a| pool.contains(*a)), "{addrs:?}");
    assert_ne!(
        addrs[0], first_try,
        "an address whose port is taken was handed out"
    );
    let mut distinct = addrs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "addresses collide: {addrs:?}");
    let ports: Vec<u16> = servers.iter().map(|s| s.port.expect("port")).collect();
    assert_eq!(ports, [3306, 5432, 6379, 3306]);
    for s in &servers {
        let guest = launcher.spec(s.instance_id).expect("guest");
        assert_eq!(guest.bind_address, s.addresses[0].address);
        assert_eq!(Some(guest.port), s.port);
        let rec = dir
            .path()
            .join(&s.host)
            .join(s.instance_id.to_string())
            .join("server.json");
        let text = std::fs::read_to_string(&rec).expect("server record");
        assert!(text.contains(&s.addresses[0].address), "{text}");
    }
    drop(squatter);

    // A restarted control plane finds every server with its address; a new server never gets one of theirs.
    drop(compute);
    let reopened = LocalCompute::open(cfg, Arc::new(launcher.clone())).expect("reopen");
    for s in &servers {
        assert_eq!(
            reopened
                .get_server(s.instance_id)
                .await
                .expect("get")
                .as_ref(),
            Some(s)
        );
    }
    let mut fresh = Vec::new();
    for _ in 0..8 {
        let f = reopened
            .create_server(&sample_server_spec(Manager::Redis))
            .await
            .expect("create");
        assert!(
            !servers
                .iter()
                .chain(&fresh)
                .any(|s| s.addresses == f.addresses),
            "an address was handed out twice: {:?}",
            f.addresses
        );
        fresh.push(f);
    }
    for s in servers.iter().chain(&fresh) {
        reopened.delete_server(s.instance_id).await.expect("delete");
    }
    assert_eq!(server_dirs(dir.path()), 0);
}

#[tokio::test]
async fn a_standard_port_taken_on_every_address_tried_gives_a_port_of_its_own() {
    let dir = tempdir();
    // A /29: seven usable addresses, fewer than the compute tries for the standard port.
    let pool = format!("127.{}.7.0/29", 100 + std::process::id() % 100);
    let cfg = LocalComputeConfig {
        address_pool: Some(pool.clone()),
        ..config(dir.path(), 1, 7)
    };
    let compute =
        LocalCompute::open(cfg.clone(), Arc::new(RecordingLauncher::new())).expect("open");
    let squatters: Vec<std::net::TcpListener> = (1..=7)
        .map(|i| {
            let a = format!("127.{}.7.{i}", 100 + std::process::id() % 100);
            std::net::TcpListener::bind((a.as_str(), 5432)).expect("bind")
        })
        .collect();
    let s = compute
        .create_server(&sample_server_spec(Manager::Postgresql))
        .await
        .expect("create");
    let addr: std::net::Ipv4Addr = s.addresses[0].address.parse().expect("address");
    assert!(
        compute.address_pool().expect("pool").contains(addr),
        "{addr} not in {pool}"
    );
    let port = s.port.expect("port");
    assert!(
        (cfg.port_min..=cfg.port_max).contains(&port),
        "port {port} is not from the range"
    );
    drop(squatters);
    compute.delete_server(s.instance_id).await.expect("delete");
}

#[tokio::test]
async fn availability_zone_is_a_host() {
    let dir = tempdir();
    let compute = LocalCompute::open(config(dir.path(), 3, 3), Arc::new(RecordingLauncher::new()))
        .expect("open");
    let mut spec = sample_server_spec(Manager::Postgresql);
    spec.availability_zone = Some("h2".into());
    assert_eq!(
        compute.create_server(&spec).await.expect("create").host,
        "h2"
    );
    let mut bad = sample_server_spec(Manager::Postgresql);
    bad.availability_zone = Some("nowhere".into());
    assert_eq!(
        compute
            .create_server(&bad)
            .await
            .expect_err("unknown zone")
            .fault()
            .status,
        400
    );
    assert_eq!(
        compute.get_server(bad.instance_id).await.expect("get"),
        None
    );
    compute
        .delete_server(spec.instance_id)
        .await
        .expect("delete");
}

#[test]
fn bad_configurations_are_refused() {
    let dir = tempdir();
    let l: Arc<dyn GuestLauncher> = Arc::new(RecordingLauncher::new());
    assert!(
        LocalCompute::open(LocalComputeConfig::default(), l.clone()).is_err(),
        "no hosts"
    );
    let mut twice = config(dir.path(), 1, 6);
    twice.hosts.push(twice.hosts[0].clone());
    assert!(
        LocalCompute::open(twice, l.clone()).is_err(),
        "a host twice"
    );
    let mut ports = config(dir.path(), 1, 6);
    ports.port_max = ports.port_min - 1;
    assert!(
        LocalCompute::open(ports, l.clone()).is_err(),
        "empty port range"
    );
    for pool in ["10.1.0.0/16", "127.0.0.1/32", "127.5.0.0", "127.5.0.9/24"] {
        let cfg = LocalComputeConfig {
            address_pool: Some(pool.into()),
            ..config(dir.path(), 1, 6)
        };
        let e = LocalCompute::open(cfg, l.clone()).expect_err(pool);
        assert_eq!(e.fault().status, 400, "{pool}: {e}");
        assert!(e.to_string().contains(pool), "{pool}: {e}");
    }
}

/// A launcher that does what a guest agent's prepare does: run the engine (prepared once) for the server.
#[derive(Clone)]
struct EngineLauncher {
    factory: Arc<EngineStrategyFactory>,
    running: Arc<Mutex<Vec<Uuid>>>,
}

#[async_trait]
impl GuestLauncher for EngineLauncher {
    async fn launch(&self, spec: &GuestSpec) -> trove_core::Result<()> {
        let s = self.factory.strategy(spec)?;
        if s.status().await.status == ServiceStatus::New {
            s.prepare(&PrepareRequest {
                memory_mb: spec.flavor.ram_mb,
                volume_size_gb: Some(1),
                databases: vec![],
                users: vec![],
                root_password: None,
                overrides: Default::default(),
                restore: None,
            })
            .await?;
        }
        let mut r = self.running.lock().expect("lock");
        if !r.contains(&spec.instance_id) {
            r.push(spec.instance_id);
        }
        Ok(())
    }

    async fn stop(&self, instance_id: Uuid) -> trove_core::Result<()> {
        self.running
            .lock()
            .expect("lock")
            .retain(|i| *i != instance_id);
        Ok(())
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rfind(')')
                .map(|i| !s[i + 1..].trim_start().starts_with(['Z', 'X']))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

fn engine_pid(server_dir: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(server_dir.join("engine/redis.pid")).ok()?;
    s.trim().parse().ok().filter(|p| alive(*p))
}

fn listening(addr: &str, port: u16) -> bool {
    let ip: std::net::IpAddr = addr.parse().expect("an IP address");
    std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_millis(200)).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_engine_create_reboot_crash_readopt_delete() {
    let dir = tempdir();
    let cfg = config(dir.path(), 2, 4);
    let factory = Arc::new(EngineStrategyFactory::new(EngineConfig::default()));
    let launcher = EngineLauncher {
        factory: factory.clone(),
        running: Arc::default(),
    };
    let volumes = DirBlockStorage::open(dir.path().join("volumes")).expect("volumes");
    let compute = LocalCompute::open(cfg.clone(), Arc::new(launcher.clone()))
        .expect("open")
        .with_engines(factory.clone() as Arc<dyn StrategyFactory>);

    let mut spec = sample_server_spec(Manager::Redis);
    let vol = volumes
        .create_volume(spec.instance_id, 1, None)
        .await
        .expect("volume");
    spec.volume_path = Some(vol.path.clone());
    let server = compute.create_server(&spec).await.expect("create");
    let port = server.port.expect("port");
    let addr = server.addresses[0].address.clone();
    assert_eq!(port, 6379, "Redis listens on its standard port");
    assert!(
        addr.starts_with(&format!("127.{}.4.", 100 + std::process::id() % 100)),
        "{addr} is not from the pool"
    );
    let server_dir = dir
        .path()
        .join(&server.host)
        .join(spec.instance_id.to_string());
    assert!(
        listening(&addr, port),
        "the engine listens on the server's address and port"
    );
    let pid = engine_pid(&server_dir).expect("engine runs");
    let (used, _) = volumes.usage(spec.instance_id).await.expect("usage");
    assert!(used > 0, "the engine's data is on the volume");

    // Reboot restarts the engine.
    compute
        .reboot_server(spec.instance_id)
        .await
        .expect("reboot");
    let pid2 = engine_pid(&server_dir).expect("engine runs after reboot");
    assert_ne!(pid, pid2, "reboot restarts the engine");
    assert!(!alive(pid));

    // A crashed engine is restarted by the supervisor, within a bound.
    std::process::Command::new("kill")
        .args(["-9", &pid2.to_string()])
        .status()
        .expect("kill");
    let t = Instant::now();
    while alive(pid2) {
        assert!(t.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let strategy = factory.strategy(&GuestSpec {
        instance_id: spec.instance_id,
        datastore_version: spec.datastore_version.clone(),
        flavor: spec.flavor.clone(),
        server_dir: server_dir.clone(),
        volume_path: spec.volume_path.clone(),
        bind_address: addr.clone(),
        port,
    });
    let strategy = strategy.expect("strategy");
    assert_eq!(strategy.status().await.status, ServiceStatus::Crashed);
    // The crash is left visible for the grace period (so the guest reports it), then the engine is restarted.
    let noticed = Instant::now();
    assert!(compute.supervise_once().await.is_empty());
    assert_eq!(strategy.status().await.status, ServiceStatus::Crashed);
    eventually(
        "the supervisor restarts the engine once the grace is over",
        cfg.crash_report_grace + Duration::from_secs(10),
        || async {
            match compute.supervise_once().await {
                r if r == vec![spec.instance_id] => {
                    assert!(
                        noticed.elapsed() >= cfg.crash_report_grace,
                        "restarted within the grace"
                    );
                    Ok(())
                }
                r if r.is_empty() => Err("not restarted yet".to_string()),
                r => panic!("the supervisor restarted {r:?}"),
            }
        },
    )
    .await;
    assert_eq!(strategy.status().await.status, ServiceStatus::Healthy);
    let pid3 = engine_pid(&server_dir).expect("restarted");

    // The control plane restarts: the server and its running engine are found again, not duplicated.
    drop(compute);
    let compute = LocalCompute::open(cfg, Arc::new(launcher.clone()))
        .expect("reopen")
        .with_engines(factory.clone() as Arc<dyn StrategyFactory>);
    assert_eq!(
        compute.get_server(spec.instance_id).await.expect("get"),
        Some(server.clone())
    );
    assert_eq!(compute.adopt_all().await, vec![spec.instance_id]);
    assert_eq!(
        engine_pid(&server_dir),
        Some(pid3),
        "the running engine is adopted, not restarted"
    );

    // Resize records the flavor.
    let mut bigger = spec.flavor.clone();
    bigger.ram_mb = 1024;
    compute
        .resize_server(spec.instance_id, &bigger)
        .await
        .expect("resize");
    let rec = std::fs::read_to_string(server_dir.join("server.json")).expect("record");
    assert!(rec.contains("\"ram_mb\": 1024"), "{rec}");

    // Delete removes the process, the port and the files.
    compute
        .delete_server(spec.instance_id)
        .await
        .expect("delete");
    assert!(!alive(pid3), "the engine survived the delete");
    assert!(!listening(&addr, port), "the port is still served");
    assert!(!server_dir.exists(), "the server directory is left");
    volumes
        .delete_volume(spec.instance_id)
        .await
        .expect("delete volume");
    assert!(!vol.path.exists());
}
