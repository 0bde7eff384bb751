//! The task manager: runs durable, resumable [`Workflow`]s.
//!
//! A workflow is inserted by the [`crate::api::ApiService`] in the same commit as the state change that asked
//! for it, then cast to the `taskmanager` topic. Any task manager may run it: it claims the workflow with a lease
//! ([`InfraStore::claim_workflow`](crate::ports::InfraStore::claim_workflow)), renews the lease while it works, and journals every step before
//! (`Started`) and after (`Completed`) its side effect. Every step is idempotent, so a task manager that finds
//! an unfinished workflow (a periodic scan of [`InfraStore::list_open_workflows`](crate::ports::InfraStore::list_open_workflows) picks up workflows whose lease
//! expired, e.g. because their worker crashed) simply runs it again from the first step not completed.
//!
//! Every write to an instance is fenced by the workflow row: it is committed together with the workflow at its
//! current version, so a worker that lost its lease (or whose workflow was closed by `reset_status`) can no
//! longer change anything.

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::config::CoreConfig;
use crate::error::{Error, Result};
use crate::model::{
    Backup, DatabaseSpec, DatastoreVersion, Flavor, Instance, InstanceFault, JournalEntry,
    JournalPhase, Locality, Secret, ServiceStatusRecord, UserSpec, Workflow, WorkflowKind,
    WorkflowState,
};
use crate::ports::{
    ChangeSet, DynBlockStorage, DynBus, DynClock, DynCompute, DynStore, Expect, PrepareRequest,
    ServerSpec, Write,
};
use crate::rpc::{
    guest_topic, Envelope, GuestClient, GuestTimeouts, TaskManagerRequest, TASKMANAGER_TOPIC,
};
use crate::state::{BackupState, ServerStatus, ServiceStatus, TaskStatus};

mod configuration;
mod maintenance;
pub use configuration::ApplyConfigurationParams;
pub use maintenance::{MigrateParams, RebuildParams, UpgradeParams};

/// Parameters of a [`WorkflowKind::Create`] workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateParams {
    /// Flavor of the server.
    pub flavor: Flavor,
    /// Version to run.
    pub datastore_version: DatastoreVersion,
    /// Initial databases.
    #[serde(default)]
    pub databases: Vec<DatabaseSpec>,
    /// Initial users (passwords are scrubbed once the guest was asked to prepare).
    #[serde(default)]
    pub users: Vec<UserSpec>,
    /// Root password to set on create.
    #[serde(default)]
    pub root_password: Option<Secret>,
    /// Configuration overrides to render.
    #[serde(default)]
    pub overrides: Map<String, Value>,
    /// Placement group (source id) and policy.
    #[serde(default)]
    pub group: Option<(Uuid, Locality)>,
    /// Whether secrets were scrubbed.
    #[serde(default)]
    pub scrubbed: bool,
    /// Source to replicate from (replication is a later issue: the build fails with a clear fault).
    #[serde(default)]
    pub replica_of: Option<Uuid>,
    /// Backup to restore from (restore is a later issue: the build fails with a clear fault).
    #[serde(default)]
    pub restore_point: Option<Uuid>,
}

/// Parameters of a [`WorkflowKind::ResizeFlavor`] workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResizeFlavorParams {
    /// The flavor before.
    pub old_flavor: Flavor,
    /// The flavor after.
    pub new_flavor: Flavor,
}

/// Parameters of a [`WorkflowKind::ResizeVolume`] workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeVolumeParams {
    /// Size before, GB.
    pub old_size: u32,
    /// Size after, GB.
    pub new_size: u32,
}

/// Parameters of backup workflows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupParams {
    /// The backup.
    pub backup_id: Uuid,
    /// Container the backup goes to (chosen by the API from the request or the backup strategies).
    #[serde(default)]
    pub container: Option<String>,
}

/// Settings of one task-manager worker.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskManagerConfig {
    /// Worker id used for claims; unique per task-manager process.
    pub worker_id: String,
    /// How often open workflows are scanned (resumption after crashes, lost casts).
    pub scan_interval: Duration,
    /// How often store state is polled while waiting (guest status).
    pub poll_interval: Duration,
    /// Crash injection for tests: the worker aborts instead of performing its N-th journal write (1-based), and
    /// does nothing more afterwards (as if its process died).
    pub crash_before_journal_write: Option<usize>,
}

impl Default for TaskManagerConfig {
    fn default() -> Self {
        TaskManagerConfig {
            worker_id: format!("taskmanager-{}", Uuid::new_v4()),
            scan_interval: Duration::from_secs(1),
            poll_interval: Duration::from_millis(50),
            crash_before_journal_write: None,
        }
    }
}

/// Why a workflow run stopped early.
#[derive(Debug)]
enum Stop {
    /// The worker lost the workflow (lease, closed) or crashed: do nothing more.
    Abort(String),
    /// The workflow failed: record it.
    Fail(Failure),
}

#[derive(Debug)]
struct Failure {
    task: Option<TaskStatus>,
    service: Option<ServiceStatus>,
    message: String,
    details: String,
}

impl Failure {
    fn new(task: Option<TaskStatus>, message: impl Into<String>, err: &Error) -> Failure {
        Failure {
            task,
            service: None,
            message: message.into(),
            details: err.to_string(),
        }
    }
}

type StepResult<T> = std::result::Result<T, Stop>;

fn abort_on_store(e: Error) -> Stop {
    Stop::Abort(format!("store error: {e}"))
}

/// Runs workflows. Build with [`TaskManager::new`], then [`TaskManager::run`] it until shutdown.
pub struct TaskManager {
    inner: Arc<Inner>,
}

struct Inner {
    store: DynStore,
    bus: DynBus,
    compute: DynCompute,
    storage: DynBlockStorage,
    clock: DynClock,
    config: CoreConfig,
    tm: TaskManagerConfig,
    journal_writes: AtomicUsize,
    crashed: AtomicBool,
    running: Mutex<HashSet<Uuid>>,
}

impl std::fmt::Debug for TaskManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskManager")
            .field("worker_id", &self.inner.tm.worker_id)
            .finish()
    }
}

impl TaskManager {
    /// A task manager over the given ports.
    pub fn new(
        store: DynStore,
        bus: DynBus,
        compute: DynCompute,
        storage: DynBlockStorage,
        clock: DynClock,
        config: CoreConfig,
        tm: TaskManagerConfig,
    ) -> TaskManager {
        TaskManager {
            inner: Arc::new(Inner {
                store,
                bus,
                compute,
                storage,
                clock,
                config,
                tm,
                journal_writes: AtomicUsize::new(0),
                crashed: AtomicBool::new(false),
                running: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Whether crash injection stopped this worker.
    pub fn crashed(&self) -> bool {
        self.inner.crashed.load(Ordering::SeqCst)
    }

    /// Workflows this worker is running now.
    pub fn running(&self) -> usize {
        self.inner.running_set().len()
    }

    /// Serves the `taskmanager` topic and scans open workflows until `shutdown` turns true (or the worker
    /// crashed by injection). Workflows still running at shutdown are abandoned; their lease expires and another
    /// worker resumes them.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let mut sub = self.inner.bus.subscribe(TASKMANAGER_TOPIC).await?;
        let (tx, mut rx) = mpsc::channel::<Uuid>(256);
        let listener = tokio::spawn(async move {
            loop {
                match sub.next().await {
                    Ok(Some(d)) => {
                        let id = match Envelope::<TaskManagerRequest>::decode(&d.body) {
                            Ok(env) => match env.body {
                                TaskManagerRequest::RunWorkflow { workflow_id } => {
                                    Some(workflow_id)
                                }
                            },
                            Err(e) => {
                                tracing::warn!(error = %e, "dropping undecodable task manager message");
                                None
                            }
                        };
                        // The workflow is durable in the store, so the message can be settled at once.
                        if let Err(e) = d.ack().await {
                            tracing::warn!(error = %e, "could not ack a task manager message");
                        }
                        if let Some(id) = id {
                            if tx.send(id).await.is_err() {
                                break;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "task manager subscription failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        let mut tasks = tokio::task::JoinSet::new();
        let mut scan = tokio::time::interval(self.inner.tm.scan_interval);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.crashed() || *shutdown.borrow() {
                break;
            }
            tokio::select! {
                r = shutdown.changed() => if r.is_err() { break },
                id = rx.recv() => match id {
                    Some(id) => self.spawn(&mut tasks, id),
                    None => break,
                },
                _ = scan.tick() => {
                    match self.claimable().await {
                        Ok(ids) => for id in ids { self.spawn(&mut tasks, id) },
                        Err(e) => tracing::warn!(error = %e, "workflow scan failed"),
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        listener.abort();
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        self.inner.running_set().clear();
        Ok(())
    }

    fn spawn(&self, tasks: &mut tokio::task::JoinSet<()>, id: Uuid) {
        if !self.inner.running_set().insert(id) {
            return;
        }
        let inner = self.inner.clone();
        tasks.spawn(async move {
            if let Err(e) = inner.execute(id).await {
                tracing::warn!(workflow = %id, error = %e, "workflow run failed");
            }
            inner.running_set().remove(&id);
        });
    }

    /// Open workflows this worker may claim now.
    async fn claimable(&self) -> Result<Vec<Uuid>> {
        let now = self.inner.clock.now();
        let ids = self.inner.store.list_open_workflows().await?;
        Ok(ids
            .into_iter()
            .filter(|w| crate::ports::workflow_claimable(w, &self.inner.tm.worker_id, now))
            .map(|w| w.id)
            .collect())
    }

    /// Claims and runs one workflow to its end in the calling task (tests, embedders driving work by hand).
    /// Answers `Ok(false)` when the workflow could not be claimed.
    pub async fn run_workflow(&self, id: Uuid) -> Result<bool> {
        if !self.inner.running_set().insert(id) {
            return Ok(false);
        }
        let r = self.inner.execute(id).await;
        self.inner.running_set().remove(&id);
        r
    }

    /// Runs every workflow that is claimable now, one after another; answers how many were run.
    pub async fn run_pending(&self) -> Result<usize> {
        let mut n = 0;
        for id in self.claimable().await? {
            if self.crashed() {
                break;
            }
            if self.run_workflow(id).await? {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// What a running workflow carries around.
struct Run {
    wf: Workflow,
    journal: Vec<JournalEntry>,
}

impl Run {
    fn completed(&self, step: &str) -> Option<&Value> {
        self.journal
            .iter()
            .rev()
            .find(|e| e.step == step && e.phase == JournalPhase::Completed)
            .map(|e| &e.data)
    }
    fn started(&self, step: &str) -> Option<&Value> {
        self.journal
            .iter()
            .find(|e| e.step == step && e.phase == JournalPhase::Started)
            .map(|e| &e.data)
    }
}

fn params<T: DeserializeOwned>(wf: &Workflow) -> StepResult<T> {
    serde_json::from_value(wf.params.clone()).map_err(|e| {
        Stop::Fail(Failure {
            task: None,
            service: None,
            message: "The workflow's parameters are unreadable.".into(),
            details: e.to_string(),
        })
    })
}

impl Inner {
    fn running_set(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lease(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let now = self.clock.now();
        let lease = chrono::Duration::from_std(self.config.workflow_lease)
            .unwrap_or(chrono::Duration::seconds(30));
        (now, now + lease)
    }

    fn check_alive(&self) -> StepResult<()> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(Stop::Abort("worker crashed (injected)".into()));
        }
        Ok(())
    }

    fn guest(&self, instance_id: Uuid) -> GuestClient {
        GuestClient::new(
            self.bus.clone(),
            instance_id,
            "taskmanager",
            GuestTimeouts {
                low: self.config.agent_call_low_timeout,
                high: self.config.agent_call_high_timeout,
            },
        )
    }

    /// Renews the lease (and checks the workflow is still ours and open).
    async fn renew(&self, run: &mut Run) -> StepResult<()> {
        self.check_alive()?;
        let (now, until) = self.lease();
        match self
            .store
            .claim_workflow(run.wf.id, &self.tm.worker_id, now, until)
            .await
        {
            Ok(Some(wf)) => {
                run.wf = wf;
                Ok(())
            }
            Ok(None) => Err(Stop::Abort(
                "lost the workflow (lease taken or workflow closed)".into(),
            )),
            Err(e) => Err(abort_on_store(e)),
        }
    }

    async fn journal(
        &self,
        run: &mut Run,
        step: &str,
        phase: JournalPhase,
        data: Value,
    ) -> StepResult<()> {
        self.check_alive()?;
        let n = self.journal_writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.tm.crash_before_journal_write == Some(n) {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(Stop::Abort(format!(
                "injected crash before journal write {n}"
            )));
        }
        let entry = JournalEntry {
            workflow_id: run.wf.id,
            step: step.into(),
            phase,
            data,
            at: self.clock.now(),
        };
        self.store
            .append_journal(&entry)
            .await
            .map_err(abort_on_store)?;
        run.journal.push(entry);
        Ok(())
    }

    /// Commits a change of the instance (and optional extra writes) fenced by the workflow row; `wf_change`
    /// may change the workflow too (state, params).
    async fn update(
        &self,
        run: &mut Run,
        mut change: impl FnMut(&mut Instance, &mut Workflow, &mut Vec<Write>),
    ) -> StepResult<Instance> {
        for _ in 0..5 {
            self.check_alive()?;
            let inst = self
                .store
                .get_instance(run.wf.instance_id)
                .await
                .map_err(abort_on_store)?
                .ok_or_else(|| Stop::Abort(format!("instance {} vanished", run.wf.instance_id)))?;
            let mut new_inst = inst.clone();
            let mut new_wf = run.wf.clone();
            let mut extra = Vec::new();
            change(&mut new_inst, &mut new_wf, &mut extra);
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
                    expect: Expect::Version(run.wf.version),
                });
            for w in extra {
                cs.push(w);
            }
            match self.store.commit(cs).await {
                Ok(()) => {
                    new_wf.version = run.wf.version + 1;
                    run.wf = new_wf;
                    new_inst.version = inst.version + 1;
                    return Ok(new_inst);
                }
                Err(Error::Conflict { .. }) => {
                    // Someone changed the instance or the workflow: re-read the workflow and try again if it is
                    // still ours.
                    match self
                        .store
                        .get_workflow(run.wf.id)
                        .await
                        .map_err(abort_on_store)?
                    {
                        Some(w)
                            if w.state.is_open()
                                && w.owner.as_deref() == Some(self.tm.worker_id.as_str()) =>
                        {
                            run.wf = w;
                        }
                        _ => return Err(Stop::Abort("workflow closed or taken over".into())),
                    }
                }
                Err(e) => return Err(abort_on_store(e)),
            }
        }
        Err(Stop::Abort("too many concurrent changes".into()))
    }

    /// Runs a journaled step: skipped when completed before, otherwise `Started`, the side effect, `Completed`
    /// with the effect's data.
    async fn step<F, Fut>(&self, run: &mut Run, name: &str, effect: F) -> StepResult<Value>
    where
        F: FnOnce(Option<Value>) -> Fut,
        Fut: std::future::Future<Output = StepResult<Value>>,
    {
        if let Some(data) = run.completed(name) {
            return Ok(data.clone());
        }
        self.renew(run).await?;
        let started = run.started(name).cloned();
        let start_data = match &started {
            Some(d) => d.clone(),
            None => json!({ "at": self.clock.now() }),
        };
        // On a resumed run the side effect may or may not have happened; steps are idempotent, so it is simply
        // done again (journaled again, keeping the first start time).
        self.journal(run, name, JournalPhase::Started, start_data.clone())
            .await?;
        let data = effect(Some(start_data)).await?;
        self.journal(run, name, JournalPhase::Completed, data.clone())
            .await?;
        Ok(data)
    }

    /// Claims and runs one workflow. `Ok(false)`: not claimable.
    async fn execute(&self, id: Uuid) -> Result<bool> {
        if self.crashed.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let (now, until) = self.lease();
        let Some(wf) = self
            .store
            .claim_workflow(id, &self.tm.worker_id, now, until)
            .await?
        else {
            return Ok(false);
        };
        let journal = self.store.journal(id).await?;
        let mut run = Run { wf, journal };
        tracing::info!(workflow = %id, kind = ?run.wf.kind, instance = %run.wf.instance_id, attempt = run.wf.attempts,
            "running workflow");
        let result = self.dispatch(&mut run).await;
        match result {
            Ok(()) => Ok(true),
            Err(Stop::Abort(why)) => {
                tracing::info!(workflow = %id, reason = %why, "workflow run stopped");
                Ok(true)
            }
            Err(Stop::Fail(f)) => {
                tracing::warn!(workflow = %id, message = %f.message, "workflow failed");
                match self.fail(&mut run, f).await {
                    Ok(()) | Err(Stop::Abort(_)) => Ok(true),
                    Err(Stop::Fail(f)) => Err(Error::backend("taskmanager", f.message, true)),
                }
            }
        }
    }

    async fn dispatch(&self, run: &mut Run) -> StepResult<()> {
        if run.wf.state == WorkflowState::Pending {
            self.update(run, |_, wf, _| wf.state = WorkflowState::Running)
                .await?;
        }
        match run.wf.kind {
            WorkflowKind::Create => self.create(run).await,
            WorkflowKind::Delete => self.delete(run, false).await,
            WorkflowKind::ForceDelete => self.delete(run, true).await,
            WorkflowKind::Restart => self.restart(run, false).await,
            WorkflowKind::Reboot => self.restart(run, true).await,
            WorkflowKind::ResizeFlavor => self.resize_flavor(run).await,
            WorkflowKind::ResizeVolume => self.resize_volume(run).await,
            WorkflowKind::Backup | WorkflowKind::DeleteBackup => Err(self.not_yet(
                run,
                "Taking and deleting backups is not implemented by this deployment yet.",
            )),
            WorkflowKind::ApplyConfiguration => self.apply_configuration(run).await,
            WorkflowKind::Promote => Err(self.not_yet(
                run,
                "Replica promotion is not implemented by this deployment yet.",
            )),
            WorkflowKind::Eject => Err(self.not_yet(
                run,
                "Replica source ejection is not implemented by this deployment yet.",
            )),
            WorkflowKind::Detach => Err(self.not_yet(
                run,
                "Replica detach is not implemented by this deployment yet.",
            )),
            WorkflowKind::Upgrade => self.upgrade(run).await,
            WorkflowKind::Migrate => self.migrate(run).await,
            WorkflowKind::Rebuild => self.rebuild(run).await,
        }
    }

    fn not_yet(&self, run: &Run, message: &str) -> Stop {
        let task = match run.wf.kind {
            WorkflowKind::Promote => Some(TaskStatus::PromotionError),
            WorkflowKind::Eject => Some(TaskStatus::EjectionError),
            WorkflowKind::Detach => Some(TaskStatus::None),
            // Backups and configuration applies never changed the task: leave it alone.
            _ => None,
        };
        Stop::Fail(Failure {
            task,
            service: None,
            message: message.into(),
            details: format!(
                "workflow {} ({:?}) has no implementation",
                run.wf.id, run.wf.kind
            ),
        })
    }

    /// Records a failure: the instance gets the error task and fault, the workflow is closed as failed.
    async fn fail(&self, run: &mut Run, f: Failure) -> StepResult<()> {
        let now = self.clock.now();
        let instance_id = run.wf.instance_id;
        let backup_id = match run.wf.kind {
            WorkflowKind::Backup | WorkflowKind::DeleteBackup => {
                serde_json::from_value::<BackupParams>(run.wf.params.clone())
                    .ok()
                    .map(|p| p.backup_id)
            }
            _ => None,
        };
        let backup: Option<Backup> = match backup_id {
            Some(b) => self.store.get_backup(b).await.map_err(abort_on_store)?,
            None => None,
        };
        let service = f.service;
        let task = f.task;
        let fault = InstanceFault {
            message: f.message.clone(),
            details: f.details.clone(),
            created: now,
        };
        self.update(run, |inst, wf, extra| {
            if let Some(t) = task {
                inst.task = t;
            }
            inst.fault = Some(fault.clone());
            wf.state = WorkflowState::Failed;
            wf.owner = None;
            wf.lease_until = None;
            if let Some(s) = service {
                extra.push(Write::ServiceStatus(ServiceStatusRecord {
                    instance_id,
                    status: s,
                    reason: Some(fault.message.clone()),
                    volume: None,
                    updated_at: now,
                }));
            }
            if let Some(b) = &backup {
                let mut b = b.clone();
                if b.state.is_running() {
                    b.state = BackupState::Failed;
                    b.updated = now;
                    extra.push(Write::Backup(b));
                }
            }
            scrub(wf);
        })
        .await?;
        Ok(())
    }

    /// Closes the workflow successfully with a last change of the instance.
    async fn finish(
        &self,
        run: &mut Run,
        change: impl Fn(&mut Instance, &mut Vec<Write>),
    ) -> StepResult<Instance> {
        self.update(run, |inst, wf, extra| {
            change(inst, extra);
            wf.state = WorkflowState::Done;
            wf.owner = None;
            wf.lease_until = None;
            scrub(wf);
        })
        .await
    }

    /// Waits until the guest reports a running datastore (a report newer than `since`), or fails at the deadline.
    async fn wait_healthy(
        &self,
        run: &mut Run,
        since: DateTime<Utc>,
        deadline: DateTime<Utc>,
        on_timeout: TaskStatus,
    ) -> StepResult<ServiceStatusRecord> {
        let instance_id = run.wf.instance_id;
        let mut last_renew = self.clock.now();
        loop {
            self.check_alive()?;
            let st = self
                .store
                .get_service_status(instance_id)
                .await
                .map_err(abort_on_store)?;
            if let Some(st) = &st {
                if st.updated_at >= since && st.status.is_build_success() {
                    return Ok(st.clone());
                }
                if st.updated_at >= since && st.status == ServiceStatus::Failed {
                    return Err(Stop::Fail(Failure {
                        task: Some(if on_timeout == TaskStatus::BuildingErrorTimeoutGa {
                            TaskStatus::BuildingErrorServer
                        } else {
                            on_timeout
                        }),
                        service: None,
                        message: "The guest failed to start the datastore.".into(),
                        details: st
                            .reason
                            .clone()
                            .unwrap_or_else(|| "no reason reported".into()),
                    }));
                }
            }
            let now = self.clock.now();
            if now >= deadline {
                return Err(Stop::Fail(Failure {
                    task: Some(on_timeout),
                    service: Some(ServiceStatus::FailedTimeoutGuestagent),
                    message: "The guest agent did not report a running datastore in time.".into(),
                    details: format!(
                        "no healthy report from guest {instance_id} by {deadline} (last status: {})",
                        st.map_or("none".to_string(), |s| s.status.description().to_string())
                    ),
                }));
            }
            if (now - last_renew).to_std().unwrap_or_default() * 3 >= self.config.workflow_lease {
                self.renew(run).await?;
                last_renew = now;
            }
            tokio::time::sleep(self.tm.poll_interval).await;
        }
    }

    fn deadline_from(
        &self,
        start: &Option<Value>,
        timeout: Duration,
    ) -> (DateTime<Utc>, DateTime<Utc>) {
        let at = start
            .as_ref()
            .and_then(|d| d.get("at"))
            .and_then(|v| serde_json::from_value::<DateTime<Utc>>(v.clone()).ok())
            .unwrap_or_else(|| self.clock.now());
        let t = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        (
            at,
            at.checked_add_signed(t).unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }

    // ------------------------------------------------------------------ create

    async fn create(&self, run: &mut Run) -> StepResult<()> {
        let p: CreateParams = params(&run.wf)?;
        let instance_id = run.wf.instance_id;
        if p.replica_of.is_some() {
            return Err(Stop::Fail(Failure {
                task: Some(TaskStatus::BuildingErrorReplica),
                service: None,
                message: "Creating replicas is not implemented by this deployment yet.".into(),
                details: format!("replica of {:?} requested", p.replica_of),
            }));
        }
        if p.restore_point.is_some() {
            return Err(Stop::Fail(Failure {
                task: Some(TaskStatus::BuildingErrorServer),
                service: None,
                message: "Restoring from a backup is not implemented by this deployment yet."
                    .into(),
                details: format!("restore from backup {:?} requested", p.restore_point),
            }));
        }
        let inst = self
            .store
            .get_instance(instance_id)
            .await
            .map_err(abort_on_store)?
            .ok_or_else(|| Stop::Abort("instance vanished".into()))?;

        // 1. volume
        let volume_path = match (self.config.volume_support, inst.volume_size) {
            (true, Some(size)) => {
                let storage = self.storage.clone();
                let vtype = inst.volume_type.clone();
                let data = self
                    .step(run, "volume", |_| async move {
                        let v = storage
                            .create_volume(instance_id, size, vtype.as_deref())
                            .await
                            .map_err(|e| {
                                Stop::Fail(Failure::new(
                                    Some(TaskStatus::BuildingErrorVolume),
                                    "The volume could not be created.",
                                    &e,
                                ))
                            })?;
                        Ok(json!({ "volume_id": v.id, "path": v.path }))
                    })
                    .await?;
                let vid = data
                    .get("volume_id")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if inst.volume_id != vid {
                    self.update(run, |i, _, _| i.volume_id = vid.clone())
                        .await?;
                }
                data.get("path")
                    .and_then(|p| serde_json::from_value(p.clone()).ok())
            }
            _ => None,
        };

        // 2. server (compute launches the guest)
        let spec = ServerSpec {
            instance_id,
            name: inst.name.clone(),
            flavor: p.flavor.clone(),
            datastore_version: p.datastore_version.clone(),
            volume_path,
            group: p.group,
            availability_zone: inst.availability_zone.clone(),
        };
        let compute = self.compute.clone();
        let spec_again = spec.clone();
        let data = self
            .step(run, "server", |_| async move {
                let s = compute.create_server(&spec).await.map_err(|e| {
                    Stop::Fail(Failure::new(
                        Some(TaskStatus::BuildingErrorServer),
                        "The server could not be created.",
                        &e,
                    ))
                })?;
                Ok(serde_json::to_value(&s).unwrap_or(Value::Null))
            })
            .await?;
        let server: Option<crate::ports::Server> = serde_json::from_value(data).ok();
        if let Some(server) = server {
            let current = self
                .store
                .get_instance(instance_id)
                .await
                .map_err(abort_on_store)?;
            if current.as_ref().and_then(|i| i.server_id.as_ref()) != Some(&server.id) {
                self.update(run, |i, _, _| {
                    i.server_id = Some(server.id.clone());
                    i.host = Some(server.host.clone());
                    i.addresses = server.addresses.clone();
                    i.port = server.port;
                    i.server_status = server.status;
                })
                .await?;
            }
        }

        // 3. prepare (cast: the guest may not serve its topic yet; the message waits for it)
        let guest = self.guest(instance_id);
        let req = PrepareRequest {
            memory_mb: p.flavor.ram_mb,
            volume_size_gb: inst.volume_size,
            databases: p.databases.clone(),
            users: p.users.clone(),
            root_password: p.root_password.clone(),
            overrides: p.overrides.clone(),
        };
        let scrubbed = p.scrubbed;
        let compute = self.compute.clone();
        self.step(run, "prepare", |_| async move {
            // Make sure the guest runs: after a restart of the whole process the server step is done but its guest
            // may be gone; create_server is idempotent and (re)launches the guest.
            compute.create_server(&spec_again).await.map_err(|e| {
                Stop::Fail(Failure::new(
                    Some(TaskStatus::BuildingErrorServer),
                    "The server could not be found or started again.",
                    &e,
                ))
            })?;
            if scrubbed {
                return Err(Stop::Fail(Failure {
                    task: Some(TaskStatus::BuildingErrorServer),
                    service: None,
                    message: "The build cannot be resumed: its secrets were already discarded."
                        .into(),
                    details: "prepare must be re-sent but the workflow's passwords were scrubbed"
                        .into(),
                }));
            }
            guest.prepare(req).await.map_err(|e| {
                Stop::Fail(Failure::new(
                    Some(TaskStatus::BuildingErrorServer),
                    "The guest could not be asked to prepare.",
                    &e,
                ))
            })?;
            Ok(json!({}))
        })
        .await?;
        if !scrubbed {
            // The guest has the secrets now; they are not needed any more.
            self.update(run, |_, wf, _| scrub(wf)).await?;
        }

        // 4. wait for HEALTHY
        let start = run.started("prepare").cloned();
        let (since, deadline) = self.deadline_from(&start, self.config.usage_timeout);
        if run.completed("wait_healthy").is_none() {
            self.renew(run).await?;
            if run.started("wait_healthy").is_none() {
                self.journal(
                    run,
                    "wait_healthy",
                    JournalPhase::Started,
                    json!({ "deadline": deadline }),
                )
                .await?;
            }
            let st = self
                .wait_healthy(run, since, deadline, TaskStatus::BuildingErrorTimeoutGa)
                .await?;
            self.journal(
                run,
                "wait_healthy",
                JournalPhase::Completed,
                json!({ "status": st.status }),
            )
            .await?;
        }

        // 5. done
        self.finish(run, |i, _| {
            i.task = TaskStatus::None;
            i.server_status = ServerStatus::Active;
            i.fault = None;
        })
        .await?;
        Ok(())
    }

    // ------------------------------------------------------------------ delete

    async fn delete(&self, run: &mut Run, force: bool) -> StepResult<()> {
        let instance_id = run.wf.instance_id;
        if !force {
            let guest = self.guest(instance_id);
            let compute = self.compute.clone();
            self.step(run, "stop_db", |_| async move {
                let has_server = matches!(compute.get_server(instance_id).await, Ok(Some(_)));
                if has_server {
                    if let Err(e) = guest.stop_db(guest.low()).await {
                        tracing::info!(instance = %instance_id, error = %e, "stop_db before delete failed; continuing");
                        return Ok(json!({ "stopped": false }));
                    }
                    return Ok(json!({ "stopped": true }));
                }
                Ok(json!({ "stopped": false, "server": null }))
            })
            .await?;
        }
        let compute = self.compute.clone();
        self.step(run, "delete_server", |_| async move {
            retry(|| compute.delete_server(instance_id))
                .await
                .map_err(|e| {
                    Stop::Fail(Failure::new(
                        Some(TaskStatus::None),
                        "The server could not be deleted.",
                        &e,
                    ))
                })?;
            Ok(json!({}))
        })
        .await?;
        let storage = self.storage.clone();
        self.step(run, "delete_volume", |_| async move {
            let vid = storage
                .get_volume(instance_id)
                .await
                .ok()
                .flatten()
                .map(|v| v.id);
            retry(|| storage.delete_volume(instance_id))
                .await
                .map_err(|e| {
                    Stop::Fail(Failure::new(
                        Some(TaskStatus::None),
                        "The volume could not be deleted.",
                        &e,
                    ))
                })?;
            Ok(json!({ "volume_id": vid }))
        })
        .await?;
        let bus = self.bus.clone();
        self.step(run, "delete_topic", |_| async move {
            if let Err(e) = bus.delete_topic(&guest_topic(instance_id)).await {
                tracing::info!(instance = %instance_id, error = %e, "could not delete the guest topic");
            }
            Ok(json!({}))
        })
        .await?;
        let now = self.clock.now();
        self.renew(run).await?;
        self.journal(
            run,
            "mark_deleted",
            JournalPhase::Started,
            json!({ "at": now }),
        )
        .await?;
        self.finish(run, |i, extra| {
            i.deleted = true;
            i.deleted_at = Some(now);
            i.task = TaskStatus::None;
            i.server_status = ServerStatus::Deleted;
            i.configuration_id = None;
            i.server_id = None;
            i.volume_id = None;
            extra.push(Write::ServiceStatus(ServiceStatusRecord {
                instance_id,
                status: ServiceStatus::Deleted,
                reason: None,
                volume: None,
                updated_at: now,
            }));
        })
        .await?;
        // The workflow is closed; the last journal line is informational.
        if let Err(e) = self
            .store
            .append_journal(&JournalEntry {
                workflow_id: run.wf.id,
                step: "mark_deleted".into(),
                phase: JournalPhase::Completed,
                data: json!({}),
                at: now,
            })
            .await
        {
            tracing::debug!(error = %e, "could not journal the end of a delete");
        }
        Ok(())
    }

    // ------------------------------------------------------------------ restart / reboot

    async fn restart(&self, run: &mut Run, reboot: bool) -> StepResult<()> {
        let instance_id = run.wf.instance_id;
        let guest = self.guest(instance_id);
        let compute = self.compute.clone();
        let start = self
            .step(
                run,
                if reboot { "reboot" } else { "restart" },
                |start| async move {
                    let r = if reboot {
                        compute.reboot_server(instance_id).await
                    } else {
                        guest.restart().await
                    };
                    r.map_err(|e| {
                        Stop::Fail(Failure::new(
                            Some(TaskStatus::None),
                            "The restart failed.",
                            &e,
                        ))
                    })?;
                    Ok(start.unwrap_or(Value::Null))
                },
            )
            .await?;
        let (since, deadline) =
            self.deadline_from(&Some(start), self.config.agent_call_high_timeout);
        self.wait_healthy(run, since, deadline, TaskStatus::None)
            .await?;
        self.finish(run, |i, _| {
            i.task = TaskStatus::None;
            i.server_status = ServerStatus::Active;
        })
        .await?;
        Ok(())
    }

    // ------------------------------------------------------------------ resize

    async fn resize_flavor(&self, run: &mut Run) -> StepResult<()> {
        let p: ResizeFlavorParams = params(&run.wf)?;
        let instance_id = run.wf.instance_id;
        let old = p.old_flavor.clone();
        let revert = move |f: &Error, what: &str| {
            Stop::Fail(Failure::new(
                Some(TaskStatus::None),
                format!("Resizing to the new flavor failed ({what})."),
                f,
            ))
        };
        let compute = self.compute.clone();
        let new = p.new_flavor.clone();
        let r = self
            .step(run, "resize_server", |_| async move {
                compute
                    .resize_server(instance_id, &new)
                    .await
                    .map_err(|e| revert(&e, "server"))?;
                Ok(json!({ "flavor": new.id }))
            })
            .await;
        if let Err(Stop::Fail(f)) = r {
            // Nothing changed: give the reserved RAM back.
            self.update(run, |i, _, _| i.ram_mb = old.ram_mb).await?;
            return Err(Stop::Fail(f));
        }
        r?;
        let guest = self.guest(instance_id);
        let mem = p.new_flavor.ram_mb;
        let start = self
            .step(run, "apply_flavor", |start| async move {
                guest.apply_flavor(mem).await.map_err(|e| {
                    Stop::Fail(Failure::new(
                        Some(TaskStatus::None),
                        "The guest could not apply the new flavor.",
                        &e,
                    ))
                })?;
                Ok(start.unwrap_or(Value::Null))
            })
            .await;
        let new = p.new_flavor.clone();
        let start = match start {
            Ok(s) => s,
            Err(Stop::Fail(f)) => {
                // The server has the new flavor: record it so the instance tells the truth.
                let n = new.clone();
                self.update(run, |i, _, _| {
                    i.flavor_id = n.id.clone();
                    i.ram_mb = n.ram_mb;
                })
                .await?;
                return Err(Stop::Fail(f));
            }
            Err(e) => return Err(e),
        };
        let (since, deadline) =
            self.deadline_from(&Some(start), self.config.agent_call_high_timeout);
        let waited = self
            .wait_healthy(run, since, deadline, TaskStatus::None)
            .await;
        self.finish(run, |i, _| {
            i.task = TaskStatus::None;
            i.flavor_id = new.id.clone();
            i.ram_mb = new.ram_mb;
            i.server_status = ServerStatus::Active;
        })
        .await?;
        if let Err(Stop::Fail(f)) = waited {
            tracing::warn!(instance = %instance_id, message = %f.message, "guest slow to report after a resize");
        }
        Ok(())
    }

    async fn resize_volume(&self, run: &mut Run) -> StepResult<()> {
        let p: ResizeVolumeParams = params(&run.wf)?;
        let instance_id = run.wf.instance_id;
        let storage = self.storage.clone();
        let r = self
            .step(run, "grow_volume", |_| async move {
                if let Ok(Some(v)) = storage.get_volume(instance_id).await {
                    if v.size_gb >= p.new_size {
                        return Ok(json!({ "volume_id": v.id, "size": v.size_gb }));
                    }
                }
                let v = storage
                    .grow_volume(instance_id, p.new_size)
                    .await
                    .map_err(|e| {
                        Stop::Fail(Failure::new(
                            Some(TaskStatus::None),
                            "The volume could not be grown.",
                            &e,
                        ))
                    })?;
                Ok(json!({ "volume_id": v.id, "size": v.size_gb }))
            })
            .await;
        if let Err(Stop::Fail(f)) = r {
            self.update(run, |i, _, _| i.volume_size = Some(p.old_size))
                .await?;
            return Err(Stop::Fail(f));
        }
        r?;
        let guest = self.guest(instance_id);
        let r = self
            .step(run, "resize_fs", |_| async move {
                guest.resize_fs(p.new_size).await.map_err(|e| {
                    Stop::Fail(Failure::new(
                        Some(TaskStatus::None),
                        "The guest could not grow its filesystem.",
                        &e,
                    ))
                })?;
                Ok(json!({}))
            })
            .await;
        if let Err(Stop::Fail(f)) = r {
            return Err(Stop::Fail(f));
        }
        r?;
        self.finish(run, |i, _| {
            i.task = TaskStatus::None;
            i.volume_size = Some(p.new_size);
        })
        .await?;
        Ok(())
    }
}

/// Removes secrets from a workflow's parameters (user passwords, root password).
pub fn scrub(wf: &mut Workflow) {
    if wf.kind != WorkflowKind::Create {
        return;
    }
    if let Value::Object(m) = &mut wf.params {
        if let Some(Value::Array(users)) = m.get_mut("users") {
            for u in users.iter_mut() {
                if let Value::Object(u) = u {
                    u.insert("password".into(), Value::String(String::new()));
                }
            }
        }
        m.insert("root_password".into(), Value::Null);
        m.insert("scrubbed".into(), Value::Bool(true));
    }
}

async fn retry<F, Fut>(mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut last = None;
    for attempt in 0..3u32 {
        match f().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt + 1))).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::backend("taskmanager", "retries exhausted", true)))
}
