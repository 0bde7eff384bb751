//! Backup schedules of an instance (`/instances/{id}/backup_schedules`, an extension of trove-rs): scheduled
//! backups with retention, run by the task manager ([`crate::taskmanager::TaskManager::run_due_schedules`]).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ApiService;
use crate::error::{Error, Result};
use crate::model::{BackupSchedule, Facet, ScheduleTimes};
use crate::policy::rules;
use crate::ports::{ChangeSet, Expect, RequestContext, Write};

/// `POST /instances/{id}/backup_schedules` body, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateBackupSchedule {
    /// Name (its backups are named `<name>-<UTC time>`).
    pub name: String,
    /// When it runs.
    pub times: ScheduleTimes,
    /// Incremental backups on the latest completed one (engines with incrementals only).
    pub incremental: bool,
    /// Keep at most this many of its completed backups.
    pub keep_last: Option<u32>,
    /// Keep its backups this many days.
    pub keep_days: Option<u32>,
}

impl ApiService {
    /// `POST /instances/{id}/backup_schedules`: the schedule, with its first run.
    pub async fn create_backup_schedule(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        req: CreateBackupSchedule,
    ) -> Result<BackupSchedule> {
        let inst = self
            .authorized_instance(ctx, id, rules::BACKUP_CREATE)
            .await?;
        let (v, _) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        self.require_facet(v.manager, Facet::Backup, "backups")?;
        if req.name.trim().is_empty() || req.name.chars().count() > 200 {
            return Err(Error::bad_request(
                "A backup schedule needs a name of 1 to 200 characters.",
            ));
        }
        req.times.validate()?;
        if req.keep_last == Some(0) || req.keep_days == Some(0) {
            return Err(Error::bad_request(
                "keep_last and keep_days must be at least 1 when given (leave them out to keep every backup).",
            ));
        }
        if req.incremental && !v.manager.incremental_backups() {
            return Err(Error::unprocessable(format!(
                "Incremental backups are not supported for datastore {}; schedule full backups.",
                v.manager
            )));
        }
        let now = self.clock.now();
        let s = BackupSchedule {
            id: Uuid::new_v4(),
            tenant_id: inst.tenant_id.clone(),
            instance_id: inst.id,
            name: req.name,
            next_run: req.times.next_after(now),
            times: req.times,
            incremental: req.incremental,
            keep_last: req.keep_last,
            keep_days: req.keep_days,
            last_run: None,
            last_backup_id: None,
            last_error: None,
            created: now,
            version: 0,
        };
        self.store
            .commit(ChangeSet::new().with(Write::BackupSchedule {
                schedule: s.clone(),
                expect: Expect::Absent,
            }))
            .await?;
        Ok(s)
    }

    /// `GET /instances/{id}/backup_schedules`.
    pub async fn list_backup_schedules(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Vec<BackupSchedule>> {
        self.authorized_instance(ctx, id, rules::INSTANCE_BACKUPS)
            .await?;
        self.store.list_backup_schedules(Some(id)).await
    }

    /// `DELETE /instances/{id}/backup_schedules/{schedule_id}` (its backups stay).
    pub async fn delete_backup_schedule(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        schedule_id: Uuid,
    ) -> Result<()> {
        self.authorized_instance(ctx, id, rules::BACKUP_DELETE)
            .await?;
        let found = self
            .store
            .list_backup_schedules(Some(id))
            .await?
            .into_iter()
            .any(|s| s.id == schedule_id);
        if !found {
            return Err(Error::not_found("Backup schedule", schedule_id));
        }
        self.store
            .commit(ChangeSet::new().with(Write::DeleteBackupSchedule(schedule_id)))
            .await
    }
}
