//! Scheduled backups with retention, run by the task manager (upstream needs Mistral for this).
//!
//! On every scan a task manager looks for schedules whose `next_run` has come. It claims a run by committing the
//! schedule at the version it read (moved to its next run) together with the new backup, its workflow and the
//! instance at its version: with several task managers exactly one commit wins, the others see a conflict and
//! leave the run alone. Missed runs (every task manager was down) are not made up: the next run counts from now.
//! A run on an instance that cannot be backed up (not running, busy) takes no backup and says why in the
//! schedule's `last_error`.
//!
//! Retention runs with each run of a schedule, over the backups it took: the newest `keep_last` completed ones
//! are kept, and those younger than `keep_days`; the others are deleted oldest first, except a backup an
//! incremental that is kept builds on (a chain is never broken). The task manager's purge then removes their
//! objects.

use std::collections::HashSet;
use uuid::Uuid;

use super::workflows::backup::{latest_completed, plan, DEFAULT_BACKUP_CONTAINER};
use super::TaskManager;
use crate::error::{Error, Result};
use crate::model::{Backup, BackupFilter, BackupSchedule, Instance, Resource};
use crate::ports::{ChangeSet, Expect, Write};
use crate::state::{check_operation, BackupState, InstanceState, Operation, ServiceStatus};

impl TaskManager {
    /// Runs the backup schedules that are due now (see the module docs); answers the backup workflows started
    /// (run them, or let the next scan find them).
    pub async fn run_due_schedules(&self) -> Result<Vec<Uuid>> {
        let now = self.engine.clock.now();
        let due: Vec<BackupSchedule> = self
            .engine
            .store
            .list_backup_schedules(None)
            .await?
            .into_iter()
            .filter(|s| s.next_run <= now)
            .collect();
        let mut started = Vec::new();
        for s in due {
            match self.run_schedule(s.clone()).await {
                Ok(Some(wf)) => started.push(wf),
                Ok(None) => {}
                Err(Error::Conflict { .. }) => {
                    tracing::debug!(schedule = %s.id, "another task manager ran the schedule");
                }
                Err(e) => {
                    tracing::warn!(schedule = %s.id, error = %e, "a backup schedule could not run")
                }
            }
        }
        Ok(started)
    }

    /// One due run of `s`: the workflow it started, if it took a backup.
    async fn run_schedule(&self, s: BackupSchedule) -> Result<Option<Uuid>> {
        let store = &self.engine.store;
        let now = self.engine.clock.now();
        let inst = match store.get_instance(s.instance_id).await? {
            Some(i) if !i.deleted => i,
            _ => {
                // The instance is gone: so is its schedule (its backups stay, as a deleted instance's do).
                store
                    .commit(ChangeSet::new().with(Write::DeleteBackupSchedule(s.id)))
                    .await?;
                return Ok(None);
            }
        };
        let mut next = s.clone();
        next.next_run = s.times.next_after(now);
        next.last_run = Some(now);
        let expect = Expect::Version(s.version);
        let all = store
            .list_backups(&BackupFilter {
                instance_id: Some(inst.id),
                ..Default::default()
            })
            .await?;
        if let Err(why) = self.can_back_up(&inst, &all).await? {
            next.last_error = Some(why.clone());
            store
                .commit(ChangeSet::new().with(Write::BackupSchedule {
                    schedule: next,
                    expect,
                }))
                .await?;
            tracing::info!(schedule = %s.id, instance = %inst.id, %why, "scheduled backup skipped");
            return Ok(None);
        }
        let manager = store
            .get_datastore_version(inst.datastore_version_id)
            .await?
            .map(|v| v.manager);
        let parent = if s.incremental && manager.is_some_and(|m| m.incremental_backups()) {
            latest_completed(&all, &inst)
        } else {
            None
        };
        let name = format!("{}-{}", s.name, now.format("%Y%m%dT%H%M%SZ"));
        let (b, wf) = plan(
            &inst,
            name,
            Some(format!("Taken by backup schedule {}.", s.id)),
            parent.as_ref(),
            DEFAULT_BACKUP_CONTAINER.to_string(),
            Some(s.id),
            now,
        )?;
        next.last_backup_id = Some(b.id);
        next.last_error = None;
        let inst_version = inst.version;
        let tenant = inst.tenant_id.clone();
        let cs = ChangeSet::new()
            .with(Write::BackupSchedule {
                schedule: next.clone(),
                expect,
            })
            .with(Write::Instance {
                instance: inst,
                expect: Expect::Version(inst_version),
            })
            .with(Write::Workflow {
                workflow: wf.clone(),
                expect: Expect::Absent,
            })
            .with(Write::Backup(b.clone()))
            .check_quota(tenant, &[Resource::Backups]);
        match store.commit(cs).await {
            Ok(()) => {}
            Err(Error::QuotaExceeded { resources }) => {
                next.last_error = Some(format!(
                    "no backup taken: the project's quota of {} is used up",
                    resources.join(", ")
                ));
                next.last_backup_id = s.last_backup_id;
                store
                    .commit(ChangeSet::new().with(Write::BackupSchedule {
                        schedule: next,
                        expect,
                    }))
                    .await?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        tracing::info!(schedule = %s.id, backup = %b.id, "scheduled backup started");
        self.apply_retention(&s).await?;
        Ok(Some(wf.id))
    }

    /// Whether `inst` can be backed up now (the action gate's rule); `Err` with the reason when not.
    async fn can_back_up(
        &self,
        inst: &Instance,
        all: &[Backup],
    ) -> Result<std::result::Result<(), String>> {
        let store = &self.engine.store;
        let service = store
            .get_service_status(inst.id)
            .await?
            .map_or(ServiceStatus::New, |s| s.status);
        let state = InstanceState {
            task: inst.task,
            server: inst.server_id.as_ref().map(|_| inst.server_status),
            service,
            backup_running: all.iter().any(|b| !b.deleted && b.state.is_running()),
        };
        if let Err(e) = check_operation(inst.id, Operation::Backup, &state) {
            return Ok(Err(format!("no backup taken: {e}")));
        }
        let busy = store
            .list_open_workflows()
            .await?
            .iter()
            .any(|w| w.instance_id == inst.id);
        if busy {
            return Ok(Err(
                "no backup taken: another action on the instance was running".into(),
            ));
        }
        Ok(Ok(()))
    }

    /// Deletes the backups of `s` its retention no longer keeps (see the module docs); answers how many.
    pub async fn apply_retention(&self, s: &BackupSchedule) -> Result<usize> {
        if s.keep_last.is_none() && s.keep_days.is_none() {
            return Ok(0);
        }
        let store = &self.engine.store;
        let now = self.engine.clock.now();
        let all = store
            .list_backups(&BackupFilter {
                instance_id: Some(s.instance_id),
                ..Default::default()
            })
            .await?;
        let mut mine: Vec<&Backup> = all
            .iter()
            .filter(|b| b.schedule_id == Some(s.id) && !b.deleted && !b.state.is_running())
            .collect();
        mine.sort_by_key(|b| std::cmp::Reverse(b.created));
        let young = |b: &Backup| {
            s.keep_days
                .is_some_and(|d| now - b.created < chrono::Duration::days(i64::from(d)))
        };
        let mut keep: HashSet<Uuid> = HashSet::new();
        let mut completed = 0u32;
        for b in &mine {
            let counted =
                b.state == BackupState::Completed && s.keep_last.is_some_and(|n| completed < n);
            if b.state == BackupState::Completed {
                completed += 1;
            }
            if counted || young(b) {
                keep.insert(b.id);
            }
        }
        // A kept incremental keeps every backup it builds on.
        let kept: Vec<Uuid> = keep.iter().copied().collect();
        for id in kept {
            let mut p = all.iter().find(|b| b.id == id).and_then(|b| b.parent_id);
            while let Some(pid) = p {
                if !keep.insert(pid) {
                    break;
                }
                p = all.iter().find(|b| b.id == pid).and_then(|b| b.parent_id);
            }
        }
        let mut doomed: Vec<&Backup> = mine.into_iter().filter(|b| !keep.contains(&b.id)).collect();
        doomed.sort_by_key(|b| b.created);
        let n = doomed.len();
        for b in doomed {
            let mut d = b.clone();
            d.deleted = true;
            d.updated = now;
            store
                .commit(ChangeSet::new().with(Write::Backup(d)))
                .await?;
            tracing::info!(schedule = %s.id, backup = %b.id, "backup expired by its schedule's retention");
        }
        Ok(n)
    }
}
