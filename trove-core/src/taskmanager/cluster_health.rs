//! Full stops of clusters: on every scan a task manager looks at the clusters with no task; when every member's
//! guest keeps reporting its engine down (stopped, crashed, not answering) for [`CoreConfig::failover_grace`] —
//! a host restart, a power cut, every engine killed — the cluster recovery workflow
//! ([`super::workflows::cluster::ClusterRecover`]) starts it again from its most advanced member. Galera cannot
//! come back from that on its own (no member may bootstrap a second primary component), and upstream left it to an
//! operator. One member down is not a full stop: the compute's supervision restarts it and it rejoins the others.
//!
//! [`CoreConfig::failover_grace`]: crate::CoreConfig::failover_grace

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::workflows::cluster::{cluster_members, ClusterRecoverParams};
use super::TaskManager;
use crate::error::{Error, Result};
use crate::model::{ClusterTask, Workflow};
use crate::ports::{ChangeSet, Expect, Write};
use crate::state::{ServiceStatus, TaskStatus};

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a reported status means the engine is down (and was up once: not a member still being built).
fn down(s: ServiceStatus) -> bool {
    !s.is_datastore_running()
        && !matches!(
            s,
            ServiceStatus::New
                | ServiceStatus::Building
                | ServiceStatus::InstanceReady
                | ServiceStatus::Deleted
                | ServiceStatus::RestartRequired
                | ServiceStatus::Upgrading
                | ServiceStatus::Restarting
        )
}

impl TaskManager {
    /// One scan for clusters stopped as a whole; answers the recovery workflows started.
    pub async fn check_cluster_stops(&self) -> Result<Vec<Uuid>> {
        let e = &self.engine;
        let now = e.clock.now();
        let fresh = chrono::Duration::from_std(e.config.report_interval * 3)
            .unwrap_or(chrono::Duration::seconds(6));
        let grace = chrono::Duration::from_std(e.config.failover_grace)
            .unwrap_or(chrono::Duration::seconds(3));
        let mut started = Vec::new();
        for c in e.store.list_clusters(None).await? {
            if c.task != ClusterTask::None {
                lock(&self.stopped).remove(&c.id);
                continue;
            }
            let members = cluster_members(e.store.as_ref(), c.id).await?;
            let ids: Vec<Uuid> = members.iter().map(|m| m.id).collect();
            let statuses = e.store.get_service_statuses(&ids).await?;
            let all_down = !members.is_empty()
                && members.iter().all(|m| m.task == TaskStatus::None)
                && statuses.len() == members.len()
                && statuses
                    .iter()
                    .all(|s| now - s.updated_at <= fresh && down(s.status));
            if !all_down {
                lock(&self.stopped).remove(&c.id);
                continue;
            }
            let since: DateTime<Utc> = *lock(&self.stopped).entry(c.id).or_insert(now);
            if now - since < grace {
                continue;
            }
            let params = ClusterRecoverParams {
                cluster_id: c.id,
                members: ids.clone(),
            };
            let wf = Workflow::new(ids[0], &params, now)?;
            let wf_id = wf.id;
            let mut cluster = c.clone();
            cluster.task = ClusterTask::RestartingCluster;
            cluster.updated = now;
            let cs = ChangeSet::new()
                .with(Write::Workflow {
                    workflow: wf,
                    expect: Expect::Absent,
                })
                .with(Write::Cluster {
                    cluster,
                    expect: Expect::Version(c.version),
                });
            match e.store.commit(cs).await {
                Ok(()) => {
                    tracing::warn!(cluster = %c.id, members = ids.len(), "every member of the cluster is down; starting it again");
                    lock(&self.stopped).remove(&c.id);
                    started.push(wf_id);
                }
                Err(Error::Conflict { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(started)
    }
}
