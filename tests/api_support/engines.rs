//! Engine tests: one at a time across processes, the embedded deployment on real engines, and finding (and
//! killing) the engine processes a test started.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trove::core::api::ApiService;
use trove::core::memory::NoAuth;
use trove::core::ports::{DynStore, InfraStore};
use trove::core::CoreConfig;
use trove::embedded::{Embedded, EmbeddedOptions};
use trove::ControlPlane;

use super::processes::venv_dir;

/// A fresh state directory the engines (which run as an unprivileged user when the tests run as root) can
/// traverse: 0711, not listable by others.
pub fn engine_state_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod state dir");
    state
}

/// Kills every engine process left under `dir` ([`engines_under`]). Engines outlive the control plane on purpose;
/// a test must not leave them behind.
pub fn kill_engines_under(dir: &Path) {
    for pid in engines_under(dir) {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
}

/// A cross-process exclusive lock (a directory under `target/` holding the owner's pid): one engine test at a
/// time. A lock whose owner died is taken over.
pub struct EnginesLock(PathBuf);

impl Drop for EnginesLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn engines_lock() -> EnginesLock {
    let dir = venv_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir).expect("create the lock's parent directory");
    let path = dir.join("trove-engines-api.lock");
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        match std::fs::create_dir(&path) {
            Ok(()) => {
                std::fs::write(path.join("pid"), std::process::id().to_string())
                    .expect("write the lock owner");
                return EnginesLock(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(path.join("pid"))
                    .ok()
                    .and_then(|p| p.trim().parse::<u32>().ok());
                let young = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(10));
                let stale = match owner {
                    Some(pid) => !alive(pid),
                    None => !young,
                };
                if stale {
                    if std::fs::remove_dir_all(&path).is_err() {
                        let _ = std::fs::remove_file(&path);
                    }
                    continue;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {} (owner {owner:?})",
                    path.display()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cannot create {}: {e}", path.display()),
        }
    }
}

/// Whether `pid` runs (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next())
            .is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}

/// Engine processes a test started under `dir`: those whose command line names a path under it, or whose working
/// directory is under it (Redis rewrites its process title to `redis-server ADDR:PORT`; its working directory, the
/// data dir on the volume, still gives it away). Zombies and this process are left out.
pub fn engines_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().to_string();
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || !alive(pid) {
            continue;
        }
        let by_cmdline = std::fs::read(p.path().join("cmdline")).is_ok_and(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(&needle)
        });
        // A deleted working directory reads as "PATH (deleted)".
        let by_cwd = std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| {
            let cwd = cwd.to_string_lossy();
            Path::new(cwd.trim_end_matches(" (deleted)")).starts_with(dir)
        });
        if by_cmdline || by_cwd {
            out.push(pid);
        }
    }
    out
}

/// Kills every engine left under a state directory when dropped (pass or fail).
pub struct KillGuard(pub PathBuf);

impl Drop for KillGuard {
    fn drop(&mut self) {
        kill_engines_under(&self.0);
    }
}

/// Whether something accepts TCP connections on `at`.
pub fn listening(at: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&at, Duration::from_millis(500)).is_ok()
}

/// Whether a local address column of /proc/net/tcp or tcp6 (`HEXADDR:HEXPORT`) is `at` or a wildcard listener on
/// its port.
fn local_matches(col: &str, at: SocketAddr) -> bool {
    let Some((addr, port)) = col.rsplit_once(':') else {
        return false;
    };
    if u16::from_str_radix(port, 16).ok() != Some(at.port()) {
        return false;
    }
    if addr.chars().all(|c| c == '0') {
        return true;
    }
    // IPv4: the address as the kernel holds it (network order) printed as a native integer.
    addr.len() == 8
        && u32::from_str_radix(addr, 16)
            .is_ok_and(|v| std::net::IpAddr::from(v.to_ne_bytes()) == at.ip())
}

/// Inodes of the sockets listening on `at` (from /proc/net/tcp and tcp6).
fn listen_inodes(at: SocketAddr) -> Vec<String> {
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            // State 0A = LISTEN.
            if local_matches(cols[1], at) && cols[3] == "0A" {
                out.push(cols[9].to_string());
            }
        }
    }
    out
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The process that listens on `port` (the topmost one when children, like PostgreSQL's, share the socket).
pub fn pid_listening_on(at: SocketAddr) -> Option<u32> {
    let inodes = listen_inodes(at);
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut holders = Vec::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        if fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| l.to_str().map(|s| targets.iter().any(|t| t == s)))
                .unwrap_or(false)
        }) {
            holders.push(pid);
        }
    }
    holders
        .iter()
        .copied()
        .find(|p| ppid(*p).is_none_or(|pp| !holders.contains(&pp)))
}

/// The embedded deployment on real engines, for one engine test: it holds the engine lock for its whole life,
/// runs in a fresh state directory, and kills the engines it started when dropped (pass or fail).
pub struct EngineEnv {
    /// The API service.
    pub api: Arc<ApiService>,
    emb: Option<Embedded>,
    /// The state directory.
    pub state: tempfile::TempDir,
    _guard: KillGuard,
    _lock: EnginesLock,
}

impl EngineEnv {
    /// Starts the deployment with short heartbeats (300 ms: a crash shows within a second or two) and a long limit
    /// on the guest calls of the task manager (120 s: the machine is shared and loaded).
    pub async fn start() -> EngineEnv {
        EngineEnv::start_with(|_| {}).await
    }

    /// Starts it after `tune` adjusted those options.
    pub async fn start_with(tune: impl FnOnce(&mut EmbeddedOptions)) -> EngineEnv {
        let lock = tokio::task::spawn_blocking(engines_lock)
            .await
            .expect("lock task");
        let state = engine_state_dir();
        let guard = KillGuard(state.path().to_path_buf());
        let mut opts = EmbeddedOptions::new(state.path());
        opts.config = CoreConfig {
            report_interval: Duration::from_millis(300),
            agent_call_high_timeout: Duration::from_secs(120),
            ..CoreConfig::default()
        };
        tune(&mut opts);
        let emb = Embedded::start(opts, Arc::new(NoAuth::new()))
            .await
            .expect("the embedded deployment starts");
        EngineEnv {
            api: emb.control_plane().api(),
            emb: Some(emb),
            state,
            _guard: guard,
            _lock: lock,
        }
    }

    /// The running deployment (panics after [`EngineEnv::stop`]).
    pub fn embedded(&self) -> &Embedded {
        self.emb.as_ref().expect("the deployment runs")
    }

    /// Its control plane.
    pub fn control_plane(&self) -> &ControlPlane {
        self.embedded().control_plane()
    }

    /// Whether the deployment detected an engine for datastore `manager` on this machine.
    pub fn detected(&self, manager: &str) -> bool {
        self.embedded()
            .detection
            .found
            .iter()
            .any(|f| f.manager.as_str() == manager)
    }

    /// Waits until instance `id` has no open workflow (at most `within`), then answers its view (as `t1`).
    pub async fn settle(
        &self,
        id: uuid::Uuid,
        what: &str,
        within: Duration,
    ) -> trove::core::api::InstanceView {
        let store = self.store();
        super::waits::eventually(what, within, || async {
            let open = store.list_open_workflows().await.expect("open workflows");
            if open.iter().any(|w| w.instance_id == id) {
                Err(format!("workflows still open: {open:?}"))
            } else {
                Ok(())
            }
        })
        .await;
        self.api
            .show_instance(&super::fixtures::t1(), id)
            .await
            .expect("show")
    }

    /// Its infrastructure store.
    pub fn store(&self) -> DynStore {
        self.control_plane().store()
    }

    /// Shuts the deployment down (the engines keep running until the environment is dropped).
    pub async fn stop(mut self) {
        if let Some(e) = self.emb.take() {
            e.shutdown().await;
        }
    }
}

/// Waits until engine process `pid` is gone and nothing listens on `at` any more (at most `within`).
pub async fn wait_engine_gone(pid: u32, at: SocketAddr, within: Duration) {
    super::waits::eventually("the engine stops", within, || async {
        let (running, open) = (alive(pid), listening(at));
        if running || open {
            Err(format!(
                "engine pid {pid} alive {running}, {at} listening {open}"
            ))
        } else {
            Ok(())
        }
    })
    .await
}

/// How long one wait of an engine test may take (generous: the machine is shared and loaded).
pub const ENGINE_WAIT: Duration = Duration::from_secs(90);

/// Polls instance `id` of `t1` until `pred` holds, for at most [`ENGINE_WAIT`]; panics on ERROR.
pub async fn wait_engine_view(
    api: &ApiService,
    id: uuid::Uuid,
    what: &str,
    pred: impl Fn(&trove::core::api::InstanceView) -> bool,
) -> trove::core::api::InstanceView {
    super::waits::wait_view(api, &super::fixtures::t1(), id, what, ENGINE_WAIT, pred).await
}

/// The create request of an engine test: `name`, flavor 6 (256 MB), a 1 GB volume, datastore `ds`; with `app`,
/// the user `app` (and for SQL engines its database `shop`), as the clients of [`super::clients`] log in.
pub fn engine_instance(name: &str, ds: &str, app: bool) -> trove::core::api::CreateInstance {
    use super::clients::{Engine, APP_DB, APP_PASSWORD, APP_USER};
    use trove::core::model::{DatabaseSpec, Secret, UserSpec};
    let sql = Engine::of(ds) != Engine::Redis;
    let databases: Vec<String> = if app && sql {
        vec![APP_DB.into()]
    } else {
        vec![]
    };
    trove::core::api::CreateInstance {
        name: name.into(),
        flavor_ref: Some("6".into()),
        volume_size: Some(1),
        datastore: Some(ds.into()),
        databases: databases
            .iter()
            .map(|d| DatabaseSpec {
                name: d.clone(),
                character_set: None,
                collate: None,
            })
            .collect(),
        users: if app {
            vec![UserSpec {
                name: APP_USER.into(),
                password: Secret::new(APP_PASSWORD),
                host: None,
                databases,
            }]
        } else {
            vec![]
        },
        ..Default::default()
    }
}
