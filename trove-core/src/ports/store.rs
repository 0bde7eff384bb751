use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Result;
use crate::model::{
    Backup, BackupFilter, BackupSchedule, BackupStrategy, BackupStrategyFilter, ConfigParam,
    Configuration, Datastore, DatastoreVersion, Flavor, Instance, InstanceFilter, JournalEntry,
    QuotaLimits, QuotaUsage, Resource, RootHistory, ServiceStatusRecord, Workflow,
};
use crate::state::ServiceStatus;

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// The row must not exist (insert).
    Absent,
    /// The row must exist at this version (optimistic update).
    Version(u64),
    /// Insert or overwrite.
    Any,
}

impl Expect {
    /// The version a versioned row gets when written with this precondition over a row currently at `current`
    /// (`None`: absent), or the [`crate::Error::Conflict`] naming `what` and `id`. The one rule every store uses.
    pub fn next_version(self, what: &str, id: Uuid, current: Option<u64>) -> Result<u64> {
        match (self, current) {
            (Expect::Absent, None) | (Expect::Any, None) => Ok(0),
            (Expect::Absent, Some(_)) => Err(crate::Error::conflict(format!(
                "{what} {id} already exists."
            ))),
            (Expect::Version(v), Some(c)) if v == c => Ok(c + 1),
            (Expect::Version(v), Some(c)) => Err(crate::Error::conflict(format!(
                "{what} {id} was changed concurrently (expected version {v}, found {c})."
            ))),
            (Expect::Version(v), None) => Err(crate::Error::conflict(format!(
                "{what} {id} does not exist (expected version {v})."
            ))),
            (Expect::Any, Some(c)) => Ok(c + 1),
        }
    }
}

/// Whether `worker` may claim workflow `w` at `now` (the rule of [`InfraStore::claim_workflow`]): it is open
/// and unowned, owned by `worker`, or its lease has expired.
pub fn workflow_claimable(w: &Workflow, worker: &str, now: DateTime<Utc>) -> bool {
    w.state.is_open()
        && match (&w.owner, w.lease_until) {
            (None, _) => true,
            (Some(owner), _) if owner == worker => true,
            (Some(_), None) => true,
            (Some(_), Some(until)) => until <= now,
        }
}

/// Whether a claim of `w` by `worker` at `now` only renews the worker's own live lease. A renewal does not count
/// as a new attempt; every other successful claim increments [`Workflow::attempts`].
pub fn workflow_claim_renews(w: &Workflow, worker: &str, now: DateTime<Utc>) -> bool {
    w.owner.as_deref() == Some(worker) && w.lease_until.is_some_and(|u| u > now)
}

/// Whether a heartbeat may replace a stored service status: not RESTART_REQUIRED (only a restart clears it) nor
/// DELETED. The rule of [`InfraStore::put_service_statuses`].
pub fn heartbeat_may_overwrite(stored: ServiceStatus) -> bool {
    !STICKY_STATUSES.contains(&stored)
}

/// Stored service statuses a heartbeat never replaces (see [`heartbeat_may_overwrite`]).
pub const STICKY_STATUSES: [ServiceStatus; 2] =
    [ServiceStatus::RestartRequired, ServiceStatus::Deleted];

/// One write of a [`ChangeSet`].
#[allow(clippy::large_enum_variant)] // rows are moved, not copied around; boxing would only add allocations
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Write {
    /// Insert or update an instance. The stored `version` becomes the expected version + 1 (0 for an insert
    /// with [`Expect::Absent`]; `Any` stores `version + 1` of what was there, or 0).
    Instance {
        /// The new row.
        instance: Instance,
        /// Precondition.
        expect: Expect,
    },
    /// Insert or update a workflow, with the same versioning rule as instances.
    Workflow {
        /// The new row.
        workflow: Workflow,
        /// Precondition.
        expect: Expect,
    },
    /// Upsert a service status.
    ServiceStatus(ServiceStatusRecord),
    /// Upsert a backup.
    Backup(Backup),
    /// Upsert a configuration group.
    Configuration(Configuration),
    /// Insert a root-history record; an existing record of the instance is kept (it says when root was first
    /// enabled).
    RootHistory(RootHistory),
    /// Remove the root-history record of an instance.
    DeleteRootHistory(Uuid),
    /// Insert or replace the backup strategy of (`tenant_id`, `instance_id`).
    BackupStrategy(BackupStrategy),
    /// Insert (`Expect::Absent`), replace (`Any`) or update at a version (`Version`) a backup schedule.
    BackupSchedule {
        /// The schedule.
        schedule: BackupSchedule,
        /// What the stored row must be.
        expect: Expect,
    },
    /// Remove a backup schedule (a missing one succeeds).
    DeleteBackupSchedule(Uuid),
    /// Record an event (a record with the same id is replaced: recording is idempotent).
    Event(crate::model::Event),
    /// Insert or update a cluster, with the same versioning rule as instances.
    Cluster {
        /// The new row.
        cluster: crate::model::Cluster,
        /// Precondition.
        expect: Expect,
    },
    /// Remove the backup strategy of (`tenant_id`, `instance_id`) exactly (`None`: the tenant-wide one); removing a
    /// missing one succeeds.
    DeleteBackupStrategy {
        /// Tenant.
        tenant_id: String,
        /// Instance, or `None` for the tenant-wide strategy.
        instance_id: Option<Uuid>,
    },
}

/// A quota check made inside the transaction, after the writes: usage of `resources` must be within limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaCheck {
    /// Tenant whose usage is checked.
    pub tenant_id: String,
    /// Resources to check.
    pub resources: Vec<Resource>,
}

/// An atomic set of writes: all happen, or none (and the error says why).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeSet {
    /// The writes, applied in order.
    pub writes: Vec<Write>,
    /// Optional quota check.
    pub quota: Option<QuotaCheck>,
}

impl ChangeSet {
    /// An empty change set.
    pub fn new() -> ChangeSet {
        ChangeSet::default()
    }
    /// Adds a write.
    pub fn with(mut self, w: Write) -> ChangeSet {
        self.writes.push(w);
        self
    }
    /// Adds a write in place.
    pub fn push(&mut self, w: Write) {
        self.writes.push(w);
    }
    /// Adds a quota check.
    pub fn check_quota(
        mut self,
        tenant_id: impl Into<String>,
        resources: &[Resource],
    ) -> ChangeSet {
        self.quota = Some(QuotaCheck {
            tenant_id: tenant_id.into(),
            resources: resources.to_vec(),
        });
        self
    }
}

/// The control plane's own database (upstream's infrastructure database).
///
/// # Contract
/// - Reads return what the last committed write stored. `list_*` results are ordered: instances by `created`
///   descending then id, datastores and versions by name, flavors by id, backups by `updated` descending,
///   configurations by `created` descending, workflows by `created`, backup strategies by tenant then instance
///   (the tenant-wide one first).
/// - [`InfraStore::commit`] is atomic. A failed [`Expect`] is [`crate::Error::Conflict`] and a failed
///   [`QuotaCheck`] is [`crate::Error::QuotaExceeded`] naming the resources; in both cases nothing is written.
///   Concurrent commits that check the same tenant's quota are serialised, so two can never both pass a limit
///   only one of them fits in.
/// - Quota usage is derived from live rows: instances (and their `ram_mb`, `volume_size`) and backups that are not
///   deleted. Limits default to [`QuotaLimits::default`] for tenants without an override.
/// - `claim_workflow` gives an open workflow to exactly one worker at a time: it succeeds when the workflow is
///   unowned, owned by the same worker, or its lease has expired at `now` ([`workflow_claimable`]). A successful
///   claim sets `owner`, `lease_until` and `updated` (= `now`), bumps `version`, and increments `attempts` unless
///   it renews the worker's own live lease ([`workflow_claim_renews`]); it leaves `state` alone.
/// - Names are unique: a datastore's name; a version's (datastore, name); putting a duplicate under another id
///   is a conflict.
/// - `put_service_statuses` is a batched upsert (heartbeats); it must sustain thousands of rows per second. The
///   last record of an instance in a batch is the one written. It leaves a row whose stored status is sticky ([`heartbeat_may_overwrite`] is false: RESTART_REQUIRED, DELETED)
///   untouched, decided atomically with the write, so a heartbeat racing the API's RESTART_REQUIRED never erases
///   it; only a [`Write::ServiceStatus`] in a commit (a restart, a delete) replaces a sticky status.
#[async_trait]
pub trait InfraStore: Send + Sync + 'static {
    // ---- datastores and versions
    /// Inserts or updates a datastore.
    async fn put_datastore(&self, ds: &Datastore) -> Result<()>;
    /// A datastore by id or name.
    async fn get_datastore(&self, id_or_name: &str) -> Result<Option<Datastore>>;
    /// All datastores.
    async fn list_datastores(&self) -> Result<Vec<Datastore>>;
    /// Deletes a datastore and its versions.
    async fn delete_datastore(&self, id: Uuid) -> Result<()>;
    /// Inserts or updates a version.
    async fn put_datastore_version(&self, v: &DatastoreVersion) -> Result<()>;
    /// A version by id.
    async fn get_datastore_version(&self, id: Uuid) -> Result<Option<DatastoreVersion>>;
    /// Versions of one datastore, or all.
    async fn list_datastore_versions(
        &self,
        datastore_id: Option<Uuid>,
    ) -> Result<Vec<DatastoreVersion>>;
    /// Deletes a version.
    async fn delete_datastore_version(&self, id: Uuid) -> Result<()>;

    // ---- flavors
    /// Inserts or updates a flavor.
    async fn put_flavor(&self, f: &Flavor) -> Result<()>;
    /// A flavor by id.
    async fn get_flavor(&self, id: &str) -> Result<Option<Flavor>>;
    /// All flavors.
    async fn list_flavors(&self) -> Result<Vec<Flavor>>;
    /// Deletes a flavor (idempotent).
    async fn delete_flavor(&self, id: &str) -> Result<()>;
    /// A number that changes whenever this store object writes (or tries to write) datastores, versions or
    /// flavors: readers that cache the catalog compare it to the one they loaded at. Only writes through this
    /// object (and its clones) in this process are counted; writes by other processes are not, so a cache must
    /// also limit its age (the API's `catalog_cache_ttl`). Must be cheap (no I/O): it is read on every catalog
    /// read.
    fn catalog_generation(&self) -> u64;

    // ---- configuration parameter rules
    /// Upserts rules of a version (by name).
    async fn put_config_params(&self, params: &[ConfigParam]) -> Result<()>;
    /// Rules of a version, by name.
    async fn list_config_params(&self, datastore_version_id: Uuid) -> Result<Vec<ConfigParam>>;
    /// Deletes one rule; `false` if it did not exist.
    async fn delete_config_param(&self, datastore_version_id: Uuid, name: &str) -> Result<bool>;

    // ---- configuration groups
    /// A configuration group by id (deleted ones included).
    async fn get_configuration(&self, id: Uuid) -> Result<Option<Configuration>>;
    /// Live configuration groups of a tenant.
    async fn list_configurations(&self, tenant_id: &str) -> Result<Vec<Configuration>>;

    // ---- instances and statuses
    /// An instance by id (deleted ones included).
    async fn get_instance(&self, id: Uuid) -> Result<Option<Instance>>;
    /// Instances passing a filter.
    async fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>>;
    /// The live replicas (clustered ones included, any tenant) of many sources, as `(source, replica)` id pairs,
    /// each source's replicas in `list_instances` order: the bulk form of `list_instances` with `replica_of`
    /// set, for list views. The
    /// default asks `list_instances` once per source; stores override it with one query.
    async fn list_replica_ids(&self, sources: &[Uuid]) -> Result<Vec<(Uuid, Uuid)>> {
        let mut out = Vec::new();
        for &source in sources {
            let f = InstanceFilter {
                replica_of: Some(source),
                include_clustered: true,
                ..Default::default()
            };
            out.extend(
                self.list_instances(&f)
                    .await?
                    .into_iter()
                    .map(|r| (source, r.id)),
            );
        }
        Ok(out)
    }
    /// The service status of an instance.
    async fn get_service_status(&self, instance_id: Uuid) -> Result<Option<ServiceStatusRecord>>;
    /// Service statuses of many instances (missing ones are left out).
    async fn get_service_statuses(&self, instance_ids: &[Uuid])
        -> Result<Vec<ServiceStatusRecord>>;
    /// Batched upsert of service statuses (heartbeats).
    async fn put_service_statuses(&self, batch: &[ServiceStatusRecord]) -> Result<()>;

    // ---- backups
    /// A backup by id (deleted ones included).
    async fn get_backup(&self, id: Uuid) -> Result<Option<Backup>>;
    /// Backups passing a filter.
    async fn list_backups(&self, filter: &BackupFilter) -> Result<Vec<Backup>>;
    /// Backup schedules: of one instance, or all.
    async fn list_backup_schedules(&self, instance_id: Option<Uuid>)
        -> Result<Vec<BackupSchedule>>;
    /// Events passing a filter, oldest first.
    async fn list_events(
        &self,
        filter: &crate::model::EventFilter,
    ) -> Result<Vec<crate::model::Event>>;
    /// Backup strategies passing a filter.
    async fn list_backup_strategies(
        &self,
        filter: &BackupStrategyFilter,
    ) -> Result<Vec<BackupStrategy>>;

    // ---- quotas
    /// Limits of a tenant (defaults when none are stored).
    async fn get_quota_limits(&self, tenant_id: &str) -> Result<QuotaLimits>;
    /// Stores limits of a tenant.
    async fn set_quota_limits(&self, tenant_id: &str, limits: &QuotaLimits) -> Result<()>;
    /// Usage of a tenant, derived from live rows.
    async fn quota_usage(&self, tenant_id: &str) -> Result<QuotaUsage>;

    // ---- clusters
    /// A cluster (deleted ones too), with its row version.
    async fn get_cluster(&self, id: Uuid) -> Result<Option<crate::model::Cluster>>;
    /// Clusters that are not deleted, of one project (`None`: every project), oldest first.
    async fn list_clusters(&self, tenant_id: Option<&str>) -> Result<Vec<crate::model::Cluster>>;

    // ---- root history
    /// The root-history record of an instance.
    async fn get_root_history(&self, instance_id: Uuid) -> Result<Option<RootHistory>>;

    // ---- transactions
    /// Applies a change set atomically.
    async fn commit(&self, change: ChangeSet) -> Result<()>;

    // ---- workflows
    /// A workflow by id.
    async fn get_workflow(&self, id: Uuid) -> Result<Option<Workflow>>;
    /// Open workflows (pending, running, rolling back), oldest first.
    async fn list_open_workflows(&self) -> Result<Vec<Workflow>>;
    /// Claims an open workflow for `worker` until `lease_until`; `None` if another worker holds it or it is closed.
    async fn claim_workflow(
        &self,
        id: Uuid,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Workflow>>;
    /// Appends a journal entry.
    async fn append_journal(&self, entry: &JournalEntry) -> Result<()>;
    /// The journal of a workflow, in append order.
    async fn journal(&self, workflow_id: Uuid) -> Result<Vec<JournalEntry>>;
}
