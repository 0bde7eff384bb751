//! `ApiService`: what the REST API does, without HTTP. Validation, quota, persistence and the cast to the task
//! manager happen here; the HTTP layer only decodes bodies and renders the views returned.
//!
//! Requests are plain structs (already decoded from upstream JSON); views carry everything the upstream views
//! show, so the HTTP layer never reads the store itself.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

use crate::config::CoreConfig;
use crate::error::{Error, Result};
use crate::model::{
    validate_database_name, validate_host, validate_instance_name, validate_password,
    validate_user_name, BackupFilter, BackupType, Facet, InstanceFilter, Manager, Resource,
    Workflow, WorkflowKind, WorkflowState,
};
use crate::model::{
    Access, Backup, ConfigParam, Configuration, DatabaseSpec, Datastore, DatastoreVersion, Flavor,
    Instance, Locality, ParamType, QuotaLimits, QuotaUsage, RootHistory, Secret,
    ServiceStatusRecord, UserSpec, UserUpdate,
};
use crate::ports::{
    ChangeSet, DynBus, DynClock, DynStore, Expect, RequestContext, UserInfo, Write,
};
use crate::rpc::{GuestClient, GuestTimeouts, TaskManagerClient};
use crate::state::{
    api_status, check_operation, heartbeat_expired, operating_status, BackupState, InstanceState,
    Operation, ServerStatus, ServiceStatus, TaskStatus,
};
use crate::taskmanager::{BackupParams, CreateParams, ResizeFlavorParams, ResizeVolumeParams};
use serde_json::json;
use std::collections::HashMap;

mod backup_strategies;
mod guest_logs;
mod maintenance;
mod ssl;
pub use backup_strategies::{
    validate_container, BackupStrategyQuery, CreateBackupStrategy, BACKUP_STRATEGY_BACKEND,
    DEFAULT_BACKUP_CONTAINER,
};

/// `POST /instances` body, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateInstance {
    /// Name.
    pub name: String,
    /// Flavor id (href already reduced to its last segment).
    pub flavor_ref: Option<String>,
    /// Volume size GB.
    pub volume_size: Option<u32>,
    /// Volume type.
    pub volume_type: Option<String>,
    /// Datastore name or id.
    pub datastore: Option<String>,
    /// Version name or id.
    pub datastore_version: Option<String>,
    /// Version number.
    pub datastore_version_number: Option<String>,
    /// Initial databases.
    pub databases: Vec<DatabaseSpec>,
    /// Initial users.
    pub users: Vec<UserSpec>,
    /// Backup to restore from.
    pub restore_point: Option<Uuid>,
    /// Source to replicate.
    pub replica_of: Option<Uuid>,
    /// Number of replicas (with `replica_of`).
    pub replica_count: Option<u32>,
    /// Configuration group.
    pub configuration: Option<Uuid>,
    /// Locality.
    pub locality: Option<Locality>,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// Region.
    pub region_name: Option<String>,
    /// Access.
    pub access: Option<Access>,
}

/// `PUT/PATCH /instances/{id}` body, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateInstance {
    /// New name.
    pub name: Option<String>,
    /// `Some(None)`: detach from the replica source.
    pub replica_of: Option<Option<Uuid>>,
    /// `Some(Some(id))`: attach a group; `Some(None)`: detach.
    pub configuration: Option<Option<Uuid>>,
    /// New datastore version (upgrade).
    pub datastore_version: Option<String>,
    /// New access.
    pub access: Option<Access>,
}

/// Everything the instance views show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// The stored instance.
    pub instance: Instance,
    /// Guest status (with heartbeat time and volume usage).
    pub service: Option<ServiceStatusRecord>,
    /// Derived API `status`.
    pub status: String,
    /// Derived `operating_status`.
    pub operating_status: String,
    /// Datastore.
    pub datastore: Datastore,
    /// Datastore version.
    pub datastore_version: DatastoreVersion,
    /// Attached configuration group (id, name).
    pub configuration: Option<(Uuid, String)>,
    /// Replicas of this instance.
    pub replicas: Vec<Uuid>,
    /// Root password, when root was enabled on create.
    pub password: Option<Secret>,
}

/// A datastore with its versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatastoreView {
    /// Datastore.
    pub datastore: Datastore,
    /// Its versions (active ones for non-admins).
    pub versions: Vec<DatastoreVersion>,
}

/// A configuration group with its usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigurationView {
    /// Group.
    pub configuration: Configuration,
    /// Datastore.
    pub datastore: Datastore,
    /// Version.
    pub datastore_version: DatastoreVersion,
    /// Instances using it.
    pub instance_count: usize,
}

/// A backup with its datastore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupView {
    /// Backup.
    pub backup: Backup,
    /// Datastore of the source.
    pub datastore: Option<Datastore>,
    /// Version of the source.
    pub datastore_version: Option<DatastoreVersion>,
}

/// Quota of a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaView {
    /// Limits.
    pub limits: QuotaLimits,
    /// Usage.
    pub usage: QuotaUsage,
}

/// `POST /mgmt/datastore-versions` body, decoded (also used by trove-manage).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatastoreVersionSpec {
    /// Datastore name (created if missing).
    pub datastore_name: String,
    /// Version name.
    pub name: String,
    /// Manager.
    pub manager: String,
    /// Image.
    pub image: String,
    /// Packages.
    pub packages: String,
    /// Active.
    pub active: bool,
    /// Version number (defaults to the name).
    pub version: Option<String>,
    /// Make it the datastore's default.
    pub default: bool,
}

/// A version together with its datastore (version views need both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionView {
    /// Version.
    pub version: DatastoreVersion,
    /// Its datastore.
    pub datastore: Datastore,
    /// Whether it is the datastore's default version.
    pub is_default: bool,
}

/// `PATCH /mgmt/datastore-versions/{id}` body, decoded: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatastoreVersionPatch {
    /// New manager.
    pub manager: Option<String>,
    /// New packages.
    pub packages: Option<String>,
    /// New image.
    pub image: Option<String>,
    /// New active flag.
    pub active: Option<bool>,
    /// Make it the datastore's default.
    pub default: Option<bool>,
    /// New name.
    pub name: Option<String>,
}

/// `POST /configurations` body, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateConfiguration {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Parameter values.
    pub values: Map<String, Value>,
    /// Datastore name or id (default datastore when absent).
    pub datastore: Option<String>,
    /// Version name or id (the datastore's default when absent).
    pub datastore_version: Option<String>,
    /// Version number.
    pub datastore_version_number: Option<String>,
}

/// `PUT /configurations/{id}` body, decoded: replaces all values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfiguration {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// The complete new values.
    pub values: Map<String, Value>,
}

/// `POST/PUT /mgmt/datastores/versions/{id}/parameters[/{name}]` body, decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigParamSpec {
    /// Parameter name (ignored on PUT, where the URL names it).
    pub name: String,
    /// Value type.
    pub data_type: ParamType,
    /// Whether changing it needs a restart.
    pub restart_required: bool,
    /// Lower bound.
    pub min: Option<Number>,
    /// Upper bound.
    pub max: Option<Number>,
}

/// `POST /backups` body, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateBackup {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Source instance (uuid; href already reduced).
    pub instance: Option<Uuid>,
    /// Parent backup, for incrementals.
    pub parent_id: Option<Uuid>,
    /// Incremental (parent defaults to the last completed backup).
    pub incremental: bool,
    /// Register an existing backup object instead of taking one.
    pub restore_from: Option<RestoreFrom>,
    /// Container to write to (upstream `swift_container`); `None`: the backup strategy's, else the default.
    pub container: Option<String>,
}

/// `restore_from` of a backup create body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestoreFrom {
    /// Where the object is.
    pub remote_location: String,
    /// Version of the datastore that wrote it.
    pub local_datastore_version_id: Uuid,
    /// Size in GB.
    pub size: f64,
}

/// `GET /backups` query, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupQuery {
    /// Only backups of this datastore (name or id).
    pub datastore: Option<String>,
    /// Only backups of this instance.
    pub instance_id: Option<Uuid>,
    /// Only this project's (admin).
    pub project_id: Option<String>,
    /// Every project's (admin).
    pub all_projects: bool,
}

/// `GET /mgmt/instances` query, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MgmtInstanceQuery {
    /// Include deleted instances.
    pub deleted: bool,
    /// Include cluster members.
    pub include_clustered: bool,
    /// Only this project's.
    pub project_id: Option<String>,
}

/// Instances per service-status query when building list views (the slices are fetched concurrently).
const STATUS_SLICE: usize = 250;

/// A page of a listing: at most `limit` rows after the row whose id is `marker` (from the start without one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// Most rows on the page (0 is taken as 1).
    pub limit: usize,
    /// Id of the last row of the previous page.
    pub marker: Option<String>,
}

/// Mgmt instance actions (`POST /mgmt/instances/{id}/action`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MgmtAction {
    /// Stop the engine.
    Stop,
    /// Reboot the server.
    Reboot,
    /// Set the task back to NONE.
    ResetTaskStatus,
    /// Move the server to another host (`None`: compute picks one).
    Migrate {
        /// Target host.
        host: Option<String>,
    },
    /// Rebuild the server from an image, keeping data and configuration.
    Rebuild {
        /// Image to rebuild from.
        image_id: String,
    },
}

/// A user as named in a URL: `name` or `name@host` (host defaults to `%`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    /// User name.
    pub name: String,
    /// Host pattern.
    pub host: String,
}

impl UserRef {
    /// Parses the (already URL-decoded) `{user}` path segment: the last `@` separates the host.
    pub fn parse(segment: &str) -> UserRef {
        match segment.rsplit_once('@') {
            Some((name, host)) if !host.is_empty() => UserRef {
                name: name.into(),
                host: host.into(),
            },
            Some((name, _)) => UserRef {
                name: name.into(),
                host: "%".into(),
            },
            None => UserRef {
                name: segment.into(),
                host: "%".into(),
            },
        }
    }
}

/// The answer of `POST /instances/{id}/root`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootCredentials {
    /// Always `root` (or the engine's superuser).
    pub name: String,
    /// Password.
    pub password: Secret,
}

/// What the REST API does, without HTTP: every operation of the Trove v1.0 API.
///
/// Every method takes the caller's [`RequestContext`]: another tenant's resources are answered as 404, and
/// management operations need the admin role (403). Errors carry the upstream fault ([`Error::fault`]).
pub struct ApiService {
    store: DynStore,
    bus: DynBus,
    clock: DynClock,
    config: CoreConfig,
    /// Compute, when the API runs beside it: mgmt migrate then checks the host synchronously.
    compute: Option<crate::ports::DynCompute>,
}

impl std::fmt::Debug for ApiService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiService")
            .field("region", &self.config.region)
            .finish()
    }
}

fn forbidden(message: impl Into<String>) -> Error {
    Error::Forbidden {
        message: message.into(),
    }
}

fn require_admin(ctx: &RequestContext) -> Result<()> {
    if ctx.is_admin() {
        Ok(())
    } else {
        Err(forbidden("This operation needs the admin role."))
    }
}

/// Running backup states older than this no longer block deletion (upstream `running_backups_expires`).
const RUNNING_BACKUP_EXPIRY_DAYS: i64 = 3;

fn validate_cidr(cidr: &str) -> Result<()> {
    let ok = match cidr.split_once('/') {
        Some((ip, bits)) => {
            ip.parse::<std::net::IpAddr>().is_ok()
                && bits
                    .parse::<u8>()
                    .is_ok_and(|b| b <= if ip.contains(':') { 128 } else { 32 })
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "'{}' is not a valid CIDR.",
            cidr.escape_default()
        )))
    }
}

impl ApiService {
    /// A service over `store` and `bus`, taking time from `clock`.
    pub fn new(store: DynStore, bus: DynBus, clock: DynClock, config: CoreConfig) -> ApiService {
        ApiService {
            store,
            bus,
            clock,
            config,
            compute: None,
        }
    }

    /// Lets the service read compute (hosts, servers) to answer bad migrate requests with a 400 at once instead
    /// of a failed workflow.
    pub fn with_compute(mut self, compute: crate::ports::DynCompute) -> ApiService {
        self.compute = Some(compute);
        self
    }

    /// Shared handle.
    pub fn shared(self) -> Arc<ApiService> {
        Arc::new(self)
    }

    /// The configuration in use.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The store this service writes to (read-only use by embedders and tests).
    pub fn store(&self) -> &DynStore {
        &self.store
    }

    // ------------------------------------------------------------------ helpers

    fn guest(&self, instance_id: Uuid) -> GuestClient {
        GuestClient::new(
            self.bus.clone(),
            instance_id,
            "api",
            GuestTimeouts {
                low: self.config.agent_call_low_timeout,
                high: self.config.agent_call_high_timeout,
            },
        )
    }

    async fn cast(&self, workflow_id: Uuid) {
        if let Err(e) = TaskManagerClient::new(self.bus.clone(), "api")
            .run_workflow(workflow_id)
            .await
        {
            // The workflow is stored: a task manager's scan picks it up anyway.
            tracing::warn!(workflow = %workflow_id, error = %e, "could not cast a workflow; the scan will run it");
        }
    }

    fn new_workflow(&self, kind: WorkflowKind, instance_id: Uuid, params: Value) -> Workflow {
        let now = self.clock.now();
        Workflow {
            id: Uuid::new_v4(),
            kind,
            instance_id,
            params,
            state: WorkflowState::Pending,
            owner: None,
            lease_until: None,
            attempts: 0,
            created: now,
            updated: now,
            version: 0,
        }
    }

    /// An instance of the caller's tenant (deleted ones and other tenants' are 404).
    async fn load_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<Instance> {
        match self.store.get_instance(id).await? {
            Some(i) if !i.deleted && i.tenant_id == ctx.tenant_id => Ok(i),
            _ => Err(Error::not_found("Instance", id)),
        }
    }

    /// The guest status as shown: a stale heartbeat reads as FAILED_TIMEOUT_GUESTAGENT.
    fn effective_service(
        &self,
        inst: &Instance,
        st: Option<ServiceStatusRecord>,
    ) -> Option<ServiceStatusRecord> {
        st.map(|mut s| {
            if inst.task == TaskStatus::None
                && crate::health::sweepable(s.status)
                && heartbeat_expired(
                    s.updated_at,
                    self.clock.now(),
                    self.config.agent_heartbeat_expiry,
                )
            {
                s.status = ServiceStatus::FailedTimeoutGuestagent;
            }
            s
        })
    }

    async fn backup_running(&self, instance_id: Uuid) -> Result<bool> {
        let f = BackupFilter {
            instance_id: Some(instance_id),
            ..Default::default()
        };
        Ok(self
            .store
            .list_backups(&f)
            .await?
            .iter()
            .any(|b| b.state.is_running()))
    }

    fn instance_state(
        inst: &Instance,
        service: Option<&ServiceStatusRecord>,
        backup_running: bool,
    ) -> InstanceState {
        InstanceState {
            task: inst.task,
            server: inst.server_id.as_ref().map(|_| inst.server_status),
            service: service.map_or(ServiceStatus::New, |s| s.status),
            backup_running,
        }
    }

    async fn state(&self, inst: &Instance) -> Result<(InstanceState, Option<ServiceStatusRecord>)> {
        let st = self.effective_service(inst, self.store.get_service_status(inst.id).await?);
        let running = self.backup_running(inst.id).await?;
        Ok((Self::instance_state(inst, st.as_ref(), running), st))
    }

    async fn version_and_datastore(
        &self,
        version_id: Uuid,
    ) -> Result<(DatastoreVersion, Datastore)> {
        let v = self
            .store
            .get_datastore_version(version_id)
            .await?
            .ok_or_else(|| Error::not_found("Datastore version", version_id))?;
        let ds = self
            .store
            .get_datastore(&v.datastore_id.to_string())
            .await?
            .ok_or_else(|| Error::not_found("Datastore", v.datastore_id))?;
        Ok((v, ds))
    }

    /// The view of one instance from its already fetched parts (list and show share this).
    #[allow(clippy::too_many_arguments)]
    fn assemble_view(
        &self,
        inst: Instance,
        st: Option<ServiceStatusRecord>,
        backup_running: bool,
        datastore_version: DatastoreVersion,
        datastore: Datastore,
        configuration: Option<(Uuid, String)>,
        replicas: Vec<Uuid>,
    ) -> InstanceView {
        let st = self.effective_service(&inst, st);
        let state = Self::instance_state(&inst, st.as_ref(), backup_running);
        InstanceView {
            status: api_status(&state).to_string(),
            operating_status: operating_status(&state).to_string(),
            instance: inst,
            service: st,
            datastore,
            datastore_version,
            configuration,
            replicas,
            password: None,
        }
    }

    async fn configuration_ref(&self, id: Option<Uuid>) -> Result<Option<(Uuid, String)>> {
        Ok(match id {
            Some(c) => self
                .store
                .get_configuration(c)
                .await?
                .map(|c| (c.id, c.name)),
            None => None,
        })
    }

    async fn view_with(
        &self,
        inst: Instance,
        st: Option<ServiceStatusRecord>,
        backup_running: bool,
    ) -> Result<InstanceView> {
        let (datastore_version, datastore) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        let configuration = self.configuration_ref(inst.configuration_id).await?;
        let replicas = self
            .store
            .list_instances(&InstanceFilter {
                replica_of: Some(inst.id),
                include_clustered: true,
                ..Default::default()
            })
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        Ok(self.assemble_view(
            inst,
            st,
            backup_running,
            datastore_version,
            datastore,
            configuration,
            replicas,
        ))
    }

    async fn view(&self, inst: Instance) -> Result<InstanceView> {
        let st = self.store.get_service_status(inst.id).await?;
        let running = self.backup_running(inst.id).await?;
        self.view_with(inst, st, running).await
    }

    /// Views of many instances with a fixed number of store queries: one for the service statuses, one for
    /// the replicas, one backup listing per tenant, and one lookup per distinct datastore version and
    /// configuration group (not per instance).
    async fn views(&self, instances: Vec<Instance>) -> Result<Vec<InstanceView>> {
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = instances.iter().map(|i| i.id).collect();
        // The batched lookups are independent: run them concurrently (a pooled store answers them on several
        // connections), the statuses in a few slices.
        let status_slices = futures::future::try_join_all(
            ids.chunks(STATUS_SLICE)
                .map(|slice| self.store.get_service_statuses(slice)),
        );
        let replica_pairs = self.store.list_replica_ids(&ids);
        // Instances with a running backup show BACKUP: one backup query per tenant in the list.
        let mut tenants: Vec<&str> = instances.iter().map(|i| i.tenant_id.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let backups = futures::future::try_join_all(tenants.into_iter().map(|t| {
            let f = BackupFilter {
                tenant_id: Some(t.to_string()),
                ..Default::default()
            };
            async move { self.store.list_backups(&f).await }
        }));
        let (status_slices, replica_pairs, backups) =
            futures::future::try_join3(status_slices, replica_pairs, backups).await?;
        let mut statuses: HashMap<Uuid, ServiceStatusRecord> = status_slices
            .into_iter()
            .flatten()
            .map(|s| (s.instance_id, s))
            .collect();
        let mut replicas: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for (source, replica) in replica_pairs {
            replicas.entry(source).or_default().push(replica);
        }
        let backing_up: std::collections::HashSet<Uuid> = backups
            .into_iter()
            .flatten()
            .filter(|b| b.state.is_running())
            .filter_map(|b| b.instance_id)
            .collect();
        let mut versions: HashMap<Uuid, (DatastoreVersion, Datastore)> = HashMap::new();
        let mut configurations: HashMap<Uuid, Option<(Uuid, String)>> = HashMap::new();
        for inst in &instances {
            if let std::collections::hash_map::Entry::Vacant(e) =
                versions.entry(inst.datastore_version_id)
            {
                e.insert(
                    self.version_and_datastore(inst.datastore_version_id)
                        .await?,
                );
            }
            if let Some(c) = inst.configuration_id {
                if let std::collections::hash_map::Entry::Vacant(e) = configurations.entry(c) {
                    e.insert(self.configuration_ref(Some(c)).await?);
                }
            }
        }
        let mut out = Vec::with_capacity(instances.len());
        for inst in instances {
            let st = statuses.remove(&inst.id);
            let running = backing_up.contains(&inst.id);
            let (datastore_version, datastore) = versions
                .get(&inst.datastore_version_id)
                .cloned()
                .ok_or_else(|| Error::not_found("Datastore version", inst.datastore_version_id))?;
            let configuration = inst
                .configuration_id
                .and_then(|c| configurations.get(&c).cloned().flatten());
            let replicas = replicas.remove(&inst.id).unwrap_or_default();
            out.push(self.assemble_view(
                inst,
                st,
                running,
                datastore_version,
                datastore,
                configuration,
                replicas,
            ));
        }
        Ok(out)
    }

    /// One page of `instances` (already in listing order) by `limit`/`marker` (the marker is the id of the
    /// last instance of the previous page), with views built for that page only, and the next page's marker
    /// when more instances follow.
    async fn views_page(
        &self,
        mut instances: Vec<Instance>,
        page: &PageRequest,
    ) -> Result<(Vec<InstanceView>, Option<String>)> {
        let limit = page.limit.max(1);
        if let Some(marker) = &page.marker {
            let pos = instances
                .iter()
                .position(|i| i.id.to_string() == *marker)
                .ok_or_else(|| {
                    Error::bad_request(format!(
                        "The marker '{}' could not be found.",
                        marker.escape_default()
                    ))
                })?;
            instances.drain(..=pos);
        }
        let next = if instances.len() > limit {
            Some(instances[limit - 1].id.to_string())
        } else {
            None
        };
        instances.truncate(limit);
        Ok((self.views(instances).await?, next))
    }

    async fn find_datastore(&self, id_or_name: &str) -> Result<Datastore> {
        self.store
            .get_datastore(id_or_name)
            .await?
            .ok_or_else(|| Error::not_found("Datastore", id_or_name))
    }

    async fn find_version(
        &self,
        ctx: &RequestContext,
        ds: &Datastore,
        id_or_name: &str,
    ) -> Result<DatastoreVersion> {
        let versions = self.store.list_datastore_versions(Some(ds.id)).await?;
        versions
            .into_iter()
            .filter(|v| v.active || ctx.is_admin())
            .find(|v| v.id.to_string() == id_or_name || v.name == id_or_name)
            .ok_or_else(|| Error::not_found("Datastore version", id_or_name))
    }

    async fn version_view(
        &self,
        v: DatastoreVersion,
        ds: Option<Datastore>,
    ) -> Result<VersionView> {
        let datastore = match ds {
            Some(d) => d,
            None => self.version_and_datastore(v.id).await?.1,
        };
        Ok(VersionView {
            is_default: datastore.default_version_id == Some(v.id),
            version: v,
            datastore,
        })
    }

    /// Resolves the datastore and version of a create request (upstream `get_datastore_version`).
    async fn resolve_version(
        &self,
        ctx: &RequestContext,
        datastore: Option<&str>,
        version: Option<&str>,
        version_number: Option<&str>,
    ) -> Result<(Datastore, DatastoreVersion)> {
        let ds_name = match datastore.or(self.config.default_datastore.as_deref()) {
            Some(d) => d,
            None => {
                return Err(Error::not_found(
                    "Default datastore",
                    "(none configured; name a datastore)",
                ));
            }
        };
        let ds = self.find_datastore(ds_name).await?;
        let v = match (version, version_number) {
            (Some(v), Some(num)) => {
                let all = self.store.list_datastore_versions(Some(ds.id)).await?;
                all.into_iter()
                    .find(|x| (x.name == v || x.id.to_string() == v) && x.version == num)
                    .ok_or_else(|| Error::not_found("Datastore version", format!("{v} ({num})")))?
            }
            (Some(v), None) => {
                let all = self.store.list_datastore_versions(Some(ds.id)).await?;
                let mut matching: Vec<_> = all
                    .into_iter()
                    .filter(|x| x.name == v || x.id.to_string() == v)
                    .collect();
                if matching.len() > 1 {
                    return Err(Error::bad_request(format!(
                        "Datastore version '{v}' is ambiguous; give datastore_version_number as well."
                    )));
                }
                matching
                    .pop()
                    .ok_or_else(|| Error::not_found("Datastore version", v))?
            }
            (None, _) => {
                let id = ds.default_version_id.ok_or_else(|| {
                    Error::not_found("Default datastore version of", ds.name.clone())
                })?;
                self.store
                    .get_datastore_version(id)
                    .await?
                    .ok_or_else(|| Error::not_found("Datastore version", id))?
            }
        };
        if !v.active && !ctx.is_admin() {
            return Err(Error::bad_request(format!(
                "Datastore version '{}' is not active.",
                v.name
            )));
        }
        if !v.active {
            return Err(Error::bad_request(format!(
                "Datastore version '{}' is not active.",
                v.name
            )));
        }
        Ok((ds, v))
    }

    async fn open_workflows_of(&self, instance_id: Uuid) -> Result<Vec<Workflow>> {
        Ok(self
            .store
            .list_open_workflows()
            .await?
            .into_iter()
            .filter(|w| w.instance_id == instance_id)
            .collect())
    }

    fn close_workflow(&self, mut w: Workflow) -> Write {
        let expect = Expect::Version(w.version);
        w.state = WorkflowState::Failed;
        w.owner = None;
        w.lease_until = None;
        w.updated = self.clock.now();
        crate::taskmanager::scrub(&mut w);
        Write::Workflow {
            workflow: w,
            expect,
        }
    }

    /// Commits a task change plus a new workflow, then casts it.
    async fn start_workflow(
        &self,
        mut inst: Instance,
        kind: WorkflowKind,
        params: Value,
        task: TaskStatus,
        extra: Vec<Write>,
        quota: Option<&[Resource]>,
    ) -> Result<Uuid> {
        let wf = self.new_workflow(kind, inst.id, params);
        let expect = Expect::Version(inst.version);
        inst.task = task;
        inst.updated = self.clock.now();
        let tenant = inst.tenant_id.clone();
        let mut cs = ChangeSet::new()
            .with(Write::Instance {
                instance: inst,
                expect,
            })
            .with(Write::Workflow {
                workflow: wf.clone(),
                expect: Expect::Absent,
            });
        for w in extra {
            cs.push(w);
        }
        if let Some(q) = quota {
            cs = cs.check_quota(tenant, q);
        }
        self.store.commit(cs).await?;
        self.cast(wf.id).await;
        Ok(wf.id)
    }

    async fn manage_data_instance(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        need: Facet,
        what: &str,
    ) -> Result<(Instance, Manager)> {
        let inst = self.load_instance(ctx, id).await?;
        let (v, _) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        if !v.manager.default_facets().contains(need) {
            return Err(Error::unprocessable(format!(
                "Operation not supported for datastore {}: {what}.",
                v.manager
            )));
        }
        let (state, _) = self.state(&inst).await?;
        check_operation(id, Operation::ManageData, &state)?;
        Ok((inst, v.manager))
    }

    // ------------------------------------------------------------------ datastores and flavors

    /// `GET /datastores`: datastores with their (active, for non-admins) versions.
    pub async fn list_datastores(&self, ctx: &RequestContext) -> Result<Vec<DatastoreView>> {
        let mut out = Vec::new();
        for ds in self.store.list_datastores().await? {
            out.push(self.datastore_view(ctx, ds).await?);
        }
        Ok(out)
    }

    async fn datastore_view(&self, ctx: &RequestContext, ds: Datastore) -> Result<DatastoreView> {
        let versions = self
            .store
            .list_datastore_versions(Some(ds.id))
            .await?
            .into_iter()
            .filter(|v| v.active || ctx.is_admin())
            .collect();
        Ok(DatastoreView {
            datastore: ds,
            versions,
        })
    }

    /// `GET /datastores/{id_or_name}`.
    pub async fn show_datastore(
        &self,
        ctx: &RequestContext,
        id_or_name: &str,
    ) -> Result<DatastoreView> {
        let ds = self.find_datastore(id_or_name).await?;
        self.datastore_view(ctx, ds).await
    }

    /// `DELETE /datastores/{id}` (admin; refused while versions are in use).
    pub async fn delete_datastore(&self, ctx: &RequestContext, id_or_name: &str) -> Result<()> {
        require_admin(ctx)?;
        let ds = self.find_datastore(id_or_name).await?;
        let versions: Vec<Uuid> = self
            .store
            .list_datastore_versions(Some(ds.id))
            .await?
            .into_iter()
            .map(|v| v.id)
            .collect();
        let all = self
            .store
            .list_instances(&InstanceFilter {
                include_clustered: true,
                ..Default::default()
            })
            .await?;
        if all
            .iter()
            .any(|i| versions.contains(&i.datastore_version_id))
        {
            return Err(Error::bad_request(format!(
                "Datastore {} has versions in use by instances.",
                ds.name
            )));
        }
        self.store.delete_datastore(ds.id).await
    }

    /// `GET /datastores/{ds}/versions`.
    pub async fn list_datastore_versions(
        &self,
        ctx: &RequestContext,
        datastore: &str,
    ) -> Result<Vec<VersionView>> {
        let ds = self.find_datastore(datastore).await?;
        let mut out = Vec::new();
        for v in self.store.list_datastore_versions(Some(ds.id)).await? {
            if v.active || ctx.is_admin() {
                out.push(self.version_view(v, Some(ds.clone())).await?);
            }
        }
        Ok(out)
    }

    /// `GET /datastores/{ds}/versions/{id_or_name}`.
    pub async fn show_datastore_version(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
    ) -> Result<VersionView> {
        let ds = self.find_datastore(datastore).await?;
        let v = self.find_version(ctx, &ds, version).await?;
        self.version_view(v, Some(ds)).await
    }

    /// `GET /datastores/versions/{uuid}`.
    pub async fn show_datastore_version_by_id(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
    ) -> Result<VersionView> {
        let (v, ds) = self.version_and_datastore(version_id).await?;
        if !v.active && !ctx.is_admin() {
            return Err(Error::not_found("Datastore version", version_id));
        }
        self.version_view(v, Some(ds)).await
    }

    /// `GET /datastores/{ds}/versions/{version}/flavors`: flavors allowed for the version.
    pub async fn list_version_flavors(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
    ) -> Result<Vec<Flavor>> {
        let ds = self.find_datastore(datastore).await?;
        let v = self.find_version(ctx, &ds, version).await?;
        Ok(self
            .store
            .list_flavors()
            .await?
            .into_iter()
            .filter(|f| v.flavor_ids.is_empty() || v.flavor_ids.contains(&f.id))
            .collect())
    }

    /// `GET /datastores/{ds}/versions/{version}/volume-types` (none are configured: an empty list).
    pub async fn list_version_volume_types(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
    ) -> Result<Vec<String>> {
        let ds = self.find_datastore(datastore).await?;
        self.find_version(ctx, &ds, version).await?;
        Ok(Vec::new())
    }

    /// `GET /flavors`.
    pub async fn list_flavors(&self, _ctx: &RequestContext) -> Result<Vec<Flavor>> {
        self.store.list_flavors().await
    }

    /// `GET /flavors/{id}`.
    pub async fn show_flavor(&self, _ctx: &RequestContext, id: &str) -> Result<Flavor> {
        self.store
            .get_flavor(id)
            .await?
            .ok_or_else(|| Error::not_found("Flavor", id))
    }

    /// Creates or replaces a flavor (admin; trove-manage and embedders).
    pub async fn mgmt_put_flavor(&self, ctx: &RequestContext, flavor: Flavor) -> Result<Flavor> {
        require_admin(ctx)?;
        if flavor.id.trim().is_empty() || flavor.ram_mb == 0 || flavor.vcpus == 0 {
            return Err(Error::bad_request(
                "A flavor needs an id, RAM and at least one vCPU.",
            ));
        }
        self.store.put_flavor(&flavor).await?;
        Ok(flavor)
    }

    /// Deletes a flavor (admin).
    pub async fn mgmt_delete_flavor(&self, ctx: &RequestContext, id: &str) -> Result<()> {
        require_admin(ctx)?;
        self.store
            .get_flavor(id)
            .await?
            .ok_or_else(|| Error::not_found("Flavor", id))?;
        self.store.delete_flavor(id).await
    }

    // ------------------------------------------------------------------ mgmt datastore versions

    /// `GET /mgmt/datastore-versions` (admin).
    pub async fn mgmt_list_datastore_versions(
        &self,
        ctx: &RequestContext,
    ) -> Result<Vec<VersionView>> {
        require_admin(ctx)?;
        let mut out = Vec::new();
        for v in self.store.list_datastore_versions(None).await? {
            out.push(self.version_view(v, None).await?);
        }
        Ok(out)
    }

    /// `POST /mgmt/datastore-versions` (admin): creates the datastore when missing.
    pub async fn mgmt_create_datastore_version(
        &self,
        ctx: &RequestContext,
        spec: DatastoreVersionSpec,
    ) -> Result<VersionView> {
        require_admin(ctx)?;
        let manager = Manager::parse(&spec.manager)?;
        if spec.datastore_name.trim().is_empty() || spec.name.trim().is_empty() {
            return Err(Error::bad_request(
                "A datastore version needs a datastore name and a version name.",
            ));
        }
        let mut ds = match self.store.get_datastore(&spec.datastore_name).await? {
            Some(ds) => ds,
            None => {
                let ds = Datastore {
                    id: Uuid::new_v4(),
                    name: spec.datastore_name.clone(),
                    default_version_id: None,
                };
                self.store.put_datastore(&ds).await?;
                ds
            }
        };
        let number = spec.version.clone().unwrap_or_else(|| spec.name.clone());
        let existing = self.store.list_datastore_versions(Some(ds.id)).await?;
        if existing
            .iter()
            .any(|v| v.name == spec.name && v.version == number)
        {
            return Err(Error::conflict(format!(
                "Datastore version {} ({number}) of {} already exists.",
                spec.name, ds.name
            )));
        }
        let v = DatastoreVersion {
            id: Uuid::new_v4(),
            datastore_id: ds.id,
            name: spec.name,
            manager,
            image: spec.image,
            packages: spec.packages,
            active: spec.active,
            version: number,
            flavor_ids: Vec::new(),
        };
        self.store.put_datastore_version(&v).await?;
        if spec.default || ds.default_version_id.is_none() {
            ds.default_version_id = Some(v.id);
            self.store.put_datastore(&ds).await?;
        }
        self.version_view(v, Some(ds)).await
    }

    /// `GET /mgmt/datastore-versions/{id}` (admin).
    pub async fn mgmt_show_datastore_version(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<VersionView> {
        require_admin(ctx)?;
        let (v, ds) = self.version_and_datastore(id).await?;
        self.version_view(v, Some(ds)).await
    }

    /// `PATCH /mgmt/datastore-versions/{id}` (admin).
    pub async fn mgmt_update_datastore_version(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        patch: DatastoreVersionPatch,
    ) -> Result<VersionView> {
        require_admin(ctx)?;
        let (mut v, mut ds) = self.version_and_datastore(id).await?;
        if let Some(m) = &patch.manager {
            v.manager = Manager::parse(m)?;
        }
        if let Some(p) = patch.packages {
            v.packages = p;
        }
        if let Some(i) = patch.image {
            v.image = i;
        }
        if let Some(a) = patch.active {
            v.active = a;
        }
        if let Some(n) = patch.name {
            if n.trim().is_empty() {
                return Err(Error::bad_request(
                    "A datastore version name must not be empty.",
                ));
            }
            v.name = n;
        }
        self.store.put_datastore_version(&v).await?;
        match patch.default {
            Some(true) => {
                ds.default_version_id = Some(v.id);
                self.store.put_datastore(&ds).await?;
            }
            Some(false) if ds.default_version_id == Some(v.id) => {
                ds.default_version_id = None;
                self.store.put_datastore(&ds).await?;
            }
            _ => {}
        }
        self.version_view(v, Some(ds)).await
    }

    /// `DELETE /mgmt/datastore-versions/{id}` (admin; refused while instances use it).
    pub async fn mgmt_delete_datastore_version(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<()> {
        require_admin(ctx)?;
        let (v, mut ds) = self.version_and_datastore(id).await?;
        let all = self
            .store
            .list_instances(&InstanceFilter {
                include_clustered: true,
                ..Default::default()
            })
            .await?;
        if all.iter().any(|i| i.datastore_version_id == v.id) {
            return Err(Error::bad_request(format!(
                "Datastore version {} is in use by instances.",
                v.name
            )));
        }
        self.store.delete_datastore_version(v.id).await?;
        if ds.default_version_id == Some(v.id) {
            ds.default_version_id = None;
            self.store.put_datastore(&ds).await?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ instances

    /// `GET /instances` and `/instances/detail`: the caller's live instances, newest first.
    pub async fn list_instances(
        &self,
        ctx: &RequestContext,
        include_clustered: bool,
    ) -> Result<Vec<InstanceView>> {
        let f = InstanceFilter {
            tenant_id: Some(ctx.tenant_id.clone()),
            include_clustered,
            ..Default::default()
        };
        let instances = self.store.list_instances(&f).await?;
        self.views(instances).await
    }

    /// `GET /instances` and `/instances/detail`, one page: the caller's live instances, newest first, paged
    /// by `page` before any view is built. Answers the page and the marker of the next one when more follow;
    /// an unknown marker is a 400.
    pub async fn list_instances_page(
        &self,
        ctx: &RequestContext,
        include_clustered: bool,
        page: &PageRequest,
    ) -> Result<(Vec<InstanceView>, Option<String>)> {
        let f = InstanceFilter {
            tenant_id: Some(ctx.tenant_id.clone()),
            include_clustered,
            ..Default::default()
        };
        let mut instances = self.store.list_instances(&f).await?;
        instances.sort_by_key(|i| std::cmp::Reverse(i.created));
        self.views_page(instances, page).await
    }

    /// `GET /instances/{id}`.
    pub async fn show_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<InstanceView> {
        let inst = self.load_instance(ctx, id).await?;
        self.view(inst).await
    }

    /// `POST /instances`: validates, checks quota, persists (task BUILDING, service NEW, a create workflow) in
    /// one commit and casts the workflow to the task manager. Answers the new instance's view (status BUILD).
    pub async fn create_instance(
        &self,
        ctx: &RequestContext,
        req: CreateInstance,
    ) -> Result<InstanceView> {
        validate_instance_name(&req.name)?;
        if req.replica_count.is_some() && req.replica_of.is_none() {
            return Err(Error::bad_request(
                "replica_count is only valid together with replica_of.",
            ));
        }
        if let Some(n) = req.replica_count {
            if !(1..=3).contains(&n) {
                return Err(Error::bad_request("replica_count must be between 1 and 3."));
            }
        }
        // Replica: everything is copied from the source.
        let (flavor, ds, version, volume_size, volume_type, group) = match req.replica_of {
            Some(source_id) => {
                for (given, field) in [
                    (req.flavor_ref.is_some(), "flavorRef"),
                    (
                        req.datastore.is_some() || req.datastore_version.is_some(),
                        "datastore",
                    ),
                    (req.volume_size.is_some(), "volume"),
                    (req.locality.is_some(), "locality"),
                ] {
                    if given {
                        return Err(Error::bad_request(format!(
                            "A replica may not be given {field}; it is copied from the source."
                        )));
                    }
                }
                if !req.databases.is_empty() || !req.users.is_empty() {
                    return Err(Error::bad_request(
                        "Cannot create a replica with users or databases.",
                    ));
                }
                let source = self.load_instance(ctx, source_id).await?;
                if source.replica_of.is_some() {
                    return Err(Error::Unauthorized {
                        message: format!("Cannot create a replica of replica {source_id}."),
                    });
                }
                let (state, _) = self.state(&source).await?;
                check_operation(source_id, Operation::CreateReplica, &state)?;
                let flavor = self
                    .store
                    .get_flavor(&source.flavor_id)
                    .await?
                    .ok_or_else(|| {
                        Error::bad_request(format!(
                            "Flavor {} of the source no longer exists.",
                            source.flavor_id
                        ))
                    })?;
                let (v, ds) = self
                    .version_and_datastore(source.datastore_version_id)
                    .await?;
                if !v.manager.default_facets().contains(Facet::Replication) {
                    return Err(Error::bad_request(format!(
                        "Replication is not supported for datastore {}.",
                        v.manager
                    )));
                }
                (
                    flavor,
                    ds,
                    v,
                    source.volume_size,
                    source.volume_type.clone(),
                    source.locality.map(|l| (source_id, l)),
                )
            }
            None => {
                let (ds, v) = self
                    .resolve_version(
                        ctx,
                        req.datastore.as_deref(),
                        req.datastore_version.as_deref(),
                        req.datastore_version_number.as_deref(),
                    )
                    .await?;
                let flavor_ref = req
                    .flavor_ref
                    .as_deref()
                    .ok_or_else(|| Error::bad_request("flavorRef is required."))?;
                let flavor = self.store.get_flavor(flavor_ref).await?.ok_or_else(|| {
                    Error::bad_request(format!("Flavor {flavor_ref} could not be found."))
                })?;
                if !v.flavor_ids.is_empty() && !v.flavor_ids.contains(&flavor.id) {
                    return Err(Error::not_found(
                        "Flavor for datastore version",
                        format!("{} ({})", flavor.id, v.name),
                    ));
                }
                let size = match (self.config.volume_support, req.volume_size) {
                    (true, None) => return Err(Error::bad_request("A volume size is required.")),
                    (true, Some(0)) => {
                        return Err(Error::bad_request("The volume size must be at least 1 GB."))
                    }
                    (true, Some(s)) if s > self.config.max_accepted_volume_size => {
                        return Err(Error::OverLimit {
                            message: format!(
                                "Volume size {s} GB exceeds the maximum volume size of {} GB.",
                                self.config.max_accepted_volume_size
                            ),
                            retry_after: None,
                        })
                    }
                    (true, Some(s)) => Some(s),
                    (false, Some(_)) => {
                        return Err(Error::not_implemented(
                            "Volume support is not enabled; do not give a volume size.",
                        ))
                    }
                    (false, None) => None,
                };
                (flavor, ds, v, size, req.volume_type.clone(), None)
            }
        };
        let manager = version.manager;
        let caps = manager.default_facets();
        if !req.databases.is_empty() && !caps.contains(Facet::Databases) {
            return Err(Error::unprocessable(format!(
                "Operation not supported for datastore {manager}: databases."
            )));
        }
        if !req.users.is_empty() && !caps.contains(Facet::Users) {
            return Err(Error::unprocessable(format!(
                "Operation not supported for datastore {manager}: users."
            )));
        }
        for db in &req.databases {
            validate_database_name(manager, &db.name)?;
        }
        for u in &req.users {
            validate_user_name(manager, &u.name)?;
            validate_password(&u.password)?;
            if let Some(h) = &u.host {
                validate_host(h)?;
            }
            for d in &u.databases {
                validate_database_name(manager, d)?;
            }
        }
        if let Some(a) = &req.access {
            for c in &a.allowed_cidrs {
                validate_cidr(c)?;
            }
        }
        let overrides = match req.configuration {
            Some(cid) => {
                let c = self.load_configuration(ctx, cid).await?;
                if c.datastore_version_id != version.id {
                    return Err(Error::bad_request(format!(
                        "Configuration group {cid} is for another datastore version than the instance."
                    )));
                }
                c.values
            }
            None => Map::new(),
        };
        let restore = match req.restore_point {
            Some(bid) => {
                let b = self.load_backup(ctx, bid).await?;
                if !b.state.is_restorable() {
                    return Err(Error::conflict(format!(
                        "Backup {bid} is not completed (state {}).",
                        b.state.as_str()
                    )));
                }
                let (bv, _) = self.version_and_datastore(b.datastore_version_id).await?;
                if bv.datastore_id != ds.id {
                    return Err(Error::bad_request(format!(
                        "Backup {bid} is of another datastore."
                    )));
                }
                if let (Some(bs), Some(vs)) = (b.size, volume_size) {
                    if bs > f64::from(vs) {
                        return Err(forbidden(format!(
                            "Backup {bid} ({bs} GB) does not fit the volume ({vs} GB)."
                        )));
                    }
                }
                Some(bid)
            }
            None => None,
        };
        let count = if req.replica_of.is_some() {
            req.replica_count.unwrap_or(1)
        } else {
            1
        };
        let now = self.clock.now();
        let mut cs = ChangeSet::new();
        let mut created = Vec::new();
        let mut workflows = Vec::new();
        for n in 0..count {
            let name = if count > 1 {
                format!("{}-{}", req.name, n + 1)
            } else {
                req.name.clone()
            };
            let inst = Instance {
                id: Uuid::new_v4(),
                name,
                tenant_id: ctx.tenant_id.clone(),
                datastore_version_id: version.id,
                flavor_id: flavor.id.clone(),
                ram_mb: flavor.ram_mb,
                volume_size,
                volume_type: volume_type.clone(),
                task: TaskStatus::Building,
                server_status: ServerStatus::Build,
                server_id: None,
                volume_id: None,
                host: None,
                addresses: Vec::new(),
                port: None,
                configuration_id: req.configuration,
                replica_of: req.replica_of,
                locality: req.locality,
                region: req
                    .region_name
                    .clone()
                    .unwrap_or_else(|| self.config.region.clone()),
                availability_zone: req.availability_zone.clone(),
                access: req.access.clone().unwrap_or_default(),
                fault: None,
                cluster_id: None,
                created: now,
                updated: now,
                deleted: false,
                deleted_at: None,
                version: 0,
            };
            let params = CreateParams {
                flavor: flavor.clone(),
                datastore_version: version.clone(),
                databases: req.databases.clone(),
                users: req.users.clone(),
                root_password: None,
                overrides: overrides.clone(),
                group: group.or(req.locality.map(|l| (inst.id, l))),
                scrubbed: false,
                replica_of: req.replica_of,
                restore_point: restore,
            };
            let params =
                serde_json::to_value(&params).map_err(|e| Error::bad_request(e.to_string()))?;
            let wf = self.new_workflow(WorkflowKind::Create, inst.id, params);
            cs.push(Write::Instance {
                instance: inst.clone(),
                expect: Expect::Absent,
            });
            cs.push(Write::ServiceStatus(ServiceStatusRecord {
                instance_id: inst.id,
                status: ServiceStatus::New,
                reason: None,
                volume: None,
                updated_at: now,
            }));
            cs.push(Write::Workflow {
                workflow: wf.clone(),
                expect: Expect::Absent,
            });
            workflows.push(wf.id);
            created.push(inst);
        }
        let cs = cs.check_quota(
            ctx.tenant_id.clone(),
            &[Resource::Instances, Resource::Ram, Resource::Volumes],
        );
        self.store.commit(cs).await?;
        for w in workflows {
            self.cast(w).await;
        }
        let first = created
            .into_iter()
            .next()
            .ok_or_else(|| Error::bad_request("nothing to create"))?;
        self.view(first).await
    }

    /// `PUT/PATCH /instances/{id}`: name, configuration attach/detach, replica detach, upgrade, access.
    pub async fn update_instance(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        req: UpdateInstance,
    ) -> Result<()> {
        let mut inst = self.load_instance(ctx, id).await?;
        let others = [
            req.replica_of.is_some(),
            req.configuration.is_some(),
            req.datastore_version.is_some(),
            req.access.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if others > 1 {
            return Err(Error::bad_request(
                "Only one attribute besides name may be updated at a time.",
            ));
        }
        if let Some(name) = &req.name {
            validate_instance_name(name)?;
        }
        if others == 0 && req.name.is_none() {
            // An empty body detaches the configuration group (upstream).
            if inst.configuration_id.is_none() {
                return Ok(());
            }
        }
        if let Some(name) = req.name.clone() {
            let expect = Expect::Version(inst.version);
            inst.name = name;
            inst.updated = self.clock.now();
            self.store
                .commit(ChangeSet::new().with(Write::Instance {
                    instance: inst.clone(),
                    expect,
                }))
                .await?;
            inst.version += 1;
            if others == 0 {
                return Ok(());
            }
        }
        let (state, _) = self.state(&inst).await?;
        if let Some(None) = req.replica_of {
            if inst.replica_of.is_none() {
                return Err(Error::bad_request(format!(
                    "Instance {id} is not a replica."
                )));
            }
            check_operation(id, Operation::Detach, &state)?;
            self.start_workflow(
                inst,
                WorkflowKind::Detach,
                json!({}),
                TaskStatus::Detaching,
                vec![],
                None,
            )
            .await?;
            return Ok(());
        }
        if let Some(Some(_)) = req.replica_of {
            return Err(Error::bad_request(
                "replica_of can only be set to null (detach) on update.",
            ));
        }
        if let Some(access) = req.access {
            for c in &access.allowed_cidrs {
                validate_cidr(c)?;
            }
            let expect = Expect::Version(inst.version);
            inst.access = access;
            inst.updated = self.clock.now();
            return self
                .store
                .commit(ChangeSet::new().with(Write::Instance {
                    instance: inst,
                    expect,
                }))
                .await;
        }
        if let Some(version) = &req.datastore_version {
            return self.upgrade_instance(ctx, inst, version).await;
        }
        // An empty body (no configuration key) detaches, like `configuration: null`.
        let target = req.configuration.unwrap_or_default();
        check_operation(id, Operation::AssignConfiguration, &state)?;
        match target {
            Some(cid) => {
                if inst.configuration_id.is_some() {
                    return Err(Error::bad_request(format!(
                        "Instance {id} already has a configuration group attached; detach it first."
                    )));
                }
                let c = self.load_configuration(ctx, cid).await?;
                if c.datastore_version_id != inst.datastore_version_id {
                    return Err(Error::bad_request(format!(
                        "Configuration group {cid} is for another datastore version than the instance."
                    )));
                }
                inst.configuration_id = Some(cid);
            }
            None => {
                if inst.configuration_id.is_none() {
                    return Err(Error::bad_request(format!(
                        "Instance {id} has no configuration group attached."
                    )));
                }
                inst.configuration_id = None;
            }
        }
        let task = inst.task;
        self.start_workflow(
            inst,
            WorkflowKind::ApplyConfiguration,
            json!({ "configuration_id": target }),
            task,
            vec![],
            None,
        )
        .await?;
        Ok(())
    }

    async fn delete_common(&self, ctx: &RequestContext, id: Uuid, force: bool) -> Result<()> {
        let inst = self.load_instance(ctx, id).await?;
        let (state, _) = self.state(&inst).await?;
        if !force {
            check_operation(id, Operation::Delete, &state)?;
        }
        let replicas = self
            .store
            .list_instances(&InstanceFilter {
                replica_of: Some(id),
                include_clustered: true,
                ..Default::default()
            })
            .await?;
        if !replicas.is_empty() {
            return Err(forbidden("Detach replicas before deleting replica source."));
        }
        let open = self.open_workflows_of(id).await?;
        if !force && inst.task == TaskStatus::Deleting {
            if let Some(w) = open
                .iter()
                .find(|w| w.kind == WorkflowKind::Delete || w.kind == WorkflowKind::ForceDelete)
            {
                self.cast(w.id).await;
                return Ok(());
            }
        }
        let extra: Vec<Write> = open.into_iter().map(|w| self.close_workflow(w)).collect();
        let mut inst = inst;
        inst.configuration_id = None;
        let kind = if force {
            WorkflowKind::ForceDelete
        } else {
            WorkflowKind::Delete
        };
        self.start_workflow(inst, kind, json!({}), TaskStatus::Deleting, extra, None)
            .await?;
        Ok(())
    }

    /// `DELETE /instances/{id}`.
    pub async fn delete_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        self.delete_common(ctx, id, false).await
    }

    /// `POST /instances/{id}/action {"reset_status": {"force_delete": ...}}` followed by a delete, or the
    /// force-delete route: tears the instance down whatever its state, without asking the guest.
    pub async fn force_delete_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        self.delete_common(ctx, id, true).await
    }

    /// `{"restart": {}}`.
    pub async fn restart_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        let inst = self.load_instance(ctx, id).await?;
        let (state, _) = self.state(&inst).await?;
        check_operation(id, Operation::Restart, &state)?;
        let status = ServiceStatusRecord {
            instance_id: id,
            status: ServiceStatus::Restarting,
            reason: None,
            volume: None,
            updated_at: self.clock.now(),
        };
        self.start_workflow(
            inst,
            WorkflowKind::Restart,
            json!({}),
            TaskStatus::Rebooting,
            vec![Write::ServiceStatus(status)],
            None,
        )
        .await?;
        Ok(())
    }

    /// `{"resize": {"flavorRef": ...}}` (href already reduced to the id).
    pub async fn resize_flavor(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        flavor_ref: &str,
    ) -> Result<()> {
        let mut inst = self.load_instance(ctx, id).await?;
        let (state, _) = self.state(&inst).await?;
        check_operation(id, Operation::ResizeFlavor, &state)?;
        let new = self.store.get_flavor(flavor_ref).await?.ok_or_else(|| {
            Error::bad_request(format!("Flavor {flavor_ref} could not be found."))
        })?;
        if new.id == inst.flavor_id {
            return Err(Error::bad_request(
                "The new flavor must differ from the current one.",
            ));
        }
        let (v, _) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        if !v.flavor_ids.is_empty() && !v.flavor_ids.contains(&new.id) {
            return Err(Error::not_found(
                "Flavor for datastore version",
                format!("{} ({})", new.id, v.name),
            ));
        }
        let old = self
            .store
            .get_flavor(&inst.flavor_id)
            .await?
            .unwrap_or_else(|| Flavor {
                id: inst.flavor_id.clone(),
                name: inst.flavor_id.clone(),
                ram_mb: inst.ram_mb,
                vcpus: 1,
                disk_gb: 0,
                ephemeral_gb: 0,
            });
        let params = serde_json::to_value(ResizeFlavorParams {
            old_flavor: old,
            new_flavor: new.clone(),
        })
        .map_err(|e| Error::bad_request(e.to_string()))?;
        // The RAM is reserved now (quota), and given back if the resize fails.
        inst.ram_mb = new.ram_mb;
        self.start_workflow(
            inst,
            WorkflowKind::ResizeFlavor,
            params,
            TaskStatus::Resizing,
            vec![],
            Some(&[Resource::Ram]),
        )
        .await?;
        Ok(())
    }

    /// `{"resize": {"volume": {"size": N}}}`.
    pub async fn resize_volume(&self, ctx: &RequestContext, id: Uuid, size_gb: u32) -> Result<()> {
        let mut inst = self.load_instance(ctx, id).await?;
        let (state, _) = self.state(&inst).await?;
        check_operation(id, Operation::ResizeVolume, &state)?;
        let current = inst
            .volume_size
            .ok_or_else(|| Error::bad_request(format!("Instance {id} has no volume.")))?;
        if size_gb <= current {
            return Err(Error::bad_request(format!(
                "The new volume size {size_gb} GB must be larger than the current size {current} GB."
            )));
        }
        if size_gb > self.config.max_accepted_volume_size {
            return Err(Error::OverLimit {
                message: format!(
                    "Volume size {size_gb} GB exceeds the maximum volume size of {} GB.",
                    self.config.max_accepted_volume_size
                ),
                retry_after: None,
            });
        }
        let params = serde_json::to_value(ResizeVolumeParams {
            old_size: current,
            new_size: size_gb,
        })
        .map_err(|e| Error::bad_request(e.to_string()))?;
        inst.volume_size = Some(size_gb);
        self.start_workflow(
            inst,
            WorkflowKind::ResizeVolume,
            params,
            TaskStatus::Resizing,
            vec![],
            Some(&[Resource::Volumes]),
        )
        .await?;
        Ok(())
    }

    async fn reset_common(&self, inst: Instance, service: Option<ServiceStatus>) -> Result<()> {
        let now = self.clock.now();
        let open = self.open_workflows_of(inst.id).await?;
        let mut cs = ChangeSet::new();
        for w in open {
            cs.push(self.close_workflow(w));
        }
        if let Some(s) = service {
            cs.push(Write::ServiceStatus(ServiceStatusRecord {
                instance_id: inst.id,
                status: s,
                reason: Some("status reset".into()),
                volume: None,
                updated_at: now,
            }));
            let f = BackupFilter {
                instance_id: Some(inst.id),
                ..Default::default()
            };
            for mut b in self.store.list_backups(&f).await? {
                if b.state.is_running() {
                    b.state = BackupState::Failed;
                    b.updated = now;
                    cs.push(Write::Backup(b));
                }
            }
        }
        let expect = Expect::Version(inst.version);
        let mut inst = inst;
        inst.task = TaskStatus::None;
        if inst.server_status == ServerStatus::Build {
            // The build will not finish: without this the instance would read BUILD, which refuses delete.
            inst.server_status = ServerStatus::Error;
        }
        inst.updated = now;
        cs.push(Write::Instance {
            instance: inst,
            expect,
        });
        self.store.commit(cs).await
    }

    /// `{"reset_status": {}}`: task NONE, service UNKNOWN, running backups FAILED, open workflows closed.
    pub async fn reset_status(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        let inst = self.load_instance(ctx, id).await?;
        self.reset_common(inst, Some(ServiceStatus::Unknown)).await
    }

    /// `{"promote_to_replica_source": {}}`.
    pub async fn promote_to_replica_source(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        let inst = self.load_instance(ctx, id).await?;
        let (state, _) = self.state(&inst).await?;
        check_operation(id, Operation::Promote, &state)?;
        if inst.replica_of.is_none() {
            return Err(Error::bad_request(format!(
                "Instance {id} is not a replica."
            )));
        }
        self.start_workflow(
            inst,
            WorkflowKind::Promote,
            json!({}),
            TaskStatus::Promoting,
            vec![],
            None,
        )
        .await?;
        Ok(())
    }

    /// `{"eject_replica_source": {}}`.
    pub async fn eject_replica_source(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        let inst = self.load_instance(ctx, id).await?;
        let replicas = self
            .store
            .list_instances(&InstanceFilter {
                replica_of: Some(id),
                include_clustered: true,
                ..Default::default()
            })
            .await?;
        if replicas.is_empty() {
            return Err(Error::bad_request(format!(
                "Instance {id} is not a replica source."
            )));
        }
        let st = self.store.get_service_status(id).await?;
        if let Some(st) = st {
            if !heartbeat_expired(
                st.updated_at,
                self.clock.now(),
                self.config.agent_heartbeat_expiry,
            ) {
                return Err(Error::bad_request(format!(
                    "Replica source {id} cannot be ejected as it has a current heartbeat."
                )));
            }
        }
        self.start_workflow(
            inst,
            WorkflowKind::Eject,
            json!({}),
            TaskStatus::Ejecting,
            vec![],
            None,
        )
        .await?;
        Ok(())
    }

    /// `GET /instances/{id}/configuration`: the configuration values in effect.
    pub async fn instance_configuration(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Map<String, Value>> {
        let inst = self.load_instance(ctx, id).await?;
        match inst.configuration_id {
            Some(c) => Ok(self
                .store
                .get_configuration(c)
                .await?
                .map(|c| c.values)
                .unwrap_or_default()),
            None => Ok(Map::new()),
        }
    }

    /// `GET /instances/{id}/backups`.
    pub async fn instance_backups(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Vec<BackupView>> {
        self.load_instance(ctx, id).await?;
        let f = BackupFilter {
            tenant_id: Some(ctx.tenant_id.clone()),
            instance_id: Some(id),
            include_deleted: false,
        };
        let mut out = Vec::new();
        for b in self.store.list_backups(&f).await? {
            out.push(self.backup_view(b).await?);
        }
        Ok(out)
    }

    // ------------------------------------------------------------------ databases

    /// `GET /instances/{id}/databases`.
    pub async fn list_databases(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Vec<DatabaseSpec>> {
        self.manage_data_instance(ctx, id, Facet::Databases, "databases")
            .await?;
        self.guest(id).list_databases().await
    }

    /// `POST /instances/{id}/databases`.
    pub async fn create_databases(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        dbs: Vec<DatabaseSpec>,
    ) -> Result<()> {
        let (_, m) = self
            .manage_data_instance(ctx, id, Facet::Databases, "databases")
            .await?;
        if dbs.is_empty() {
            return Err(Error::bad_request("No databases given."));
        }
        for d in &dbs {
            validate_database_name(m, &d.name)?;
        }
        self.guest(id).create_databases(dbs).await
    }

    /// `DELETE /instances/{id}/databases/{name}`.
    pub async fn delete_database(&self, ctx: &RequestContext, id: Uuid, name: &str) -> Result<()> {
        let (_, m) = self
            .manage_data_instance(ctx, id, Facet::Databases, "databases")
            .await?;
        validate_database_name(m, name)?;
        self.guest(id).delete_database(name).await
    }

    // ------------------------------------------------------------------ users

    fn check_user(m: Manager, user: &UserRef) -> Result<()> {
        validate_user_name(m, &user.name)?;
        validate_host(&user.host)
    }

    /// `GET /instances/{id}/users`.
    pub async fn list_users(&self, ctx: &RequestContext, id: Uuid) -> Result<Vec<UserInfo>> {
        self.manage_data_instance(ctx, id, Facet::Users, "users")
            .await?;
        self.guest(id).list_users().await
    }

    /// `POST /instances/{id}/users`.
    pub async fn create_users(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        users: Vec<UserSpec>,
    ) -> Result<()> {
        let (_, m) = self
            .manage_data_instance(ctx, id, Facet::Users, "users")
            .await?;
        if users.is_empty() {
            return Err(Error::bad_request("No users given."));
        }
        for u in &users {
            validate_user_name(m, &u.name)?;
            validate_password(&u.password)?;
            if let Some(h) = &u.host {
                validate_host(h)?;
            }
            for d in &u.databases {
                validate_database_name(m, d)?;
            }
        }
        self.guest(id).create_users(users).await
    }

    async fn find_user(&self, id: Uuid, user: &UserRef) -> Result<UserInfo> {
        self.guest(id)
            .list_users()
            .await?
            .into_iter()
            .find(|u| u.name == user.name && u.host == user.host)
            .ok_or_else(|| Error::not_found("User", format!("{}@{}", user.name, user.host)))
    }

    /// `GET /instances/{id}/users/{user}`.
    pub async fn show_user(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        user: &UserRef,
    ) -> Result<UserInfo> {
        let (_, m) = self
            .manage_data_instance(ctx, id, Facet::Users, "users")
            .await?;
        Self::check_user(m, user)?;
        self.find_user(id, user).await
    }

    /// `PUT /instances/{id}/users/{user}`.
    pub async fn update_user(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        user: &UserRef,
        update: UserUpdate,
    ) -> Result<()> {
        let (_, m) = self
            .manage_data_instance(ctx, id, Facet::Users, "users")
            .await?;
        Self::check_user(m, user)?;
        if update.name.is_none() && update.password.is_none() && update.host.is_none() {
            return Err(Error::bad_request(
                "Give at least one of name, password and host.",
            ));
        }
        if let Some(n) = &update.name {
            validate_user_name(m, n)?;
        }
        if let Some(p) = &update.password {
            validate_password(p)?;
        }
        if let Some(h) = &update.host {
            validate_host(h)?;
        }
        self.find_user(id, user).await?;
        self.guest(id)
            .update_user(&user.name, &user.host, update)
            .await
    }

    /// `DELETE /instances/{id}/users/{user}`.
    pub async fn delete_user(&self, ctx: &RequestContext, id: Uuid, user: &UserRef) -> Result<()> {
        let (_, m) = self
            .manage_data_instance(ctx, id, Facet::Users, "users")
            .await?;
        Self::check_user(m, user)?;
        self.find_user(id, user).await?;
        self.guest(id).delete_user(&user.name, &user.host).await
    }

    /// `PUT /instances/{id}/users`: change passwords.
    pub async fn change_passwords(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        users: Vec<UserSpec>,
    ) -> Result<()> {
        let (_, m) = self
            .manage_data_instance(ctx, id, Facet::Users, "users")
            .await?;
        if users.is_empty() {
            return Err(Error::bad_request("No users given."));
        }
        for u in &users {
            validate_user_name(m, &u.name)?;
            validate_password(&u.password)?;
            if let Some(h) = &u.host {
                validate_host(h)?;
            }
        }
        let known = self.guest(id).list_users().await?;
        for u in &users {
            let host = u.host.clone().unwrap_or_else(|| "%".into());
            if !known.iter().any(|k| k.name == u.name && k.host == host) {
                return Err(Error::not_found("User", format!("{}@{host}", u.name)));
            }
        }
        self.guest(id).change_passwords(users).await
    }

    /// `GET /instances/{id}/users/{user}/databases`.
    pub async fn list_user_access(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        user: &UserRef,
    ) -> Result<Vec<String>> {
        let (_, m) = self
            .manage_data_instance(ctx, id, Facet::Users, "users")
            .await?;
        Self::check_user(m, user)?;
        Ok(self.find_user(id, user).await?.databases)
    }

    /// `PUT /instances/{id}/users/{user}/databases`.
    pub async fn grant_user_access(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        user: &UserRef,
        databases: Vec<String>,
    ) -> Result<()> {
        let (_, m) = self
            .manage_data_instance(ctx, id, Facet::Users, "user access")
            .await?;
        Self::check_user(m, user)?;
        for d in &databases {
            validate_database_name(m, d)?;
        }
        self.find_user(id, user).await?;
        self.guest(id)
            .grant_access(&user.name, &user.host, databases)
            .await
    }

    /// `DELETE /instances/{id}/users/{user}/databases/{db}`.
    pub async fn revoke_user_access(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        user: &UserRef,
        database: &str,
    ) -> Result<()> {
        let (_, m) = self
            .manage_data_instance(ctx, id, Facet::Users, "user access")
            .await?;
        Self::check_user(m, user)?;
        validate_database_name(m, database)?;
        self.find_user(id, user).await?;
        self.guest(id)
            .revoke_access(&user.name, &user.host, database)
            .await
    }

    // ------------------------------------------------------------------ root

    /// `GET /instances/{id}/root`: whether root was ever enabled (root history).
    pub async fn root_show(&self, ctx: &RequestContext, id: Uuid) -> Result<bool> {
        self.manage_data_instance(ctx, id, Facet::Root, "root")
            .await?;
        Ok(self.store.get_root_history(id).await?.is_some())
    }

    /// `POST /instances/{id}/root`: enables root (generated password when none given), records the history.
    pub async fn root_enable(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        password: Option<Secret>,
    ) -> Result<RootCredentials> {
        let (_, m) = self
            .manage_data_instance(ctx, id, Facet::Root, "root")
            .await?;
        if let Some(p) = &password {
            validate_password(p)?;
        }
        let password = self.guest(id).enable_root(password).await?;
        self.store
            .commit(ChangeSet::new().with(Write::RootHistory(RootHistory {
                instance_id: id,
                user: ctx.user_id.clone(),
                created: self.clock.now(),
            })))
            .await?;
        let name = match m {
            Manager::Postgresql => "postgres",
            _ => "root",
        };
        Ok(RootCredentials {
            name: name.into(),
            password,
        })
    }

    /// `DELETE /instances/{id}/root`: 404 when root was never enabled.
    pub async fn root_disable(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        self.manage_data_instance(ctx, id, Facet::Root, "root")
            .await?;
        if self.store.get_root_history(id).await?.is_none() {
            return Err(Error::not_found("Root history of instance", id));
        }
        self.guest(id).disable_root().await
    }

    /// `GET /mgmt/instances/{id}/root` (admin): the root history record.
    pub async fn mgmt_root_history(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Option<RootHistory>> {
        require_admin(ctx)?;
        self.store
            .get_instance(id)
            .await?
            .ok_or_else(|| Error::not_found("Instance", id))?;
        self.store.get_root_history(id).await
    }

    // ------------------------------------------------------------------ configuration groups

    async fn load_configuration(&self, ctx: &RequestContext, id: Uuid) -> Result<Configuration> {
        match self.store.get_configuration(id).await? {
            Some(c) if !c.deleted && c.tenant_id == ctx.tenant_id => Ok(c),
            _ => Err(Error::not_found("Configuration group", id)),
        }
    }

    async fn configuration_view(&self, c: Configuration) -> Result<ConfigurationView> {
        let (datastore_version, datastore) =
            self.version_and_datastore(c.datastore_version_id).await?;
        let instance_count = self
            .store
            .list_instances(&InstanceFilter {
                configuration_id: Some(c.id),
                include_clustered: true,
                ..Default::default()
            })
            .await?
            .len();
        Ok(ConfigurationView {
            configuration: c,
            datastore,
            datastore_version,
            instance_count,
        })
    }

    /// Checks values against the version's rules (upstream `_validate_configuration`, failures 422); answers the
    /// values keyed by lower-cased name.
    async fn validate_values(
        &self,
        version_id: Uuid,
        values: Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let rules = self.store.list_config_params(version_id).await?;
        if rules.is_empty() {
            return Err(Error::unprocessable(
                "Configuration groups are not supported for this datastore version.",
            ));
        }
        let mut out = Map::new();
        for (k, v) in values {
            let key = k.to_lowercase();
            let rule = rules
                .iter()
                .find(|r| r.name.to_lowercase() == key)
                .ok_or_else(|| {
                    Error::unprocessable(format!(
                        "The configuration parameter {k} is not supported."
                    ))
                })?;
            rule.check(&v)?;
            out.insert(key, v);
        }
        Ok(out)
    }

    /// `GET /configurations`.
    pub async fn list_configurations(
        &self,
        ctx: &RequestContext,
    ) -> Result<Vec<ConfigurationView>> {
        let mut out = Vec::new();
        for c in self.store.list_configurations(&ctx.tenant_id).await? {
            out.push(self.configuration_view(c).await?);
        }
        Ok(out)
    }

    /// `GET /configurations/{id}`.
    pub async fn show_configuration(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<ConfigurationView> {
        let c = self.load_configuration(ctx, id).await?;
        self.configuration_view(c).await
    }

    /// `POST /configurations`.
    pub async fn create_configuration(
        &self,
        ctx: &RequestContext,
        req: CreateConfiguration,
    ) -> Result<ConfigurationView> {
        if req.name.trim().is_empty() || req.name.chars().count() > 255 {
            return Err(Error::bad_request(
                "A configuration group needs a name of 1 to 255 characters.",
            ));
        }
        let (_, v) = self
            .resolve_version(
                ctx,
                req.datastore.as_deref(),
                req.datastore_version.as_deref(),
                req.datastore_version_number.as_deref(),
            )
            .await?;
        let values = self.validate_values(v.id, req.values).await?;
        let now = self.clock.now();
        let c = Configuration {
            id: Uuid::new_v4(),
            tenant_id: ctx.tenant_id.clone(),
            name: req.name,
            description: req.description,
            datastore_version_id: v.id,
            values,
            created: now,
            updated: now,
            deleted: false,
        };
        self.store
            .commit(ChangeSet::new().with(Write::Configuration(c.clone())))
            .await?;
        self.configuration_view(c).await
    }

    async fn reapply(&self, c: Configuration) -> Result<()> {
        let users = self
            .store
            .list_instances(&InstanceFilter {
                configuration_id: Some(c.id),
                include_clustered: true,
                ..Default::default()
            })
            .await?;
        let mut cs = ChangeSet::new().with(Write::Configuration(c.clone()));
        let mut ids = Vec::new();
        for i in &users {
            let wf = self.new_workflow(
                WorkflowKind::ApplyConfiguration,
                i.id,
                json!({ "configuration_id": c.id }),
            );
            ids.push(wf.id);
            cs.push(Write::Workflow {
                workflow: wf,
                expect: Expect::Absent,
            });
        }
        self.store.commit(cs).await?;
        for id in ids {
            self.cast(id).await;
        }
        Ok(())
    }

    /// `PUT /configurations/{id}`: replaces the values (and name/description), re-applies to its instances.
    pub async fn update_configuration(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        req: UpdateConfiguration,
    ) -> Result<()> {
        let mut c = self.load_configuration(ctx, id).await?;
        if let Some(n) = req.name {
            if n.trim().is_empty() || n.chars().count() > 255 {
                return Err(Error::bad_request(
                    "A configuration group needs a name of 1 to 255 characters.",
                ));
            }
            c.name = n;
        }
        if req.description.is_some() {
            c.description = req.description;
        }
        c.values = self
            .validate_values(c.datastore_version_id, req.values)
            .await?;
        c.updated = self.clock.now();
        self.reapply(c).await
    }

    /// `PATCH /configurations/{id}`: merges values, re-applies to its instances.
    pub async fn patch_configuration(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        values: Map<String, Value>,
    ) -> Result<()> {
        let mut c = self.load_configuration(ctx, id).await?;
        let values = self.validate_values(c.datastore_version_id, values).await?;
        for (k, v) in values {
            c.values.insert(k, v);
        }
        c.updated = self.clock.now();
        self.reapply(c).await
    }

    /// `DELETE /configurations/{id}`: 400 while instances use it.
    pub async fn delete_configuration(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        let mut c = self.load_configuration(ctx, id).await?;
        let users = self
            .store
            .list_instances(&InstanceFilter {
                configuration_id: Some(id),
                include_clustered: true,
                ..Default::default()
            })
            .await?;
        if !users.is_empty() {
            return Err(Error::bad_request(format!(
                "Configuration group {id} is still attached to {} instance(s).",
                users.len()
            )));
        }
        c.deleted = true;
        c.updated = self.clock.now();
        self.store
            .commit(ChangeSet::new().with(Write::Configuration(c)))
            .await
    }

    /// `GET /configurations/{id}/instances`: (id, name) of the instances using it.
    pub async fn configuration_instances(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Vec<(Uuid, String)>> {
        self.load_configuration(ctx, id).await?;
        Ok(self
            .store
            .list_instances(&InstanceFilter {
                tenant_id: Some(ctx.tenant_id.clone()),
                configuration_id: Some(id),
                include_clustered: true,
                ..Default::default()
            })
            .await?
            .into_iter()
            .map(|i| (i.id, i.name))
            .collect())
    }

    // ------------------------------------------------------------------ configuration parameters

    async fn params_of(&self, version_id: Uuid) -> Result<Vec<ConfigParam>> {
        self.store.list_config_params(version_id).await
    }

    async fn param_of(&self, version_id: Uuid, name: &str) -> Result<ConfigParam> {
        self.params_of(version_id)
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::not_found("Configuration parameter", name))
    }

    /// `GET /datastores/{ds}/versions/{ver}/parameters`.
    pub async fn list_parameters(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
    ) -> Result<Vec<ConfigParam>> {
        let ds = self.find_datastore(datastore).await?;
        let v = self.find_version(ctx, &ds, version).await?;
        self.params_of(v.id).await
    }

    /// `GET /datastores/{ds}/versions/{ver}/parameters/{name}`.
    pub async fn show_parameter(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
        name: &str,
    ) -> Result<ConfigParam> {
        let ds = self.find_datastore(datastore).await?;
        let v = self.find_version(ctx, &ds, version).await?;
        self.param_of(v.id, name).await
    }

    /// `GET /datastores/versions/{uuid}/parameters`.
    pub async fn list_parameters_by_version(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
    ) -> Result<Vec<ConfigParam>> {
        self.show_datastore_version_by_id(ctx, version_id).await?;
        self.params_of(version_id).await
    }

    /// `GET /datastores/versions/{uuid}/parameters/{name}`.
    pub async fn show_parameter_by_version(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
        name: &str,
    ) -> Result<ConfigParam> {
        self.show_datastore_version_by_id(ctx, version_id).await?;
        self.param_of(version_id, name).await
    }

    /// `GET /mgmt/datastores/versions/{id}/parameters` (admin).
    pub async fn mgmt_list_parameters(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
    ) -> Result<Vec<ConfigParam>> {
        require_admin(ctx)?;
        self.version_and_datastore(version_id).await?;
        self.params_of(version_id).await
    }

    /// `GET /mgmt/datastores/versions/{id}/parameters/{name}` (admin).
    pub async fn mgmt_show_parameter(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
        name: &str,
    ) -> Result<ConfigParam> {
        require_admin(ctx)?;
        self.version_and_datastore(version_id).await?;
        self.param_of(version_id, name).await
    }

    fn param_from(version_id: Uuid, name: &str, spec: ConfigParamSpec) -> Result<ConfigParam> {
        if name.trim().is_empty() || name.len() > 128 {
            return Err(Error::bad_request(
                "A configuration parameter needs a name of 1 to 128 characters.",
            ));
        }
        if let (Some(min), Some(max)) = (
            spec.min.as_ref().and_then(Number::as_f64),
            spec.max.as_ref().and_then(Number::as_f64),
        ) {
            if min > max {
                return Err(Error::bad_request("min must not be larger than max."));
            }
        }
        Ok(ConfigParam {
            datastore_version_id: version_id,
            name: name.into(),
            restart_required: spec.restart_required,
            data_type: spec.data_type,
            min: spec.min,
            max: spec.max,
        })
    }

    /// `POST /mgmt/datastores/versions/{id}/parameters` (admin; 409 if it exists).
    pub async fn mgmt_create_parameter(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
        spec: ConfigParamSpec,
    ) -> Result<ConfigParam> {
        require_admin(ctx)?;
        self.version_and_datastore(version_id).await?;
        let name = spec.name.clone();
        if self
            .params_of(version_id)
            .await?
            .iter()
            .any(|p| p.name == name)
        {
            return Err(Error::conflict(format!(
                "Configuration parameter {name} already exists."
            )));
        }
        let p = Self::param_from(version_id, &name, spec)?;
        self.store
            .put_config_params(std::slice::from_ref(&p))
            .await?;
        Ok(p)
    }

    /// `PUT /mgmt/datastores/versions/{id}/parameters/{name}` (admin; 404 if missing).
    pub async fn mgmt_update_parameter(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
        name: &str,
        spec: ConfigParamSpec,
    ) -> Result<ConfigParam> {
        require_admin(ctx)?;
        self.version_and_datastore(version_id).await?;
        self.param_of(version_id, name).await?;
        let p = Self::param_from(version_id, name, spec)?;
        self.store
            .put_config_params(std::slice::from_ref(&p))
            .await?;
        Ok(p)
    }

    /// `DELETE /mgmt/datastores/versions/{id}/parameters/{name}` (admin).
    pub async fn mgmt_delete_parameter(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
        name: &str,
    ) -> Result<()> {
        require_admin(ctx)?;
        self.version_and_datastore(version_id).await?;
        if self.store.delete_config_param(version_id, name).await? {
            Ok(())
        } else {
            Err(Error::not_found("Configuration parameter", name))
        }
    }

    // ------------------------------------------------------------------ backups

    async fn load_backup(&self, ctx: &RequestContext, id: Uuid) -> Result<Backup> {
        match self.store.get_backup(id).await? {
            Some(b) if !b.deleted && (b.tenant_id == ctx.tenant_id) => Ok(b),
            _ => Err(Error::not_found("Backup", id)),
        }
    }

    async fn backup_view(&self, b: Backup) -> Result<BackupView> {
        let (v, ds) = match self.version_and_datastore(b.datastore_version_id).await {
            Ok((v, ds)) => (Some(v), Some(ds)),
            Err(Error::NotFound { .. }) => (None, None),
            Err(e) => return Err(e),
        };
        Ok(BackupView {
            backup: b,
            datastore: ds,
            datastore_version: v,
        })
    }

    /// `GET /backups`.
    pub async fn list_backups(
        &self,
        ctx: &RequestContext,
        query: BackupQuery,
    ) -> Result<Vec<BackupView>> {
        let tenant = if query.all_projects || query.project_id.is_some() {
            require_admin(ctx)?;
            query.project_id.clone()
        } else {
            Some(ctx.tenant_id.clone())
        };
        let ds = match &query.datastore {
            Some(d) => Some(self.find_datastore(d).await?),
            None => None,
        };
        let f = BackupFilter {
            tenant_id: tenant,
            instance_id: query.instance_id,
            include_deleted: false,
        };
        let mut out = Vec::new();
        for b in self.store.list_backups(&f).await? {
            let v = self.backup_view(b).await?;
            if let Some(ds) = &ds {
                if v.datastore.as_ref().map(|d| d.id) != Some(ds.id) {
                    continue;
                }
            }
            out.push(v);
        }
        Ok(out)
    }

    /// `POST /backups`: persists the backup (NEW) and a backup workflow, answers 202 with the view.
    pub async fn create_backup(
        &self,
        ctx: &RequestContext,
        req: CreateBackup,
    ) -> Result<BackupView> {
        if req.name.trim().is_empty() || req.name.chars().count() > 255 {
            return Err(Error::bad_request(
                "A backup needs a name of 1 to 255 characters.",
            ));
        }
        let now = self.clock.now();
        if let Some(r) = req.restore_from {
            // Registers an existing object: no work for a guest.
            let (v, _) = self
                .version_and_datastore(r.local_datastore_version_id)
                .await?;
            if r.remote_location.trim().is_empty() {
                return Err(Error::bad_request("restore_from needs a remote_location."));
            }
            let b = Backup {
                id: Uuid::new_v4(),
                tenant_id: ctx.tenant_id.clone(),
                instance_id: None,
                name: req.name,
                description: req.description,
                state: BackupState::Restored,
                size: Some(r.size),
                location: Some(r.remote_location),
                checksum: None,
                parent_id: None,
                backup_type: BackupType::Full,
                datastore_version_id: v.id,
                created: now,
                updated: now,
                deleted: false,
            };
            self.store
                .commit(
                    ChangeSet::new()
                        .with(Write::Backup(b.clone()))
                        .check_quota(ctx.tenant_id.clone(), &[Resource::Backups]),
                )
                .await?;
            return self.backup_view(b).await;
        }
        let iid = req
            .instance
            .ok_or_else(|| Error::bad_request("A backup needs an instance."))?;
        let inst = self.load_instance(ctx, iid).await?;
        let (v, _) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        if !v.manager.default_facets().contains(Facet::Backup) {
            return Err(Error::not_implemented(format!(
                "Backups are not supported for datastore {}.",
                v.manager
            )));
        }
        let (state, _) = self.state(&inst).await?;
        check_operation(iid, Operation::Backup, &state)?;
        let parent = match (req.parent_id, req.incremental) {
            (Some(p), _) => {
                let pb = self.load_backup(ctx, p).await?;
                if pb.instance_id != Some(iid) {
                    return Err(Error::bad_request(format!(
                        "Backup {p} is not a backup of instance {iid}."
                    )));
                }
                Some(p)
            }
            (None, true) => {
                let f = BackupFilter {
                    instance_id: Some(iid),
                    ..Default::default()
                };
                let last = self
                    .store
                    .list_backups(&f)
                    .await?
                    .into_iter()
                    .filter(|b| b.state == BackupState::Completed)
                    .max_by_key(|b| b.created);
                Some(
                    last.ok_or_else(|| {
                        Error::bad_request("No completed backup to base an incremental backup on.")
                    })?
                    .id,
                )
            }
            (None, false) => None,
        };
        let b = Backup {
            id: Uuid::new_v4(),
            tenant_id: ctx.tenant_id.clone(),
            instance_id: Some(iid),
            name: req.name,
            description: req.description,
            state: BackupState::New,
            size: None,
            location: None,
            checksum: None,
            parent_id: parent,
            backup_type: if parent.is_some() {
                BackupType::Incremental
            } else {
                BackupType::Full
            },
            datastore_version_id: inst.datastore_version_id,
            created: now,
            updated: now,
            deleted: false,
        };
        let container = self
            .backup_container(&ctx.tenant_id, iid, req.container)
            .await?;
        let wf = self.new_workflow(
            WorkflowKind::Backup,
            iid,
            json!(BackupParams {
                backup_id: b.id,
                container: Some(container),
            }),
        );
        self.store
            .commit(
                ChangeSet::new()
                    .with(Write::Backup(b.clone()))
                    .with(Write::Workflow {
                        workflow: wf.clone(),
                        expect: Expect::Absent,
                    })
                    .check_quota(ctx.tenant_id.clone(), &[Resource::Backups]),
            )
            .await?;
        self.cast(wf.id).await;
        self.backup_view(b).await
    }

    /// `GET /backups/{id}`.
    pub async fn show_backup(&self, ctx: &RequestContext, id: Uuid) -> Result<BackupView> {
        let b = self.load_backup(ctx, id).await?;
        self.backup_view(b).await
    }

    /// `DELETE /backups/{id}`.
    pub async fn delete_backup(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        let b = self.load_backup(ctx, id).await?;
        let now = self.clock.now();
        if b.state.is_running()
            && now - b.updated < chrono::Duration::days(RUNNING_BACKUP_EXPIRY_DAYS)
        {
            return Err(Error::unprocessable(format!(
                "Backup {id} is still running and cannot be deleted."
            )));
        }
        // Children (incrementals) first, then the backup itself, in one commit.
        let all = self
            .store
            .list_backups(&BackupFilter {
                tenant_id: Some(b.tenant_id.clone()),
                ..Default::default()
            })
            .await?;
        let mut doomed = vec![b];
        let mut i = 0;
        while i < doomed.len() {
            let pid = doomed[i].id;
            for c in all.iter().filter(|c| c.parent_id == Some(pid)) {
                if !doomed.iter().any(|d| d.id == c.id) {
                    doomed.push(c.clone());
                }
            }
            i += 1;
        }
        let mut cs = ChangeSet::new();
        for mut d in doomed {
            d.deleted = true;
            d.updated = now;
            cs.push(Write::Backup(d));
        }
        self.store.commit(cs).await
    }

    // ------------------------------------------------------------------ quotas and limits

    async fn quota_view(&self, tenant: &str) -> Result<QuotaView> {
        Ok(QuotaView {
            limits: self.store.get_quota_limits(tenant).await?,
            usage: self.store.quota_usage(tenant).await?,
        })
    }

    /// `GET /mgmt/quotas/{project}`: an owner may read their own; admins any.
    pub async fn show_quota(&self, ctx: &RequestContext, project_id: &str) -> Result<QuotaView> {
        if project_id != ctx.tenant_id {
            require_admin(ctx)?;
        }
        self.quota_view(project_id).await
    }

    /// `PUT /mgmt/quotas/{project}` (admin): resource name → limit (−1 unlimited; below −1 is 400; unknown
    /// resource 404). Answers the new limits.
    pub async fn update_quota(
        &self,
        ctx: &RequestContext,
        project_id: &str,
        limits: BTreeMap<String, i64>,
    ) -> Result<QuotaLimits> {
        require_admin(ctx)?;
        let mut current = self.store.get_quota_limits(project_id).await?;
        for (name, v) in limits {
            let r = Resource::parse(&name)
                .ok_or_else(|| Error::not_found("Quota resource", name.clone()))?;
            if v < -1 {
                return Err(Error::bad_request(format!(
                    "Quota limit {v} for {name} is below -1."
                )));
            }
            current.set(r, v);
        }
        self.store.set_quota_limits(project_id, &current).await?;
        Ok(current)
    }

    /// `GET /limits`: the absolute limits of the caller's tenant (rate limits are the HTTP layer's).
    pub async fn limits(&self, ctx: &RequestContext) -> Result<QuotaView> {
        self.quota_view(&ctx.tenant_id).await
    }

    // ------------------------------------------------------------------ mgmt instances

    /// `GET /mgmt/instances` (admin).
    pub async fn mgmt_list_instances(
        &self,
        ctx: &RequestContext,
        query: MgmtInstanceQuery,
    ) -> Result<Vec<InstanceView>> {
        require_admin(ctx)?;
        let f = InstanceFilter {
            tenant_id: query.project_id,
            include_deleted: query.deleted,
            include_clustered: query.include_clustered,
            ..Default::default()
        };
        let instances = self.store.list_instances(&f).await?;
        self.views(instances).await
    }

    /// `GET /mgmt/instances` (admin), one page: newest first, paged by `page` before any view is built (see
    /// [`ApiService::list_instances_page`]).
    pub async fn mgmt_list_instances_page(
        &self,
        ctx: &RequestContext,
        query: MgmtInstanceQuery,
        page: &PageRequest,
    ) -> Result<(Vec<InstanceView>, Option<String>)> {
        require_admin(ctx)?;
        let f = InstanceFilter {
            tenant_id: query.project_id,
            include_deleted: query.deleted,
            include_clustered: query.include_clustered,
            ..Default::default()
        };
        let mut instances = self.store.list_instances(&f).await?;
        instances.sort_by_key(|i| std::cmp::Reverse(i.created));
        self.views_page(instances, page).await
    }

    /// `GET /mgmt/instances/{id}` (admin; deleted instances too).
    pub async fn mgmt_show_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<InstanceView> {
        require_admin(ctx)?;
        let inst = self
            .store
            .get_instance(id)
            .await?
            .ok_or_else(|| Error::not_found("Instance", id))?;
        self.view(inst).await
    }

    /// `POST /mgmt/instances/{id}/action` (admin).
    pub async fn mgmt_instance_action(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        action: MgmtAction,
    ) -> Result<()> {
        require_admin(ctx)?;
        let inst = match self.store.get_instance(id).await? {
            Some(i) if !i.deleted => i,
            _ => return Err(Error::not_found("Instance", id)),
        };
        match action {
            MgmtAction::Stop => {
                let g = self.guest(id);
                g.stop_db(g.high()).await
            }
            MgmtAction::Reboot => {
                let (state, _) = self.state(&inst).await?;
                check_operation(id, Operation::Restart, &state)?;
                // A sticky RESTART_REQUIRED is replaced in the same commit (as a restart does), so the workflow
                // sees the guest's reports again; any other status is left to the next report.
                let mut extra = vec![];
                if state.service == ServiceStatus::RestartRequired {
                    extra.push(Write::ServiceStatus(ServiceStatusRecord {
                        instance_id: id,
                        status: ServiceStatus::Restarting,
                        reason: None,
                        volume: None,
                        updated_at: self.clock.now(),
                    }));
                }
                self.start_workflow(
                    inst,
                    WorkflowKind::Reboot,
                    json!({}),
                    TaskStatus::Rebooting,
                    extra,
                    None,
                )
                .await?;
                Ok(())
            }
            MgmtAction::ResetTaskStatus => self.reset_common(inst, None).await,
            MgmtAction::Migrate { host } => self.mgmt_migrate(inst, host).await,
            MgmtAction::Rebuild { image_id } => self.mgmt_rebuild(inst, image_id).await,
        }
    }

    /// `GET /mgmt/instances/{id}/rpc_ping` (admin): pings the guest.
    pub async fn mgmt_rpc_ping(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        require_admin(ctx)?;
        match self.store.get_instance(id).await? {
            Some(i) if !i.deleted => {}
            _ => return Err(Error::not_found("Instance", id)),
        }
        self.guest(id).ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conductor::Conductor;
    use crate::guest_agent::InProcessLauncher;
    use crate::memory::{
        ManualClock, MemoryBlockStorage, MemoryBus, MemoryCompute, MemoryStore,
        SimulatedStrategyFactory,
    };
    use crate::ports::InfraStore;
    use crate::taskmanager::{TaskManager, TaskManagerConfig};
    use std::time::Duration;
    use tokio::sync::watch;

    struct World {
        api: ApiService,
        store: Arc<MemoryStore>,
        engines: Arc<SimulatedStrategyFactory>,
        stop: watch::Sender<bool>,
    }

    async fn world() -> World {
        let config = CoreConfig {
            report_interval: Duration::from_secs(5),
            agent_call_low_timeout: Duration::from_secs(2),
            agent_call_high_timeout: Duration::from_secs(2),
            ..CoreConfig::default()
        };
        let store = Arc::new(MemoryStore::new());
        let bus = Arc::new(MemoryBus::new());
        let clock = Arc::new(ManualClock::new());
        let engines = Arc::new(SimulatedStrategyFactory::new());
        let launcher = Arc::new(InProcessLauncher::new(
            bus.clone(),
            clock.clone(),
            engines.clone(),
            config.report_interval,
        ));
        let compute = Arc::new(MemoryCompute::new(launcher));
        let (stop, rx) = watch::channel(false);
        let conductor = Conductor::new(store.clone(), bus.clone(), clock.clone(), None);
        let rx2 = rx.clone();
        tokio::spawn(async move { conductor.run(rx2).await });
        let tm = TaskManager::new(
            store.clone(),
            bus.clone(),
            compute,
            Arc::new(MemoryBlockStorage::new()),
            clock.clone(),
            config.clone(),
            TaskManagerConfig {
                poll_interval: Duration::from_millis(2),
                ..TaskManagerConfig::default()
            },
        );
        tokio::spawn(async move { tm.run(rx).await });
        let api = ApiService::new(store.clone(), bus, clock, config);
        let admin = RequestContext::admin("admin");
        for (ds, manager) in [("mysql", "mysql"), ("mongodb", "mongodb")] {
            api.mgmt_create_datastore_version(
                &admin,
                DatastoreVersionSpec {
                    datastore_name: ds.into(),
                    name: "1".into(),
                    manager: manager.into(),
                    active: true,
                    default: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        }
        api.mgmt_put_flavor(
            &admin,
            Flavor {
                id: "1".into(),
                name: "s".into(),
                ram_mb: 256,
                vcpus: 1,
                disk_gb: 1,
                ephemeral_gb: 0,
            },
        )
        .await
        .unwrap();
        World {
            api,
            store,
            engines,
            stop,
        }
    }

    fn t1() -> RequestContext {
        RequestContext::tenant("t1")
    }

    async fn active(w: &World, ds: &str) -> Uuid {
        let v = w
            .api
            .create_instance(
                &t1(),
                CreateInstance {
                    name: "x".into(),
                    flavor_ref: Some("1".into()),
                    volume_size: Some(1),
                    datastore: Some(ds.into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        wait(w, v.instance.id, |v| {
            v.status == "ACTIVE" && v.instance.task == TaskStatus::None
        })
        .await;
        v.instance.id
    }

    async fn wait(w: &World, id: Uuid, pred: impl Fn(&InstanceView) -> bool) -> InstanceView {
        for _ in 0..2000 {
            let v = w.api.show_instance(&t1(), id).await.unwrap();
            if pred(&v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "condition never met: {:?}",
            w.api.show_instance(&t1(), id).await.unwrap()
        );
    }

    fn status<T: std::fmt::Debug>(r: Result<T>) -> u16 {
        r.unwrap_err().fault().status
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn databases_users_and_root() {
        let w = world().await;
        let id = active(&w, "mysql").await;
        let t = t1();
        let api = &w.api;
        let db = |n: &str| DatabaseSpec {
            name: n.into(),
            character_set: None,
            collate: None,
        };
        api.create_databases(&t, id, vec![db("d1"), db("d2")])
            .await
            .unwrap();
        assert_eq!(
            status(api.create_databases(&t, id, vec![db("x`; drop")]).await),
            400
        );
        let names: Vec<_> = api
            .list_databases(&t, id)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert!(names.contains(&"d1".to_string()) && names.contains(&"d2".to_string()));
        api.delete_database(&t, id, "d2").await.unwrap();
        assert!(!api
            .list_databases(&t, id)
            .await
            .unwrap()
            .iter()
            .any(|d| d.name == "d2"));
        assert_eq!(
            status(api.list_databases(&RequestContext::tenant("t2"), id).await),
            404
        );

        let user = |n: &str, h: Option<&str>| UserSpec {
            name: n.into(),
            password: Secret::new("pw-1"),
            host: h.map(str::to_string),
            databases: vec!["d1".into()],
        };
        api.create_users(&t, id, vec![user("u1", None), user("u2", Some("10.0.%"))])
            .await
            .unwrap();
        assert_eq!(
            status(api.create_users(&t, id, vec![user("bad name", None)]).await),
            400
        );
        assert_eq!(
            status(
                api.create_users(&t, id, vec![user("u3", Some("a'b"))])
                    .await
            ),
            400
        );
        let users = api.list_users(&t, id).await.unwrap();
        assert!(users.iter().any(|u| u.name == "u2" && u.host == "10.0.%"));
        let u2 = api
            .show_user(&t, id, &UserRef::parse("u2@10.0.%"))
            .await
            .unwrap();
        assert_eq!(u2.databases, vec!["d1".to_string()]);
        assert_eq!(
            status(api.show_user(&t, id, &UserRef::parse("u2")).await),
            404
        );
        let u1 = UserRef::parse("u1");
        api.grant_user_access(&t, id, &u1, vec!["d1".into()])
            .await
            .unwrap();
        assert_eq!(
            api.list_user_access(&t, id, &u1).await.unwrap(),
            vec!["d1".to_string()]
        );
        api.revoke_user_access(&t, id, &u1, "d1").await.unwrap();
        assert!(api.list_user_access(&t, id, &u1).await.unwrap().is_empty());
        let mut change = user("u1", None);
        change.password = Secret::new("new-pw");
        api.change_passwords(&t, id, vec![change]).await.unwrap();
        assert_eq!(
            w.engines.engine(id).password("u1", "%").unwrap().expose(),
            "new-pw"
        );
        assert_eq!(
            status(
                api.change_passwords(&t, id, vec![user("ghost", None)])
                    .await
            ),
            404
        );
        let upd = UserUpdate {
            name: Some("u1b".into()),
            ..Default::default()
        };
        api.update_user(&t, id, &u1, upd).await.unwrap();
        assert!(api.show_user(&t, id, &UserRef::parse("u1b")).await.is_ok());
        assert_eq!(
            status(
                api.update_user(&t, id, &UserRef::parse("u1b"), UserUpdate::default())
                    .await
            ),
            400
        );
        api.delete_user(&t, id, &UserRef::parse("u1b"))
            .await
            .unwrap();
        assert_eq!(
            status(api.delete_user(&t, id, &UserRef::parse("u1b")).await),
            404
        );

        assert!(!api.root_show(&t, id).await.unwrap());
        assert_eq!(status(api.root_disable(&t, id).await), 404);
        let creds = api.root_enable(&t, id, None).await.unwrap();
        assert_eq!(creds.name, "root");
        assert!(!creds.password.is_empty());
        assert!(w.engines.engine(id).root_enabled());
        assert!(api.root_show(&t, id).await.unwrap());
        api.root_disable(&t, id).await.unwrap();
        assert!(api
            .mgmt_root_history(&RequestContext::admin("a"), id)
            .await
            .unwrap()
            .is_some());
        assert_eq!(status(api.mgmt_root_history(&t, id).await), 403);

        // An unsupported datastore answers 422; a stopped datastore too.
        let mongo = active(&w, "mongodb").await;
        assert_eq!(status(api.list_users(&t, mongo).await), 422);
        w.engines.engine(id).stop();
        w.store
            .put_service_statuses(&[ServiceStatusRecord {
                instance_id: id,
                status: ServiceStatus::Shutdown,
                reason: None,
                volume: None,
                updated_at: w.api.clock.now(),
            }])
            .await
            .unwrap();
        assert_eq!(status(api.list_databases(&t, id).await), 422);
        let _ = w.stop.send(true);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn configurations_backups_quotas_and_mgmt() {
        let w = world().await;
        let api = &w.api;
        let t = t1();
        let admin = RequestContext::admin("admin");
        let id = active(&w, "mysql").await;
        let vid = api
            .show_instance(&t, id)
            .await
            .unwrap()
            .datastore_version
            .id;

        // Parameters (mgmt) and both public route forms.
        let spec = |n: &str| ConfigParamSpec {
            name: n.into(),
            data_type: ParamType::Integer,
            restart_required: false,
            min: Some(1.into()),
            max: Some(100.into()),
        };
        assert_eq!(
            status(
                api.mgmt_create_parameter(&t, vid, spec("max_connections"))
                    .await
            ),
            403
        );
        api.mgmt_create_parameter(&admin, vid, spec("max_connections"))
            .await
            .unwrap();
        assert_eq!(
            status(
                api.mgmt_create_parameter(&admin, vid, spec("max_connections"))
                    .await
            ),
            409
        );
        assert_eq!(
            api.list_parameters(&t, "mysql", "1").await.unwrap().len(),
            1
        );
        assert_eq!(
            api.show_parameter_by_version(&t, vid, "max_connections")
                .await
                .unwrap()
                .name,
            "max_connections"
        );
        assert_eq!(
            status(api.show_parameter(&t, "mysql", "1", "nope").await),
            404
        );

        // Configuration groups.
        let mut values = Map::new();
        values.insert("max_connections".into(), json!(50));
        let req = |values: Map<String, Value>| CreateConfiguration {
            name: "c".into(),
            values,
            datastore: Some("mysql".into()),
            ..Default::default()
        };
        let c = api
            .create_configuration(&t, req(values.clone()))
            .await
            .unwrap();
        let mut bad = Map::new();
        bad.insert("max_connections".into(), json!(500));
        assert_eq!(status(api.create_configuration(&t, req(bad)).await), 422);
        let mut unknown = Map::new();
        unknown.insert("nope".into(), json!(1));
        assert_eq!(
            status(api.create_configuration(&t, req(unknown)).await),
            422
        );
        assert_eq!(
            status(
                api.show_configuration(&RequestContext::tenant("t2"), c.configuration.id)
                    .await
            ),
            404
        );
        let cid = c.configuration.id;
        api.update_instance(
            &t,
            id,
            UpdateInstance {
                configuration: Some(Some(cid)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            api.configuration_instances(&t, cid).await.unwrap(),
            vec![(id, "x".to_string())]
        );
        assert_eq!(status(api.delete_configuration(&t, cid).await), 400);
        // The task manager applies the group on the engine (`max_connections` changes live: no restart).
        let v = wait(&w, id, |_| w.engines.engine(id).overrides() == values).await;
        assert!(v.instance.fault.is_none(), "{:?}", v.instance.fault);
        assert_eq!(v.instance.task, TaskStatus::None);
        assert_eq!(api.instance_configuration(&t, id).await.unwrap(), values);
        api.patch_configuration(&t, cid, values.clone())
            .await
            .unwrap();
        api.update_instance(&t, id, UpdateInstance::default())
            .await
            .unwrap();
        assert!(api
            .show_instance(&t, id)
            .await
            .unwrap()
            .instance
            .configuration_id
            .is_none());
        api.delete_configuration(&t, cid).await.unwrap();
        assert!(api.list_configurations(&t).await.unwrap().is_empty());

        // Backups: persisted NEW, then failed by the task manager with a fault (engine work is a later issue).
        let b = api
            .create_backup(
                &t,
                CreateBackup {
                    name: "b".into(),
                    instance: Some(id),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(b.backup.state, BackupState::New);
        assert_eq!(api.limits(&t).await.unwrap().usage.backups, 1);
        let mut failed = false;
        for _ in 0..2000 {
            if api.show_backup(&t, b.backup.id).await.unwrap().backup.state == BackupState::Failed {
                failed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(failed, "the backup workflow did not fail visibly");
        assert_eq!(api.instance_backups(&t, id).await.unwrap().len(), 1);
        assert_eq!(
            status(
                api.show_backup(&RequestContext::tenant("t2"), b.backup.id)
                    .await
            ),
            404
        );
        assert_eq!(
            status(
                api.list_backups(
                    &t,
                    BackupQuery {
                        all_projects: true,
                        ..Default::default()
                    }
                )
                .await
            ),
            403
        );
        api.delete_backup(&t, b.backup.id).await.unwrap();
        assert!(api
            .list_backups(&t, BackupQuery::default())
            .await
            .unwrap()
            .is_empty());

        // Quotas.
        assert_eq!(status(api.show_quota(&t, "t2").await), 403);
        assert_eq!(
            api.show_quota(&admin, "t1").await.unwrap().usage.instances,
            1
        );
        let bad: BTreeMap<String, i64> = [("instances".to_string(), -2)].into_iter().collect();
        assert_eq!(status(api.update_quota(&admin, "t1", bad).await), 400);

        // Replication operations validate and persist; their work fails in the task manager.
        assert_eq!(status(api.promote_to_replica_source(&t, id).await), 400);
        assert_eq!(status(api.eject_replica_source(&t, id).await), 400);
        let r = api
            .create_instance(
                &t,
                CreateInstance {
                    name: "r".into(),
                    replica_of: Some(id),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let rv = wait(&w, r.instance.id, |v| v.status == "ERROR").await;
        assert_eq!(rv.instance.task, TaskStatus::BuildingErrorReplica);
        assert_eq!(rv.instance.replica_of, Some(id));
        assert_eq!(
            status(api.delete_instance(&t, id).await),
            403,
            "a source with replicas cannot be deleted"
        );
        let mut with_flavor = CreateInstance {
            name: "r2".into(),
            replica_of: Some(id),
            ..Default::default()
        };
        with_flavor.flavor_ref = Some("1".into());
        assert_eq!(status(api.create_instance(&t, with_flavor).await), 400);

        // Mgmt.
        assert_eq!(
            status(api.mgmt_instance_action(&t, id, MgmtAction::Reboot).await),
            403
        );
        api.mgmt_rpc_ping(&admin, id).await.unwrap();
        assert_eq!(
            api.mgmt_list_instances(&admin, MgmtInstanceQuery::default())
                .await
                .unwrap()
                .len(),
            2
        );
        api.mgmt_instance_action(&admin, id, MgmtAction::Reboot)
            .await
            .unwrap();
        wait(&w, id, |v| {
            v.instance.task == TaskStatus::None && v.status == "ACTIVE"
        })
        .await;
        api.mgmt_instance_action(&admin, id, MgmtAction::ResetTaskStatus)
            .await
            .unwrap();
        assert_eq!(
            status(api.mgmt_delete_datastore_version(&admin, vid).await),
            400
        );
        assert_eq!(status(api.mgmt_list_datastore_versions(&t).await), 403);
        assert_eq!(api.list_datastores(&t).await.unwrap().len(), 2);
        assert_eq!(
            api.list_version_flavors(&t, "mysql", "1")
                .await
                .unwrap()
                .len(),
            1
        );
        let _ = w.stop.send(true);
    }

    #[test]
    fn user_refs_parse_name_and_host() {
        assert_eq!(
            UserRef::parse("bob"),
            UserRef {
                name: "bob".into(),
                host: "%".into()
            }
        );
        assert_eq!(
            UserRef::parse("bob@10.%"),
            UserRef {
                name: "bob".into(),
                host: "10.%".into()
            }
        );
        assert_eq!(
            UserRef::parse("a@b@c"),
            UserRef {
                name: "a@b".into(),
                host: "c".into()
            }
        );
        assert_eq!(
            UserRef::parse("bob@"),
            UserRef {
                name: "bob".into(),
                host: "%".into()
            }
        );
    }
}
