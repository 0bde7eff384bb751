//! [`MemoryStore`]: the in-memory [`InfraStore`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{
    Backup, BackupFilter, BackupSchedule, BackupStrategy, BackupStrategyFilter, ConfigParam,
    Configuration, Datastore, DatastoreVersion, Flavor, Instance, InstanceFilter, JournalEntry,
    QuotaLimits, QuotaUsage, RootHistory, ServiceStatusRecord, Workflow,
};
use crate::ports::{
    heartbeat_may_overwrite, workflow_claim_renews, workflow_claimable, ChangeSet, InfraStore,
    Write,
};

/// Everything the store holds.
#[derive(Debug, Default)]
struct State {
    datastores: HashMap<Uuid, Datastore>,
    versions: HashMap<Uuid, DatastoreVersion>,
    flavors: BTreeMap<String, Flavor>,
    config_params: BTreeMap<(Uuid, String), ConfigParam>,
    configurations: HashMap<Uuid, Configuration>,
    instances: HashMap<Uuid, Instance>,
    statuses: HashMap<Uuid, ServiceStatusRecord>,
    backups: HashMap<Uuid, Backup>,
    backup_strategies: BTreeMap<(String, Option<Uuid>), BackupStrategy>,
    backup_schedules: HashMap<Uuid, BackupSchedule>,
    events: HashMap<Uuid, crate::model::Event>,
    clusters: HashMap<Uuid, crate::model::Cluster>,
    quotas: HashMap<String, QuotaLimits>,
    root_history: HashMap<Uuid, RootHistory>,
    workflows: HashMap<Uuid, Workflow>,
    journal: HashMap<Uuid, Vec<JournalEntry>>,
}

impl State {
    fn usage(&self, tenant_id: &str) -> QuotaUsage {
        let mut u = QuotaUsage::default();
        for i in self
            .instances
            .values()
            .filter(|i| !i.deleted && i.tenant_id == tenant_id)
        {
            u.instances += 1;
            u.ram += i64::from(i.ram_mb);
            u.volumes += i64::from(i.volume_size.unwrap_or(0));
        }
        u.backups = self
            .backups
            .values()
            .filter(|b| !b.deleted && b.tenant_id == tenant_id)
            .count() as i64;
        u
    }

    fn limits(&self, tenant_id: &str) -> QuotaLimits {
        self.quotas.get(tenant_id).copied().unwrap_or_default()
    }

    /// Applies one write, checking its precondition; records how to undo it.
    fn apply(&mut self, write: Write, undo: &mut Vec<Undo>) -> Result<()> {
        match write {
            Write::Instance {
                mut instance,
                expect,
            } => {
                let current = self.instances.get(&instance.id).map(|i| i.version);
                instance.version = expect.next_version("Instance", instance.id, current)?;
                undo.push(Undo::Instance(
                    instance.id,
                    self.instances.insert(instance.id, instance),
                ));
            }
            Write::Workflow {
                mut workflow,
                expect,
            } => {
                let current = self.workflows.get(&workflow.id).map(|w| w.version);
                workflow.version = expect.next_version("Workflow", workflow.id, current)?;
                undo.push(Undo::Workflow(
                    workflow.id,
                    self.workflows.insert(workflow.id, workflow),
                ));
            }
            Write::ServiceStatus(s) => {
                undo.push(Undo::Status(
                    s.instance_id,
                    self.statuses.insert(s.instance_id, s),
                ));
            }
            Write::Backup(b) => {
                undo.push(Undo::Backup(b.id, self.backups.insert(b.id, b)));
            }
            Write::Configuration(c) => {
                undo.push(Undo::Configuration(
                    c.id,
                    self.configurations.insert(c.id, c),
                ));
            }
            Write::RootHistory(r) => {
                // The first record is kept: it says when root was first enabled.
                if !self.root_history.contains_key(&r.instance_id) {
                    let id = r.instance_id;
                    undo.push(Undo::Root(id, self.root_history.insert(id, r)));
                }
            }
            Write::DeleteRootHistory(id) => {
                undo.push(Undo::Root(id, self.root_history.remove(&id)));
            }
            Write::BackupStrategy(st) => {
                let key = (st.tenant_id.clone(), st.instance_id);
                let old = self.backup_strategies.insert(key.clone(), st);
                undo.push(Undo::Strategy(key, old));
            }
            Write::DeleteBackupStrategy {
                tenant_id,
                instance_id,
            } => {
                let key = (tenant_id, instance_id);
                let old = self.backup_strategies.remove(&key);
                undo.push(Undo::Strategy(key, old));
            }
            Write::BackupSchedule {
                mut schedule,
                expect,
            } => {
                let current = self.backup_schedules.get(&schedule.id).map(|s| s.version);
                schedule.version = expect.next_version("Backup schedule", schedule.id, current)?;
                undo.push(Undo::Schedule(
                    schedule.id,
                    self.backup_schedules.insert(schedule.id, schedule),
                ));
            }
            Write::DeleteBackupSchedule(id) => {
                undo.push(Undo::Schedule(id, self.backup_schedules.remove(&id)));
            }
            Write::Event(e) => {
                undo.push(Undo::Event(e.id, self.events.insert(e.id, e)));
            }
            Write::Cluster {
                mut cluster,
                expect,
            } => {
                let current = self.clusters.get(&cluster.id).map(|c| c.version);
                cluster.version = expect.next_version("Cluster", cluster.id, current)?;
                undo.push(Undo::Cluster(
                    cluster.id,
                    self.clusters.insert(cluster.id, cluster),
                ));
            }
        }
        Ok(())
    }

    /// Reverts applied writes, newest first.
    fn revert(&mut self, undo: Vec<Undo>) {
        fn put<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, k: K, old: Option<V>) {
            match old {
                Some(v) => {
                    map.insert(k, v);
                }
                None => {
                    map.remove(&k);
                }
            }
        }
        for u in undo.into_iter().rev() {
            match u {
                Undo::Instance(k, old) => put(&mut self.instances, k, old),
                Undo::Workflow(k, old) => put(&mut self.workflows, k, old),
                Undo::Status(k, old) => put(&mut self.statuses, k, old),
                Undo::Backup(k, old) => put(&mut self.backups, k, old),
                Undo::Configuration(k, old) => put(&mut self.configurations, k, old),
                Undo::Root(k, old) => put(&mut self.root_history, k, old),
                Undo::Schedule(k, old) => put(&mut self.backup_schedules, k, old),
                Undo::Event(k, old) => put(&mut self.events, k, old),
                Undo::Cluster(k, old) => put(&mut self.clusters, k, old),
                Undo::Strategy(k, old) => match old {
                    Some(v) => {
                        self.backup_strategies.insert(k, v);
                    }
                    None => {
                        self.backup_strategies.remove(&k);
                    }
                },
            }
        }
    }
}

/// The previous value of a row a commit overwrote.
#[allow(clippy::large_enum_variant)] // short-lived, one per write of a commit
enum Undo {
    Instance(Uuid, Option<Instance>),
    Workflow(Uuid, Option<Workflow>),
    Status(Uuid, Option<ServiceStatusRecord>),
    Backup(Uuid, Option<Backup>),
    Configuration(Uuid, Option<Configuration>),
    Root(Uuid, Option<RootHistory>),
    Strategy((String, Option<Uuid>), Option<BackupStrategy>),
    Schedule(Uuid, Option<BackupSchedule>),
    Event(Uuid, Option<crate::model::Event>),
    Cluster(Uuid, Option<crate::model::Cluster>),
}

/// An [`InfraStore`] kept in memory behind one mutex. A commit applies its writes while recording their previous
/// values and reverts them all when a precondition or the quota check fails, so it is atomic; the mutex
/// serialises commits, so quota checks never race.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// [`InfraStore::catalog_generation`].
    catalog_generation: AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic happened while holding it. No code path that holds it can panic
        // half-way through a commit (no indexing, no unwrap), so the state is still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn by_name_then_id<T>(key: impl Fn(&T) -> (&str, Uuid)) -> impl Fn(&T, &T) -> std::cmp::Ordering {
    move |a, b| key(a).cmp(&key(b))
}

/// Bumps the catalog generation when dropped, i.e. after the write (whatever its outcome).
struct CatalogWrite<'a>(&'a AtomicU64);

impl Drop for CatalogWrite<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl InfraStore for MemoryStore {
    fn catalog_generation(&self) -> u64 {
        self.catalog_generation.load(Ordering::Acquire)
    }

    async fn put_datastore(&self, ds: &Datastore) -> Result<()> {
        let _bump = CatalogWrite(&self.catalog_generation);
        let mut st = self.lock();
        if st
            .datastores
            .values()
            .any(|d| d.name == ds.name && d.id != ds.id)
        {
            return Err(Error::conflict(format!(
                "A datastore named '{}' already exists.",
                ds.name
            )));
        }
        st.datastores.insert(ds.id, ds.clone());
        Ok(())
    }

    async fn get_datastore(&self, id_or_name: &str) -> Result<Option<Datastore>> {
        let st = self.lock();
        let by_id = Uuid::parse_str(id_or_name)
            .ok()
            .and_then(|id| st.datastores.get(&id));
        Ok(by_id
            .or_else(|| st.datastores.values().find(|d| d.name == id_or_name))
            .cloned())
    }

    async fn list_datastores(&self) -> Result<Vec<Datastore>> {
        let mut v: Vec<_> = self.lock().datastores.values().cloned().collect();
        v.sort_by(by_name_then_id(|d: &Datastore| (d.name.as_str(), d.id)));
        Ok(v)
    }

    async fn delete_datastore(&self, id: Uuid) -> Result<()> {
        let _bump = CatalogWrite(&self.catalog_generation);
        let mut st = self.lock();
        st.datastores.remove(&id);
        let gone: Vec<Uuid> = st
            .versions
            .values()
            .filter(|v| v.datastore_id == id)
            .map(|v| v.id)
            .collect();
        for v in &gone {
            st.versions.remove(v);
        }
        st.config_params.retain(|(v, _), _| !gone.contains(v));
        Ok(())
    }

    async fn put_datastore_version(&self, v: &DatastoreVersion) -> Result<()> {
        let _bump = CatalogWrite(&self.catalog_generation);
        let mut st = self.lock();
        if !st.datastores.contains_key(&v.datastore_id) {
            return Err(Error::not_found("Datastore", v.datastore_id));
        }
        if st
            .versions
            .values()
            .any(|o| o.datastore_id == v.datastore_id && o.name == v.name && o.id != v.id)
        {
            return Err(Error::conflict(format!(
                "The datastore already has a version named '{}'.",
                v.name
            )));
        }
        st.versions.insert(v.id, v.clone());
        Ok(())
    }

    async fn get_datastore_version(&self, id: Uuid) -> Result<Option<DatastoreVersion>> {
        Ok(self.lock().versions.get(&id).cloned())
    }

    async fn list_datastore_versions(
        &self,
        datastore_id: Option<Uuid>,
    ) -> Result<Vec<DatastoreVersion>> {
        let mut v: Vec<_> = self
            .lock()
            .versions
            .values()
            .filter(|v| datastore_id.is_none_or(|d| d == v.datastore_id))
            .cloned()
            .collect();
        v.sort_by(by_name_then_id(|v: &DatastoreVersion| {
            (v.name.as_str(), v.id)
        }));
        Ok(v)
    }

    async fn delete_datastore_version(&self, id: Uuid) -> Result<()> {
        let _bump = CatalogWrite(&self.catalog_generation);
        let mut st = self.lock();
        st.versions.remove(&id);
        st.config_params.retain(|(v, _), _| *v != id);
        for ds in st.datastores.values_mut() {
            if ds.default_version_id == Some(id) {
                ds.default_version_id = None;
            }
        }
        Ok(())
    }

    async fn put_flavor(&self, f: &Flavor) -> Result<()> {
        let _bump = CatalogWrite(&self.catalog_generation);
        self.lock().flavors.insert(f.id.clone(), f.clone());
        Ok(())
    }

    async fn get_flavor(&self, id: &str) -> Result<Option<Flavor>> {
        Ok(self.lock().flavors.get(id).cloned())
    }

    async fn list_flavors(&self) -> Result<Vec<Flavor>> {
        Ok(self.lock().flavors.values().cloned().collect())
    }

    async fn delete_flavor(&self, id: &str) -> Result<()> {
        let _bump = CatalogWrite(&self.catalog_generation);
        self.lock().flavors.remove(id);
        Ok(())
    }

    async fn put_config_params(&self, params: &[ConfigParam]) -> Result<()> {
        let mut st = self.lock();
        for p in params {
            st.config_params
                .insert((p.datastore_version_id, p.name.clone()), p.clone());
        }
        Ok(())
    }

    async fn list_config_params(&self, datastore_version_id: Uuid) -> Result<Vec<ConfigParam>> {
        // BTreeMap keyed by (version, name): already in name order.
        Ok(self
            .lock()
            .config_params
            .iter()
            .filter(|((v, _), _)| *v == datastore_version_id)
            .map(|(_, p)| p.clone())
            .collect())
    }

    async fn delete_config_param(&self, datastore_version_id: Uuid, name: &str) -> Result<bool> {
        Ok(self
            .lock()
            .config_params
            .remove(&(datastore_version_id, name.to_string()))
            .is_some())
    }

    async fn get_configuration(&self, id: Uuid) -> Result<Option<Configuration>> {
        Ok(self.lock().configurations.get(&id).cloned())
    }

    async fn list_configurations(&self, tenant_id: &str) -> Result<Vec<Configuration>> {
        let mut v: Vec<_> = self
            .lock()
            .configurations
            .values()
            .filter(|c| !c.deleted && c.tenant_id == tenant_id)
            .cloned()
            .collect();
        v.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    async fn get_instance(&self, id: Uuid) -> Result<Option<Instance>> {
        Ok(self.lock().instances.get(&id).cloned())
    }

    async fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>> {
        let mut v: Vec<_> = self
            .lock()
            .instances
            .values()
            .filter(|i| filter.matches(i))
            .cloned()
            .collect();
        v.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    async fn list_events(
        &self,
        filter: &crate::model::EventFilter,
    ) -> Result<Vec<crate::model::Event>> {
        let mut out: Vec<crate::model::Event> = self
            .lock()
            .events
            .values()
            .filter(|e| filter.matches(e))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.at.cmp(&b.at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn list_backup_schedules(
        &self,
        instance_id: Option<Uuid>,
    ) -> Result<Vec<BackupSchedule>> {
        let mut out: Vec<BackupSchedule> = self
            .lock()
            .backup_schedules
            .values()
            .filter(|s| instance_id.is_none_or(|i| i == s.instance_id))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn list_backup_strategies(
        &self,
        filter: &BackupStrategyFilter,
    ) -> Result<Vec<BackupStrategy>> {
        Ok(self
            .lock()
            .backup_strategies
            .values()
            .filter(|s| filter.matches(s))
            .cloned()
            .collect())
    }

    async fn get_service_status(&self, instance_id: Uuid) -> Result<Option<ServiceStatusRecord>> {
        Ok(self.lock().statuses.get(&instance_id).cloned())
    }

    async fn get_service_statuses(
        &self,
        instance_ids: &[Uuid],
    ) -> Result<Vec<ServiceStatusRecord>> {
        let st = self.lock();
        Ok(instance_ids
            .iter()
            .filter_map(|id| st.statuses.get(id).cloned())
            .collect())
    }

    async fn put_service_statuses(&self, batch: &[ServiceStatusRecord]) -> Result<()> {
        // The last record per instance is the one the batch writes (as one SQL statement would).
        let mut last: HashMap<Uuid, &ServiceStatusRecord> = HashMap::new();
        for s in batch {
            last.insert(s.instance_id, s);
        }
        let mut st = self.lock();
        for s in last.into_values() {
            let sticky = st
                .statuses
                .get(&s.instance_id)
                .is_some_and(|old| !heartbeat_may_overwrite(old.status));
            if !sticky {
                st.statuses.insert(s.instance_id, s.clone());
            }
        }
        Ok(())
    }

    async fn get_backup(&self, id: Uuid) -> Result<Option<Backup>> {
        Ok(self.lock().backups.get(&id).cloned())
    }

    async fn list_backups(&self, filter: &BackupFilter) -> Result<Vec<Backup>> {
        let mut v: Vec<_> = self
            .lock()
            .backups
            .values()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect();
        v.sort_by(|a, b| b.updated.cmp(&a.updated).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    async fn get_quota_limits(&self, tenant_id: &str) -> Result<QuotaLimits> {
        Ok(self.lock().limits(tenant_id))
    }

    async fn set_quota_limits(&self, tenant_id: &str, limits: &QuotaLimits) -> Result<()> {
        self.lock().quotas.insert(tenant_id.to_string(), *limits);
        Ok(())
    }

    async fn quota_usage(&self, tenant_id: &str) -> Result<QuotaUsage> {
        Ok(self.lock().usage(tenant_id))
    }

    async fn get_root_history(&self, instance_id: Uuid) -> Result<Option<RootHistory>> {
        Ok(self.lock().root_history.get(&instance_id).cloned())
    }

    async fn get_cluster(&self, id: Uuid) -> Result<Option<crate::model::Cluster>> {
        Ok(self.lock().clusters.get(&id).cloned())
    }

    async fn list_clusters(&self, tenant_id: Option<&str>) -> Result<Vec<crate::model::Cluster>> {
        let mut out: Vec<crate::model::Cluster> = self
            .lock()
            .clusters
            .values()
            .filter(|c| !c.deleted && tenant_id.is_none_or(|t| t == c.tenant_id))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn commit(&self, change: ChangeSet) -> Result<()> {
        let mut st = self.lock();
        let mut undo = Vec::with_capacity(change.writes.len());
        let mut outcome = Ok(());
        for w in change.writes {
            if let Err(e) = st.apply(w, &mut undo) {
                outcome = Err(e);
                break;
            }
        }
        if let (Ok(()), Some(q)) = (&outcome, &change.quota) {
            let over = st
                .usage(&q.tenant_id)
                .over(&st.limits(&q.tenant_id), &q.resources);
            if !over.is_empty() {
                outcome = Err(Error::QuotaExceeded {
                    resources: over.iter().map(|r| r.as_str().to_string()).collect(),
                });
            }
        }
        if outcome.is_err() {
            st.revert(undo);
        }
        outcome
    }

    async fn get_workflow(&self, id: Uuid) -> Result<Option<Workflow>> {
        Ok(self.lock().workflows.get(&id).cloned())
    }

    async fn list_open_workflows(&self) -> Result<Vec<Workflow>> {
        let mut v: Vec<_> = self
            .lock()
            .workflows
            .values()
            .filter(|w| w.state.is_open())
            .cloned()
            .collect();
        v.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    async fn claim_workflow(
        &self,
        id: Uuid,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Workflow>> {
        let mut st = self.lock();
        let Some(w) = st.workflows.get_mut(&id) else {
            return Ok(None);
        };
        if !workflow_claimable(w, worker, now) {
            return Ok(None);
        }
        if !workflow_claim_renews(w, worker, now) {
            w.attempts = w.attempts.saturating_add(1);
        }
        w.owner = Some(worker.to_string());
        w.lease_until = Some(lease_until);
        w.updated = now;
        w.version += 1;
        Ok(Some(w.clone()))
    }

    async fn append_journal(&self, entry: &JournalEntry) -> Result<()> {
        self.lock()
            .journal
            .entry(entry.workflow_id)
            .or_default()
            .push(entry.clone());
        Ok(())
    }

    async fn journal(&self, workflow_id: Uuid) -> Result<Vec<JournalEntry>> {
        Ok(self
            .lock()
            .journal
            .get(&workflow_id)
            .cloned()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Access, Resource, WorkflowKind, WorkflowState};
    use crate::model::{BackupFilter, InstanceFilter, QuotaUsage};
    use crate::ports::Expect;
    use crate::state::{ServerStatus, TaskStatus};
    use chrono::Duration;

    fn instance(tenant: &str, ram: u32, vol: u32) -> Instance {
        let now = Utc::now();
        Instance {
            id: Uuid::new_v4(),
            name: "i".into(),
            tenant_id: tenant.into(),
            datastore_version_id: Uuid::new_v4(),
            flavor_id: "1".into(),
            ram_mb: ram,
            volume_size: Some(vol),
            volume_type: None,
            task: TaskStatus::Building,
            server_status: ServerStatus::Build,
            server_id: None,
            volume_id: None,
            host: None,
            addresses: vec![],
            port: None,
            configuration_id: None,
            replica_of: None,
            locality: None,
            region: "RegionOne".into(),
            availability_zone: None,
            access: Access::default(),
            fault: None,
            cluster_id: None,
            auto_failover: None,
            created: now,
            updated: now,
            deleted: false,
            deleted_at: None,
            version: 0,
        }
    }

    fn workflow() -> Workflow {
        let now = Utc::now();
        Workflow {
            id: Uuid::new_v4(),
            kind: WorkflowKind::new("create"),
            instance_id: Uuid::new_v4(),
            params: serde_json::Value::Null,
            state: WorkflowState::Pending,
            owner: None,
            lease_until: None,
            attempts: 0,
            created: now,
            updated: now,
            version: 0,
        }
    }

    #[tokio::test]
    async fn versions_and_conflicts_leave_nothing_written() {
        let s = MemoryStore::new();
        let a = instance("t", 512, 1);
        s.commit(ChangeSet::new().with(Write::Instance {
            instance: a.clone(),
            expect: Expect::Absent,
        }))
        .await
        .unwrap();
        assert_eq!(s.get_instance(a.id).await.unwrap().unwrap().version, 0);
        let b = instance("t", 512, 1);
        // The second write fails: the first must not stay.
        let err = s
            .commit(
                ChangeSet::new()
                    .with(Write::Instance {
                        instance: b.clone(),
                        expect: Expect::Absent,
                    })
                    .with(Write::Instance {
                        instance: a.clone(),
                        expect: Expect::Version(7),
                    }),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
        assert!(s.get_instance(b.id).await.unwrap().is_none());
        s.commit(ChangeSet::new().with(Write::Instance {
            instance: a.clone(),
            expect: Expect::Version(0),
        }))
        .await
        .unwrap();
        assert_eq!(s.get_instance(a.id).await.unwrap().unwrap().version, 1);
    }

    #[tokio::test]
    async fn quota_is_checked_after_the_writes() {
        let s = MemoryStore::new();
        let limits = QuotaLimits {
            instances: 1,
            ..QuotaLimits::default()
        };
        s.set_quota_limits("t", &limits).await.unwrap();
        let one = |i: Instance| {
            ChangeSet::new()
                .with(Write::Instance {
                    instance: i,
                    expect: Expect::Absent,
                })
                .check_quota("t", &[Resource::Instances, Resource::Volumes])
        };
        s.commit(one(instance("t", 1, 1))).await.unwrap();
        let second = instance("t", 1, 1);
        match s.commit(one(second.clone())).await {
            Err(Error::QuotaExceeded { resources }) => {
                assert_eq!(resources, vec!["instances".to_string()])
            }
            other => panic!("expected a quota error, got {other:?}"),
        }
        assert!(s.get_instance(second.id).await.unwrap().is_none());
        assert_eq!(s.quota_usage("t").await.unwrap().instances, 1);
        assert_eq!(s.quota_usage("t").await.unwrap().volumes, 1);
    }

    #[tokio::test]
    async fn claims_are_exclusive_until_the_lease_expires() {
        let s = MemoryStore::new();
        let w = workflow();
        s.commit(ChangeSet::new().with(Write::Workflow {
            workflow: w.clone(),
            expect: Expect::Absent,
        }))
        .await
        .unwrap();
        let now = Utc::now();
        let lease = now + Duration::seconds(30);
        let got = s
            .claim_workflow(w.id, "a", now, lease)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.owner.as_deref(), got.attempts, got.version),
            (Some("a"), 1, 1)
        );
        assert!(s
            .claim_workflow(w.id, "b", now, lease)
            .await
            .unwrap()
            .is_none());
        let renewed = s
            .claim_workflow(w.id, "a", now, lease)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(renewed.attempts, 1);
        let taken = s
            .claim_workflow(w.id, "b", lease, lease + Duration::seconds(30))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((taken.owner.as_deref(), taken.attempts), (Some("b"), 2));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            ram: u32,
            vol: Option<u32>,
            checked: bool,
        },
        Delete(usize),
        Resize {
            idx: usize,
            ram: u32,
            vol: Option<u32>,
        },
        Backup {
            checked: bool,
        },
        DeleteBackup(usize),
        Limits {
            instances: i64,
            volumes: i64,
            backups: i64,
        },
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0u32..4096, proptest::option::of(0u32..20), any::<bool>())
                .prop_map(|(ram, vol, checked)| Op::Insert { ram, vol, checked }),
            (0usize..64).prop_map(Op::Delete),
            (0usize..64, 0u32..4096, proptest::option::of(0u32..20))
                .prop_map(|(idx, ram, vol)| Op::Resize { idx, ram, vol }),
            any::<bool>().prop_map(|checked| Op::Backup { checked }),
            (0usize..64).prop_map(Op::DeleteBackup),
            (-1i64..8, -1i64..60, -1i64..6).prop_map(|(instances, volumes, backups)| Op::Limits {
                instances,
                volumes,
                backups
            }),
        ]
    }

    proptest::proptest! {
        /// Whatever the sequence of commits, usage equals the sum over live rows, and a commit that checked the
        /// quota never leaves a checked resource over its limit.
        #[test]
        fn usage_always_equals_the_sum_of_live_rows(ops in proptest::collection::vec(op(), 1..50)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            rt.block_on(async {
                let s = MemoryStore::new();
                let t = "t";
                let mut instance_ids = Vec::new();
                let mut backup_ids = Vec::new();
                for op in ops {
                    let mut cs = ChangeSet::new();
                    let mut checked = false;
                    match op {
                        Op::Insert { ram, vol, checked: c } => {
                            let mut i = instance(t, ram, 0);
                            i.volume_size = vol;
                            instance_ids.push(i.id);
                            cs.push(Write::Instance { instance: i, expect: Expect::Absent });
                            checked = c;
                        }
                        Op::Delete(n) | Op::Resize { idx: n, .. } if instance_ids.is_empty() => { let _ = n; continue; }
                        Op::Delete(n) => {
                            let id = instance_ids[n % instance_ids.len()];
                            let Some(mut i) = s.get_instance(id).await.expect("get") else { continue };
                            let v = i.version;
                            i.deleted = true;
                            cs.push(Write::Instance { instance: i, expect: Expect::Version(v) });
                        }
                        Op::Resize { idx, ram, vol } => {
                            let id = instance_ids[idx % instance_ids.len()];
                            let Some(mut i) = s.get_instance(id).await.expect("get") else { continue };
                            let v = i.version;
                            i.ram_mb = ram;
                            i.volume_size = vol;
                            cs.push(Write::Instance { instance: i, expect: Expect::Version(v) });
                            checked = true;
                        }
                        Op::Backup { checked: c } => {
                            let now = Utc::now();
                            let b = Backup {
                                id: Uuid::new_v4(), tenant_id: t.into(), instance_id: None, name: "b".into(),
                                description: None, state: crate::state::BackupState::Completed, size: None,
                                location: None, checksum: None, parent_id: None,
                                backup_type: crate::model::BackupType::Full, datastore_version_id: Uuid::new_v4(),
                                created: now, updated: now, deleted: false,
                                bytes: None, position: None, fault: None, container: None, purged: false, schedule_id: None,
                            };
                            backup_ids.push(b.id);
                            cs.push(Write::Backup(b));
                            checked = c;
                        }
                        Op::DeleteBackup(n) => {
                            if backup_ids.is_empty() { continue; }
                            let Some(mut b) = s.get_backup(backup_ids[n % backup_ids.len()]).await.expect("get") else { continue };
                            b.deleted = true;
                            cs.push(Write::Backup(b));
                        }
                        Op::Limits { instances, volumes, backups } => {
                            let l = QuotaLimits { instances, volumes, backups, ram: -1 };
                            s.set_quota_limits(t, &l).await.expect("limits");
                            continue;
                        }
                    }
                    if checked {
                        cs = cs.check_quota(t, &Resource::ALL);
                    }
                    let ok = s.commit(cs).await.is_ok();
                    let live = s.list_instances(&InstanceFilter::tenant(t)).await.expect("list");
                    let backups = s.list_backups(&BackupFilter { tenant_id: Some(t.into()), ..Default::default() }).await.expect("list");
                    let want = QuotaUsage {
                        instances: live.len() as i64,
                        ram: live.iter().map(|i| i64::from(i.ram_mb)).sum(),
                        volumes: live.iter().map(|i| i64::from(i.volume_size.unwrap_or(0))).sum(),
                        backups: backups.len() as i64,
                    };
                    let usage = s.quota_usage(t).await.expect("usage");
                    assert_eq!(usage, want, "usage is derived from live rows");
                    if ok && checked {
                        let limits = s.get_quota_limits(t).await.expect("limits");
                        assert!(usage.over(&limits, &Resource::ALL).is_empty(), "a checked commit passed a limit: {usage:?} {limits:?}");
                    }
                }
            });
        }
    }
}
