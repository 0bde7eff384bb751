//! Clusters: a named group of member instances of one datastore version working as one database (Redis
//! Cluster, MariaDB Galera), with upstream's cluster tasks, and (beyond upstream) a scaling policy the task
//! manager follows.
//!
//! Members are ordinary [`Instance`](super::Instance) rows whose `cluster_id` names the cluster; the cluster row
//! holds what is the cluster's own: its task, its internal account's password (sealed at rest), its policy.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{InstanceFault, Locality};
use crate::error::{Error, Result};

/// The fewest members a cluster of `manager` may have (Redis Cluster: three primaries, so that a majority
/// survives one; Galera: three, so that a quorum survives one).
pub fn min_members(manager: super::Manager) -> u32 {
    match manager {
        super::Manager::Redis | super::Manager::Mysql | super::Manager::Mariadb => 3,
        _ => 1,
    }
}

/// The primary each of `new_replicas` serves, given the `primaries` (in joining order) and the assignments
/// `existing`: every new replica goes to the primary with the fewest replicas so far (the first of equals), so
/// replicas spread evenly. Answers `(replica, primary)` pairs in the order of `new_replicas`; none without a
/// primary.
pub fn assign_replicas(
    primaries: &[Uuid],
    existing: &std::collections::BTreeMap<Uuid, Uuid>,
    new_replicas: &[Uuid],
) -> Vec<(Uuid, Uuid)> {
    let mut counts: Vec<(Uuid, usize)> = primaries
        .iter()
        .map(|p| (*p, existing.values().filter(|q| *q == p).count()))
        .collect();
    let mut out = Vec::with_capacity(new_replicas.len());
    for r in new_replicas {
        let Some(slot) = counts.iter_mut().min_by_key(|(_, n)| *n) else {
            break;
        };
        slot.1 += 1;
        out.push((*r, slot.0));
    }
    out
}

/// Upstream's cluster tasks (`trove/cluster/tasks.py`): code, name, description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClusterTask {
    /// No task.
    #[default]
    None,
    /// Being built (upstream BUILDING_INITIAL, shown as BUILDING).
    Building,
    /// Being deleted.
    Deleting,
    /// Adding a shard (upstream, MongoDB only; never set here).
    AddingShard,
    /// Growing.
    GrowingCluster,
    /// Shrinking.
    ShrinkingCluster,
    /// Upgrading, one member at a time.
    UpgradingCluster,
    /// Restarting, one member at a time.
    RestartingCluster,
    /// Updating (configuration).
    UpdatingCluster,
}

impl ClusterTask {
    /// Upstream's numeric id.
    pub fn code(self) -> u32 {
        match self {
            ClusterTask::None => 0x01,
            ClusterTask::Building => 0x02,
            ClusterTask::Deleting => 0x03,
            ClusterTask::AddingShard => 0x04,
            ClusterTask::GrowingCluster => 0x05,
            ClusterTask::ShrinkingCluster => 0x06,
            ClusterTask::UpgradingCluster => 0x07,
            ClusterTask::RestartingCluster => 0x08,
            ClusterTask::UpdatingCluster => 0x09,
        }
    }

    /// Upstream's name.
    pub fn name(self) -> &'static str {
        match self {
            ClusterTask::None => "NONE",
            ClusterTask::Building => "BUILDING",
            ClusterTask::Deleting => "DELETING",
            ClusterTask::AddingShard => "ADDING_SHARD",
            ClusterTask::GrowingCluster => "GROWING_CLUSTER",
            ClusterTask::ShrinkingCluster => "SHRINKING_CLUSTER",
            ClusterTask::UpgradingCluster => "UPGRADING_CLUSTER",
            ClusterTask::RestartingCluster => "RESTARTING_CLUSTER",
            ClusterTask::UpdatingCluster => "UPDATING_CLUSTER",
        }
    }

    /// Upstream's description.
    pub fn description(self) -> &'static str {
        match self {
            ClusterTask::None => "No tasks for the cluster.",
            ClusterTask::Building => "Building the initial cluster.",
            ClusterTask::Deleting => "Deleting the cluster.",
            ClusterTask::AddingShard => "Adding a shard to the cluster.",
            ClusterTask::GrowingCluster => "Increasing the size of the cluster.",
            ClusterTask::ShrinkingCluster => "Decreasing the size of the cluster.",
            ClusterTask::UpgradingCluster => "Upgrading the cluster to new version.",
            ClusterTask::RestartingCluster => "Restarting the cluster.",
            ClusterTask::UpdatingCluster => "Updating cluster.",
        }
    }

    /// Upstream's 422 when an action meets a cluster whose task does not allow it.
    pub fn busy(self) -> Error {
        Error::unprocessable(format!(
            "This action cannot be performed on the cluster while the current cluster task is '{}'.",
            self.name()
        ))
    }
}

/// Load figures a guest reports with its heartbeats (what a scaling policy judges). Each is `None` when the
/// engine does not have it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadMetrics {
    /// Memory in use as a fraction of the engine's limit (Redis `used_memory / maxmemory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used: Option<f64>,
    /// Operations (Redis commands, SQL statements) per second, averaged since the previous reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_per_sec: Option<f64>,
    /// Client connections now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    /// Galera: the fraction of time replication was paused by flow control since the previous reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_control_paused: Option<f64>,
    /// The engine's CPU use since the previous reading, as a fraction of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// The volume's used fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_used: Option<f64>,
}

impl LoadMetrics {
    /// The figure `metric` names, when reported.
    pub fn get(&self, metric: ScalingMetric) -> Option<f64> {
        match metric {
            ScalingMetric::MemoryUsed => self.memory_used,
            ScalingMetric::OpsPerSec => self.ops_per_sec,
            ScalingMetric::Connections => self.connections.map(|c| c as f64),
            ScalingMetric::FlowControlPaused => self.flow_control_paused,
            ScalingMetric::Cpu => self.cpu,
            ScalingMetric::VolumeUsed => self.volume_used,
        }
    }
}

/// What a scaling policy watches: one of a member's [`crate::ports::LoadMetrics`], averaged over the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalingMetric {
    /// Memory in use as a fraction of the limit (Redis).
    MemoryUsed,
    /// Operations per second per member.
    OpsPerSec,
    /// Client connections per member.
    Connections,
    /// Galera flow-control paused fraction.
    FlowControlPaused,
    /// CPU use as a fraction of one core.
    Cpu,
    /// The volume's used fraction.
    VolumeUsed,
}

impl ScalingMetric {
    /// The spelling in requests and events.
    pub fn as_str(self) -> &'static str {
        match self {
            ScalingMetric::MemoryUsed => "memory_used",
            ScalingMetric::OpsPerSec => "ops_per_sec",
            ScalingMetric::Connections => "connections",
            ScalingMetric::FlowControlPaused => "flow_control_paused",
            ScalingMetric::Cpu => "cpu",
            ScalingMetric::VolumeUsed => "volume_used",
        }
    }
}

/// A cluster's scaling policy (extension): the task manager grows the cluster by `step` members when the
/// metric's average over the members stays above `grow_above` for `breach_secs`, shrinks it by `step` when it stays
/// below `shrink_below` as long, never beyond `min_members`..=`max_members`, and waits `cooldown_secs` after each
/// action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingPolicy {
    /// Fewest members.
    pub min_members: u32,
    /// Most members.
    pub max_members: u32,
    /// What is watched.
    pub metric: ScalingMetric,
    /// Grow when the average is above this.
    pub grow_above: f64,
    /// Shrink when the average is below this.
    pub shrink_below: f64,
    /// How long a breach must last, seconds.
    pub breach_secs: u64,
    /// Quiet time after each action, seconds.
    pub cooldown_secs: u64,
    /// Members added or removed per action.
    pub step: u32,
}

impl ScalingPolicy {
    /// Checks the policy against the engine's minimum members; a 400 naming the field otherwise.
    pub fn validate(&self, engine_min: u32) -> Result<()> {
        let bad = |m: String| Err(Error::bad_request(m));
        if self.min_members < engine_min {
            return bad(format!(
                "min_members {} is below this datastore's minimum of {engine_min} members.",
                self.min_members
            ));
        }
        if self.max_members < self.min_members {
            return bad(format!(
                "max_members {} is below min_members {}.",
                self.max_members, self.min_members
            ));
        }
        if !(self.grow_above.is_finite() && self.shrink_below.is_finite()) {
            return bad("grow_above and shrink_below must be numbers.".into());
        }
        if self.shrink_below >= self.grow_above {
            return bad(format!(
                "shrink_below {} must be below grow_above {}.",
                self.shrink_below, self.grow_above
            ));
        }
        if self.step == 0 {
            return bad("step must be at least 1.".into());
        }
        Ok(())
    }
}

/// One cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Id.
    pub id: Uuid,
    /// Owning project.
    pub tenant_id: String,
    /// Name.
    pub name: String,
    /// Datastore version every member runs.
    pub datastore_version_id: Uuid,
    /// Current task.
    pub task: ClusterTask,
    /// Member placement.
    pub locality: Option<Locality>,
    /// Configuration group applied to every member.
    pub configuration_id: Option<Uuid>,
    /// Engine-specific options (Redis: `replicas_per_shard`).
    #[serde(default)]
    pub extended_properties: serde_json::Map<String, serde_json::Value>,
    /// The password of the cluster's internal account, sealed at rest (see [`crate::seal`]).
    pub secret: String,
    /// The root password given to every member once cluster root was enabled, sealed at rest (members added
    /// later get it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Scaling policy (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingPolicy>,
    /// When the last scaling action ended (for the cool-down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scaled: Option<DateTime<Utc>>,
    /// Redis Cluster replicas: each replica member and the primary member whose shard it serves (a replica owns
    /// no slots and takes over its primary's when that primary fails). Members not listed are primaries. The
    /// cluster workflows learn the engines' roles again before they act (a failover swaps them).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub replicas: std::collections::BTreeMap<Uuid, Uuid>,
    /// Last fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<InstanceFault>,
    /// Deleted (kept for listings with deleted rows).
    pub deleted: bool,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Last update.
    pub updated: DateTime<Utc>,
    /// Row version (optimistic concurrency; the store sets it on read).
    #[serde(skip)]
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_spread_over_the_primaries_with_fewest() {
        let p: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let r: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        let got = assign_replicas(&p, &Default::default(), &r);
        let to: Vec<Uuid> = got.iter().map(|(_, q)| *q).collect();
        assert_eq!(to, vec![p[0], p[1], p[2], p[0]]);
        // With p[0] and p[1] served already, the next goes to p[2].
        let existing = got[..2].iter().copied().collect();
        let more = assign_replicas(&p, &existing, &[Uuid::new_v4()]);
        assert_eq!(more[0].1, p[2]);
        assert!(assign_replicas(&[], &Default::default(), &r).is_empty());
    }

    fn policy() -> ScalingPolicy {
        ScalingPolicy {
            min_members: 3,
            max_members: 5,
            metric: ScalingMetric::OpsPerSec,
            grow_above: 1000.0,
            shrink_below: 100.0,
            breach_secs: 30,
            cooldown_secs: 60,
            step: 1,
        }
    }

    #[test]
    fn tasks_keep_upstreams_codes_and_names() {
        assert_eq!(ClusterTask::Building.name(), "BUILDING");
        assert_eq!(ClusterTask::Building.code(), 2);
        assert_eq!(ClusterTask::UpdatingCluster.code(), 9);
        assert_eq!(
            serde_json::to_value(ClusterTask::GrowingCluster).expect("json"),
            "GROWING_CLUSTER"
        );
        assert_eq!(ClusterTask::ShrinkingCluster.busy().fault().status, 422);
    }

    #[test]
    fn policies_are_checked() {
        assert!(policy().validate(3).is_ok());
        assert!(policy().validate(4).is_err());
        let mut p = policy();
        p.max_members = 2;
        assert!(p.validate(1).is_err());
        let mut p = policy();
        p.shrink_below = 2000.0;
        assert!(p.validate(3).is_err());
        let mut p = policy();
        p.step = 0;
        assert!(p.validate(3).is_err());
    }
}
