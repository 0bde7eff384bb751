//! Flavor views.

use serde_json::{json, Value};
use trove_core::model::Flavor;

use super::links;
use crate::http::extract::Caller;

/// A flavor.
pub fn flavor(c: &Caller, f: &Flavor) -> Value {
    let int_id = f.id.parse::<i64>().ok();
    json!({
        "id": int_id,
        "str_id": f.id,
        "name": f.name,
        "ram": f.ram_mb,
        "vcpus": f.vcpus,
        "disk": f.disk_gb,
        "ephemeral": f.ephemeral_gb,
        "links": links(c, "flavors", &f.id),
    })
}

/// `GET /flavors` and `/datastores/{ds}/versions/{version}/flavors`.
pub fn list(c: &Caller, all: &[Flavor]) -> Value {
    let rows: Vec<Value> = all.iter().map(|f| flavor(c, f)).collect();
    json!({ "flavors": rows })
}

/// `GET /flavors/{id}`.
pub fn show(c: &Caller, f: &Flavor) -> Value {
    json!({ "flavor": flavor(c, f) })
}
