//! Upgrade to another version of the same datastore: `stop_db` → `switch_server` (compute rebuilds the server
//! for the new version) → `guest_rebuild` → `wait_healthy` → task NONE on the new version.
//!
//! A failure rolls back (compensation): once the server may have been switched, it is switched back to the old
//! version (`rollback_server`, `rollback_guest`, `rollback_wait`, journaled: a worker that dies while rolling back
//! leaves the workflow rolling back and the next one finishes the rollback). The instance ends with task
//! UPGRADING_ERROR, a fault saying what failed and whether the old version runs again, and `datastore_version_id`
//! back on the old version: the record names what actually runs.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{fail, guest_rebuild, stop_db_tolerant};
use crate::model::{DatastoreVersion, WorkflowKind, WorkflowParams};
use crate::state::{ServerStatus, TaskStatus};
use crate::taskmanager::{Failure, StepContext, StepResult, Stop, WorkflowDef};

/// Parameters of the upgrade workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradeParams {
    /// The version the instance ran before.
    pub old_version: DatastoreVersion,
    /// The version to run.
    pub new_version: DatastoreVersion,
}

impl WorkflowParams for UpgradeParams {
    const KIND: WorkflowKind = WorkflowKind::new("upgrade");
}

/// The upgrade workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Upgrade;

/// The server after a switch: where it runs and which version it runs.
#[derive(Debug, Serialize, Deserialize)]
struct Switched {
    host: String,
    version: uuid::Uuid,
}

async fn switch(
    cx: &mut StepContext<'_>,
    step: &str,
    to: &DatastoreVersion,
    what: &str,
) -> StepResult<()> {
    let instance_id = cx.instance_id();
    let compute = cx.compute();
    let to = to.clone();
    let what = what.to_string();
    cx.step(step, |_| async move {
        let s = compute
            .rebuild_server(instance_id, &to.image, Some(&to))
            .await
            .map_err(|e| fail(&what, &e))?;
        Ok(Switched {
            host: s.host,
            version: to.id,
        })
    })
    .await
    .map(|_: Switched| ())
}

#[async_trait]
impl WorkflowDef for Upgrade {
    type Params = UpgradeParams;

    fn error_task(&self) -> Option<TaskStatus> {
        Some(TaskStatus::UpgradingError)
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &UpgradeParams) -> StepResult<()> {
        let instance_id = cx.instance_id();
        let high = cx.config().agent_call_high_timeout;
        stop_db_tolerant(cx, high).await?;
        switch(
            cx,
            "switch_server",
            &p.new_version,
            "The server could not be switched to the new datastore version.",
        )
        .await?;
        guest_rebuild(cx, "guest_rebuild", "wait_healthy").await?;
        let new_id = p.new_version.id;
        cx.finish(|i, _| {
            i.task = TaskStatus::None;
            i.datastore_version_id = new_id;
            i.server_status = ServerStatus::Active;
        })
        .await?;
        tracing::info!(instance = %instance_id, version = %p.new_version.name, "instance upgraded");
        Ok(())
    }

    async fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        p: &UpgradeParams,
        failure: Failure,
    ) -> StepResult<Failure> {
        tracing::warn!(instance = %cx.instance_id(), message = %failure.message, "upgrade failed; rolling back");
        let old = &p.old_version.name;
        let outcome = if cx.first_started("switch_server").is_some() {
            match switch_back(cx, p).await {
                Ok(()) => format!(
                    "The instance was rolled back to datastore version '{old}' and runs again."
                ),
                Err(Stop::Fail(f)) if cx.completed("rollback_server").is_some() => format!(
                    "The instance was switched back to datastore version '{old}' but does not run yet: {}",
                    f.message
                ),
                Err(Stop::Fail(f)) => format!(
                    "Switching the instance back to datastore version '{old}' failed as well ({}); an operator \
                     must rebuild it.",
                    f.message
                ),
                Err(abort) => return Err(abort),
            }
        } else {
            format!("Nothing was changed: the instance still runs datastore version '{old}'.")
        };
        let old_id = p.old_version.id;
        cx.update(|i, _| i.datastore_version_id = old_id).await?;
        Ok(Failure {
            task: Some(TaskStatus::UpgradingError),
            service: None,
            message: format!(
                "Upgrading to datastore version '{}' failed: {} {outcome}",
                p.new_version.name, failure.message
            ),
            details: failure.details,
        })
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![
            Scenario::new("upgrade", |w| {
                Box::pin(async move {
                    let id = w.active_instance("db").await?;
                    w.upgrade(id).await?;
                    Ok(id)
                })
            })
            .check(|w, id| {
                Box::pin(async move {
                    w.expect_active(id).await?;
                    let (image, _) = w.compute.rebuilds(id);
                    w.expect(
                        image.as_deref() == Some(crate::testing::crash::NEW_IMAGE),
                        "the server does not run the new version's image",
                    )
                })
            }),
            // Once the failure was seen the end is the rollback; a worker that died while the guest's rebuild was
            // being asked for sends it again, and that may succeed.
            Scenario::new("upgrade that fails and rolls back", |w| {
                Box::pin(async move {
                    let id = w.active_instance("db").await?;
                    // The guest fails to bring the engine up on the new version (once).
                    w.engines.engine(id).fail_next_prepare();
                    w.upgrade(id).await?;
                    Ok(id)
                })
            })
            .ends_either_way()
            .check(|w, id| {
                Box::pin(async move {
                    let inst = w.instance(id).await?;
                    let (image, _) = w.compute.rebuilds(id);
                    if inst.task == TaskStatus::UpgradingError {
                        w.expect(
                            inst.datastore_version_id == w.old_version_id(),
                            "a rolled-back instance names the old version",
                        )?;
                        w.expect(
                            image.as_deref() == Some(crate::testing::crash::OLD_IMAGE),
                            "the server was not switched back to the old image",
                        )?;
                        w.expect(
                            inst.fault
                                .as_ref()
                                .is_some_and(|f| f.message.contains("rolled back")),
                            &format!(
                                "the fault does not say the instance was rolled back: {:?}",
                                inst.fault.as_ref().map(|f| &f.message)
                            ),
                        )
                    } else {
                        w.expect_active(id).await?;
                        w.expect(
                            inst.datastore_version_id != w.old_version_id()
                                && image.as_deref() == Some(crate::testing::crash::NEW_IMAGE),
                            "an upgrade that ended well runs the new version",
                        )
                    }
                })
            }),
        ]
    }
}

/// Switches the server back to the old version and waits for the guest.
async fn switch_back(cx: &mut StepContext<'_>, p: &UpgradeParams) -> StepResult<()> {
    switch(
        cx,
        "rollback_server",
        &p.old_version,
        "the server could not be switched back",
    )
    .await?;
    guest_rebuild(cx, "rollback_guest", "rollback_wait")
        .await
        .map(|_| ())
}
