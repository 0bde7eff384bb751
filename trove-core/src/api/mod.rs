//! `ApiService`: what the REST API does, without HTTP. Validation, quota, persistence and the cast to the task
//! manager happen here; the HTTP layer only decodes bodies and renders the views returned.
//!
//! Requests are plain structs (already decoded from upstream JSON); views carry everything the upstream views
//! show, so the HTTP layer never reads the store itself.
//!
//! One module per resource, each adding its operations to [`ApiService`] and holding its request and view types
//! (re-exported here): `instances` (create, list, show, update, delete) with `instance_views`, `actions`
//! (restart, resize, reset status, promote, eject), `maintenance` (upgrade, mgmt migrate and rebuild), `users`,
//! `databases`, `root`, `configurations`, `parameters`, `backups`, `backup_strategies`, `datastores`, `flavors`,
//! `quotas` (and limits), `mgmt` (instances), `guest_logs`, `ssl`, `clusters` (create, grow, shrink, delete,
//! cluster root, events, scaling policy). Shared by all: `gate` (an instance for the
//! caller and the action gate: `authorized_instance`, `instance_for`, `gate`, `manage_data_instance`), `paging`
//! (the one paging scheme: [`PageRequest`] in, [`Page`] out), and here the service itself with the workflow
//! helpers (`start_workflow`) and authorization (`authorize`, `authorize_on_tenant`: the operation's policy rule,
//! see [`crate::policy`]).

use std::sync::Arc;
use uuid::Uuid;

use crate::config::CoreConfig;
use crate::error::{Error, Result};
use crate::memory::SimulatedStrategyFactory;
use crate::model::{Instance, Resource, Workflow, WorkflowParams, WorkflowState};
use crate::policy::{Policy, Target};
use crate::ports::{
    ChangeSet, DynBus, DynClock, DynStore, Expect, FacetCatalog, RequestContext, Write,
};
use crate::rpc::{GuestClient, GuestTimeouts, TaskManagerClient};
use crate::state::TaskStatus;
use crate::taskmanager::Registry;

mod actions;
mod backup_schedules;
mod backup_strategies;
mod backups;
mod catalog;
mod clusters;
mod configurations;
mod databases;
mod datastores;
mod flavors;
mod gate;
mod guest_logs;
mod instance_views;
mod instances;
mod maintenance;
mod mgmt;
mod paging;
mod parameters;
mod quotas;
mod root;
mod ssl;
mod users;
pub use backup_schedules::CreateBackupSchedule;
pub use backup_strategies::{
    validate_container, BackupStrategyQuery, CreateBackupStrategy, BACKUP_STRATEGY_BACKEND,
    DEFAULT_BACKUP_CONTAINER,
};
pub use backups::{BackupQuery, BackupView, CreateBackup, RestoreFrom};
pub use clusters::{min_members, ClusterAction, ClusterMemberRequest, ClusterView, CreateCluster};
pub use configurations::{ConfigurationView, CreateConfiguration, UpdateConfiguration};
pub use datastores::{DatastoreVersionPatch, DatastoreVersionSpec, DatastoreView, VersionView};
pub use instance_views::InstanceView;
pub use instances::{CreateInstance, UpdateInstance};
pub use mgmt::{MgmtAction, MgmtInstanceQuery};
pub use paging::{Page, PageRequest};
pub use parameters::ConfigParamSpec;
pub use quotas::QuotaView;
pub use root::RootCredentials;
pub use users::UserRef;

/// What the REST API does, without HTTP: every operation of the Trove v1.0 API.
///
/// Every method takes the caller's [`RequestContext`]: another tenant's resources are answered as 404, and every
/// operation checks its policy rule ([`crate::policy::rules`]; upstream's defaults unless
/// [`ApiService::with_policy`] gave others), answering upstream's 403 "Policy doesn't allow RULE to be performed."
/// when it refuses. Errors carry the upstream fault ([`Error::fault`]).
pub struct ApiService {
    store: DynStore,
    bus: DynBus,
    clock: DynClock,
    config: CoreConfig,
    /// Compute, when the API runs beside it: mgmt migrate then checks the host synchronously.
    compute: Option<crate::ports::DynCompute>,
    /// The workflow kinds (to forget a closed workflow's secrets as its kind defines them).
    workflows: Registry,
    /// What the deployment's strategies offer per manager: requests for a facet the instance's strategy lacks are
    /// refused at once.
    facets: FacetCatalog,
    /// The authorization rules.
    policy: Arc<Policy>,
    /// Datastores, versions and flavors as last read (see `catalog`).
    catalog_cache: catalog::CatalogCache,
    /// Seals the secrets of workflow parameters and the messages to guests.
    sealing: crate::seal::Sealing,
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

impl ApiService {
    /// A service over `store` and `bus`, taking time from `clock`.
    pub fn new(store: DynStore, bus: DynBus, clock: DynClock, config: CoreConfig) -> ApiService {
        ApiService {
            store,
            bus,
            clock,
            config,
            compute: None,
            workflows: Registry::standard(),
            facets: FacetCatalog::from_factory(&SimulatedStrategyFactory::new()),
            policy: Arc::new(Policy::default()),
            catalog_cache: catalog::CatalogCache::default(),
            sealing: crate::seal::Sealing::default(),
        }
    }

    /// Seals with `sealing` (default: the process's own key and unsealed guest messages, see
    /// [`crate::seal::Sealing`]). Give the task managers the same deployment keys.
    pub fn with_sealing(mut self, sealing: crate::seal::Sealing) -> ApiService {
        self.sealing = sealing;
        self
    }

    /// Answers "not supported" from `catalog`, what the deployment's strategies offer (default: what the shipped
    /// engines offer, as the simulated strategies mirror them). Build it with [`FacetCatalog::from_factory`] from
    /// the strategy factory the guests use.
    pub fn with_facets(mut self, catalog: FacetCatalog) -> ApiService {
        self.facets = catalog;
        self
    }

    /// What the deployment's strategies offer per manager.
    pub fn facets(&self) -> &FacetCatalog {
        &self.facets
    }

    /// Authorizes with `policy` (default: upstream's rules, [`Policy::default`]).
    pub fn with_policy(mut self, policy: Arc<Policy>) -> ApiService {
        self.policy = policy;
        self
    }

    /// The authorization rules in use.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Uses `registry` for the workflows this API asks for (default: the standard ones).
    pub fn with_workflows(mut self, registry: Registry) -> ApiService {
        self.workflows = registry;
        self
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

    /// Checks the policy `rule` for the caller on `target` (403 naming the rule when it refuses).
    fn authorize(&self, ctx: &RequestContext, rule: &str, target: &Target<'_>) -> Result<()> {
        self.policy.authorize(rule, ctx, target)
    }

    /// Checks `rule` on the caller's own project: operations on a collection (upstream `authorize_on_tenant`).
    fn authorize_on_tenant(&self, ctx: &RequestContext, rule: &str) -> Result<()> {
        self.authorize(ctx, rule, &Target::caller(ctx))
    }

    /// Whether the caller counts as an admin (the policy rule `context_is_admin`).
    fn is_admin(&self, ctx: &RequestContext) -> bool {
        self.policy.is_admin(ctx)
    }

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
        .sealed(self.sealing.guest(instance_id))
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

    fn new_workflow<P: WorkflowParams>(&self, instance_id: Uuid, params: &P) -> Result<Workflow> {
        Workflow::new(instance_id, params, self.clock.now())
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
        self.workflows.scrub(&mut w);
        Write::Workflow {
            workflow: w,
            expect,
        }
    }

    /// Commits a task change plus a new workflow, then casts it.
    /// Commits an already made workflow with the instance at its version (unchanged) and `extra` writes, checking
    /// `quota`, then casts it.
    async fn start_planned_workflow(
        &self,
        mut inst: Instance,
        wf: Workflow,
        extra: Vec<Write>,
        quota: &[Resource],
    ) -> Result<Uuid> {
        let expect = Expect::Version(inst.version);
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
        let id = wf.instance_id;
        self.store
            .commit(cs.check_quota(tenant, quota))
            .await
            .map_err(|e| busy_on_race(id, e))?;
        self.cast(wf.id).await;
        Ok(wf.id)
    }

    async fn start_workflow<P: WorkflowParams>(
        &self,
        mut inst: Instance,
        params: &P,
        task: TaskStatus,
        extra: Vec<Write>,
        quota: Option<&[Resource]>,
    ) -> Result<Uuid> {
        let wf = self.new_workflow(inst.id, params)?;
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
        let id = wf.instance_id;
        self.store
            .commit(cs)
            .await
            .map_err(|e| busy_on_race(id, e))?;
        self.cast(wf.id).await;
        Ok(wf.id)
    }
}

/// An action whose commit lost a race with a workflow moving the instance on (it changed between the gate and the
/// commit) answers as the gate would have a moment later: the instance is busy (upstream's 422), not a 409.
fn busy_on_race(id: Uuid, e: Error) -> Error {
    match e {
        Error::Conflict { .. } => Error::unprocessable(format!(
            "Instance {id} is not currently available for an action to be performed (it changed while the \
             request was handled); try again when its current action has finished."
        )),
        other => other,
    }
}

#[cfg(test)]
mod tests;
