//! Replication: the steps that make a replica (inside [`super::create`]), and the workflows that change a
//! replication set: detach a replica, promote a replica to source (switchover), eject a dead source.
//!
//! A replica is seeded from a backup of its source, taken by the replica's own workflow through the source's
//! guest (a backup record named after the replica, deleted once the replica follows); then its guest restores
//! it in `prepare` and attaches to the source with the replication account the source's guest hands out
//! (its password travels in guest calls only, never in the journal). The API locks every member a workflow
//! touches with the workflow's task (PROMOTING, EJECTING) in the commit that starts it, and the workflow releases
//! them in the commit that closes it, so no other action interleaves.
//!
//! Promote follows upstream's order, which keeps MariaDB replicas from diverging: the old source turns read only,
//! its position is read, the candidate waits until it has applied that position, the candidate is promoted, every
//! sibling and then the old source follow it. Nothing acknowledged by the old source is lost: it took no write
//! after its position was read. Eject picks the replica with the most advanced position among those that answer
//! and does the same without the old source, which is fenced first as far as it can be reached.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

use super::backup::{piece_of, run_backup};
use crate::model::{Backup, BackupFilter, Event, Instance, WorkflowKind, WorkflowParams};
use crate::ports::{ReplicaPosition, RestoreSpec, Write};
use crate::state::{BackupState, TaskStatus};
use crate::taskmanager::context::abort_on_store;
use crate::taskmanager::{Failure, StepContext, StepResult, Stop, WorkflowDef};

/// The name of the backup that seeds replica `replica_name` (the user sees it in the source's backups while the
/// replica is built).
pub fn seed_backup_name(replica_name: &str) -> String {
    format!("replica seed for {replica_name}")
}

/// How long a replica waits for its source's earlier backups to end before it takes its seed.
const SEED_QUEUE_TIMEOUT: Duration = Duration::from_secs(1800);

/// Whether backup `b` of the same instance runs and was asked for before `mine` (in creation order, ids
/// breaking ties): the seed waits for those, so backups of one instance run one at a time.
fn runs_before(b: &Backup, mine: &Backup) -> bool {
    b.id != mine.id
        && !b.deleted
        && b.state.is_running()
        && (b.created, b.id) < (mine.created, mine.id)
}

async fn load_backup(cx: &StepContext<'_>, id: Uuid) -> StepResult<Backup> {
    cx.store()
        .get_backup(id)
        .await
        .map_err(abort_on_store)?
        .ok_or_else(|| {
            Stop::Fail(
                Failure::with_details(
                    "The backup that seeds the replica is gone.",
                    format!("seed backup {id} not found"),
                )
                .task(TaskStatus::BuildingErrorReplica),
            )
        })
}

/// Steps `seed_queue`, `seed` (through the source's guest): the seed backup of a replica, completed. Answers the
/// restore the replica's `prepare` makes from it.
pub(crate) async fn seed(
    cx: &mut StepContext<'_>,
    source_id: Uuid,
    seed_id: Uuid,
) -> StepResult<RestoreSpec> {
    let mine = load_backup(cx, seed_id).await?;
    if mine.state != BackupState::Completed {
        // Backups of the source run one at a time: wait for the ones asked for earlier.
        let started = cx.clock().now();
        loop {
            let all = cx
                .store()
                .list_backups(&BackupFilter {
                    instance_id: Some(source_id),
                    ..Default::default()
                })
                .await
                .map_err(abort_on_store)?;
            let Some(before) = all.iter().find(|b| runs_before(b, &mine)) else {
                break;
            };
            if (cx.clock().now() - started).to_std().unwrap_or_default() >= SEED_QUEUE_TIMEOUT {
                return Err(Failure::with_details(
                    format!(
                        "Backup {} of the source did not end in time; the replica could not be seeded.",
                        before.id
                    ),
                    format!("waited {} s for backup {}", SEED_QUEUE_TIMEOUT.as_secs(), before.id),
                )
                .task(TaskStatus::BuildingErrorReplica)
                .into());
            }
            cx.renew().await?;
            cx.sleep(cx.poll_interval() * 4).await;
        }
        let guest = cx.guest_of(source_id);
        let done = run_backup(cx, guest, seed_id, "seed")
            .await
            .map_err(|s| with_task(s, TaskStatus::BuildingErrorReplica))?;
        let w = super::backup::completed(&done, cx.clock().now());
        cx.update(|_, extra| extra.push(w.clone())).await?;
    }
    let b = load_backup(cx, seed_id).await?;
    let piece = piece_of(&b).ok_or_else(|| {
        Failure::with_details(
            "The backup that seeds the replica has no complete object.",
            format!("seed backup {seed_id} has no location, checksum or size"),
        )
        .task(TaskStatus::BuildingErrorReplica)
    })?;
    Ok(RestoreSpec {
        chain: vec![piece],
        restore_time: None,
        replica: true,
    })
}

fn with_task(s: Stop, task: TaskStatus) -> Stop {
    match s {
        Stop::Fail(f) if f.task.is_none() => Stop::Fail(f.task(task)),
        other => other,
    }
}

/// Steps `attach` and `caught_up`: the replica's guest follows the source, with the replication account the
/// source's guest hands out (the password stays in the two calls), and applies what the source had by then (a
/// replica shows ACTIVE once it follows with its first copy loaded).
pub(crate) async fn attach(cx: &mut StepContext<'_>, source_id: Uuid) -> StepResult<()> {
    let (source, guest) = (cx.guest_of(source_id), cx.guest());
    let (s, g) = (source.clone(), guest.clone());
    cx.step("attach", |_| async move {
        follow(&s, &g).await.map_err(|e| {
            Stop::Fail(
                Failure::new("The replica could not be attached to its source.", &e)
                    .task(TaskStatus::BuildingErrorReplica),
            )
        })
    })
    .await?;
    let timeout = catch_up_timeout(cx);
    cx.step("caught_up", |_| async move {
        let at = source.replication_position().await;
        let waited = match at {
            Ok(p) => guest.wait_for_position(p, timeout).await,
            Err(e) => Err(e),
        };
        waited.map_err(|e| {
            Stop::Fail(
                Failure::new("The replica did not catch up with its source in time.", &e)
                    .task(TaskStatus::BuildingErrorReplica),
            )
        })
    })
    .await
}

/// Makes `replica` follow `source`.
async fn follow(
    source: &crate::rpc::GuestClient,
    replica: &crate::rpc::GuestClient,
) -> crate::Result<()> {
    let info = source.replication_source_info().await?;
    replica.attach_replica(info).await
}

/// The seed backup, deleted (its object is purged), for the commit that ends a replica's build.
pub(crate) async fn drop_seed(cx: &StepContext<'_>, seed_id: Uuid) -> StepResult<Option<Write>> {
    let Some(mut b) = cx
        .store()
        .get_backup(seed_id)
        .await
        .map_err(abort_on_store)?
    else {
        return Ok(None);
    };
    if b.deleted {
        return Ok(None);
    }
    if b.state.is_running() {
        b.state = BackupState::Failed;
        b.fault = Some("the replica it seeded was not built".into());
    }
    b.deleted = true;
    b.updated = cx.clock().now();
    Ok(Some(Write::Backup(b)))
}

// ---------------------------------------------------------------------------------------------------- detach

/// Parameters of the detach workflow (`PATCH /instances/{id} {"instance": {"replica_of": ""}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachParams {
    /// The source the replica follows now.
    pub source_id: Uuid,
}

impl WorkflowParams for DetachParams {
    const KIND: WorkflowKind = WorkflowKind::new("detach_replica");
}

/// Detach a replica: it stops following its source and takes writes, standalone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Detach;

#[async_trait]
impl WorkflowDef for Detach {
    type Params = DetachParams;

    fn error_task(&self) -> Option<TaskStatus> {
        // Upstream has no detach error task: the replica goes back to NONE with the fault.
        Some(TaskStatus::None)
    }

    async fn run(&self, cx: &mut StepContext<'_>, _p: &DetachParams) -> StepResult<()> {
        let guest = cx.guest();
        cx.step("detach", |_| async move {
            guest
                .detach_replica()
                .await
                .map_err(|e| super::fail("The replica could not be detached.", &e))
        })
        .await?;
        cx.finish(|i, _| {
            i.replica_of = None;
            i.task = TaskStatus::None;
            i.fault = None;
        })
        .await?;
        Ok(())
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![Scenario::new("detach a replica", |w| {
            Box::pin(async move {
                let (_, replicas) = w.replication_set("db", 1).await?;
                w.detach(replicas[0]).await?;
                Ok(replicas[0])
            })
        })
        .check(|w, id| {
            Box::pin(async move {
                w.expect_active(id).await?;
                w.expect_standalone_writable(id).await
            })
        })]
    }
}

// ---------------------------------------------------------------------------------------------------- promote

/// Parameters of the promote workflow (`{"promote_to_replica_source": {}}` on a replica).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteParams {
    /// The source now.
    pub old_source: Uuid,
    /// The source's other replicas.
    pub siblings: Vec<Uuid>,
}

impl WorkflowParams for PromoteParams {
    const KIND: WorkflowKind = WorkflowKind::new("promote_to_replica_source");
}

/// Switchover: the replica becomes the source, the old source and the siblings follow it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Promote;

/// How long a candidate may take to apply its source's last position.
fn catch_up_timeout(cx: &StepContext<'_>) -> Duration {
    cx.config()
        .agent_call_high_timeout
        .saturating_sub(Duration::from_secs(5))
        .max(Duration::from_secs(5))
}

/// Steps `attach_<id>` for each of `followers`: each follows `source`. Answers the followers that could not be
/// attached, with the reason (the workflow goes on: the new topology stands).
async fn reattach(
    cx: &mut StepContext<'_>,
    source: Uuid,
    followers: &[Uuid],
) -> StepResult<Vec<(Uuid, String)>> {
    let mut failed = Vec::new();
    for f in followers {
        let (src, guest) = (cx.guest_of(source), cx.guest_of(*f));
        let out: Option<String> = cx
            .step(&format!("attach_{f}"), |_| async move {
                Ok(follow(&src, &guest).await.err().map(|e| e.to_string()))
            })
            .await?;
        if let Some(why) = out {
            tracing::warn!(member = %f, new_source = %source, reason = %why, "a member could not follow the new source");
            failed.push((*f, why));
        }
    }
    Ok(failed)
}

/// The commit that ends a promote or eject: `new_source` is the source, every other member follows it, every task
/// is NONE. `failed`: members that could not be attached (their fault says so).
async fn settle_roles(
    cx: &mut StepContext<'_>,
    new_source: Uuid,
    members: &[Uuid],
    failed: &[(Uuid, String)],
    finish: bool,
    event: Event,
) -> StepResult<()> {
    let now = cx.clock().now();
    let own = cx.instance_id();
    let change = |i: &mut Instance, others: &mut Vec<Instance>, extra: &mut Vec<Write>| {
        extra.push(Write::Event(event.clone()));
        for m in std::iter::once(i).chain(others.iter_mut()) {
            m.task = TaskStatus::None;
            m.replica_of = (m.id != new_source).then_some(new_source);
            m.fault = failed.iter().find(|(id, _)| *id == m.id).map(|(_, why)| {
                crate::model::InstanceFault {
                    message: format!(
                        "This member could not follow the new source {new_source}; detach it or delete it."
                    ),
                    details: why.clone(),
                    created: now,
                }
            });
        }
    };
    let others: Vec<Uuid> = members.iter().copied().filter(|m| *m != own).collect();
    if finish {
        cx.finish_members(&others, change).await?;
    } else {
        cx.update_members(&others, change).await?;
    }
    Ok(())
}

/// The event a replication workflow records when it ends: its id is the workflow's, so a resumed run replaces it.
async fn event(
    cx: &StepContext<'_>,
    kind: &str,
    instances: Vec<Uuid>,
    ok: bool,
    message: String,
    details: serde_json::Value,
) -> StepResult<Event> {
    let inst = cx.instance().await?;
    Ok(Event {
        id: cx.workflow().id,
        tenant_id: inst.tenant_id,
        kind: kind.into(),
        instances,
        at: cx.clock().now(),
        ok,
        message,
        details,
    })
}

/// Records a failed replication workflow's event (nothing else changes).
async fn record(cx: &mut StepContext<'_>, e: Event) -> StepResult<()> {
    cx.update(|_, extra| extra.push(Write::Event(e.clone())))
        .await?;
    Ok(())
}

/// Releases the members locked by a failed promote or eject that changed no role.
async fn release(cx: &mut StepContext<'_>, members: &[Uuid], busy: TaskStatus) -> StepResult<()> {
    cx.update_members(members, |_, others, _| {
        for m in others.iter_mut().filter(|m| m.task == busy) {
            m.task = TaskStatus::None;
        }
    })
    .await?;
    Ok(())
}

#[async_trait]
impl WorkflowDef for Promote {
    type Params = PromoteParams;

    fn error_task(&self) -> Option<TaskStatus> {
        Some(TaskStatus::PromotionError)
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &PromoteParams) -> StepResult<()> {
        let me = cx.instance_id();
        let (old, guest) = (cx.guest_of(p.old_source), cx.guest());
        // 1. The old source takes no more writes.
        let fence = old.clone();
        cx.step("fence_source", |_| async move {
            fence.set_read_only(true).await.map_err(|e| {
                super::fail(
                    "The source could not be made read only for the switchover.",
                    &e,
                )
            })
        })
        .await?;
        // 2. Its last position: everything it acknowledged.
        let at = old.clone();
        let position: ReplicaPosition = cx
            .step("source_position", |_| async move {
                at.replication_position()
                    .await
                    .map_err(|e| super::fail("The source's position could not be read.", &e))
            })
            .await?;
        // 3. The candidate applies all of it.
        let (wait, timeout) = (guest.clone(), catch_up_timeout(cx));
        let pos = position.clone();
        cx.step("catch_up", |_| async move {
            wait.wait_for_position(pos, timeout).await.map_err(|e| {
                super::fail("The replica did not catch up with its source in time.", &e)
            })
        })
        .await?;
        // 4. It takes writes.
        let promote = guest.clone();
        cx.step("promote", |_| async move {
            promote
                .promote_replica()
                .await
                .map_err(|e| super::fail("The replica could not be promoted.", &e))
        })
        .await?;
        // 5. The siblings, then the old source, follow it.
        let mut followers = p.siblings.clone();
        followers.push(p.old_source);
        let failed = reattach(cx, me, &followers).await?;
        let started = cx
            .first_started("fence_source")
            .unwrap_or_else(|| cx.clock().now());
        let took = (cx.clock().now() - started).num_milliseconds();
        let mut instances = vec![p.old_source, me];
        instances.extend(&p.siblings);
        let e = event(
            cx,
            "switchover",
            instances,
            true,
            format!("Replica {me} is the source; {} follows it.", p.old_source),
            serde_json::json!({
                "old_source": p.old_source, "new_source": me, "position": position,
                "not_following": failed.iter().map(|(id, why)| serde_json::json!({"id": id, "why": why})).collect::<Vec<_>>(),
                "took_ms": took,
            }),
        )
        .await?;
        settle_roles(cx, me, &followers, &failed, true, e).await?;
        tracing::info!(new_source = %me, old_source = %p.old_source, ?position, took_ms = took, "switchover done");
        Ok(())
    }

    async fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        p: &PromoteParams,
        failure: Failure,
    ) -> StepResult<Failure> {
        let me = cx.instance_id();
        let mut members = p.siblings.clone();
        members.push(p.old_source);
        let mut instances = vec![p.old_source, me];
        instances.extend(&p.siblings);
        if cx.completed("promote").is_some() {
            // The roles changed: record them (a resumed compensation gets here too).
            let e = event(
                cx,
                "switchover",
                instances,
                true,
                format!("Replica {me} is the source; not every member follows it: {}", failure.message),
                serde_json::json!({"old_source": p.old_source, "new_source": me, "error": failure.details}),
            )
            .await?;
            settle_roles(cx, me, &members, &[], false, e).await?;
            return Ok(Failure::with_details(
                format!("{} This replica is the source now.", failure.message),
                failure.details,
            ));
        }
        let e = event(
            cx,
            "switchover",
            instances,
            false,
            format!(
                "The switchover to {me} failed; {} stays the source: {}",
                p.old_source, failure.message
            ),
            serde_json::json!({"old_source": p.old_source, "error": failure.details}),
        )
        .await?;
        record(cx, e).await?;
        if cx.completed("fence_source").is_some() || cx.first_started("fence_source").is_some() {
            // The old source stays the source: it takes writes again.
            let old = cx.guest_of(p.old_source);
            if let Err(e) = old.set_read_only(false).await {
                tracing::warn!(source = %p.old_source, error = %e, "could not make the source writable again");
            }
        }
        release(cx, &members, TaskStatus::Promoting).await?;
        Ok(failure)
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![Scenario::new("promote a replica", |w| {
            Box::pin(async move {
                let (_, replicas) = w.replication_set("db", 2).await?;
                w.promote(replicas[0]).await?;
                Ok(replicas[0])
            })
        })
        .check(|w, id| Box::pin(async move { w.expect_one_source(id).await }))]
    }
}

// ---------------------------------------------------------------------------------------------------- eject

/// Parameters of the eject workflow (`{"eject_replica_source": {}}` on a source whose guest went silent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EjectParams {
    /// The source's replicas.
    pub replicas: Vec<Uuid>,
    /// Why the control plane fails the source over on its own (`None`: a user's eject).
    #[serde(default)]
    pub automatic: Option<String>,
}

impl WorkflowParams for EjectParams {
    const KIND: WorkflowKind = WorkflowKind::new("eject_replica_source");
}

/// Eject a dead source: the most advanced replica that answers becomes the source, the others follow it, and the
/// old source is recorded as its replica (fenced read only if its guest still answers).
#[derive(Debug, Clone, Copy, Default)]
pub struct Eject;

/// What step `choose` journals: the candidate and every position read.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Chosen {
    candidate: Uuid,
    positions: Vec<(Uuid, ReplicaPosition)>,
}

/// The event kind of an eject: `failover` when the control plane started it.
fn kind_of(p: &EjectParams) -> &'static str {
    if p.automatic.is_some() {
        "failover"
    } else {
        "eject"
    }
}

/// The most advanced of `positions` (the first of equals).
fn most_advanced(positions: &[(Uuid, ReplicaPosition)]) -> Option<Uuid> {
    let mut best: Option<&(Uuid, ReplicaPosition)> = None;
    for p in positions {
        best = match best {
            Some(b) if p.1.ahead_of(&b.1) != Some(true) => Some(b),
            _ => Some(p),
        };
    }
    best.map(|b| b.0)
}

#[async_trait]
impl WorkflowDef for Eject {
    type Params = EjectParams;

    fn error_task(&self) -> Option<TaskStatus> {
        Some(TaskStatus::EjectionError)
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &EjectParams) -> StepResult<()> {
        let old_source = cx.instance_id();
        // 1. Fence what can be reached of the old source (its guest went silent; it may still answer): a guest
        //    that does not answer within four report intervals is taken for dead.
        let old = cx.guest_of_within(old_source, cx.config().report_interval * 4);
        let fenced: bool = cx
            .step("fence_source", |_| async move {
                Ok(match old.fence().await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::info!(source = %old_source, error = %e, "the ejected source could not be fenced through its guest");
                        false
                    }
                })
            })
            .await?;
        // 2. The candidate: the most advanced replica that answers.
        let guests: Vec<_> = p.replicas.iter().map(|r| (*r, cx.guest_of(*r))).collect();
        let chosen: Chosen = cx
            .step("choose", |_| async move {
                let mut positions = Vec::new();
                let mut silent = Vec::new();
                for (id, g) in guests {
                    match g.replication_position().await {
                        Ok(pos) => positions.push((id, pos)),
                        Err(e) => silent.push(format!("{id}: {e}")),
                    }
                }
                let candidate = most_advanced(&positions).ok_or_else(|| {
                    Failure::with_details(
                        "No replica answered with its position; none can become the source.",
                        silent.join("; "),
                    )
                })?;
                Ok(Chosen {
                    candidate,
                    positions,
                })
            })
            .await?;
        let candidate = chosen.candidate;
        // 3. It takes writes.
        let promote = cx.guest_of(candidate);
        cx.step("promote", |_| async move {
            promote
                .promote_replica()
                .await
                .map_err(|e| super::fail("The chosen replica could not be promoted.", &e))
        })
        .await?;
        // 4. The other replicas follow it; the old source too when its guest answered.
        let mut followers: Vec<Uuid> = p
            .replicas
            .iter()
            .copied()
            .filter(|r| *r != candidate)
            .collect();
        if fenced {
            followers.push(old_source);
        }
        let mut failed = reattach(cx, candidate, &followers).await?;
        if !fenced {
            failed.push((
                old_source,
                "its guest did not answer; when it is back, detach or delete it".into(),
            ));
        }
        let mut members = p.replicas.clone();
        members.push(old_source);
        let started = cx
            .first_started("fence_source")
            .unwrap_or_else(|| cx.clock().now());
        let took = (cx.clock().now() - started).num_milliseconds();
        let mut instances = vec![old_source, candidate];
        instances.extend(p.replicas.iter().filter(|r| **r != candidate));
        let e = event(
            cx,
            kind_of(p),
            instances,
            true,
            format!(
                "Replica {candidate} is the source in place of {old_source}{}.",
                p.automatic.as_deref().map(|why| format!(" ({why})")).unwrap_or_default()
            ),
            serde_json::json!({
                "old_source": old_source, "new_source": candidate, "reason": p.automatic,
                "fenced": fenced, "positions": chosen.positions,
                "not_following": failed.iter().map(|(id, why)| serde_json::json!({"id": id, "why": why})).collect::<Vec<_>>(),
                "took_ms": took,
            }),
        )
        .await?;
        settle_roles(cx, candidate, &members, &failed, true, e).await?;
        tracing::info!(%old_source, new_source = %candidate, positions = ?chosen.positions, took_ms = took, "source ejected");
        Ok(())
    }

    async fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        p: &EjectParams,
        failure: Failure,
    ) -> StepResult<Failure> {
        if let (Some(_), Some(chosen)) = (cx.completed("promote"), cx.completed("choose")) {
            let chosen: Chosen = serde_json::from_value(chosen.clone()).map_err(|e| {
                Stop::Fail(Failure::with_details(
                    "The workflow's journal is unreadable.",
                    e.to_string(),
                ))
            })?;
            let old_source = cx.instance_id();
            let mut members = p.replicas.clone();
            members.push(old_source);
            let e = event(
                cx,
                kind_of(p),
                vec![old_source, chosen.candidate],
                true,
                format!("Replica {} is the source in place of {old_source}; not every member follows it: {}", chosen.candidate, failure.message),
                serde_json::json!({"old_source": old_source, "new_source": chosen.candidate, "reason": p.automatic, "error": failure.details}),
            )
            .await?;
            settle_roles(cx, chosen.candidate, &members, &[], false, e).await?;
            return Ok(Failure::with_details(
                format!(
                    "{} Replica {} is the source now.",
                    failure.message, chosen.candidate
                ),
                failure.details,
            ));
        }
        let old_source = cx.instance_id();
        let e = event(
            cx,
            kind_of(p),
            vec![old_source],
            false,
            format!("No replica took over from {old_source}: {}", failure.message),
            serde_json::json!({"old_source": old_source, "reason": p.automatic, "error": failure.details}),
        )
        .await?;
        record(cx, e).await?;
        release(cx, &p.replicas, TaskStatus::Ejecting).await?;
        Ok(failure)
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![Scenario::new("eject a dead source", |w| {
            Box::pin(async move {
                let (source, _) = w.replication_set("db", 2).await?;
                w.eject(source).await?;
                Ok(source)
            })
        })
        .check(|w, id| Box::pin(async move { w.expect_one_source(id).await }))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_advanced_replica_is_chosen() {
        let o = |offset| ReplicaPosition::Offset { offset };
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(most_advanced(&[(a, o(5)), (b, o(9)), (c, o(7))]), Some(b));
        assert_eq!(most_advanced(&[(a, o(5)), (b, o(5))]), Some(a));
        assert_eq!(most_advanced(&[]), None);
    }
}
