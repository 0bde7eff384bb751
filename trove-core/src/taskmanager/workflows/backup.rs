//! Take a backup: `ask` (cast `backup` to the guest, which streams the engine's backup into the backup store in
//! the background and reports progress to the conductor) → wait for the backup record to end.
//!
//! The backup record is the evidence: the guest moves it NEW → BUILDING → SAVING (with the bytes written), then
//! reports the outcome (size, checksum, location, position; or the reason of a failure), which the conductor
//! records while the backup stays SAVING; the workflow ends it COMPLETED (or FAILED, compensating) in the commit
//! that closes the workflow, so the instance shows BACKUP exactly as long as it takes no other action. A guest that stops reporting for
//! [`CoreConfig::guest_silence_timeout`](crate::config::CoreConfig::guest_silence_timeout) (it died with its
//! process, the cast was lost) is asked again, at most [`MAX_ASKS`] times in all; a backup asked again starts
//! afresh and replaces any object of the earlier attempt. A failure leaves the backup FAILED with the reason; the
//! task manager's purge removes whatever object a failed or deleted backup left
//! ([`TaskManager::purge_backup_objects`](crate::taskmanager::TaskManager::purge_backup_objects)). The instance's
//! task stays NONE: it shows BACKUP while the backup runs, from the backup's state.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{
    Backup, BackupType, Instance, JournalPhase, Workflow, WorkflowKind, WorkflowParams,
};
use crate::ports::{BackupJob, BackupPiece, Write};
use crate::state::{BackupState, TaskStatus};
use crate::taskmanager::context::abort_on_store;
use crate::taskmanager::{Failure, StepContext, StepResult, Stop, WorkflowDef, MAX_ASKS};

/// The container backups go to when neither the request nor a backup strategy names one (upstream
/// `backup_swift_container`).
pub const DEFAULT_BACKUP_CONTAINER: &str = "database_backups";

/// The object key of a backup: `<container>/<backup id>.backup`.
pub fn object_key(b: &Backup) -> Option<String> {
    if let Some(l) = &b.location {
        return Some(l.clone());
    }
    let container = b.container.as_deref().unwrap_or(DEFAULT_BACKUP_CONTAINER);
    Some(format!("{container}/{}.backup", b.id))
}

/// What a completed backup is to a restore or to an incremental on top of it; `None` when it has no object.
pub fn piece_of(b: &Backup) -> Option<BackupPiece> {
    Some(BackupPiece {
        backup_id: b.id,
        key: b.location.clone()?,
        checksum: b.checksum.clone()?,
        size: b.bytes?,
        position: b.position.clone(),
        incremental: b.backup_type == BackupType::Incremental,
    })
}

/// A new backup of `inst` (NEW) and its workflow, to commit together with the instance at its version (so no
/// other action starts in between) and the `backups` quota check. `parent`: the backup an incremental builds on.
pub fn plan(
    inst: &Instance,
    name: String,
    description: Option<String>,
    parent: Option<&Backup>,
    container: String,
    schedule_id: Option<Uuid>,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::Result<(Backup, Workflow)> {
    let b = Backup {
        id: Uuid::new_v4(),
        tenant_id: inst.tenant_id.clone(),
        instance_id: Some(inst.id),
        name,
        description,
        state: BackupState::New,
        size: None,
        location: None,
        checksum: None,
        parent_id: parent.map(|p| p.id),
        backup_type: if parent.is_some() {
            BackupType::Incremental
        } else {
            BackupType::Full
        },
        datastore_version_id: inst.datastore_version_id,
        created: now,
        updated: now,
        deleted: false,
        bytes: None,
        position: None,
        fault: None,
        container: Some(container),
        purged: false,
        schedule_id,
    };
    let wf = Workflow::new(inst.id, &BackupParams { backup_id: b.id }, now)?;
    Ok((b, wf))
}

/// The latest completed backup of `inst` at its datastore version (an incremental's default parent).
pub fn latest_completed(all: &[Backup], inst: &Instance) -> Option<Backup> {
    all.iter()
        .filter(|b| {
            b.instance_id == Some(inst.id)
                && !b.deleted
                && b.state == BackupState::Completed
                && b.datastore_version_id == inst.datastore_version_id
        })
        .max_by_key(|b| b.created)
        .cloned()
}

/// Parameters of the backup workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupParams {
    /// The backup record (NEW) to fill.
    pub backup_id: Uuid,
}

impl WorkflowParams for BackupParams {
    const KIND: WorkflowKind = WorkflowKind::new("backup");
}

/// The backup workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct TakeBackup;

enum Waited {
    /// The guest reported the object (the record holds its location, size and checksum).
    Completed(Box<Backup>),
    Silent(String),
}

async fn load(cx: &StepContext<'_>, id: Uuid) -> StepResult<Backup> {
    cx.store()
        .get_backup(id)
        .await
        .map_err(abort_on_store)?
        .ok_or_else(|| {
            Stop::Fail(Failure::with_details(
                "The backup record is gone.",
                format!("backup {id} not found"),
            ))
        })
}

/// The job of backup `b`: its key, and its parent's piece for an incremental.
async fn job_of(cx: &StepContext<'_>, b: &Backup) -> StepResult<BackupJob> {
    let parent = match b.parent_id {
        Some(pid) => {
            let p = load(cx, pid).await?;
            Some(piece_of(&p).ok_or_else(|| {
                Stop::Fail(Failure::with_details(
                    "The parent backup has no complete object to build an incremental on.",
                    format!("parent {pid} is {}", p.state.as_str()),
                ))
            })?)
        }
        None => None,
    };
    // The archive an incremental on any live backup of the instance needs is kept: from its oldest completed one.
    let retain_from = match b.instance_id {
        Some(iid) => cx
            .store()
            .list_backups(&crate::model::BackupFilter {
                instance_id: Some(iid),
                ..Default::default()
            })
            .await
            .map_err(super::super::context::abort_on_store)?
            .into_iter()
            .filter(|o| o.id != b.id && o.state == BackupState::Completed && !o.deleted)
            .min_by_key(|o| o.created)
            .and_then(|o| o.position),
        None => None,
    };
    Ok(BackupJob {
        backup_id: b.id,
        key: object_key(b).unwrap_or_default(),
        parent,
        retain_from,
    })
}

/// Waits until the backup ends, or its guest stays silent since the latest step `ask`.
async fn wait(cx: &mut StepContext<'_>, id: Uuid, ask: &str) -> StepResult<Waited> {
    let silence = chrono::Duration::from_std(cx.config().guest_silence_timeout)
        .unwrap_or(chrono::Duration::seconds(60));
    let lease = cx.config().workflow_lease;
    let asked = cx.last_started(ask).unwrap_or_else(|| cx.clock().now());
    let mut last_renew = cx.clock().now();
    loop {
        let b = load(cx, id).await?;
        if b.state == BackupState::Completed || (b.state.is_running() && b.location.is_some()) {
            return Ok(Waited::Completed(Box::new(b)));
        }
        if let (true, Some(why)) = (
            b.state == BackupState::Failed || b.state.is_running(),
            b.fault.clone(),
        ) {
            return Err(Stop::Fail(Failure::with_details(
                format!("The backup failed: {why}"),
                why,
            )));
        }
        if b.deleted {
            return Err(Stop::Fail(Failure::with_details(
                "The backup was deleted while it ran.",
                format!("backup {id} deleted"),
            )));
        }
        let now = cx.clock().now();
        let heard = b.updated.max(asked);
        if now - heard >= silence {
            return Ok(Waited::Silent(format!(
                "no report on backup {id} since {heard} (state {})",
                b.state.as_str()
            )));
        }
        if (now - last_renew).to_std().unwrap_or_default() * 3 >= lease {
            cx.renew().await?;
            last_renew = now;
        }
        cx.sleep(cx.poll_interval() * 4).await;
    }
}

/// The write that ends a backup the guest reported COMPLETED at `now`.
pub(crate) fn completed(reported: &Backup, now: chrono::DateTime<chrono::Utc>) -> Write {
    let mut b = reported.clone();
    b.state = BackupState::Completed;
    b.fault = None;
    b.updated = now;
    Write::Backup(b)
}

/// Asks `guest` (as the journaled step `ask`) to take backup `backup_id` and waits until the guest reported its
/// object, asking again (at most [`MAX_ASKS`] times in all) when the guest goes silent. Answers the backup as
/// reported, still running: the caller ends it COMPLETED in its own commit.
pub(crate) async fn run_backup(
    cx: &mut StepContext<'_>,
    guest: crate::rpc::GuestClient,
    backup_id: Uuid,
    ask: &str,
) -> StepResult<Box<Backup>> {
    let b = load(cx, backup_id).await?;
    let job = job_of(cx, &b).await?;
    // A resumed run (the worker before died after asking) asks again at once when the guest has not reported
    // the object yet: a guest that died with the process lost the work, and one that still runs it carries on.
    if cx.completed(ask).is_some() && b.location.is_none() && b.fault.is_none() {
        cx.reopen(&[ask], "resumed before the guest reported the backup")
            .await?;
    }
    loop {
        let (guest, job) = (guest.clone(), job.clone());
        cx.step(ask, |_| async move {
            guest.backup(job).await.map_err(|e| {
                Stop::Fail(Failure::new(
                    "The guest could not be asked to take the backup.",
                    &e,
                ))
            })
        })
        .await?;
        match wait(cx, backup_id, ask).await? {
            Waited::Completed(b) => return Ok(b),
            Waited::Silent(why) => {
                let asks = cx
                    .journal
                    .iter()
                    .filter(|e| e.step == ask && e.phase == JournalPhase::Started)
                    .count();
                if asks >= MAX_ASKS {
                    return Err(Stop::Fail(Failure::with_details(
                        format!(
                            "The guest stopped reporting on the backup after {asks} requests; check that the \
                             instance's guest runs, then take the backup again."
                        ),
                        why,
                    )));
                }
                tracing::info!(backup = %backup_id, %why, "the guest went silent on a backup; asking again");
                cx.reopen(&[ask], &why).await?;
            }
        }
    }
}

#[async_trait]
impl WorkflowDef for TakeBackup {
    type Params = BackupParams;

    fn error_task(&self) -> Option<TaskStatus> {
        None
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &BackupParams) -> StepResult<()> {
        let guest = cx.guest();
        let done = run_backup(cx, guest, p.backup_id, "ask").await?;
        // The backup ends COMPLETED in the commit that closes the workflow.
        let w = completed(&done, cx.clock().now());
        cx.finish(|_, extra| extra.push(w.clone())).await?;
        Ok(())
    }

    /// Records the backup FAILED with the reason (its object, if any, is purged later).
    async fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        p: &BackupParams,
        failure: Failure,
    ) -> StepResult<Failure> {
        let b = load(cx, p.backup_id).await?;
        if b.state.is_running() {
            let now = cx.clock().now();
            let msg = failure.message.clone();
            cx.update(|_, extra| {
                let mut b = b.clone();
                b.state = BackupState::Failed;
                b.fault = Some(msg.clone());
                b.updated = now;
                extra.push(Write::Backup(b));
            })
            .await?;
        }
        Ok(failure)
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![Scenario::new("backup", |w| {
            Box::pin(async move {
                let id = w.active_instance("db").await?;
                w.take_backup(id).await?;
                Ok(id)
            })
        })
        .check(|w, id| {
            Box::pin(async move {
                w.expect_active(id).await?;
                w.expect_backups_completed(id).await
            })
        })]
    }
}
