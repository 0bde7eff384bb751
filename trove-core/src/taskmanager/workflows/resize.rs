//! Resize flavor (`resize_server` → `apply_flavor` → `wait_healthy` → new flavor recorded) and resize volume
//! (`grow_volume` → `resize_fs` → new size recorded).
//!
//! The API reserves the new RAM or volume size in the instance row (quota usage is derived from it) when it asks
//! for the resize. Compensation makes the row tell the truth after a failure: nothing changed → the old RAM or
//! size again; the server already has the new flavor → the new flavor recorded. Failures leave task NONE with a
//! fault.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::fail;
use crate::model::{Flavor, WorkflowKind, WorkflowParams};
use crate::state::{ServerStatus, TaskStatus};
use crate::taskmanager::{Failure, StepContext, StepResult, Stop, WaitHealthy, WorkflowDef};

/// Parameters of the resize-flavor workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResizeFlavorParams {
    /// The flavor before.
    pub old_flavor: Flavor,
    /// The flavor after.
    pub new_flavor: Flavor,
}

impl WorkflowParams for ResizeFlavorParams {
    const KIND: WorkflowKind = WorkflowKind::new("resize_flavor");
}

/// Parameters of the resize-volume workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeVolumeParams {
    /// Size before, GB.
    pub old_size: u32,
    /// Size after, GB.
    pub new_size: u32,
}

impl WorkflowParams for ResizeVolumeParams {
    const KIND: WorkflowKind = WorkflowKind::new("resize_volume");
}

/// The resize-flavor workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResizeFlavor;

/// The resize-volume workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResizeVolume;

#[async_trait]
impl WorkflowDef for ResizeFlavor {
    type Params = ResizeFlavorParams;

    fn error_task(&self) -> Option<TaskStatus> {
        Some(TaskStatus::None)
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &ResizeFlavorParams) -> StepResult<()> {
        let instance_id = cx.instance_id();
        let compute = cx.compute();
        let new = p.new_flavor.clone();
        cx.step("resize_server", |_| async move {
            compute
                .resize_server(instance_id, &new)
                .await
                .map_err(|e| fail("Resizing to the new flavor failed (server).", &e))
        })
        .await?;
        let guest = cx.guest();
        let mem = p.new_flavor.ram_mb;
        cx.step("apply_flavor", |_| async move {
            guest
                .apply_flavor(mem)
                .await
                .map_err(|e| fail("The guest could not apply the new flavor.", &e))
        })
        .await?;
        let timeout = cx.config().agent_call_high_timeout;
        let waited = cx
            .wait_healthy("wait_healthy", WaitHealthy::after("apply_flavor", timeout))
            .await;
        // The server has the new flavor whatever the guest reports next: record it.
        let new = p.new_flavor.clone();
        cx.finish(|i, _| {
            i.task = TaskStatus::None;
            i.flavor_id = new.id.clone();
            i.ram_mb = new.ram_mb;
            i.server_status = ServerStatus::Active;
        })
        .await?;
        match waited {
            Err(Stop::Fail(f)) => {
                tracing::warn!(instance = %instance_id, message = %f.message, "guest slow to report after a resize");
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    async fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        p: &ResizeFlavorParams,
        failure: Failure,
    ) -> StepResult<Failure> {
        if cx.completed("resize_server").is_none() {
            // Nothing changed: give the reserved RAM back.
            let old = p.old_flavor.ram_mb;
            cx.update(|i, _| i.ram_mb = old).await?;
        } else {
            // The server has the new flavor: record it so the instance tells the truth.
            let new = p.new_flavor.clone();
            cx.update(|i, _| {
                i.flavor_id = new.id.clone();
                i.ram_mb = new.ram_mb;
            })
            .await?;
        }
        Ok(failure)
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![
            Scenario::new("resize flavor", |w| {
                Box::pin(async move {
                    let id = w.active_instance("db").await?;
                    w.api.resize_flavor(&w.tenant(), id, "2").await?;
                    Ok(id)
                })
            })
            .check(|w, id| {
                Box::pin(async move {
                    w.expect_active(id).await?;
                    let inst = w.instance(id).await?;
                    w.expect(inst.flavor_id == "2", "the new flavor is not recorded")?;
                    w.expect(
                        w.engines.engine(id).memory_mb() == inst.ram_mb,
                        "the engine does not run with the new flavor's memory",
                    )
                })
            }),
            // Compute refuses the resize (once): the reserved RAM is given back, unless a crash made a resumed
            // worker ask again.
            Scenario::new("resize flavor that compute refuses", |w| {
                Box::pin(async move {
                    let id = w.active_instance("db").await?;
                    w.compute.fail_next_resize(1);
                    w.api.resize_flavor(&w.tenant(), id, "2").await?;
                    Ok(id)
                })
            })
            .ends_either_way()
            .check(|w, id| {
                Box::pin(async move {
                    let inst = w.instance(id).await?;
                    w.expect(inst.task == TaskStatus::None, "the task is NONE again")?;
                    if inst.fault.is_some() {
                        w.expect(
                            inst.flavor_id == "1" && inst.ram_mb == 512,
                            "a refused resize keeps the old flavor and gives the RAM back",
                        )
                    } else {
                        w.expect(
                            inst.flavor_id == "2" && inst.ram_mb == 1024,
                            "a resize that ended well records the new flavor",
                        )
                    }
                })
            }),
        ]
    }
}

#[async_trait]
impl WorkflowDef for ResizeVolume {
    type Params = ResizeVolumeParams;

    fn error_task(&self) -> Option<TaskStatus> {
        Some(TaskStatus::None)
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &ResizeVolumeParams) -> StepResult<()> {
        let instance_id = cx.instance_id();
        let storage = cx.storage();
        let new_size = p.new_size;
        cx.step("grow_volume", |_| async move {
            if let Ok(Some(v)) = storage.get_volume(instance_id).await {
                if v.size_gb >= new_size {
                    return Ok(v.size_gb);
                }
            }
            storage
                .grow_volume(instance_id, new_size)
                .await
                .map(|v| v.size_gb)
                .map_err(|e| fail("The volume could not be grown.", &e))
        })
        .await?;
        let guest = cx.guest();
        cx.step("resize_fs", |_| async move {
            guest
                .resize_fs(new_size)
                .await
                .map_err(|e| fail("The guest could not grow its filesystem.", &e))
        })
        .await?;
        cx.finish(|i, _| {
            i.task = TaskStatus::None;
            i.volume_size = Some(new_size);
        })
        .await?;
        Ok(())
    }

    async fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        p: &ResizeVolumeParams,
        failure: Failure,
    ) -> StepResult<Failure> {
        if cx.completed("grow_volume").is_none() {
            let old = p.old_size;
            cx.update(|i, _| i.volume_size = Some(old)).await?;
        }
        Ok(failure)
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::ports::BlockStorage;
        use crate::testing::crash::Scenario;
        vec![
            Scenario::new("resize volume", |w| {
                Box::pin(async move {
                    let id = w.active_instance("db").await?;
                    w.api.resize_volume(&w.tenant(), id, 3).await?;
                    Ok(id)
                })
            })
            .check(|w, id| {
                Box::pin(async move {
                    w.expect_active(id).await?;
                    let v = w.storage.get_volume(id).await?;
                    w.expect(
                        v.map(|v| v.size_gb) == Some(3),
                        "the volume was not grown to 3 GB",
                    )?;
                    w.expect(
                        w.instance(id).await?.volume_size == Some(3),
                        "the new size is not recorded",
                    )
                })
            }),
            // Block storage refuses to grow (once): the old size is recorded again, unless a crash made a
            // resumed worker ask again.
            Scenario::new("resize volume that storage refuses", |w| {
                Box::pin(async move {
                    let id = w.active_instance("db").await?;
                    w.storage.fail_next_grow(1);
                    w.api.resize_volume(&w.tenant(), id, 3).await?;
                    Ok(id)
                })
            })
            .ends_either_way()
            .check(|w, id| {
                Box::pin(async move {
                    let inst = w.instance(id).await?;
                    let size = w.storage.get_volume(id).await?.map(|v| v.size_gb);
                    w.expect(
                        inst.volume_size == size,
                        "the recorded size is the volume's",
                    )
                })
            }),
        ]
    }
}
