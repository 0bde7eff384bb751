//! Crash injection and the generic crash harness for workflows.
//!
//! [`CrashingStore`] is a layer over any [`InfraStore`]: it lets through all calls until the N-th journal
//! write, which it refuses, and from then on it refuses everything, as if the worker's process had died just
//! before that write (that is, before a step started, or after its side effect but before it was journaled).
//!
//! [`sweep`] runs every [`Scenario`] of every workflow kind of a [`Registry`] (each workflow declares its own in
//! [`WorkflowDef::crash_scenarios`](crate::taskmanager::WorkflowDef::crash_scenarios)) on a fresh in-memory
//! world, crashing the worker before its 1st, 2nd, 3rd... journal write until a run ends without crashing. After
//! each crash a second worker must wait for the dead worker's lease, take the workflow over and close it as the
//! scenario expects, with the scenario's end state and nothing leaked: servers, guests and volumes are exactly
//! those of live instances, quota usage matches the live rows, no workflow is left open and closed workflows
//! hold no secrets. A kind registered without a scenario fails the sweep, so every workflow written later gets
//! crash coverage by registering it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

use crate::api::{
    ApiService, CreateConfiguration, CreateInstance, DatastoreVersionSpec, UpdateInstance,
};
use crate::conductor::Conductor;
use crate::config::CoreConfig;
use crate::error::{Error, Result};
use crate::guest_agent::InProcessLauncher;
use crate::memory::{
    ManualClock, MemoryBackupStore, MemoryBlockStorage, MemoryBus, MemoryCompute, MemoryStore,
    SimulatedStrategyFactory,
};
use crate::model::{
    Backup, BackupFilter, BackupStrategy, BackupStrategyFilter, ConfigParam, Configuration,
    Datastore, DatastoreVersion, Flavor, Instance, InstanceFilter, JournalEntry, QuotaLimits,
    QuotaUsage, RootHistory, ServiceStatusRecord, Workflow, WorkflowKind, WorkflowParams,
    WorkflowState,
};
use crate::ports::{
    BackupStore, BlockStorage, ChangeSet, Clock, Compute, DynStore, Expect, InfraStore,
    RequestContext, Write,
};
use crate::state::TaskStatus;
use crate::taskmanager::{Registry, TaskManager, TaskManagerConfig};

// ---------------------------------------------------------------------------------------------- the layer

/// A store layer that dies before its N-th journal write (see the module docs).
pub struct CrashingStore {
    inner: DynStore,
    crash_at: usize,
    writes: AtomicUsize,
    crashed: AtomicBool,
}

impl std::fmt::Debug for CrashingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashingStore")
            .field("crash_at", &self.crash_at)
            .field("crashed", &self.crashed())
            .finish()
    }
}

impl CrashingStore {
    /// `inner`, dying instead of performing its `crash_before_journal_write`-th journal write (1-based).
    pub fn new(inner: DynStore, crash_before_journal_write: usize) -> Arc<CrashingStore> {
        Arc::new(CrashingStore {
            inner,
            crash_at: crash_before_journal_write,
            writes: AtomicUsize::new(0),
            crashed: AtomicBool::new(false),
        })
    }

    /// Whether the layer died.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Journal writes let through so far.
    pub fn journal_writes(&self) -> usize {
        self.writes
            .load(Ordering::SeqCst)
            .min(self.crash_at.saturating_sub(1))
    }

    fn alive(&self) -> Result<()> {
        if self.crashed() {
            return Err(Error::backend(
                "crash-injection",
                "the process died (injected crash)",
                false,
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl InfraStore for CrashingStore {
    fn catalog_generation(&self) -> u64 {
        self.inner.catalog_generation()
    }
    async fn put_datastore(&self, ds: &Datastore) -> Result<()> {
        self.alive()?;
        self.inner.put_datastore(ds).await
    }
    async fn get_datastore(&self, id_or_name: &str) -> Result<Option<Datastore>> {
        self.alive()?;
        self.inner.get_datastore(id_or_name).await
    }
    async fn list_datastores(&self) -> Result<Vec<Datastore>> {
        self.alive()?;
        self.inner.list_datastores().await
    }
    async fn delete_datastore(&self, id: Uuid) -> Result<()> {
        self.alive()?;
        self.inner.delete_datastore(id).await
    }
    async fn put_datastore_version(&self, v: &DatastoreVersion) -> Result<()> {
        self.alive()?;
        self.inner.put_datastore_version(v).await
    }
    async fn get_datastore_version(&self, id: Uuid) -> Result<Option<DatastoreVersion>> {
        self.alive()?;
        self.inner.get_datastore_version(id).await
    }
    async fn list_datastore_versions(
        &self,
        datastore_id: Option<Uuid>,
    ) -> Result<Vec<DatastoreVersion>> {
        self.alive()?;
        self.inner.list_datastore_versions(datastore_id).await
    }
    async fn delete_datastore_version(&self, id: Uuid) -> Result<()> {
        self.alive()?;
        self.inner.delete_datastore_version(id).await
    }
    async fn put_flavor(&self, f: &Flavor) -> Result<()> {
        self.alive()?;
        self.inner.put_flavor(f).await
    }
    async fn get_flavor(&self, id: &str) -> Result<Option<Flavor>> {
        self.alive()?;
        self.inner.get_flavor(id).await
    }
    async fn list_flavors(&self) -> Result<Vec<Flavor>> {
        self.alive()?;
        self.inner.list_flavors().await
    }
    async fn delete_flavor(&self, id: &str) -> Result<()> {
        self.alive()?;
        self.inner.delete_flavor(id).await
    }
    async fn put_config_params(&self, params: &[ConfigParam]) -> Result<()> {
        self.alive()?;
        self.inner.put_config_params(params).await
    }
    async fn list_config_params(&self, datastore_version_id: Uuid) -> Result<Vec<ConfigParam>> {
        self.alive()?;
        self.inner.list_config_params(datastore_version_id).await
    }
    async fn delete_config_param(&self, datastore_version_id: Uuid, name: &str) -> Result<bool> {
        self.alive()?;
        self.inner
            .delete_config_param(datastore_version_id, name)
            .await
    }
    async fn get_configuration(&self, id: Uuid) -> Result<Option<Configuration>> {
        self.alive()?;
        self.inner.get_configuration(id).await
    }
    async fn list_configurations(&self, tenant_id: &str) -> Result<Vec<Configuration>> {
        self.alive()?;
        self.inner.list_configurations(tenant_id).await
    }
    async fn get_instance(&self, id: Uuid) -> Result<Option<Instance>> {
        self.alive()?;
        self.inner.get_instance(id).await
    }
    async fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>> {
        self.alive()?;
        self.inner.list_instances(filter).await
    }
    async fn list_replica_ids(&self, sources: &[Uuid]) -> Result<Vec<(Uuid, Uuid)>> {
        self.alive()?;
        self.inner.list_replica_ids(sources).await
    }
    async fn get_service_status(&self, instance_id: Uuid) -> Result<Option<ServiceStatusRecord>> {
        self.alive()?;
        self.inner.get_service_status(instance_id).await
    }
    async fn get_service_statuses(
        &self,
        instance_ids: &[Uuid],
    ) -> Result<Vec<ServiceStatusRecord>> {
        self.alive()?;
        self.inner.get_service_statuses(instance_ids).await
    }
    async fn put_service_statuses(&self, batch: &[ServiceStatusRecord]) -> Result<()> {
        self.alive()?;
        self.inner.put_service_statuses(batch).await
    }
    async fn get_backup(&self, id: Uuid) -> Result<Option<Backup>> {
        self.alive()?;
        self.inner.get_backup(id).await
    }
    async fn list_backups(&self, filter: &BackupFilter) -> Result<Vec<Backup>> {
        self.alive()?;
        self.inner.list_backups(filter).await
    }
    async fn list_backup_strategies(
        &self,
        filter: &BackupStrategyFilter,
    ) -> Result<Vec<BackupStrategy>> {
        self.alive()?;
        self.inner.list_backup_strategies(filter).await
    }
    async fn list_backup_schedules(
        &self,
        instance_id: Option<Uuid>,
    ) -> Result<Vec<crate::model::BackupSchedule>> {
        self.alive()?;
        self.inner.list_backup_schedules(instance_id).await
    }
    async fn list_events(
        &self,
        filter: &crate::model::EventFilter,
    ) -> Result<Vec<crate::model::Event>> {
        self.alive()?;
        self.inner.list_events(filter).await
    }
    async fn get_quota_limits(&self, tenant_id: &str) -> Result<QuotaLimits> {
        self.alive()?;
        self.inner.get_quota_limits(tenant_id).await
    }
    async fn set_quota_limits(&self, tenant_id: &str, limits: &QuotaLimits) -> Result<()> {
        self.alive()?;
        self.inner.set_quota_limits(tenant_id, limits).await
    }
    async fn quota_usage(&self, tenant_id: &str) -> Result<QuotaUsage> {
        self.alive()?;
        self.inner.quota_usage(tenant_id).await
    }
    async fn get_root_history(&self, instance_id: Uuid) -> Result<Option<RootHistory>> {
        self.alive()?;
        self.inner.get_root_history(instance_id).await
    }
    async fn get_cluster(&self, id: Uuid) -> Result<Option<crate::model::Cluster>> {
        self.alive()?;
        self.inner.get_cluster(id).await
    }
    async fn list_clusters(&self, tenant_id: Option<&str>) -> Result<Vec<crate::model::Cluster>> {
        self.alive()?;
        self.inner.list_clusters(tenant_id).await
    }
    async fn commit(&self, change: ChangeSet) -> Result<()> {
        self.alive()?;
        self.inner.commit(change).await
    }
    async fn get_workflow(&self, id: Uuid) -> Result<Option<Workflow>> {
        self.alive()?;
        self.inner.get_workflow(id).await
    }
    async fn list_open_workflows(&self) -> Result<Vec<Workflow>> {
        self.alive()?;
        self.inner.list_open_workflows().await
    }
    async fn claim_workflow(
        &self,
        id: Uuid,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Workflow>> {
        self.alive()?;
        self.inner
            .claim_workflow(id, worker, now, lease_until)
            .await
    }
    async fn append_journal(&self, entry: &JournalEntry) -> Result<()> {
        self.alive()?;
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.crash_at {
            self.crashed.store(true, Ordering::SeqCst);
            return self.alive();
        }
        self.inner.append_journal(entry).await
    }
    async fn journal(&self, workflow_id: Uuid) -> Result<Vec<JournalEntry>> {
        self.alive()?;
        self.inner.journal(workflow_id).await
    }
}

// ---------------------------------------------------------------------------------------------- the world

/// What a harness check found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken(pub String);

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Error> for Broken {
    fn from(e: Error) -> Broken {
        Broken(format!("unexpected error: {e}"))
    }
}

/// The outcome of a scenario's set-up or check.
pub type Outcome<T> = std::result::Result<T, Broken>;

/// The host instances are placed on first.
pub const FIRST_HOST: &str = "host-1";
/// The other host (migrations).
pub const SECOND_HOST: &str = "host-2";
/// The image of the datastore version instances are created with.
pub const OLD_IMAGE: &str = "image-old";
/// The image of the datastore version instances can be upgraded to.
pub const NEW_IMAGE: &str = "image-new";
/// The image mgmt rebuilds use.
pub const REBUILD_IMAGE: &str = "5d3ad3a4-05b9-4b2c-8d55-7c4c1a7e0b1e";
const TENANT: &str = "t1";
const DATASTORE: &str = "postgresql";
/// The datastore replication scenarios use (its simulation offers replication).
const REPLICATION_DATASTORE: &str = "mariadb";
/// The datastore cluster scenarios use (its simulation spreads hash slots).
const CLUSTER_DATASTORE: &str = "redis";
/// Its version.
const CLUSTER_VERSION: &str = "7.0";
/// The version a cluster is upgraded to.
const CLUSTER_NEW_VERSION: &str = "7.2";

/// Settings of the harness world: quick guests, short agent timeouts.
pub fn crash_config() -> CoreConfig {
    CoreConfig {
        report_interval: Duration::from_millis(50),
        agent_call_low_timeout: Duration::from_secs(2),
        agent_call_high_timeout: Duration::from_secs(5),
        ..CoreConfig::default()
    }
}

/// A fresh in-memory deployment (store, bus, two-host compute with simulated guests, volumes, conductor, API) on
/// a manual clock, with a `postgresql` datastore of two versions (with the shipped parameter rules) and two
/// flavors.
pub struct CrashWorld {
    /// The API service.
    pub api: Arc<ApiService>,
    /// The store.
    pub store: Arc<MemoryStore>,
    /// The bus.
    pub bus: Arc<MemoryBus>,
    /// Compute.
    pub compute: Arc<MemoryCompute>,
    /// Volumes.
    pub storage: Arc<MemoryBlockStorage>,
    /// Backup objects.
    pub backups: Arc<MemoryBackupStore>,
    /// The simulated engines.
    pub engines: Arc<SimulatedStrategyFactory>,
    /// The guest launcher.
    pub launcher: Arc<InProcessLauncher>,
    /// The clock (moved along by a driver while the world lives).
    pub clock: Arc<ManualClock>,
    /// Settings.
    pub config: CoreConfig,
    old_version: Uuid,
    new_version: Uuid,
    restore_sources: std::sync::Mutex<Vec<(Uuid, Vec<String>)>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for CrashWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashWorld").finish_non_exhaustive()
    }
}

impl CrashWorld {
    /// A new world (see the type docs).
    pub async fn new() -> Outcome<CrashWorld> {
        let config = crash_config();
        let clock = Arc::new(ManualClock::new());
        let bus = Arc::new(MemoryBus::new());
        let backups = Arc::new(MemoryBackupStore::new());
        let engines = Arc::new(SimulatedStrategyFactory::new().with_backup_store(backups.clone()));
        let launcher = Arc::new(InProcessLauncher::new(
            bus.clone(),
            clock.clone(),
            engines.clone(),
            config.report_interval,
        ));
        let compute = Arc::new(MemoryCompute::with_hosts(
            vec![FIRST_HOST.into(), SECOND_HOST.into()],
            launcher.clone(),
        ));
        let store = Arc::new(MemoryStore::new());
        let storage = Arc::new(MemoryBlockStorage::new());
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let conductor = Conductor::new(store.clone(), bus.clone(), clock.clone(), None);
        let mut crx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = conductor.run(crx.clone()).await;
            let _ = crx.changed().await;
        }));
        // Time moves on its own while anything waits on the clock (guests between heartbeats, a task manager
        // between polls): a fast clock, so that waits end without real delays.
        let driver = clock.clone();
        let mut drx = rx;
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = drx.changed() => break,
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {
                        if driver.sleepers() > 0 {
                            driver.advance(Duration::from_millis(5));
                        }
                    }
                }
            }
        }));
        let api = Arc::new(
            ApiService::new(store.clone(), bus.clone(), clock.clone(), config.clone())
                .with_compute(compute.clone())
                .with_facets(crate::ports::FacetCatalog::from_factory(engines.as_ref())),
        );
        let admin = RequestContext::admin("admin");
        let mut versions = Vec::new();
        for (name, image, default) in [("15", OLD_IMAGE, true), ("16", NEW_IMAGE, false)] {
            let v = api
                .mgmt_create_datastore_version(
                    &admin,
                    DatastoreVersionSpec {
                        datastore_name: DATASTORE.into(),
                        name: name.into(),
                        manager: DATASTORE.into(),
                        image: image.into(),
                        active: true,
                        default,
                        ..Default::default()
                    },
                )
                .await?;
            versions.push(v.version.id);
        }
        for (name, image, default) in [
            (CLUSTER_VERSION, OLD_IMAGE, true),
            (CLUSTER_NEW_VERSION, NEW_IMAGE, false),
        ] {
            api.mgmt_create_datastore_version(
                &admin,
                DatastoreVersionSpec {
                    datastore_name: CLUSTER_DATASTORE.into(),
                    name: name.into(),
                    manager: CLUSTER_DATASTORE.into(),
                    image: image.into(),
                    active: true,
                    default,
                    ..Default::default()
                },
            )
            .await?;
        }
        api.mgmt_create_datastore_version(
            &admin,
            DatastoreVersionSpec {
                datastore_name: REPLICATION_DATASTORE.into(),
                name: "10.11".into(),
                manager: REPLICATION_DATASTORE.into(),
                image: OLD_IMAGE.into(),
                active: true,
                default: true,
                ..Default::default()
            },
        )
        .await?;
        for (id, ram_mb) in [("1", 512), ("2", 1024)] {
            api.mgmt_put_flavor(
                &admin,
                Flavor {
                    id: id.into(),
                    name: format!("flavor-{id}"),
                    ram_mb,
                    vcpus: 1,
                    disk_gb: 5,
                    ephemeral_gb: 0,
                },
            )
            .await?;
        }
        // The shipped PostgreSQL parameter rules (work_mem applies live, shared_buffers needs a restart).
        let rules = crate::manage::default_validation_rules(crate::model::Manager::Postgresql)
            .ok_or_else(|| Broken("no shipped PostgreSQL rules".into()))?;
        for &v in &versions {
            store
                .put_config_params(&crate::manage::parse_validation_rules(rules, v)?)
                .await?;
        }
        Ok(CrashWorld {
            api,
            store,
            bus,
            compute,
            storage,
            backups,
            engines,
            launcher,
            clock,
            config,
            old_version: versions[0],
            new_version: versions[1],
            restore_sources: std::sync::Mutex::new(Vec::new()),
            shutdown,
            tasks,
        })
    }

    /// Stops the world's background tasks and guests.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        self.launcher.shutdown_all().await;
    }

    /// The project member scenarios act as.
    pub fn tenant(&self) -> RequestContext {
        RequestContext::tenant(TENANT)
    }

    /// An admin.
    pub fn admin(&self) -> RequestContext {
        RequestContext::admin("admin")
    }

    /// The version instances are created with.
    pub fn old_version_id(&self) -> Uuid {
        self.old_version
    }

    /// A task manager worker on `store`.
    pub fn task_manager(&self, worker: &str, store: DynStore, registry: &Registry) -> TaskManager {
        TaskManager::new(
            store,
            self.bus.clone(),
            self.compute.clone(),
            self.storage.clone(),
            self.clock.clone(),
            self.config.clone(),
            TaskManagerConfig {
                worker_id: worker.into(),
                poll_interval: Duration::from_millis(5),
                ..TaskManagerConfig::default()
            },
        )
        .with_registry(registry.clone())
        .with_backup_store(self.backups.clone())
    }

    /// Runs every open workflow to its end on a healthy worker, concurrently (a workflow may wait for others,
    /// even ones it starts itself: a cluster's for its members'). Workflows another worker holds a live lease on
    /// are left alone.
    pub async fn settle(&self) -> Outcome<()> {
        let tm = Arc::new(self.task_manager("settler", self.store.clone(), &Registry::standard()));
        let mut in_flight = std::collections::HashSet::new();
        let mut unclaimable = std::collections::HashSet::new();
        let mut set = tokio::task::JoinSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let mut started = 0;
            for w in self.store.list_open_workflows().await? {
                if in_flight.contains(&w.id) || unclaimable.contains(&w.id) {
                    continue;
                }
                in_flight.insert(w.id);
                started += 1;
                let tm = tm.clone();
                set.spawn(async move { (w.id, tm.run_workflow(w.id).await) });
            }
            if set.is_empty() && started == 0 {
                tm.purge_backup_objects().await?;
                return Ok(());
            }
            tokio::select! {
                Some(done) = set.join_next() => {
                    let (id, ran) = done.map_err(|e| Broken(format!("a workflow run panicked: {e}")))?;
                    in_flight.remove(&id);
                    if !ran? {
                        unclaimable.insert(id);
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
            if std::time::Instant::now() > deadline {
                return Err(Broken("workflows keep appearing or do not end".into()));
            }
        }
    }

    /// Asks the API for an instance (its create workflow is left pending).
    pub async fn create_instance(&self, name: &str) -> Outcome<Uuid> {
        self.create_of(name, DATASTORE).await
    }

    /// Asks the API for an instance of `datastore` (its create workflow is left pending).
    async fn create_of(&self, name: &str, datastore: &str) -> Outcome<Uuid> {
        let v = self
            .api
            .create_instance(
                &self.tenant(),
                CreateInstance {
                    name: name.into(),
                    flavor_ref: Some("1".into()),
                    volume_size: Some(2),
                    datastore: Some(datastore.into()),
                    ..Default::default()
                },
            )
            .await?;
        Ok(v.instance.id)
    }

    /// Asks the API for a full backup of `id` (its workflow is left pending); answers the backup's id.
    pub async fn take_backup(&self, id: Uuid) -> Outcome<Uuid> {
        let v = self
            .api
            .create_backup(
                &self.tenant(),
                crate::api::CreateBackup {
                    name: "b".into(),
                    instance: Some(id),
                    ..Default::default()
                },
            )
            .await?;
        Ok(v.backup.id)
    }

    /// Every live backup of `id` is COMPLETED, and its object is in the store with the recorded size and
    /// checksum.
    pub async fn expect_backups_completed(&self, id: Uuid) -> Outcome<()> {
        let all = self
            .store
            .list_backups(&BackupFilter {
                instance_id: Some(id),
                ..Default::default()
            })
            .await?;
        self.expect(!all.is_empty(), "the instance has no backup")?;
        for b in all {
            self.expect(
                b.state == crate::state::BackupState::Completed,
                &format!("backup {} is {} ({:?})", b.id, b.state.as_str(), b.fault),
            )?;
            let key = b.location.clone().unwrap_or_default();
            let found = self.backups.list(&key).await?;
            self.expect(
                found.iter().any(|o| {
                    o.key == key
                        && Some(&o.checksum) == b.checksum.as_ref()
                        && Some(o.size) == b.bytes
                }),
                &format!("backup {} has no object matching its record at {key}", b.id),
            )?;
        }
        Ok(())
    }

    /// Asks the API for an instance restored from the latest completed backup of `source` (its create workflow is
    /// left pending). Before, a database `restored_db` is created on the source after the backup, so a restore
    /// that brings it (a later state) is told from one that does not.
    pub async fn create_restored(&self, name: &str, source: Uuid) -> Outcome<Uuid> {
        let b = self
            .store
            .list_backups(&BackupFilter {
                instance_id: Some(source),
                ..Default::default()
            })
            .await?
            .into_iter()
            .filter(|b| b.state == crate::state::BackupState::Completed)
            .max_by_key(|b| b.created)
            .ok_or_else(|| Broken("the source has no completed backup".into()))?;
        self.restore_sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((source, self.engines.engine(source).databases()));
        self.add_database(source, "after_backup").await?;
        let v = self
            .api
            .create_instance(
                &self.tenant(),
                CreateInstance {
                    name: name.into(),
                    flavor_ref: Some("1".into()),
                    volume_size: Some(2),
                    datastore: Some(DATASTORE.into()),
                    restore_point: Some(b.id),
                    ..Default::default()
                },
            )
            .await?;
        Ok(v.instance.id)
    }

    /// Creates database `name` on instance `id` through the API.
    pub async fn add_database(&self, id: Uuid, name: &str) -> Outcome<()> {
        self.api
            .create_databases(
                &self.tenant(),
                id,
                vec![crate::model::DatabaseSpec {
                    name: name.into(),
                    character_set: None,
                    collate: None,
                }],
            )
            .await?;
        Ok(())
    }

    /// The engine of `id` holds exactly the databases its source had when the backup was taken.
    pub async fn expect_restored(&self, id: Uuid) -> Outcome<()> {
        let (src, dbs) = self
            .restore_sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
            .ok_or_else(|| Broken("no restore was asked for".into()))?;
        let got = self.engines.engine(id).databases();
        self.expect(
            got == dbs,
            &format!("restored databases {got:?}, the source {src} had {dbs:?} at the backup"),
        )
    }

    /// An ACTIVE instance (created and built by a healthy worker).
    pub async fn active_instance(&self, name: &str) -> Outcome<Uuid> {
        let id = self.create_instance(name).await?;
        self.settle().await?;
        self.expect_active(id).await?;
        Ok(id)
    }

    /// Asks the API to upgrade `id` to the other datastore version.
    pub async fn upgrade(&self, id: Uuid) -> Outcome<()> {
        self.api
            .update_instance(
                &self.tenant(),
                id,
                UpdateInstance {
                    datastore_version: Some(self.new_version.to_string()),
                    ..Default::default()
                },
            )
            .await?;
        Ok(())
    }

    /// A configuration group with `values` (on the instances' version).
    pub async fn configuration(&self, values: &[(&str, Value)]) -> Outcome<Uuid> {
        let values: Map<String, Value> = values
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let c = self
            .api
            .create_configuration(
                &self.tenant(),
                CreateConfiguration {
                    name: "cfg".into(),
                    description: None,
                    values,
                    datastore: Some(DATASTORE.into()),
                    datastore_version: Some("15".into()),
                    datastore_version_number: None,
                },
            )
            .await?;
        Ok(c.configuration.id)
    }

    /// Asks the API to attach group `cid` to `id`.
    pub async fn attach_configuration(&self, id: Uuid, cid: Uuid) -> Outcome<()> {
        self.api
            .update_instance(
                &self.tenant(),
                id,
                UpdateInstance {
                    configuration: Some(Some(cid)),
                    ..Default::default()
                },
            )
            .await?;
        Ok(())
    }

    /// Asks the API to detach `id`'s configuration group.
    pub async fn detach_configuration(&self, id: Uuid) -> Outcome<()> {
        self.api
            .update_instance(
                &self.tenant(),
                id,
                UpdateInstance {
                    configuration: Some(None),
                    ..Default::default()
                },
            )
            .await?;
        Ok(())
    }

    /// The guest's service status as stored.
    pub async fn service_status(&self, id: Uuid) -> Outcome<Option<crate::state::ServiceStatus>> {
        Ok(self.store.get_service_status(id).await?.map(|s| s.status))
    }

    /// The host `id` does not run on.
    pub async fn other_host(&self, id: Uuid) -> Outcome<String> {
        let s = self
            .compute
            .get_server(id)
            .await?
            .ok_or_else(|| Broken(format!("instance {id} has no server")))?;
        Ok(if s.host == FIRST_HOST {
            SECOND_HOST
        } else {
            FIRST_HOST
        }
        .into())
    }

    /// A `mariadb` source and `n` replicas of it, all ACTIVE (built by a healthy worker), with a database made
    /// on the source before and one after the replicas; answers (source, replicas).
    pub async fn replication_set(&self, name: &str, n: u32) -> Outcome<(Uuid, Vec<Uuid>)> {
        let source = self.replica_source(name).await?;
        self.create_replicas(source, n).await?;
        self.settle().await?;
        let replicas: Vec<Uuid> = self
            .store
            .list_instances(&InstanceFilter {
                replica_of: Some(source),
                ..Default::default()
            })
            .await?
            .into_iter()
            .map(|i| i.id)
            .collect();
        self.expect(
            replicas.len() == n as usize,
            &format!("{} replicas built, {n} asked for", replicas.len()),
        )?;
        for r in &replicas {
            self.expect_active(*r).await?;
        }
        self.add_database(source, "after_replicas").await?;
        self.expect_one_source(source).await?;
        Ok((source, replicas))
    }

    /// An ACTIVE `mariadb` instance (its simulation offers replication) with a database `before_replicas`.
    pub async fn replica_source(&self, name: &str) -> Outcome<Uuid> {
        let source = self.create_of(name, REPLICATION_DATASTORE).await?;
        self.settle().await?;
        self.expect_active(source).await?;
        self.add_database(source, "before_replicas").await?;
        Ok(source)
    }

    /// Asks the API for `n` replicas of `source` (their create workflows are left pending); answers the first.
    pub async fn create_replicas(&self, source: Uuid, n: u32) -> Outcome<Uuid> {
        let v = self
            .api
            .create_instance(
                &self.tenant(),
                CreateInstance {
                    name: "replica".into(),
                    replica_of: Some(source),
                    replica_count: Some(n),
                    ..Default::default()
                },
            )
            .await?;
        Ok(v.instance.id)
    }

    /// Asks the API to detach replica `id`.
    pub async fn detach(&self, id: Uuid) -> Outcome<()> {
        self.api
            .update_instance(
                &self.tenant(),
                id,
                UpdateInstance {
                    replica_of: Some(None),
                    ..Default::default()
                },
            )
            .await?;
        Ok(())
    }

    /// Asks the API to promote replica `id` to source.
    pub async fn promote(&self, id: Uuid) -> Outcome<()> {
        self.api
            .promote_to_replica_source(&self.tenant(), id)
            .await?;
        Ok(())
    }

    /// Kills source `id`'s guest (its engine stops with it), lets its heartbeat expire and asks the API to eject
    /// it.
    pub async fn eject(&self, id: Uuid) -> Outcome<()> {
        use crate::ports::GuestLauncher;
        self.launcher.stop(id).await?;
        self.clock
            .advance(self.config.agent_heartbeat_expiry + Duration::from_secs(1));
        self.api.eject_replica_source(&self.tenant(), id).await?;
        Ok(())
    }

    /// Asks the API for a `redis` cluster of `n` members (every workflow left pending); answers its first member,
    /// on which the cluster's workflows run.
    pub async fn cluster(&self, name: &str, n: usize) -> Outcome<Uuid> {
        self.cluster_with_replicas(name, n, 0).await
    }

    /// [`Self::cluster`] with `replicas` shard replicas besides its `n` primaries.
    pub async fn cluster_with_replicas(
        &self,
        name: &str,
        n: usize,
        replicas: usize,
    ) -> Outcome<Uuid> {
        let mut instances = vec![Self::member_request(); n];
        instances.extend(vec![Self::replica_request(); replicas]);
        let v = self
            .api
            .create_cluster(
                &self.tenant(),
                crate::api::CreateCluster {
                    name: name.into(),
                    datastore: CLUSTER_DATASTORE.into(),
                    datastore_version: CLUSTER_VERSION.into(),
                    instances,
                    ..Default::default()
                },
            )
            .await?;
        let first = v
            .members
            .first()
            .ok_or_else(|| Broken("the cluster has no members".into()))?;
        Ok(first.instance.id)
    }

    fn member_request() -> crate::api::ClusterMemberRequest {
        crate::api::ClusterMemberRequest {
            flavor_ref: Some("1".into()),
            volume_size: Some(2),
            ..Default::default()
        }
    }

    fn replica_request() -> crate::api::ClusterMemberRequest {
        crate::api::ClusterMemberRequest {
            kind: Some("replica".into()),
            ..Self::member_request()
        }
    }

    /// A built cluster of `n` (its workflows run by a healthy worker); answers its first member.
    pub async fn cluster_built(&self, name: &str, n: usize) -> Outcome<Uuid> {
        let first = self.cluster(name, n).await?;
        self.settle().await?;
        self.expect_cluster(first, n).await?;
        Ok(first)
    }

    /// The cluster of member `member`.
    pub async fn cluster_of(&self, member: Uuid) -> Outcome<crate::model::Cluster> {
        let inst = self.instance(member).await?;
        let cid = inst
            .cluster_id
            .ok_or_else(|| Broken(format!("instance {member} is in no cluster")))?;
        self.store
            .get_cluster(cid)
            .await?
            .ok_or_else(|| Broken(format!("cluster {cid} is not stored")))
    }

    /// The live members of the cluster of `member`, oldest first.
    pub async fn cluster_members(&self, member: Uuid) -> Outcome<Vec<Instance>> {
        let c = self.cluster_of(member).await?;
        Ok(
            crate::taskmanager::workflows::cluster::cluster_members(self.store.as_ref(), c.id)
                .await?,
        )
    }

    /// Asks the API to grow the cluster of `member` by `n` (workflows left pending).
    pub async fn grow_cluster(&self, member: Uuid, n: usize) -> Outcome<()> {
        self.grow_cluster_with_replicas(member, n, 0).await
    }

    /// [`Self::grow_cluster`] by `n` primaries and `replicas` replicas.
    pub async fn grow_cluster_with_replicas(
        &self,
        member: Uuid,
        n: usize,
        replicas: usize,
    ) -> Outcome<()> {
        let c = self.cluster_of(member).await?;
        let mut asked = vec![Self::member_request(); n];
        asked.extend(vec![Self::replica_request(); replicas]);
        self.api
            .cluster_action(&self.tenant(), c.id, crate::api::ClusterAction::Grow(asked))
            .await?;
        Ok(())
    }

    /// Asks the API to shrink the cluster of `member` by its `n` newest members (workflow left pending).
    pub async fn shrink_cluster(&self, member: Uuid, n: usize) -> Outcome<()> {
        let c = self.cluster_of(member).await?;
        let members = self.cluster_members(member).await?;
        let leaving: Vec<Uuid> = members.iter().rev().take(n).map(|m| m.id).collect();
        self.api
            .cluster_action(
                &self.tenant(),
                c.id,
                crate::api::ClusterAction::Shrink(leaving),
            )
            .await?;
        Ok(())
    }

    /// Asks the API to upgrade the cluster of `member` to the cluster datastore's second version (workflow left
    /// pending).
    pub async fn upgrade_cluster(&self, member: Uuid) -> Outcome<()> {
        let c = self.cluster_of(member).await?;
        self.api
            .cluster_action(
                &self.tenant(),
                c.id,
                crate::api::ClusterAction::Upgrade(CLUSTER_NEW_VERSION.into()),
            )
            .await?;
        Ok(())
    }

    /// Asks the API to restart the cluster of `member`, one member at a time (workflow left pending).
    pub async fn restart_cluster(&self, member: Uuid) -> Outcome<()> {
        let c = self.cluster_of(member).await?;
        self.api
            .cluster_action(&self.tenant(), c.id, crate::api::ClusterAction::Restart)
            .await?;
        Ok(())
    }

    /// The cluster of `member` and every member of it run the cluster datastore's second version, each member's
    /// server rebuilt once from its image.
    pub async fn expect_cluster_upgraded(&self, member: Uuid) -> Outcome<()> {
        let c = self.cluster_of(member).await?;
        let v = self
            .store
            .get_datastore_version(c.datastore_version_id)
            .await?
            .ok_or_else(|| Broken("the cluster's version is not stored".into()))?;
        self.expect(
            v.name == CLUSTER_NEW_VERSION,
            &format!("the cluster runs version '{}'", v.name),
        )?;
        for m in self.cluster_members(member).await? {
            let (image, _) = self.compute.rebuilds(m.id);
            self.expect(
                m.datastore_version_id == v.id && image.as_deref() == Some(NEW_IMAGE),
                &format!("member {} does not run the new version", m.id),
            )?;
        }
        Ok(())
    }

    /// Asks the API to delete the cluster of `member` (workflow left pending).
    pub async fn delete_cluster(&self, member: Uuid) -> Outcome<()> {
        let c = self.cluster_of(member).await?;
        self.api.delete_cluster(&self.tenant(), c.id).await?;
        Ok(())
    }

    /// Every member of the cluster of `member` stops (its engine crashes) and stays down past the grace; a
    /// monitoring worker starts the recovery workflow (left pending).
    pub async fn stop_cluster_fully(&self, member: Uuid) -> Outcome<()> {
        let members = self.cluster_members(member).await?;
        for m in &members {
            self.engines.engine(m.id).crash("the host lost power");
        }
        // The guests report their engines down.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ids: Vec<Uuid> = members.iter().map(|m| m.id).collect();
            let st = self.store.get_service_statuses(&ids).await?;
            if st.len() == ids.len() && st.iter().all(|s| !s.status.is_datastore_running()) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(Broken(
                    "the guests never reported their engines down".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let monitor = self.task_manager("monitor", self.store.clone(), &Registry::standard());
        monitor.check_cluster_stops().await?;
        self.clock
            .advance(self.config.failover_grace + Duration::from_secs(1));
        // Fresh reports after the jump.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = monitor.check_cluster_stops().await?;
        self.expect(
            started.len() == 1,
            &format!("{} recoveries started", started.len()),
        )
    }

    /// The cluster of `member` is built with `n` members: task NONE without a fault, every member ACTIVE and a
    /// member of it in its engine, and the hash slots spread evenly over them.
    pub async fn expect_cluster(&self, member: Uuid, n: usize) -> Outcome<()> {
        let c = self.cluster_of(member).await?;
        self.expect(
            c.task == crate::model::ClusterTask::None && c.fault.is_none(),
            &format!("cluster task {:?}, fault {:?}", c.task, c.fault),
        )?;
        let members = self.cluster_members(member).await?;
        self.expect(
            members.len() == n,
            &format!("{} members, {n} expected", members.len()),
        )?;
        let mut slots = Vec::new();
        for m in &members {
            self.expect_active(m.id).await?;
            let e = self.engines.engine(m.id);
            self.expect(
                e.cluster_id() == Some(c.id),
                &format!("member {} has not joined the cluster in its engine", m.id),
            )?;
            if let Some(p) = c.replicas.get(&m.id) {
                self.expect(
                    e.cluster_slots() == 0 && members.iter().any(|x| x.id == *p),
                    &format!("replica {} owns slots or serves a non-member", m.id),
                )?;
            } else {
                slots.push(e.cluster_slots());
            }
        }
        let total: u32 = slots.iter().sum();
        let (lo, hi) = (
            slots.iter().min().copied().unwrap_or(0),
            slots.iter().max().copied().unwrap_or(0),
        );
        self.expect(
            total == 16384 && hi - lo <= 1,
            &format!("hash slots per member {slots:?}"),
        )
    }

    /// The cluster of `member` is deleted, with every member it ever had.
    pub async fn expect_cluster_deleted(&self, member: Uuid) -> Outcome<()> {
        let c = self.cluster_of(member).await?;
        self.expect(c.deleted, "the cluster is not marked deleted")?;
        let all = self
            .store
            .list_instances(&InstanceFilter {
                cluster_id: Some(c.id),
                include_deleted: true,
                ..Default::default()
            })
            .await?;
        for m in all {
            self.expect_deleted(m.id).await?;
        }
        Ok(())
    }

    /// Replica `id` stands alone: no source in the store or in its engine, and it takes writes.
    pub async fn expect_standalone_writable(&self, id: Uuid) -> Outcome<()> {
        let inst = self.instance(id).await?;
        let engine = self.engines.engine(id);
        self.expect(
            inst.replica_of.is_none(),
            "the instance still names a source",
        )?;
        self.expect(
            engine.following().is_none() && !engine.is_read_only(),
            "the engine still follows a source or refuses writes",
        )?;
        self.add_database(id, "written_after_detach").await
    }

    /// The replication set of member `id` (looked up through the store) has exactly one source: every other
    /// member names it in the store and follows it in its engine, read only, with the source's databases; the
    /// source takes writes. A member whose guest is gone (an ejected source) must name the source and carry a
    /// fault; its guest is started again so that the leak checks find every server with its guest.
    pub async fn expect_one_source(&self, id: Uuid) -> Outcome<()> {
        let all = self
            .store
            .list_instances(&InstanceFilter {
                tenant_id: Some(TENANT.into()),
                ..Default::default()
            })
            .await?;
        let inst = self.instance(id).await?;
        let root = inst.replica_of.unwrap_or(id);
        let mut members: Vec<Instance> = all
            .into_iter()
            .filter(|i| i.id == root || i.replica_of == Some(root))
            .collect();
        // A member may name a member that is not the root (a half-settled promote): the set is all of them.
        let sources: Vec<Uuid> = members
            .iter()
            .filter(|m| m.replica_of.is_none())
            .map(|m| m.id)
            .collect();
        if sources.len() != 1 {
            // The root is itself a replica now: follow it to its source.
            if let Some(next) = members
                .iter()
                .find(|m| m.id == root)
                .and_then(|m| m.replica_of)
            {
                if next != root {
                    return Box::pin(self.expect_one_source(next)).await;
                }
            }
        }
        self.expect(
            sources.len() == 1,
            &format!(
                "the set of {id} has {} sources in the store: {sources:?}",
                sources.len()
            ),
        )?;
        let source = sources[0];
        members.sort_by_key(|m| m.id != source);
        let want = self.engines.engine(source).databases();
        let running = self.launcher.running().await;
        for m in &members {
            self.expect(
                m.task == TaskStatus::None,
                &format!(
                    "member {} has task {:?} (fault {:?})",
                    m.id, m.task, m.fault
                ),
            )?;
            let engine = self.engines.engine(m.id);
            if m.id == source {
                self.expect(
                    engine.following().is_none() && !engine.is_read_only(),
                    "the source's engine follows another or refuses writes",
                )?;
                continue;
            }
            self.engines.sync(m.id);
            if !running.contains(&m.id) {
                self.expect(
                    m.fault.is_some(),
                    &format!("member {} has no guest and no fault saying so", m.id),
                )?;
                let spec = self
                    .compute
                    .spec(m.id)
                    .ok_or_else(|| Broken(format!("member {} has no server", m.id)))?;
                crate::ports::Compute::create_server(self.compute.as_ref(), &spec).await?;
                continue;
            }
            self.expect(
                engine.following() == Some(source) && engine.is_read_only(),
                &format!(
                    "member {} follows {:?} (read only: {}), not the source {source}",
                    m.id,
                    engine.following(),
                    engine.is_read_only()
                ),
            )?;
            self.expect(
                engine.databases() == want,
                &format!(
                    "member {} has {:?}, its source {:?}",
                    m.id,
                    engine.databases(),
                    want
                ),
            )?;
        }
        Ok(())
    }

    /// Inserts a pending workflow with `params` for `id` directly (for workflows no API route asks for yet).
    pub async fn insert_workflow<P: WorkflowParams>(&self, id: Uuid, params: &P) -> Outcome<()> {
        let wf = Workflow::new(id, params, self.clock.now())?;
        self.store
            .commit(ChangeSet::new().with(Write::Workflow {
                workflow: wf,
                expect: Expect::Absent,
            }))
            .await?;
        Ok(())
    }

    /// The instance as stored.
    pub async fn instance(&self, id: Uuid) -> Outcome<Instance> {
        self.store
            .get_instance(id)
            .await?
            .ok_or_else(|| Broken(format!("instance {id} is gone from the store")))
    }

    /// `Ok` when `cond` holds, else a failure saying `what`.
    pub fn expect(&self, cond: bool, what: &str) -> Outcome<()> {
        if cond {
            Ok(())
        } else {
            Err(Broken(what.into()))
        }
    }

    /// The instance is ACTIVE with task NONE, a server, a prepared running engine and a healthy status.
    pub async fn expect_active(&self, id: Uuid) -> Outcome<()> {
        let inst = self.instance(id).await?;
        self.expect(
            inst.task == TaskStatus::None && !inst.deleted,
            &format!(
                "instance not ready: task {:?}, fault {:?}",
                inst.task, inst.fault
            ),
        )?;
        let view = self.api.show_instance(&self.tenant(), id).await?;
        self.expect(
            view.status == "ACTIVE",
            &format!("instance status {} (fault {:?})", view.status, inst.fault),
        )?;
        self.expect(
            self.compute.get_server(id).await?.is_some(),
            "the instance has no server",
        )?;
        let engine = self.engines.engine(id);
        self.expect(
            engine.is_prepared() && engine.is_running(),
            "the engine is not prepared and running",
        )
    }

    /// The instance is deleted and its resources are gone.
    pub async fn expect_deleted(&self, id: Uuid) -> Outcome<()> {
        let inst = self.instance(id).await?;
        self.expect(inst.deleted, "the instance is not marked deleted")?;
        self.expect(
            self.compute.get_server(id).await?.is_none(),
            "the server is left",
        )?;
        self.expect(
            self.storage.get_volume(id).await?.is_none(),
            "the volume is left",
        )
    }

    /// Nothing leaked: servers, guests and volumes are exactly those of live instances, quota usage matches the
    /// live rows, and no workflow is open.
    pub async fn expect_no_leaks(&self) -> Outcome<()> {
        let live = self
            .store
            .list_instances(&InstanceFilter {
                tenant_id: Some(TENANT.into()),
                include_clustered: true,
                ..Default::default()
            })
            .await?;
        let mut with_server: Vec<Uuid> = live
            .iter()
            .filter(|i| i.server_id.is_some())
            .map(|i| i.id)
            .collect();
        with_server.sort();
        let mut servers: Vec<Uuid> = self
            .compute
            .servers()
            .iter()
            .map(|s| s.instance_id)
            .collect();
        servers.sort();
        self.expect(
            servers == with_server,
            &format!("servers {servers:?}, instances with a server {with_server:?}"),
        )?;
        let mut guests = self.launcher.running().await;
        guests.sort();
        self.expect(
            guests == with_server,
            &format!("guests {guests:?}, instances with a server {with_server:?}"),
        )?;
        let mut with_volume: Vec<Uuid> = live
            .iter()
            .filter(|i| i.volume_id.is_some())
            .map(|i| i.id)
            .collect();
        with_volume.sort();
        let mut volumes: Vec<Uuid> = self
            .storage
            .volumes()
            .iter()
            .map(|v| v.instance_id)
            .collect();
        volumes.sort();
        self.expect(
            volumes == with_volume,
            &format!("volumes {volumes:?}, instances with a volume {with_volume:?}"),
        )?;
        let usage = self.store.quota_usage(TENANT).await?;
        let expected = QuotaUsage {
            instances: live.len() as i64,
            ram: live.iter().map(|i| i64::from(i.ram_mb)).sum(),
            volumes: live
                .iter()
                .map(|i| i64::from(i.volume_size.unwrap_or(0)))
                .sum(),
            backups: usage.backups,
        };
        self.expect(
            usage == expected,
            &format!("quota usage {usage:?}, live rows {expected:?}"),
        )?;
        let keep: Vec<String> = self
            .store
            .list_backups(&BackupFilter::default())
            .await?
            .into_iter()
            .filter(|b| b.state == crate::state::BackupState::Completed)
            .filter_map(|b| b.location)
            .collect();
        let objects: Vec<String> = self
            .backups
            .list("")
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let stray: Vec<&String> = objects.iter().filter(|k| !keep.contains(k)).collect();
        self.expect(
            stray.is_empty(),
            &format!("backup objects of no completed backup are left: {stray:?}"),
        )?;
        let open = self.store.list_open_workflows().await?;
        self.expect(
            open.is_empty(),
            &format!(
                "open workflows left: {:?}",
                open.iter().map(|w| &w.kind).collect::<Vec<_>>()
            ),
        )?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------- scenarios

/// Starts a scenario: brings a fresh world to the state the workflow starts from, asks for the workflow and
/// answers the instance it works on.
pub type StartFn = for<'a> fn(&'a CrashWorld) -> BoxFuture<'a, Outcome<Uuid>>;
/// Checks a scenario's end state (beyond the generic leak checks).
pub type CheckFn = for<'a> fn(&'a CrashWorld, Uuid) -> BoxFuture<'a, Outcome<()>>;

/// One way the harness exercises a workflow.
#[derive(Clone)]
pub struct Scenario {
    /// Name, for reports.
    pub name: &'static str,
    start: StartFn,
    check: Option<CheckFn>,
    /// The state the workflow must end in (`None`: either, as the check decides).
    expect: Option<WorkflowState>,
    /// Other workflows (those the workflow waits for) run on a healthy worker meanwhile.
    helpers: bool,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .field("expect", &self.expect)
            .finish()
    }
}

impl Scenario {
    /// A scenario that starts with `start` and expects the workflow to succeed.
    pub fn new(name: &'static str, start: StartFn) -> Scenario {
        Scenario {
            name,
            start,
            check: None,
            expect: Some(WorkflowState::Done),
            helpers: false,
        }
    }

    /// Runs the other open workflows (those this one waits for, such as a cluster's members' creates and
    /// deletes) on a healthy worker while the swept workflow runs and after its worker died.
    pub fn with_helpers(mut self) -> Scenario {
        self.helpers = true;
        self
    }

    /// Checks the end state with `check`.
    pub fn check(mut self, check: CheckFn) -> Scenario {
        self.check = Some(check);
        self
    }

    /// Expects the workflow to end failed.
    pub fn fails(mut self) -> Scenario {
        self.expect = Some(WorkflowState::Failed);
        self
    }

    /// Lets the workflow end either way (its check tells the outcomes apart): for failures a crash may undo, such
    /// as a guest request that fails once and succeeds when a resumed worker sends it again.
    pub fn ends_either_way(mut self) -> Scenario {
        self.expect = None;
        self
    }
}

/// What the sweep of one scenario found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// The workflow kind.
    pub kind: WorkflowKind,
    /// The scenario.
    pub scenario: &'static str,
    /// Crash points exercised (journal writes of an uncrashed run).
    pub crash_points: usize,
}

/// Sweeps every scenario of every kind of `registry` (see the module docs). Fails on the first broken
/// expectation, naming the kind, the scenario and the crash point.
pub async fn sweep(registry: &Registry) -> Outcome<Vec<SweepReport>> {
    let mut reports = Vec::new();
    for kind in registry.kinds() {
        let scenarios = registry.crash_scenarios(&kind);
        if scenarios.is_empty() {
            return Err(Broken(format!(
                "workflow kind {kind} is registered without a crash scenario"
            )));
        }
        for s in scenarios {
            reports.push(sweep_scenario(registry, &kind, &s).await?);
        }
    }
    Ok(reports)
}

/// Sweeps one scenario of `kind`: a crash before each journal write in turn, until a run ends without one.
pub async fn sweep_scenario(
    registry: &Registry,
    kind: &WorkflowKind,
    s: &Scenario,
) -> Outcome<SweepReport> {
    const LIMIT: usize = 200;
    for n in 1..=LIMIT {
        let w = CrashWorld::new().await?;
        let r = crash_once(&w, registry, kind, s, n).await;
        w.shutdown().await;
        match r {
            Ok(true) => continue,
            Ok(false) => {
                return Ok(SweepReport {
                    kind: kind.clone(),
                    scenario: s.name,
                    crash_points: n - 1,
                })
            }
            Err(Broken(why)) => {
                return Err(Broken(format!(
                    "{kind} / {}: crash before journal write {n}: {why}",
                    s.name
                )))
            }
        }
    }
    Err(Broken(format!(
        "{kind} / {}: still crashing after {LIMIT} journal writes",
        s.name
    )))
}

/// One crash point: answers whether the first worker crashed.
async fn crash_once(
    w: &CrashWorld,
    registry: &Registry,
    kind: &WorkflowKind,
    s: &Scenario,
    n: usize,
) -> Outcome<bool> {
    let id = (s.start)(w).await?;
    let open = w.store.list_open_workflows().await?;
    let wf = open
        .iter()
        .find(|x| x.instance_id == id && &x.kind == kind)
        .map(|x| x.id)
        .ok_or_else(|| Broken(format!("the scenario did not start a {kind} workflow")))?;
    let helper = s.helpers.then(|| {
        let tm = Arc::new(w.task_manager(&format!("helper-{n}"), w.store.clone(), registry));
        let store = w.store.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(open) = store.list_open_workflows().await {
                    for other in open.into_iter().filter(|x| x.id != wf) {
                        let tm = tm.clone();
                        tokio::spawn(async move {
                            let _ = tm.run_workflow(other.id).await;
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    });
    let dying = CrashingStore::new(w.store.clone(), n);
    let first = w.task_manager(&format!("doomed-{n}"), dying.clone(), registry);
    let ran = first.run_workflow(wf).await;
    let crashed = dying.crashed();
    if !crashed {
        ran?;
    } else {
        let second = w.task_manager(&format!("survivor-{n}"), w.store.clone(), registry);
        // The dead worker's lease still holds: nobody may take the workflow yet.
        if second.run_workflow(wf).await? {
            return Err(Broken(
                "a second worker claimed the workflow under the dead worker's live lease".into(),
            ));
        }
        w.clock
            .advance(w.config.workflow_lease + Duration::from_secs(1));
        if !second.run_workflow(wf).await? {
            return Err(Broken(
                "the second worker could not take the workflow over after the lease expired".into(),
            ));
        }
    }
    if let Some(h) = helper {
        // What the workflow started and did not wait for ends too.
        w.settle().await?;
        h.abort();
        let _ = h.await;
    }
    let after = w
        .store
        .get_workflow(wf)
        .await?
        .ok_or_else(|| Broken("the workflow vanished".into()))?;
    let ended_as_expected = match s.expect {
        Some(want) => after.state == want,
        None => !after.state.is_open(),
    };
    if !ended_as_expected {
        let inst = w.instance(id).await?;
        return Err(Broken(format!(
            "the workflow ended {:?}, expected {:?} (instance task {:?}, fault {:?})",
            after.state, s.expect, inst.task, inst.fault
        )));
    }
    let mut scrubbed = after.clone();
    registry.scrub(&mut scrubbed);
    if scrubbed.params != after.params {
        return Err(Broken(
            "the closed workflow still holds secrets its kind scrubs".into(),
        ));
    }
    if let Some(check) = s.check {
        check(w, id).await?;
    }
    w.expect_no_leaks().await?;
    Ok(crashed)
}
