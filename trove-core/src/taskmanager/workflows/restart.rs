//! Restart the engine (guest `restart`) or reboot the server (mgmt, compute `reboot_server`), then wait for the
//! guest's healthy report. A failure leaves task NONE with a fault.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::fail;
use crate::model::{WorkflowKind, WorkflowParams};
use crate::state::{ServerStatus, TaskStatus};
use crate::taskmanager::{StepContext, StepResult, WaitHealthy, WorkflowDef};

/// Parameters of the restart workflow (none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartParams {}

impl WorkflowParams for RestartParams {
    const KIND: WorkflowKind = WorkflowKind::new("restart");
}

/// Parameters of the reboot workflow (none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootParams {}

impl WorkflowParams for RebootParams {
    const KIND: WorkflowKind = WorkflowKind::new("reboot");
}

/// The restart workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Restart;

/// The reboot workflow (mgmt).
#[derive(Debug, Clone, Copy, Default)]
pub struct Reboot;

async fn restart(cx: &mut StepContext<'_>, reboot: bool) -> StepResult<()> {
    let instance_id = cx.instance_id();
    let step = if reboot { "reboot" } else { "restart" };
    let guest = cx.guest();
    let compute = cx.compute();
    cx.step(step, |_| async move {
        let r = if reboot {
            compute.reboot_server(instance_id).await
        } else {
            guest.restart().await
        };
        r.map_err(|e| fail("The restart failed.", &e))
    })
    .await?;
    let timeout = cx.config().agent_call_high_timeout;
    cx.wait_healthy("wait_healthy", WaitHealthy::after(step, timeout))
        .await?;
    cx.finish(|i, _| {
        i.task = TaskStatus::None;
        i.server_status = ServerStatus::Active;
    })
    .await?;
    Ok(())
}

#[async_trait]
impl WorkflowDef for Restart {
    type Params = RestartParams;

    fn error_task(&self) -> Option<TaskStatus> {
        Some(TaskStatus::None)
    }

    async fn run(&self, cx: &mut StepContext<'_>, _: &RestartParams) -> StepResult<()> {
        restart(cx, false).await
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![Scenario::new("restart", |w| {
            Box::pin(async move {
                let id = w.active_instance("db").await?;
                w.api.restart_instance(&w.tenant(), id).await?;
                Ok(id)
            })
        })
        .check(|w, id| {
            Box::pin(async move {
                w.expect_active(id).await?;
                w.expect(
                    w.engines.engine(id).starts() >= 2,
                    "the engine was not restarted",
                )
            })
        })]
    }
}

#[async_trait]
impl WorkflowDef for Reboot {
    type Params = RebootParams;

    fn error_task(&self) -> Option<TaskStatus> {
        Some(TaskStatus::None)
    }

    async fn run(&self, cx: &mut StepContext<'_>, _: &RebootParams) -> StepResult<()> {
        restart(cx, true).await
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![Scenario::new("reboot", |w| {
            Box::pin(async move {
                let id = w.active_instance("db").await?;
                w.api
                    .mgmt_instance_action(&w.admin(), id, crate::api::MgmtAction::Reboot)
                    .await?;
                Ok(id)
            })
        })
        .check(|w, id| {
            Box::pin(async move {
                w.expect_active(id).await?;
                w.expect(w.compute.reboots(id) >= 1, "the server was not rebooted")
            })
        })]
    }
}
