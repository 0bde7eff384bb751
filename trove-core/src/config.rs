//! Tunables of the control plane, with upstream defaults where upstream has one.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Control-plane settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoreConfig {
    /// Region shown in instance views.
    pub region: String,
    /// Datastore used when a create request names none (upstream `default_datastore`).
    pub default_datastore: Option<String>,
    /// A guest whose last heartbeat is older than this is failed (upstream 90 s).
    #[serde(with = "secs")]
    pub agent_heartbeat_expiry: Duration,
    /// How often guests heartbeat (upstream 30 s; ours is shorter so failures show within seconds).
    #[serde(with = "secs")]
    pub report_interval: Duration,
    /// How often the health monitor sweeps heartbeats.
    #[serde(with = "secs")]
    pub health_sweep_interval: Duration,
    /// Build deadline: an instance not HEALTHY by then ends in BUILDING_ERROR_TIMEOUT_GA (upstream 1800 s).
    #[serde(with = "secs")]
    pub usage_timeout: Duration,
    /// A guest asked to do work (prepare, rebuild) that sends no report at all for this long ends the wait with
    /// FAILED_TIMEOUT_GUESTAGENT, long before `usage_timeout`: a working guest reports every `report_interval`.
    #[serde(with = "secs")]
    pub guest_silence_timeout: Duration,
    /// Quick guest calls (upstream 15 s).
    #[serde(with = "secs")]
    pub agent_call_low_timeout: Duration,
    /// Slow guest calls (upstream 180 s).
    #[serde(with = "secs")]
    pub agent_call_high_timeout: Duration,
    /// Lease of a claimed workflow; a worker that dies loses its claim after this.
    #[serde(with = "secs")]
    pub workflow_lease: Duration,
    /// Largest volume accepted per instance, GB (upstream 10).
    pub max_accepted_volume_size: u32,
    /// Whether instances get volumes (upstream `volume_support`).
    pub volume_support: bool,
    /// Default page size of lists (upstream 20).
    pub page_size: usize,
    /// How long the API may answer datastores, versions and flavors from its in-memory copy of the catalog.
    /// Writes through this process's store are seen at once whatever this is; writes by another process
    /// (`trove-manage`, another API worker) within this time. `0` reads the store on every request.
    #[serde(with = "secs")]
    pub catalog_cache_ttl: Duration,
    /// Whether the task manager fails a replication source over on its own when its engine stops answering
    /// (a replication set can turn it off with the instance's `auto_failover`).
    pub auto_failover: bool,
    /// How long a source's guest must keep reporting its engine down (not answering, crashed, stopped) before it
    /// is failed over: a blip shorter than this is not.
    #[serde(with = "secs")]
    pub failover_grace: Duration,
    /// How long a source's guest may send no report before it is failed over (the guest or its host is gone).
    #[serde(with = "secs")]
    pub failover_silence: Duration,
    /// The most acknowledged writes (as time: how far behind the source's last sampled position the best replica
    /// is) an automatic failover may lose; beyond it the failover waits for a replica to catch up and says why in
    /// the source's fault. `0` turns the bound off.
    #[serde(with = "secs")]
    pub failover_max_loss: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            region: "RegionOne".into(),
            default_datastore: None,
            agent_heartbeat_expiry: Duration::from_secs(90),
            report_interval: Duration::from_secs(2),
            health_sweep_interval: Duration::from_secs(2),
            usage_timeout: Duration::from_secs(1800),
            guest_silence_timeout: Duration::from_secs(60),
            agent_call_low_timeout: Duration::from_secs(15),
            agent_call_high_timeout: Duration::from_secs(180),
            workflow_lease: Duration::from_secs(30),
            max_accepted_volume_size: 10,
            volume_support: true,
            page_size: 20,
            catalog_cache_ttl: Duration::from_secs(1),
            auto_failover: true,
            failover_grace: Duration::from_secs(3),
            failover_silence: Duration::from_secs(8),
            failover_max_loss: Duration::from_secs(10),
        }
    }
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        if !(v.is_finite() && v >= 0.0) {
            return Err(serde::de::Error::custom(
                "a duration must be a non-negative number of seconds",
            ));
        }
        Ok(Duration::from_secs_f64(v))
    }
}
