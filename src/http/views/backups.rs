//! Backup and backup-strategy views.

use serde_json::{json, Value};
use trove_core::api::{BackupView, Page, BACKUP_STRATEGY_BACKEND};
use trove_core::model::BackupStrategy;

use super::ts;
use crate::http::extract::Caller;

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

/// `GET /backups` and `/instances/{id}/backups`, one page.
pub fn list(c: &Caller, page: &Page<BackupView>) -> Value {
    super::page(c, "backups", page, backup)
}

/// `{"backup": ...}` (show, create).
pub fn show(v: &BackupView) -> Value {
    json!({ "backup": backup(v) })
}

/// `{"backup_strategy": ...}` (create).
pub fn strategy_show(s: &BackupStrategy) -> Value {
    json!({ "backup_strategy": backup_strategy(s) })
}

/// `GET /backup_strategies`.
pub fn strategies(all: &[BackupStrategy]) -> Value {
    let rows: Vec<Value> = all.iter().map(backup_strategy).collect();
    json!({ "backup_strategies": rows })
}
