//! The configuration workflow: brings an instance's configuration group into effect on its engine.
//!
//! [`WorkflowKind::ApplyConfiguration`](crate::model::WorkflowKind::ApplyConfiguration) is inserted by the API on
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

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{abort_on_store, params, Failure, Inner, Run, StepResult, Stop};
use crate::model::ServiceStatusRecord;
use crate::ports::{DynStore, Write};
use crate::state::{ServiceStatus, TaskStatus};

/// Parameters of a [`WorkflowKind::ApplyConfiguration`](crate::model::WorkflowKind::ApplyConfiguration) workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyConfigurationParams {
    /// The group attached when the workflow was asked for (`None`: a detach). Informational: the workflow applies
    /// the group the instance has when it runs.
    #[serde(default)]
    pub configuration_id: Option<Uuid>,
}

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
            _ => Err(Stop::Fail(Failure {
                task: Some(TaskStatus::None),
                service: None,
                message: APPLY_FAILED.into(),
                details: format!("configuration group {cid} no longer exists"),
            })),
        },
        None => Ok((None, Map::new())),
    }
}

const APPLY_FAILED: &str = "The configuration group could not be applied.";

/// How often the workflow re-applies when the instance's group changed while it applied (see the module doc).
const MAX_CATCH_UP: usize = 5;

impl Inner {
    /// Calls the guest's `apply_overrides`; answers whether a restart is needed.
    async fn guest_apply(
        &self,
        instance_id: Uuid,
        overrides: Map<String, Value>,
    ) -> StepResult<bool> {
        let guest = self.guest(instance_id);
        guest
            .apply_overrides(overrides)
            .await
            .map_err(|e| Stop::Fail(Failure::new(Some(TaskStatus::None), APPLY_FAILED, &e)))
    }

    pub(super) async fn apply_configuration(&self, run: &mut Run) -> StepResult<()> {
        let _: ApplyConfigurationParams = params(&run.wf)?;
        let instance_id = run.wf.instance_id;
        let store = self.store.clone();
        let loaded = self
            .step(run, "load_overrides", |_| async move {
                let (cid, values) = current_overrides(&store, instance_id).await?;
                Ok(json!({ "configuration_id": cid, "overrides": values }))
            })
            .await?;
        let mut overrides: Map<String, Value> = loaded
            .get("overrides")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let sent = overrides.clone();
        let applied = self
            .step(run, "apply_overrides", |_| async move {
                let restart = self.guest_apply(instance_id, sent).await?;
                Ok(json!({ "restart_required": restart }))
            })
            .await?;
        let mut restart = applied
            .get("restart_required")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        // Another apply of the same instance (a detach, a group update) may have run between this workflow's load
        // and its guest call: the last workflow to finish makes sure the engine has the group the instance has now.
        for _ in 0..MAX_CATCH_UP {
            self.renew(run).await?;
            let (_, now_values) = current_overrides(&self.store, instance_id).await?;
            if now_values == overrides {
                break;
            }
            tracing::info!(instance = %instance_id, "the configuration changed while it was applied; applying again");
            restart |= self.guest_apply(instance_id, now_values.clone()).await?;
            overrides = now_values;
        }
        let now = self.clock.now();
        let volume = if restart {
            self.store
                .get_service_status(instance_id)
                .await
                .map_err(abort_on_store)?
                .and_then(|s| s.volume)
        } else {
            None
        };
        self.finish(run, |inst, extra| {
            inst.task = TaskStatus::None;
            if restart {
                extra.push(Write::ServiceStatus(ServiceStatusRecord {
                    instance_id,
                    status: ServiceStatus::RestartRequired,
                    reason: Some("configuration change takes effect on restart".into()),
                    volume,
                    updated_at: now,
                }));
            }
        })
        .await?;
        tracing::info!(instance = %instance_id, restart_required = restart, "configuration applied");
        Ok(())
    }
}
