//! The engine that runs any registered workflow: claim with a lease, load the journal, run or resume the steps,
//! compensate and record a failure, close the workflow. It knows no workflow kind by name.

use chrono::{DateTime, Utc};
use tracing::Instrument;
use uuid::Uuid;

use super::context::{abort_on_store, Failure, StepContext, StepResult, Stop};
use super::registry::Registry;
use super::TaskManagerConfig;
use crate::config::CoreConfig;
use crate::error::{Error, Result};
use crate::model::{
    Instance, InstanceFault, JournalEntry, JournalPhase, ServiceStatusRecord, Workflow,
    WorkflowState,
};
use crate::ports::{
    ChangeSet, DynBlockStorage, DynBus, DynClock, DynCompute, DynStore, Expect, Write,
};
use crate::rpc::{GuestClient, GuestTimeouts};

/// The journal line that records why a workflow is rolling back (so a resumed compensation knows).
const FAILURE_STEP: &str = "failure";

/// Ports and settings shared by every run of one task manager.
pub(super) struct Engine {
    pub(super) store: DynStore,
    pub(super) bus: DynBus,
    pub(super) compute: DynCompute,
    pub(super) storage: DynBlockStorage,
    pub(super) clock: DynClock,
    pub(super) config: CoreConfig,
    pub(super) tm: TaskManagerConfig,
    pub(super) registry: Registry,
    pub(super) sealing: crate::seal::Sealing,
    pub(super) backups: Option<crate::ports::DynBackupStore>,
}

impl Engine {
    pub(super) fn lease(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let now = self.clock.now();
        let lease = chrono::Duration::from_std(self.config.workflow_lease)
            .unwrap_or(chrono::Duration::seconds(30));
        (now, now + lease)
    }

    pub(super) fn guest(&self, instance_id: Uuid) -> GuestClient {
        self.guest_within(
            instance_id,
            GuestTimeouts {
                low: self.config.agent_call_low_timeout,
                high: self.config.agent_call_high_timeout,
            },
        )
    }

    pub(super) fn guest_within(&self, instance_id: Uuid, timeouts: GuestTimeouts) -> GuestClient {
        GuestClient::new(self.bus.clone(), instance_id, "taskmanager", timeouts)
            .sealed(self.sealing.guest(instance_id))
    }

    /// Commits a change of the instance and of the workflow (plus extra writes), both at the versions this worker
    /// read: a commit by a worker that lost the workflow fails. Re-reads and retries on a concurrent change of the
    /// instance while the workflow is still this worker's.
    pub(super) async fn commit(
        &self,
        wf: &mut Workflow,
        mut change: impl FnMut(&mut Instance, &mut Workflow, &mut Vec<Write>),
    ) -> StepResult<Instance> {
        self.commit_members(wf, &[], |inst, _, wf, extra| change(inst, wf, extra))
            .await
    }

    /// [`Self::commit`] that also changes the instances `members` (the other members of a replication set, say),
    /// each at the version read in the same attempt: `change` gets them in the order of `members`. A member that
    /// no longer exists is left out.
    pub(super) async fn commit_members(
        &self,
        wf: &mut Workflow,
        members: &[Uuid],
        mut change: impl FnMut(&mut Instance, &mut Vec<Instance>, &mut Workflow, &mut Vec<Write>),
    ) -> StepResult<Instance> {
        for _ in 0..5 {
            let inst = self
                .store
                .get_instance(wf.instance_id)
                .await
                .map_err(abort_on_store)?
                .ok_or_else(|| Stop::Abort(format!("instance {} vanished", wf.instance_id)))?;
            let mut others = Vec::with_capacity(members.len());
            for m in members {
                if let Some(o) = self.store.get_instance(*m).await.map_err(abort_on_store)? {
                    others.push(o);
                }
            }
            let read: Vec<(Uuid, u64)> = others.iter().map(|o| (o.id, o.version)).collect();
            let mut new_inst = inst.clone();
            let mut new_wf = wf.clone();
            let mut extra = Vec::new();
            change(&mut new_inst, &mut others, &mut new_wf, &mut extra);
            let now = self.clock.now();
            new_inst.updated = now;
            new_wf.updated = now;
            let mut cs = ChangeSet::new()
                .with(Write::Instance {
                    instance: new_inst.clone(),
                    expect: Expect::Version(inst.version),
                })
                .with(Write::Workflow {
                    workflow: new_wf.clone(),
                    expect: Expect::Version(wf.version),
                });
            for mut o in others {
                let Some((_, v)) = read.iter().find(|(id, _)| *id == o.id) else {
                    continue;
                };
                o.updated = now;
                cs.push(Write::Instance {
                    instance: o,
                    expect: Expect::Version(*v),
                });
            }
            for w in extra {
                cs.push(w);
            }
            match self.store.commit(cs).await {
                Ok(()) => {
                    new_wf.version = wf.version + 1;
                    *wf = new_wf;
                    new_inst.version = inst.version + 1;
                    return Ok(new_inst);
                }
                Err(Error::Conflict { .. }) => {
                    // The instance or the workflow changed: go on only while the workflow is still ours and open.
                    match self
                        .store
                        .get_workflow(wf.id)
                        .await
                        .map_err(abort_on_store)?
                    {
                        Some(w)
                            if w.state.is_open()
                                && w.owner.as_deref() == Some(self.tm.worker_id.as_str()) =>
                        {
                            *wf = w;
                        }
                        _ => return Err(Stop::Abort("workflow closed or taken over".into())),
                    }
                }
                Err(e) => return Err(abort_on_store(e)),
            }
        }
        Err(Stop::Abort("too many concurrent changes".into()))
    }

    /// Claims and runs one workflow to its end (or until this worker loses it). `Ok(false)`: not claimable.
    pub(super) async fn execute(&self, id: Uuid) -> Result<bool> {
        let (now, until) = self.lease();
        let Some(wf) = self
            .store
            .claim_workflow(id, &self.tm.worker_id, now, until)
            .await?
        else {
            return Ok(false);
        };
        let journal = self.store.journal(id).await?;
        let span =
            tracing::info_span!("workflow", id = %id, kind = %wf.kind, instance = %wf.instance_id);
        self.run_claimed(wf, journal).instrument(span).await
    }

    async fn run_claimed(&self, wf: Workflow, journal: Vec<JournalEntry>) -> Result<bool> {
        let id = wf.id;
        let Some(def) = self.registry.get(&wf.kind).cloned() else {
            // A kind this task manager does not know (written by a newer API, or of a workflow removed since):
            // close it with a fault rather than leaving the instance waiting.
            let kind = wf.kind.clone();
            let mut cx = StepContext {
                engine: self,
                def: &Unknown,
                wf,
                journal,
            };
            let f = Failure::with_details(
                format!("This task manager cannot run '{kind}' workflows; upgrade it."),
                format!("workflow kind {kind} is not registered"),
            );
            return self.close_failed(&mut cx, f, None).await;
        };
        let mut cx = StepContext {
            engine: self,
            def: def.as_ref(),
            wf,
            journal,
        };
        tracing::info!(workflow = %id, kind = %cx.wf.kind, instance = %cx.wf.instance_id,
            attempt = cx.wf.attempts, "running workflow");
        let result = match cx.wf.state {
            WorkflowState::RollingBack => Err(Stop::Fail(recorded_failure(&cx))),
            _ => {
                if cx.wf.state == WorkflowState::Pending {
                    if let Err(stop) = self
                        .commit(&mut cx.wf, |_, wf, _| wf.state = WorkflowState::Running)
                        .await
                    {
                        return Ok(self.stopped(id, stop));
                    }
                }
                def.run(&mut cx).await
            }
        };
        match result {
            Ok(()) => {
                if cx.wf.state.is_open() {
                    tracing::warn!(workflow = %id, "workflow ended without closing itself; closing it");
                    if let Err(stop) = cx.finish(|_, _| {}).await {
                        return Ok(self.stopped(id, stop));
                    }
                }
                Ok(true)
            }
            Err(Stop::Abort(why)) => Ok(self.stopped(id, Stop::Abort(why))),
            Err(Stop::Fail(f)) => {
                let error_task = def.error_task();
                // Compensation runs in the rolling-back state, with the failure journaled first, so that a worker
                // that dies while compensating leaves enough for the next one to finish it.
                if cx.wf.state != WorkflowState::RollingBack {
                    tracing::warn!(workflow = %id, message = %f.message, "workflow failed; compensating");
                    let data = serde_json::to_value(&f).unwrap_or_default();
                    let begun = async {
                        cx.renew().await?;
                        cx.journal(FAILURE_STEP, JournalPhase::Started, data)
                            .await?;
                        self.commit(&mut cx.wf, |_, wf, _| wf.state = WorkflowState::RollingBack)
                            .await
                    }
                    .await;
                    if let Err(stop) = begun {
                        return Ok(self.stopped(id, stop));
                    }
                }
                let f = match def.compensate(&mut cx, f).await {
                    Ok(f) => f,
                    Err(Stop::Fail(f2)) => {
                        tracing::warn!(workflow = %id, message = %f2.message, "compensation failed");
                        f2
                    }
                    Err(abort) => return Ok(self.stopped(id, abort)),
                };
                self.close_failed(&mut cx, f, error_task).await
            }
        }
    }

    fn stopped(&self, id: Uuid, stop: Stop) -> bool {
        match stop {
            Stop::Abort(why) => {
                tracing::info!(workflow = %id, reason = %why, "workflow run stopped")
            }
            Stop::Fail(f) => {
                tracing::warn!(workflow = %id, message = %f.message, "workflow run stopped")
            }
        }
        true
    }

    /// Records a failure: the instance gets the error task and the fault, the workflow is closed as failed (its
    /// secrets scrubbed).
    async fn close_failed(
        &self,
        cx: &mut StepContext<'_>,
        f: Failure,
        error_task: Option<crate::state::TaskStatus>,
    ) -> Result<bool> {
        let now = self.clock.now();
        let instance_id = cx.wf.instance_id;
        let task = f.task.or(error_task);
        let fault = InstanceFault {
            message: f.message.clone(),
            details: f.details.clone(),
            created: now,
        };
        let service = f.service;
        let def = cx.def;
        tracing::warn!(workflow = %cx.wf.id, instance = %instance_id, message = %f.message, "workflow failed");
        let r = self
            .commit(&mut cx.wf, |inst, wf, extra| {
                if let Some(t) = task {
                    inst.task = t;
                }
                inst.fault = Some(fault.clone());
                wf.state = WorkflowState::Failed;
                wf.owner = None;
                wf.lease_until = None;
                def.scrub(wf);
                if let Some(s) = service {
                    extra.push(Write::ServiceStatus(ServiceStatusRecord {
                        instance_id,
                        status: s,
                        reason: Some(fault.message.clone()),
                        volume: None,
                        load: None,
                        updated_at: now,
                    }));
                }
            })
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(stop) => Ok(self.stopped(cx.wf.id, stop)),
        }
    }
}

/// The failure a rolling-back workflow journaled before it began compensating.
fn recorded_failure(cx: &StepContext<'_>) -> Failure {
    cx.journal
        .iter()
        .rev()
        .find(|e| e.step == FAILURE_STEP && e.phase == JournalPhase::Started)
        .and_then(|e| serde_json::from_value(e.data.clone()).ok())
        .unwrap_or_else(|| {
            Failure::with_details("The workflow failed.", "the failure was not journaled")
        })
}

/// Stands in for the workflow of an unregistered kind while its record is closed.
struct Unknown;

#[async_trait::async_trait]
impl super::registry::DynWorkflow for Unknown {
    fn error_task(&self) -> Option<crate::state::TaskStatus> {
        None
    }
    async fn run(&self, _cx: &mut StepContext<'_>) -> StepResult<()> {
        Ok(())
    }
    async fn compensate(&self, _cx: &mut StepContext<'_>, failure: Failure) -> StepResult<Failure> {
        Ok(failure)
    }
    fn scrub(&self, _wf: &mut Workflow) {}
    #[cfg(any(test, feature = "testing"))]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        Vec::new()
    }
}
