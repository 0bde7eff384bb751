//! Guest-log views: upstream's `{"logs": [...]}` / `{"log": {...}}`, every field a string.

use serde_json::{json, Value};
use trove_core::model::GuestLog;

/// `GET /instances/{id}/log`.
pub fn list(logs: &[GuestLog]) -> Value {
    let views: Vec<_> = logs.iter().map(|l| l.view()).collect();
    json!({ "logs": views })
}

/// `POST /instances/{id}/log`.
pub fn show(log: &GuestLog) -> Value {
    json!({ "log": log.view() })
}
