//! Migrate an instance to another host (mgmt): `source_host` (checks the target before anything stops) →
//! `stop_db` → `migrate_server` → `start_db` → `wait_healthy` → task NONE on the new host.
//!
//! A failure is compensated best effort: compute is asked to bring the server's guest and engine back up wherever
//! the server is, and the instance names that host; the task returns to NONE (upstream has no MIGRATE error task)
//! with a fault saying what failed.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{fail, stop_db_tolerant};
use crate::model::{WorkflowKind, WorkflowParams};
use crate::ports::Server;
use crate::state::{ServerStatus, TaskStatus};
use crate::taskmanager::{Failure, StepContext, StepResult, WaitHealthy, WorkflowDef};

/// Parameters of the migrate workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateParams {
    /// Host to move to; `None`: compute picks another host.
    #[serde(default)]
    pub host: Option<String>,
}

impl WorkflowParams for MigrateParams {
    const KIND: WorkflowKind = WorkflowKind::new("migrate");
}

/// The migrate workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Migrate;

#[derive(Debug, Serialize, Deserialize)]
struct SourceHost {
    host: String,
}

#[async_trait]
impl WorkflowDef for Migrate {
    type Params = MigrateParams;

    fn error_task(&self) -> Option<TaskStatus> {
        Some(TaskStatus::None)
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &MigrateParams) -> StepResult<()> {
        let instance_id = cx.instance_id();
        let compute = cx.compute();
        let wanted = p.host.clone();
        let source: SourceHost = cx
            .step("source_host", |_| async move {
                let s = compute
                    .get_server(instance_id)
                    .await
                    .map_err(|e| fail("The server could not be found.", &e))?
                    .ok_or_else(|| {
                        fail(
                            "The server could not be found.",
                            &crate::Error::not_found("Server", instance_id),
                        )
                    })?;
                // A host compute does not have (or no other host at all) fails here, before the engine stops: an
                // API without access to compute could not check it.
                let hosts = compute
                    .hosts()
                    .await
                    .map_err(|e| fail("The compute hosts are unknown.", &e))?;
                crate::ports::migration_target(&hosts, &s.host, wanted.as_deref(), |_| 0)
                    .map_err(|e| fail("The server cannot be migrated there.", &e))?;
                Ok(SourceHost { host: s.host })
            })
            .await?;
        let high = cx.config().agent_call_high_timeout;
        stop_db_tolerant(cx, high).await?;
        let compute = cx.compute();
        let wanted = p.host.clone();
        let from = source.host.clone();
        let server: Server = cx
            .step("migrate_server", |_| async move {
                // A resumed step whose move already happened finds the server elsewhere: done.
                if let Ok(Some(s)) = compute.get_server(instance_id).await {
                    if s.host != from {
                        return Ok(s);
                    }
                }
                compute
                    .migrate_server(instance_id, wanted.as_deref())
                    .await
                    .map_err(|e| fail("The server could not be migrated.", &e))
            })
            .await?;
        // The instance names its new host as soon as the server is there.
        let s = server.clone();
        cx.update(|i, _| {
            i.host = Some(s.host.clone());
            i.addresses = s.addresses.clone();
            i.port = s.port;
        })
        .await?;
        let guest = cx.guest();
        cx.step("start_db", |_| async move {
            guest
                .start_db()
                .await
                .map_err(|e| fail("The engine did not start on the new host.", &e))
        })
        .await?;
        cx.wait_healthy("wait_healthy", WaitHealthy::after("start_db", high))
            .await?;
        let host = server.host.clone();
        cx.finish(|i, _| {
            i.task = TaskStatus::None;
            i.server_status = ServerStatus::Active;
            i.host = Some(host.clone());
        })
        .await?;
        tracing::info!(instance = %instance_id, from = %source.host, to = %server.host, "instance migrated");
        Ok(())
    }

    async fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        _: &MigrateParams,
        failure: Failure,
    ) -> StepResult<Failure> {
        let instance_id = cx.instance_id();
        if cx.first_started("stop_db").is_none() {
            // Refused before anything stopped.
            return Ok(failure);
        }
        let compute = cx.compute();
        if let Err(e) = compute.reboot_server(instance_id).await {
            tracing::warn!(instance = %instance_id, error = %e, "could not restart the server after a failed migration");
        }
        if let Ok(Some(s)) = compute.get_server(instance_id).await {
            cx.update(|i, _| {
                i.host = Some(s.host.clone());
                i.addresses = s.addresses.clone();
                i.port = s.port;
                i.server_status = s.status;
            })
            .await?;
        }
        Ok(failure)
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::ports::Compute;
        use crate::testing::crash::Scenario;
        vec![Scenario::new("migrate", |w| {
            Box::pin(async move {
                let id = w.active_instance("db").await?;
                let to = w.other_host(id).await?;
                w.api
                    .mgmt_instance_action(
                        &w.admin(),
                        id,
                        crate::api::MgmtAction::Migrate { host: Some(to) },
                    )
                    .await?;
                Ok(id)
            })
        })
        .check(|w, id| {
            Box::pin(async move {
                w.expect_active(id).await?;
                let inst = w.instance(id).await?;
                let server = w.compute.get_server(id).await?;
                w.expect(
                    server.map(|s| s.host) == inst.host
                        && inst.host.as_deref() != Some(crate::testing::crash::FIRST_HOST),
                    "the instance does not name the host it moved to",
                )
            })
        })]
    }
}
