//! Cluster views (upstream `ClusterView`): the cluster with its task, datastore and members.

use serde_json::{json, Map, Value};
use trove_core::api::ClusterView;

use super::{links, ts};
use crate::http::extract::Caller;

/// One member inside a cluster view (upstream's `instances` items, with the status the client's `cluster list
/// instances` shows); `replica_of`: the primary whose shard it serves (type `replica`), else type `member`.
fn member(c: &Caller, m: &trove_core::api::InstanceView, replica_of: Option<uuid::Uuid>) -> Value {
    let i = &m.instance;
    let mut o = Map::new();
    o.insert("id".into(), json!(i.id));
    o.insert("name".into(), json!(i.name));
    o.insert(
        "type".into(),
        json!(if replica_of.is_some() {
            "replica"
        } else {
            "member"
        }),
    );
    if let Some(p) = replica_of {
        o.insert("replica_of".into(), json!(p));
    }
    o.insert("links".into(), links(c, "instances", &i.id.to_string()));
    o.insert("status".into(), json!(m.status));
    o.insert("operating_status".into(), json!(m.operating_status));
    o.insert(
        "flavor".into(),
        json!({ "id": i.flavor_id, "links": links(c, "flavors", &i.flavor_id) }),
    );
    if let Some(size) = i.volume_size {
        o.insert("volume".into(), json!({ "size": size }));
    }
    if !i.addresses.is_empty() {
        o.insert(
            "ip".into(),
            json!(i
                .addresses
                .iter()
                .map(|a| a.address.clone())
                .collect::<Vec<_>>()),
        );
    }
    if let Some(port) = i.port {
        o.insert("port".into(), json!(port));
    }
    Value::Object(o)
}

/// The cluster object.
pub fn cluster_object(c: &Caller, v: &ClusterView) -> Value {
    let cl = &v.cluster;
    let id = cl.id.to_string();
    let mut o = Map::new();
    o.insert("id".into(), json!(id));
    o.insert("name".into(), json!(cl.name));
    o.insert(
        "task".into(),
        json!({
            "id": cl.task.code(),
            "name": cl.task.name(),
            "description": cl.task.description(),
        }),
    );
    o.insert("created".into(), json!(ts(&cl.created)));
    o.insert("updated".into(), json!(ts(&cl.updated)));
    o.insert("links".into(), links(c, "clusters", &id));
    o.insert(
        "datastore".into(),
        json!({ "type": v.datastore.name, "version": v.datastore_version.name }),
    );
    o.insert(
        "instances".into(),
        Value::Array(
            v.members
                .iter()
                .map(|m| member(c, m, v.cluster.replicas.get(&m.instance.id).copied()))
                .collect(),
        ),
    );
    let ips: Vec<String> = v
        .members
        .iter()
        .flat_map(|m| m.instance.addresses.iter().map(|a| a.address.clone()))
        .collect();
    if !ips.is_empty() {
        o.insert("ip".into(), json!(ips));
    }
    if !cl.extended_properties.is_empty() {
        o.insert(
            "extended_properties".into(),
            Value::Object(cl.extended_properties.clone()),
        );
    }
    if let Some(l) = cl.locality {
        o.insert("locality".into(), json!(l.as_str()));
    }
    if let Some(cfg) = cl.configuration_id {
        o.insert("configuration".into(), json!(cfg));
    }
    if let Some(f) = &cl.fault {
        o.insert(
            "fault".into(),
            json!({ "message": f.message, "details": f.details, "created": ts(&f.created) }),
        );
    }
    if let Some(p) = &cl.scaling {
        o.insert(
            "scaling_policy".into(),
            serde_json::to_value(p).unwrap_or(Value::Null),
        );
    }
    Value::Object(o)
}

/// `{"cluster": {...}}`.
pub fn show(c: &Caller, v: &ClusterView) -> Value {
    json!({ "cluster": cluster_object(c, v) })
}

/// `{"clusters": [...]}`.
pub fn list(c: &Caller, all: &[ClusterView]) -> Value {
    json!({ "clusters": all.iter().map(|v| cluster_object(c, v)).collect::<Vec<_>>() })
}
