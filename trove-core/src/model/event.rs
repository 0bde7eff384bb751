//! Events: what the control plane decided and did on its own or for a user, kept for the API to list (a
//! replication set's switchovers, ejects and automatic failovers; later, scaling decisions).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Id.
    pub id: Uuid,
    /// Owning project.
    pub tenant_id: String,
    /// What happened: `switchover`, `eject`, `failover`, ...
    pub kind: String,
    /// The instances it concerns (for a replication set: the old source first, then the new one, then the rest).
    pub instances: Vec<Uuid>,
    /// When it ended.
    pub at: DateTime<Utc>,
    /// Whether it succeeded.
    pub ok: bool,
    /// One line for people.
    pub message: String,
    /// The facts (positions, reasons, timings), as the kind defines them.
    #[serde(default)]
    pub details: Value,
}

/// Which events to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this project's.
    pub tenant_id: Option<String>,
    /// Only those concerning this instance.
    pub instance_id: Option<Uuid>,
}

impl EventFilter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &Event) -> bool {
        self.tenant_id.as_ref().is_none_or(|t| *t == e.tenant_id)
            && self.instance_id.is_none_or(|i| e.instances.contains(&i))
    }
}
