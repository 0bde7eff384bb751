use serde::{Deserialize, Serialize};

/// A quota resource (upstream `trove/quota/quota.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// Number of live instances.
    Instances,
    /// Total RAM of live instances, MB.
    Ram,
    /// Total volume GB of live instances.
    Volumes,
    /// Number of live backups.
    Backups,
}

impl Resource {
    /// Every resource, in upstream order.
    pub const ALL: [Resource; 4] = [
        Resource::Instances,
        Resource::Ram,
        Resource::Volumes,
        Resource::Backups,
    ];

    /// Upstream name.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Instances => "instances",
            Resource::Ram => "ram",
            Resource::Volumes => "volumes",
            Resource::Backups => "backups",
        }
    }

    /// Parses an upstream resource name.
    pub fn parse(name: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// Per-tenant limits; `-1` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLimits {
    /// Max instances (default 10).
    pub instances: i64,
    /// Max RAM MB (default unlimited).
    pub ram: i64,
    /// Max volume GB (default 40).
    pub volumes: i64,
    /// Max backups (default 50).
    pub backups: i64,
}

impl Default for QuotaLimits {
    fn default() -> Self {
        QuotaLimits {
            instances: 10,
            ram: -1,
            volumes: 40,
            backups: 50,
        }
    }
}

impl QuotaLimits {
    /// The limit of one resource.
    pub fn get(&self, r: Resource) -> i64 {
        match r {
            Resource::Instances => self.instances,
            Resource::Ram => self.ram,
            Resource::Volumes => self.volumes,
            Resource::Backups => self.backups,
        }
    }
    /// Sets the limit of one resource.
    pub fn set(&mut self, r: Resource, v: i64) {
        match r {
            Resource::Instances => self.instances = v,
            Resource::Ram => self.ram = v,
            Resource::Volumes => self.volumes = v,
            Resource::Backups => self.backups = v,
        }
    }
}

/// Usage of a tenant, always derived from live resources (never a counter that can drift).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QuotaUsage {
    /// Live (not deleted) instances.
    pub instances: i64,
    /// Sum of `ram_mb` of live instances.
    pub ram: i64,
    /// Sum of `volume_size` of live instances.
    pub volumes: i64,
    /// Live (not deleted) backups.
    pub backups: i64,
}

impl QuotaUsage {
    /// The usage of one resource.
    pub fn get(&self, r: Resource) -> i64 {
        match r {
            Resource::Instances => self.instances,
            Resource::Ram => self.ram,
            Resource::Volumes => self.volumes,
            Resource::Backups => self.backups,
        }
    }

    /// Resources of `check` whose usage is over `limits`.
    pub fn over(&self, limits: &QuotaLimits, check: &[Resource]) -> Vec<Resource> {
        check
            .iter()
            .copied()
            .filter(|r| limits.get(*r) >= 0 && self.get(*r) > limits.get(*r))
            .collect()
    }
}
