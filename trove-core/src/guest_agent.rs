//! The guest agent runtime: serves `guestagent.<instance_id>`, runs each [`GuestRequest`] against a
//! [`DatastoreStrategy`], replies with an [`rpc::Reply`](crate::rpc::Reply), and heartbeats the engine's status
//! and volume usage to the conductor every `report_interval`.
//!
//! The agent reports nothing until it was asked to prepare (or served any other request, which means the control
//! plane considers it prepared, or found its engine already running when it started); while prepare runs it
//! reports BUILDING, and FAILED if prepare fails.
//!
//! [`InProcessLauncher`] is a [`GuestLauncher`] that runs one agent per instance as a tokio task, with strategies
//! from a [`StrategyFactory`]: the embedded deployment and the tests use it.

use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex};
use uuid::Uuid;

use crate::conductor::{guest_sender, GuestKeys};
use crate::error::{Error, Result};
use crate::ports::{
    BackupJob, BackupOutcome, BackupProgress, DatastoreStrategy, Delivery, DynBus, DynClock,
    GuestLauncher, GuestSpec, PrepareRequest, StrategyFactory, Subscription,
};
use crate::rpc::{
    guest_topic, ConductorClient, ConductorRequest, Envelope, GuestRequest, ReplicationRequest,
    Reply,
};
use crate::state::{BackupState, ServiceStatus};

const IDLE: u8 = 0;
const PREPARING: u8 = 1;
const SERVING: u8 = 2;

/// The reason a guest that waits to be prepared gives with its NEW reports.
pub const WAITING_TO_PREPARE: &str = "the guest is waiting to be prepared";

/// How long an agent asked to end may take before its task is aborted.
pub const AGENT_STOP_WAIT: Duration = Duration::from_secs(5);

/// The agent of one instance.
pub struct GuestAgent {
    instance_id: Uuid,
    bus: DynBus,
    clock: DynClock,
    strategy: Arc<dyn DatastoreStrategy>,
    conductor: ConductorClient,
    report_interval: Duration,
    phase: AtomicU8,
    /// Serialises heartbeats: a report's status is read only after the previous report was sent, so the
    /// conductor's "newest report wins" never keeps a stale status.
    reporting: Mutex<()>,
    /// Where published guest logs go (`None`: publishing is refused).
    log_store: Option<crate::guest_log::LogStore>,
    /// Opens sealed requests and seals their replies (from the guest's key).
    seal: Option<crate::seal::Sealer>,
    /// The backup running in the background, if any.
    backup: std::sync::Mutex<Option<(Uuid, tokio::task::JoinHandle<()>)>>,
}

impl std::fmt::Debug for GuestAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestAgent")
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

impl GuestAgent {
    /// An agent for `instance_id` running `strategy`, reporting every `report_interval` (signed with `key`).
    pub fn new(
        instance_id: Uuid,
        bus: DynBus,
        clock: DynClock,
        strategy: Arc<dyn DatastoreStrategy>,
        report_interval: Duration,
        key: Option<crate::model::Secret>,
    ) -> GuestAgent {
        GuestAgent {
            seal: key.as_ref().map(crate::seal::Sealer::for_guest),
            conductor: ConductorClient::new(bus.clone(), guest_sender(instance_id), key),
            instance_id,
            bus,
            clock,
            strategy,
            report_interval,
            phase: AtomicU8::new(IDLE),
            reporting: Mutex::new(()),
            log_store: None,
            backup: std::sync::Mutex::new(None),
        }
    }

    /// Publishes guest logs to `store` (without one, publishing a log is refused with a 501).
    pub fn with_log_store(mut self, store: Option<crate::guest_log::LogStore>) -> GuestAgent {
        self.log_store = store;
        self
    }

    fn log_context(&self) -> crate::guest_log::GuestLogContext {
        crate::guest_log::GuestLogContext {
            instance_id: self.instance_id,
            store: self.log_store.clone(),
        }
    }

    /// Marks the agent as serving an already prepared engine (an agent restarted next to a running instance).
    pub fn assume_prepared(&self) {
        self.phase.store(SERVING, Ordering::SeqCst);
    }

    /// Subscribes to the agent's topic. Call before [`GuestAgent::serve`] to be sure nothing is missed.
    pub async fn subscribe(&self) -> Result<Box<dyn Subscription>> {
        self.bus.subscribe(&guest_topic(self.instance_id)).await
    }

    /// Serves requests from `sub` and heartbeats until `shutdown` turns true.
    pub async fn serve(
        self: Arc<Self>,
        mut sub: Box<dyn Subscription>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // An agent started next to an engine that already runs (a restarted process) reports right away.
        if self.phase.load(Ordering::SeqCst) == IDLE
            && self.strategy.status().await.status.is_datastore_running()
        {
            self.phase.store(SERVING, Ordering::SeqCst);
            self.heartbeat().await;
        }
        let hb = {
            let me = self.clone();
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { break },
                        _ = me.clock.sleep(me.report_interval) => me.heartbeat().await,
                    }
                }
            })
        };
        // Requests are served one at a time, in order, by a worker; a fence goes past them (a request stuck on a
        // frozen engine must not hold back the fence that ends it).
        let (queue, mut queued) =
            tokio::sync::mpsc::unbounded_channel::<(Delivery, GuestRequest, bool)>();
        let worker = {
            let me = self.clone();
            tokio::spawn(async move {
                while let Some((d, req, sealed)) = queued.recv().await {
                    me.answer(d, req, sealed).await;
                }
            })
        };
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                r = shutdown.changed() => if r.is_err() { break },
                d = sub.next() => match d {
                    Ok(Some(d)) => {
                        if let Some((d, req, sealed)) = self.open(d).await {
                            if matches!(req, GuestRequest::Replication(ReplicationRequest::Fence)) {
                                let me = self.clone();
                                tokio::spawn(async move { me.answer(d, req, sealed).await });
                            } else if let Err(e) = queue.send((d, req, sealed)) {
                                let (d, req, sealed) = e.0;
                                self.answer(d, req, sealed).await;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(instance = %self.instance_id, error = %e, "guest subscription failed");
                        self.clock.sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
        hb.abort();
        worker.abort();
        if let Some((_, task)) = self.backup.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }

    /// Sends one heartbeat now. A guest that was never asked to prepare (or was relaunched half way through a
    /// prepare) reports NEW "waiting to be prepared": the evidence a workflow needs to ask again
    /// ([`StepContext::guest_work`](crate::taskmanager::StepContext::guest_work)).
    pub async fn heartbeat(&self) {
        let _turn = self.reporting.lock().await;
        let (status, reason) = match self.phase.load(Ordering::SeqCst) {
            IDLE => (ServiceStatus::New, Some(WAITING_TO_PREPARE.to_string())),
            PREPARING => (ServiceStatus::Building, None),
            _ => {
                let s = self.strategy.status().await;
                (s.status, s.reason)
            }
        };
        self.report(status, reason).await;
    }

    /// Sends a report (the caller holds `reporting`).
    async fn report(&self, status: ServiceStatus, reason: Option<String>) {
        let fs = if status.is_datastore_running() {
            self.strategy.filesystem_stats().await.ok()
        } else {
            None
        };
        // Engines that can be cluster members report their load (what a cluster's scaling policy judges); a
        // slow engine does not hold the heartbeat back.
        let load = match self.strategy.cluster() {
            Some(c) if status.is_datastore_running() => {
                tokio::time::timeout(std::time::Duration::from_secs(1), c.load())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            _ => None,
        };
        let r = self
            .conductor
            .send(ConductorRequest::Heartbeat {
                instance_id: self.instance_id,
                status,
                reason,
                fs,
                load,
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(instance = %self.instance_id, error = %e, "heartbeat not sent");
        }
    }

    /// The request in a delivery, opened when it is sealed; whether it was.
    ///
    /// A guest that has a key takes only requests sealed with it: only the control plane, which knows the key,
    /// can command it (with the broker user shared by every guest, another guest could otherwise publish to its
    /// queue).
    fn open_request(&self, body: &[u8]) -> Result<(GuestRequest, bool)> {
        if !crate::seal::Sealer::is_sealed(body) {
            if self.seal.is_some() {
                return Err(Error::Forbidden {
                    message: "This guest takes only requests sealed with its key.".into(),
                });
            }
            return Envelope::<GuestRequest>::decode(body).map(|e| (e.body, false));
        }
        let seal = self.seal.as_ref().ok_or_else(|| {
            Error::bad_request("a sealed request reached a guest that has no key to open it")
        })?;
        let plain = seal.open(
            &String::from_utf8_lossy(body),
            &crate::seal::guest_request_context(self.instance_id),
        )?;
        Envelope::<GuestRequest>::decode(&plain).map(|e| (e.body, true))
    }

    /// A reply body, sealed when the request was.
    fn reply_bytes(&self, reply: &Reply, sealed: bool) -> Vec<u8> {
        let body = serde_json::to_vec(reply).unwrap_or_default();
        match (&self.seal, sealed) {
            (Some(s), true) => s
                .seal(&body, &crate::seal::guest_reply_context(self.instance_id))
                .into_bytes(),
            _ => body,
        }
    }

    /// The request of a delivery, opened; one that cannot be opened is answered with the error and dropped.
    async fn open(&self, mut d: Delivery) -> Option<(Delivery, GuestRequest, bool)> {
        match self.open_request(&d.body) {
            Ok((req, sealed)) => Some((d, req, sealed)),
            Err(e) => {
                tracing::warn!(instance = %self.instance_id, error = %e, "dropping a guest request that cannot be opened or decoded");
                if d.expects_reply() {
                    let body = self.reply_bytes(&Reply::from_result::<()>(Err(e)), false);
                    let _ = d.reply(body).await;
                }
                let _ = d.ack().await;
                None
            }
        }
    }

    /// Serves an opened request: runs it, replies (sealed when the request was), acknowledges the delivery.
    async fn answer(&self, mut d: Delivery, req: GuestRequest, sealed: bool) {
        let result = self.dispatch(req).await;
        if d.expects_reply() {
            let body = self.reply_bytes(&Reply::from_result(result), sealed);
            if let Err(e) = d.reply(body).await {
                tracing::debug!(instance = %self.instance_id, error = %e, "reply not sent");
            }
        } else if let Err(e) = result {
            tracing::warn!(instance = %self.instance_id, error = %e, "guest request (cast) failed");
        }
        let _ = d.ack().await;
    }

    async fn dispatch(&self, req: GuestRequest) -> Result<Value> {
        let s = self.strategy.as_ref();
        let unit = |r: Result<()>| r.map(|()| Value::Null);
        if !matches!(req, GuestRequest::Prepare(_)) && self.phase.load(Ordering::SeqCst) == IDLE {
            self.phase.store(SERVING, Ordering::SeqCst);
        }
        match req {
            // A rebuild is a prepare on existing data: the strategy's prepare is idempotent and keeps the data.
            // Prepare is idempotent: asked again once the engine is prepared (the first answer was lost with a
            // crash), it only makes sure the engine runs.
            GuestRequest::Prepare(_) if self.phase.load(Ordering::SeqCst) == SERVING => {
                self.then_report(s.start().await).await
            }
            GuestRequest::Prepare(p) | GuestRequest::Rebuild(p) => self.prepare(&p).await,
            GuestRequest::Restart => self.then_report(s.restart().await).await,
            GuestRequest::StartDb => self.then_report(s.start().await).await,
            GuestRequest::StopDb => self.then_report(s.stop().await).await,
            GuestRequest::GetFilesystemStats => s.filesystem_stats().await.and_then(|fs| {
                serde_json::to_value(fs).map_err(|e| Error::backend("guest", e, false))
            }),
            GuestRequest::RpcPing => Ok(Value::Null),
            GuestRequest::ApplyFlavor { memory_mb } => {
                self.then_report(s.apply_flavor(memory_mb).await).await
            }
            GuestRequest::ResizeFs { size_gb } => unit(s.resize_fs(size_gb).await),
            GuestRequest::Users(r) => r.serve_on(s).await,
            GuestRequest::Databases(r) => r.serve_on(s).await,
            GuestRequest::Root(r) => r.serve_on(s).await,
            GuestRequest::Configuration(r) => r.serve_on(s).await,
            GuestRequest::Tls(r) => r.serve_on(s).await,
            GuestRequest::Logs(r) => r.serve_on(s, &self.log_context()).await,
            GuestRequest::Replication(r) => r.serve_on(s).await,
            GuestRequest::Cluster(r) => r.serve_on(s).await,
            GuestRequest::Backup(job) => self.start_backup(job).map(|()| Value::Null),
        }
    }

    /// Starts `job` in the background (a job already running carries on); progress and the outcome go to the
    /// conductor.
    fn start_backup(&self, job: BackupJob) -> Result<()> {
        let mut slot = self.backup.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((id, task)) = slot.as_ref() {
            // Asked again for the backup it is taking, or took: it carries on, or it is done (taking it again
            // would replace an object the record already describes).
            if *id == job.backup_id {
                return Ok(());
            }
            if !task.is_finished() {
                let why = format!("backup {id} of this instance is still running");
                let reporter = self.conductor.clone();
                let (instance_id, backup_id) = (self.instance_id, job.backup_id);
                tokio::spawn(async move {
                    report_backup(
                        &reporter,
                        instance_id,
                        backup_id,
                        BackupState::Failed,
                        None,
                        Some(why),
                    )
                    .await
                });
                return Ok(());
            }
        }
        let runner = BackupRunner {
            instance_id: self.instance_id,
            strategy: self.strategy.clone(),
            conductor: self.conductor.clone(),
            clock: self.clock.clone(),
            every: BACKUP_PROGRESS_INTERVAL
                .min(self.report_interval.max(Duration::from_millis(100))),
        };
        let id = job.backup_id;
        let span = tracing::info_span!("backup", instance = %self.instance_id, backup = %id);
        *slot = Some((
            id,
            tokio::spawn(tracing::Instrument::instrument(runner.run(job), span)),
        ));
        Ok(())
    }

    /// Runs prepare, reporting BUILDING first, then the outcome (FAILED with the reason when it fails).
    async fn prepare(&self, p: &PrepareRequest) -> Result<Value> {
        self.phase.store(PREPARING, Ordering::SeqCst);
        self.heartbeat().await;
        match self.strategy.prepare(p).await {
            Ok(()) => {
                self.phase.store(SERVING, Ordering::SeqCst);
                self.heartbeat().await;
                Ok(Value::Null)
            }
            Err(e) => {
                // FAILED is reported once, with the reason: the workflow waiting for this request ends on it.
                // Later reports tell the engine's own status again (NEW while it waits to be prepared), so a
                // FAILED report is never a stale answer to the next request, which may be queued behind this one.
                let engine = self.strategy.status().await.status;
                let next = if matches!(engine, ServiceStatus::New | ServiceStatus::Building) {
                    IDLE
                } else {
                    SERVING
                };
                let _turn = self.reporting.lock().await;
                self.report(ServiceStatus::Failed, Some(e.to_string()))
                    .await;
                self.phase.store(next, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// Reports the engine's status right after a lifecycle change, then answers its result.
    async fn then_report(&self, r: Result<()>) -> Result<Value> {
        self.heartbeat().await;
        r.map(|()| Value::Null)
    }
}

/// How often a running backup reports its progress (at most; the report interval when shorter).
pub const BACKUP_PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

async fn report_backup(
    conductor: &ConductorClient,
    instance_id: Uuid,
    backup_id: Uuid,
    state: BackupState,
    done: Option<&BackupOutcome>,
    reason: Option<String>,
) {
    let r = conductor
        .send(ConductorRequest::UpdateBackup {
            instance_id,
            backup_id,
            state,
            size: done.map(|o| o.object.size as f64 / GB),
            checksum: done.map(|o| o.object.checksum.clone()),
            location: done.map(|o| o.object.key.clone()),
            bytes: done.map(|o| o.object.size),
            position: done.and_then(|o| o.position.clone()),
            reason,
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(instance = %instance_id, backup = %backup_id, error = %e, "backup report not sent");
    }
}

const GB: f64 = 1024.0 * 1024.0 * 1024.0;

/// One backup taken in the background by an agent.
struct BackupRunner {
    instance_id: Uuid,
    strategy: Arc<dyn DatastoreStrategy>,
    conductor: ConductorClient,
    clock: DynClock,
    every: Duration,
}

impl BackupRunner {
    async fn run(self, job: BackupJob) {
        let (iid, bid) = (self.instance_id, job.backup_id);
        report_backup(&self.conductor, iid, bid, BackupState::Building, None, None).await;
        let Some(facet) = self.strategy.backup() else {
            let why = format!(
                "datastore {} cannot be backed up here",
                self.strategy.manager()
            );
            report_backup(
                &self.conductor,
                iid,
                bid,
                BackupState::Failed,
                None,
                Some(why),
            )
            .await;
            return;
        };
        if job.parent.is_some() && !facet.incremental() {
            let why = format!(
                "datastore {} takes full backups only",
                self.strategy.manager()
            );
            report_backup(
                &self.conductor,
                iid,
                bid,
                BackupState::Failed,
                None,
                Some(why),
            )
            .await;
            return;
        }
        let progress = BackupProgress::default();
        let work = facet.backup(&job, &progress);
        tokio::pin!(work);
        let started = std::time::Instant::now();
        let outcome = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = self.clock.sleep(self.every) => {
                    let bytes = progress.bytes();
                    tracing::info!(bytes, secs = started.elapsed().as_secs(), "backing up");
                    let r = self.conductor.send(ConductorRequest::UpdateBackup {
                        instance_id: iid,
                        backup_id: bid,
                        state: BackupState::Saving,
                        size: None,
                        checksum: None,
                        location: None,
                        bytes: Some(bytes),
                        position: None,
                        reason: None,
                    }).await;
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "progress report not sent");
                    }
                }
            }
        };
        match outcome {
            Ok(o) => {
                tracing::info!(
                    bytes = o.object.size,
                    secs = started.elapsed().as_secs(),
                    "backup completed"
                );
                report_backup(
                    &self.conductor,
                    iid,
                    bid,
                    BackupState::Completed,
                    Some(&o),
                    None,
                )
                .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "backup failed");
                report_backup(
                    &self.conductor,
                    iid,
                    bid,
                    BackupState::Failed,
                    None,
                    Some(e.to_string()),
                )
                .await
            }
        }
    }
}

struct Running {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    strategy: Arc<dyn DatastoreStrategy>,
}

/// Runs guest agents as tokio tasks in this process (embedded deployment, tests).
pub struct InProcessLauncher {
    bus: DynBus,
    clock: DynClock,
    factory: Arc<dyn StrategyFactory>,
    report_interval: Duration,
    keys: Option<Arc<dyn GuestKeys>>,
    log_store: Option<crate::guest_log::LogStore>,
    agents: Mutex<HashMap<Uuid, Running>>,
}

impl std::fmt::Debug for InProcessLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessLauncher")
            .field("report_interval", &self.report_interval)
            .finish()
    }
}

impl InProcessLauncher {
    /// A launcher building strategies with `factory`; agents heartbeat every `report_interval`.
    pub fn new(
        bus: DynBus,
        clock: DynClock,
        factory: Arc<dyn StrategyFactory>,
        report_interval: Duration,
    ) -> InProcessLauncher {
        InProcessLauncher {
            bus,
            clock,
            factory,
            report_interval,
            keys: None,
            log_store: None,
            agents: Mutex::new(HashMap::new()),
        }
    }

    /// Agents publish guest logs to `store`.
    pub fn with_log_store(mut self, store: crate::guest_log::LogStore) -> InProcessLauncher {
        self.log_store = Some(store);
        self
    }

    /// Agents sign their reports with the key `keys` gives for their instance.
    pub fn with_keys(mut self, keys: Arc<dyn GuestKeys>) -> InProcessLauncher {
        self.keys = Some(keys);
        self
    }

    /// Signals an agent to end and waits for it; one that has not ended after [`AGENT_STOP_WAIT`] (on the
    /// launcher's clock) is aborted.
    async fn end_agent(
        &self,
        shutdown: watch::Sender<bool>,
        mut task: tokio::task::JoinHandle<()>,
    ) {
        let _ = shutdown.send(true);
        tokio::select! {
            _ = &mut task => {}
            _ = self.clock.sleep(AGENT_STOP_WAIT) => task.abort(),
        }
    }

    /// Instances with a running agent.
    pub async fn running(&self) -> Vec<Uuid> {
        self.agents.lock().await.keys().copied().collect()
    }

    /// Ends every agent without stopping the engines (control-plane shutdown).
    pub async fn shutdown_all(&self) {
        let all: Vec<Running> = self.agents.lock().await.drain().map(|(_, r)| r).collect();
        for r in all {
            self.end_agent(r.shutdown, r.task).await;
        }
    }
}

#[async_trait]
impl GuestLauncher for InProcessLauncher {
    async fn launch(&self, spec: &GuestSpec) -> Result<()> {
        let mut agents = self.agents.lock().await;
        if agents
            .get(&spec.instance_id)
            .is_some_and(|r| !r.task.is_finished())
        {
            return Ok(());
        }
        let strategy = self.factory.strategy(spec)?;
        let key = self.keys.as_ref().and_then(|k| k.key(spec.instance_id));
        let agent = Arc::new(
            GuestAgent::new(
                spec.instance_id,
                self.bus.clone(),
                self.clock.clone(),
                strategy.clone(),
                self.report_interval,
                key,
            )
            .with_log_store(self.log_store.clone()),
        );
        // A guest relaunched beside an engine that was prepared before (control-plane restart, reboot) serves
        // and heartbeats right away; one whose engine was never prepared waits for `prepare`.
        let engine = strategy.status().await.status;
        if !matches!(engine, ServiceStatus::New | ServiceStatus::Building) {
            agent.assume_prepared();
        }
        let sub = agent.subscribe().await?;
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(agent.serve(sub, rx));
        agents.insert(
            spec.instance_id,
            Running {
                shutdown: tx,
                task,
                strategy,
            },
        );
        Ok(())
    }

    async fn stop(&self, instance_id: Uuid) -> Result<()> {
        let running = self.agents.lock().await.remove(&instance_id);
        if let Some(r) = running {
            self.end_agent(r.shutdown, r.task).await;
            // The server is going away: its engine stops with it.
            if let Err(e) = r.strategy.stop().await {
                tracing::debug!(instance = %instance_id, error = %e, "engine stop on guest stop failed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{ManualClock, MemoryBus, SimulatedStrategy};
    use crate::model::{DatabaseSpec, Manager};
    use crate::ports::{MessageBus, PrepareRequest};
    use crate::rpc::{GuestClient, GuestTimeouts, CONDUCTOR_TOPIC};

    async fn next_report(sub: &mut Box<dyn Subscription>) -> ConductorRequest {
        let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let env = Envelope::<ConductorRequest>::decode(&d.body).unwrap();
        d.ack().await.unwrap();
        env.body
    }

    /// A fence goes past a request stuck on a frozen engine (the guest serves requests one at a time): the fence
    /// that ends the freeze is never held back by it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fence_is_served_while_a_request_hangs_on_a_frozen_engine() {
        let bus = Arc::new(MemoryBus::new());
        let id = Uuid::new_v4();
        let factory = crate::memory::SimulatedStrategyFactory::new()
            .with_backup_store(Arc::new(crate::memory::MemoryBackupStore::new()));
        let ctx = crate::ports::StrategyContext {
            instance_id: id,
            datastore_version: crate::testing::sample_version(Manager::Mariadb),
            flavor: crate::testing::sample_flavor(),
            server_dir: "/x".into(),
            volume_path: None,
            bind_address: "127.0.0.1".into(),
            port: 3306,
        };
        let strategy = factory.strategy(&ctx).unwrap();
        strategy
            .prepare(&PrepareRequest {
                memory_mb: 512,
                volume_size_gb: Some(1),
                databases: vec![],
                users: vec![],
                root_password: None,
                overrides: Default::default(),
                restore: None,
            })
            .await
            .unwrap();
        let agent = Arc::new(GuestAgent::new(
            id,
            bus.clone(),
            Arc::new(ManualClock::new()),
            strategy,
            Duration::from_secs(1),
            None,
        ));
        agent.assume_prepared();
        let sub = agent.subscribe().await.unwrap();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(agent.clone().serve(sub, rx));
        let client = GuestClient::new(bus.clone(), id, "test", GuestTimeouts::default());
        let at = client.replication_position().await.unwrap();
        factory.engine(id).freeze(true);
        // A wait for a position polls the frozen engine: it hangs.
        let stuck = {
            let client = client.clone();
            tokio::spawn(async move { client.wait_for_position(at, Duration::from_secs(60)).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !stuck.is_finished(),
            "the wait should hang on the frozen engine"
        );
        tokio::time::timeout(Duration::from_secs(5), client.fence())
            .await
            .expect("the fence is not held back by the stuck request")
            .expect("fenced");
        assert!(
            !factory.engine(id).is_running(),
            "the fence stopped the engine"
        );
        // The stuck request ends with the engine (it no longer runs).
        let ended = tokio::time::timeout(Duration::from_secs(5), stuck).await;
        assert!(
            ended.is_ok(),
            "the stuck request ends once the engine stopped"
        );
        tx.send(true).unwrap();
        task.await.unwrap();
    }

    /// A guest with a key answers only requests sealed with it, seals its replies, and refuses the rest: a plain
    /// request, and one sealed with another guest's key.
    #[tokio::test]
    async fn a_keyed_guest_takes_only_requests_sealed_with_its_key() {
        let bus = Arc::new(MemoryBus::new());
        let id = Uuid::new_v4();
        let key = crate::model::Secret::new("guest-key-of-this-instance");
        let agent = Arc::new(GuestAgent::new(
            id,
            bus.clone(),
            Arc::new(ManualClock::new()),
            Arc::new(SimulatedStrategy::standalone(Manager::Postgresql)),
            Duration::from_secs(1),
            Some(key.clone()),
        ));
        agent.assume_prepared();
        let sub = agent.subscribe().await.unwrap();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(agent.clone().serve(sub, rx));
        let client = |seal: Option<crate::seal::Sealer>| {
            GuestClient::new(bus.clone(), id, "test", GuestTimeouts::default()).sealed(seal)
        };
        client(Some(crate::seal::Sealer::for_guest(&key)))
            .ping()
            .await
            .expect("a sealed request is served");
        let plain = client(None).ping().await.expect_err("a plain request");
        assert_eq!(plain.fault().status, 403, "{plain}");
        let forged = client(Some(crate::seal::Sealer::for_guest(
            &crate::model::Secret::new("another guest's key"),
        )))
        .ping()
        .await
        .expect_err("a request sealed with another key");
        assert!(forged.to_string().contains("cannot open"), "{forged}");
        tx.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn waiting_until_prepare_then_building_then_healthy_and_serves_requests() {
        let bus = Arc::new(MemoryBus::new());
        let clock = Arc::new(ManualClock::new());
        let id = Uuid::new_v4();
        let strategy = Arc::new(SimulatedStrategy::standalone(Manager::Postgresql));
        let agent = Arc::new(GuestAgent::new(
            id,
            bus.clone(),
            clock.clone(),
            strategy.clone(),
            Duration::from_secs(1),
            None,
        ));
        let mut reports = bus.subscribe(CONDUCTOR_TOPIC).await.unwrap();
        let sub = agent.subscribe().await.unwrap();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(agent.clone().serve(sub, rx));
        // Nothing was asked: the guest says it waits to be prepared.
        agent.heartbeat().await;
        match next_report(&mut reports).await {
            ConductorRequest::Heartbeat { status, reason, .. } => {
                assert_eq!(status, ServiceStatus::New);
                assert_eq!(reason.as_deref(), Some(WAITING_TO_PREPARE));
            }
            other => panic!("unexpected {other:?}"),
        }

        let client = GuestClient::new(bus.clone(), id, "test", GuestTimeouts::default());
        client
            .cast(GuestRequest::Prepare(PrepareRequest {
                memory_mb: 512,
                volume_size_gb: Some(1),
                databases: vec![DatabaseSpec {
                    name: "d1".into(),
                    character_set: None,
                    collate: None,
                }],
                users: vec![],
                root_password: None,
                overrides: Default::default(),
                restore: None,
            }))
            .await
            .unwrap();
        let first_not_new = loop {
            match next_report(&mut reports).await {
                ConductorRequest::Heartbeat {
                    status: ServiceStatus::New,
                    ..
                } => continue,
                other => break other,
            }
        };
        match first_not_new {
            ConductorRequest::Heartbeat {
                instance_id,
                status,
                ..
            } => {
                assert_eq!(instance_id, id);
                assert_eq!(status, ServiceStatus::Building);
            }
            other => panic!("unexpected {other:?}"),
        }
        match next_report(&mut reports).await {
            ConductorRequest::Heartbeat { status, fs, .. } => {
                assert_eq!(status, ServiceStatus::Healthy);
                assert!(fs.is_some(), "a running engine reports its volume usage");
            }
            other => panic!("unexpected {other:?}"),
        }
        let dbs = client.list_databases().await.unwrap();
        assert!(dbs.iter().any(|d| d.name == "d1"));
        // Errors keep their status across the wire.
        let e = client
            .call::<Value>(
                GuestRequest::Databases(crate::rpc::DatabasesRequest::DeleteDatabase {
                    database: "nope".into(),
                }),
                client.low(),
            )
            .await;
        assert_eq!(e.unwrap_err().fault().status, 404);
        // Periodic heartbeats follow the injected clock.
        clock.advance(Duration::from_secs(1));
        assert!(matches!(
            next_report(&mut reports).await,
            ConductorRequest::Heartbeat { .. }
        ));
        let _ = tx.send(true);
        task.await.unwrap();
    }
}
