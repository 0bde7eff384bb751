//! The task manager: runs durable, resumable workflows.
//!
//! A workflow is inserted by the [`crate::api::ApiService`] in the same commit as the state change that asked
//! for it, then cast to the `taskmanager` topic. Any task manager may run it: it claims the workflow with a lease
//! ([`InfraStore::claim_workflow`](crate::ports::InfraStore::claim_workflow)), renews the lease while it works,
//! and journals every step before (`Started`) and after (`Completed`) its side effect. Every step is idempotent,
//! so a task manager that finds an unfinished workflow (a periodic scan of
//! [`InfraStore::list_open_workflows`](crate::ports::InfraStore::list_open_workflows) picks up workflows whose
//! lease expired, e.g. because their worker crashed) simply runs it again from the first step not completed.
//!
//! Every write to an instance is fenced by the workflow row: it is committed together with the workflow at its
//! current version, so a worker that lost its lease (or whose workflow was closed by `reset_status`) can no
//! longer change anything.
//!
//! Workflow kinds are types ([`WorkflowDef`]) found through a [`Registry`]; the engine knows none by name. The
//! shipped workflows are in [`workflows`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::config::CoreConfig;
use crate::error::Result;
use crate::ports::{DynBlockStorage, DynBus, DynClock, DynCompute, DynStore};
use crate::rpc::{Envelope, TaskManagerRequest, TASKMANAGER_TOPIC};

mod cluster_health;
mod context;
mod engine;
mod failover;
mod registry;
mod scaling;
mod schedules;
pub mod workflows;

pub use context::{
    Failure, StepContext, StepResult, StepStart, Stop, WaitHealthy, GUEST_IDLE_REPORTS, MAX_ASKS,
};
pub use registry::{Registry, WorkflowDef};
pub use workflows::{
    ApplyConfigurationParams, BackupParams, CreateParams, DeleteParams, DetachParams, EjectParams,
    ForceDeleteParams, MigrateParams, PromoteParams, RebootParams, RebuildParams,
    ResizeFlavorParams, ResizeVolumeParams, RestartParams, UpgradeParams,
};

use engine::Engine;

/// How often the objects of deleted and failed backups are looked for.
const PURGE_EVERY_SECS: i64 = 10;

/// Settings of one task-manager worker.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskManagerConfig {
    /// Worker id used for claims; unique per task-manager process.
    pub worker_id: String,
    /// How often open workflows are scanned (resumption after crashes, lost casts).
    pub scan_interval: Duration,
    /// How often store state is polled while waiting (guest status).
    pub poll_interval: Duration,
}

impl Default for TaskManagerConfig {
    fn default() -> Self {
        TaskManagerConfig {
            worker_id: format!("taskmanager-{}", Uuid::new_v4()),
            scan_interval: Duration::from_secs(1),
            poll_interval: Duration::from_millis(50),
        }
    }
}

/// Runs workflows. Build with [`TaskManager::new`], then [`TaskManager::run`] it until shutdown.
pub struct TaskManager {
    engine: Arc<Engine>,
    running: Arc<Mutex<HashSet<Uuid>>>,
    /// Replication sources this worker saw reported down, since when ([`failover`]).
    suspects: Mutex<std::collections::HashMap<Uuid, chrono::DateTime<chrono::Utc>>>,
    /// Positions of healthy replication sources this worker sampled ([`failover`]).
    samples: Mutex<std::collections::HashMap<Uuid, failover::Samples>>,
    /// Clusters whose load this worker saw outside their scaling policy's band, since when ([`scaling`]).
    breaches: Mutex<std::collections::HashMap<Uuid, scaling::Breach>>,
    /// Clusters this worker saw with every member down, since when ([`cluster_health`]).
    stopped: Mutex<std::collections::HashMap<Uuid, chrono::DateTime<chrono::Utc>>>,
}

impl std::fmt::Debug for TaskManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskManager")
            .field("worker_id", &self.engine.tm.worker_id)
            .finish()
    }
}

impl TaskManager {
    /// A task manager over the given ports, running the [standard](Registry::standard) workflows.
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
            engine: Arc::new(Engine {
                store,
                bus,
                compute,
                storage,
                clock,
                config,
                tm,
                registry: Registry::standard(),
                sealing: crate::seal::Sealing::default(),
                backups: None,
            }),
            running: Arc::new(Mutex::new(HashSet::new())),
            suspects: Mutex::default(),
            samples: Mutex::default(),
            breaches: Mutex::default(),
            stopped: Mutex::default(),
        }
    }

    /// Runs the workflows of `registry` instead of the standard ones.
    pub fn with_registry(self, registry: Registry) -> TaskManager {
        let sealing = self.engine.sealing.clone();
        self.rebuilt(registry, sealing)
    }

    /// Seals with `sealing` (default: the process's own key and unsealed guest messages, see
    /// [`crate::seal::Sealing`]); the API that starts the workflows must seal with the same deployment keys.
    pub fn with_sealing(self, sealing: crate::seal::Sealing) -> TaskManager {
        let registry = self.engine.registry.clone();
        self.rebuilt(registry, sealing)
    }

    /// Removes the objects of deleted and failed backups from `store` (without one, they stay where they are).
    pub fn with_backup_store(self, store: crate::ports::DynBackupStore) -> TaskManager {
        let (registry, sealing) = (self.engine.registry.clone(), self.engine.sealing.clone());
        let mut tm = self.rebuilt(registry, sealing);
        if let Some(e) = Arc::get_mut(&mut tm.engine) {
            e.backups = Some(store);
        }
        tm
    }

    fn rebuilt(self, registry: Registry, sealing: crate::seal::Sealing) -> TaskManager {
        let e = &self.engine;
        TaskManager {
            engine: Arc::new(Engine {
                store: e.store.clone(),
                bus: e.bus.clone(),
                compute: e.compute.clone(),
                storage: e.storage.clone(),
                clock: e.clock.clone(),
                config: e.config.clone(),
                tm: e.tm.clone(),
                registry,
                sealing,
                backups: e.backups.clone(),
            }),
            running: self.running,
            suspects: self.suspects,
            samples: self.samples,
            breaches: self.breaches,
            stopped: self.stopped,
        }
    }

    /// The workflows this task manager runs.
    pub fn registry(&self) -> &Registry {
        &self.engine.registry
    }

    /// Workflows this worker is running now.
    pub fn running(&self) -> usize {
        running_set(&self.running).len()
    }

    /// Serves the `taskmanager` topic and scans open workflows until `shutdown` turns true. Workflows still
    /// running at shutdown are abandoned; their lease expires and another worker resumes them.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let mut sub = self.engine.bus.subscribe(TASKMANAGER_TOPIC).await?;
        let (tx, mut rx) = mpsc::channel::<Uuid>(256);
        let clock = self.engine.clock.clone();
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
                        clock.sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        let mut tasks = tokio::task::JoinSet::new();
        // The first scan runs at once: a restarted task manager resumes what it finds.
        let mut next_purge = self.engine.clock.now();
        let mut next_scan: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            Box::pin(std::future::ready(()));
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                r = shutdown.changed() => if r.is_err() { break },
                id = rx.recv() => match id {
                    Some(id) => self.spawn(&mut tasks, id),
                    None => break,
                },
                _ = &mut next_scan => {
                    match self.claimable().await {
                        Ok(ids) => for id in ids { self.spawn(&mut tasks, id) },
                        Err(e) => tracing::warn!(error = %e, "workflow scan failed"),
                    }
                    match self.run_due_schedules().await {
                        Ok(ids) => for id in ids { self.spawn(&mut tasks, id) },
                        Err(e) => tracing::warn!(error = %e, "backup schedule scan failed"),
                    }
                    match self.check_failovers().await {
                        Ok(ids) => for id in ids { self.spawn(&mut tasks, id) },
                        Err(e) => tracing::warn!(error = %e, "failover scan failed"),
                    }
                    match self.check_scaling().await {
                        Ok(ids) => for id in ids { self.spawn(&mut tasks, id) },
                        Err(e) => tracing::warn!(error = %e, "scaling scan failed"),
                    }
                    match self.check_cluster_stops().await {
                        Ok(ids) => for id in ids { self.spawn(&mut tasks, id) },
                        Err(e) => tracing::warn!(error = %e, "cluster stop scan failed"),
                    }
                    let now = self.engine.clock.now();
                    if now >= next_purge {
                        next_purge = now + chrono::Duration::seconds(PURGE_EVERY_SECS);
                        if let Err(e) = self.purge_backup_objects().await {
                            tracing::warn!(error = %e, "purging the objects of deleted backups failed; retrying later");
                        }
                    }
                    let clock = self.engine.clock.clone();
                    let every = self.engine.tm.scan_interval;
                    next_scan = Box::pin(async move { clock.sleep(every).await });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        listener.abort();
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        running_set(&self.running).clear();
        Ok(())
    }

    fn spawn(&self, tasks: &mut tokio::task::JoinSet<()>, id: Uuid) {
        if !running_set(&self.running).insert(id) {
            return;
        }
        let engine = self.engine.clone();
        let running = self.running.clone();
        tasks.spawn(async move {
            if let Err(e) = engine.execute(id).await {
                tracing::warn!(workflow = %id, error = %e, "workflow run failed");
            }
            running_set(&running).remove(&id);
        });
    }

    /// Removes the objects of deleted and failed backups from the backup store and records them purged; answers
    /// how many backups were purged. Nothing happens without a backup store.
    pub async fn purge_backup_objects(&self) -> Result<usize> {
        let Some(objects) = &self.engine.backups else {
            return Ok(0);
        };
        let all = self
            .engine
            .store
            .list_backups(&crate::model::BackupFilter {
                include_deleted: true,
                ..Default::default()
            })
            .await?;
        let mut n = 0;
        for mut b in all {
            let doomed = b.deleted || b.state == crate::state::BackupState::Failed;
            if !doomed || b.purged || b.state.is_running() {
                continue;
            }
            let Some(key) = workflows::backup::object_key(&b) else {
                continue;
            };
            objects.delete(&key).await?;
            objects.delete(&crate::ports::archive_key(&key)).await?;
            tracing::info!(backup = %b.id, key = %key, "removed the objects of a deleted or failed backup");
            b.purged = true;
            self.engine
                .store
                .commit(crate::ports::ChangeSet::new().with(crate::ports::Write::Backup(b)))
                .await?;
            n += 1;
        }
        Ok(n)
    }

    /// Open workflows this worker may claim now.
    async fn claimable(&self) -> Result<Vec<Uuid>> {
        let now = self.engine.clock.now();
        let ids = self.engine.store.list_open_workflows().await?;
        Ok(ids
            .into_iter()
            .filter(|w| crate::ports::workflow_claimable(w, &self.engine.tm.worker_id, now))
            .map(|w| w.id)
            .collect())
    }

    /// Claims and runs one workflow to its end in the calling task (tests, embedders driving work by hand).
    /// Answers `Ok(false)` when the workflow could not be claimed.
    pub async fn run_workflow(&self, id: Uuid) -> Result<bool> {
        if !running_set(&self.running).insert(id) {
            return Ok(false);
        }
        let r = self.engine.execute(id).await;
        running_set(&self.running).remove(&id);
        r
    }

    /// Runs every workflow that is claimable now, concurrently, to its end; answers how many were run.
    pub async fn run_pending(&self) -> Result<usize> {
        // Concurrently, as `run` does: one workflow may wait for another (a replica's seed for an earlier backup
        // of its source).
        let ids = self.claimable().await?;
        let ran = futures::future::join_all(ids.into_iter().map(|id| self.run_workflow(id))).await;
        let mut n = 0;
        for r in ran {
            if r? {
                n += 1;
            }
        }
        Ok(n)
    }
}

fn running_set(m: &Mutex<HashSet<Uuid>>) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
