//! Management of instances by admins (`/mgmt/instances...`): every tenant's instances (deleted ones too),
//! and the mgmt actions (stop, reboot, reset task status, migrate, rebuild) and guest ping.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiService, InstanceView, Page, PageRequest};
use crate::error::{Error, Result};
use crate::model::InstanceFilter;
use crate::policy::rules;
use crate::ports::RequestContext;
use crate::state::{Operation, ServiceStatus, TaskStatus};
use crate::taskmanager::RebootParams;

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

impl MgmtAction {
    /// The policy rule of the action.
    pub fn rule(&self) -> &'static str {
        match self {
            MgmtAction::Stop => rules::MGMT_INSTANCE_STOP,
            MgmtAction::Reboot => rules::MGMT_INSTANCE_REBOOT,
            MgmtAction::ResetTaskStatus => rules::MGMT_INSTANCE_RESET_TASK_STATUS,
            MgmtAction::Migrate { .. } => rules::MGMT_INSTANCE_MIGRATE,
            MgmtAction::Rebuild { .. } => rules::MGMT_INSTANCE_REBUILD,
        }
    }
}

impl MgmtInstanceQuery {
    fn filter(self) -> InstanceFilter {
        InstanceFilter {
            tenant_id: self.project_id,
            include_deleted: self.deleted,
            include_clustered: self.include_clustered,
            ..Default::default()
        }
    }
}

impl ApiService {
    /// `GET /mgmt/instances` (admin).
    pub async fn mgmt_list_instances(
        &self,
        ctx: &RequestContext,
        query: MgmtInstanceQuery,
    ) -> Result<Vec<InstanceView>> {
        self.authorize_on_tenant(ctx, rules::MGMT_INSTANCE_INDEX)?;
        let instances = self.store.list_instances(&query.filter()).await?;
        self.views(instances).await
    }

    /// `GET /mgmt/instances` (admin), one page: newest first, paged by `page` before any view is built (see
    /// [`ApiService::list_instances_page`]).
    pub async fn mgmt_list_instances_page(
        &self,
        ctx: &RequestContext,
        query: MgmtInstanceQuery,
        page: &PageRequest,
    ) -> Result<Page<InstanceView>> {
        self.authorize_on_tenant(ctx, rules::MGMT_INSTANCE_INDEX)?;
        let instances = self.store.list_instances(&query.filter()).await?;
        self.views_page(instances, page).await
    }

    /// `GET /mgmt/instances/{id}` (admin; deleted instances too).
    pub async fn mgmt_show_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<InstanceView> {
        self.authorize_on_tenant(ctx, rules::MGMT_INSTANCE_SHOW)?;
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
        self.authorize_on_tenant(ctx, action.rule())?;
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
                let (state, _) = self.gate(&inst, Operation::Restart).await?;
                // A sticky RESTART_REQUIRED is replaced in the same commit (as a restart does), so the workflow
                // sees the guest's reports again; any other status is left to the next report.
                let mut extra = vec![];
                if state.service == ServiceStatus::RestartRequired {
                    extra.push(self.restarting(id));
                }
                self.start_workflow(inst, &RebootParams {}, TaskStatus::Rebooting, extra, None)
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
        self.authorize_on_tenant(ctx, rules::MGMT_INSTANCE_RPC_PING)?;
        match self.store.get_instance(id).await? {
            Some(i) if !i.deleted => {}
            _ => return Err(Error::not_found("Instance", id)),
        }
        self.guest(id).ping().await
    }
}
