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
use std::time::Duration;
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
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let mut sub = self.bus.subscribe(CONDUCTOR_TOPIC).await?;
        let mut batch: Vec<(ServiceStatusRecord, Delivery)> = Vec::new();
        // When the open batch is due at the latest.
        let mut due = tokio::time::Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let wait = if batch.is_empty() {
                Duration::from_secs(3600)
            } else {
                self.batch_idle
                    .min(due.saturating_duration_since(tokio::time::Instant::now()))
            };
            tokio::select! {
                r = shutdown.changed() => if r.is_err() { break },
                d = sub.next() => match d {
                    Ok(Some(d)) => {
                        if let Some(rec) = self.handle(&d.body).await {
                            if batch.is_empty() {
                                due = tokio::time::Instant::now() + self.batch_window;
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
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                _ = tokio::time::sleep(wait) => self.flush(&mut batch).await,
            }
        }
        self.flush(&mut batch).await;
        Ok(())
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
            } => Some(ServiceStatusRecord {
                instance_id,
                status,
                reason,
                volume: fs.map(|f| VolumeUsage {
                    used_bytes: f.used_bytes,
                    total_bytes: f.total_bytes,
                }),
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
            } => {
                let Some(mut b) = self.store.get_backup(backup_id).await? else {
                    return Err(Error::not_found("Backup", backup_id));
                };
                if b.instance_id != Some(instance_id) {
                    return Err(Error::Forbidden {
                        message: format!("instance {instance_id} reported on backup {backup_id} of another instance"),
                    });
                }
                b.state = state;
                if size.is_some() {
                    b.size = size;
                }
                if checksum.is_some() {
                    b.checksum = checksum;
                }
                if location.is_some() {
                    b.location = location;
                }
                b.updated = self.clock.now();
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::memory::{ManualClock, MemoryBus, MemoryStore};
    use crate::model::{Access, Instance};
    use crate::ports::{Expect, InfraStore, MessageBus};
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
            },
        );
        env.sent = sent;
        env
    }

    async fn wait_status(store: &MemoryStore, id: Uuid, want: ServiceStatus) {
        for _ in 0..500 {
            if store
                .get_service_status(id)
                .await
                .unwrap()
                .is_some_and(|s| s.status == want)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "status of {id} never became {want:?}: {:?}",
            store.get_service_status(id).await.unwrap()
        );
    }

    struct Fixture {
        store: Arc<MemoryStore>,
        bus: Arc<MemoryBus>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
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
        let mut c = Conductor::new(store.clone(), bus.clone(), clock, keys);
        tune(&mut c);
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(async move { c.run(rx).await.unwrap() });
        Fixture {
            store,
            bus,
            stop,
            task,
        }
    }

    async fn send(bus: &MemoryBus, env: &Envelope<ConductorRequest>) {
        bus.cast(CONDUCTOR_TOPIC, env.encode().unwrap())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn heartbeats_are_recorded_and_older_ones_dropped() {
        let f = start(None).await;
        let id = Uuid::new_v4();
        let t0 = Utc::now();
        put_instance(
            &f.store,
            instance(id, TaskStatus::None, t0),
            ServiceStatus::New,
        )
        .await;
        send(
            &f.bus,
            &heartbeat(id, ServiceStatus::Healthy, t0 + ChronoDuration::seconds(10)),
        )
        .await;
        wait_status(&f.store, id, ServiceStatus::Healthy).await;
        // An older report (sent before the one recorded) is dropped ...
        send(
            &f.bus,
            &heartbeat(id, ServiceStatus::Shutdown, t0 + ChronoDuration::seconds(5)),
        )
        .await;
        // ... a newer one is not.
        let barrier = Uuid::new_v4();
        put_instance(
            &f.store,
            instance(barrier, TaskStatus::None, t0),
            ServiceStatus::New,
        )
        .await;
        send(&f.bus, &heartbeat(barrier, ServiceStatus::Healthy, t0)).await;
        wait_status(&f.store, barrier, ServiceStatus::Healthy).await;
        assert_eq!(
            f.store
                .get_service_status(id)
                .await
                .unwrap()
                .unwrap()
                .status,
            ServiceStatus::Healthy
        );
        send(
            &f.bus,
            &heartbeat(id, ServiceStatus::Crashed, t0 + ChronoDuration::seconds(20)),
        )
        .await;
        wait_status(&f.store, id, ServiceStatus::Crashed).await;
        let _ = f.stop.send(true);
        f.task.await.unwrap();
    }

    #[tokio::test]
    async fn a_batch_is_written_once_no_report_comes_for_the_idle_gap() {
        // The window alone would hold the heartbeat for a minute; the idle gap writes it at once.
        let f = start_tuned(None, |c| {
            c.batch_window = Duration::from_secs(60);
            c.batch_idle = Duration::from_millis(5);
        })
        .await;
        let id = Uuid::new_v4();
        let t0 = Utc::now();
        put_instance(
            &f.store,
            instance(id, TaskStatus::None, t0),
            ServiceStatus::New,
        )
        .await;
        send(&f.bus, &heartbeat(id, ServiceStatus::Healthy, t0)).await;
        wait_status(&f.store, id, ServiceStatus::Healthy).await;
        let _ = f.stop.send(true);
        f.task.await.unwrap();
    }

    #[tokio::test]
    async fn a_steady_trickle_is_written_within_the_batch_window() {
        // Reports keep coming faster than the idle gap: the batch is still written when its first heartbeat has
        // waited the window, not only once the batch is full.
        let f = start_tuned(None, |c| {
            c.batch_window = Duration::from_millis(100);
            c.batch_idle = Duration::from_secs(60);
        })
        .await;
        let (id, busy) = (Uuid::new_v4(), Uuid::new_v4());
        let t0 = Utc::now();
        for i in [id, busy] {
            put_instance(
                &f.store,
                instance(i, TaskStatus::None, t0),
                ServiceStatus::New,
            )
            .await;
        }
        send(&f.bus, &heartbeat(id, ServiceStatus::Healthy, Utc::now())).await;
        let bus = f.bus.clone();
        let trickle = tokio::spawn(async move {
            loop {
                send(&bus, &heartbeat(busy, ServiceStatus::Healthy, Utc::now())).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        wait_status(&f.store, id, ServiceStatus::Healthy).await;
        trickle.abort();
        let _ = f.stop.send(true);
        f.task.await.unwrap();
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
        send(&f.bus, &heartbeat(id, ServiceStatus::Healthy, t0)).await;
        let barrier = Uuid::new_v4();
        put_instance(
            &f.store,
            instance(barrier, TaskStatus::None, t0),
            ServiceStatus::New,
        )
        .await;
        send(&f.bus, &heartbeat(barrier, ServiceStatus::Healthy, t0)).await;
        wait_status(&f.store, barrier, ServiceStatus::Healthy).await;
        assert_eq!(
            f.store
                .get_service_status(id)
                .await
                .unwrap()
                .unwrap()
                .status,
            ServiceStatus::RestartRequired
        );
        let _ = f.stop.send(true);
        f.task.await.unwrap();
    }

    #[tokio::test]
    async fn forged_and_unsigned_reports_are_rejected() {
        let key = Secret::new("guest-key");
        let f = start(Some(Arc::new(SharedKey(key.clone())))).await;
        let t0 = Utc::now();
        let (a, b, good) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        for id in [a, b, good] {
            put_instance(
                &f.store,
                instance(id, TaskStatus::None, t0),
                ServiceStatus::New,
            )
            .await;
        }
        // Unsigned.
        send(&f.bus, &heartbeat(a, ServiceStatus::Healthy, t0)).await;
        // Signed with the wrong key.
        send(
            &f.bus,
            &heartbeat(a, ServiceStatus::Healthy, t0)
                .signed(&Secret::new("forged"))
                .unwrap(),
        )
        .await;
        // Signed correctly, but guest a reporting for instance b.
        let mut env = heartbeat(b, ServiceStatus::Healthy, t0);
        env.sender = guest_sender(a);
        send(&f.bus, &env.signed(&key).unwrap()).await;
        // A genuine report goes through.
        send(
            &f.bus,
            &heartbeat(good, ServiceStatus::Healthy, t0)
                .signed(&key)
                .unwrap(),
        )
        .await;
        wait_status(&f.store, good, ServiceStatus::Healthy).await;
        assert_eq!(
            f.store.get_service_status(a).await.unwrap().unwrap().status,
            ServiceStatus::New
        );
        assert_eq!(
            f.store.get_service_status(b).await.unwrap().unwrap().status,
            ServiceStatus::New
        );
        let _ = f.stop.send(true);
        f.task.await.unwrap();
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
        send(&f.bus, &env).await;
        for _ in 0..500 {
            if f.store.get_root_history(id).await.unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            f.store.get_root_history(id).await.unwrap().unwrap().user,
            "root"
        );
        let _ = f.stop.send(true);
        f.task.await.unwrap();
    }
}
