use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::state::{ServerStatus, ServiceStatus, TaskStatus};

/// A database instance as the control plane records it.
///
/// `task` and `server_status` are written by the task manager; the guest's view lives apart in
/// [`ServiceStatusRecord`] so that heartbeats never contend with workflow writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Instance id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Owning tenant (project).
    pub tenant_id: String,
    /// Datastore version it runs.
    pub datastore_version_id: Uuid,
    /// Flavor id.
    pub flavor_id: String,
    /// RAM of the flavor in MB, kept with the instance so quota usage is derivable from instances alone.
    pub ram_mb: u32,
    /// Requested volume size in GB (`None` when the deployment has no volume support).
    pub volume_size: Option<u32>,
    /// Requested volume type.
    pub volume_type: Option<String>,
    /// Current task (what the task manager is doing).
    pub task: TaskStatus,
    /// Last known status of the server (compute view).
    pub server_status: ServerStatus,
    /// Compute server id, once created.
    pub server_id: Option<String>,
    /// Volume id, once created.
    pub volume_id: Option<String>,
    /// Host the server was placed on.
    pub host: Option<String>,
    /// Addresses to connect to.
    pub addresses: Vec<Address>,
    /// Engine port, when it is not the engine's standard port.
    pub port: Option<u16>,
    /// Attached configuration group.
    pub configuration_id: Option<Uuid>,
    /// The source this instance replicates from.
    pub replica_of: Option<Uuid>,
    /// Placement policy relative to its replica set.
    pub locality: Option<Locality>,
    /// Region name.
    pub region: String,
    /// Availability zone asked for.
    pub availability_zone: Option<String>,
    /// Access settings.
    pub access: Access,
    /// Last fault, shown in the detail view.
    pub fault: Option<InstanceFault>,
    /// Cluster membership.
    pub cluster_id: Option<Uuid>,
    /// Automatic failover of this instance as a replication source (`None`: the deployment's setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_failover: Option<bool>,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Last update time.
    pub updated: DateTime<Utc>,
    /// Set once the delete workflow finished; deleted rows stay for history.
    pub deleted: bool,
    /// When it was deleted.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Optimistic-concurrency version; the store bumps it on every write.
    pub version: u64,
}

/// An address where the instance can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// IP address or host name.
    pub address: String,
    /// `private` or `public`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Access settings of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Access {
    /// Whether the instance has a public address.
    pub is_public: bool,
    /// CIDRs allowed to connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_cidrs: Vec<String>,
}

/// Placement relative to the other members of a replica set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Locality {
    /// All on one host; fail if impossible.
    Affinity,
    /// All on one host when possible.
    SoftAffinity,
    /// Each on a different host; fail if impossible.
    AntiAffinity,
    /// Each on a different host when possible.
    SoftAntiAffinity,
}

impl Locality {
    /// Upstream spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Locality::Affinity => "affinity",
            Locality::SoftAffinity => "soft-affinity",
            Locality::AntiAffinity => "anti-affinity",
            Locality::SoftAntiAffinity => "soft-anti-affinity",
        }
    }
}

/// The last fault recorded on an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceFault {
    /// What the user sees.
    pub message: String,
    /// Details, shown to admins only.
    pub details: String,
    /// When it happened.
    pub created: DateTime<Utc>,
}

/// The guest's reported state of an instance (upstream `service_statuses`); `updated_at` is the heartbeat time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatusRecord {
    /// Instance id.
    pub instance_id: Uuid,
    /// Reported status.
    pub status: ServiceStatus,
    /// Why, when the status is not healthy (e.g. the engine's exit reason).
    pub reason: Option<String>,
    /// Volume usage last reported by the guest.
    pub volume: Option<VolumeUsage>,
    /// Load figures last reported by the guest (cluster members' engines report them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<super::LoadMetrics>,
    /// Heartbeat time: refreshed on every save.
    pub updated_at: DateTime<Utc>,
}

/// Filesystem usage of an instance's volume.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VolumeUsage {
    /// Bytes used.
    pub used_bytes: u64,
    /// Bytes allowed.
    pub total_bytes: u64,
}

impl VolumeUsage {
    /// Used space in GB, as upstream shows it.
    pub fn used_gb(&self) -> f64 {
        self.used_bytes as f64 / (1024.0 * 1024.0 * 1024.0)
    }
    /// Used share in percent.
    pub fn used_percent(&self) -> f64 {
        if self.total_bytes == 0 {
            0.0
        } else {
            self.used_bytes as f64 * 100.0 / self.total_bytes as f64
        }
    }
}

/// A record that root was enabled on an instance (upstream `root_enabled_history`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootHistory {
    /// Instance id.
    pub instance_id: Uuid,
    /// Who enabled it.
    pub user: String,
    /// When.
    pub created: DateTime<Utc>,
}

/// Which instances to list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceFilter {
    /// Only this tenant's; `None` for all tenants (admin listings, sweeps).
    pub tenant_id: Option<String>,
    /// Include deleted rows.
    pub include_deleted: bool,
    /// Include cluster members.
    pub include_clustered: bool,
    /// Only replicas of this source.
    pub replica_of: Option<Uuid>,
    /// Only instances using this configuration group.
    pub configuration_id: Option<Uuid>,
    /// Only members of this cluster (implies `include_clustered`).
    pub cluster_id: Option<Uuid>,
}

impl InstanceFilter {
    /// Live instances of one tenant.
    pub fn tenant(tenant_id: impl Into<String>) -> InstanceFilter {
        InstanceFilter {
            tenant_id: Some(tenant_id.into()),
            include_clustered: true,
            ..Default::default()
        }
    }

    /// Whether `instance` passes the filter. Store implementations may use this to stay consistent.
    pub fn matches(&self, instance: &Instance) -> bool {
        (self.include_deleted || !instance.deleted)
            && (self.include_clustered
                || self.cluster_id.is_some()
                || instance.cluster_id.is_none())
            && self
                .cluster_id
                .is_none_or(|c| Some(c) == instance.cluster_id)
            && self
                .tenant_id
                .as_ref()
                .is_none_or(|t| *t == instance.tenant_id)
            && self
                .replica_of
                .is_none_or(|r| Some(r) == instance.replica_of)
            && self
                .configuration_id
                .is_none_or(|c| Some(c) == instance.configuration_id)
    }
}
