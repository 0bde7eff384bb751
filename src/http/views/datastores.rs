//! Datastore and datastore-version views (upstream `DatastoreView`, `DatastoreVersionView`, and the mgmt
//! version view).

use serde_json::{json, Value};
use trove_core::api::{DatastoreView, VersionView};
use trove_core::model::DatastoreVersion;

use super::links;
use crate::http::extract::Caller;

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

/// `GET /datastores`.
pub fn list(c: &Caller, all: &[DatastoreView]) -> Value {
    let rows: Vec<Value> = all.iter().map(|d| datastore(c, d)).collect();
    json!({ "datastores": rows })
}

/// `GET /datastores/{id_or_name}`.
pub fn show(c: &Caller, d: &DatastoreView) -> Value {
    json!({ "datastore": datastore(c, d) })
}

/// `GET /datastores/{ds}/versions`.
pub fn versions(c: &Caller, all: &[VersionView]) -> Value {
    let rows: Vec<Value> = all.iter().map(|v| version(c, &v.version)).collect();
    json!({ "versions": rows })
}

/// `GET /datastores/{ds}/versions/{version}` and `/datastores/versions/{id}`.
pub fn version_show(c: &Caller, v: &VersionView) -> Value {
    json!({ "version": version(c, &v.version) })
}

/// `GET /datastores/{ds}/versions/{version}/volume-types`.
pub fn volume_types(all: &[String]) -> Value {
    let rows: Vec<Value> = all.iter().map(|t| json!({ "id": t, "name": t })).collect();
    json!({ "volume_types": rows })
}

/// `GET /mgmt/datastore-versions`.
pub fn mgmt_versions(all: &[VersionView]) -> Value {
    let rows: Vec<Value> = all
        .iter()
        .map(|v| mgmt_version(&v.version, &v.datastore.name, v.is_default))
        .collect();
    json!({ "versions": rows })
}

/// `GET` and `POST /mgmt/datastore-versions[/{id}]`: one version, management view.
pub fn mgmt_version_show(v: &VersionView) -> Value {
    json!({ "version": mgmt_version(&v.version, &v.datastore.name, v.is_default) })
}
