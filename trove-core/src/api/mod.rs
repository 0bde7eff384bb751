//! `ApiService`: what the REST API does, without HTTP. Validation, quota, persistence and the cast to the task
//! manager happen here; the HTTP layer only decodes bodies and renders the views returned.
//!
//! Requests are plain structs (already decoded from upstream JSON); views carry everything the upstream views
//! show, so the HTTP layer never reads the store itself.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use uuid::Uuid;

use crate::config::CoreConfig;
use crate::error::{Error, Result};
use crate::model::{
    validate_database_name, validate_host, validate_instance_name, validate_password,
    validate_user_name, BackupFilter, Capabilities, InstanceFilter, Manager, Resource, Workflow,
    WorkflowKind, WorkflowState,
};
use crate::model::{
    Access, DatabaseSpec, Datastore, DatastoreVersion, Instance, Locality, Secret,
    ServiceStatusRecord, UserSpec,
};
use crate::ports::{ChangeSet, DynBus, DynClock, DynStore, Expect, RequestContext, Write};
use crate::rpc::{GuestClient, GuestTimeouts, TaskManagerClient};
use crate::state::{
    api_status, check_operation, heartbeat_expired, operating_status, InstanceState, Operation,
    ServerStatus, ServiceStatus, TaskStatus,
};
use crate::taskmanager::CreateParams;
use serde_json::json;
use std::collections::HashMap;

mod actions;
mod backup_strategies;
mod backups;
mod configurations;
mod databases;
mod datastores;
mod flavors;
mod guest_logs;
mod maintenance;
mod mgmt;
mod parameters;
mod quotas;
mod root;
mod ssl;
mod users;
pub use backup_strategies::{
    validate_container, BackupStrategyQuery, CreateBackupStrategy, BACKUP_STRATEGY_BACKEND,
    DEFAULT_BACKUP_CONTAINER,
};
pub use backups::{BackupQuery, BackupView, CreateBackup, RestoreFrom};
pub use configurations::{ConfigurationView, CreateConfiguration, UpdateConfiguration};
pub use datastores::{DatastoreVersionPatch, DatastoreVersionSpec, DatastoreView, VersionView};
pub use mgmt::{MgmtAction, MgmtInstanceQuery};
pub use parameters::ConfigParamSpec;
pub use quotas::QuotaView;
pub use root::RootCredentials;
pub use users::UserRef;

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
        need: fn(Capabilities) -> bool,
        what: &str,
    ) -> Result<(Instance, Manager)> {
        let inst = self.load_instance(ctx, id).await?;
        let (v, _) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        if !need(v.manager.capabilities()) {
            return Err(Error::unprocessable(format!(
                "Operation not supported for datastore {}: {what}.",
                v.manager
            )));
        }
        let (state, _) = self.state(&inst).await?;
        check_operation(id, Operation::ManageData, &state)?;
        Ok((inst, v.manager))
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
                if !v.manager.capabilities().replication {
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
        let caps = manager.capabilities();
        if !req.databases.is_empty() && !caps.databases {
            return Err(Error::unprocessable(format!(
                "Operation not supported for datastore {manager}: databases."
            )));
        }
        if !req.users.is_empty() && !caps.users {
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
}

#[cfg(test)]
mod tests;
