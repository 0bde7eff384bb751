//! JSON views, shaped as upstream renders them (`trove/*/views.py`).

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use trove_core::api::{
    BackupView, ConfigurationView, DatastoreView, InstanceView, QuotaView, BACKUP_STRATEGY_BACKEND,
};
use trove_core::model::{BackupStrategy, ConfigParam, DatastoreVersion, Flavor, Resource};

use super::extract::Caller;

/// Upstream timestamp format (`2019-12-23T20:58:35`).
pub fn ts(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// `self` and `bookmark` links of a resource.
pub fn links(c: &Caller, coll: &str, id: &str) -> Value {
    json!([
        { "href": format!("{}/v1.0/{}/{coll}/{id}", c.base, c.tenant), "rel": "self" },
        { "href": format!("{}/{coll}/{id}", c.base), "rel": "bookmark" },
    ])
}

/// Upstream `DATASTORE_VERSION` view fragment of an instance.
fn instance_datastore(v: &InstanceView, detail: bool) -> Value {
    let mut ds = json!({ "type": v.datastore.name, "version": v.datastore_version.name });
    if detail {
        ds["version_number"] = json!(v.datastore_version.version);
    }
    ds
}

/// The instance view: basic (lists) or detailed (show, `/detail`, create).
pub fn instance(c: &Caller, v: &InstanceView, detail: bool) -> Value {
    let i = &v.instance;
    let id = i.id.to_string();
    let mut o = Map::new();
    o.insert("id".into(), json!(id));
    o.insert("name".into(), json!(i.name));
    o.insert("status".into(), json!(v.status));
    o.insert("operating_status".into(), json!(v.operating_status));
    o.insert("links".into(), links(c, "instances", &id));
    o.insert(
        "flavor".into(),
        json!({ "id": i.flavor_id, "links": links(c, "flavors", &i.flavor_id) }),
    );
    o.insert("datastore".into(), instance_datastore(v, detail));
    o.insert("region".into(), json!(i.region));
    let public = i.addresses.iter().any(|a| a.kind == "public");
    let access = if i.access.is_public || !i.access.allowed_cidrs.is_empty() {
        serde_json::to_value(&i.access)
            .unwrap_or_else(|_| json!({ "is_public": i.access.is_public }))
    } else {
        json!({ "is_public": public })
    };
    o.insert("access".into(), access);
    if let Some(size) = i.volume_size {
        let mut vol = json!({ "size": size });
        if detail {
            if let Some(u) = v.service.as_ref().and_then(|s| s.volume) {
                vol["used"] = json!((u.used_gb() * 100.0).round() / 100.0);
                vol["used_percent"] = json!((u.used_percent() * 100.0).round() / 100.0);
            }
        }
        o.insert("volume".into(), vol);
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
        o.insert(
            "addresses".into(),
            Value::Array(
                i.addresses
                    .iter()
                    .map(|a| json!({ "address": a.address, "type": a.kind }))
                    .collect(),
            ),
        );
    }
    if let Some(port) = i.port {
        o.insert("port".into(), json!(port));
    }
    if let Some(src) = i.replica_of {
        o.insert(
            "replica_of".into(),
            json!({ "id": src, "links": links(c, "instances", &src.to_string()) }),
        );
    }
    if !v.replicas.is_empty() {
        let reps: Vec<Value> = v
            .replicas
            .iter()
            .map(|r| json!({ "id": r, "links": links(c, "instances", &r.to_string()) }))
            .collect();
        o.insert("replicas".into(), Value::Array(reps));
    }
    if c.ctx.is_admin() {
        o.insert("tenant_id".into(), json!(i.tenant_id));
    }
    if detail {
        o.insert("created".into(), json!(ts(&i.created)));
        o.insert("updated".into(), json!(ts(&i.updated)));
        let ssu = v.service.as_ref().map_or(i.updated, |s| s.updated_at);
        o.insert("service_status_updated".into(), json!(ts(&ssu)));
        if let Some((cid, cname)) = &v.configuration {
            o.insert(
                "configuration".into(),
                json!({ "id": cid, "name": cname, "links": links(c, "configurations", &cid.to_string()) }),
            );
        }
        if let Some(l) = i.locality {
            o.insert("locality".into(), json!(l.as_str()));
        }
        if let Some(f) = &i.fault {
            let details = if c.ctx.is_admin() {
                json!(f.details)
            } else {
                Value::Null
            };
            o.insert(
                "fault".into(),
                json!({ "message": f.message, "created": ts(&f.created), "details": details }),
            );
        }
        if let Some(p) = &v.password {
            o.insert("password".into(), json!(p.expose()));
        }
        if let Some(cl) = i.cluster_id {
            o.insert("cluster_id".into(), json!(cl));
        }
        if c.ctx.is_admin() {
            o.insert("server_id".into(), json!(i.server_id));
            o.insert("volume_id".into(), json!(i.volume_id));
            o.insert("encrypted_rpc_messaging".into(), json!(true));
        }
    }
    Value::Object(o)
}

/// The management instance view: the detail view plus server, volume and guest fields.
pub fn mgmt_instance(c: &Caller, v: &InstanceView) -> Value {
    let mut o = instance(c, v, true);
    let i = &v.instance;
    o["tenant_id"] = json!(i.tenant_id);
    o["deleted"] = json!(i.deleted);
    o["deleted_at"] = json!(i.deleted_at.as_ref().map(ts));
    o["server_id"] = json!(i.server_id);
    o["volume_id"] = json!(i.volume_id);
    o["encrypted_rpc_messaging"] = json!(true);
    o["task_description"] = json!(i.task.description());
    let service = v.service.as_ref();
    o["service_status"] = json!(service.map_or("NEW", |s| s.status.api_status()));
    o["guest_status"] = json!({ "state_description": service.map_or("new", |s| s.status.description()).to_ascii_lowercase() });
    let addresses: Vec<Value> = i
        .addresses
        .iter()
        .map(|a| {
            json!({
                "addr": a.address,
                "version": if a.address.contains(':') { 6 } else { 4 },
                "OS-EXT-IPS:type": if a.kind == "public" { "floating" } else { "fixed" },
                "OS-EXT-IPS-MAC:mac_addr": "",
            })
        })
        .collect();
    o["server"] = json!({
        "id": i.server_id,
        "name": i.name,
        "status": i.server_status.as_str(),
        "host": i.host,
        "tenant_id": i.tenant_id,
        "addresses": { "private": addresses },
    });
    if let Some(size) = i.volume_size {
        let usage = service.and_then(|s| s.volume);
        o["volume"] = json!({
            "id": i.volume_id,
            "size": size,
            "status": if i.volume_id.is_some() { "in-use" } else { "creating" },
            "availability_zone": i.availability_zone.clone().unwrap_or_else(|| "nova".into()),
            "created_at": ts(&i.created),
            "attachments": [],
            "used": usage.map(|u| (u.used_gb() * 100.0).round() / 100.0),
            "total": usage.map(|u| (u.total_bytes as f64 / 1073741824.0 * 100.0).round() / 100.0),
        });
    }
    o
}

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

/// A datastore with its versions.
pub fn datastore(c: &Caller, d: &DatastoreView) -> Value {
    let versions: Vec<Value> = d
        .versions
        .iter()
        .map(|v| {
            json!({
                "id": v.id,
                "name": v.name,
                "version": v.version,
                "links": links(c, "datastores/versions", &v.id.to_string()),
            })
        })
        .collect();
    let mut o = json!({
        "id": d.datastore.id,
        "name": d.datastore.name,
        "links": links(c, "datastores", &d.datastore.id.to_string()),
        "versions": versions,
    });
    if let Some(dv) = d.datastore.default_version_id {
        o["default_version"] = json!(dv);
    }
    o
}

/// A datastore version (admins see the operator fields too).
pub fn version(c: &Caller, v: &DatastoreVersion) -> Value {
    let mut o = json!({
        "id": v.id,
        "name": v.name,
        "version": v.version,
        "datastore": v.datastore_id,
        "links": links(c, "datastores/versions", &v.id.to_string()),
    });
    if c.ctx.is_admin() {
        o["active"] = json!(v.active);
        o["packages"] = json!(v.packages);
        o["image"] = json!(v.image);
        o["registry_ext"] = json!(v.manager.as_str());
        o["repl_strategy"] = json!(v.manager.as_str());
        o["image_tags"] = json!([]);
    }
    o
}

/// The management view of a datastore version.
pub fn mgmt_version(v: &DatastoreVersion, datastore_name: &str, is_default: bool) -> Value {
    let packages: Vec<&str> = v.packages.split(',').map(str::trim).collect();
    json!({
        "id": v.id,
        "name": v.name,
        "datastore_id": v.datastore_id,
        "datastore_name": datastore_name,
        "datastore_manager": v.manager.as_str(),
        "image": v.image,
        "image_tags": [],
        "packages": packages,
        "active": v.active,
        "default": is_default,
        "version": v.version,
    })
}

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

/// A backup strategy (`instance_id` is "" for the tenant-wide one, as upstream stores it).
pub fn backup_strategy(s: &BackupStrategy) -> Value {
    json!({
        "project_id": s.tenant_id,
        "instance_id": s.instance_id.map(|i| i.to_string()).unwrap_or_default(),
        "backend": BACKUP_STRATEGY_BACKEND,
        "swift_container": s.container,
    })
}

/// A backup.
pub fn backup(v: &BackupView) -> Value {
    let b = &v.backup;
    let mut o = json!({
        "id": b.id,
        "name": b.name,
        "description": b.description,
        "locationRef": b.location,
        "instance_id": b.instance_id,
        "created": ts(&b.created),
        "updated": ts(&b.updated),
        "size": b.size,
        "status": b.state.as_str(),
        "parent_id": b.parent_id,
        "project_id": b.tenant_id,
        "storage_driver": "local",
    });
    if let (Some(d), Some(dv)) = (&v.datastore, &v.datastore_version) {
        o["datastore"] = json!({ "type": d.name, "version": dv.name, "version_id": dv.id });
    }
    o
}

/// `{"quotas": [...]}` rows of a quota show.
pub fn quotas(q: &QuotaView) -> Value {
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

/// The `links` of a page that has a successor: the request URL with `marker` replaced.
pub fn next_link(c: &Caller, marker: &str) -> Value {
    let (path, query) = c
        .path_and_query
        .split_once('?')
        .unwrap_or((&c.path_and_query, ""));
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("marker="))
        .map(str::to_string)
        .collect();
    parts.push(format!("marker={}", percent_encode(marker)));
    json!([{ "rel": "next", "href": format!("{}{}?{}", c.base, path, parts.join("&")) }])
}

/// Percent-encodes everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (used for `name@host` user ids); invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_roundtrip() {
        assert_eq!(percent_decode("bob%40%25"), "bob@%");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_encode("bob@%"), "bob%40%25");
    }
}
