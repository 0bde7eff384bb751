//! Maintenance workflows: datastore-version upgrade, mgmt migrate and mgmt rebuild.
//!
//! All three share one shape, journaled like every other workflow (each step `Started` before and `Completed`
//! after its side effect, every step idempotent, so a second worker resumes where a dead one stopped):
//!
//! | workflow | steps |
//! |---|---|
//! | [`WorkflowKind::Upgrade`](crate::model::WorkflowKind::Upgrade) | `stop_db` → `switch_server` (compute rebuild for the new version) → `guest_rebuild` → `wait_healthy` → task NONE |
//! | [`WorkflowKind::Migrate`](crate::model::WorkflowKind::Migrate) | `source_host` → `stop_db` → `migrate_server` → `start_db` → `wait_healthy` → task NONE, new host |
//! | [`WorkflowKind::Rebuild`](crate::model::WorkflowKind::Rebuild) | `stop_db` → `rebuild_server` → `guest_rebuild` → `wait_healthy` → task NONE |
//!
//! Failures:
//! - **Upgrade** rolls back: once the server may have been switched, it is switched back to the old version
//!   (`rollback_server`, `rollback_guest`, `rollback_wait`, journaled too: a worker that dies while rolling back
//!   leaves the workflow `RollingBack` and the next one finishes the rollback). The instance ends with task
//!   UPGRADING_ERROR, a fault saying what failed and whether the old version runs again, and
//!   `datastore_version_id` back on the old version: the record names what actually runs.
//! - **Migrate**: the compute is asked to bring the server's engine back wherever it is (best effort); the task
//!   returns to NONE (as upstream resets it), the fault says what failed, and `host` names where the server is.
//! - **Rebuild**: task BUILDING_ERROR_REBUILD with the fault.
//!
//! `stop_db` failures are tolerated everywhere (a broken guest is a reason to rebuild, and compute stops the
//! engine itself before it moves or rebuilds a server).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{abort_on_store, params, Failure, Inner, Run, StepResult, Stop};
use crate::model::{DatastoreVersion, JournalPhase, WorkflowState};
use crate::ports::{PrepareRequest, Server};
use crate::state::{ServerStatus, TaskStatus};

/// Parameters of a [`WorkflowKind::Upgrade`](crate::model::WorkflowKind::Upgrade) workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradeParams {
    /// The version the instance ran before.
    pub old_version: DatastoreVersion,
    /// The version to run.
    pub new_version: DatastoreVersion,
}

/// Parameters of a [`WorkflowKind::Migrate`](crate::model::WorkflowKind::Migrate) workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateParams {
    /// Host to move to; `None`: compute picks another host.
    #[serde(default)]
    pub host: Option<String>,
}

/// Parameters of a [`WorkflowKind::Rebuild`](crate::model::WorkflowKind::Rebuild) workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildParams {
    /// Image to rebuild the server from.
    pub image_id: String,
}

fn failed(task: TaskStatus, message: impl Into<String>, e: &crate::Error) -> Stop {
    Stop::Fail(Failure::new(Some(task), message, e))
}

impl Inner {
    /// Asks the guest to stop its engine; a guest that does not answer is only logged.
    async fn maintenance_stop_db(&self, run: &mut Run) -> StepResult<()> {
        let instance_id = run.wf.instance_id;
        let guest = self.guest(instance_id);
        self.step(run, "stop_db", |_| async move {
            match guest.stop_db(guest.high()).await {
                Ok(_) => Ok(json!({ "stopped": true })),
                Err(e) => {
                    tracing::info!(instance = %instance_id, error = %e,
                        "stop_db before maintenance failed; compute stops the engine itself");
                    Ok(json!({ "stopped": false }))
                }
            }
        })
        .await?;
        Ok(())
    }

    /// What the guest needs to bring the engine up again on its data: the flavor's memory, the volume size and
    /// the overrides of the attached configuration group. No databases, users or root password.
    async fn rebuild_request(&self, instance_id: Uuid) -> StepResult<PrepareRequest> {
        let inst = self
            .store
            .get_instance(instance_id)
            .await
            .map_err(abort_on_store)?
            .ok_or_else(|| Stop::Abort(format!("instance {instance_id} vanished")))?;
        let overrides = match inst.configuration_id {
            Some(cid) => self
                .store
                .get_configuration(cid)
                .await
                .map_err(abort_on_store)?
                .map(|c| c.values)
                .unwrap_or_default(),
            None => Map::new(),
        };
        Ok(PrepareRequest {
            memory_mb: inst.ram_mb,
            volume_size_gb: inst.volume_size,
            databases: vec![],
            users: vec![],
            root_password: None,
            overrides,
        })
    }

    /// Step `name`: casts `rebuild` to the guest (the cast waits in the guest's topic until it serves).
    async fn guest_rebuild_step(
        &self,
        run: &mut Run,
        name: &str,
        on_fail: TaskStatus,
    ) -> StepResult<()> {
        let instance_id = run.wf.instance_id;
        let req = self.rebuild_request(instance_id).await?;
        let guest = self.guest(instance_id);
        self.step(run, name, |_| async move {
            guest
                .rebuild(req)
                .await
                .map_err(|e| failed(on_fail, "The guest could not be asked to rebuild.", &e))?;
            Ok(json!({}))
        })
        .await?;
        Ok(())
    }

    /// Step `name`: waits for a healthy report newer than the start of step `since_step`, within the high agent
    /// timeout.
    async fn wait_step(
        &self,
        run: &mut Run,
        name: &str,
        since_step: &str,
        on_timeout: TaskStatus,
    ) -> StepResult<()> {
        if run.completed(name).is_some() {
            return Ok(());
        }
        // Reports count from the step's first start; the time allowed counts from its latest (re)run, since a
        // resumed workflow repeats the side effect (the guest then reports again).
        let start = run.started(since_step).cloned();
        let timeout = self.config.agent_call_high_timeout;
        let (since, first_deadline) = self.deadline_from(&start, timeout);
        let deadline = run
            .journal
            .iter()
            .rev()
            .find(|e| e.step == since_step && e.phase == JournalPhase::Started)
            .and_then(|e| {
                e.at.checked_add_signed(chrono::Duration::from_std(timeout).ok()?)
            })
            .map_or(first_deadline, |d| d.max(first_deadline));
        self.renew(run).await?;
        if run.started(name).is_none() {
            self.journal(
                run,
                name,
                JournalPhase::Started,
                json!({ "deadline": deadline }),
            )
            .await?;
        }
        // A worker resuming after the deadline passed still gets to see the guest's next reports.
        let grace = chrono::Duration::from_std(self.config.report_interval * 3)
            .unwrap_or(chrono::Duration::seconds(30));
        let deadline = deadline.max(self.clock.now() + grace);
        let st = self.wait_healthy(run, since, deadline, on_timeout).await?;
        self.journal(
            run,
            name,
            JournalPhase::Completed,
            json!({ "status": st.status }),
        )
        .await?;
        Ok(())
    }

    // ------------------------------------------------------------------ upgrade

    pub(super) async fn upgrade(&self, run: &mut Run) -> StepResult<()> {
        let p: UpgradeParams = params(&run.wf)?;
        if run.wf.state == WorkflowState::RollingBack {
            return self.upgrade_rollback(run, &p, None).await;
        }
        match self.upgrade_forward(run, &p).await {
            Err(Stop::Fail(f)) => self.upgrade_rollback(run, &p, Some(f)).await,
            other => other,
        }
    }

    async fn upgrade_forward(&self, run: &mut Run, p: &UpgradeParams) -> StepResult<()> {
        let instance_id = run.wf.instance_id;
        self.maintenance_stop_db(run).await?;
        let compute = self.compute.clone();
        let new = p.new_version.clone();
        self.step(run, "switch_server", |_| async move {
            let s = compute
                .rebuild_server(instance_id, &new.image, Some(&new))
                .await
                .map_err(|e| {
                    failed(
                        TaskStatus::UpgradingError,
                        "The server could not be switched to the new datastore version.",
                        &e,
                    )
                })?;
            Ok(json!({ "host": s.host, "version": new.id }))
        })
        .await?;
        self.guest_rebuild_step(run, "guest_rebuild", TaskStatus::UpgradingError)
            .await?;
        self.wait_step(
            run,
            "wait_healthy",
            "guest_rebuild",
            TaskStatus::UpgradingError,
        )
        .await?;
        let new_id = p.new_version.id;
        self.finish(run, |i, _| {
            i.task = TaskStatus::None;
            i.datastore_version_id = new_id;
            i.server_status = ServerStatus::Active;
        })
        .await?;
        tracing::info!(instance = %instance_id, version = %p.new_version.name, "instance upgraded");
        Ok(())
    }

    /// Switches the server back to the old version (when it may have been switched), then closes the workflow as
    /// failed with the instance on the old version and task UPGRADING_ERROR.
    async fn upgrade_rollback(
        &self,
        run: &mut Run,
        p: &UpgradeParams,
        failure: Option<Failure>,
    ) -> StepResult<()> {
        let instance_id = run.wf.instance_id;
        let (message, details) = match failure {
            Some(f) => {
                let (m, d) = (f.message.clone(), f.details.clone());
                self.renew(run).await?;
                self.journal(
                    run,
                    "rollback",
                    JournalPhase::Started,
                    json!({ "message": m, "details": d }),
                )
                .await?;
                self.update(run, |_, wf, _| wf.state = WorkflowState::RollingBack)
                    .await?;
                (m, d)
            }
            None => {
                let d = run.started("rollback").cloned().unwrap_or(Value::Null);
                let text = |k: &str| {
                    d.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("the upgrade failed")
                        .to_string()
                };
                (text("message"), text("details"))
            }
        };
        tracing::warn!(instance = %instance_id, message = %message, "upgrade failed; rolling back");
        let outcome = if run.started("switch_server").is_some() {
            match self.upgrade_switch_back(run, p).await {
                Ok(()) => format!(
                    "The instance was rolled back to datastore version '{}' and runs again.",
                    p.old_version.name
                ),
                Err(Stop::Fail(f)) if run.completed("rollback_server").is_some() => format!(
                    "The instance was switched back to datastore version '{}' but does not run yet: {}",
                    p.old_version.name, f.message
                ),
                Err(Stop::Fail(f)) => format!(
                    "Switching the instance back to datastore version '{}' failed as well ({}); an operator must \
                     rebuild it.",
                    p.old_version.name, f.message
                ),
                Err(abort) => return Err(abort),
            }
        } else {
            format!(
                "Nothing was changed: the instance still runs datastore version '{}'.",
                p.old_version.name
            )
        };
        let old_id = p.old_version.id;
        self.update(run, |i, _, _| i.datastore_version_id = old_id)
            .await?;
        Err(Stop::Fail(Failure {
            task: Some(TaskStatus::UpgradingError),
            service: None,
            message: format!(
                "Upgrading to datastore version '{}' failed: {message} {outcome}",
                p.new_version.name
            ),
            details,
        }))
    }

    async fn upgrade_switch_back(&self, run: &mut Run, p: &UpgradeParams) -> StepResult<()> {
        let instance_id = run.wf.instance_id;
        let compute = self.compute.clone();
        let old = p.old_version.clone();
        self.step(run, "rollback_server", |_| async move {
            compute
                .rebuild_server(instance_id, &old.image, Some(&old))
                .await
                .map_err(|e| {
                    failed(
                        TaskStatus::UpgradingError,
                        "the server could not be switched back",
                        &e,
                    )
                })?;
            Ok(json!({ "version": old.id }))
        })
        .await?;
        self.guest_rebuild_step(run, "rollback_guest", TaskStatus::UpgradingError)
            .await?;
        self.wait_step(
            run,
            "rollback_wait",
            "rollback_guest",
            TaskStatus::UpgradingError,
        )
        .await
    }

    // ------------------------------------------------------------------ migrate

    pub(super) async fn migrate(&self, run: &mut Run) -> StepResult<()> {
        let p: MigrateParams = params(&run.wf)?;
        let instance_id = run.wf.instance_id;
        let compute = self.compute.clone();
        let wanted = p.host.clone();
        let source = self
            .step(run, "source_host", |_| async move {
                let s = compute
                    .get_server(instance_id)
                    .await
                    .map_err(|e| failed(TaskStatus::None, "The server could not be found.", &e))?
                    .ok_or_else(|| {
                        failed(
                            TaskStatus::None,
                            "The server could not be found.",
                            &crate::Error::not_found("Server", instance_id),
                        )
                    })?;
                // A host compute does not have (or no other host at all) fails here, before the engine stops: an
                // API without access to compute could not check it.
                let hosts = compute
                    .hosts()
                    .await
                    .map_err(|e| failed(TaskStatus::None, "The compute hosts are unknown.", &e))?;
                crate::ports::migration_target(&hosts, &s.host, wanted.as_deref(), |_| 0).map_err(
                    |e| failed(TaskStatus::None, "The server cannot be migrated there.", &e),
                )?;
                Ok(json!({ "host": s.host }))
            })
            .await?;
        let source = source
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match self.migrate_forward(run, &p, &source).await {
            Err(Stop::Fail(f)) => {
                self.migrate_recover(run).await?;
                Err(Stop::Fail(f))
            }
            other => other,
        }
    }

    async fn migrate_forward(
        &self,
        run: &mut Run,
        p: &MigrateParams,
        source: &str,
    ) -> StepResult<()> {
        let instance_id = run.wf.instance_id;
        self.maintenance_stop_db(run).await?;
        let compute = self.compute.clone();
        let wanted = p.host.clone();
        let from = source.to_string();
        let data = self
            .step(run, "migrate_server", |_| async move {
                // A resumed step whose move already happened finds the server elsewhere: done.
                if let Ok(Some(s)) = compute.get_server(instance_id).await {
                    if s.host != from {
                        return Ok(serde_json::to_value(&s).unwrap_or(Value::Null));
                    }
                }
                let s = compute
                    .migrate_server(instance_id, wanted.as_deref())
                    .await
                    .map_err(|e| {
                        failed(TaskStatus::None, "The server could not be migrated.", &e)
                    })?;
                Ok(serde_json::to_value(&s).unwrap_or(Value::Null))
            })
            .await?;
        let server: Option<Server> = serde_json::from_value(data).ok();
        if let Some(s) = server.clone() {
            // The instance names its new host as soon as the server is there.
            self.update(run, |i, _, _| {
                i.host = Some(s.host.clone());
                i.addresses = s.addresses.clone();
                i.port = s.port;
            })
            .await?;
        }
        let guest = self.guest(instance_id);
        self.step(run, "start_db", |start| async move {
            guest.start_db().await.map_err(|e| {
                failed(
                    TaskStatus::None,
                    "The engine did not start on the new host.",
                    &e,
                )
            })?;
            Ok(start.unwrap_or(Value::Null))
        })
        .await?;
        self.wait_step(run, "wait_healthy", "start_db", TaskStatus::None)
            .await?;
        let host = server.map(|s| s.host);
        self.finish(run, |i, _| {
            i.task = TaskStatus::None;
            i.server_status = ServerStatus::Active;
            if let Some(h) = &host {
                i.host = Some(h.clone());
            }
        })
        .await?;
        tracing::info!(instance = %instance_id, from = %source, "instance migrated");
        Ok(())
    }

    /// After a failed migration: the instance names the host compute reports, and compute is asked (best effort)
    /// to bring the server's guest and engine back up wherever it is.
    async fn migrate_recover(&self, run: &mut Run) -> StepResult<()> {
        let instance_id = run.wf.instance_id;
        if let Err(e) = self.compute.reboot_server(instance_id).await {
            tracing::warn!(instance = %instance_id, error = %e, "could not restart the server after a failed migration");
        }
        if let Ok(Some(s)) = self.compute.get_server(instance_id).await {
            self.update(run, |i, _, _| {
                i.host = Some(s.host.clone());
                i.addresses = s.addresses.clone();
                i.port = s.port;
                i.server_status = s.status;
            })
            .await?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ rebuild

    pub(super) async fn rebuild(&self, run: &mut Run) -> StepResult<()> {
        let p: RebuildParams = params(&run.wf)?;
        let instance_id = run.wf.instance_id;
        self.maintenance_stop_db(run).await?;
        let compute = self.compute.clone();
        let image = p.image_id.clone();
        self.step(run, "rebuild_server", |_| async move {
            let s = compute
                .rebuild_server(instance_id, &image, None)
                .await
                .map_err(|e| {
                    failed(
                        TaskStatus::BuildingErrorRebuild,
                        "The server could not be rebuilt.",
                        &e,
                    )
                })?;
            Ok(json!({ "host": s.host, "image_id": image }))
        })
        .await?;
        self.guest_rebuild_step(run, "guest_rebuild", TaskStatus::BuildingErrorRebuild)
            .await?;
        self.wait_step(
            run,
            "wait_healthy",
            "guest_rebuild",
            TaskStatus::BuildingErrorRebuild,
        )
        .await?;
        self.finish(run, |i, _| {
            i.task = TaskStatus::None;
            i.server_status = ServerStatus::Active;
        })
        .await?;
        tracing::info!(instance = %instance_id, image = %p.image_id, "instance rebuilt");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WorkflowKind;

    #[test]
    fn params_round_trip() {
        let m = MigrateParams { host: None };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(serde_json::from_value::<MigrateParams>(v).unwrap(), m);
        let m: MigrateParams = serde_json::from_value(json!({})).unwrap();
        assert_eq!(m.host, None, "an absent host means: compute picks");
        let r: RebuildParams = serde_json::from_value(json!({ "image_id": "img" })).unwrap();
        assert_eq!(r.image_id, "img");
        assert_eq!(
            WorkflowKind::Upgrade,
            serde_json::from_value(json!("upgrade")).unwrap()
        );
    }
}
