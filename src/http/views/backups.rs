//! Backup and backup-strategy views.

use serde_json::{json, Value};
use trove_core::api::{BackupView, Page, BACKUP_STRATEGY_BACKEND};
use trove_core::model::{BackupSchedule, BackupStrategy, ScheduleTimes};

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
    // Extensions (not in upstream's view): why a backup failed, the bytes written so far or in all, the schedule
    // that took it.
    if let Some(f) = &b.fault {
        o["fault"] = json!(f);
    }
    if let Some(n) = b.bytes {
        o["bytes"] = json!(n);
    }
    if let Some(sid) = b.schedule_id {
        o["schedule_id"] = json!(sid);
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

/// A backup schedule (extension).
pub fn schedule(s: &BackupSchedule) -> Value {
    let (cron, interval) = match &s.times {
        ScheduleTimes::Cron(c) => (Some(c.clone()), None),
        ScheduleTimes::Interval(i) => (None, Some(*i)),
    };
    json!({
        "id": s.id,
        "instance_id": s.instance_id,
        "project_id": s.tenant_id,
        "name": s.name,
        "cron": cron,
        "interval": interval,
        "incremental": s.incremental,
        "keep_last": s.keep_last,
        "keep_days": s.keep_days,
        "next_run": ts(&s.next_run),
        "last_run": s.last_run.as_ref().map(ts),
        "last_backup_id": s.last_backup_id,
        "last_error": s.last_error,
        "created": ts(&s.created),
    })
}

/// `{"backup_schedule": ...}` (create).
pub fn schedule_show(s: &BackupSchedule) -> Value {
    json!({ "backup_schedule": schedule(s) })
}

/// `GET /instances/{id}/backup_schedules`.
pub fn schedules(all: &[BackupSchedule]) -> Value {
    let rows: Vec<Value> = all.iter().map(schedule).collect();
    json!({ "backup_schedules": rows })
}
