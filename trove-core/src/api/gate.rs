//! The action gate: an instance as the caller may see it, the state the gate judges (the guest status as shown,
//! a running backup), and the check that an operation is allowed in that state.

use uuid::Uuid;

use super::ApiService;
use crate::error::{Error, Result};
use crate::model::{BackupFilter, Facet, Instance, Manager, ServiceStatusRecord};
use crate::policy::Target;
use crate::ports::RequestContext;
use crate::state::{
    check_operation, heartbeat_expired, InstanceState, Operation, ServiceStatus, TaskStatus,
};

impl ApiService {
    /// An instance of the caller's tenant (deleted ones and other tenants' are 404), or of any tenant for a
    /// caller with the admin role (as upstream, which skips the project check for admins). The one place
    /// instances are limited to the caller's tenant.
    pub(super) async fn load_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<Instance> {
        match self.store.get_instance(id).await? {
            Some(i) if !i.deleted && (i.tenant_id == ctx.tenant_id || ctx.is_admin()) => Ok(i),
            _ => Err(Error::not_found("Instance", id)),
        }
    }

    /// The caller's instance `id` ([`Self::load_instance`]: 404 for another tenant's) once the policy `rule`
    /// allows the caller to act on it (403 otherwise; the target is the instance's project).
    pub(super) async fn authorized_instance(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        rule: &str,
    ) -> Result<Instance> {
        let inst = self.load_instance(ctx, id).await?;
        self.authorize(ctx, rule, &Target::project(&inst.tenant_id))?;
        Ok(inst)
    }

    /// The caller's instance `id` (404 for another tenant's or a deleted one), once the policy `rule` allows the
    /// caller to act on it (403) and the action gate allows `op` on it (422), with the state it was judged in
    /// and the guest status as shown.
    pub(super) async fn instance_for(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        rule: &str,
        op: Operation,
    ) -> Result<(Instance, InstanceState, Option<ServiceStatusRecord>)> {
        let inst = self.authorized_instance(ctx, id, rule).await?;
        let (state, service) = self.gate(&inst, op).await?;
        Ok((inst, state, service))
    }

    /// Judges the already loaded `inst` by the action gate: its state (and the guest status as shown) when `op`
    /// is allowed in it, else the upstream 422 for `op`.
    pub(super) async fn gate(
        &self,
        inst: &Instance,
        op: Operation,
    ) -> Result<(InstanceState, Option<ServiceStatusRecord>)> {
        if let Some(cluster) = inst.cluster_id {
            // A member is changed through its cluster (upstream `ClusterInstanceOperationNotSupported`, 501);
            // restarts, users, databases and root stay per member.
            if !matches!(
                op,
                Operation::Restart | Operation::ManageData | Operation::AssignConfiguration
            ) {
                return Err(Error::not_implemented(format!(
                    "Instance {} is a member of cluster {cluster}: act on the cluster (grow, shrink, upgrade, delete) \
                     instead.",
                    inst.id
                )));
            }
        }
        let (state, service) = self.state(inst).await?;
        check_operation(inst.id, op, &state)?;
        // Operations on one instance are ordered: one that starts a workflow waits until the open one ended (a
        // configuration apply keeps the instance's task, so the state alone does not show it). Work on the data
        // goes to the guest directly; delete ends whatever runs.
        if !matches!(op, Operation::ManageData | Operation::Delete) {
            if let Some(w) = self.open_workflows_of(inst.id).await?.first() {
                return Err(Error::unprocessable(format!(
                    "Instance {} is not currently available for an action to be performed (its '{}' \
                     workflow is still running); try again when it has finished.",
                    inst.id,
                    w.kind
                )));
            }
        }
        Ok((state, service))
    }

    /// The caller's instance `id` and its manager, for work on the engine's data (users, databases, root): the
    /// policy `rule` must allow it (403), the instance's strategy must offer facet `need` (upstream's 422
    /// "Operation not supported ... {what}" otherwise, at once, without asking the guest) and the gate must allow
    /// [`Operation::ManageData`].
    pub(super) async fn manage_data_instance(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        rule: &str,
        need: Facet,
        what: &str,
    ) -> Result<(Instance, Manager)> {
        let inst = self.authorized_instance(ctx, id, rule).await?;
        let (v, _) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        self.require_facet(v.manager, need, what)?;
        self.gate(&inst, Operation::ManageData).await?;
        // A replica's users and databases are its source's: they change there and arrive by replication.
        let reads = rule.ends_with(":index") || rule.ends_with(":show");
        if let (Some(source), false) = (inst.replica_of, reads) {
            return Err(Error::bad_request(format!(
                "Instance {id} is a replica of {source}: its users, databases and root are its source's; change \
                 them on {source}, or detach the replica first."
            )));
        }
        Ok((inst, v.manager))
    }

    /// Refuses, with upstream's answer for the facet, a request for `facet` when `manager`'s strategy in this
    /// deployment does not offer it: 422 "Operation not supported" for users, databases, root and configuration;
    /// 501 for TLS and backups (upstream's `DatastoreOperationNotSupported`); 400 for replication (upstream: no
    /// replication strategy for the manager) and clusters.
    pub(super) fn require_facet(&self, manager: Manager, facet: Facet, what: &str) -> Result<()> {
        if self.facets.offers(manager, facet) {
            return Ok(());
        }
        Err(match facet {
            Facet::Users | Facet::Databases | Facet::Root | Facet::Configuration | Facet::Logs => {
                Error::unprocessable(format!(
                    "Operation not supported for datastore {manager}: {what}."
                ))
            }
            Facet::Tls => {
                Error::not_implemented(format!("SSL is not supported for datastore {manager}."))
            }
            Facet::Backup => Error::not_implemented(format!(
                "Backups are not supported for datastore {manager} by this deployment."
            )),
            Facet::Replication => Error::bad_request(format!(
                "Replication is not supported for datastore {manager} by this deployment."
            )),
            Facet::Cluster => Error::bad_request(format!(
                "Clusters are not supported for datastore {manager} by this deployment."
            )),
        })
    }

    /// The instance's state as the gate judges it, and the guest status as shown.
    pub(super) async fn state(
        &self,
        inst: &Instance,
    ) -> Result<(InstanceState, Option<ServiceStatusRecord>)> {
        let st = self.effective_service(inst, self.store.get_service_status(inst.id).await?);
        let running = self.backup_running(inst.id).await?;
        Ok((Self::instance_state(inst, st.as_ref(), running), st))
    }

    /// The guest status as shown: a stale heartbeat reads as FAILED_TIMEOUT_GUESTAGENT.
    pub(super) fn effective_service(
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

    /// Whether a backup of the instance is running (the instance then shows BACKUP).
    pub(super) async fn backup_running(&self, instance_id: Uuid) -> Result<bool> {
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

    /// The state the action gate and the API status are derived from.
    pub(super) fn instance_state(
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
}
