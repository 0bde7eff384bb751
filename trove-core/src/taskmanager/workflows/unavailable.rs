//! Workflows whose engine-side work is not built yet: taking a backup, and replica promotion, ejection and
//! detach. Each fails at once with a fault saying so (the backup is marked FAILED). They go away as the backup and
//! replication facets arrive and the API refuses what no strategy offers.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{WorkflowKind, WorkflowParams};
use crate::ports::Write;
use crate::state::{BackupState, TaskStatus};
use crate::taskmanager::context::abort_on_store;
use crate::taskmanager::{Failure, StepContext, StepResult, WorkflowDef};

/// Parameters of the backup workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupParams {
    /// The backup.
    pub backup_id: Uuid,
    /// Container the backup goes to (chosen by the API from the request or the backup strategies).
    #[serde(default)]
    pub container: Option<String>,
}

impl WorkflowParams for BackupParams {
    const KIND: WorkflowKind = WorkflowKind::new("backup");
}

/// Parameters of the promote workflow (none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteParams {}

impl WorkflowParams for PromoteParams {
    const KIND: WorkflowKind = WorkflowKind::new("promote");
}

/// Parameters of the eject workflow (none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EjectParams {}

impl WorkflowParams for EjectParams {
    const KIND: WorkflowKind = WorkflowKind::new("eject");
}

/// Parameters of the detach workflow (none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachParams {}

impl WorkflowParams for DetachParams {
    const KIND: WorkflowKind = WorkflowKind::new("detach");
}

fn not_built(what: &str, kind: &WorkflowKind) -> Failure {
    Failure::with_details(
        format!("{what} is not implemented by this deployment yet."),
        format!("the {kind} workflow has no implementation"),
    )
}

/// Marks a backup FAILED (fenced with the workflow's last write).
async fn fail_backup(cx: &mut StepContext<'_>, backup_id: Uuid) -> StepResult<()> {
    let b = cx
        .store()
        .get_backup(backup_id)
        .await
        .map_err(abort_on_store)?;
    if let Some(mut b) = b.filter(|b| b.state.is_running()) {
        b.state = BackupState::Failed;
        b.updated = cx.clock().now();
        cx.update(|_, extra| extra.push(Write::Backup(b.clone())))
            .await?;
    }
    Ok(())
}

macro_rules! unavailable {
    ($(#[$doc:meta])* $name:ident, $params:ty, $task:expr, $what:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;

        #[async_trait]
        impl WorkflowDef for $name {
            type Params = $params;

            fn error_task(&self) -> Option<TaskStatus> {
                $task
            }

            async fn run(&self, _cx: &mut StepContext<'_>, _p: &$params) -> StepResult<()> {
                Err(not_built($what, &<$params as WorkflowParams>::KIND).into())
            }

            #[cfg(feature = "testing")]
            fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
                use crate::testing::crash::Scenario;
                vec![Scenario::new($what, |w| {
                    Box::pin(async move {
                        let id = w.active_instance("db").await?;
                        w.insert_workflow(id, &<$params>::default()).await?;
                        Ok(id)
                    })
                })
                .fails()]
            }
        }
    };
}

unavailable!(
    /// Promote a replica (not built yet).
    Promote,
    PromoteParams,
    Some(TaskStatus::PromotionError),
    "Replica promotion"
);
unavailable!(
    /// Eject a dead replica source (not built yet).
    Eject,
    EjectParams,
    Some(TaskStatus::EjectionError),
    "Replica source ejection"
);
unavailable!(
    /// Detach a replica (not built yet).
    Detach,
    DetachParams,
    Some(TaskStatus::None),
    "Replica detach"
);

/// Take a backup (not built yet): the backup ends FAILED.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backup;

#[async_trait]
impl WorkflowDef for Backup {
    type Params = BackupParams;

    fn error_task(&self) -> Option<TaskStatus> {
        // A backup never changed the instance's task.
        None
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &BackupParams) -> StepResult<()> {
        fail_backup(cx, p.backup_id).await?;
        Err(not_built("Taking backups", &BackupParams::KIND).into())
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![Scenario::new("backup", |w| {
            Box::pin(async move {
                let id = w.active_instance("db").await?;
                w.backup(id).await?;
                Ok(id)
            })
        })
        .fails()
        .check(|w, id| Box::pin(async move { w.expect_backups_failed(id).await }))]
    }
}
