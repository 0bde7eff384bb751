//! Configuration group and configuration parameter views.

use serde_json::{json, Value};
use trove_core::api::{ConfigurationView, Page};
use trove_core::model::ConfigParam;
use uuid::Uuid;

use super::ts;
use crate::http::extract::Caller;

/// A configuration group: detailed (show, create) or the list form.
pub fn configuration(v: &ConfigurationView, detail: bool) -> Value {
    let cfg = &v.configuration;
    let mut o = json!({
        "id": cfg.id,
        "name": cfg.name,
        "description": cfg.description,
        "created": ts(&cfg.created),
        "updated": ts(&cfg.updated),
        "datastore_name": v.datastore.name,
        "datastore_version_id": v.datastore_version.id,
        "datastore_version_name": v.datastore_version.name,
        "datastore_version_number": v.datastore_version.version,
    });
    if detail {
        o["values"] = Value::Object(cfg.values.clone());
        o["instance_count"] = json!(v.instance_count);
    }
    o
}

/// A configuration parameter rule.
pub fn parameter(p: &ConfigParam) -> Value {
    let mut o = json!({
        "name": p.name,
        "datastore_version_id": p.datastore_version_id,
        "restart_required": p.restart_required,
        "type": p.data_type.as_str(),
    });
    if let Some(m) = &p.min {
        o["min"] = json!(m);
    }
    if let Some(m) = &p.max {
        o["max"] = json!(m);
    }
    o
}

/// `GET /configurations`, one page (list form).
pub fn list(c: &Caller, page: &Page<ConfigurationView>) -> Value {
    super::page(c, "configurations", page, |v| configuration(v, false))
}

/// `{"configuration": ...}`: the detailed form (show, create).
pub fn show(v: &ConfigurationView) -> Value {
    json!({ "configuration": configuration(v, true) })
}

/// `GET /configurations/{id}/instances`, one page of `{id, name}`.
pub fn instances(c: &Caller, page: &Page<(Uuid, String)>) -> Value {
    super::page(c, "instances", page, |(i, n)| json!({ "id": i, "name": n }))
}

/// `{"configuration-parameters": [...]}`: parameter rules.
pub fn parameters(ps: &[ConfigParam]) -> Value {
    json!({ "configuration-parameters": ps.iter().map(parameter).collect::<Vec<_>>() })
}

/// `PUT /mgmt/datastores/versions/{id}/parameters/{name}`: upstream answers the raw row here (with
/// `min_size`/`max_size` and the soft-delete columns).
pub fn parameter_row(p: &ConfigParam) -> Value {
    let mut v = parameter(p);
    v["min_size"] = v.get("min").cloned().unwrap_or(Value::Null);
    v["max_size"] = v.get("max").cloned().unwrap_or(Value::Null);
    v["deleted"] = json!(0);
    v["deleted_at"] = Value::Null;
    v
}
