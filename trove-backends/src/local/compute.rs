//! [`LocalCompute`]: a server is a directory on a named host root, plus the engine its guest supervises.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use uuid::Uuid;

use trove_core::model::{Address, DatastoreVersion, Flavor, Locality};
use trove_core::ports::{
    migration_target, Compute, GuestLauncher, GuestSpec, Server, ServerSpec, StrategyFactory,
};
use trove_core::state::{ServerStatus, ServiceStatus};
use trove_core::{Error, Result};

use super::{io_err, write_atomic, AddressPool, BACKEND};

const RECORD: &str = "server.json";
/// The address pool of [`LocalComputeConfig::default`].
pub const DEFAULT_ADDRESS_POOL: &str = "127.77.0.0/16";
/// The guest's record of what it rendered for the engine (memory, overrides, prepared): redone by a rebuild.
const GUEST_STATE: &str = "state.json";
const GUEST_STATE_TMP: &str = "state.tmp";

/// One place servers can live: a name (the "host", shown to users and used for locality) and a root directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalHost {
    /// Host name.
    pub name: String,
    /// Root directory of its servers.
    pub root: PathBuf,
}

/// Configuration of [`LocalCompute`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LocalComputeConfig {
    /// Hosts servers can be placed on (at least one).
    pub hosts: Vec<LocalHost>,
    /// Addresses handed out one per server, as `A.B.C.D/N` inside 127.0.0.0/8 (127.0.0.1 is never handed out):
    /// each engine listens on an address of its own with the engine's standard port (3306, 5432, 6379), as on
    /// a VM of its own. `None`, or a host that cannot bind such addresses (checked at open, with a warning),
    /// leaves every engine on `bind_address` with a port of its own from `port_min..=port_max`.
    pub address_pool: Option<String>,
    /// Address every engine listens on (and the instance view shows) when there is no address pool.
    pub bind_address: String,
    /// First port handed to an engine that cannot have its standard port.
    pub port_min: u16,
    /// Last port handed to an engine that cannot have its standard port.
    pub port_max: u16,
    /// How long a leftover engine gets to stop on delete before it is killed.
    pub stop_timeout: Duration,
    /// Restarts of a crashed engine the supervisor attempts before leaving it CRASHED.
    pub max_restarts: u32,
    /// Restarts older than this are forgotten (the bound is per window).
    pub restart_window: Duration,
    /// How long a crashed engine is left down before the supervisor restarts it, so that the guest reports the
    /// crash (SHUTDOWN/CRASHED shows in the API) instead of it going unnoticed; keep it above the report interval.
    pub crash_report_grace: Duration,
}

impl Default for LocalComputeConfig {
    fn default() -> Self {
        LocalComputeConfig {
            hosts: Vec::new(),
            address_pool: Some(DEFAULT_ADDRESS_POOL.into()),
            bind_address: "127.0.0.1".into(),
            port_min: 21000,
            port_max: 29999,
            stop_timeout: Duration::from_secs(30),
            max_restarts: 3,
            restart_window: Duration::from_secs(600),
            crash_report_grace: Duration::from_secs(5),
        }
    }
}

impl LocalComputeConfig {
    /// One host named `local` with its servers in `<state_dir>/servers`.
    pub fn single(state_dir: impl AsRef<Path>) -> LocalComputeConfig {
        LocalComputeConfig {
            hosts: vec![LocalHost {
                name: "local".into(),
                root: state_dir.as_ref().join("servers"),
            }],
            ..LocalComputeConfig::default()
        }
    }
}

/// What is recorded about a server (`<host root>/<instance_id>/server.json`), so it survives restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ServerRecord {
    instance_id: Uuid,
    name: String,
    host: String,
    port: u16,
    bind_address: String,
    flavor: Flavor,
    datastore_version: DatastoreVersion,
    volume_path: Option<PathBuf>,
    group: Option<(Uuid, Locality)>,
    /// Image the server was last rebuilt from (a local server has no image of its own; recorded for the record).
    #[serde(default)]
    image_id: Option<String>,
}

struct Inner {
    servers: BTreeMap<Uuid, ServerRecord>,
    restarts: BTreeMap<Uuid, Vec<std::time::Instant>>,
    crashed_since: BTreeMap<Uuid, std::time::Instant>,
}

/// Local-process compute.
///
/// - A server is the directory `<host root>/<instance_id>/` (its `server.json` records name, flavor, version,
///   volume, placement group and port). The guest agent it launches runs the engine there, as a process of its own
///   that outlives the control plane.
/// - Every server gets a loopback address of its own from the address pool (default
///   [`DEFAULT_ADDRESS_POOL`]) and its engine listens there on the engine's standard port (3306, 5432, 6379), so
///   tools written for VMs find it where they expect and never reach the host's own servers on 127.0.0.1. When
///   the standard port is taken on every address tried (a wildcard listener), or without a usable pool (none
///   configured, or the host cannot bind its addresses: a warning at open), the engine gets a port of its own
///   from `port_min..=port_max` (ports of known servers are never reused; a port something else listens on is
///   skipped). Address and port are recorded with the server; the view shows the address in `addresses` and the
///   port in `port`.
/// - Locality: each host root is a host; affinity places group members on the source's host, anti-affinity on
///   distinct hosts (strict variants fail with a 400 when impossible; soft ones fall back to the least loaded host).
/// - [`LocalCompute::open`] finds existing server directories again; [`LocalCompute::adopt_all`] then relaunches
///   their guests (and, with [`LocalCompute::with_engines`], restarts engines that should run but do not).
/// - With engines ([`LocalCompute::with_engines`]), `reboot_server` restarts the engine, delete stops it, and
///   [`LocalCompute::supervise`] restarts crashed engines a bounded number of times.
pub struct LocalCompute {
    config: LocalComputeConfig,
    pool: Option<AddressPool>,
    launcher: Arc<dyn GuestLauncher>,
    engines: Option<Arc<dyn StrategyFactory>>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for LocalCompute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCompute")
            .field("hosts", &self.config.hosts)
            .finish()
    }
}

fn read_record(path: &Path) -> Option<ServerRecord> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring a corrupt server record");
            None
        }
    }
}

fn port_is_free(addr: &str, port: u16) -> bool {
    std::net::TcpListener::bind((addr, port)).is_ok()
}

/// Pool addresses tried for the engine's standard port before one of them gets a port of its own.
const STANDARD_PORT_TRIES: usize = 8;

/// The configured address pool, when this host can bind its addresses (probed once); otherwise a warning that
/// says what engines get instead.
fn usable_pool(config: &LocalComputeConfig) -> Result<Option<AddressPool>> {
    usable_pool_with(config, |a| std::net::TcpListener::bind((a, 0)).map(drop))
}

/// [`usable_pool`] with the probe given (`probe` binds an address of the pool).
fn usable_pool_with(
    config: &LocalComputeConfig,
    probe: impl Fn(std::net::Ipv4Addr) -> std::io::Result<()>,
) -> Result<Option<AddressPool>> {
    let Some(text) = config
        .address_pool
        .as_deref()
        .filter(|t| !t.trim().is_empty())
    else {
        tracing::info!(bind_address = %config.bind_address, port_min = config.port_min, port_max = config.port_max,
            "no address pool: engines listen on the bind address with ports of their own");
        return Ok(None);
    };
    let pool = AddressPool::parse(text)?;
    let probe_addr = pool
        .first_usable()
        .ok_or_else(|| Error::bad_request(format!("Address pool {pool} has no usable address.")))?;
    match probe(probe_addr) {
        Ok(()) => {
            tracing::info!(pool = %pool, "engines listen on addresses of their own with their standard ports");
            Ok(Some(pool))
        }
        Err(e) => {
            tracing::warn!(pool = %pool, probe = %probe_addr, error = %e, bind_address = %config.bind_address,
                port_min = config.port_min, port_max = config.port_max,
                "this host cannot give out the pool's addresses; engines share the bind address with ports of their own");
            Ok(None)
        }
    }
}

impl LocalCompute {
    /// Opens the compute: creates the host roots and finds the servers already in them.
    pub fn open(
        config: LocalComputeConfig,
        launcher: Arc<dyn GuestLauncher>,
    ) -> Result<LocalCompute> {
        if config.hosts.is_empty() {
            return Err(Error::bad_request(
                "Local compute needs at least one host root.",
            ));
        }
        if config.port_min == 0 || config.port_min > config.port_max {
            return Err(Error::bad_request(
                "Local compute needs a port range port_min..=port_max (port_min > 0).",
            ));
        }
        let mut names = HashSet::new();
        let mut servers = BTreeMap::new();
        for h in &config.hosts {
            if !names.insert(h.name.clone()) {
                return Err(Error::bad_request(format!(
                    "Host name '{}' is configured twice.",
                    h.name
                )));
            }
            std::fs::create_dir_all(&h.root).map_err(|e| io_err("create", &h.root, e))?;
            std::fs::set_permissions(&h.root, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| io_err("chmod", &h.root, e))?;
            let rd = std::fs::read_dir(&h.root).map_err(|e| io_err("read", &h.root, e))?;
            for e in rd.flatten() {
                let Some(id) = e.file_name().to_str().and_then(|n| Uuid::parse_str(n).ok()) else {
                    continue;
                };
                let Some(mut rec) = read_record(&e.path().join(RECORD)) else {
                    continue;
                };
                if rec.instance_id != id {
                    tracing::warn!(dir = %e.path().display(), "server record names another instance; ignored");
                    continue;
                }
                if servers.contains_key(&id) {
                    tracing::warn!(instance = %id, host = %h.name, "server found on two hosts; keeping the first");
                    continue;
                }
                rec.host = h.name.clone();
                servers.insert(id, rec);
            }
        }
        let pool = usable_pool(&config)?;
        Ok(LocalCompute {
            config,
            pool,
            launcher,
            engines: None,
            inner: Mutex::new(Inner {
                servers,
                restarts: BTreeMap::new(),
                crashed_since: BTreeMap::new(),
            }),
        })
    }

    /// Lets the compute act on engines directly (reboot, delete, supervision, re-adoption) through strategies from
    /// `factory` (the same factory the guest agents use).
    pub fn with_engines(mut self, factory: Arc<dyn StrategyFactory>) -> LocalCompute {
        self.engines = Some(factory);
        self
    }

    /// The address pool servers get their addresses from; `None` when engines share the bind address with ports
    /// of their own (none configured, or the host cannot bind the pool's addresses).
    pub fn address_pool(&self) -> Option<AddressPool> {
        self.pool
    }

    fn host_root(&self, host: &str) -> Result<&Path> {
        self.config
            .hosts
            .iter()
            .find(|h| h.name == host)
            .map(|h| h.root.as_path())
            .ok_or_else(|| Error::backend(BACKEND, format!("unknown host {host}"), false))
    }

    fn server_dir(&self, rec: &ServerRecord) -> Result<PathBuf> {
        Ok(self.host_root(&rec.host)?.join(rec.instance_id.to_string()))
    }

    fn guest_spec(&self, rec: &ServerRecord) -> Result<GuestSpec> {
        Ok(GuestSpec {
            instance_id: rec.instance_id,
            datastore_version: rec.datastore_version.clone(),
            flavor: rec.flavor.clone(),
            server_dir: self.server_dir(rec)?,
            volume_path: rec.volume_path.clone(),
            bind_address: rec.bind_address.clone(),
            port: rec.port,
        })
    }

    fn view(&self, rec: &ServerRecord) -> Server {
        let address = match rec.bind_address.as_str() {
            "0.0.0.0" | "::" | "" => "127.0.0.1".to_string(),
            a => a.to_string(),
        };
        Server {
            id: rec.instance_id.to_string(),
            instance_id: rec.instance_id,
            host: rec.host.clone(),
            status: ServerStatus::Active,
            addresses: vec![Address {
                address,
                kind: "private".into(),
            }],
            port: Some(rec.port),
        }
    }

    fn save(&self, rec: &ServerRecord) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(rec).map_err(|e| Error::backend(BACKEND, e, false))?;
        write_atomic(&self.server_dir(rec)?.join(RECORD), &bytes)
    }

    /// Picks a host for a new server.
    fn place(&self, inner: &Inner, spec: &ServerSpec) -> Result<String> {
        let mut load: BTreeMap<&str, usize> = self
            .config
            .hosts
            .iter()
            .map(|h| (h.name.as_str(), 0))
            .collect();
        for s in inner.servers.values() {
            if let Some(n) = load.get_mut(s.host.as_str()) {
                *n += 1;
            }
        }
        let mut candidates: Vec<&str> = self.config.hosts.iter().map(|h| h.name.as_str()).collect();
        if let Some(az) = spec.availability_zone.as_deref().filter(|z| !z.is_empty()) {
            if !candidates.contains(&az) {
                return Err(Error::bad_request(format!(
                    "Availability zone '{az}' is not a host of this compute ({}).",
                    candidates.join(", ")
                )));
            }
            candidates = vec![az];
        }
        let least = |c: &[&str]| -> Option<String> {
            c.iter()
                .min_by_key(|h| load.get(**h).copied().unwrap_or(0))
                .map(|h| h.to_string())
        };
        let Some((group, locality)) = spec.group else {
            return least(&candidates).ok_or_else(|| Error::bad_request("No host available."));
        };
        let member_hosts: HashSet<&str> = inner
            .servers
            .values()
            .filter(|s| s.instance_id == group || s.group.map(|g| g.0) == Some(group))
            .map(|s| s.host.as_str())
            .collect();
        let source_host = inner.servers.get(&group).map(|s| s.host.as_str());
        match locality {
            Locality::Affinity | Locality::SoftAffinity => {
                let target = source_host.or_else(|| member_hosts.iter().next().copied());
                match target {
                    Some(h) if candidates.contains(&h) => Ok(h.to_string()),
                    Some(h) if locality == Locality::Affinity => Err(Error::bad_request(format!(
                        "Affinity needs host '{h}', which the requested availability zone excludes."
                    ))),
                    _ => least(&candidates).ok_or_else(|| Error::bad_request("No host available.")),
                }
            }
            Locality::AntiAffinity | Locality::SoftAntiAffinity => {
                let free: Vec<&str> = candidates
                    .iter()
                    .copied()
                    .filter(|h| !member_hosts.contains(h))
                    .collect();
                if let Some(h) = least(&free) {
                    Ok(h)
                } else if locality == Locality::AntiAffinity {
                    Err(Error::bad_request(format!(
                        "Anti-affinity cannot be honoured: every host ({}) already has a member of the group.",
                        candidates.join(", ")
                    )))
                } else {
                    least(&candidates).ok_or_else(|| Error::bad_request("No host available."))
                }
            }
        }
    }

    /// The address and port of a new server: an unused pool address with the engine's standard port free, else
    /// (the standard port is taken on the first addresses tried: a wildcard listener) an unused pool address with
    /// a port of its own; without a pool the bind address with a port of its own.
    fn allocate_endpoint(&self, inner: &Inner, spec: &ServerSpec) -> Result<(String, u16)> {
        let Some(pool) = self.pool else {
            let port = self.allocate_port(inner, &self.config.bind_address, spec.instance_id)?;
            return Ok((self.config.bind_address.clone(), port));
        };
        let standard = spec.datastore_version.manager.default_port();
        let used: HashSet<&str> = inner
            .servers
            .values()
            .map(|s| s.bind_address.as_str())
            .collect();
        let mut tried = Vec::new();
        for addr in pool.candidates(spec.instance_id.as_u128()) {
            let addr = addr.to_string();
            if used.contains(addr.as_str()) {
                continue;
            }
            if port_is_free(&addr, standard) {
                return Ok((addr, standard));
            }
            tried.push(addr);
            if tried.len() >= STANDARD_PORT_TRIES {
                break;
            }
        }
        let Some(addr) = tried.into_iter().next() else {
            return Err(Error::backend(
                BACKEND,
                format!("no free address left in the address pool {pool}"),
                true,
            ));
        };
        let port = self.allocate_port(inner, &addr, spec.instance_id)?;
        tracing::warn!(instance = %spec.instance_id, address = %addr, standard, port,
            "the engine's standard port is taken on every pool address tried (a wildcard listener?); using a port of its own");
        Ok((addr, port))
    }

    /// A port for `instance_id` on `addr`: the search starts at a point of the range derived from the instance
    /// id, so that two control planes sharing a machine (whose engines bind only after allocation) rarely race
    /// for one port.
    fn allocate_port(&self, inner: &Inner, addr: &str, instance_id: Uuid) -> Result<u16> {
        let used: HashSet<u16> = inner.servers.values().map(|s| s.port).collect();
        let (min, max) = (self.config.port_min, self.config.port_max);
        let len = u32::from(max - min) + 1;
        let start = (instance_id.as_u128() % u128::from(len)) as u32;
        (0..len)
            .map(|i| min + ((start + i) % len) as u16)
            .find(|p| !used.contains(p) && port_is_free(addr, *p))
            .ok_or_else(|| {
                Error::backend(
                    BACKEND,
                    format!(
                        "no free port left in {}..={}",
                        self.config.port_min, self.config.port_max
                    ),
                    true,
                )
            })
    }

    /// Stops whatever engine still runs in a server directory: through a strategy when engines are configured,
    /// then by the pid files it left (TERM, KILL after the stop timeout).
    async fn stop_leftovers(&self, rec: &ServerRecord) -> Result<()> {
        let spec = self.guest_spec(rec)?;
        if let Some(f) = &self.engines {
            if let Ok(s) = f.strategy(&spec) {
                if let Err(e) = s.stop().await {
                    tracing::warn!(instance = %rec.instance_id, error = %e, "engine stop failed; killing it");
                }
            }
        }
        let mut pid_files = Vec::new();
        let engine_dir = spec.server_dir.join("engine");
        if let Ok(rd) = std::fs::read_dir(&engine_dir) {
            pid_files.extend(
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "pid")),
            );
        }
        let vol = spec
            .volume_path
            .clone()
            .unwrap_or_else(|| spec.server_dir.join("volume"));
        pid_files.push(vol.join("data").join("postmaster.pid"));
        for pf in pid_files {
            let Some(pid) = trove_os::read_pid(&pf).filter(|p| trove_os::pid_alive(*p)) else {
                continue;
            };
            super::stop_pid(pid, "TERM", self.config.stop_timeout).await;
        }
        Ok(())
    }

    /// The recorded server of an instance (404 when there is none).
    async fn record(&self, instance_id: Uuid) -> Result<ServerRecord> {
        self.inner
            .lock()
            .await
            .servers
            .get(&instance_id)
            .cloned()
            .ok_or_else(|| Error::not_found("Server", instance_id))
    }

    /// Stops the guest of a server and whatever engine still runs in its directory.
    async fn quiesce(&self, rec: &ServerRecord) -> Result<()> {
        self.launcher.stop(rec.instance_id).await?;
        self.stop_leftovers(rec).await
    }

    /// Relaunches the guests of every known server (after a restart of the control plane). With engines, an engine
    /// that should run but does not is started first. Returns the instances adopted; failures are logged and
    /// skipped so one broken server does not keep the others down.
    pub async fn adopt_all(&self) -> Vec<Uuid> {
        let recs: Vec<ServerRecord> = self.inner.lock().await.servers.values().cloned().collect();
        let mut adopted = Vec::new();
        for rec in recs {
            let spec = match self.guest_spec(&rec) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(instance = %rec.instance_id, error = %e, "cannot adopt server");
                    continue;
                }
            };
            if let Some(f) = &self.engines {
                if let Ok(s) = f.strategy(&spec) {
                    let st = s.status().await;
                    if st.status == ServiceStatus::Crashed {
                        tracing::info!(instance = %rec.instance_id, "engine is not running after restart; starting it");
                        if let Err(e) = s.start().await {
                            tracing::warn!(instance = %rec.instance_id, error = %e, "engine start failed");
                        }
                    }
                }
            }
            match self.launcher.launch(&spec).await {
                Ok(()) => adopted.push(rec.instance_id),
                Err(e) => {
                    tracing::warn!(instance = %rec.instance_id, error = %e, "guest launch failed")
                }
            }
        }
        adopted
    }

    /// One supervision pass: every engine that crashed (died without a stop) is started again, at most
    /// `max_restarts` times per `restart_window`; beyond that it stays CRASHED (the guest keeps reporting it).
    /// Returns the instances restarted. Needs [`LocalCompute::with_engines`].
    pub async fn supervise_once(&self) -> Vec<Uuid> {
        let Some(f) = &self.engines else {
            return Vec::new();
        };
        let recs: Vec<ServerRecord> = self.inner.lock().await.servers.values().cloned().collect();
        let mut restarted = Vec::new();
        for rec in recs {
            let Ok(spec) = self.guest_spec(&rec) else {
                continue;
            };
            let Ok(s) = f.strategy(&spec) else { continue };
            let st = s.status().await;
            if st.status != ServiceStatus::Crashed {
                self.inner
                    .lock()
                    .await
                    .crashed_since
                    .remove(&rec.instance_id);
                continue;
            }
            {
                let mut inner = self.inner.lock().await;
                let now = std::time::Instant::now();
                let since = *inner.crashed_since.entry(rec.instance_id).or_insert(now);
                if now.duration_since(since) < self.config.crash_report_grace {
                    continue;
                }
                inner.crashed_since.remove(&rec.instance_id);
                let window = self.config.restart_window;
                let times = inner.restarts.entry(rec.instance_id).or_default();
                times.retain(|t| now.duration_since(*t) < window);
                if times.len() >= self.config.max_restarts as usize {
                    tracing::warn!(instance = %rec.instance_id, reason = ?st.reason, "engine crashed too often; leaving it down");
                    continue;
                }
                times.push(now);
            }
            tracing::warn!(instance = %rec.instance_id, reason = ?st.reason, "engine crashed; restarting it");
            match s.start().await {
                Ok(()) => restarted.push(rec.instance_id),
                Err(e) => {
                    tracing::warn!(instance = %rec.instance_id, error = %e, "restart of crashed engine failed")
                }
            }
        }
        restarted
    }

    /// Runs [`LocalCompute::supervise_once`] every `interval` until the compute is dropped.
    pub fn supervise(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(c) = weak.upgrade() else { return };
                c.supervise_once().await;
            }
        })
    }
}

#[async_trait]
impl Compute for LocalCompute {
    async fn create_server(&self, spec: &ServerSpec) -> Result<Server> {
        let mut inner = self.inner.lock().await;
        if let Some(rec) = inner.servers.get(&spec.instance_id).cloned() {
            drop(inner);
            // Idempotent: the same server; make sure its guest runs.
            self.launcher.launch(&self.guest_spec(&rec)?).await?;
            return Ok(self.view(&rec));
        }
        let host = self.place(&inner, spec)?;
        let (bind_address, port) = self.allocate_endpoint(&inner, spec)?;
        let rec = ServerRecord {
            instance_id: spec.instance_id,
            name: spec.name.clone(),
            host,
            port,
            bind_address,
            flavor: spec.flavor.clone(),
            datastore_version: spec.datastore_version.clone(),
            volume_path: spec.volume_path.clone(),
            group: spec.group,
            image_id: None,
        };
        let dir = self.server_dir(&rec)?;
        std::fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| io_err("chmod", &dir, e))?;
        self.save(&rec)?;
        inner.servers.insert(rec.instance_id, rec.clone());
        drop(inner);
        if let Err(e) = self.launcher.launch(&self.guest_spec(&rec)?).await {
            // Nothing is left behind by a failed create.
            let _ = self.launcher.stop(rec.instance_id).await;
            self.inner.lock().await.servers.remove(&rec.instance_id);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(self.view(&rec))
    }

    async fn get_server(&self, instance_id: Uuid) -> Result<Option<Server>> {
        Ok(self
            .inner
            .lock()
            .await
            .servers
            .get(&instance_id)
            .map(|r| self.view(r)))
    }

    async fn delete_server(&self, instance_id: Uuid) -> Result<()> {
        let Some(rec) = self.inner.lock().await.servers.get(&instance_id).cloned() else {
            return Ok(());
        };
        self.launcher.stop(instance_id).await?;
        self.stop_leftovers(&rec).await?;
        let dir = self.server_dir(&rec)?;
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &dir, e)),
        })
        .await
        .map_err(|e| Error::backend(BACKEND, e, false))??;
        let mut inner = self.inner.lock().await;
        inner.servers.remove(&instance_id);
        inner.restarts.remove(&instance_id);
        Ok(())
    }

    async fn reboot_server(&self, instance_id: Uuid) -> Result<()> {
        let rec = self
            .inner
            .lock()
            .await
            .servers
            .get(&instance_id)
            .cloned()
            .ok_or_else(|| Error::not_found("Server", instance_id))?;
        let spec = self.guest_spec(&rec)?;
        match &self.engines {
            // The engine restarts; its guest keeps running and reports it.
            Some(f) => {
                let s = f.strategy(&spec)?;
                s.stop().await?;
                s.start().await?;
                self.launcher.launch(&spec).await
            }
            // Without engine access a reboot restarts the guest.
            None => {
                self.launcher.stop(instance_id).await?;
                self.launcher.launch(&spec).await
            }
        }
    }

    async fn resize_server(&self, instance_id: Uuid, flavor: &Flavor) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let rec = inner
            .servers
            .get_mut(&instance_id)
            .ok_or_else(|| Error::not_found("Server", instance_id))?;
        let mut updated = rec.clone();
        updated.flavor = flavor.clone();
        self.save(&updated)?;
        *rec = updated;
        Ok(())
    }

    async fn hosts(&self) -> Result<Vec<String>> {
        Ok(self.config.hosts.iter().map(|h| h.name.clone()).collect())
    }

    /// Stops the guest and the engine, moves `<old root>/<id>` to `<new root>/<id>` (a rename; a copy when the
    /// roots are on different filesystems), records the new host and launches the guest there. The engine's
    /// configuration names paths in the server directory: strategies render it again when they start the engine.
    async fn migrate_server(&self, instance_id: Uuid, host: Option<&str>) -> Result<Server> {
        let rec = self.record(instance_id).await?;
        let target = {
            let inner = self.inner.lock().await;
            let hosts: Vec<String> = self.config.hosts.iter().map(|h| h.name.clone()).collect();
            migration_target(&hosts, &rec.host, host, |h| {
                inner.servers.values().filter(|s| s.host == h).count()
            })?
        };
        self.quiesce(&rec).await?;
        let from = self.server_dir(&rec)?;
        let mut moved = rec.clone();
        moved.host = target;
        let to = self.server_dir(&moved)?;
        move_dir(&from, &to).await?;
        self.save(&moved)?;
        self.inner
            .lock()
            .await
            .servers
            .insert(instance_id, moved.clone());
        self.launcher.launch(&self.guest_spec(&moved)?).await?;
        tracing::info!(instance = %instance_id, from = %rec.host, to = %moved.host, "server migrated");
        Ok(self.view(&moved))
    }

    /// Stops the guest and the engine, then makes the server directory's generated state again from scratch: the
    /// engine directory (rendered configuration, pid, socket, logs) and the guest's record of what it rendered
    /// (`guest/state.json`) are removed. Kept: `server.json`, the local data directory of a server without a
    /// volume (`volume/`), what the control plane gave the guest (`guest/`: the credentials the engine's data was
    /// created with, TLS certificates and setting, log settings; a local server has no metadata service to hand
    /// them to the rebuilt guest), the certificates installed for the engine (`engine/tls/`) and the account files
    /// an engine keeps beside its configuration (`engine/*.acl`: Redis users are data). Records the image (and the
    /// new datastore version), then launches the guest, which renders the engine's configuration again when asked
    /// to rebuild.
    async fn rebuild_server(
        &self,
        instance_id: Uuid,
        image_id: &str,
        datastore_version: Option<&DatastoreVersion>,
    ) -> Result<Server> {
        let rec = self.record(instance_id).await?;
        self.quiesce(&rec).await?;
        let dir = self.server_dir(&rec)?;
        let keep_volume = rec.volume_path.is_none();
        tokio::task::spawn_blocking(move || wipe_generated(&dir, keep_volume))
            .await
            .map_err(|e| Error::backend(BACKEND, e, false))??;
        let mut rebuilt = rec;
        rebuilt.image_id = Some(image_id.to_string());
        if let Some(v) = datastore_version {
            rebuilt.datastore_version = v.clone();
        }
        self.save(&rebuilt)?;
        self.inner
            .lock()
            .await
            .servers
            .insert(instance_id, rebuilt.clone());
        self.launcher.launch(&self.guest_spec(&rebuilt)?).await?;
        tracing::info!(instance = %instance_id, image = %image_id, version = %rebuilt.datastore_version.name,
            "server rebuilt");
        Ok(self.view(&rebuilt))
    }
}

/// Moves a directory to a new parent (created if needed). A move interrupted after the rename (source gone,
/// target present) counts as done, so a retried migration finishes.
async fn move_dir(from: &Path, to: &Path) -> Result<()> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || {
        if !from.exists() && to.join(RECORD).exists() {
            return Ok(());
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err("create", parent, e))?;
        }
        if to.exists() {
            // A half-copied target of an interrupted cross-filesystem move: start it again.
            std::fs::remove_dir_all(to.as_path()).map_err(|e| io_err("remove", &to, e))?;
        }
        match std::fs::rename(&from, &to) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(18) => {
                // EXDEV: another filesystem. `cp -a` keeps owners and modes (engine files belong to the engine user).
                let out = std::process::Command::new("cp")
                    .arg("-a")
                    .arg(&from)
                    .arg(&to)
                    .output()
                    .map_err(|e| Error::backend(BACKEND, format!("cannot run cp: {e}"), false))?;
                if !out.status.success() {
                    return Err(Error::backend(
                        BACKEND,
                        format!(
                            "copying {} to {} failed: {}",
                            from.display(),
                            to.display(),
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                        false,
                    ));
                }
                std::fs::remove_dir_all(&from).map_err(|e| io_err("remove", &from, e))
            }
            Err(e) => Err(io_err("move", &from, e)),
        }
    })
    .await
    .map_err(|e| Error::backend(BACKEND, e, false))?
}

/// Removes the generated part of a server directory (what `rebuild_server` makes again).
fn wipe_generated(dir: &Path, keep_volume: bool) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("read", dir, e)),
    };
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name == RECORD || (keep_volume && name == "volume") {
            continue;
        }
        let kept: Option<fn(&Path) -> bool> = match name.as_ref() {
            // What the control plane gave the guest (credentials, TLS certificates and setting, log settings) is
            // kept; the guest's record of the engine it rendered (`state.json`) is made again by the rebuild.
            "guest" => Some(|p| {
                !p.file_name()
                    .is_some_and(|n| n == GUEST_STATE || n == GUEST_STATE_TMP)
            }),
            // Accounts the engine keeps beside its configuration, and the certificates installed for it
            // (`engine/tls/`: the guest installs them when TLS changes, not when the engine starts).
            "engine" => Some(|p| {
                (p.is_file() && p.extension().is_some_and(|x| x == "acl"))
                    || (p.is_dir() && p.file_name().is_some_and(|n| n == "tls"))
            }),
            _ => None,
        };
        if let (Some(keep), true) = (kept, path.is_dir()) {
            let inner = std::fs::read_dir(&path).map_err(|e| io_err("read", &path, e))?;
            for g in inner.flatten() {
                let p = g.path();
                if !keep(&p) {
                    remove_any(&p)?;
                }
            }
            continue;
        }
        remove_any(&path)?;
    }
    Ok(())
}

fn remove_any(p: &Path) -> Result<()> {
    let r = if p.is_dir() && !p.is_symlink() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", p, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, b"x").expect("write");
    }

    #[test]
    fn a_pool_the_host_cannot_bind_falls_back_to_ports_and_a_bad_pool_is_refused() {
        let cfg = LocalComputeConfig::default();
        let pool = usable_pool_with(&cfg, |_| Ok(())).expect("pool");
        assert_eq!(
            pool.map(|p| p.to_string()).as_deref(),
            Some(DEFAULT_ADDRESS_POOL)
        );
        let refused = usable_pool_with(&cfg, |_| {
            Err(std::io::Error::from(std::io::ErrorKind::AddrNotAvailable))
        })
        .expect("a fallback, not an error");
        assert_eq!(
            refused, None,
            "engines share the bind address with ports of their own"
        );
        let none = LocalComputeConfig {
            address_pool: Some(" ".into()),
            ..LocalComputeConfig::default()
        };
        assert_eq!(usable_pool_with(&none, |_| Ok(())).expect("no pool"), None);
        let bad = LocalComputeConfig {
            address_pool: Some("192.168.0.0/24".into()),
            ..LocalComputeConfig::default()
        };
        assert_eq!(
            usable_pool_with(&bad, |_| Ok(()))
                .expect_err("outside loopback")
                .fault()
                .status,
            400
        );
    }

    #[test]
    fn rebuild_wipes_generated_state_and_keeps_data_credentials_and_settings() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path();
        let kept = [
            "server.json",
            "volume/data/ibdata1",
            "guest/os_admin.secret",
            "guest/logs.json",
            "guest/tls/state.json",
            "guest/tls/g1/key.pem",
            "engine/users.acl",
            "engine/tls/server-cert.pem",
        ];
        let gone = [
            "guest/state.json",
            "guest/state.tmp",
            "engine/my.cnf",
            "engine/mysqld.pid",
            "engine/general.log",
            "engine/sub/anything",
            "leftover.txt",
        ];
        for p in kept.iter().chain(gone.iter()) {
            touch(&dir.join(p));
        }
        wipe_generated(dir, true).expect("wipe");
        for p in kept {
            assert!(dir.join(p).exists(), "{p} was removed");
        }
        for p in gone {
            assert!(!dir.join(p).exists(), "{p} was kept");
        }
        // With a volume elsewhere, a local `volume/` is not data: it goes too.
        wipe_generated(dir, false).expect("wipe");
        assert!(!dir.join("volume").exists());
        assert!(dir.join("server.json").exists());
    }
}
