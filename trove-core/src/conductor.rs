//! The conductor: receives guest reports on `trove-conductor` and records them in the store.
//!
//! Heartbeats are batched into [`InfraStore::put_service_statuses`](crate::ports::InfraStore::put_service_statuses);
//! a report older than the last one seen from the same instance (per kind of report) is dropped, and the store
//! leaves a stored RESTART_REQUIRED (only a restart clears it) or DELETED alone, atomically with the batch. When built with
//! [`GuestKeys`], every report must carry a valid signature by the reporting instance's key; forged or unsigned
//! reports are rejected and logged (never with the key).

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{RootHistory, Secret, ServiceStatusRecord, VolumeUsage};
use crate::ports::{ChangeSet, Delivery, DynBus, DynClock, DynStore, Write};
use crate::rpc::{ConductorRequest, Envelope, CONDUCTOR_TOPIC};

/// Where the conductor finds each guest's signing key (per-guest keys are issue 6's; this is the hook).
pub trait GuestKeys: Send + Sync + 'static {
    /// The key guest `instance_id` signs its reports with; `None`: the instance is unknown (reports rejected).
    fn key(&self, instance_id: Uuid) -> Option<Secret>;
}

/// One shared key for every guest (simple deployments and tests).
#[derive(Clone)]
pub struct SharedKey(pub Secret);

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedKey(***)")
    }
}

impl GuestKeys for SharedKey {
    fn key(&self, _instance_id: Uuid) -> Option<Secret> {
        Some(self.0.clone())
    }
}

/// The sender name a guest uses on its reports.
pub fn guest_sender(instance_id: Uuid) -> String {
    format!("guest:{instance_id}")
}

fn report_instance(r: &ConductorRequest) -> Uuid {
    match r {
        ConductorRequest::Heartbeat { instance_id, .. }
        | ConductorRequest::UpdateBackup { instance_id, .. }
        | ConductorRequest::ReportRoot { instance_id, .. } => *instance_id,
    }
}

fn report_kind(r: &ConductorRequest) -> &'static str {
    match r {
        ConductorRequest::Heartbeat { .. } => "heartbeat",
        ConductorRequest::UpdateBackup { .. } => "backup",
        ConductorRequest::ReportRoot { .. } => "root",
    }
}

/// Records guest reports. Build with [`Conductor::new`], then [`Conductor::run`] it.
pub struct Conductor {
    store: DynStore,
    bus: DynBus,
    clock: DynClock,
    keys: Option<Arc<dyn GuestKeys>>,
    last_seen: std::sync::Mutex<HashMap<(Uuid, &'static str), DateTime<Utc>>>,
    /// Longest a heartbeat waits in a batch (counted from the batch's first heartbeat) before the batched write.
    pub batch_window: Duration,
    /// A batch is written as soon as no report arrived for this long: the bus may hold further deliveries back
    /// until the batch is acknowledged (an AMQP prefetch smaller than [`Conductor::batch_max`]), so waiting longer
    /// only idles.
    pub batch_idle: Duration,
    /// Largest batch written at once.
    pub batch_max: usize,
}

impl std::fmt::Debug for Conductor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conductor")
            .field("verifies", &self.keys.is_some())
            .finish()
    }
}

impl Conductor {
    /// A conductor; `keys` turns on signature verification.
    pub fn new(
        store: DynStore,
        bus: DynBus,
        clock: DynClock,
        keys: Option<Arc<dyn GuestKeys>>,
    ) -> Conductor {
        Conductor {
            store,
            bus,
            clock,
            keys,
            last_seen: std::sync::Mutex::new(HashMap::new()),
            batch_window: Duration::from_millis(20),
            batch_idle: Duration::from_millis(2),
            batch_max: 512,
        }
    }

    /// Serves `trove-conductor` until `shutdown` turns true.
    ///
    /// Heartbeats wait in a batch that is written (one [`InfraStore::put_service_statuses`] call) once no report
    /// came for [`Conductor::batch_idle`], once its first heartbeat waited [`Conductor::batch_window`], or at once
    /// when it holds [`Conductor::batch_max`]; every wait is on the injected clock.
    ///
    /// [`InfraStore::put_service_statuses`]: crate::ports::InfraStore::put_service_statuses
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let mut sub = self.bus.subscribe(CONDUCTOR_TOPIC).await?;
        let mut batch: Vec<(ServiceStatusRecord, Delivery)> = Vec::new();
        // When the open batch's first heartbeat came, and when the last report (of any kind) did.
        let mut opened = self.clock.instant();
        let mut last = opened;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let due = if batch.is_empty() {
                None
            } else {
                self.batch_due(opened, last)
            };
            tokio::select! {
                r = shutdown.changed() => if r.is_err() { break },
                d = sub.next() => match d {
                    Ok(Some(d)) => {
                        let rec = self.handle(&d.body).await;
                        last = self.clock.instant();
                        if let Some(rec) = rec {
                            if batch.is_empty() {
                                opened = last;
                            }
                            batch.push((rec, d));
                            if batch.len() >= self.batch_max {
                                self.flush(&mut batch).await;
                            }
                        } else if let Err(e) = d.ack().await {
                            tracing::debug!(error = %e, "ack failed");
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "conductor subscription failed");
                        self.clock.sleep(Duration::from_millis(200)).await;
                    }
                },
                // Polled only while a batch is open: an idle conductor does not wait on the clock.
                _ = async {
                    match due {
                        Some(due) => self.clock.sleep_until(due).await,
                        None => std::future::pending().await,
                    }
                } => self.flush(&mut batch).await,
            }
        }
        self.flush(&mut batch).await;
        Ok(())
    }

    /// When a batch whose first heartbeat came at `opened` and whose last report came at `last` is written
    /// (`None`: beyond what an instant holds, so only a full batch or shutdown writes it).
    fn batch_due(&self, opened: Instant, last: Instant) -> Option<Instant> {
        match (
            last.checked_add(self.batch_idle),
            opened.checked_add(self.batch_window),
        ) {
            (Some(idle), Some(window)) => Some(idle.min(window)),
            (idle, window) => idle.or(window),
        }
    }

    async fn flush(&self, batch: &mut Vec<(ServiceStatusRecord, Delivery)>) {
        if batch.is_empty() {
            return;
        }
        let items = std::mem::take(batch);
        // In arrival order: the store writes the last record of each instance and keeps sticky statuses
        // (RESTART_REQUIRED, DELETED) itself, in the same statement, so no read-then-write race can erase them.
        let records: Vec<ServiceStatusRecord> = items.iter().map(|(r, _)| r.clone()).collect();
        match self.store.put_service_statuses(&records).await {
            Ok(()) => {
                for (_, d) in items {
                    let _ = d.ack().await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, n = records.len(), "could not store heartbeats; requeueing");
                for (_, d) in items {
                    let _ = d.nack(true).await;
                }
            }
        }
    }

    /// Decodes, verifies and orders one report. Heartbeats come back as a record to batch; other reports are
    /// applied at once.
    async fn handle(&self, body: &[u8]) -> Option<ServiceStatusRecord> {
        let env = match Envelope::<ConductorRequest>::decode(body) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(error = %e, "dropping undecodable conductor message");
                return None;
            }
        };
        let instance_id = report_instance(&env.body);
        if let Some(keys) = &self.keys {
            let valid = env.sender == guest_sender(instance_id)
                && keys.key(instance_id).is_some_and(|k| env.verify(&k));
            if !valid {
                tracing::warn!(sender = %env.sender, instance = %instance_id, kind = report_kind(&env.body),
                    "rejecting a guest report with a missing or invalid signature");
                return None;
            }
        }
        {
            let mut seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
            let key = (instance_id, report_kind(&env.body));
            if seen.get(&key).is_some_and(|last| env.sent < *last) {
                tracing::debug!(instance = %instance_id, "dropping an out-of-order report");
                return None;
            }
            seen.insert(key, env.sent);
        }
        match env.body {
            ConductorRequest::Heartbeat {
                instance_id,
                status,
                reason,
                fs,
                load,
            } => Some(ServiceStatusRecord {
                instance_id,
                status,
                reason,
                volume: fs.map(|f| VolumeUsage {
                    used_bytes: f.used_bytes,
                    total_bytes: f.total_bytes,
                }),
                load,
                updated_at: self.clock.now(),
            }),
            other => {
                if let Err(e) = self.apply(other).await {
                    tracing::warn!(instance = %instance_id, error = %e, "could not apply a guest report");
                }
                None
            }
        }
    }

    async fn apply(&self, req: ConductorRequest) -> Result<()> {
        match req {
            ConductorRequest::Heartbeat { .. } => Ok(()),
            ConductorRequest::UpdateBackup {
                instance_id,
                backup_id,
                state,
                size,
                checksum,
                location,
                bytes,
                position,
                reason,
            } => {
                let Some(mut b) = self.store.get_backup(backup_id).await? else {
                    return Err(Error::not_found("Backup", backup_id));
                };
                if b.instance_id != Some(instance_id) {
                    return Err(Error::Forbidden {
                        message: format!("instance {instance_id} reported on backup {backup_id} of another instance"),
                    });
                }
                // A backup's state only moves forward: a late progress report never revives one that ended (the
                // workflow may have failed it for silence), nor a deleted one.
                if b.deleted || !b.state.is_running() {
                    tracing::debug!(backup = %backup_id, state = state.as_str(), "report on a backup that ended; ignored");
                    return Ok(());
                }
                if state.is_running() && state_rank(state) < state_rank(b.state) {
                    return Ok(());
                }
                // The guest's outcome is recorded, but the backup ends (COMPLETED or FAILED) only when its
                // workflow closes, in the same commit: until then the instance shows BACKUP and takes no other
                // action, so status and action gate agree.
                b.state = if state.is_running() {
                    state
                } else {
                    crate::state::BackupState::Saving
                };
                if size.is_some() {
                    b.size = size;
                }
                if checksum.is_some() {
                    b.checksum = checksum;
                }
                if location.is_some() {
                    b.location = location;
                }
                if bytes.is_some() {
                    b.bytes = bytes;
                }
                if position.is_some() {
                    b.position = position;
                }
                if reason.is_some() || state == crate::state::BackupState::Failed {
                    b.fault = Some(reason.unwrap_or_else(|| "the guest reported a failure".into()));
                }
                b.updated = self.clock.now();
                if let Some(n) = b.bytes {
                    tracing::info!(backup = %backup_id, instance = %instance_id, state = b.state.as_str(), bytes = n, "backup progress");
                }
                self.store
                    .commit(ChangeSet::new().with(Write::Backup(b)))
                    .await
            }
            ConductorRequest::ReportRoot { instance_id, user } => {
                self.store
                    .commit(ChangeSet::new().with(Write::RootHistory(RootHistory {
                        instance_id,
                        user,
                        created: self.clock.now(),
                    })))
                    .await
            }
        }
    }
}

/// The order of a running backup's states (NEW, BUILDING, SAVING).
fn state_rank(s: crate::state::BackupState) -> u8 {
    use crate::state::BackupState;
    match s {
        BackupState::New => 0,
        BackupState::Building => 1,
        _ => 2,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::memory::{ManualClock, MemoryBus, MemoryStore};
    use crate::model::{Access, Instance};
    use crate::ports::{Clock, Expect, InfraStore, MessageBus};
    use crate::state::{ServerStatus, ServiceStatus, TaskStatus};
    use chrono::Duration as ChronoDuration;

    pub(crate) fn instance(id: Uuid, task: TaskStatus, at: DateTime<Utc>) -> Instance {
        Instance {
            id,
            name: "i".into(),
            tenant_id: "t".into(),
            datastore_version_id: Uuid::new_v4(),
            flavor_id: "1".into(),
            ram_mb: 512,
            volume_size: Some(1),
            volume_type: None,
            task,
            server_status: ServerStatus::Active,
            server_id: Some("s".into()),
            volume_id: Some("v".into()),
            host: None,
            addresses: vec![],
            port: None,
            configuration_id: None,
            replica_of: None,
            locality: None,
            region: "r".into(),
            availability_zone: None,
            access: Access::default(),
            fault: None,
            cluster_id: None,
            auto_failover: None,
            created: at,
            updated: at,
            deleted: false,
            deleted_at: None,
            version: 0,
        }
    }

    pub(crate) async fn put_instance(store: &MemoryStore, inst: Instance, status: ServiceStatus) {
        let st = ServiceStatusRecord {
            instance_id: inst.id,
            status,
            reason: None,
            volume: None,
            load: None,
            updated_at: inst.created,
        };
        store
            .commit(
                ChangeSet::new()
                    .with(Write::Instance {
                        instance: inst,
                        expect: Expect::Absent,
                    })
                    .with(Write::ServiceStatus(st)),
            )
            .await
            .unwrap();
    }

    fn heartbeat(
        id: Uuid,
        status: ServiceStatus,
        sent: DateTime<Utc>,
    ) -> Envelope<ConductorRequest> {
        let mut env = Envelope::new(
            guest_sender(id),
            ConductorRequest::Heartbeat {
                instance_id: id,
                status,
                reason: None,
                fs: None,
                load: None,
            },
        );
        env.sent = sent;
        env
    }

    /// How long (real time) a test waits for something the conductor should do.
    const LIMIT: Duration = Duration::from_secs(10);

    struct Fixture {
        conductor: Arc<Conductor>,
        store: Arc<MemoryStore>,
        bus: Arc<MemoryBus>,
        clock: Arc<ManualClock>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Fixture {
        async fn status(&self, id: Uuid) -> Option<ServiceStatus> {
            self.store
                .get_service_status(id)
                .await
                .unwrap()
                .map(|s| s.status)
        }

        /// Waits (bounded, real time) until the store holds `want` for `id`; the clock does not move.
        async fn stored(&self, id: Uuid, want: ServiceStatus) {
            self.until_stored(id, want, false).await
        }

        /// Waits (bounded, real time) until the store holds `want` for `id`, moving the clock to the open
        /// batch's deadline whenever the conductor waits on one: for tests about what is written, not when.
        async fn written(&self, id: Uuid, want: ServiceStatus) {
            self.until_stored(id, want, true).await
        }

        async fn until_stored(&self, id: Uuid, want: ServiceStatus, drive: bool) {
            let start = std::time::Instant::now();
            while self.status(id).await != Some(want) {
                assert!(
                    start.elapsed() < LIMIT,
                    "status of {id} never became {want:?}: {:?}",
                    self.status(id).await
                );
                if !drive {
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                } else if self
                    .clock
                    .wait_for_sleepers(1, Duration::from_millis(5))
                    .await
                {
                    if let Some(due) = self.clock.deadlines().first().copied() {
                        self.clock.advance_to(due);
                        // The conductor took the wake-up once it stops waiting for that deadline.
                        self.clock
                            .wait_for_sleeps(LIMIT, |d| !d.contains(&due))
                            .await;
                    }
                }
            }
        }

        /// Waits until the conductor has taken in `id`'s heartbeat sent at `sent` (it is the last seen).
        async fn taken_in(&self, id: Uuid, sent: DateTime<Utc>) {
            let start = std::time::Instant::now();
            loop {
                let seen = self
                    .conductor
                    .last_seen
                    .lock()
                    .unwrap()
                    .get(&(id, "heartbeat"))
                    .copied();
                if seen == Some(sent) {
                    return;
                }
                assert!(
                    start.elapsed() < LIMIT,
                    "the conductor never took in the heartbeat"
                );
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }

        /// Waits until the conductor waits for exactly these batch deadlines (none: no batch open).
        async fn waiting_for(&self, deadlines: &[Instant]) {
            assert!(
                self.clock.wait_for_sleeps(LIMIT, |d| d == deadlines).await,
                "the conductor waits for {:?}, not {deadlines:?}",
                self.clock.deadlines()
            );
        }

        async fn instances(&self, ids: &[Uuid]) {
            for id in ids {
                put_instance(
                    &self.store,
                    instance(*id, TaskStatus::None, self.clock.now()),
                    ServiceStatus::New,
                )
                .await;
            }
        }

        async fn send(&self, env: &Envelope<ConductorRequest>) {
            self.bus
                .cast(CONDUCTOR_TOPIC, env.encode().unwrap())
                .await
                .unwrap();
        }

        async fn end(self) {
            let _ = self.stop.send(true);
            self.task.await.unwrap();
        }
    }

    async fn start(keys: Option<Arc<dyn GuestKeys>>) -> Fixture {
        start_tuned(keys, |_| {}).await
    }

    async fn start_tuned(
        keys: Option<Arc<dyn GuestKeys>>,
        tune: impl FnOnce(&mut Conductor),
    ) -> Fixture {
        let store = Arc::new(MemoryStore::new());
        let bus = Arc::new(MemoryBus::new());
        let clock = Arc::new(ManualClock::new());
        let mut c = Conductor::new(store.clone(), bus.clone(), clock.clone(), keys);
        tune(&mut c);
        let conductor = Arc::new(c);
        let (stop, rx) = watch::channel(false);
        let task = {
            let c = conductor.clone();
            tokio::spawn(async move { c.run(rx).await.unwrap() })
        };
        Fixture {
            conductor,
            store,
            bus,
            clock,
            stop,
            task,
        }
    }

    #[tokio::test]
    async fn heartbeats_are_recorded_and_older_ones_dropped() {
        let f = start(None).await;
        let id = Uuid::new_v4();
        let t0 = Utc::now();
        f.instances(&[id]).await;
        f.send(&heartbeat(
            id,
            ServiceStatus::Healthy,
            t0 + ChronoDuration::seconds(10),
        ))
        .await;
        f.written(id, ServiceStatus::Healthy).await;
        // An older report (sent before the one recorded) is dropped ...
        f.send(&heartbeat(
            id,
            ServiceStatus::Shutdown,
            t0 + ChronoDuration::seconds(5),
        ))
        .await;
        // ... (reports are taken in order: once a later one is written, the older one was seen) ...
        let barrier = Uuid::new_v4();
        f.instances(&[barrier]).await;
        f.send(&heartbeat(barrier, ServiceStatus::Healthy, t0))
            .await;
        f.written(barrier, ServiceStatus::Healthy).await;
        assert_eq!(f.status(id).await, Some(ServiceStatus::Healthy));
        // ... a newer one is not.
        f.send(&heartbeat(
            id,
            ServiceStatus::Crashed,
            t0 + ChronoDuration::seconds(20),
        ))
        .await;
        f.written(id, ServiceStatus::Crashed).await;
        f.end().await;
    }

    #[tokio::test]
    async fn a_batch_is_written_once_no_report_comes_for_the_idle_gap() {
        // The window alone would hold the heartbeats for a minute; the idle gap writes them.
        let idle = Duration::from_millis(5);
        let f = start_tuned(None, |c| {
            c.batch_window = Duration::from_secs(60);
            c.batch_idle = idle;
        })
        .await;
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        f.instances(&[a, b]).await;
        let t = f.clock.instant();
        f.waiting_for(&[]).await;
        f.send(&heartbeat(a, ServiceStatus::Healthy, f.clock.now()))
            .await;
        f.waiting_for(&[t + idle]).await;
        // A report before the gap is over starts it again.
        f.clock.advance(Duration::from_millis(4));
        f.send(&heartbeat(b, ServiceStatus::Healthy, f.clock.now()))
            .await;
        let due = t + Duration::from_millis(4) + idle;
        f.waiting_for(&[due]).await;
        // Past the first report's gap, within the second's: nothing written (the wait cannot have ended).
        f.clock.advance(Duration::from_millis(4));
        assert_eq!(f.status(a).await, Some(ServiceStatus::New));
        assert_eq!(f.status(b).await, Some(ServiceStatus::New));
        f.clock.advance_to(due);
        f.stored(a, ServiceStatus::Healthy).await;
        f.stored(b, ServiceStatus::Healthy).await;
        // Written and acknowledged: no batch open, nothing left on the bus.
        f.waiting_for(&[]).await;
        assert_eq!(f.bus.queued(CONDUCTOR_TOPIC), 0);
        f.end().await;
    }

    #[tokio::test]
    async fn a_steady_trickle_is_written_within_the_batch_window() {
        // Reports keep coming faster than the idle gap: the batch is still written when its first heartbeat has
        // waited the window, not only once the batch is full.
        let window = Duration::from_millis(100);
        let f = start_tuned(None, |c| {
            c.batch_window = window;
            c.batch_idle = Duration::from_secs(60);
        })
        .await;
        let (id, busy) = (Uuid::new_v4(), Uuid::new_v4());
        f.instances(&[id, busy]).await;
        let t = f.clock.instant();
        f.send(&heartbeat(id, ServiceStatus::Healthy, f.clock.now()))
            .await;
        f.waiting_for(&[t + window]).await;
        for _ in 0..4 {
            f.clock.advance(Duration::from_millis(20));
            let sent = f.clock.now();
            f.send(&heartbeat(busy, ServiceStatus::Healthy, sent)).await;
            f.taken_in(busy, sent).await;
            f.waiting_for(&[t + window]).await;
        }
        // 80 ms in, then 99 ms: still held.
        f.clock.advance(Duration::from_millis(19));
        assert_eq!(f.status(id).await, Some(ServiceStatus::New));
        f.clock.advance(Duration::from_millis(1));
        f.stored(id, ServiceStatus::Healthy).await;
        f.stored(busy, ServiceStatus::Healthy).await;
        f.waiting_for(&[]).await;
        f.end().await;
    }

    /// Batches wait a minute by either rule.
    fn hold(c: &mut Conductor) {
        c.batch_window = Duration::from_secs(60);
        c.batch_idle = Duration::from_secs(60);
    }

    #[tokio::test]
    async fn a_full_batch_is_written_without_waiting() {
        let f = start_tuned(None, |c| {
            hold(c);
            c.batch_max = 3;
        })
        .await;
        let ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
        f.instances(&ids).await;
        for id in ids {
            f.send(&heartbeat(id, ServiceStatus::Healthy, f.clock.now()))
                .await;
        }
        // The clock never moves.
        for id in ids {
            f.stored(id, ServiceStatus::Healthy).await;
        }
        f.waiting_for(&[]).await;
        f.end().await;
    }

    #[tokio::test]
    async fn shutdown_writes_the_open_batch() {
        let f = start_tuned(None, hold).await;
        let id = Uuid::new_v4();
        f.instances(&[id]).await;
        let sent = f.clock.now();
        f.send(&heartbeat(id, ServiceStatus::Healthy, sent)).await;
        f.taken_in(id, sent).await;
        let store = f.store.clone();
        f.end().await;
        assert_eq!(
            store.get_service_status(id).await.unwrap().unwrap().status,
            ServiceStatus::Healthy
        );
    }

    #[tokio::test]
    async fn restart_required_is_not_overwritten_by_heartbeats() {
        let f = start(None).await;
        let id = Uuid::new_v4();
        let t0 = Utc::now();
        put_instance(
            &f.store,
            instance(id, TaskStatus::RestartRequired, t0),
            ServiceStatus::RestartRequired,
        )
        .await;
        f.send(&heartbeat(id, ServiceStatus::Healthy, t0)).await;
        let barrier = Uuid::new_v4();
        f.instances(&[barrier]).await;
        f.send(&heartbeat(barrier, ServiceStatus::Healthy, t0))
            .await;
        f.written(barrier, ServiceStatus::Healthy).await;
        assert_eq!(f.status(id).await, Some(ServiceStatus::RestartRequired));
        f.end().await;
    }

    #[tokio::test]
    async fn forged_and_unsigned_reports_are_rejected() {
        let key = Secret::new("guest-key");
        let f = start(Some(Arc::new(SharedKey(key.clone())))).await;
        let t0 = Utc::now();
        let (a, b, good) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        f.instances(&[a, b, good]).await;
        // Unsigned.
        f.send(&heartbeat(a, ServiceStatus::Healthy, t0)).await;
        // Signed with the wrong key.
        f.send(
            &heartbeat(a, ServiceStatus::Healthy, t0)
                .signed(&Secret::new("forged"))
                .unwrap(),
        )
        .await;
        // Signed correctly, but guest a reporting for instance b.
        let mut env = heartbeat(b, ServiceStatus::Healthy, t0);
        env.sender = guest_sender(a);
        f.send(&env.signed(&key).unwrap()).await;
        // A genuine report goes through.
        f.send(
            &heartbeat(good, ServiceStatus::Healthy, t0)
                .signed(&key)
                .unwrap(),
        )
        .await;
        f.written(good, ServiceStatus::Healthy).await;
        assert_eq!(f.status(a).await, Some(ServiceStatus::New));
        assert_eq!(f.status(b).await, Some(ServiceStatus::New));
        f.end().await;
    }

    #[tokio::test]
    async fn root_reports_are_recorded() {
        let f = start(None).await;
        let id = Uuid::new_v4();
        let mut env = Envelope::new(
            guest_sender(id),
            ConductorRequest::ReportRoot {
                instance_id: id,
                user: "root".into(),
            },
        );
        env.sent = Utc::now();
        f.send(&env).await;
        // Not batched: recorded without the clock moving.
        let start = std::time::Instant::now();
        while f.store.get_root_history(id).await.unwrap().is_none() {
            assert!(
                start.elapsed() < LIMIT,
                "the root report was never recorded"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            f.store.get_root_history(id).await.unwrap().unwrap().user,
            "root"
        );
        f.end().await;
    }
}
