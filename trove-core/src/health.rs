//! The health monitor: a background sweep that records guests whose heartbeat expired.
//!
//! Every `health_sweep_interval` it looks at live instances with task NONE. A guest whose last heartbeat is
//! older than `agent_heartbeat_expiry` (and whose status is not RESTART_REQUIRED, NEW, BUILDING, DELETED or
//! already failed) is stored as FAILED_TIMEOUT_GUESTAGENT, keeping the old heartbeat time. The next heartbeat
//! the conductor records restores the reported status.

use tokio::sync::watch;

use crate::config::CoreConfig;
use crate::error::Result;
use crate::model::{InstanceFilter, ServiceStatusRecord};
use crate::ports::{DynClock, DynStore};
use crate::state::{heartbeat_expired, ServiceStatus, TaskStatus};

/// Sweeps heartbeats. Build with [`HealthMonitor::new`], then [`HealthMonitor::run`] it.
pub struct HealthMonitor {
    store: DynStore,
    clock: DynClock,
    config: CoreConfig,
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("expiry", &self.config.agent_heartbeat_expiry)
            .finish()
    }
}

/// Whether the sweep may fail a guest currently reporting `status`.
pub fn sweepable(status: ServiceStatus) -> bool {
    !matches!(
        status,
        ServiceStatus::RestartRequired
            | ServiceStatus::New
            | ServiceStatus::Building
            | ServiceStatus::Deleted
            | ServiceStatus::FailedTimeoutGuestagent
    )
}

impl HealthMonitor {
    /// A monitor over `store`.
    pub fn new(store: DynStore, clock: DynClock, config: CoreConfig) -> HealthMonitor {
        HealthMonitor {
            store,
            clock,
            config,
        }
    }

    /// One sweep; answers how many guests were marked failed.
    pub async fn sweep(&self) -> Result<usize> {
        let now = self.clock.now();
        let instances = self
            .store
            .list_instances(&InstanceFilter {
                include_clustered: true,
                ..Default::default()
            })
            .await?;
        let ids: Vec<_> = instances
            .iter()
            .filter(|i| i.task == TaskStatus::None)
            .map(|i| i.id)
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let expired: Vec<ServiceStatusRecord> = self
            .store
            .get_service_statuses(&ids)
            .await?
            .into_iter()
            .filter(|s| sweepable(s.status) && heartbeat_expired(s.updated_at, now, self.config.agent_heartbeat_expiry))
            .map(|s| {
                tracing::warn!(instance = %s.instance_id, last = %s.updated_at, "guest heartbeat expired");
                ServiceStatusRecord {
                    status: ServiceStatus::FailedTimeoutGuestagent,
                    reason: Some(format!("no heartbeat since {}", s.updated_at)),
                    ..s
                }
            })
            .collect();
        if !expired.is_empty() {
            self.store.put_service_statuses(&expired).await?;
        }
        Ok(expired.len())
    }

    /// Sweeps every `health_sweep_interval` (on the injected clock) until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            tokio::select! {
                r = shutdown.changed() => if r.is_err() { return Ok(()) },
                _ = self.clock.sleep(self.config.health_sweep_interval) => {
                    if let Err(e) = self.sweep().await {
                        tracing::warn!(error = %e, "health sweep failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conductor::tests::{instance, put_instance};
    use crate::memory::{ManualClock, MemoryStore};
    use crate::ports::{Clock, InfraStore};
    use std::sync::Arc;
    use std::time::Duration;
    use uuid::Uuid;

    #[tokio::test]
    async fn expired_heartbeats_are_recorded_as_failed_and_restored_by_the_next_one() {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::new());
        let t0 = clock.now();
        let config = CoreConfig::default();
        let hm = HealthMonitor::new(store.clone(), clock.clone(), config.clone());
        let (live, restart, building) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        put_instance(
            &store,
            instance(live, TaskStatus::None, t0),
            ServiceStatus::Healthy,
        )
        .await;
        put_instance(
            &store,
            instance(restart, TaskStatus::None, t0),
            ServiceStatus::RestartRequired,
        )
        .await;
        put_instance(
            &store,
            instance(building, TaskStatus::Building, t0),
            ServiceStatus::Building,
        )
        .await;

        clock.advance(config.agent_heartbeat_expiry - Duration::from_secs(1));
        assert_eq!(hm.sweep().await.unwrap(), 0);
        clock.advance(Duration::from_secs(1));
        assert_eq!(hm.sweep().await.unwrap(), 1);
        let st = store.get_service_status(live).await.unwrap().unwrap();
        assert_eq!(st.status, ServiceStatus::FailedTimeoutGuestagent);
        assert_eq!(
            st.updated_at, t0,
            "the heartbeat time must stay the last real heartbeat"
        );
        for (id, want) in [
            (restart, ServiceStatus::RestartRequired),
            (building, ServiceStatus::Building),
        ] {
            assert_eq!(
                store.get_service_status(id).await.unwrap().unwrap().status,
                want
            );
        }
        // Sweeping again changes nothing.
        assert_eq!(hm.sweep().await.unwrap(), 0);
        // A later heartbeat (what the conductor writes) restores the guest.
        store
            .put_service_statuses(&[ServiceStatusRecord {
                instance_id: live,
                status: ServiceStatus::Healthy,
                reason: None,
                volume: None,
                load: None,
                updated_at: clock.now(),
            }])
            .await
            .unwrap();
        assert_eq!(hm.sweep().await.unwrap(), 0);
        assert_eq!(
            store
                .get_service_status(live)
                .await
                .unwrap()
                .unwrap()
                .status,
            ServiceStatus::Healthy
        );
    }

    #[tokio::test]
    async fn the_background_sweep_runs_on_the_injected_clock() {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::new());
        let config = CoreConfig::default();
        let id = Uuid::new_v4();
        put_instance(
            &store,
            instance(id, TaskStatus::None, clock.now()),
            ServiceStatus::Healthy,
        )
        .await;
        let hm = HealthMonitor::new(store.clone(), clock.clone(), config.clone());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move { hm.run(rx).await });
        let (interval, expiry) = (config.health_sweep_interval, config.agent_heartbeat_expiry);
        let limit = Duration::from_secs(10);
        let status = || async { store.get_service_status(id).await.unwrap().unwrap().status };
        let t0 = clock.instant();
        let mut next = t0 + interval;
        assert!(
            clock.wait_for_deadline(next, limit).await,
            "the monitor never waited for its first sweep"
        );
        // Every sweep before the heartbeat expired leaves the guest alone; a sweep is over once the monitor
        // waits for the next one.
        while next - t0 < expiry {
            clock.advance_to(next);
            next += interval;
            assert!(
                clock.wait_for_deadline(next, limit).await,
                "no sweep after {:?}",
                next - t0 - interval
            );
            assert_eq!(
                status().await,
                ServiceStatus::Healthy,
                "marked after {:?}",
                next - t0 - interval
            );
        }
        // The first sweep at or past the expiry marks it.
        clock.advance_to(next);
        assert!(
            clock.wait_for_deadline(next + interval, limit).await,
            "no sweep after the expiry"
        );
        assert_eq!(
            status().await,
            ServiceStatus::FailedTimeoutGuestagent,
            "the sweep never marked the stale guest"
        );
        let _ = tx.send(true);
        task.await.unwrap().unwrap();
    }
}
