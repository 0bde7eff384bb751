//! The action gate: an instance as the caller may see it, the state the gate judges (the guest status as shown,
//! a running backup), and the check that an operation is allowed in that state.

use uuid::Uuid;

use super::ApiService;
use crate::error::{Error, Result};
use crate::model::{BackupFilter, Capabilities, Instance, Manager, ServiceStatusRecord};
use crate::policy::Target;
use crate::ports::RequestContext;
use crate::state::{
    check_operation, heartbeat_expired, InstanceState, Operation, ServiceStatus, TaskStatus,
};

impl ApiService {
    /// An instance of the caller's tenant (deleted ones and other tenants' are 404). The one place instances
    /// are limited to the caller's tenant.
    pub(super) async fn load_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<Instance> {
        match self.store.get_instance(id).await? {
            Some(i) if !i.deleted && i.tenant_id == ctx.tenant_id => Ok(i),
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
        let (state, service) = self.state(inst).await?;
        check_operation(inst.id, op, &state)?;
        Ok((state, service))
    }

    /// The caller's instance `id` and its manager, for work on the engine's data (users, databases, root): the
    /// policy `rule` must allow it (403), the manager must have the capability `need` (422 "not supported ...
    /// {what}" otherwise) and the gate must allow [`Operation::ManageData`].
    pub(super) async fn manage_data_instance(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        rule: &str,
        need: fn(Capabilities) -> bool,
        what: &str,
    ) -> Result<(Instance, Manager)> {
        let inst = self.authorized_instance(ctx, id, rule).await?;
        let (v, _) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        if !need(v.manager.capabilities()) {
            return Err(Error::unprocessable(format!(
                "Operation not supported for datastore {}: {what}.",
                v.manager
            )));
        }
        self.gate(&inst, Operation::ManageData).await?;
        Ok((inst, v.manager))
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
