//! The [`ControlPlane`]: composes any set of port implementations into a running control plane (API service,
//! task manager, conductor and health monitor as tokio tasks).
//!
//! ```no_run
//! # async fn demo() -> trove::core::Result<()> {
//! use trove::control_plane::ControlPlane;
//! let cp = ControlPlane::in_memory().await?; // everything in-process, simulated guests
//! let api = cp.api();
//! # let _ = api;
//! cp.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! To plug your own adapters, start from [`ControlPlane::builder`] and give it a store, a bus, compute and
//! block storage (the clock defaults to the system clock, authentication to `noauth`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use trove_core::api::ApiService;
use trove_core::conductor::{Conductor, GuestKeys};
use trove_core::guest_agent::InProcessLauncher;
use trove_core::health::HealthMonitor;
use trove_core::memory::{
    MemoryBackupStore, MemoryBlockStorage, MemoryBus, MemoryCompute, MemoryStore, NoAuth,
    SimulatedStrategyFactory,
};
use trove_core::policy::Policy;
use trove_core::ports::{
    DynAuthenticator, DynBackupStore, DynBlockStorage, DynBus, DynClock, DynCompute, DynStore,
    FacetCatalog, StrategyFactory, SystemClock,
};
use trove_core::taskmanager::{TaskManager, TaskManagerConfig};
use trove_core::{CoreConfig, Error, Result};

/// Reads an operator's policy file (YAML or JSON, see [`trove_core::policy::parse_policy_file`]): upstream's
/// default rules with the file's over them. A file that cannot be read or used is an error naming the file, the
/// line and the fault.
pub fn load_policy_file(path: &Path) -> Result<Policy> {
    let bad = |what: String| Error::bad_request(format!("policy file {}: {what}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let policy = Policy::from_policy_file(&text).map_err(|e| bad(e.to_string()))?;
    let set: Vec<&str> = policy.overrides().map(|(name, _)| name).collect();
    tracing::info!(file = %path.display(), rules = ?set, "policy rules set by the policy file");
    Ok(policy)
}

/// Builds a [`ControlPlane`] from port implementations.
#[derive(Default)]
pub struct ControlPlaneBuilder {
    store: Option<DynStore>,
    bus: Option<DynBus>,
    compute: Option<DynCompute>,
    block_storage: Option<DynBlockStorage>,
    backup_store: Option<DynBackupStore>,
    clock: Option<DynClock>,
    authenticator: Option<DynAuthenticator>,
    policy: Option<Arc<Policy>>,
    config: CoreConfig,
    taskmanager: Option<TaskManagerConfig>,
    guest_keys: Option<Arc<dyn GuestKeys>>,
    sealer: Option<trove_core::seal::Sealer>,
    launcher: Option<Arc<InProcessLauncher>>,
    facets: Option<FacetCatalog>,
    no_taskmanager: bool,
    no_conductor: bool,
    no_health_monitor: bool,
}

impl std::fmt::Debug for ControlPlaneBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneBuilder")
            .field("config", &self.config)
            .finish()
    }
}

impl ControlPlaneBuilder {
    /// The infrastructure store (required).
    pub fn store(mut self, store: DynStore) -> Self {
        self.store = Some(store);
        self
    }
    /// The message bus (required).
    pub fn bus(mut self, bus: DynBus) -> Self {
        self.bus = Some(bus);
        self
    }
    /// Compute (required by the task manager).
    pub fn compute(mut self, compute: DynCompute) -> Self {
        self.compute = Some(compute);
        self
    }
    /// Block storage (required by the task manager).
    pub fn block_storage(mut self, storage: DynBlockStorage) -> Self {
        self.block_storage = Some(storage);
        self
    }
    /// Backup object storage.
    pub fn backup_store(mut self, store: DynBackupStore) -> Self {
        self.backup_store = Some(store);
        self
    }
    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: DynClock) -> Self {
        self.clock = Some(clock);
        self
    }
    /// The authenticator the HTTP layer uses (default: `noauth`).
    pub fn authenticator(mut self, auth: DynAuthenticator) -> Self {
        self.authenticator = Some(auth);
        self
    }
    /// The authorization rules of the API (default: upstream's, [`Policy::default`]; an operator's policy file
    /// is read with [`load_policy_file`]).
    pub fn policy(mut self, policy: Arc<Policy>) -> Self {
        self.policy = Some(policy);
        self
    }
    /// Control-plane settings.
    pub fn config(mut self, config: CoreConfig) -> Self {
        self.config = config;
        self
    }
    /// Task-manager worker settings.
    pub fn taskmanager_config(mut self, tm: TaskManagerConfig) -> Self {
        self.taskmanager = Some(tm);
        self
    }
    /// Makes the conductor verify guest report signatures with these keys, and the API and the task manager seal
    /// every request to a guest (and open its replies) with a key derived from that guest's key.
    pub fn guest_keys(mut self, keys: Arc<dyn GuestKeys>) -> Self {
        self.guest_keys = Some(keys);
        self
    }
    /// Seals the secrets of workflow parameters with `sealer`, the deployment's keys (kept outside the store; see
    /// [`crate::secrets`]). Default: a per-process key, whose sealed values do not survive a restart.
    pub fn sealer(mut self, sealer: trove_core::seal::Sealer) -> Self {
        self.sealer = Some(sealer);
        self
    }
    /// What the deployment's datastore strategies offer per manager (build it with
    /// [`FacetCatalog::from_factory`] from the factory the guests use): the API refuses requests for a facet the
    /// instance's strategy lacks at once. Default: what the shipped engines offer.
    pub fn facets(mut self, catalog: FacetCatalog) -> Self {
        self.facets = Some(catalog);
        self
    }
    /// An in-process launcher whose agents are ended on shutdown.
    pub fn in_process_launcher(mut self, launcher: Arc<InProcessLauncher>) -> Self {
        self.launcher = Some(launcher);
        self
    }
    /// Do not run a task manager in this process (an API-only node).
    pub fn without_taskmanager(mut self) -> Self {
        self.no_taskmanager = true;
        self
    }
    /// Do not run a conductor in this process.
    pub fn without_conductor(mut self) -> Self {
        self.no_conductor = true;
        self
    }
    /// Do not run a health monitor in this process.
    pub fn without_health_monitor(mut self) -> Self {
        self.no_health_monitor = true;
        self
    }

    /// Starts the background roles (task manager, conductor, health monitor) as tokio tasks.
    pub async fn start(self) -> Result<ControlPlane> {
        let missing = |what: &str| {
            Error::bad_request(format!("ControlPlane: no {what} was given to the builder."))
        };
        let store = self.store.ok_or_else(|| missing("store"))?;
        let bus = self.bus.ok_or_else(|| missing("message bus"))?;
        let clock: DynClock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let authenticator: DynAuthenticator = self
            .authenticator
            .unwrap_or_else(|| Arc::new(NoAuth::new()));
        let config = self.config;
        let sealing = trove_core::seal::Sealing {
            at_rest: self
                .sealer
                .clone()
                .unwrap_or_else(trove_core::seal::Sealer::process_default),
            guests: self.guest_keys.clone(),
        };
        let (tx, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut taskmanager = None;
        if !self.no_taskmanager {
            let compute = self.compute.clone().ok_or_else(|| missing("compute"))?;
            let storage = self
                .block_storage
                .clone()
                .ok_or_else(|| missing("block storage"))?;
            let tm = Arc::new(
                TaskManager::new(
                    store.clone(),
                    bus.clone(),
                    compute,
                    storage,
                    clock.clone(),
                    config.clone(),
                    self.taskmanager.unwrap_or_default(),
                )
                .with_sealing(sealing.clone()),
            );
            let tm = match &self.backup_store {
                Some(b) => Arc::new(
                    Arc::try_unwrap(tm)
                        .unwrap_or_else(|_| unreachable!("the task manager is not shared yet"))
                        .with_backup_store(b.clone()),
                ),
                None => tm,
            };
            let (t, rx) = (tm.clone(), rx.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = t.run(rx).await {
                    tracing::error!(error = %e, "task manager stopped");
                }
            }));
            taskmanager = Some(tm);
        }
        if !self.no_conductor {
            let c = Conductor::new(
                store.clone(),
                bus.clone(),
                clock.clone(),
                self.guest_keys.clone(),
            );
            let rx = rx.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = c.run(rx).await {
                    tracing::error!(error = %e, "conductor stopped");
                }
            }));
        }
        if !self.no_health_monitor {
            let h = HealthMonitor::new(store.clone(), clock.clone(), config.clone());
            let rx = rx.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = h.run(rx).await {
                    tracing::error!(error = %e, "health monitor stopped");
                }
            }));
        }
        // Give the roles a moment to subscribe, so casts sent right away find a consumer quickly.
        tokio::task::yield_now().await;
        let mut api = ApiService::new(store.clone(), bus.clone(), clock.clone(), config.clone())
            .with_sealing(sealing);
        if let Some(c) = &self.compute {
            // Mgmt migrate checks its host against compute at once.
            api = api.with_compute(c.clone());
        }
        if let Some(f) = self.facets {
            api = api.with_facets(f);
        }
        if let Some(p) = self.policy {
            api = api.with_policy(p);
        }
        let api = Arc::new(api);
        Ok(ControlPlane {
            api,
            store,
            bus,
            compute: self.compute,
            block_storage: self.block_storage,
            backup_store: self.backup_store,
            clock,
            authenticator,
            config,
            taskmanager,
            launcher: self.launcher,
            shutdown: tx,
            tasks,
        })
    }
}

/// The in-memory ports of [`ControlPlane::in_memory`], with their concrete types so tests can inspect them.
#[derive(Clone)]
pub struct InMemoryParts {
    /// Store.
    pub store: Arc<MemoryStore>,
    /// Bus.
    pub bus: Arc<MemoryBus>,
    /// Compute (launches guests with `launcher`).
    pub compute: Arc<MemoryCompute>,
    /// Volumes.
    pub block_storage: Arc<MemoryBlockStorage>,
    /// Backup objects.
    pub backup_store: Arc<MemoryBackupStore>,
    /// Clock.
    pub clock: DynClock,
    /// Simulated engines, one per instance.
    pub engines: Arc<SimulatedStrategyFactory>,
    /// The in-process guest launcher.
    pub launcher: Arc<InProcessLauncher>,
    /// Settings.
    pub config: CoreConfig,
    /// What the guests' strategies offer per manager.
    pub facets: FacetCatalog,
}

impl std::fmt::Debug for InMemoryParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryParts").finish_non_exhaustive()
    }
}

impl InMemoryParts {
    /// Fresh in-memory ports with simulated guests, on `clock`.
    pub fn new(config: CoreConfig, clock: DynClock) -> InMemoryParts {
        let backup_store = Arc::new(MemoryBackupStore::new());
        let engines =
            Arc::new(SimulatedStrategyFactory::new().with_backup_store(backup_store.clone()));
        InMemoryParts::assemble(config, clock, engines.clone(), engines, backup_store)
    }

    /// In-memory ports whose guests run strategies from `factory` (e.g. real engines); `engines` is kept for
    /// inspection only.
    pub fn with_strategies(
        config: CoreConfig,
        clock: DynClock,
        factory: Arc<dyn StrategyFactory>,
        engines: Arc<SimulatedStrategyFactory>,
    ) -> InMemoryParts {
        let backup_store = Arc::new(MemoryBackupStore::new());
        InMemoryParts::assemble(config, clock, factory, engines, backup_store)
    }

    fn assemble(
        config: CoreConfig,
        clock: DynClock,
        factory: Arc<dyn StrategyFactory>,
        engines: Arc<SimulatedStrategyFactory>,
        backup_store: Arc<MemoryBackupStore>,
    ) -> InMemoryParts {
        let bus = Arc::new(MemoryBus::new());
        // Guests publish their logs to the backup store, in the upstream default container.
        let launcher = Arc::new(
            InProcessLauncher::new(
                bus.clone(),
                clock.clone(),
                factory.clone(),
                config.report_interval,
            )
            .with_log_store(trove_core::guest_log::LogStore::new(
                backup_store.clone(),
                trove_core::model::DEFAULT_LOG_CONTAINER,
            )),
        );
        InMemoryParts {
            facets: FacetCatalog::from_factory(factory.as_ref()),
            store: Arc::new(MemoryStore::new()),
            compute: Arc::new(MemoryCompute::new(launcher.clone())),
            block_storage: Arc::new(MemoryBlockStorage::new()),
            backup_store,
            bus,
            clock,
            engines,
            launcher,
            config,
        }
    }

    /// A builder wired with these ports.
    pub fn builder(&self) -> ControlPlaneBuilder {
        ControlPlane::builder()
            .store(self.store.clone())
            .bus(self.bus.clone())
            .compute(self.compute.clone())
            .block_storage(self.block_storage.clone())
            .backup_store(self.backup_store.clone())
            .clock(self.clock.clone())
            .config(self.config.clone())
            .facets(self.facets.clone())
            .in_process_launcher(self.launcher.clone())
    }
}

/// A running control plane.
pub struct ControlPlane {
    api: Arc<ApiService>,
    store: DynStore,
    bus: DynBus,
    compute: Option<DynCompute>,
    block_storage: Option<DynBlockStorage>,
    backup_store: Option<DynBackupStore>,
    clock: DynClock,
    authenticator: DynAuthenticator,
    config: CoreConfig,
    taskmanager: Option<Arc<TaskManager>>,
    launcher: Option<Arc<InProcessLauncher>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("roles", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// A builder to compose port implementations.
    pub fn builder() -> ControlPlaneBuilder {
        ControlPlaneBuilder::default()
    }

    /// Everything in memory with simulated guests and the system clock: no external service at all.
    pub async fn in_memory() -> Result<ControlPlane> {
        ControlPlane::in_memory_with(CoreConfig::default()).await
    }

    /// [`ControlPlane::in_memory`] with settings.
    pub async fn in_memory_with(config: CoreConfig) -> Result<ControlPlane> {
        InMemoryParts::new(config, Arc::new(SystemClock))
            .builder()
            .start()
            .await
    }

    /// The API service (what the REST API does, without HTTP).
    pub fn api(&self) -> Arc<ApiService> {
        self.api.clone()
    }
    /// The store.
    pub fn store(&self) -> DynStore {
        self.store.clone()
    }
    /// The bus.
    pub fn bus(&self) -> DynBus {
        self.bus.clone()
    }
    /// Compute, when given.
    pub fn compute(&self) -> Option<DynCompute> {
        self.compute.clone()
    }
    /// Block storage, when given.
    pub fn block_storage(&self) -> Option<DynBlockStorage> {
        self.block_storage.clone()
    }
    /// Backup storage, when given.
    pub fn backup_store(&self) -> Option<DynBackupStore> {
        self.backup_store.clone()
    }
    /// The clock.
    pub fn clock(&self) -> DynClock {
        self.clock.clone()
    }
    /// The authenticator.
    pub fn authenticator(&self) -> DynAuthenticator {
        self.authenticator.clone()
    }
    /// Settings.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }
    /// The task manager running in this process, if any.
    pub fn taskmanager(&self) -> Option<Arc<TaskManager>> {
        self.taskmanager.clone()
    }

    /// Stops the background roles (and in-process guest agents) and waits for them to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for mut t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(10), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
        if let Some(l) = self.launcher {
            l.shutdown_all().await;
        }
    }
}
