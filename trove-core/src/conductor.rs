//! The conductor: receives guest reports on `trove-conductor` and records them in the store.
//!
//! Heartbeats are batched into [`InfraStore::put_service_statuses`](crate::ports::InfraStore::put_service_statuses);
//! a report older than the last one seen from the same instance (per kind of report) is dropped, and heartbeats
//! are ignored while the stored status is RESTART_REQUIRED (only a restart clears it) or DELETED. When built with
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
use crate::state::ServiceStatus;

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
    /// How long heartbeats are collected before one batched write.
    pub batch_window: Duration,
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
            batch_max: 512,
        }
    }

    /// Serves `trove-conductor` until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let mut sub = self.bus.subscribe(CONDUCTOR_TOPIC).await?;
        let mut batch: Vec<(ServiceStatusRecord, Delivery)> = Vec::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let wait = if batch.is_empty() {
                Duration::from_secs(3600)
            } else {
                self.batch_window
            };
            tokio::select! {
                r = shutdown.changed() => if r.is_err() { break },
                d = sub.next() => match d {
                    Ok(Some(d)) => {
                        if let Some(rec) = self.handle(&d.body).await {
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
        let mut records: Vec<ServiceStatusRecord> = items.iter().map(|(r, _)| r.clone()).collect();
        match self.filter_heartbeats(&mut records).await {
            Ok(()) => match self.store.put_service_statuses(&records).await {
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
            },
            Err(e) => {
                tracing::warn!(error = %e, "could not read statuses; requeueing heartbeats");
                for (_, d) in items {
                    let _ = d.nack(true).await;
                }
            }
        }
    }

    /// Keeps the newest heartbeat per instance and drops those the stored status says to ignore.
    async fn filter_heartbeats(&self, records: &mut Vec<ServiceStatusRecord>) -> Result<()> {
        let mut newest: HashMap<Uuid, ServiceStatusRecord> = HashMap::new();
        for r in records.drain(..) {
            newest.insert(r.instance_id, r);
        }
        let ids: Vec<Uuid> = newest.keys().copied().collect();
        for st in self.store.get_service_statuses(&ids).await? {
            if matches!(
                st.status,
                ServiceStatus::RestartRequired | ServiceStatus::Deleted
            ) {
                newest.remove(&st.instance_id);
            }
        }
        records.extend(newest.into_values());
        Ok(())
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
