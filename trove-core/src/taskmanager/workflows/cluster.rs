//! Cluster workflows: create, grow, shrink, recover and delete a cluster of member instances.
//!
//! Members are ordinary instances: each is built by its own create workflow and removed by its own delete
//! workflow, so everything those do (placement, volumes, crash recovery, quota) holds for members too. A cluster
//! workflow runs beside them, keyed on one member that stays (its *anchor*; a workflow's writes are fenced by the
//! anchor's row like every workflow's): it waits for the members it needs, then makes them one cluster through
//! their guests' cluster facet, and moves the cluster's task.
//!
//! - **create**: the members are built → each joins, in order (the first starts the cluster) → the data is spread
//!   (`rebalance`) → task NONE.
//! - **grow**: the new members are built → the engines' roles are learned (Redis replicas: a failover swaps a
//!   primary and its replica) → each new member joins (primaries first; a replica follows the primary it was
//!   given, or whoever serves that shard now) → the new members get the cluster's root and users → every old
//!   member learns who belongs → `rebalance` gives the new primaries their share (Redis: slots move with their
//!   keys) → task NONE.
//! - **shrink**: the roles are learned → a staying member drains the leaving ones (Redis: their slots move away
//!   with their keys) → the staying members learn who belongs → the leaving members are deleted by their own
//!   delete workflows → task NONE. Nothing is deleted before its data moved.
//! - **upgrade, restart, configuration**: see [`super::cluster_rolling`] (one member at a time).
//! - **delete**: every member's delete workflow is started (each member once) → when all are deleted, the
//!   cluster row is marked deleted.
//!
//! While a cluster task runs, only its workflow writes the cluster row (the API changes a cluster only when its
//! task is NONE, at the version it read), so the workflow writes it as a whole (fenced by its own row).
//! Every step is idempotent: a join, a rebalance or a drain done again moves nothing more; a member's delete
//! workflow is started in the same commit that marks the member DELETING, and a member already DELETING (or
//! deleted) is not started again.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

use crate::model::{
    Cluster, ClusterTask, Event, Instance, InstanceFault, Workflow, WorkflowKind, WorkflowParams,
};
use crate::ports::{ClusterMember, ClusterSpec, Moved, Write};
use crate::rpc::TaskManagerClient;
use crate::state::{ServerStatus, TaskStatus};
use crate::taskmanager::context::abort_on_store;
use crate::taskmanager::{Failure, StepContext, StepResult, Stop, WorkflowDef};

use super::delete::DeleteParams;

/// The sealing context of a cluster's internal password.
pub fn secret_context(cluster_id: Uuid) -> String {
    format!("internal account of cluster {cluster_id}")
}

/// The sealing context of a cluster's root password.
pub fn root_context(cluster_id: Uuid) -> String {
    format!("root password of cluster {cluster_id}")
}

/// What a new member of a cluster is built from.
#[derive(Debug)]
pub struct NewMember<'a> {
    /// Its name.
    pub name: String,
    /// Its flavor (every member's).
    pub flavor: &'a crate::model::Flavor,
    /// Its volume size, GB.
    pub volume_size: Option<u32>,
    /// Its volume type.
    pub volume_type: Option<String>,
    /// Where to place it.
    pub availability_zone: Option<String>,
    /// Its region.
    pub region: String,
    /// The cluster's datastore version.
    pub version: &'a crate::model::DatastoreVersion,
    /// The cluster's configuration values.
    pub overrides: &'a serde_json::Map<String, serde_json::Value>,
    /// When it is asked for (members are ordered by it: the order they join).
    pub created: chrono::DateTime<chrono::Utc>,
}

/// The rows that build member `m` of `cluster`: the instance (BUILDING, in the cluster), its NEW service status and
/// its own create workflow (its secrets sealed with `sealer`), pushed to `cs`. Answers the instance and the
/// workflow's id. The API's create and grow and the scaling policy's grow build members alike.
pub fn member_rows(
    cs: &mut crate::ports::ChangeSet,
    sealer: &crate::seal::Sealer,
    cluster: &Cluster,
    m: NewMember<'_>,
) -> crate::Result<(Instance, Uuid)> {
    use crate::ports::Expect;
    let inst = Instance {
        id: Uuid::new_v4(),
        name: m.name,
        tenant_id: cluster.tenant_id.clone(),
        datastore_version_id: m.version.id,
        flavor_id: m.flavor.id.clone(),
        ram_mb: m.flavor.ram_mb,
        volume_size: m.volume_size,
        volume_type: m.volume_type,
        task: TaskStatus::Building,
        server_status: ServerStatus::Build,
        server_id: None,
        volume_id: None,
        host: None,
        addresses: Vec::new(),
        port: None,
        configuration_id: cluster.configuration_id,
        replica_of: None,
        locality: cluster.locality,
        region: m.region,
        availability_zone: m.availability_zone,
        access: Default::default(),
        fault: None,
        cluster_id: Some(cluster.id),
        auto_failover: None,
        created: m.created,
        updated: m.created,
        deleted: false,
        deleted_at: None,
        version: 0,
    };
    let mut params = super::CreateParams {
        seed_backup: None,
        flavor: m.flavor.clone(),
        datastore_version: m.version.clone(),
        databases: Vec::new(),
        users: Vec::new(),
        root_password: None,
        overrides: m.overrides.clone(),
        group: cluster.locality.map(|l| (cluster.id, l)),
        scrubbed: false,
        sealed: None,
        replica_of: None,
        restore_point: None,
        restore_time: None,
    };
    params.seal_secrets(sealer, inst.id)?;
    let wf = Workflow::new(inst.id, &params, m.created)?;
    let wf_id = wf.id;
    cs.push(Write::Instance {
        instance: inst.clone(),
        expect: Expect::Absent,
    });
    cs.push(Write::ServiceStatus(crate::model::ServiceStatusRecord {
        instance_id: inst.id,
        status: crate::state::ServiceStatus::New,
        reason: None,
        volume: None,
        load: None,
        updated_at: m.created,
    }));
    cs.push(Write::Workflow {
        workflow: wf,
        expect: Expect::Absent,
    });
    Ok((inst, wf_id))
}

/// Parameters of the cluster create workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterCreateParams {
    /// The cluster.
    pub cluster_id: Uuid,
    /// Its members, in the order they join.
    pub members: Vec<Uuid>,
}

impl WorkflowParams for ClusterCreateParams {
    const KIND: WorkflowKind = WorkflowKind::new("cluster_create");
}

/// Parameters of the cluster grow workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterGrowParams {
    /// The cluster.
    pub cluster_id: Uuid,
    /// The members being added (being built by their create workflows).
    pub new_members: Vec<Uuid>,
    /// Why the task manager grew it on its own (a scaling decision), `None` for a user's grow.
    #[serde(default)]
    pub automatic: Option<String>,
}

impl WorkflowParams for ClusterGrowParams {
    const KIND: WorkflowKind = WorkflowKind::new("cluster_grow");
}

/// Parameters of the cluster shrink workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterShrinkParams {
    /// The cluster.
    pub cluster_id: Uuid,
    /// The members leaving.
    pub leaving: Vec<Uuid>,
    /// Why the task manager shrank it on its own, `None` for a user's shrink.
    #[serde(default)]
    pub automatic: Option<String>,
}

impl WorkflowParams for ClusterShrinkParams {
    const KIND: WorkflowKind = WorkflowKind::new("cluster_shrink");
}

/// Parameters of the cluster delete workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterDeleteParams {
    /// The cluster.
    pub cluster_id: Uuid,
    /// Every member at the time of the delete.
    pub members: Vec<Uuid>,
}

impl WorkflowParams for ClusterDeleteParams {
    const KIND: WorkflowKind = WorkflowKind::new("cluster_delete");
}

// ------------------------------------------------------------------------------------------------ shared steps

pub(super) async fn load_cluster(cx: &StepContext<'_>, id: Uuid) -> StepResult<Cluster> {
    cx.store()
        .get_cluster(id)
        .await
        .map_err(abort_on_store)?
        .ok_or_else(|| {
            Stop::Fail(Failure::with_details(
                "The cluster is gone.",
                format!("cluster {id} not found"),
            ))
        })
}

/// The live members of a cluster, oldest first (the order they joined).
pub(super) async fn members_of(
    cx: &StepContext<'_>,
    cluster_id: Uuid,
) -> StepResult<Vec<Instance>> {
    cluster_members(cx.store().as_ref(), cluster_id)
        .await
        .map_err(abort_on_store)
}

/// The live members of cluster `cluster_id` in the order they joined (by creation; the API creates a request's
/// members a microsecond apart), the first being the one a new cluster starts from. The API, the workflows and the
/// task manager's monitors all read members through this.
pub async fn cluster_members(
    store: &dyn crate::ports::InfraStore,
    cluster_id: Uuid,
) -> crate::Result<Vec<Instance>> {
    let mut m = store
        .list_instances(&crate::model::InstanceFilter {
            cluster_id: Some(cluster_id),
            ..Default::default()
        })
        .await?;
    m.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    Ok(m)
}

/// How the guests see a member: the address its engine listens on, and its port (`None`: the engine's standard
/// port, as on a VM of its own).
fn member_of(
    i: &Instance,
    standard_port: u16,
    replica_of: Option<Uuid>,
) -> StepResult<ClusterMember> {
    match i.addresses.first() {
        Some(a) => Ok(ClusterMember {
            instance_id: i.id,
            host: a.address.clone(),
            port: i.port.unwrap_or(standard_port),
            replica_of,
        }),
        None => Err(Stop::Fail(Failure::with_details(
            format!(
                "Member {} has no address yet; it cannot join the cluster.",
                i.id
            ),
            "the member's server reported no address",
        ))),
    }
}

/// The cluster as its members' guests are told it: `members` in order, and the internal password opened.
pub(super) async fn spec(
    cx: &StepContext<'_>,
    cluster: &Cluster,
    members: &[Instance],
) -> StepResult<ClusterSpec> {
    let secret: crate::model::Secret = cx
        .sealer()
        .open_json(&cluster.secret, &secret_context(cluster.id))
        .map_err(|e| {
            Stop::Fail(Failure::new(
                "The cluster's internal password cannot be opened with this deployment's keys.",
                &e,
            ))
        })?;
    let version = cx
        .store()
        .get_datastore_version(cluster.datastore_version_id)
        .await
        .map_err(abort_on_store)?
        .ok_or_else(|| {
            Stop::Fail(Failure::with_details(
                "The cluster's datastore version is gone.",
                format!(
                    "datastore version {} not found",
                    cluster.datastore_version_id
                ),
            ))
        })?;
    let port = version.manager.default_port();
    // A replica is listed with its primary only when that primary is listed too.
    let primary_of = |m: &Instance| {
        cluster
            .replicas
            .get(&m.id)
            .copied()
            .filter(|p| members.iter().any(|x| x.id == *p))
    };
    Ok(ClusterSpec {
        cluster_id: cluster.id,
        members: members
            .iter()
            .map(|m| member_of(m, port, primary_of(m)))
            .collect::<StepResult<_>>()?,
        secret,
    })
}

/// Step `roles`: the replicas of `cluster` as its `members`' engines see them now (a Redis failover makes a
/// replica the primary of its shard and the old primary, when it is back, its replica). A member that does not
/// answer keeps the role it had. Members in `joining` (not joined yet) keep their assignment, moved to whoever
/// serves their primary's shard now. Answers the cluster with its replicas updated (the workflow writes it back
/// when it ends).
async fn learn_roles(
    cx: &mut StepContext<'_>,
    mut cluster: Cluster,
    members: &[Instance],
    joining: &[Uuid],
) -> StepResult<Cluster> {
    if cluster.replicas.is_empty() {
        return Ok(cluster);
    }
    let asked: Vec<(Instance, crate::rpc::GuestClient)> = members
        .iter()
        .filter(|m| !joining.contains(&m.id))
        .map(|m| (m.clone(), cx.guest_of(m.id)))
        .collect();
    // Members by the address their engines know each other at.
    let addressed: Vec<(Uuid, String)> = spec(cx, &cluster, members)
        .await?
        .members
        .iter()
        .map(|m| (m.instance_id, format!("{}:{}", m.host, m.port)))
        .collect();
    let before = cluster.replicas.clone();
    let joining = joining.to_vec();
    let learned: std::collections::BTreeMap<Uuid, Uuid> = cx
        .step("roles", |_| async move {
            let mut now = std::collections::BTreeMap::new();
            for (m, guest) in asked {
                match guest.cluster_status().await {
                    Ok(st) => {
                        if let Some(addr) = st.replica_of {
                            if let Some((p, _)) =
                                addressed.iter().find(|(p, a)| *p != m.id && *a == addr)
                            {
                                now.insert(m.id, *p);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::info!(member = %m.id, error = %e, "member did not say its role; it keeps the one it had");
                        if let Some(p) = before.get(&m.id) {
                            now.insert(m.id, *p);
                        }
                    }
                }
            }
            for r in &joining {
                if let Some(mut p) = before.get(r).copied() {
                    // The shard's primary now: follow the chain from the assigned one (at most once per member).
                    for _ in 0..before.len() + 1 {
                        match now.get(&p) {
                            Some(q) if *q != p => p = *q,
                            _ => break,
                        }
                    }
                    now.insert(*r, p);
                }
            }
            Ok(now)
        })
        .await?;
    if learned != cluster.replicas {
        tracing::info!(cluster = %cluster.id, before = ?cluster.replicas, now = ?learned, "cluster roles changed (a failover)");
    }
    cluster.replicas = learned;
    Ok(cluster)
}

/// Waits until every instance of `ids` is built and healthy (task NONE, server ACTIVE, engine running); fails
/// when one of them fails to build, naming it and its fault.
async fn wait_built(cx: &mut StepContext<'_>, ids: &[Uuid]) -> StepResult<Vec<Instance>> {
    let deadline = cx.clock().now()
        + chrono::Duration::from_std(cx.config().usage_timeout)
            .unwrap_or(chrono::Duration::seconds(1800));
    loop {
        let mut ready = Vec::with_capacity(ids.len());
        for id in ids {
            let i = cx.instance_of(*id).await?.ok_or_else(|| {
                Stop::Fail(Failure::with_details(
                    format!("Member {id} is gone."),
                    format!("instance {id} not found"),
                ))
            })?;
            if i.task.is_error() || i.deleted {
                let why = i.fault.as_ref().map_or_else(
                    || i.task.name().to_string(),
                    |f| format!("{}: {}", f.message, f.details),
                );
                return Err(Stop::Fail(Failure::with_details(
                    format!("Member {} ({}) could not be built.", i.name, i.id),
                    why,
                )));
            }
            let st = cx
                .store()
                .get_service_status(*id)
                .await
                .map_err(abort_on_store)?;
            let healthy = st.is_some_and(|s| s.status.is_datastore_running());
            if i.task == TaskStatus::None && i.server_status == ServerStatus::Active && healthy {
                ready.push(i);
            }
        }
        if ready.len() == ids.len() {
            return Ok(ready);
        }
        if cx.clock().now() >= deadline {
            return Err(Stop::Fail(Failure::with_details(
                "The cluster's members were not built in time.",
                format!("{} of {} members ready", ready.len(), ids.len()),
            )));
        }
        cx.renew().await?;
        cx.sleep(cx.poll_interval()).await;
    }
}

/// Steps `join_<id>`: each of `joining` joins the cluster `spec`, in order.
async fn join_all(
    cx: &mut StepContext<'_>,
    spec: &ClusterSpec,
    joining: &[Uuid],
) -> StepResult<()> {
    for id in joining {
        let guest = cx.guest_of(*id);
        let s = spec.clone();
        cx.step(&format!("join_{id}"), |_| async move {
            guest
                .cluster_join(s)
                .await
                .map_err(|e| super::fail(&format!("Member {id} could not join the cluster."), &e))
        })
        .await?;
    }
    Ok(())
}

/// Steps `root_<id>`: when the cluster's root was enabled, each of `joined` gets the same root password (a client
/// of the cluster logs in on every member), with its root history.
async fn give_root(cx: &mut StepContext<'_>, cluster: &Cluster, joined: &[Uuid]) -> StepResult<()> {
    let Some(sealed) = &cluster.root else {
        return Ok(());
    };
    let password: crate::model::Secret = cx
        .sealer()
        .open_json(sealed, &root_context(cluster.id))
        .map_err(|e| {
        Stop::Fail(Failure::new(
            "The cluster's root password cannot be opened with this deployment's keys.",
            &e,
        ))
    })?;
    for id in joined {
        let guest = cx.guest_of(*id);
        let pw = password.clone();
        cx.step(&format!("root_{id}"), |_| async move {
            guest
                .enable_root(Some(pw))
                .await
                .map(|_| ())
                .map_err(|e| super::fail(&format!("Root could not be enabled on member {id}."), &e))
        })
        .await?;
        let now = cx.clock().now();
        let (member, user) = (*id, cx.workflow().instance_id.to_string());
        cx.update(|_, extra| {
            extra.push(Write::RootHistory(crate::model::RootHistory {
                instance_id: member,
                user: user.clone(),
                created: now,
            }))
        })
        .await?;
    }
    Ok(())
}

/// Step `users`: the users made through the API on the cluster (read from the workflow's anchor, a member from
/// before) are made on each of `joined` (Redis keeps users apart from its data, and a cluster client is redirected
/// to any member; Galera's arrive with the state transfer and are not copied). Only how many is journaled: the
/// lines carry credentials.
async fn copy_users(cx: &mut StepContext<'_>, joined: &[Uuid]) -> StepResult<()> {
    let from = cx.guest();
    let to: Vec<(Uuid, crate::rpc::GuestClient)> =
        joined.iter().map(|id| (*id, cx.guest_of(*id))).collect();
    cx.step("users", |_| async move {
        let users = from
            .cluster_users()
            .await
            .map_err(|e| super::fail("The cluster's users could not be read.", &e))?;
        if !users.is_empty() {
            for (id, g) in to {
                g.cluster_set_users(users.clone()).await.map_err(|e| {
                    super::fail(
                        &format!("The cluster's users could not be made on member {id}."),
                        &e,
                    )
                })?;
            }
        }
        Ok(users.len())
    })
    .await
    .map(|_| ())
}

/// Steps `members_<id>`: each of `told` learns who belongs now.
async fn tell_members(
    cx: &mut StepContext<'_>,
    spec: &ClusterSpec,
    told: &[Uuid],
) -> StepResult<()> {
    for id in told {
        let guest = cx.guest_of(*id);
        let s = spec.clone();
        cx.step(&format!("members_{id}"), |_| async move {
            guest.cluster_set_members(s).await.map_err(|e| {
                super::fail(&format!("Member {id} could not be told who belongs."), &e)
            })
        })
        .await?;
    }
    Ok(())
}

/// The event a cluster workflow records (its id is the workflow's, so a resumed run replaces it).
pub(super) fn event(
    cx: &StepContext<'_>,
    cluster: &Cluster,
    kind: &str,
    instances: Vec<Uuid>,
    ok: bool,
    message: String,
    details: serde_json::Value,
) -> Event {
    let mut details = details;
    if let Some(m) = details.as_object_mut() {
        m.insert("cluster_id".into(), cluster.id.to_string().into());
    }
    Event {
        id: cx.workflow().id,
        tenant_id: cluster.tenant_id.clone(),
        kind: kind.into(),
        instances,
        at: cx.clock().now(),
        ok,
        message,
        details,
    }
}

/// The cluster row written back with `change` (the workflow owns it while its task runs).
pub(super) fn cluster_write(
    mut c: Cluster,
    now: chrono::DateTime<chrono::Utc>,
    change: impl FnOnce(&mut Cluster),
) -> Write {
    change(&mut c);
    c.updated = now;
    Write::Cluster {
        cluster: c,
        expect: crate::ports::Expect::Any,
    }
}

/// Closes a grow or shrink: the cluster's task back to NONE (and, for the scaling policy's own action, the time of
/// it for the cool-down), with its event.
async fn finish_resized(
    cx: &mut StepContext<'_>,
    cluster: Cluster,
    e: Event,
    automatic: bool,
) -> StepResult<()> {
    let now = cx.clock().now();
    let w = cluster_write(cluster, now, |c| {
        c.task = ClusterTask::None;
        c.fault = None;
        if automatic {
            c.last_scaled = Some(now);
        }
    });
    cx.finish(|_, extra| {
        extra.push(w.clone());
        extra.push(Write::Event(e.clone()));
    })
    .await?;
    Ok(())
}

/// Ends a failed cluster workflow: the cluster's task goes back to NONE with the failure as its fault.
pub(super) async fn release_cluster(
    cx: &mut StepContext<'_>,
    cluster_id: Uuid,
    failure: &Failure,
) -> StepResult<()> {
    let c = load_cluster(cx, cluster_id).await?;
    let now = cx.clock().now();
    let fault = InstanceFault {
        message: failure.message.clone(),
        details: failure.details.clone(),
        created: now,
    };
    let w = cluster_write(c, now, |c| {
        c.task = ClusterTask::None;
        c.fault = Some(fault);
    });
    cx.update(|_, extra| extra.push(w.clone())).await?;
    Ok(())
}

/// Step `delete_members`: every one of `ids` that is not deleting yet gets its delete workflow, started in the
/// commit that marks it DELETING; the new workflows are cast to the task managers.
async fn delete_members(cx: &mut StepContext<'_>, ids: &[Uuid]) -> StepResult<()> {
    let now = cx.clock().now();
    let mut started: Vec<Workflow> = Vec::new();
    let anchor = cx.instance_id();
    let others: Vec<Uuid> = ids.iter().copied().filter(|i| *i != anchor).collect();
    let mut new_wfs = Vec::new();
    for id in ids {
        let wf = Workflow::new(*id, &DeleteParams {}, now)
            .map_err(|e| Stop::Fail(Failure::new("A member's delete could not be started.", &e)))?;
        new_wfs.push((*id, wf));
    }
    let pick = |m: &mut Instance, extra: &mut Vec<Write>, started: &mut Vec<Workflow>| {
        if m.deleted || m.task == TaskStatus::Deleting {
            return;
        }
        let Some((_, wf)) = new_wfs.iter().find(|(id, _)| *id == m.id) else {
            return;
        };
        m.task = TaskStatus::Deleting;
        extra.push(Write::Workflow {
            workflow: wf.clone(),
            expect: crate::ports::Expect::Absent,
        });
        started.push(wf.clone());
    };
    cx.update_members(&others, |anchor_row, rows, extra| {
        started.clear();
        if ids.contains(&anchor_row.id) {
            pick(anchor_row, extra, &mut started);
        }
        for m in rows.iter_mut() {
            pick(m, extra, &mut started);
        }
    })
    .await?;
    let tm = TaskManagerClient::new(cx.bus(), "taskmanager");
    for wf in started {
        if let Err(e) = tm.run_workflow(wf.id).await {
            tracing::warn!(workflow = %wf.id, error = %e, "could not cast a member's delete; the scan will run it");
        }
    }
    Ok(())
}

/// Waits until every instance of `ids` is deleted.
async fn wait_deleted(cx: &mut StepContext<'_>, ids: &[Uuid], timeout: Duration) -> StepResult<()> {
    let started = cx.clock().now();
    loop {
        let mut left = Vec::new();
        for id in ids {
            if let Some(i) = cx.instance_of(*id).await? {
                if !i.deleted {
                    left.push(i);
                }
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if let Some(i) = left
            .iter()
            .find(|i| i.fault.is_some() && i.task == TaskStatus::None)
        {
            let f = i.fault.as_ref().expect("checked");
            return Err(Stop::Fail(Failure::with_details(
                format!(
                    "Member {} could not be deleted; delete the cluster again.",
                    i.id
                ),
                format!("{}: {}", f.message, f.details),
            )));
        }
        if (cx.clock().now() - started).to_std().unwrap_or_default() >= timeout {
            return Err(Stop::Fail(Failure::with_details(
                "The cluster's members were not deleted in time; delete the cluster again.",
                format!("{} member(s) left", left.len()),
            )));
        }
        cx.renew().await?;
        cx.sleep(cx.poll_interval()).await;
    }
}

// ------------------------------------------------------------------------------------------------ create

/// The cluster create workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterCreate;

#[async_trait]
impl WorkflowDef for ClusterCreate {
    type Params = ClusterCreateParams;

    fn error_task(&self) -> Option<TaskStatus> {
        None
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &ClusterCreateParams) -> StepResult<()> {
        let members = wait_built(cx, &p.members).await?;
        let cluster = load_cluster(cx, p.cluster_id).await?;
        let spec = spec(cx, &cluster, &members).await?;
        join_all(cx, &spec, &p.members).await?;
        let first = cx.guest_of(p.members[0]);
        let s = spec.clone();
        let moved: Moved = cx
            .step("rebalance", |_| async move {
                first.cluster_rebalance(s).await.map_err(|e| {
                    super::fail(
                        "The cluster's data could not be spread over its members.",
                        &e,
                    )
                })
            })
            .await?;
        let now = cx.clock().now();
        let e = event(
            cx,
            &cluster,
            "cluster_create",
            p.members.clone(),
            true,
            format!(
                "Cluster {} is built with {} members.",
                cluster.id,
                p.members.len()
            ),
            serde_json::json!({"members": p.members, "moved": moved}),
        );
        let w = cluster_write(cluster, now, |c| {
            c.task = ClusterTask::None;
            c.fault = None;
        });
        cx.finish(|_, extra| {
            extra.push(w.clone());
            extra.push(Write::Event(e.clone()));
        })
        .await?;
        tracing::info!(cluster = %p.cluster_id, members = p.members.len(), slots_moved = moved.slots, "cluster built");
        Ok(())
    }

    async fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        p: &ClusterCreateParams,
        failure: Failure,
    ) -> StepResult<Failure> {
        release_cluster(cx, p.cluster_id, &failure).await?;
        Ok(failure)
    }

    #[cfg(any(test, feature = "testing"))]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![Scenario::new("create a cluster", |w| {
            Box::pin(async move { w.cluster("c", 3).await })
        })
        .check(|w, id| Box::pin(async move { w.expect_cluster(id, 3).await }))
        .with_helpers()]
    }
}

// ------------------------------------------------------------------------------------------------ grow

/// The cluster grow workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterGrow;

#[async_trait]
impl WorkflowDef for ClusterGrow {
    type Params = ClusterGrowParams;

    fn error_task(&self) -> Option<TaskStatus> {
        None
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &ClusterGrowParams) -> StepResult<()> {
        wait_built(cx, &p.new_members).await?;
        let cluster = load_cluster(cx, p.cluster_id).await?;
        let members = members_of(cx, p.cluster_id).await?;
        let cluster = learn_roles(cx, cluster, &members, &p.new_members).await?;
        let spec = spec(cx, &cluster, &members).await?;
        join_all(cx, &spec, &p.new_members).await?;
        give_root(cx, &cluster, &p.new_members).await?;
        copy_users(cx, &p.new_members).await?;
        let old: Vec<Uuid> = members
            .iter()
            .map(|m| m.id)
            .filter(|id| !p.new_members.contains(id))
            .collect();
        tell_members(cx, &spec, &old).await?;
        let anchor = cx.guest();
        let s = spec.clone();
        let moved: Moved = cx
            .step("rebalance", |_| async move {
                anchor.cluster_rebalance(s).await.map_err(|e| {
                    super::fail(
                        "The cluster's data could not be spread over the new members.",
                        &e,
                    )
                })
            })
            .await?;
        let e = event(
            cx,
            &cluster,
            "cluster_grow",
            p.new_members.clone(),
            true,
            format!(
                "Cluster {} grew to {} members{}.",
                cluster.id,
                members.len(),
                p.automatic
                    .as_deref()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default()
            ),
            serde_json::json!({"new_members": p.new_members, "members": members.len(), "moved": moved,
                "reason": p.automatic}),
        );
        finish_resized(cx, cluster, e, p.automatic.is_some()).await?;
        tracing::info!(cluster = %p.cluster_id, members = members.len(), slots_moved = moved.slots, keys_moved = moved.keys, "cluster grown");
        Ok(())
    }

    async fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        p: &ClusterGrowParams,
        failure: Failure,
    ) -> StepResult<Failure> {
        release_cluster(cx, p.cluster_id, &failure).await?;
        Ok(failure.task(TaskStatus::GrowingError))
    }

    #[cfg(any(test, feature = "testing"))]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![
            Scenario::new("grow a cluster", |w| {
                Box::pin(async move {
                    let c = w.cluster_built("c", 3).await?;
                    w.grow_cluster(c, 1).await?;
                    Ok(c)
                })
            })
            .check(|w, id| Box::pin(async move { w.expect_cluster(id, 4).await }))
            .with_helpers(),
            Scenario::new(
                "grow a cluster with replicas by a primary and a replica",
                |w| {
                    Box::pin(async move {
                        let c = w.cluster_with_replicas("c", 3, 1).await?;
                        w.settle().await?;
                        w.expect_cluster(c, 4).await?;
                        w.grow_cluster_with_replicas(c, 1, 1).await?;
                        Ok(c)
                    })
                },
            )
            .check(|w, id| Box::pin(async move { w.expect_cluster(id, 6).await }))
            .with_helpers(),
        ]
    }
}

// ------------------------------------------------------------------------------------------------ shrink

/// The cluster shrink workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterShrink;

#[async_trait]
impl WorkflowDef for ClusterShrink {
    type Params = ClusterShrinkParams;

    fn error_task(&self) -> Option<TaskStatus> {
        None
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &ClusterShrinkParams) -> StepResult<()> {
        let cluster = load_cluster(cx, p.cluster_id).await?;
        let members = members_of(cx, p.cluster_id).await?;
        // Journaled: a resumed shrink uses the roles it learned before (its leaving members may be gone).
        let mut cluster = learn_roles(cx, cluster, &members, &[]).await?;

        // Once the leaving members are being deleted, their data has moved: what is left is the delete.
        if cx.completed("delete_members").is_none() {
            let spec_all = spec(cx, &cluster, &members).await?;
            let anchor = cx.guest();
            let leaving = p.leaving.clone();
            let s = spec_all.clone();
            let moved: Moved = cx
                .step("drain", |_| async move {
                    anchor.cluster_drain(s, leaving).await.map_err(|e| {
                        super::fail(
                            "The leaving members' data could not be moved to the others.",
                            &e,
                        )
                    })
                })
                .await?;
            let staying: Vec<Instance> = members
                .iter()
                .filter(|m| !p.leaving.contains(&m.id))
                .cloned()
                .collect();
            let spec_after = spec(cx, &cluster, &staying).await?;
            let told: Vec<Uuid> = staying.iter().map(|m| m.id).collect();
            tell_members(cx, &spec_after, &told).await?;
            let leaving = p.leaving.clone();
            cx.step("moved", |_| async move {
                tracing::info!(slots = moved.slots, keys = moved.keys, members = ?leaving, "leaving members drained");
                Ok(moved)
            })
            .await?;
        }
        let moved: Moved = cx
            .completed("moved")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let leaving = p.leaving.clone();
        if cx.completed("delete_members").is_none() {
            delete_members(cx, &leaving).await?;
            cx.step("delete_members", |_| async { Ok(()) }).await?;
        }
        let timeout = cx.config().agent_call_high_timeout * 2;
        wait_deleted(cx, &leaving, timeout).await?;
        let left = members.len().saturating_sub(p.leaving.len());
        let e = event(
            cx,
            &cluster,
            "cluster_shrink",
            p.leaving.clone(),
            true,
            format!(
                "Cluster {} shrank to {left} members{}.",
                cluster.id,
                p.automatic
                    .as_deref()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default()
            ),
            serde_json::json!({"removed": p.leaving, "members": left, "moved": moved, "reason": p.automatic}),
        );
        let leaving = &p.leaving;
        cluster
            .replicas
            .retain(|r, q| !leaving.contains(r) && !leaving.contains(q));
        finish_resized(cx, cluster, e, p.automatic.is_some()).await
    }

    async fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        p: &ClusterShrinkParams,
        failure: Failure,
    ) -> StepResult<Failure> {
        release_cluster(cx, p.cluster_id, &failure).await?;
        Ok(failure.task(TaskStatus::ShrinkingError))
    }

    #[cfg(any(test, feature = "testing"))]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![Scenario::new("shrink a cluster", |w| {
            Box::pin(async move {
                let c = w.cluster_built("c", 4).await?;
                w.shrink_cluster(c, 1).await?;
                Ok(c)
            })
        })
        .check(|w, id| Box::pin(async move { w.expect_cluster(id, 3).await }))
        .with_helpers()]
    }
}

// ------------------------------------------------------------------------------------------------ recover

/// Parameters of the cluster recovery workflow (every member's engine stopped: a full stop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecoverParams {
    /// The cluster.
    pub cluster_id: Uuid,
    /// Its members.
    pub members: Vec<Uuid>,
}

impl WorkflowParams for ClusterRecoverParams {
    const KIND: WorkflowKind = WorkflowKind::new("cluster_recover");
}

/// What step `positions` journals: how far each member's stopped engine got, and the one chosen to start the
/// cluster again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Recovery {
    positions: Vec<(Uuid, Option<u64>)>,
    chosen: Uuid,
}

/// The cluster recovery workflow: after every member's engine stopped (a host restart, a power cut, every engine
/// killed), the cluster is started again from its most advanced member, never left for an operator to bootstrap
/// by hand: every engine is stopped for good (the compute's supervision stops retrying them), each reports how far
/// it got (Galera: `grastate.dat` or `--wsrep-recover`), the most advanced bootstraps the cluster, and the others
/// start and join it (Galera: by IST from it). Redis members start again from their `nodes.conf`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterRecover;

#[async_trait]
impl WorkflowDef for ClusterRecover {
    type Params = ClusterRecoverParams;

    fn error_task(&self) -> Option<TaskStatus> {
        None
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &ClusterRecoverParams) -> StepResult<()> {
        let low = cx.config().agent_call_low_timeout;
        for id in &p.members {
            let guest = cx.guest_of(*id);
            cx.step(&format!("stop_{id}"), |_| async move {
                if let Err(e) = guest.stop_db(low).await {
                    tracing::info!(instance = %id, error = %e, "stop before recovery failed; continuing");
                }
                Ok(())
            })
            .await?;
        }
        let guests: Vec<_> = p.members.iter().map(|m| (*m, cx.guest_of(*m))).collect();
        let recovery: Recovery = cx
            .step("positions", |_| async move {
                let mut positions = Vec::new();
                for (id, g) in guests {
                    let pos = g.cluster_recovery_position().await.map_err(|e| {
                        super::fail(&format!("Member {id} could not say how far it got."), &e)
                    })?;
                    positions.push((id, pos));
                }
                // The most advanced; the first of equals (the oldest member).
                let mut chosen = positions[0];
                for p in &positions {
                    if p.1 > chosen.1 {
                        chosen = *p;
                    }
                }
                Ok(Recovery {
                    chosen: chosen.0,
                    positions,
                })
            })
            .await?;
        let cluster = load_cluster(cx, p.cluster_id).await?;
        let members = members_of(cx, p.cluster_id).await?;
        let spec = spec(cx, &cluster, &members).await?;
        let first = cx.guest_of(recovery.chosen);
        let s = spec.clone();
        cx.step("bootstrap", |_| async move {
            first.cluster_bootstrap(s).await.map_err(|e| {
                super::fail(
                    "The most advanced member could not start the cluster again.",
                    &e,
                )
            })
        })
        .await?;
        let others: Vec<Uuid> = p
            .members
            .iter()
            .copied()
            .filter(|m| *m != recovery.chosen)
            .collect();
        for id in &others {
            let guest = cx.guest_of(*id);
            cx.step(&format!("start_{id}"), |_| async move {
                guest
                    .start_db()
                    .await
                    .map_err(|e| super::fail(&format!("Member {id} could not be started."), &e))
            })
            .await?;
        }
        join_all(cx, &spec, &others).await?;
        let now = cx.clock().now();
        let e = event(
            cx,
            &cluster,
            "cluster_recover",
            p.members.clone(),
            true,
            format!(
                "Cluster {} started again from member {} after every member stopped.",
                cluster.id, recovery.chosen
            ),
            serde_json::json!({"positions": recovery.positions, "chosen": recovery.chosen}),
        );
        let w = cluster_write(cluster, now, |c| {
            c.task = ClusterTask::None;
            c.fault = None;
        });
        cx.finish(|_, extra| {
            extra.push(w.clone());
            extra.push(Write::Event(e.clone()));
        })
        .await?;
        tracing::info!(cluster = %p.cluster_id, chosen = %recovery.chosen, positions = ?recovery.positions, "cluster recovered from a full stop");
        Ok(())
    }

    async fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        p: &ClusterRecoverParams,
        failure: Failure,
    ) -> StepResult<Failure> {
        release_cluster(cx, p.cluster_id, &failure).await?;
        Ok(failure)
    }

    #[cfg(any(test, feature = "testing"))]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![Scenario::new("recover a cluster after a full stop", |w| {
            Box::pin(async move {
                let c = w.cluster_built("c", 3).await?;
                w.stop_cluster_fully(c).await?;
                Ok(c)
            })
        })
        .check(|w, id| Box::pin(async move { w.expect_cluster(id, 3).await }))
        .with_helpers()]
    }
}

// ------------------------------------------------------------------------------------------------ delete

/// The cluster delete workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterDelete;

#[async_trait]
impl WorkflowDef for ClusterDelete {
    type Params = ClusterDeleteParams;

    fn error_task(&self) -> Option<TaskStatus> {
        None
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &ClusterDeleteParams) -> StepResult<()> {
        if cx.completed("delete_members").is_none() {
            delete_members(cx, &p.members).await?;
            cx.step("delete_members", |_| async { Ok(()) }).await?;
        }
        let timeout = cx.config().agent_call_high_timeout * 2;
        wait_deleted(cx, &p.members, timeout).await?;
        let cluster = load_cluster(cx, p.cluster_id).await?;
        let now = cx.clock().now();
        let w = cluster_write(cluster, now, |c| {
            c.task = ClusterTask::None;
            c.deleted = true;
        });
        cx.finish(|_, extra| extra.push(w.clone())).await?;
        Ok(())
    }

    async fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        p: &ClusterDeleteParams,
        failure: Failure,
    ) -> StepResult<Failure> {
        release_cluster(cx, p.cluster_id, &failure).await?;
        Ok(failure)
    }

    #[cfg(any(test, feature = "testing"))]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![Scenario::new("delete a cluster", |w| {
            Box::pin(async move {
                let c = w.cluster_built("c", 3).await?;
                w.delete_cluster(c).await?;
                Ok(c)
            })
        })
        .check(|w, id| Box::pin(async move { w.expect_cluster_deleted(id).await }))
        .with_helpers()]
    }
}
