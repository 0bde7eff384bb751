//! A simulated datastore: a [`DatastoreStrategy`] whose engine is a few maps in memory.
//!
//! It behaves like a real engine as far as the API can tell: unknown users and databases are 404s, duplicates
//! are refused, managers without databases (Redis) answer "not supported", and data survives restarts. Tests
//! reach an engine through [`SimulatedStrategyFactory::engine`] to crash or stop it, or to read its state.

use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::guest_log::{GuestLogContext, MemoryLogs};
use crate::model::{
    DatabaseSpec, Manager, Secret, SslCertificate, SslChange, SslChangeResult, SslMode, SslStatus,
    SslView, UserSpec, UserUpdate,
};
use crate::model::{Facet, FacetSet};
use crate::model::{GuestLog, LogActionRequest};
use crate::ports::{
    not_supported, verified_object, BackupFacet, BackupJob, BackupOutcome, BackupProgress,
    ConfigurationFacet, DatabasesFacet, DatastoreStrategy, DynBackupStore, EngineStatus, FsStats,
    LogsFacet, PrepareRequest, ReplicaPosition, ReplicationFacet, ReplicationSource, RootFacet,
    StrategyContext, StrategyFactory, TlsFacet, UserInfo, UsersFacet,
};
use crate::state::ServiceStatus;

mod cluster;

const GIB: u64 = 1 << 30;
/// Bytes a freshly prepared engine uses (system tables and logs).
const BASE_USAGE: u64 = 16 << 20;
/// Bytes each database adds.
const DB_USAGE: u64 = 1 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Parameters whose change needs a restart for managers without shipped rules (the rest apply live).
const STATIC_PARAMS: &[&str] = &[
    "innodb_buffer_pool_size",
    "innodb_log_file_size",
    "shared_buffers",
    "max_connections",
    "port",
];

/// What the simulated strategy offers per manager: exactly what the real engines (`trove-guest`) offer.
pub fn offered(manager: Manager) -> FacetSet {
    use Facet::*;
    match manager {
        Manager::Mysql | Manager::Mariadb => FacetSet::of(&[
            Users,
            Databases,
            Root,
            Configuration,
            Tls,
            Logs,
            Backup,
            Replication,
            Cluster,
        ]),
        Manager::Postgresql => FacetSet::of(&[
            Users,
            Databases,
            Root,
            Configuration,
            Tls,
            Logs,
            Backup,
            Replication,
        ]),
        Manager::Redis => FacetSet::of(&[
            Users,
            Root,
            Configuration,
            Tls,
            Backup,
            Replication,
            Cluster,
        ]),
        Manager::Mongodb | Manager::Cassandra => FacetSet::EMPTY,
    }
}

/// Refuses what a real engine could not render into its configuration: names other than letters, digits, `_`,
/// `-` and `.`, and values that are not scalars (400, as the real guests answer).
fn check_override(key: &str, value: &Value) -> Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    if key.is_empty() || key.len() > 128 || !key.chars().all(plain) {
        return Err(Error::bad_request(format!(
            "The configuration parameter name '{}' is not valid.",
            key.escape_default()
        )));
    }
    if !(value.is_string() || value.is_number() || value.is_boolean()) {
        return Err(Error::bad_request(format!(
            "The value of configuration parameter '{key}' must be a scalar."
        )));
    }
    Ok(())
}

/// Whether changing `key` needs an engine restart: as the shipped parameter rules of `manager` say (what the real
/// guests follow too), else whether it is one of [`STATIC_PARAMS`].
fn needs_restart(manager: Manager, key: &str) -> bool {
    match crate::manage::default_validation_rules(manager)
        .and_then(|t| crate::manage::parse_validation_rules(t, Uuid::nil()).ok())
    {
        Some(rules) => rules.iter().any(|r| r.name == key && r.restart_required),
        None => STATIC_PARAMS.contains(&key),
    }
}

#[derive(Debug, Clone)]
struct SimUser {
    password: Secret,
    databases: BTreeSet<String>,
}

/// What is inside a simulated engine.
#[derive(Debug, Clone, Default)]
struct EngineState {
    prepared: bool,
    running: bool,
    crashed: Option<String>,
    databases: BTreeMap<String, DatabaseSpec>,
    users: BTreeMap<(String, String), SimUser>,
    root: Option<Secret>,
    overrides: Map<String, Value>,
    memory_mb: u32,
    volume_gb: Option<u32>,
    extra_used: u64,
    starts: u32,
    /// `starts` when a configuration change that needs a restart was applied: pending until the next start.
    restart_pending_at: Option<u32>,
    fail_next_prepare: bool,
    ssl: SimSsl,
    /// The engine's logs: the general log records every statement the engine runs while it is on.
    logs: MemoryLogs,
    /// The instance whose engine this one follows (a replica), if any.
    following: Option<Uuid>,
    /// Writes are refused (a replica, or a source fenced for a switchover).
    read_only: bool,
    /// A replica that receives nothing from its source (a cut link: it lags).
    cut_off: bool,
    /// A frozen engine (SIGSTOP): asking its replication position hangs until it thaws or stops.
    frozen: bool,
    /// The replication position: every statement a source runs advances it; a replica has its source's as of
    /// its latest sync.
    position: u64,
    /// Cluster membership.
    cluster: Option<cluster::SimCluster>,
    /// The load figures it reports (a test sets them).
    load: crate::ports::LoadMetrics,
}

/// One TLS setting of a simulated engine.
#[derive(Debug, Clone, Default, PartialEq)]
struct SimSslSetting {
    mode: Option<SslMode>,
    certificate: Option<SslCertificate>,
}

/// The TLS state of a simulated engine, modelled on the real strategies: MariaDB only turns TLS on or off at a
/// restart (changes while on apply live), PostgreSQL and Redis apply everything live; `mtls` needs a CA from a
/// `container_ref` and is refused for the MySQL family.
#[derive(Debug, Clone, Default)]
struct SimSsl {
    current: SimSslSetting,
    previous: Option<SimSslSetting>,
    /// Whether the running engine serves TLS (MariaDB: decided at start).
    engine_tls: bool,
}

impl EngineState {
    fn used(&self) -> u64 {
        if !self.prepared {
            return 0;
        }
        BASE_USAGE + DB_USAGE * self.databases.len() as u64 + self.extra_used
    }
}

/// A test's handle on one simulated engine.
#[derive(Debug, Clone)]
pub struct SimulatedEngine {
    state: Arc<Mutex<EngineState>>,
}

impl SimulatedEngine {
    /// The engine dies: `status` reports CRASHED with `reason` until it is started again.
    pub fn crash(&self, reason: impl Into<String>) {
        let mut st = lock(&self.state);
        st.running = false;
        st.crashed = Some(reason.into());
    }
    /// The engine is shut down cleanly from outside: `status` reports SHUTDOWN.
    pub fn stop(&self) {
        let mut st = lock(&self.state);
        st.running = false;
        st.crashed = None;
    }
    /// Whether the engine runs.
    pub fn is_running(&self) -> bool {
        lock(&self.state).running
    }
    /// Whether `prepare` has completed.
    pub fn is_prepared(&self) -> bool {
        lock(&self.state).prepared
    }
    /// How many times the engine was started (prepare counts as a start).
    pub fn starts(&self) -> u32 {
        lock(&self.state).starts
    }
    /// Database names.
    pub fn databases(&self) -> Vec<String> {
        lock(&self.state).databases.keys().cloned().collect()
    }
    /// Users as (name, host).
    pub fn users(&self) -> Vec<(String, String)> {
        lock(&self.state).users.keys().cloned().collect()
    }
    /// The password of a user, for tests that check password changes.
    pub fn password(&self, name: &str, host: &str) -> Option<Secret> {
        lock(&self.state)
            .users
            .get(&(name.to_string(), host.to_string()))
            .map(|u| u.password.clone())
    }
    /// Whether root is enabled.
    pub fn root_enabled(&self) -> bool {
        lock(&self.state).root.is_some()
    }
    /// The applied configuration overrides.
    pub fn overrides(&self) -> Map<String, Value> {
        lock(&self.state).overrides.clone()
    }
    /// The memory setting the engine was rendered with (MB).
    pub fn memory_mb(&self) -> u32 {
        lock(&self.state).memory_mb
    }
    /// Adds `bytes` of user data to the reported volume usage.
    pub fn set_extra_usage(&self, bytes: u64) {
        lock(&self.state).extra_used = bytes;
    }
    /// A user runs `sql` on the engine: the general log records it while it is on.
    pub fn query(&self, sql: &str) {
        lock(&self.state)
            .logs
            .write("general", &format!("Query\t{sql}"));
    }
    /// The bytes of guest log `name` written so far.
    pub fn log_contents(&self, name: &str) -> Vec<u8> {
        lock(&self.state).logs.contents(name)
    }
    /// Makes the next `prepare` fail (the engine stays unprepared).
    pub fn fail_next_prepare(&self) {
        lock(&self.state).fail_next_prepare = true;
    }
    /// The instance this engine follows, if it is a replica.
    pub fn following(&self) -> Option<Uuid> {
        lock(&self.state).following
    }
    /// Freezes (or thaws) the engine: its replication position does not answer meanwhile.
    pub fn freeze(&self, on: bool) {
        lock(&self.state).frozen = on;
    }
    /// Cuts (or restores) a replica's link to its source: cut, it applies nothing more and lags.
    pub fn cut_off(&self, cut: bool) {
        lock(&self.state).cut_off = cut;
    }
    /// Whether the engine refuses writes.
    pub fn is_read_only(&self) -> bool {
        lock(&self.state).read_only
    }
    /// The engine's replication position.
    pub fn position(&self) -> u64 {
        lock(&self.state).position
    }
}

/// Builds [`SimulatedStrategy`] values and keeps one engine per instance, so that every strategy built for an
/// instance (a restarted guest, say) sees the same data.
#[derive(Debug, Clone, Default)]
pub struct SimulatedStrategyFactory {
    engines: Arc<Mutex<HashMap<Uuid, SimulatedEngine>>>,
    backups: Option<DynBackupStore>,
}

impl SimulatedStrategyFactory {
    /// A factory with no engines.
    pub fn new() -> SimulatedStrategyFactory {
        SimulatedStrategyFactory::default()
    }

    /// The engine of an instance, created empty (not prepared, not running) on first use.
    pub fn engine(&self, instance_id: Uuid) -> SimulatedEngine {
        lock(&self.engines)
            .entry(instance_id)
            .or_insert_with(|| SimulatedEngine {
                state: Arc::new(Mutex::new(EngineState::default())),
            })
            .clone()
    }

    /// Strategies back up into (and restore from) `store`; without one they offer no backups.
    pub fn with_backup_store(mut self, store: DynBackupStore) -> SimulatedStrategyFactory {
        self.backups = Some(store);
        self
    }

    /// Whether an engine exists for the instance.
    pub fn has_engine(&self, instance_id: Uuid) -> bool {
        lock(&self.engines).contains_key(&instance_id)
    }

    /// Lets the engine of `instance_id` catch up with the source it follows (replication is applied when an engine
    /// runs a statement; a test reading an engine directly asks for it first).
    pub fn sync(&self, instance_id: Uuid) {
        let engine = lock(&self.engines).get(&instance_id).cloned();
        if let Some(e) = engine {
            sync_engine(&e, &self.engines);
        }
    }

    /// Forgets an instance's engine and its data (its volume was deleted).
    pub fn remove(&self, instance_id: Uuid) {
        lock(&self.engines).remove(&instance_id);
    }
}

/// Replication in the simulation: `engine`, when it follows a running engine of `peers`, takes its data and
/// position.
fn sync_engine(engine: &SimulatedEngine, peers: &Mutex<HashMap<Uuid, SimulatedEngine>>) {
    let Some(source) = lock(&engine.state).following else {
        return;
    };
    let Some(peer) = lock(peers).get(&source).cloned() else {
        return;
    };
    let (snap, position) = {
        let src = lock(&peer.state);
        if !src.running {
            return;
        }
        (SimSnapshot::of(&src), src.position)
    };
    let mut st = lock(&engine.state);
    if st.running && st.following == Some(source) && !st.cut_off {
        snap.apply(&mut st);
        st.position = position;
    }
}

impl StrategyFactory for SimulatedStrategyFactory {
    fn strategy(&self, ctx: &StrategyContext) -> Result<Arc<dyn DatastoreStrategy>> {
        Ok(Arc::new(SimulatedStrategy {
            manager: ctx.datastore_version.manager,
            engine: self.engine(ctx.instance_id),
            backups: self.backups.clone(),
            instance_id: ctx.instance_id,
            peers: self.engines.clone(),
        }))
    }

    /// From a standalone strategy's accessors, so asking registers no engine.
    fn facets(&self, manager: Manager) -> Option<FacetSet> {
        let mut s = SimulatedStrategy::standalone(manager);
        s.backups = self.backups.clone();
        Some(s.facets())
    }
}

/// The simulated strategy of one instance.
#[derive(Debug, Clone)]
pub struct SimulatedStrategy {
    manager: Manager,
    engine: SimulatedEngine,
    backups: Option<DynBackupStore>,
    instance_id: Uuid,
    /// Every engine of the factory: a replica reads its source's here.
    peers: Arc<Mutex<HashMap<Uuid, SimulatedEngine>>>,
}

impl SimulatedStrategy {
    /// A strategy over a private engine (not registered in any factory).
    pub fn standalone(manager: Manager) -> SimulatedStrategy {
        SimulatedStrategy {
            manager,
            engine: SimulatedEngine {
                state: Arc::new(Mutex::new(EngineState::default())),
            },
            backups: None,
            instance_id: Uuid::nil(),
            peers: Arc::default(),
        }
    }

    /// The engine behind this strategy.
    pub fn engine(&self) -> &SimulatedEngine {
        &self.engine
    }

    /// Whether the simulation offers `facet` for its manager: what the real engines offer.
    fn offers(&self, facet: Facet) -> bool {
        offered(self.manager).contains(facet)
    }

    /// Locks the engine state, refusing when the engine is not running (as a real client's connect would fail).
    /// A replica first takes what its source has (replication, instantly); a source's position advances.
    fn running(&self) -> Result<MutexGuard<'_, EngineState>> {
        self.sync();
        let mut st = lock(&self.engine.state);
        if !st.running {
            return Err(Error::backend(
                "simulated",
                format!("{} is not running", self.manager),
                true,
            ));
        }
        st.logs.write("general", "Query\t(simulated statement)");
        if st.following.is_none() {
            st.position += 1;
        }
        Ok(st)
    }

    /// A replica takes its running source's data and position (nothing when the source is down).
    fn sync(&self) {
        sync_engine(&self.engine, &self.peers);
    }

    fn user_host(&self, host: Option<&str>) -> String {
        match self.manager {
            Manager::Mysql | Manager::Mariadb => host.unwrap_or("%").to_string(),
            // Engines without host patterns report `%`.
            Manager::Postgresql | Manager::Redis | Manager::Mongodb | Manager::Cassandra => {
                "%".to_string()
            }
        }
    }

    fn add_databases(st: &mut EngineState, dbs: &[DatabaseSpec]) -> Result<()> {
        let mut seen = BTreeSet::new();
        for db in dbs {
            if st.databases.contains_key(&db.name) || !seen.insert(db.name.as_str()) {
                return Err(Error::bad_request(format!(
                    "A database with the name {} already exists.",
                    db.name
                )));
            }
        }
        for db in dbs {
            st.databases.insert(db.name.clone(), db.clone());
        }
        Ok(())
    }

    fn add_users(&self, st: &mut EngineState, users: &[UserSpec]) -> Result<()> {
        // As the real engines: users of an engine without databases have none.
        if self.databases().is_none() && users.iter().any(|u| !u.databases.is_empty()) {
            return Err(not_supported(self.manager, Facet::Databases.as_str()));
        }
        let mut seen = BTreeSet::new();
        for u in users {
            let key = (u.name.clone(), self.user_host(u.host.as_deref()));
            if st.users.contains_key(&key) || !seen.insert(key.clone()) {
                return Err(Error::bad_request(format!(
                    "A user with the name {}@{} already exists.",
                    key.0, key.1
                )));
            }
            if let Some(db) = u.databases.iter().find(|d| !st.databases.contains_key(*d)) {
                return Err(Error::not_found("Database", db));
            }
        }
        for u in users {
            let key = (u.name.clone(), self.user_host(u.host.as_deref()));
            st.users.insert(
                key,
                SimUser {
                    password: u.password.clone(),
                    databases: u.databases.iter().cloned().collect(),
                },
            );
        }
        Ok(())
    }

    fn user_mut<'a>(
        &self,
        st: &'a mut EngineState,
        name: &str,
        host: &str,
    ) -> Result<&'a mut SimUser> {
        let key = (name.to_string(), self.user_host(Some(host)));
        st.users
            .get_mut(&key)
            .ok_or_else(|| Error::not_found("User", format!("{name}@{}", key.1)))
    }
}

#[async_trait]
impl DatastoreStrategy for SimulatedStrategy {
    fn manager(&self) -> Manager {
        self.manager
    }

    async fn prepare(&self, req: &PrepareRequest) -> Result<()> {
        let prepared = lock(&self.engine.state).prepared;
        let restored = match &req.restore {
            Some(spec) if !prepared => Some(self.restored(spec).await?),
            _ => None,
        };
        let mut st = lock(&self.engine.state);
        if st.fail_next_prepare {
            st.fail_next_prepare = false;
            return Err(Error::backend(
                "simulated",
                "injected prepare failure",
                false,
            ));
        }
        if st.prepared {
            if !st.running {
                st.running = true;
                st.crashed = None;
                st.starts += 1;
            }
            return Ok(());
        }
        // Build the new state aside so that a refused request leaves the engine unprepared, not half-prepared.
        let mut next = EngineState {
            memory_mb: req.memory_mb,
            volume_gb: req.volume_size_gb,
            overrides: req.overrides.clone(),
            root: req.root_password.clone(),
            extra_used: st.extra_used,
            ..EngineState::default()
        };
        if !req.databases.is_empty() {
            if self.databases().is_none() {
                return Err(not_supported(self.manager, Facet::Databases.as_str()));
            }
            Self::add_databases(&mut next, &req.databases)?;
        }
        if !req.users.is_empty() {
            if self.users().is_none() {
                return Err(not_supported(self.manager, Facet::Users.as_str()));
            }
            self.add_users(&mut next, &req.users)?;
        }
        if let Some(snap) = restored {
            snap.apply(&mut next);
        }
        next.prepared = true;
        next.running = true;
        next.starts = st.starts + 1;
        *st = next;
        Ok(())
    }

    async fn start(&self) -> Result<()> {
        let mut st = lock(&self.engine.state);
        if !st.prepared {
            return Err(Error::unprocessable(format!(
                "{} has not been prepared.",
                self.manager
            )));
        }
        if !st.running {
            st.running = true;
            st.crashed = None;
            st.starts += 1;
            st.ssl.engine_tls = st.ssl.current.mode.is_some();
        }
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        let mut st = lock(&self.engine.state);
        st.running = false;
        st.crashed = None;
        Ok(())
    }

    async fn status(&self) -> EngineStatus {
        let st = lock(&self.engine.state);
        match (&st.crashed, st.prepared, st.running) {
            (Some(reason), _, _) => EngineStatus {
                status: ServiceStatus::Crashed,
                reason: Some(reason.clone()),
            },
            (None, false, _) => EngineStatus {
                status: ServiceStatus::Building,
                reason: Some("not prepared yet".into()),
            },
            (None, true, true) => EngineStatus {
                status: ServiceStatus::Healthy,
                reason: None,
            },
            (None, true, false) => EngineStatus {
                status: ServiceStatus::Shutdown,
                reason: Some(format!("{} is stopped", self.manager)),
            },
        }
    }

    async fn filesystem_stats(&self) -> Result<FsStats> {
        let st = lock(&self.engine.state);
        Ok(FsStats {
            used_bytes: st.used(),
            total_bytes: u64::from(st.volume_gb.unwrap_or(0)) * GIB,
        })
    }

    async fn apply_flavor(&self, memory_mb: u32) -> Result<()> {
        let mut st = lock(&self.engine.state);
        st.memory_mb = memory_mb;
        if st.prepared {
            st.running = true;
            st.crashed = None;
            st.starts += 1;
        }
        Ok(())
    }

    async fn resize_fs(&self, size_gb: u32) -> Result<()> {
        let mut st = lock(&self.engine.state);
        if let Some(cur) = st.volume_gb {
            if size_gb < cur {
                return Err(Error::bad_request(format!(
                    "Cannot shrink the filesystem from {cur} GB to {size_gb} GB."
                )));
            }
        }
        st.volume_gb = Some(size_gb);
        Ok(())
    }

    fn users(&self) -> Option<&dyn UsersFacet> {
        self.offers(Facet::Users).then_some(self)
    }

    fn databases(&self) -> Option<&dyn DatabasesFacet> {
        self.offers(Facet::Databases).then_some(self)
    }

    fn root(&self) -> Option<&dyn RootFacet> {
        self.offers(Facet::Root).then_some(self)
    }

    fn configuration(&self) -> Option<&dyn ConfigurationFacet> {
        self.offers(Facet::Configuration).then_some(self)
    }

    fn tls(&self) -> Option<&dyn TlsFacet> {
        self.offers(Facet::Tls).then_some(self)
    }

    fn logs(&self) -> Option<&dyn LogsFacet> {
        self.offers(Facet::Logs).then_some(self)
    }

    fn backup(&self) -> Option<&dyn BackupFacet> {
        (self.offers(Facet::Backup) && self.backups.is_some()).then_some(self)
    }

    /// Replicas are seeded from backups: offered with them.
    fn replication(&self) -> Option<&dyn ReplicationFacet> {
        (self.offers(Facet::Replication) && self.backups.is_some()).then_some(self)
    }

    fn cluster(&self) -> Option<&dyn crate::ports::ClusterFacet> {
        self.offers(Facet::Cluster).then_some(self)
    }
}

/// What a simulated backup holds: the engine's databases, users (with their passwords: a simulation) and root.
#[derive(serde::Serialize, serde::Deserialize)]
struct SimSnapshot {
    databases: Vec<DatabaseSpec>,
    users: Vec<(String, String, Secret, Vec<String>)>,
    root: Option<Secret>,
}

impl SimSnapshot {
    fn of(st: &EngineState) -> SimSnapshot {
        SimSnapshot {
            databases: st.databases.values().cloned().collect(),
            users: st
                .users
                .iter()
                .map(|((n, h), u)| {
                    (
                        n.clone(),
                        h.clone(),
                        u.password.clone(),
                        u.databases.iter().cloned().collect(),
                    )
                })
                .collect(),
            root: st.root.clone(),
        }
    }

    fn apply(self, st: &mut EngineState) {
        st.databases = self
            .databases
            .into_iter()
            .map(|d| (d.name.clone(), d))
            .collect();
        st.users = self
            .users
            .into_iter()
            .map(|(n, h, password, dbs)| {
                (
                    (n, h),
                    SimUser {
                        password,
                        databases: dbs.into_iter().collect(),
                    },
                )
            })
            .collect();
        st.root = self.root;
    }
}

impl SimulatedStrategy {
    fn store(&self) -> Result<&DynBackupStore> {
        self.backups
            .as_ref()
            .ok_or_else(|| not_supported(self.manager, Facet::Backup.as_str()))
    }

    /// The engine's data from the restore chain: every object read whole (and so verified) before any is applied.
    async fn restored(&self, spec: &crate::ports::RestoreSpec) -> Result<SimSnapshot> {
        let store = self.store()?;
        let mut last = None;
        for piece in &spec.chain {
            let mut bytes = Vec::new();
            let mut stream = verified_object(store, piece).await?;
            while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
                bytes.extend_from_slice(&chunk?);
            }
            let snap: SimSnapshot = serde_json::from_slice(&bytes).map_err(|e| {
                Error::unprocessable(format!("backup {} is unreadable: {e}", piece.backup_id))
            })?;
            last = Some(snap);
        }
        last.ok_or_else(|| Error::bad_request("A restore needs at least one backup."))
    }
}

#[async_trait]
impl BackupFacet for SimulatedStrategy {
    fn incremental(&self) -> bool {
        self.manager.incremental_backups()
    }

    async fn backup(&self, job: &BackupJob, progress: &BackupProgress) -> Result<BackupOutcome> {
        let store = self.store()?;
        let (bytes, seq) = {
            let st = self.running()?;
            let bytes = serde_json::to_vec(&SimSnapshot::of(&st))
                .map_err(|e| Error::backend("simulated", e, false))?;
            (bytes, st.starts)
        };
        let stream = futures::StreamExt::boxed(futures::stream::iter([Ok(bytes)]));
        let object = store.put(&job.key, progress.counted(stream)).await?;
        Ok(BackupOutcome {
            object,
            // Like a real guest: where it ends, and the moment its archive covers up to.
            position: Some(serde_json::json!({
                "starts": seq,
                "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            })),
        })
    }
}

#[async_trait]
impl UsersFacet for SimulatedStrategy {
    async fn create_users(&self, users: &[UserSpec]) -> Result<()> {
        let mut st = self.running()?;
        self.add_users(&mut st, users)
    }

    async fn list_users(&self) -> Result<Vec<UserInfo>> {
        Ok(self
            .running()?
            .users
            .iter()
            .map(|((name, host), u)| UserInfo {
                name: name.clone(),
                host: host.clone(),
                databases: u.databases.iter().cloned().collect(),
            })
            .collect())
    }

    async fn delete_user(&self, name: &str, host: &str) -> Result<()> {
        let mut st = self.running()?;
        let key = (name.to_string(), self.user_host(Some(host)));
        if st.users.remove(&key).is_none() {
            return Err(Error::not_found("User", format!("{name}@{}", key.1)));
        }
        Ok(())
    }

    async fn update_user(&self, name: &str, host: &str, update: &UserUpdate) -> Result<()> {
        let mut st = self.running()?;
        let old_key = (name.to_string(), self.user_host(Some(host)));
        let mut user = self.user_mut(&mut st, name, host)?.clone();
        let new_key = (
            update.name.clone().unwrap_or_else(|| old_key.0.clone()),
            update
                .host
                .as_deref()
                .map(|h| self.user_host(Some(h)))
                .unwrap_or_else(|| old_key.1.clone()),
        );
        if new_key != old_key && st.users.contains_key(&new_key) {
            return Err(Error::bad_request(format!(
                "A user with the name {}@{} already exists.",
                new_key.0, new_key.1
            )));
        }
        if let Some(p) = &update.password {
            user.password = p.clone();
        }
        st.users.remove(&old_key);
        st.users.insert(new_key, user);
        Ok(())
    }

    async fn change_passwords(&self, users: &[UserSpec]) -> Result<()> {
        let mut st = self.running()?;
        for u in users {
            self.user_mut(&mut st, &u.name, u.host.as_deref().unwrap_or("%"))?;
        }
        for u in users {
            self.user_mut(&mut st, &u.name, u.host.as_deref().unwrap_or("%"))?
                .password = u.password.clone();
        }
        Ok(())
    }
}

#[async_trait]
impl DatabasesFacet for SimulatedStrategy {
    async fn create_databases(&self, dbs: &[DatabaseSpec]) -> Result<()> {
        let mut st = self.running()?;
        Self::add_databases(&mut st, dbs)
    }

    async fn list_databases(&self) -> Result<Vec<DatabaseSpec>> {
        Ok(self.running()?.databases.values().cloned().collect())
    }

    async fn delete_database(&self, name: &str) -> Result<()> {
        let mut st = self.running()?;
        if st.databases.remove(name).is_none() {
            return Err(Error::not_found("Database", name));
        }
        for u in st.users.values_mut() {
            u.databases.remove(name);
        }
        Ok(())
    }

    async fn grant_access(&self, name: &str, host: &str, dbs: &[String]) -> Result<()> {
        let mut st = self.running()?;
        if let Some(db) = dbs.iter().find(|d| !st.databases.contains_key(*d)) {
            return Err(Error::not_found("Database", db));
        }
        self.user_mut(&mut st, name, host)?
            .databases
            .extend(dbs.iter().cloned());
        Ok(())
    }

    async fn revoke_access(&self, name: &str, host: &str, db: &str) -> Result<()> {
        let mut st = self.running()?;
        if !st.databases.contains_key(db) {
            return Err(Error::not_found("Database", db));
        }
        let user = self.user_mut(&mut st, name, host)?;
        if !user.databases.remove(db) {
            return Err(Error::not_found(
                "Database access",
                format!("{db} for {name}"),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl RootFacet for SimulatedStrategy {
    async fn enable_root(&self, password: Option<Secret>) -> Result<Secret> {
        let mut st = self.running()?;
        let password = password
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| Secret::generate(24));
        st.root = Some(password.clone());
        Ok(password)
    }

    async fn disable_root(&self) -> Result<()> {
        self.running()?.root = None;
        Ok(())
    }
}

#[async_trait]
impl ConfigurationFacet for SimulatedStrategy {
    async fn apply_overrides(&self, overrides: &Map<String, Value>) -> Result<bool> {
        for (k, v) in overrides {
            check_override(k, v)?;
        }
        let mut st = lock(&self.engine.state);
        // The new set replaces the old one (a detach applies none); a restart is needed when a static parameter
        // is set, changed or removed.
        let restart = st
            .overrides
            .keys()
            .chain(overrides.keys())
            .any(|k| st.overrides.get(k) != overrides.get(k) && needs_restart(self.manager, k));
        if restart {
            st.restart_pending_at = Some(st.starts);
        }
        st.overrides = overrides.clone();
        // A change applied before (a repeated request after a lost answer) still waits for the restart.
        Ok(st.restart_pending_at == Some(st.starts))
    }
}

#[async_trait]
impl TlsFacet for SimulatedStrategy {
    async fn ssl_show(&self, include_certificate: bool) -> Result<SslView> {
        let st = lock(&self.engine.state);
        let cur = &st.ssl.current;
        Ok(match cur.mode {
            None => SslView::off(),
            Some(mode) => SslView {
                status: SslStatus::On,
                mode: Some(mode),
                certificate: cur.certificate.clone().map(|mut c| {
                    if !include_certificate {
                        c.payload = None;
                    }
                    c
                }),
                port: None,
            },
        })
    }

    async fn ssl_action(&self, change: &SslChange) -> Result<SslChangeResult> {
        let mut st = self.running()?;
        let next = match change {
            SslChange::Enable {
                mode,
                container_ref,
                names,
                ..
            } => {
                let mysql = matches!(self.manager, Manager::Mysql | Manager::Mariadb);
                if *mode == SslMode::Mtls && mysql {
                    return Err(Error::bad_request(format!(
                        "SSL mode mtls is not supported for datastore {}.",
                        self.manager
                    )));
                }
                if *mode == SslMode::Mtls && container_ref.is_none() {
                    return Err(Error::bad_request(
                        "SSL mode mtls needs a container_ref whose bundle holds the CA that signs client certificates.",
                    ));
                }
                let (cn, san) = match container_ref {
                    // The simulation reads no files: the bundle's certificate is named after its reference.
                    Some(r) => (format!("certificate of {r}"), None),
                    None => match names.first() {
                        Some(first) => (
                            first.clone(),
                            Some(names.iter().map(|n| format!("IP:{n}")).collect()),
                        ),
                        None => (
                            "localhost".to_string(),
                            Some(vec![
                                "IP:127.0.0.1".to_string(),
                                "DNS:localhost".to_string(),
                            ]),
                        ),
                    },
                };
                SimSslSetting {
                    mode: Some(*mode),
                    certificate: Some(SslCertificate {
                        cn,
                        // Whole seconds, as a certificate's notAfter.
                        expire_at: chrono::SubsecRound::trunc_subsecs(
                            chrono::Utc::now() + chrono::Duration::days(365),
                            0,
                        ),
                        san,
                        payload: Some(
                            "-----BEGIN CERTIFICATE-----\nc2ltdWxhdGVk\n-----END CERTIFICATE-----\n"
                                .into(),
                        ),
                    }),
                }
            }
            SslChange::Disable => SimSslSetting {
                mode: None,
                certificate: st.ssl.current.certificate.clone(),
            },
        };
        let prev = std::mem::replace(&mut st.ssl.current, next);
        st.ssl.previous = Some(prev);
        Ok(self.ssl_applied(&mut st))
    }

    async fn ssl_rollback(&self) -> Result<SslChangeResult> {
        let mut st = self.running()?;
        let Some(prev) = st.ssl.previous.take() else {
            return Err(Error::bad_request(
                "There is no previous SSL state to roll back to.",
            ));
        };
        let cur = std::mem::replace(&mut st.ssl.current, prev);
        st.ssl.previous = Some(cur);
        Ok(self.ssl_applied(&mut st))
    }
}

#[async_trait]
impl LogsFacet for SimulatedStrategy {
    async fn guest_log_list(&self, ctx: &GuestLogContext) -> Result<Vec<GuestLog>> {
        let logs = lock(&self.engine.state).logs.clone();
        crate::guest_log::list_logs(&logs.engine(self.manager), ctx).await
    }

    async fn guest_log_action(
        &self,
        ctx: &GuestLogContext,
        req: &LogActionRequest,
    ) -> Result<GuestLog> {
        let logs = {
            let st = lock(&self.engine.state);
            // Turning logging on or off (publish may turn it on) talks to the engine, as a real guest's would.
            if (req.enable || req.disable || req.publish) && !st.running {
                return Err(Error::backend(
                    "simulated",
                    format!("{} is not running", self.manager),
                    true,
                ));
            }
            st.logs.clone()
        };
        crate::guest_log::log_action(&logs.engine(self.manager), ctx, req).await
    }
}

/// The host a simulated source hands its replicas: its instance id.
const SIM_HOST_PREFIX: &str = "sim-";

#[async_trait]
impl ReplicationFacet for SimulatedStrategy {
    async fn source_info(&self) -> Result<ReplicationSource> {
        let _st = self.running()?;
        Ok(ReplicationSource {
            host: format!("{SIM_HOST_PREFIX}{}", self.instance_id),
            port: 0,
            user: "os_repl".into(),
            password: Secret::new("simulated"),
        })
    }

    async fn attach(&self, source: &ReplicationSource) -> Result<()> {
        let id = source
            .host
            .strip_prefix(SIM_HOST_PREFIX)
            .and_then(|h| h.parse::<Uuid>().ok())
            .ok_or_else(|| {
                Error::bad_request(format!("{} is not a simulated source", source.host))
            })?;
        if id == self.instance_id {
            return Err(Error::bad_request("An engine cannot follow itself."));
        }
        {
            // A fenced (stopped) former source comes back read only to follow, as the real engines do.
            let mut st = lock(&self.engine.state);
            if st.prepared && !st.running {
                st.read_only = true;
                st.running = true;
                st.crashed = None;
                st.starts += 1;
            }
        }
        {
            let mut st = self.running()?;
            st.following = Some(id);
            st.read_only = true;
        }
        self.sync();
        Ok(())
    }

    async fn position(&self) -> Result<ReplicaPosition> {
        while {
            let st = lock(&self.engine.state);
            st.frozen && st.running
        } {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let st = self.running()?;
        Ok(ReplicaPosition::Offset {
            offset: st.position,
        })
    }

    async fn set_read_only(&self, read_only: bool) -> Result<()> {
        self.running()?.read_only = read_only;
        Ok(())
    }

    async fn promote(&self) -> Result<()> {
        let mut st = self.running()?;
        st.following = None;
        st.read_only = false;
        Ok(())
    }

    async fn detach(&self) -> Result<()> {
        self.promote().await
    }
}

impl SimulatedStrategy {
    /// The answer after the current setting changed: MariaDB turns TLS on or off only at a restart.
    fn ssl_applied(&self, st: &mut EngineState) -> SslChangeResult {
        let on = st.ssl.current.mode.is_some();
        let restart_required = match self.manager {
            Manager::Mysql | Manager::Mariadb => on != st.ssl.engine_tls,
            _ => {
                st.ssl.engine_tls = on;
                false
            }
        };
        SslChangeResult {
            status: if on { SslStatus::On } else { SslStatus::Off },
            mode: st.ssl.current.mode,
            restart_required,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep() -> PrepareRequest {
        PrepareRequest {
            memory_mb: 512,
            volume_size_gb: Some(1),
            databases: vec![DatabaseSpec {
                name: "db1".into(),
                character_set: None,
                collate: None,
            }],
            users: vec![UserSpec {
                name: "bob".into(),
                password: Secret::new("pw"),
                host: None,
                databases: vec!["db1".into()],
            }],
            root_password: None,
            overrides: Map::new(),
            restore: None,
        }
    }

    #[tokio::test]
    async fn crash_and_recover() {
        let f = SimulatedStrategyFactory::new();
        let id = Uuid::new_v4();
        let ctx = StrategyContext {
            instance_id: id,
            datastore_version: crate::model::DatastoreVersion {
                id: Uuid::new_v4(),
                datastore_id: Uuid::new_v4(),
                name: "10".into(),
                manager: Manager::Mariadb,
                image: String::new(),
                packages: String::new(),
                active: true,
                version: "10".into(),
                flavor_ids: vec![],
            },
            flavor: crate::model::Flavor {
                id: "1".into(),
                name: "s".into(),
                ram_mb: 512,
                vcpus: 1,
                disk_gb: 1,
                ephemeral_gb: 0,
            },
            server_dir: "/x".into(),
            volume_path: None,
            bind_address: "127.0.0.1".into(),
            port: 3306,
        };
        let s = f.strategy(&ctx).unwrap();
        assert_eq!(s.status().await.status, ServiceStatus::Building);
        s.prepare(&prep()).await.unwrap();
        assert_eq!(s.status().await.status, ServiceStatus::Healthy);
        f.engine(id).crash("oom");
        let st = s.status().await;
        assert_eq!(
            (st.status, st.reason.as_deref()),
            (ServiceStatus::Crashed, Some("oom"))
        );
        assert!(s.users().unwrap().list_users().await.is_err());
        s.restart().await.unwrap();
        // A second strategy for the same instance sees the same data.
        let s2 = f.strategy(&ctx).unwrap();
        assert_eq!(
            s2.users().unwrap().list_users().await.unwrap()[0].databases,
            vec!["db1".to_string()]
        );
        assert_eq!(
            s2.databases()
                .unwrap()
                .revoke_access("bob", "%", "nope")
                .await
                .unwrap_err()
                .fault()
                .status,
            404
        );
    }

    #[test]
    fn facets_follow_the_manager_and_the_factory_registers_nothing() {
        let store: DynBackupStore = Arc::new(crate::memory::MemoryBackupStore::new());
        for m in Manager::ALL {
            // Backups need a store, and replicas are seeded from backups: without one, everything else is offered.
            let mut s = SimulatedStrategy::standalone(m);
            let mut without = offered(m);
            without.remove(Facet::Backup);
            without.remove(Facet::Replication);
            assert_eq!(s.facets(), without, "{m}");
            s.backups = Some(store.clone());
            assert_eq!(s.facets(), offered(m), "{m}");
        }
        let f = SimulatedStrategyFactory::new().with_backup_store(store);
        assert_eq!(f.facets(Manager::Redis), Some(offered(Manager::Redis)));
        assert!(!f.has_engine(Uuid::nil()));
    }

    #[tokio::test]
    async fn redis_has_no_databases() {
        let s = SimulatedStrategy::standalone(Manager::Redis);
        let mut req = prep();
        req.databases.clear();
        req.users[0].databases.clear();
        s.prepare(&req).await.unwrap();
        assert!(s.databases().is_none(), "redis has no databases facet");
        assert_eq!(s.users().unwrap().list_users().await.unwrap().len(), 1);
        req.databases = prep().databases;
        let fresh = SimulatedStrategy::standalone(Manager::Redis);
        assert_eq!(fresh.prepare(&req).await.unwrap_err().fault().status, 422);
    }
}
