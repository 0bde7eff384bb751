//! The configuration workflow: brings an instance's configuration group into effect on its engine.
//!
//! The `apply_configuration` workflow is inserted by the API on
//! attach and detach (`PUT/PATCH /instances/{id}` with `configuration`) and, once per instance, when a group's
//! values change. Steps, journaled like every other workflow:
//!
//! 1. `load_overrides`: the values of the group the instance has *now* (none after a detach), recorded in the
//!    journal so that a resumed run applies the same values.
//! 2. `apply_overrides`: guest `apply_overrides` with those values. The guest persists them in its rendered
//!    config, applies every changed parameter it can live, and answers whether a changed parameter needs a restart.
//! 3. The end: task NONE; when a restart is needed, the service status becomes RESTART_REQUIRED in the same
//!    commit (heartbeats leave it alone; a `restart` clears it).
//!
//! Two applies of one instance may overlap (a detach or a group update while an attach still runs; the task stays
//! NONE throughout, as upstream): after its guest call a workflow compares the group the instance has now with
//! what it sent and applies again until they agree, so the last workflow to finish leaves the engine with the
//! instance's current group.
//!
//! A guest that fails or does not answer leaves the task at NONE with a fault on the instance saying the group
//! could not be applied.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::model::{ServiceStatusRecord, WorkflowKind, WorkflowParams};
use crate::ports::{DynStore, Write};
use crate::rpc::GuestClient;
use crate::state::{ServiceStatus, TaskStatus};
use crate::taskmanager::context::abort_on_store;
use crate::taskmanager::{Failure, StepContext, StepResult, Stop, WorkflowDef};

/// Parameters of the configuration-apply workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyConfigurationParams {
    /// The group attached when the workflow was asked for (`None`: a detach). Informational: the workflow applies
    /// the group the instance has when it runs.
    #[serde(default)]
    pub configuration_id: Option<Uuid>,
}

impl WorkflowParams for ApplyConfigurationParams {
    const KIND: WorkflowKind = WorkflowKind::new("apply_configuration");
}

/// The configuration-apply workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyConfiguration;

const APPLY_FAILED: &str = "The configuration group could not be applied.";

/// How often the workflow re-applies when the instance's group changed while it applied (see the module doc).
const MAX_CATCH_UP: usize = 5;

/// The values of the group an instance has now (none after a detach).
async fn current_overrides(
    store: &DynStore,
    instance_id: Uuid,
) -> StepResult<(Option<Uuid>, Map<String, Value>)> {
    let inst = store
        .get_instance(instance_id)
        .await
        .map_err(abort_on_store)?
        .ok_or_else(|| Stop::Abort(format!("instance {instance_id} vanished")))?;
    match inst.configuration_id {
        Some(cid) => match store.get_configuration(cid).await.map_err(abort_on_store)? {
            Some(c) if !c.deleted => Ok((Some(cid), c.values)),
            _ => Err(Failure::with_details(
                APPLY_FAILED,
                format!("configuration group {cid} no longer exists"),
            )
            .into()),
        },
        None => Ok((None, Map::new())),
    }
}

/// Calls the guest's `apply_overrides`; answers whether a restart is needed.
async fn guest_apply(guest: &GuestClient, overrides: Map<String, Value>) -> StepResult<bool> {
    guest
        .apply_overrides(overrides)
        .await
        .map_err(|e| Stop::Fail(Failure::new(APPLY_FAILED, &e)))
}

#[derive(Debug, Serialize, Deserialize)]
struct Loaded {
    configuration_id: Option<Uuid>,
    overrides: Map<String, Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Applied {
    restart_required: bool,
}

#[async_trait]
impl WorkflowDef for ApplyConfiguration {
    type Params = ApplyConfigurationParams;

    fn error_task(&self) -> Option<TaskStatus> {
        Some(TaskStatus::None)
    }

    async fn run(&self, cx: &mut StepContext<'_>, _: &ApplyConfigurationParams) -> StepResult<()> {
        let instance_id = cx.instance_id();
        let store = cx.store();
        let loaded: Loaded = cx
            .step("load_overrides", |_| async move {
                let (configuration_id, overrides) = current_overrides(&store, instance_id).await?;
                Ok(Loaded {
                    configuration_id,
                    overrides,
                })
            })
            .await?;
        let mut overrides = loaded.overrides;
        let sent = overrides.clone();
        let guest = cx.guest();
        let applied: Applied = cx
            .step("apply_overrides", |_| async move {
                let restart_required = guest_apply(&guest, sent).await?;
                Ok(Applied { restart_required })
            })
            .await?;
        let mut restart = applied.restart_required;
        // Another apply of the same instance (a detach, a group update) may have run between this workflow's load
        // and its guest call: the last workflow to finish makes sure the engine has the group the instance has now.
        let guest = cx.guest();
        let store = cx.store();
        for _ in 0..MAX_CATCH_UP {
            cx.renew().await?;
            let (_, now_values) = current_overrides(&store, instance_id).await?;
            if now_values == overrides {
                break;
            }
            tracing::info!(instance = %instance_id, "the configuration changed while it was applied; applying again");
            restart |= guest_apply(&guest, now_values.clone()).await?;
            overrides = now_values;
        }
        let now = cx.clock().now();
        let volume = if restart {
            store
                .get_service_status(instance_id)
                .await
                .map_err(abort_on_store)?
                .and_then(|s| s.volume)
        } else {
            None
        };
        cx.finish(|inst, extra| {
            inst.task = TaskStatus::None;
            if restart {
                extra.push(Write::ServiceStatus(ServiceStatusRecord {
                    instance_id,
                    status: ServiceStatus::RestartRequired,
                    reason: Some("configuration change takes effect on restart".into()),
                    volume,
                    load: None,
                    updated_at: now,
                }));
            }
        })
        .await?;
        tracing::info!(instance = %instance_id, restart_required = restart, "configuration applied");
        Ok(())
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::state::ServiceStatus;
        use crate::testing::crash::Scenario;
        use serde_json::json;
        vec![
            Scenario::new("attach a group applied live", |w| {
                Box::pin(async move {
                    let id = w.active_instance("db").await?;
                    let cid = w.configuration(&[("work_mem", json!(8192))]).await?;
                    w.attach_configuration(id, cid).await?;
                    Ok(id)
                })
            })
            .check(|w, id| {
                Box::pin(async move {
                    w.expect_active(id).await?;
                    w.expect(
                        w.engines.engine(id).overrides().get("work_mem") == Some(&json!(8192)),
                        "the group's value did not reach the engine",
                    )?;
                    w.expect(
                        w.service_status(id).await? == Some(ServiceStatus::Healthy),
                        "a live change leaves the instance HEALTHY",
                    )
                })
            }),
            Scenario::new("attach a group that needs a restart", |w| {
                Box::pin(async move {
                    let id = w.active_instance("db").await?;
                    let cid = w.configuration(&[("shared_buffers", json!(4096))]).await?;
                    w.attach_configuration(id, cid).await?;
                    Ok(id)
                })
            })
            .check(|w, id| {
                Box::pin(async move {
                    w.expect(
                        w.engines.engine(id).overrides().get("shared_buffers")
                            == Some(&json!(4096)),
                        "the group's value did not reach the engine",
                    )?;
                    w.expect(
                        w.service_status(id).await? == Some(ServiceStatus::RestartRequired),
                        "the instance does not show RESTART_REQUIRED",
                    )
                })
            }),
            Scenario::new("detach a group", |w| {
                Box::pin(async move {
                    let id = w.active_instance("db").await?;
                    let cid = w.configuration(&[("work_mem", json!(8192))]).await?;
                    w.attach_configuration(id, cid).await?;
                    w.settle().await?;
                    w.detach_configuration(id).await?;
                    Ok(id)
                })
            })
            .check(|w, id| {
                Box::pin(async move {
                    w.expect_active(id).await?;
                    w.expect(
                        w.engines.engine(id).overrides().is_empty(),
                        "the engine still has the detached group's values",
                    )
                })
            }),
        ]
    }
}
