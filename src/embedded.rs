//! The embedded (one-process) deployment that `examples/all-in-one` runs: the SQLite store in a state directory
//! (or any store URL), the in-process bus, local-process compute with REAL engines supervised by in-process guest
//! agents, directory volumes and filesystem backups.
//!
//! At every start it registers a datastore for each engine found on the machine that has none yet (with its
//! shipped configuration rules) and a standard set of flavors when there are none; engines that are missing are
//! reported in [`Embedded::detection`] and their datastores left out. Servers found in the state directory are
//! re-adopted: their engines keep running across restarts of the control plane.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use trove_backends::local::{DirBlockStorage, FsBackupStore, LocalCompute, LocalComputeConfig};
use trove_backends::sql::{self, StoreLocation};
use trove_core::guest_agent::InProcessLauncher;
use trove_core::manage::{default_validation_rules, Manage, VersionUpdate};
use trove_core::memory::MemoryBus;
use trove_core::model::Flavor;
use trove_core::policy::Policy;
use trove_core::ports::{DynAuthenticator, DynClock, DynStore, StrategyFactory, SystemClock};
use trove_core::taskmanager::TaskManagerConfig;
use trove_core::{CoreConfig, Result};
use trove_guest::{
    detect_engines, DetectedEngine, EngineConfig, EngineDetection, EngineStrategyFactory, RunAs,
};

use crate::control_plane::ControlPlane;

/// How to start the embedded deployment.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Directory for servers, volumes and backups (and the SQLite store unless `database_url` is given).
    pub state_dir: PathBuf,
    /// Infrastructure database URL instead of `<state_dir>/trove.sqlite`.
    pub database_url: Option<String>,
    /// Control-plane settings.
    pub config: CoreConfig,
    /// How engines run (OS user, timeouts).
    pub engines: EngineConfig,
    /// Register datastores for detected engines and default flavors.
    pub seed: bool,
    /// How often crashed engines are looked for (and restarted, a bounded number of times).
    pub supervise_interval: Duration,
    /// More local hosts besides `local` (servers in `<state_dir>/servers`): each named host keeps its servers in
    /// `<state_dir>/hosts/<name>`. Servers can be placed on them (availability zone) and migrated between them.
    pub extra_hosts: Vec<String>,
    /// Loopback addresses handed out one per instance (engines listen there on their standard ports); `None`:
    /// engines share 127.0.0.1 with ports of their own. See [`LocalComputeConfig::address_pool`].
    pub address_pool: Option<String>,
    /// The deployment's sealing key file (default `<state_dir>/seal.key`, made when missing; `TROVE_SEAL_KEYS`
    /// wins over it). See [`crate::secrets`].
    pub seal_key_file: Option<PathBuf>,
    /// The API's authorization rules (default: upstream's; an operator's file is read with
    /// [`crate::load_policy_file`]).
    pub policy: Arc<Policy>,
    /// Where backups and published guest logs go.
    pub backup_store: BackupStoreChoice,
}

/// Where an embedded deployment keeps backups (and published guest logs).
#[derive(Debug, Clone, Default)]
pub enum BackupStoreChoice {
    /// Files under `<state_dir>/backups`.
    #[default]
    Fs,
    /// OpenStack Swift.
    #[cfg(feature = "objstore")]
    Swift(trove_backends::objstore::SwiftConfig),
    /// An S3-compatible store.
    #[cfg(feature = "objstore")]
    S3(trove_backends::objstore::S3Config),
}

impl BackupStoreChoice {
    /// Opens the store (no request is made yet).
    pub fn open(&self, state_dir: &std::path::Path) -> Result<trove_core::ports::DynBackupStore> {
        Ok(match self {
            BackupStoreChoice::Fs => Arc::new(FsBackupStore::open(state_dir.join("backups"))?),
            #[cfg(feature = "objstore")]
            BackupStoreChoice::Swift(c) => {
                Arc::new(trove_backends::objstore::SwiftBackupStore::new(c.clone())?)
            }
            #[cfg(feature = "objstore")]
            BackupStoreChoice::S3(c) => {
                Arc::new(trove_backends::objstore::S3BackupStore::new(c.clone())?)
            }
        })
    }

    /// What it is, for the start-up line (no credentials).
    pub fn describe(&self, state_dir: &std::path::Path) -> String {
        match self {
            BackupStoreChoice::Fs => format!("files under {}", state_dir.join("backups").display()),
            #[cfg(feature = "objstore")]
            BackupStoreChoice::Swift(c) => format!("Swift at {} as {}", c.auth_url, c.user),
            #[cfg(feature = "objstore")]
            BackupStoreChoice::S3(c) => format!("S3 at {} as {}", c.endpoint, c.access_key),
        }
    }
}

impl EmbeddedOptions {
    /// Defaults for a state directory.
    pub fn new(state_dir: impl Into<PathBuf>) -> EmbeddedOptions {
        EmbeddedOptions {
            state_dir: state_dir.into(),
            database_url: None,
            config: CoreConfig::default(),
            engines: EngineConfig::default(),
            seed: true,
            supervise_interval: Duration::from_secs(2),
            extra_hosts: Vec::new(),
            address_pool: LocalComputeConfig::default().address_pool,
            seal_key_file: None,
            policy: Arc::new(Policy::default()),
            backup_store: BackupStoreChoice::Fs,
        }
    }
}

/// A running embedded deployment.
pub struct Embedded {
    control_plane: ControlPlane,
    compute: Arc<LocalCompute>,
    launcher: Arc<InProcessLauncher>,
    supervisor: JoinHandle<()>,
    /// The state directory's lock, held while this deployment runs.
    _lock: std::fs::File,
    /// Engines found on this machine, and the missing ones with the reason.
    pub detection: EngineDetection,
    /// Where the store lives (passwords masked).
    pub store_location: String,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("store", &self.store_location)
            .field("detection", &self.detection)
            .finish_non_exhaustive()
    }
}

/// The flavors registered on first start: (id, name, RAM MB, vCPUs, disk GB).
pub const DEFAULT_FLAVORS: [(&str, &str, u32, u32, u32); 6] = [
    ("1", "m1.tiny", 512, 1, 1),
    ("2", "m1.small", 2048, 1, 20),
    ("3", "m1.medium", 4096, 2, 40),
    ("4", "m1.large", 8192, 4, 80),
    ("5", "m1.xlarge", 16384, 8, 160),
    ("6", "d1.micro", 256, 1, 1),
];

/// Registers default flavors (when there are none) and, for every detected engine whose datastore does not exist
/// yet, a datastore named after its manager with one active default version (the engine's version, its binary
/// directory as image) and the shipped configuration rules. Idempotent; never changes what an operator set.
pub async fn seed(store: DynStore, engines: &[DetectedEngine]) -> Result<()> {
    let manage = Manage::new(store.clone());
    if store.list_flavors().await?.is_empty() {
        for (id, name, ram_mb, vcpus, disk_gb) in DEFAULT_FLAVORS {
            let flavor = Flavor {
                id: id.into(),
                name: name.into(),
                ram_mb,
                vcpus,
                disk_gb,
                ephemeral_gb: 0,
            };
            manage.flavor_create(&flavor).await?;
        }
    }
    for engine in engines {
        let ds = engine.manager.as_str();
        if store.get_datastore(ds).await?.is_some() {
            continue;
        }
        let image = engine.bin_dir.to_string_lossy().into_owned();
        let packages = engine.note.clone().unwrap_or_default();
        let mut req = VersionUpdate::new(ds, &engine.version, ds, &image, "", "1")?;
        req.packages = packages;
        manage.datastore_version_update(&req).await?;
        manage.datastore_update(ds, &engine.version).await?;
        if let Some(rules) = default_validation_rules(engine.manager) {
            manage
                .db_load_datastore_config_parameters(ds, &engine.version, rules, None, |_, _| {})
                .await?;
        }
        tracing::info!(datastore = ds, version = %engine.version, "registered datastore for a detected engine");
    }
    Ok(())
}

/// Refuses a state directory the engines could not use: when they run as another user (root runs them as
/// `nobody`), that user must be able to pass every directory down to the servers and volumes, or every MariaDB
/// and PostgreSQL instance would fail to start. The state directory is created if missing.
pub fn check_state_dir(state_dir: &Path, engines: &EngineConfig) -> Result<()> {
    std::fs::create_dir_all(state_dir).map_err(|e| {
        trove_core::Error::bad_request(format!(
            "Cannot create the state directory {}: {e}.",
            state_dir.display()
        ))
    })?;
    let run_as = RunAs::resolve(engines.run_as.as_deref())?;
    // The state directory itself and what is below it (servers, volumes, extra hosts) when it exists already.
    for below in ["servers", "volumes", "hosts"] {
        let Some((dir, mode, owner)) = run_as.first_unreachable(&state_dir.join(below).join("x"))
        else {
            continue;
        };
        return Err(trove_core::Error::bad_request(format!(
            "The state directory {state} cannot be used: the engines run as {who}, which cannot enter {dir} \
             (mode {mode:o}, owner uid {owner}), so no instance could start. Choose a state directory that user \
             can reach (--state-dir; the default for root is /var/lib/trove-rs), or make the directory searchable \
             with `chmod o+x {dir}`.",
            state = state_dir.display(),
            who = run_as.describe(),
            dir = dir.display(),
        )));
    }
    Ok(())
}

/// Locks `<state_dir>/trove.lock` for this process: one embedded deployment per state directory. The lock ends with
/// the process, however it ends.
pub fn lock_state_dir(state_dir: &Path) -> Result<std::fs::File> {
    let path = state_dir.join("trove.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| {
            trove_core::Error::backend(
                "state-dir",
                format!("cannot open {}: {e}", path.display()),
                false,
            )
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(trove_core::Error::conflict(format!(
            "another trove process runs on the state directory {}; stop it first, or use another --state-dir",
            state_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(trove_core::Error::backend("state-dir", format!(
            "cannot lock {}: {e}",
            path.display()
        ), false)),
    }
}

/// The embedded deployment's task-manager worker: one stable id per state directory. The state directory's lock
/// makes this process the only worker, so a restart resumes the workflows its predecessor left open at once
/// (they are its own) instead of waiting for their leases to run out; the distributed deployment keeps a fresh id
/// per process, and leases.
fn embedded_worker(state_dir: &Path) -> TaskManagerConfig {
    let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    TaskManagerConfig {
        worker_id: format!("embedded:{}", dir.display()),
        ..TaskManagerConfig::default()
    }
}

impl Embedded {
    /// Checks the state directory ([`check_state_dir`]), opens the store (migrating it), composes the ports,
    /// starts the control plane and re-adopts servers.
    pub async fn start(opts: EmbeddedOptions, auth: DynAuthenticator) -> Result<Embedded> {
        check_state_dir(&opts.state_dir, &opts.engines)?;
        let lock = lock_state_dir(&opts.state_dir)?;
        let location =
            StoreLocation::from_options(Some(opts.state_dir.clone()), opts.database_url.clone());
        let store = sql::open(&location).await?;
        let detection = detect_engines();
        for (manager, why) in &detection.missing {
            tracing::warn!(%manager, reason = %why, "engine not found; its datastore is left out");
        }
        if opts.seed {
            seed(store.clone(), &detection.found).await?;
        }
        let clock: DynClock = Arc::new(SystemClock);
        let bus = Arc::new(MemoryBus::new());
        let backups = opts.backup_store.open(&opts.state_dir)?;
        let engines: Arc<dyn StrategyFactory> = Arc::new(
            EngineStrategyFactory::new(opts.engines.clone()).with_backup_store(backups.clone()),
        );
        // Guests publish their logs to the backup store, in the upstream default container.
        let launcher = Arc::new(
            InProcessLauncher::new(
                bus.clone(),
                clock.clone(),
                engines.clone(),
                opts.config.report_interval,
            )
            .with_log_store(trove_core::guest_log::LogStore::new(
                backups.clone(),
                trove_core::model::DEFAULT_LOG_CONTAINER,
            )),
        );
        let mut compute_config = LocalComputeConfig::single(&opts.state_dir);
        compute_config.address_pool = opts.address_pool.clone();
        for name in &opts.extra_hosts {
            let plain = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !name.starts_with('.');
            if !plain {
                return Err(trove_core::Error::bad_request(format!(
                    "Host name '{}' must be letters, digits, '-', '_' or '.'.",
                    name.escape_default()
                )));
            }
            compute_config.hosts.push(trove_backends::local::LocalHost {
                name: name.clone(),
                root: opts.state_dir.join("hosts").join(name),
            });
        }
        let compute = Arc::new(
            LocalCompute::open(compute_config, launcher.clone())?.with_engines(engines.clone()),
        );
        let volumes = Arc::new(DirBlockStorage::open(opts.state_dir.join("volumes"))?);
        let facets = trove_core::ports::FacetCatalog::from_factory(engines.as_ref());
        let sealer = crate::secrets::load_or_create_sealer(
            &opts
                .seal_key_file
                .clone()
                .unwrap_or_else(|| opts.state_dir.join("seal.key")),
        )?;
        let control_plane = ControlPlane::builder()
            .sealer(sealer)
            .facets(facets)
            .store(store)
            .bus(bus)
            .compute(compute.clone())
            .block_storage(volumes)
            .backup_store(backups)
            .clock(clock)
            .authenticator(auth)
            .policy(opts.policy.clone())
            .config(opts.config.clone())
            .in_process_launcher(launcher.clone())
            .taskmanager_config(embedded_worker(&opts.state_dir))
            .start()
            .await?;
        let adopted = compute.adopt_all().await;
        if !adopted.is_empty() {
            tracing::info!(
                count = adopted.len(),
                "re-adopted servers from the state directory"
            );
        }
        let supervisor = compute.supervise(opts.supervise_interval);
        Ok(Embedded {
            control_plane,
            compute,
            launcher,
            supervisor,
            _lock: lock,
            detection,
            store_location: location.display(),
        })
    }

    /// The running control plane.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    /// The local compute (servers, ports, engines).
    pub fn compute(&self) -> &Arc<LocalCompute> {
        &self.compute
    }

    /// Stops the control plane and the guest agents; engines keep running and are re-adopted at the next start.
    pub async fn shutdown(self) {
        self.supervisor.abort();
        self.control_plane.shutdown().await;
        self.launcher.shutdown_all().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// As root, engines run as `nobody`: a state directory inside a directory only root can enter (what
    /// `mktemp -d` makes) is refused at start-up with a message that names the directory and the fix.
    #[tokio::test]
    async fn a_state_dir_the_engine_user_cannot_reach_is_refused_at_start() {
        let top = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let state = top.path().join("state");
        let mut opts = EmbeddedOptions::new(&state);
        // What root gets by default; set explicitly so the check holds whoever runs the test.
        opts.engines.run_as = Some("65534:65534".into());
        let auth: DynAuthenticator = Arc::new(trove_backends::auth::NoAuth::new());
        let e = Embedded::start(opts.clone(), auth.clone())
            .await
            .expect_err("an unreachable state directory");
        let msg = e.to_string();
        assert_eq!(e.fault().status, 400, "{msg}");
        assert!(msg.contains(&state.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("chmod o+x {}", top.path().display())),
            "{msg}"
        );
        assert!(msg.contains("uid 65534"), "{msg}");
        assert!(
            !state.join("trove.sqlite").exists(),
            "nothing is set up in a refused state directory"
        );
        // With the directory searchable the same state directory is accepted.
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod");
        check_state_dir(&state, &opts.engines).expect("a reachable state directory");
    }
}
