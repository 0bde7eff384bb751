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
