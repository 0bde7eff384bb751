//! Rolling cluster workflows: upgrade, restart and configuration changes, one member at a time.
//!
//! Each member is changed by its own instance workflow (`upgrade`, `restart`, `apply_configuration`), exactly as
//! a single instance would be, so everything those do (rollback of a failed upgrade, health waits, crash
//! recovery) holds for members too. The rolling workflow (keyed on the cluster's first member, like every
//! cluster workflow) starts one member's workflow, waits until it ended, waits until the member serves as a
//! member of the cluster again (Galera: `Synced`; Redis: `cluster_state:ok`), and only then goes to the next
//! member: the cluster keeps serving throughout, with at most one member away.
//!
//! - The child workflows' ids are drawn once (step `plan`) and journaled, so a rolling workflow resumed after a
//!   crash finds the child it started (the child is inserted, with the member's task, in one commit, only when
//!   no workflow of that id exists) and never starts a member's change twice.
//! - An upgrade skips members that already run the new version (a rolling upgrade asked for again after a
//!   failure goes on where it stopped); the cluster's version changes when every member runs the new one.
//! - A member's change that fails stops the roll: that member's own workflow has already done what it does on
//!   failure (a failed upgrade switches the member back to the old version), the members after it are not
//!   touched, and the cluster's fault says which members run what and what to do.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::cluster::{cluster_write, event, load_cluster, members_of, release_cluster};
use super::{ApplyConfigurationParams, RestartParams, UpgradeParams};
use crate::model::{
    ClusterTask, DatastoreVersion, Instance, ServiceStatusRecord, Workflow, WorkflowKind,
    WorkflowParams, WorkflowState,
};
use crate::ports::{Expect, Write};
use crate::rpc::TaskManagerClient;
use crate::state::{ServiceStatus, TaskStatus};
use crate::taskmanager::context::abort_on_store;
use crate::taskmanager::{Failure, StepContext, StepResult, Stop, WorkflowDef};

/// What a rolling workflow does to each member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollingChange {
    /// Upgrade every member from `old_version` to `new_version` (the member's `upgrade` workflow).
    Upgrade {
        /// The version the cluster ran.
        old_version: Box<DatastoreVersion>,
        /// The version it is to run.
        new_version: Box<DatastoreVersion>,
    },
    /// Restart every member's engine (the member's `restart` workflow).
    Restart,
    /// Attach (`Some`) or detach (`None`) a configuration group on every member (the member's
    /// `apply_configuration` workflow).
    Configuration {
        /// The group.
        configuration_id: Option<Uuid>,
    },
}

impl RollingChange {
    /// The cluster task while it runs.
    pub fn cluster_task(&self) -> ClusterTask {
        match self {
            RollingChange::Upgrade { .. } => ClusterTask::UpgradingCluster,
            RollingChange::Restart => ClusterTask::RestartingCluster,
            RollingChange::Configuration { .. } => ClusterTask::UpdatingCluster,
        }
    }

    /// The event kind recorded at the end.
    fn event_kind(&self) -> &'static str {
        match self {
            RollingChange::Upgrade { .. } => "cluster_upgrade",
            RollingChange::Restart => "cluster_restart",
            RollingChange::Configuration { .. } => "cluster_configuration",
        }
    }

    /// What was done, for messages ("upgraded to version '11.4'").
    fn done(&self) -> String {
        match self {
            RollingChange::Upgrade { new_version, .. } => {
                format!("upgraded to datastore version '{}'", new_version.name)
            }
            RollingChange::Restart => "restarted".into(),
            RollingChange::Configuration {
                configuration_id: Some(c),
            } => format!("given configuration group {c}"),
            RollingChange::Configuration {
                configuration_id: None,
            } => "rid of its configuration group".into(),
        }
    }

    /// Whether member `m` already has the change (only an upgrade can tell: it runs the new version).
    fn already_done(&self, m: &Instance) -> bool {
        match self {
            RollingChange::Upgrade { new_version, .. } => {
                m.datastore_version_id == new_version.id && m.task == TaskStatus::None
            }
            _ => false,
        }
    }

    /// The member's own workflow (with id `id`) and what the member row gets in the commit that starts it.
    fn child(
        &self,
        member: &mut Instance,
        id: Uuid,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StepResult<(Workflow, Vec<Write>)> {
        let mut extra = Vec::new();
        let wf = match self {
            RollingChange::Upgrade {
                old_version,
                new_version,
            } => {
                member.task = TaskStatus::Upgrading;
                member.datastore_version_id = new_version.id;
                Workflow::new(
                    member.id,
                    &UpgradeParams {
                        old_version: (**old_version).clone(),
                        new_version: (**new_version).clone(),
                    },
                    now,
                )
            }
            RollingChange::Restart => {
                member.task = TaskStatus::Rebooting;
                extra.push(Write::ServiceStatus(ServiceStatusRecord {
                    instance_id: member.id,
                    status: ServiceStatus::Restarting,
                    reason: None,
                    volume: None,
                    load: None,
                    updated_at: now,
                }));
                Workflow::new(member.id, &RestartParams {}, now)
            }
            RollingChange::Configuration { configuration_id } => {
                member.configuration_id = *configuration_id;
                Workflow::new(
                    member.id,
                    &ApplyConfigurationParams {
                        configuration_id: *configuration_id,
                    },
                    now,
                )
            }
        }
        .map_err(|e| Stop::Fail(Failure::new("A member's workflow could not be made.", &e)))?;
        let mut wf = wf;
        wf.id = id;
        Ok((wf, extra))
    }
}

/// Parameters of the rolling cluster workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRollingParams {
    /// The cluster.
    pub cluster_id: Uuid,
    /// Its members, in the order they are changed.
    pub members: Vec<Uuid>,
    /// What is done to each.
    pub change: RollingChange,
}

impl WorkflowParams for ClusterRollingParams {
    const KIND: WorkflowKind = WorkflowKind::new("cluster_rolling");
}

/// The rolling cluster workflow (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterRolling;

/// Step `plan`: the id of each member's workflow, drawn once.
type Plan = Vec<(Uuid, Uuid)>;

/// Starts member `member`'s workflow `child` unless a workflow of that id exists (a resumed run), or the member
/// already has the change (answers `false` then: nothing to wait for).
async fn start_child(
    cx: &mut StepContext<'_>,
    change: &RollingChange,
    member: Uuid,
    child: Uuid,
) -> StepResult<bool> {
    if cx
        .store()
        .get_workflow(child)
        .await
        .map_err(abort_on_store)?
        .is_some()
    {
        return Ok(true);
    }
    let m = cx.instance_of(member).await?.ok_or_else(|| {
        Stop::Fail(Failure::with_details(
            format!("Member {member} is gone; the cluster's members changed while it rolled."),
            format!("instance {member} not found"),
        ))
    })?;
    if m.deleted {
        return Err(Stop::Fail(Failure::with_details(
            format!("Member {member} was deleted while the cluster rolled."),
            "the member is deleted",
        )));
    }
    if change.already_done(&m) {
        return Ok(false);
    }
    if !(m.task == TaskStatus::None || m.task.is_error()) {
        return Err(Stop::Fail(Failure::with_details(
            format!(
                "Member {} ({member}) is busy ({}); nothing more was changed.",
                m.name,
                m.task.name()
            ),
            "a member must be free for its change",
        )));
    }
    let now = cx.clock().now();
    let anchor = cx.instance_id();
    let others: Vec<Uuid> = if member == anchor {
        Vec::new()
    } else {
        vec![member]
    };
    let mut started: Option<Workflow> = None;
    let mut failed: Option<Stop> = None;
    cx.update_members(&others, |anchor_row, rows, extra| {
        started = None;
        failed = None;
        let row = if anchor_row.id == member {
            Some(anchor_row)
        } else {
            rows.iter_mut().find(|r| r.id == member)
        };
        let Some(row) = row else { return };
        match change.child(row, child, now) {
            Ok((wf, writes)) => {
                extra.extend(writes);
                extra.push(Write::Workflow {
                    workflow: wf.clone(),
                    expect: Expect::Absent,
                });
                started = Some(wf);
            }
            Err(e) => failed = Some(e),
        }
    })
    .await?;
    if let Some(e) = failed {
        return Err(e);
    }
    if started.is_some() {
        let tm = TaskManagerClient::new(cx.bus(), "taskmanager");
        if let Err(e) = tm.run_workflow(child).await {
            tracing::warn!(workflow = %child, error = %e, "could not cast a member's workflow; the scan will run it");
        }
    }
    Ok(true)
}

/// Waits until workflow `child` of member `member` ended; fails, naming the member and its fault, when it failed.
async fn wait_child(cx: &mut StepContext<'_>, member: Uuid, child: Uuid) -> StepResult<()> {
    let deadline = cx.clock().now()
        + chrono::Duration::from_std(cx.config().usage_timeout)
            .unwrap_or(chrono::Duration::seconds(1800));
    loop {
        let wf = cx
            .store()
            .get_workflow(child)
            .await
            .map_err(abort_on_store)?;
        match wf.map(|w| w.state) {
            Some(WorkflowState::Done) => return Ok(()),
            Some(WorkflowState::Failed) => {
                let m = cx.instance_of(member).await?;
                let (name, why) = m.map_or_else(
                    || (member.to_string(), "the member is gone".to_string()),
                    |m| {
                        (
                            m.name.clone(),
                            m.fault.as_ref().map_or_else(
                                || "its workflow failed".to_string(),
                                |f| format!("{}: {}", f.message, f.details),
                            ),
                        )
                    },
                );
                return Err(Stop::Fail(Failure::with_details(
                    format!(
                        "Member {name} ({member}) could not be changed; the roll stopped there."
                    ),
                    why,
                )));
            }
            // Closed (a reset status) or still running.
            None => {
                return Err(Stop::Fail(Failure::with_details(
                    format!("Member {member}'s workflow is gone (its status was reset?)."),
                    format!("workflow {child} not found"),
                )))
            }
            Some(_) => {}
        }
        if cx.clock().now() >= deadline {
            return Err(Stop::Fail(Failure::with_details(
                format!("Member {member}'s change did not end in time; the roll stopped there."),
                format!("workflow {child} still open"),
            )));
        }
        cx.renew().await?;
        cx.sleep(cx.poll_interval()).await;
    }
}

/// Step `ready_<id>`: waits until member `member` serves as a member of its cluster again (its own view).
async fn wait_member_ready(cx: &mut StepContext<'_>, member: Uuid) -> StepResult<()> {
    let guest = cx.guest_of(member);
    let timeout = cx.config().agent_call_high_timeout;
    let clock = cx.clock();
    let poll = cx.poll_interval();
    cx.step(&format!("ready_{member}"), |_| async move {
        let started = clock.now();
        loop {
            let last = match guest.cluster_status().await {
                Ok(s) if s.ready => return Ok(()),
                Ok(s) => s.state,
                Err(e) => e.to_string(),
            };
            if (clock.now() - started).to_std().unwrap_or_default() >= timeout {
                return Err(Stop::Fail(Failure::with_details(
                    format!(
                        "Member {member} did not serve as a member of the cluster again in time; the roll stopped \
                         there."
                    ),
                    last,
                )));
            }
            clock.sleep(poll).await;
        }
    })
    .await
}

#[async_trait]
impl WorkflowDef for ClusterRolling {
    type Params = ClusterRollingParams;

    fn error_task(&self) -> Option<TaskStatus> {
        None
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &ClusterRollingParams) -> StepResult<()> {
        let members = p.members.clone();
        let plan: Plan = cx
            .step("plan", |_| async move {
                Ok(members.iter().map(|m| (*m, Uuid::new_v4())).collect())
            })
            .await?;
        let mut changed = Vec::new();
        for (member, child) in &plan {
            let (member, child) = (*member, *child);
            if cx.completed(&format!("ready_{member}")).is_some() {
                changed.push(member);
                continue;
            }
            if start_child(cx, &p.change, member, child).await? {
                wait_child(cx, member, child).await?;
                changed.push(member);
            }
            wait_member_ready(cx, member).await?;
            tracing::info!(cluster = %p.cluster_id, member = %member, change = p.change.event_kind(), "member done");
        }
        let cluster = load_cluster(cx, p.cluster_id).await?;
        let now = cx.clock().now();
        let e = event(
            cx,
            &cluster,
            p.change.event_kind(),
            changed.clone(),
            true,
            format!(
                "Cluster {} was {}, one member at a time.",
                cluster.id,
                p.change.done()
            ),
            serde_json::json!({"members": p.members, "changed": changed}),
        );
        let change = p.change.clone();
        let w = cluster_write(cluster, now, |c| {
            c.task = ClusterTask::None;
            c.fault = None;
            match &change {
                RollingChange::Upgrade { new_version, .. } => {
                    c.datastore_version_id = new_version.id
                }
                RollingChange::Configuration { configuration_id } => {
                    c.configuration_id = *configuration_id
                }
                RollingChange::Restart => {}
            }
        });
        cx.finish(|_, extra| {
            extra.push(w.clone());
            extra.push(Write::Event(e.clone()));
        })
        .await?;
        tracing::info!(cluster = %p.cluster_id, members = p.members.len(), change = p.change.event_kind(), "cluster rolled");
        Ok(())
    }

    async fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        p: &ClusterRollingParams,
        failure: Failure,
    ) -> StepResult<Failure> {
        let mut failure = failure;
        if let RollingChange::Upgrade {
            old_version,
            new_version,
        } = &p.change
        {
            let members = members_of(cx, p.cluster_id).await?;
            let upgraded: Vec<String> = members
                .iter()
                .filter(|m| m.datastore_version_id == new_version.id)
                .map(|m| m.name.clone())
                .collect();
            failure.message = format!(
                "{} Members on version '{}': {}; the others run '{}'. Upgrade the cluster again to go on (members \
                 already upgraded are skipped).",
                failure.message,
                new_version.name,
                if upgraded.is_empty() {
                    "none".to_string()
                } else {
                    upgraded.join(", ")
                },
                old_version.name
            );
        }
        release_cluster(cx, p.cluster_id, &failure).await?;
        Ok(failure)
    }

    #[cfg(any(test, feature = "testing"))]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![
            Scenario::new("upgrade a cluster, one member at a time", |w| {
                Box::pin(async move {
                    let c = w.cluster_built("c", 3).await?;
                    w.upgrade_cluster(c).await?;
                    Ok(c)
                })
            })
            .check(|w, id| {
                Box::pin(async move {
                    w.expect_cluster(id, 3).await?;
                    w.expect_cluster_upgraded(id).await
                })
            })
            .with_helpers(),
            Scenario::new("restart a cluster, one member at a time", |w| {
                Box::pin(async move {
                    let c = w.cluster_built("c", 3).await?;
                    w.restart_cluster(c).await?;
                    Ok(c)
                })
            })
            .check(|w, id| Box::pin(async move { w.expect_cluster(id, 3).await }))
            .with_helpers(),
        ]
    }
}
