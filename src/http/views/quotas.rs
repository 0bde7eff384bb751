//! Quota and limit views.

use serde_json::{json, Value};
use trove_core::api::QuotaView;
use trove_core::model::{QuotaLimits, Resource};

/// `{"quotas": [...]}` rows of a quota show.
pub fn show(q: &QuotaView) -> Value {
    let rows: Vec<Value> = Resource::ALL
        .iter()
        .map(|r| {
            json!({ "resource": r.as_str(), "in_use": q.usage.get(*r), "reserved": 0, "limit": q.limits.get(*r) })
        })
        .collect();
    json!({ "quotas": rows })
}

/// The `ABSOLUTE` entry of `GET /limits`.
pub fn absolute_limits(q: &QuotaView) -> Value {
    let mut o = json!({
        "verb": "ABSOLUTE",
        "max_instances": q.limits.instances,
        "max_backups": q.limits.backups,
        "max_volumes": q.limits.volumes,
    });
    if q.limits.ram >= 0 {
        o["max_ram"] = json!(q.limits.ram);
    }
    o
}

/// `PUT /mgmt/quotas/{project}`: the new limits.
pub fn updated(l: &QuotaLimits) -> Value {
    json!({ "quotas": { "instances": l.instances, "ram": l.ram, "volumes": l.volumes, "backups": l.backups } })
}

/// `GET /limits`: the absolute limits, then the rate limits' rows.
pub fn limits(q: &QuotaView, rate: Vec<Value>) -> Value {
    let mut rows = vec![absolute_limits(q)];
    rows.extend(rate);
    json!({ "limits": rows })
}
