//! Rebuild an instance's server from an image, keeping its data and configuration (mgmt): `stop_db` →
//! `rebuild_server` → `guest_rebuild` → `wait_healthy` → task NONE. A failure shows BUILDING_ERROR_REBUILD.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{fail, guest_rebuild, stop_db_tolerant};
use crate::model::{WorkflowKind, WorkflowParams};
use crate::state::{ServerStatus, TaskStatus};
use crate::taskmanager::{StepContext, StepResult, WorkflowDef};

/// Parameters of the rebuild workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildParams {
    /// Image to rebuild the server from.
    pub image_id: String,
}

impl WorkflowParams for RebuildParams {
    const KIND: WorkflowKind = WorkflowKind::new("rebuild");
}

/// The rebuild workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rebuild;

#[derive(Debug, Serialize, Deserialize)]
struct Rebuilt {
    host: String,
    image_id: String,
}

#[async_trait]
impl WorkflowDef for Rebuild {
    type Params = RebuildParams;

    fn error_task(&self) -> Option<TaskStatus> {
        Some(TaskStatus::BuildingErrorRebuild)
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &RebuildParams) -> StepResult<()> {
        let instance_id = cx.instance_id();
        let high = cx.config().agent_call_high_timeout;
        stop_db_tolerant(cx, high).await?;
        let compute = cx.compute();
        let image = p.image_id.clone();
        let _: Rebuilt = cx
            .step("rebuild_server", |_| async move {
                let s = compute
                    .rebuild_server(instance_id, &image, None)
                    .await
                    .map_err(|e| fail("The server could not be rebuilt.", &e))?;
                Ok(Rebuilt {
                    host: s.host,
                    image_id: image,
                })
            })
            .await?;
        guest_rebuild(cx, "guest_rebuild", "wait_healthy").await?;
        cx.finish(|i, _| {
            i.task = TaskStatus::None;
            i.server_status = ServerStatus::Active;
        })
        .await?;
        tracing::info!(instance = %instance_id, image = %p.image_id, "instance rebuilt");
        Ok(())
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![Scenario::new("rebuild", |w| {
            Box::pin(async move {
                let id = w.active_instance("db").await?;
                w.api
                    .mgmt_instance_action(
                        &w.admin(),
                        id,
                        crate::api::MgmtAction::Rebuild {
                            image_id: crate::testing::crash::REBUILD_IMAGE.into(),
                        },
                    )
                    .await?;
                Ok(id)
            })
        })
        .check(|w, id| {
            Box::pin(async move {
                w.expect_active(id).await?;
                let (image, _) = w.compute.rebuilds(id);
                w.expect(
                    image.as_deref() == Some(crate::testing::crash::REBUILD_IMAGE),
                    "the server was not rebuilt from the image",
                )
            })
        })]
    }
}
