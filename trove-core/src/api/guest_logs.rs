//! Guest logs (`GET`/`POST /instances/{id}/log`): list the logs an instance exposes, and show, enable,
//! disable, publish or discard one of them (upstream `guest_log_list` / `guest_log_action`).

use uuid::Uuid;

use super::ApiService;
use crate::error::Result;
use crate::model::{exposed_log_type, exposed_logs, Facet, GuestLog, LogActionRequest, Manager};
use crate::policy::rules;
use crate::ports::RequestContext;
use crate::state::Operation;

impl ApiService {
    /// The instance's manager, once the instance is the caller's (404 otherwise), the caller may list its logs
    /// (403) and its engine runs (422).
    async fn log_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<Manager> {
        let inst = self
            .authorized_instance(ctx, id, rules::INSTANCE_GUEST_LOG_LIST)
            .await?;
        let (v, _) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        self.gate(&inst, Operation::ManageData).await?;
        Ok(v.manager)
    }

    /// `GET /instances/{id}/log`: the logs the instance exposes, in the manager's order (none for Redis).
    pub async fn list_guest_logs(&self, ctx: &RequestContext, id: Uuid) -> Result<Vec<GuestLog>> {
        let manager = self.log_instance(ctx, id).await?;
        let exposed = exposed_logs(manager);
        if exposed.is_empty() || !self.facets.offers(manager, Facet::Logs) {
            return Ok(Vec::new());
        }
        let mut logs = self.guest(id).guest_log_list().await?;
        // Only what the manager exposes, whatever else a guest may know.
        logs.retain(|l| exposed.contains(&l.name.as_str()));
        Ok(logs)
    }

    /// `POST /instances/{id}/log`: one action on one log (just the name: show it).
    ///
    /// 404 for another tenant's instance or a log the manager does not expose, 400 for more than one action,
    /// 422 while the engine is not running; publishing without a log store is the guest's 501.
    pub async fn guest_log_action(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        req: LogActionRequest,
    ) -> Result<GuestLog> {
        let inst = self
            .authorized_instance(ctx, id, rules::INSTANCE_GUEST_LOG_ACTION)
            .await?;
        req.actions()?;
        let (v, _) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        exposed_log_type(v.manager, &req.name)?;
        if !self.facets.offers(v.manager, Facet::Logs) {
            return Err(crate::Error::not_found("Log", req.name.escape_default()));
        }
        self.gate(&inst, Operation::ManageData).await?;
        self.guest(id).guest_log_action(&req).await
    }
}
