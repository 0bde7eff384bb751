//! Delete an instance: `stop_db` (skipped by a force delete, and tolerant of a dead guest) → `delete_server` →
//! `delete_volume` → `delete_topic` → the row is marked deleted (quota usage follows, being derived from live
//! rows) and the service status becomes DELETED.
//!
//! A failure leaves task NONE with a fault, so the user can delete again.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{fail, retry, stop_db_tolerant};
use crate::model::{ServiceStatusRecord, WorkflowKind, WorkflowParams};
use crate::ports::Write;
use crate::rpc::guest_topic;
use crate::state::{ServerStatus, ServiceStatus, TaskStatus};
use crate::taskmanager::{StepContext, StepResult, WorkflowDef};

/// Parameters of the delete workflow (none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteParams {}

impl WorkflowParams for DeleteParams {
    const KIND: WorkflowKind = WorkflowKind::new("delete");
}

/// Parameters of the force-delete workflow (none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForceDeleteParams {}

impl WorkflowParams for ForceDeleteParams {
    const KIND: WorkflowKind = WorkflowKind::new("force_delete");
}

/// The delete workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delete;

/// The force-delete workflow: a delete that does not ask the guest.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForceDelete;

#[derive(Debug, Serialize, Deserialize)]
struct VolumeGone {
    volume_id: Option<String>,
}

async fn delete(cx: &mut StepContext<'_>, force: bool) -> StepResult<()> {
    let instance_id = cx.instance_id();
    if !force {
        let compute = cx.compute();
        let has_server = matches!(compute.get_server(instance_id).await, Ok(Some(_)));
        if has_server || cx.completed("stop_db").is_some() {
            let low = cx.config().agent_call_low_timeout;
            stop_db_tolerant(cx, low).await?;
        }
    }
    let compute = cx.compute();
    let clock = cx.clock();
    cx.step("delete_server", |_| async move {
        retry(&clock, || compute.delete_server(instance_id))
            .await
            .map_err(|e| fail("The server could not be deleted.", &e))
    })
    .await?;
    let storage = cx.storage();
    let clock = cx.clock();
    cx.step("delete_volume", |_| async move {
        let volume_id = storage
            .get_volume(instance_id)
            .await
            .ok()
            .flatten()
            .map(|v| v.id);
        retry(&clock, || storage.delete_volume(instance_id))
            .await
            .map_err(|e| fail("The volume could not be deleted.", &e))?;
        Ok(VolumeGone { volume_id })
    })
    .await?;
    let bus = cx.bus();
    cx.step("delete_topic", |_| async move {
        if let Err(e) = bus.delete_topic(&guest_topic(instance_id)).await {
            tracing::info!(instance = %instance_id, error = %e, "could not delete the guest topic");
        }
        Ok(())
    })
    .await?;
    let now = cx.clock().now();
    cx.finish(|i, extra| {
        i.deleted = true;
        i.deleted_at = Some(now);
        i.task = TaskStatus::None;
        i.server_status = ServerStatus::Deleted;
        i.configuration_id = None;
        i.server_id = None;
        i.volume_id = None;
        extra.push(Write::ServiceStatus(ServiceStatusRecord {
            instance_id,
            status: ServiceStatus::Deleted,
            reason: None,
            volume: None,
            load: None,
            updated_at: now,
        }));
    })
    .await?;
    tracing::info!(instance = %instance_id, force, "instance deleted");
    Ok(())
}

#[async_trait]
impl WorkflowDef for Delete {
    type Params = DeleteParams;

    fn error_task(&self) -> Option<TaskStatus> {
        Some(TaskStatus::None)
    }

    async fn run(&self, cx: &mut StepContext<'_>, _: &DeleteParams) -> StepResult<()> {
        delete(cx, false).await
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![Scenario::new("delete", |w| {
            Box::pin(async move {
                let id = w.active_instance("db").await?;
                w.api.delete_instance(&w.tenant(), id).await?;
                Ok(id)
            })
        })
        .check(|w, id| Box::pin(async move { w.expect_deleted(id).await }))]
    }
}

#[async_trait]
impl WorkflowDef for ForceDelete {
    type Params = ForceDeleteParams;

    fn error_task(&self) -> Option<TaskStatus> {
        Some(TaskStatus::None)
    }

    async fn run(&self, cx: &mut StepContext<'_>, _: &ForceDeleteParams) -> StepResult<()> {
        delete(cx, true).await
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![Scenario::new("force delete", |w| {
            Box::pin(async move {
                let id = w.active_instance("db").await?;
                w.api.force_delete_instance(&w.tenant(), id).await?;
                Ok(id)
            })
        })
        .check(|w, id| Box::pin(async move { w.expect_deleted(id).await }))]
    }
}
