//! The step context: what a workflow's steps are written against.
//!
//! A [`StepContext`] is handed to [`WorkflowDef::run`](super::WorkflowDef::run) and
//! [`WorkflowDef::compensate`](super::WorkflowDef::compensate). It offers:
//! - [`StepContext::step`]: a journaled step (`Started` before the side effect, `Completed` with its typed output
//!   after; skipped, answering the recorded output, when it completed in an earlier run);
//! - [`StepContext::wait_healthy`]: the one way to wait for a guest, journaled like a step, ended early by the
//!   guest's reports (a failure, or silence for `guest_silence_timeout`);
//! - [`StepContext::guest_work`]: asks a guest to do work that a crash may lose (prepare, rebuild) and waits for
//!   it, asking again while the guest reports that it is idle; [`StepContext::reopen`] marks steps as not done;
//! - [`StepContext::update`] and [`StepContext::finish`]: writes of the instance fenced by the workflow row (they
//!   commit only while this worker still owns the open workflow);
//! - the ports (store, bus, compute, block storage, clock) and a guest client, to build side effects from.
//!
//! Every step must be idempotent: a worker that resumes a workflow after a crash runs the first step that has no
//! `Completed` line again, whether or not its side effect happened before the crash.

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{json, Value};
use std::future::Future;
use std::time::Duration;
use uuid::Uuid;

use super::engine::Engine;
use super::registry::DynWorkflow;
use crate::config::CoreConfig;
use crate::error::Error;
use crate::model::{Instance, JournalEntry, JournalPhase, Workflow, WorkflowParams};
use crate::ports::{DynBlockStorage, DynBus, DynClock, DynCompute, DynStore, Write};
use crate::rpc::GuestClient;
use crate::state::{ServiceStatus, TaskStatus};

/// The outcome of a step or of a whole workflow run.
pub type StepResult<T> = std::result::Result<T, Stop>;

/// Why a workflow run stopped before its end.
#[derive(Debug)]
pub enum Stop {
    /// The worker lost the workflow (its lease was taken, the workflow was closed, the store failed) or died: it
    /// does nothing more; whoever holds the workflow next resumes it.
    Abort(String),
    /// The workflow failed: the engine compensates, then records the failure on the instance.
    Fail(Failure),
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Stop {
        Stop::Fail(f)
    }
}

/// What a failed workflow leaves on its instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The task the instance shows; `None`: the workflow's [`error_task`](super::WorkflowDef::error_task).
    pub task: Option<TaskStatus>,
    /// A service status to record with the fault (e.g. FAILED_TIMEOUT_GUESTAGENT), if any.
    pub service: Option<ServiceStatus>,
    /// The fault's message, for the user: what failed and what to do.
    pub message: String,
    /// The fault's details (the underlying error).
    pub details: String,
}

impl Failure {
    /// A failure with `message`, caused by `err`, showing the workflow's error task.
    pub fn new(message: impl Into<String>, err: &Error) -> Failure {
        Failure {
            task: None,
            service: None,
            message: message.into(),
            details: err.to_string(),
        }
    }

    /// A failure with a message and details of its own.
    pub fn with_details(message: impl Into<String>, details: impl Into<String>) -> Failure {
        Failure {
            task: None,
            service: None,
            message: message.into(),
            details: details.into(),
        }
    }

    /// Shows `task` instead of the workflow's error task.
    pub fn task(mut self, task: TaskStatus) -> Failure {
        self.task = Some(task);
        self
    }

    /// Records `status` as the guest's service status with the fault.
    pub fn service(mut self, status: ServiceStatus) -> Failure {
        self.service = Some(status);
        self
    }
}

/// A journaled step's start, as the side effect sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepStart {
    /// When the step first started (a resumed step keeps its first start).
    pub first_at: DateTime<Utc>,
    /// Whether an earlier run started this step already (its side effect may or may not have happened).
    pub resumed: bool,
}

/// How [`StepContext::wait_healthy`] waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitHealthy<'s> {
    /// The step after whose start the guest's report must come (the step that asked the guest to do the work).
    pub after: &'s str,
    /// How long the guest has, counted from the latest start of `after` (a resumed step gives the guest the time
    /// again, since it repeated its side effect).
    pub timeout: Duration,
    /// The task shown when the guest stays silent; `None`: the workflow's error task.
    pub timeout_task: Option<TaskStatus>,
    /// The task shown when the guest reports that the work failed; `None`: the workflow's error task.
    pub failed_task: Option<TaskStatus>,
}

impl<'s> WaitHealthy<'s> {
    /// Waits for a healthy report after step `after`, for at most `timeout`; failures show the workflow's error
    /// task.
    pub fn after(after: &'s str, timeout: Duration) -> WaitHealthy<'s> {
        WaitHealthy {
            after,
            timeout,
            timeout_task: None,
            failed_task: None,
        }
    }

    /// Shows `task` when the guest stays silent until the deadline.
    pub fn timeout_task(mut self, task: TaskStatus) -> Self {
        self.timeout_task = Some(task);
        self
    }
}

/// How many report intervals a guest asked to work may keep reporting that it is idle before it is asked again
/// ([`StepContext::guest_work`]).
pub const GUEST_IDLE_REPORTS: u32 = 3;

/// How many times [`StepContext::guest_work`] asks a guest that stays idle before the workflow fails.
pub const MAX_ASKS: usize = 3;

/// The journal field recording the time of a FAILED report a wait ended on.
const GUEST_FAILED_AT: &str = "guest_failed_at";

enum Watched {
    Healthy(ServiceStatus),
    Idle(String),
}

/// What a running workflow's steps are written against (see the module docs).
pub struct StepContext<'a> {
    pub(super) engine: &'a Engine,
    pub(super) def: &'a dyn DynWorkflow,
    pub(super) wf: Workflow,
    pub(super) journal: Vec<JournalEntry>,
}

impl std::fmt::Debug for StepContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext")
            .field("workflow", &self.wf.id)
            .field("kind", &self.wf.kind)
            .finish()
    }
}

pub(super) fn abort_on_store(e: Error) -> Stop {
    Stop::Abort(format!("store error: {e}"))
}

impl StepContext<'_> {
    // ------------------------------------------------------------------ what the steps see

    /// The instance the workflow works on.
    pub fn instance_id(&self) -> Uuid {
        self.wf.instance_id
    }

    /// The workflow record as this worker last committed or read it.
    pub fn workflow(&self) -> &Workflow {
        &self.wf
    }

    /// The infrastructure store.
    pub fn store(&self) -> DynStore {
        self.engine.store.clone()
    }

    /// The message bus.
    pub fn bus(&self) -> DynBus {
        self.engine.bus.clone()
    }

    /// Compute.
    pub fn compute(&self) -> DynCompute {
        self.engine.compute.clone()
    }

    /// The backup store, when the task manager has one.
    pub fn backup_store(&self) -> Option<crate::ports::DynBackupStore> {
        self.engine.backups.clone()
    }

    /// Block storage.
    pub fn storage(&self) -> DynBlockStorage {
        self.engine.storage.clone()
    }

    /// The clock.
    pub fn clock(&self) -> DynClock {
        self.engine.clock.clone()
    }

    /// Control-plane settings.
    pub fn config(&self) -> &CoreConfig {
        &self.engine.config
    }

    /// The deployment's sealer (secrets of workflow parameters).
    pub fn sealer(&self) -> &crate::seal::Sealer {
        &self.engine.sealing.at_rest
    }

    /// A client of the instance's guest agent.
    pub fn guest(&self) -> GuestClient {
        self.engine.guest(self.wf.instance_id)
    }

    /// A client of the guest agent of another instance (the source of a replica, say).
    pub fn guest_of(&self, instance_id: Uuid) -> GuestClient {
        self.engine.guest(instance_id)
    }

    /// A client of another instance's guest that gives up after `timeout` on every call (a guest presumed dead,
    /// asked to fence itself).
    pub fn guest_of_within(&self, instance_id: Uuid, timeout: Duration) -> GuestClient {
        self.engine.guest_within(
            instance_id,
            crate::rpc::GuestTimeouts {
                low: timeout,
                high: timeout,
            },
        )
    }

    /// Another instance as stored now (`None`: it is gone).
    pub async fn instance_of(&self, instance_id: Uuid) -> StepResult<Option<Instance>> {
        self.engine
            .store
            .get_instance(instance_id)
            .await
            .map_err(abort_on_store)
    }

    /// The instance as stored now.
    pub async fn instance(&self) -> StepResult<Instance> {
        self.engine
            .store
            .get_instance(self.wf.instance_id)
            .await
            .map_err(abort_on_store)?
            .ok_or_else(|| Stop::Abort(format!("instance {} vanished", self.wf.instance_id)))
    }

    /// The output of step `step`, when it completed (in this run or an earlier one) and was not reopened since
    /// ([`Self::reopen`]): the step's latest journal line decides.
    pub fn completed(&self, step: &str) -> Option<&Value> {
        self.journal
            .iter()
            .rev()
            .find(|e| e.step == step)
            .filter(|e| e.phase == JournalPhase::Completed)
            .map(|e| &e.data)
    }

    /// When step `step` first started, if it did.
    pub fn first_started(&self, step: &str) -> Option<DateTime<Utc>> {
        self.journal
            .iter()
            .find(|e| e.step == step && e.phase == JournalPhase::Started)
            .map(|e| e.at)
    }

    /// When step `step` last started, if it did.
    pub fn last_started(&self, step: &str) -> Option<DateTime<Utc>> {
        self.journal
            .iter()
            .rev()
            .find(|e| e.step == step && e.phase == JournalPhase::Started)
            .map(|e| e.at)
    }

    /// How often the task manager polls the store while it waits.
    pub fn poll_interval(&self) -> Duration {
        self.engine.tm.poll_interval
    }

    /// Waits `d` on the clock.
    pub async fn sleep(&self, d: Duration) {
        self.engine.clock.sleep(d).await
    }

    // ------------------------------------------------------------------ journal and lease

    /// Renews this worker's lease (and checks that the workflow is still its own and open).
    pub async fn renew(&mut self) -> StepResult<()> {
        let (now, until) = self.engine.lease();
        match self
            .engine
            .store
            .claim_workflow(self.wf.id, &self.engine.tm.worker_id, now, until)
            .await
        {
            Ok(Some(wf)) => {
                self.wf = wf;
                Ok(())
            }
            Ok(None) => Err(Stop::Abort(
                "lost the workflow (lease taken or workflow closed)".into(),
            )),
            Err(e) => Err(abort_on_store(e)),
        }
    }

    pub(super) async fn journal(
        &mut self,
        step: &str,
        phase: JournalPhase,
        data: Value,
    ) -> StepResult<()> {
        trove_os::crash_before_journal_write();
        let entry = JournalEntry {
            workflow_id: self.wf.id,
            step: step.into(),
            phase,
            data,
            at: self.engine.clock.now(),
        };
        self.engine
            .store
            .append_journal(&entry)
            .await
            .map_err(abort_on_store)?;
        self.journal.push(entry);
        Ok(())
    }

    /// Runs the journaled step `name`: answers its recorded output when it completed before; otherwise journals
    /// `Started`, runs `effect` and journals `Completed` with the effect's output.
    ///
    /// The effect must be idempotent: a resumed run repeats it when the worker before died between `Started` and
    /// `Completed` ([`StepStart::resumed`] tells it so).
    pub async fn step<T, F, Fut>(&mut self, name: &str, effect: F) -> StepResult<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(StepStart) -> Fut,
        Fut: Future<Output = StepResult<T>>,
    {
        if let Some(data) = self.completed(name) {
            return serde_json::from_value(data.clone()).map_err(|e| {
                Stop::Fail(Failure::with_details(
                    "The workflow's journal is unreadable.",
                    format!("step {name}: {e}"),
                ))
            });
        }
        self.renew().await?;
        let first = self.first_started(name);
        let start = StepStart {
            first_at: first.unwrap_or_else(|| self.engine.clock.now()),
            resumed: first.is_some(),
        };
        self.journal(name, JournalPhase::Started, json!({})).await?;
        let out = effect(start).await?;
        let data = serde_json::to_value(&out).unwrap_or(Value::Null);
        self.journal(name, JournalPhase::Completed, data).await?;
        Ok(out)
    }

    /// Waits, as the journaled step `name`, until the guest reports a running datastore after the start of step
    /// `w.after`.
    ///
    /// Evidence ends the wait early: a FAILED report (with the guest's reason) fails the workflow at once with
    /// that reason, and a guest that sends no report at all for [`CoreConfig::guest_silence_timeout`] fails it
    /// with FAILED_TIMEOUT_GUESTAGENT. Otherwise the wait ends at its deadline (the latest start of `w.after` plus
    /// `w.timeout`; a wait that begins after its deadline, in a worker that resumed the workflow, still watches the
    /// guest for three report intervals). Answers the status reported.
    ///
    /// A wait on work the guest might have lost (a cast sent before a crash) is [`Self::guest_work`].
    pub async fn wait_healthy(
        &mut self,
        name: &str,
        w: WaitHealthy<'_>,
    ) -> StepResult<ServiceStatus> {
        match self.watch_guest(name, w, false).await? {
            Watched::Healthy(status) => Ok(status),
            // Not watched for here: idle reports are evidence only where the work can be asked for again.
            Watched::Idle(report) => Err(Stop::Abort(format!("unexpected idle report: {report}"))),
        }
    }

    /// Asks the guest to do some work and waits until it reports a running datastore: the one way to hand a guest
    /// work that may be lost in a crash (prepare, rebuild, and later restore and replica copy).
    ///
    /// `w.after` names the journaled step that asks (`ask`, run again on every re-ask: it must be idempotent on the
    /// guest's side), `wait` the journaled wait. The rule of the guest's contract this relies on: a guest that is
    /// not doing anything says so in its reports (NEW "waiting to be prepared", or SHUTDOWN), and repeating a
    /// request the guest already carried out (or half carried out before it died) finishes it.
    ///
    /// So a guest that reports being idle for [`GUEST_IDLE_REPORTS`] report intervals after the latest ask (the
    /// ask was lost with a dead process, or the guest was relaunched half way through) is asked again, at most
    /// [`MAX_ASKS`] times in all; a FAILED report or silence ends the wait as in [`Self::wait_healthy`].
    pub async fn guest_work<F, Fut>(
        &mut self,
        wait: &str,
        w: WaitHealthy<'_>,
        mut ask: F,
    ) -> StepResult<ServiceStatus>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StepResult<()>>,
    {
        loop {
            let fut = ask();
            self.step(w.after, |_| fut).await?;
            match self.watch_guest(wait, w, true).await? {
                Watched::Healthy(status) => return Ok(status),
                Watched::Idle(report) => {
                    let asks = self
                        .journal
                        .iter()
                        .filter(|e| e.step == w.after && e.phase == JournalPhase::Started)
                        .count();
                    if asks >= MAX_ASKS {
                        return Err(Stop::Fail(Failure {
                            task: w.failed_task,
                            service: None,
                            message: format!(
                                "The guest did not take up the work after {asks} requests; delete the instance \
                                 or try again."
                            ),
                            details: format!("the guest keeps reporting: {report}"),
                        }));
                    }
                    tracing::info!(
                        instance = %self.wf.instance_id, step = w.after, report = %report,
                        "the guest reports it is idle after being asked; asking again"
                    );
                    self.reopen(&[w.after], &format!("guest idle: {report}"))
                        .await?;
                }
            }
        }
    }

    /// Journals steps `steps` as not done any more (`Compensated`, with `why`): the next [`Self::step`] of each
    /// runs its side effect again.
    pub async fn reopen(&mut self, steps: &[&str], why: &str) -> StepResult<()> {
        self.renew().await?;
        for step in steps {
            self.journal(step, JournalPhase::Compensated, json!({ "reopened": why }))
                .await?;
        }
        Ok(())
    }

    async fn watch_guest(
        &mut self,
        name: &str,
        w: WaitHealthy<'_>,
        idle_ends: bool,
    ) -> StepResult<Watched> {
        #[derive(Deserialize)]
        struct Done {
            status: ServiceStatus,
        }
        if let Some(d) = self.completed(name) {
            if let Ok(d) = serde_json::from_value::<Done>(d.clone()) {
                return Ok(Watched::Healthy(d.status));
            }
        }
        self.renew().await?;
        let cfg = &self.engine.config;
        let now = self.engine.clock.now();
        let since = self.first_started(w.after).unwrap_or(now);
        let latest = self.last_started(w.after).unwrap_or(now);
        let chrono_of =
            |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let mut deadline = latest
            .checked_add_signed(chrono_of(w.timeout))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if now >= deadline {
            // A worker that resumes after the deadline (its predecessor died, the lease had to expire first)
            // still watches the guest's next reports before it gives up.
            deadline = now + chrono_of(cfg.report_interval * 3);
        }
        let idle_after = latest + chrono_of(cfg.report_interval * GUEST_IDLE_REPORTS);
        let silence = chrono_of(cfg.guest_silence_timeout);
        self.journal(name, JournalPhase::Started, json!({ "deadline": deadline }))
            .await?;
        let instance_id = self.wf.instance_id;
        let mut last_renew = now;
        let consumed_failure = self
            .journal
            .iter()
            .filter_map(|e| e.data.get(GUEST_FAILED_AT))
            .filter_map(|v| serde_json::from_value::<DateTime<Utc>>(v.clone()).ok())
            .max();
        // Silence counts from the latest of: this wait's start, the latest ask, the latest report.
        let watch_from = now.max(latest);
        loop {
            let st = self
                .engine
                .store
                .get_service_status(instance_id)
                .await
                .map_err(abort_on_store)?;
            if let Some(st) = &st {
                if st.updated_at >= since && st.status.is_build_success() {
                    let status = st.status;
                    self.journal(name, JournalPhase::Completed, json!({ "status": status }))
                        .await?;
                    return Ok(Watched::Healthy(status));
                }
                // A failure reported since the latest ask, and not one an earlier wait already ended on (a guest
                // reports a failure once, but the record stays until its next report).
                if st.updated_at >= latest
                    && consumed_failure.is_none_or(|at| st.updated_at > at)
                    && st.status == ServiceStatus::Failed
                {
                    let reason = st
                        .reason
                        .clone()
                        .unwrap_or_else(|| "no reason reported".into());
                    self.journal(
                        name,
                        JournalPhase::Compensated,
                        json!({ GUEST_FAILED_AT: st.updated_at, "reason": reason }),
                    )
                    .await?;
                    return Err(Stop::Fail(Failure {
                        task: w.failed_task,
                        service: None,
                        message: format!("The guest failed to start the datastore: {reason}"),
                        details: reason,
                    }));
                }
                if idle_ends
                    && st.updated_at >= idle_after
                    && matches!(st.status, ServiceStatus::New | ServiceStatus::Shutdown)
                {
                    let report = match &st.reason {
                        Some(r) => format!("{} ({r})", st.status.description()),
                        None => st.status.description().to_string(),
                    };
                    return Ok(Watched::Idle(report));
                }
            }
            let now = self.engine.clock.now();
            let last_heard = st
                .as_ref()
                .map_or(watch_from, |s| s.updated_at.max(watch_from));
            let silent = now - last_heard >= silence;
            if now >= deadline || silent {
                let last = st.map_or("none".to_string(), |s| s.status.description().to_string());
                let (message, details) = if silent && now < deadline {
                    (
                        format!(
                            "The guest agent sent no report for {} s; check that it runs, then delete the \
                             instance or try again.",
                            silence.num_seconds()
                        ),
                        format!("no report from guest {instance_id} since {last_heard} (last status: {last})"),
                    )
                } else {
                    (
                        "The guest agent did not report a running datastore in time.".to_string(),
                        format!("no healthy report from guest {instance_id} by {deadline} (last status: {last})"),
                    )
                };
                return Err(Stop::Fail(Failure {
                    task: w.timeout_task,
                    service: Some(ServiceStatus::FailedTimeoutGuestagent),
                    message,
                    details,
                }));
            }
            if (now - last_renew).to_std().unwrap_or_default() * 3 >= cfg.workflow_lease {
                self.renew().await?;
                last_renew = now;
            }
            self.engine.clock.sleep(self.engine.tm.poll_interval).await;
        }
    }

    // ------------------------------------------------------------------ fenced writes

    /// Commits a change of the instance (plus extra writes) fenced by the workflow row: the commit carries the
    /// workflow at its current version, so it fails once this worker lost the workflow. Answers the instance
    /// written.
    pub async fn update(
        &mut self,
        mut change: impl FnMut(&mut Instance, &mut Vec<Write>),
    ) -> StepResult<Instance> {
        self.engine
            .commit(&mut self.wf, |inst, _, extra| change(inst, extra))
            .await
    }

    /// Closes the workflow successfully with a last change of the instance (its secrets scrubbed).
    pub async fn finish(
        &mut self,
        mut change: impl FnMut(&mut Instance, &mut Vec<Write>),
    ) -> StepResult<Instance> {
        let def = self.def;
        self.engine
            .commit(&mut self.wf, |inst, wf, extra| {
                change(inst, extra);
                wf.state = crate::model::WorkflowState::Done;
                wf.owner = None;
                wf.lease_until = None;
                def.scrub(wf);
            })
            .await
    }

    /// [`Self::update`] that also changes the instances `members` (each at the version read with it; see the
    /// replication workflows, which move several members of a set in one commit).
    pub async fn update_members(
        &mut self,
        members: &[Uuid],
        mut change: impl FnMut(&mut Instance, &mut Vec<Instance>, &mut Vec<Write>),
    ) -> StepResult<Instance> {
        self.engine
            .commit_members(&mut self.wf, members, |inst, others, _, extra| {
                change(inst, others, extra)
            })
            .await
    }

    /// [`Self::finish`] that also changes the instances `members`, as [`Self::update_members`].
    pub async fn finish_members(
        &mut self,
        members: &[Uuid],
        mut change: impl FnMut(&mut Instance, &mut Vec<Instance>, &mut Vec<Write>),
    ) -> StepResult<Instance> {
        let def = self.def;
        self.engine
            .commit_members(&mut self.wf, members, |inst, others, wf, extra| {
                change(inst, others, extra);
                wf.state = crate::model::WorkflowState::Done;
                wf.owner = None;
                wf.lease_until = None;
                def.scrub(wf);
            })
            .await
    }

    /// Replaces the workflow's parameters (fenced like [`Self::update`]), e.g. to forget secrets once handed over.
    pub async fn set_params<P: WorkflowParams>(&mut self, params: &P) -> StepResult<()> {
        let encoded = {
            let mut w = self.wf.clone();
            w.set_params(params).map_err(|e| {
                Stop::Fail(Failure::new(
                    "The workflow's parameters could not be saved.",
                    &e,
                ))
            })?;
            w.params
        };
        self.engine
            .commit(&mut self.wf, |_, wf, _| wf.params = encoded.clone())
            .await
            .map(|_| ())
    }
}
