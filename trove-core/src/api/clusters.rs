//! Clusters (`/clusters`): create, list, show, show a member, delete, and the actions POSTed to a cluster (grow,
//! shrink, reset-status, and the rolling ones: upgrade, restart, configuration attach and detach, which change one
//! member at a time; `add_shard`, upstream's MongoDB action, answers 501).
//!
//! A cluster's members are instances built by their own create workflows; the cluster workflows of
//! [`crate::taskmanager::workflows::cluster`] make them one cluster. The API locks a cluster with its task in the
//! commit that starts the workflow (at the cluster's version, so two actions never both start), and refuses an
//! action while another runs with upstream's 422.

use rand::distributions::{Alphanumeric, DistString};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::ApiService;
use crate::error::{Error, Result};
use crate::model::{
    Cluster, ClusterTask, Datastore, DatastoreVersion, Facet, Flavor, Instance, Locality, Manager,
    Resource, Secret,
};
use crate::policy::{rules, Target};
use crate::ports::{ChangeSet, Expect, RequestContext, Write};
use crate::state::TaskStatus;
use crate::taskmanager::workflows::cluster::{
    member_rows, secret_context, ClusterCreateParams, ClusterDeleteParams, ClusterGrowParams,
    ClusterShrinkParams, NewMember,
};
use crate::taskmanager::workflows::cluster_rolling::{ClusterRollingParams, RollingChange};

use super::InstanceView;

/// One member asked for by a create or a grow (upstream's `instances` items).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterMemberRequest {
    /// Flavor id.
    pub flavor_ref: Option<String>,
    /// Volume size, GB.
    pub volume_size: Option<u32>,
    /// Volume type.
    pub volume_type: Option<String>,
    /// Availability zone (a host of the all-in-one).
    pub availability_zone: Option<String>,
    /// Member name (default: the cluster's name and a number).
    pub name: Option<String>,
    /// Member type: `replica` (Redis) for a replica of a shard (it serves a primary's slots when that primary
    /// fails); leave it out (or `member`, `primary`) for a primary.
    pub kind: Option<String>,
    /// Region.
    pub region_name: Option<String>,
}

/// `POST /clusters`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateCluster {
    /// Name.
    pub name: String,
    /// Datastore name or id.
    pub datastore: String,
    /// Datastore version name or id.
    pub datastore_version: String,
    /// The members.
    pub instances: Vec<ClusterMemberRequest>,
    /// Member placement.
    pub locality: Option<Locality>,
    /// Configuration group for every member.
    pub configuration: Option<Uuid>,
    /// Engine-specific options.
    pub extended_properties: Map<String, Value>,
}

/// An action POSTed to a cluster (exactly one key of the body).
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterAction {
    /// `{"grow": [...]}`.
    Grow(Vec<ClusterMemberRequest>),
    /// `{"shrink": [{"id": ...}]}`.
    Shrink(Vec<Uuid>),
    /// `{"reset-status": {}}` (`force_delete` inside: the client's force delete, under its own rule).
    ResetStatus {
        /// The client's force delete.
        force_delete: bool,
    },
    /// `{"upgrade": {"datastore_version": ...}}`.
    Upgrade(String),
    /// `{"restart": {}}`.
    Restart,
    /// `{"configuration_attach": {"configuration_id": ...}}`.
    ConfigurationAttach(Uuid),
    /// `{"configuration_detach": {}}`.
    ConfigurationDetach,
    /// `{"add_shard": {}}` (MongoDB upstream).
    AddShard,
}

impl ClusterMemberRequest {
    /// Whether it asks for a shard replica.
    pub fn is_replica(&self) -> bool {
        self.kind.as_deref() == Some("replica")
    }
}

/// What a cluster view is made of.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// The cluster.
    pub cluster: Cluster,
    /// Its datastore.
    pub datastore: Datastore,
    /// Its version.
    pub datastore_version: DatastoreVersion,
    /// Its live members, oldest first.
    pub members: Vec<InstanceView>,
}

pub use crate::model::min_members;

/// A new random internal password.
fn internal_password() -> Secret {
    Secret::new(Alphanumeric.sample_string(&mut rand::thread_rng(), 32))
}

impl ApiService {
    /// A cluster of the caller's project (deleted ones and other projects' are 404, as backups and configuration
    /// groups).
    async fn load_cluster(&self, ctx: &RequestContext, id: Uuid) -> Result<Cluster> {
        match self.store.get_cluster(id).await? {
            Some(c) if !c.deleted && c.tenant_id == ctx.tenant_id => Ok(c),
            _ => Err(Error::not_found("Cluster", id)),
        }
    }

    async fn authorized_cluster(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        rule: &str,
    ) -> Result<Cluster> {
        let c = self.load_cluster(ctx, id).await?;
        self.authorize(ctx, rule, &Target::project(&c.tenant_id))?;
        Ok(c)
    }

    /// The live members of a cluster, oldest first.
    async fn cluster_members(&self, cluster_id: Uuid) -> Result<Vec<Instance>> {
        crate::taskmanager::workflows::cluster::cluster_members(self.store.as_ref(), cluster_id)
            .await
    }

    async fn cluster_view(&self, cluster: Cluster) -> Result<ClusterView> {
        let (datastore_version, datastore) = self
            .version_and_datastore(cluster.datastore_version_id)
            .await?;
        let members = self.cluster_members(cluster.id).await?;
        let members = self.views(members).await?;
        Ok(ClusterView {
            cluster,
            datastore,
            datastore_version,
            members,
        })
    }

    /// Checks the members asked for and answers their flavor and volume size (every member the same: both
    /// engines need equal members).
    async fn member_shape(
        &self,
        version: &DatastoreVersion,
        asked: &[ClusterMemberRequest],
    ) -> Result<(Flavor, Option<u32>)> {
        let first = asked.first().ok_or_else(|| {
            Error::bad_request("A cluster needs members: give at least one instance.")
        })?;
        for (n, m) in asked.iter().enumerate() {
            if m.flavor_ref.is_none() {
                return Err(Error::bad_request(format!(
                    "Instance {} of the request has no flavorRef.",
                    n + 1
                )));
            }
            if m.flavor_ref != first.flavor_ref {
                return Err(Error::bad_request(format!(
                    "Every member of a {} cluster must have the same flavor; got {} and {}.",
                    version.manager,
                    first.flavor_ref.as_deref().unwrap_or_default(),
                    m.flavor_ref.as_deref().unwrap_or_default()
                )));
            }
            if m.volume_size != first.volume_size {
                return Err(Error::bad_request(format!(
                    "Every member of a {} cluster must have the same volume size; got {:?} and {:?} GB.",
                    version.manager, first.volume_size, m.volume_size
                )));
            }
            match m.kind.as_deref() {
                None | Some("member" | "primary") => {}
                Some("replica") if version.manager == Manager::Redis => {}
                Some("replica") => {
                    return Err(Error::bad_request(format!(
                        "A {} cluster has no replica members: every member holds all the data. Leave the type \
                         out.",
                        version.manager
                    )))
                }
                Some(k) => {
                    return Err(Error::bad_request(format!(
                        "Member type '{}' is not offered: give 'replica' (Redis: a replica of a shard) or leave \
                         it out (a primary).",
                        k.escape_default()
                    )))
                }
            }
        }
        let flavor_ref = first.flavor_ref.as_deref().unwrap_or_default();
        let flavor = self.store.get_flavor(flavor_ref).await?.ok_or_else(|| {
            Error::bad_request(format!("Flavor {flavor_ref} could not be found."))
        })?;
        if !version.flavor_ids.is_empty() && !version.flavor_ids.contains(&flavor.id) {
            return Err(Error::not_found(
                "Flavor for datastore version",
                format!("{} ({})", flavor.id, version.name),
            ));
        }
        let size = self.checked_volume_size(first.volume_size)?;
        Ok((flavor, size))
    }

    /// The rows that build one member of `cluster` (see [`member_rows`]), pushed to `cs`; answers the member and
    /// its create workflow's id.
    #[allow(clippy::too_many_arguments)]
    fn member_rows(
        &self,
        cs: &mut ChangeSet,
        cluster: &Cluster,
        asked: &ClusterMemberRequest,
        name: String,
        flavor: &Flavor,
        size: Option<u32>,
        version: &DatastoreVersion,
        overrides: &Map<String, Value>,
        created: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Instance, Uuid)> {
        member_rows(
            cs,
            &self.sealing.at_rest,
            cluster,
            NewMember {
                name,
                flavor,
                volume_size: size,
                volume_type: asked.volume_type.clone(),
                availability_zone: asked.availability_zone.clone(),
                region: asked
                    .region_name
                    .clone()
                    .unwrap_or_else(|| self.config.region.clone()),
                version,
                overrides,
                created,
            },
        )
    }

    /// The configuration values of group `id` for `version` (a 400 for another version's group).
    async fn cluster_overrides(
        &self,
        ctx: &RequestContext,
        id: Option<Uuid>,
        version: &DatastoreVersion,
    ) -> Result<Map<String, Value>> {
        let Some(cid) = id else {
            return Ok(Map::new());
        };
        self.require_facet(version.manager, Facet::Configuration, "configuration")?;
        let c = self.load_configuration(ctx, cid).await?;
        if c.datastore_version_id != version.id {
            return Err(Error::bad_request(format!(
                "Configuration group {cid} is for another datastore version than the cluster."
            )));
        }
        Ok(c.values)
    }

    /// `POST /clusters`: validates, checks quota, persists the cluster (BUILDING), its members (each with its
    /// create workflow) and the cluster's create workflow in one commit, and casts the workflows. Answers the
    /// cluster's view.
    pub async fn create_cluster(
        &self,
        ctx: &RequestContext,
        req: CreateCluster,
    ) -> Result<ClusterView> {
        self.authorize_on_tenant(ctx, rules::CLUSTER_CREATE)?;
        crate::model::validate_instance_name(&req.name)?;
        let (ds, version) = self
            .resolve_version(
                ctx,
                Some(&req.datastore),
                Some(&req.datastore_version),
                None,
            )
            .await?;
        let manager = version.manager;
        if manager == Manager::Postgresql {
            return Err(Error::bad_request(
                "PostgreSQL has no cluster type: for copies of a PostgreSQL server, create replicas \
                 (`openstack database instance create NAME --replica-of SOURCE`).",
            ));
        }
        self.require_facet(manager, Facet::Cluster, "clusters")?;
        let min = min_members(manager);
        let n = u32::try_from(req.instances.iter().filter(|m| !m.is_replica()).count())
            .unwrap_or(u32::MAX);
        if n < min {
            return Err(Error::bad_request(format!(
                "A {manager} cluster needs at least {min} members (not counting replicas); the request has {n}."
            )));
        }
        let (flavor, size) = self.member_shape(&version, &req.instances).await?;
        // Primaries first, then replicas: the order members join in.
        let mut asked: Vec<&ClusterMemberRequest> =
            req.instances.iter().filter(|m| !m.is_replica()).collect();
        asked.extend(req.instances.iter().filter(|m| m.is_replica()));
        let overrides = self
            .cluster_overrides(ctx, req.configuration, &version)
            .await?;
        let now = self.clock.now();
        let mut cluster = Cluster {
            id: Uuid::new_v4(),
            tenant_id: ctx.tenant_id.clone(),
            name: req.name.clone(),
            datastore_version_id: version.id,
            task: ClusterTask::Building,
            locality: req.locality,
            configuration_id: req.configuration,
            extended_properties: req.extended_properties.clone(),
            secret: String::new(),
            root: None,
            scaling: None,
            last_scaled: None,
            replicas: Default::default(),
            fault: None,
            deleted: false,
            created: now,
            updated: now,
            version: 0,
        };
        cluster.secret = self
            .sealing
            .at_rest
            .seal_json(&internal_password(), &secret_context(cluster.id))?;
        let mut cs = ChangeSet::new();
        let mut members = Vec::new();
        let mut replicas = Vec::new();
        let mut workflows = Vec::new();
        for (i, asked) in asked.into_iter().enumerate() {
            let name = asked
                .name
                .clone()
                .unwrap_or_else(|| format!("{}-member-{}", req.name, i + 1));
            crate::model::validate_instance_name(&name)?;
            // Members are created a microsecond apart so that their order is their joining order.
            let at = now + chrono::Duration::microseconds(i as i64);
            let (inst, wf) = self.member_rows(
                &mut cs, &cluster, asked, name, &flavor, size, &version, &overrides, at,
            )?;
            members.push(inst.id);
            if asked.is_replica() {
                replicas.push(inst.id);
            }
            workflows.push(wf);
        }
        let primaries: Vec<Uuid> = members
            .iter()
            .copied()
            .filter(|m| !replicas.contains(m))
            .collect();
        cluster.replicas =
            crate::model::assign_replicas(&primaries, &Default::default(), &replicas)
                .into_iter()
                .collect();
        let params = ClusterCreateParams {
            cluster_id: cluster.id,
            members: members.clone(),
        };
        let wf = self.new_workflow(members[0], &params)?;
        workflows.push(wf.id);
        cs.push(Write::Workflow {
            workflow: wf,
            expect: Expect::Absent,
        });
        cs.push(Write::Cluster {
            cluster: cluster.clone(),
            expect: Expect::Absent,
        });
        let cs = cs.check_quota(
            ctx.tenant_id.clone(),
            &[Resource::Instances, Resource::Ram, Resource::Volumes],
        );
        self.store.commit(cs).await?;
        for w in workflows {
            self.cast(w).await;
        }
        tracing::info!(cluster = %cluster.id, datastore = %ds.name, members = members.len(), "cluster requested");
        self.cluster_view(cluster).await
    }

    /// `GET /clusters`: the caller's clusters, oldest first.
    pub async fn list_clusters(&self, ctx: &RequestContext) -> Result<Vec<ClusterView>> {
        self.authorize_on_tenant(ctx, rules::CLUSTER_INDEX)?;
        let all = self.store.list_clusters(Some(&ctx.tenant_id)).await?;
        let mut out = Vec::with_capacity(all.len());
        for c in all {
            out.push(self.cluster_view(c).await?);
        }
        Ok(out)
    }

    /// `GET /clusters/{id}`.
    pub async fn show_cluster(&self, ctx: &RequestContext, id: Uuid) -> Result<ClusterView> {
        let c = self
            .authorized_cluster(ctx, id, rules::CLUSTER_SHOW)
            .await?;
        self.cluster_view(c).await
    }

    /// `PUT /clusters/{id}/scaling_policy` (extension; `None`: `DELETE`, the policy goes): the task manager grows
    /// and shrinks the cluster by it. Checked against the datastore's minimum (400); refused while a cluster task
    /// runs (422).
    pub async fn set_scaling_policy(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        policy: Option<crate::model::ScalingPolicy>,
    ) -> Result<ClusterView> {
        let mut c = self
            .authorized_cluster(ctx, id, rules::CLUSTER_ACTION)
            .await?;
        if c.task != ClusterTask::None {
            return Err(c.task.busy());
        }
        let (version, _) = self.version_and_datastore(c.datastore_version_id).await?;
        if let Some(p) = &policy {
            p.validate(min_members(version.manager))?;
        }
        let expect = Expect::Version(c.version);
        c.scaling = policy;
        c.updated = self.clock.now();
        self.store
            .commit(ChangeSet::new().with(Write::Cluster {
                cluster: c.clone(),
                expect,
            }))
            .await?;
        c.version += 1;
        self.cluster_view(c).await
    }

    /// `GET /clusters/{id}/events` (extension): what happened to the cluster (built, grown, shrunk; by a user or
    /// by its scaling policy, with the metric values that decided it), oldest first.
    pub async fn list_cluster_events(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Vec<crate::model::Event>> {
        let c = self
            .authorized_cluster(ctx, id, rules::CLUSTER_SHOW)
            .await?;
        let all = self
            .store
            .list_events(&crate::model::EventFilter {
                tenant_id: Some(c.tenant_id.clone()),
                instance_id: None,
            })
            .await?;
        let key = c.id.to_string();
        Ok(all
            .into_iter()
            .filter(|e| e.details.get("cluster_id").and_then(Value::as_str) == Some(key.as_str()))
            .collect())
    }

    /// `POST /clusters/{id}/root`: the same root password on every member (generated by the first member's guest
    /// when none is given), so that a client of the cluster logs in on any member (Redis Cluster clients follow
    /// redirects to every member; Galera replicates the account anyway). Records each member's root history.
    pub async fn cluster_root_enable(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        password: Option<Secret>,
    ) -> Result<super::RootCredentials> {
        let c = self
            .authorized_cluster(ctx, id, rules::CLUSTER_ROOT_CREATE)
            .await?;
        if c.task != ClusterTask::None {
            return Err(c.task.busy());
        }
        let (version, _) = self.version_and_datastore(c.datastore_version_id).await?;
        self.require_facet(version.manager, Facet::Root, "root")?;
        if let Some(p) = &password {
            crate::model::validate_password(p)?;
        }
        let members = self.cluster_members(id).await?;
        let mut password = password;
        let mut cs = ChangeSet::new();
        for m in &members {
            let p = self.guest(m.id).enable_root(password.clone()).await?;
            password = Some(p);
            cs.push(Write::RootHistory(crate::model::RootHistory {
                instance_id: m.id,
                user: ctx.user_id.clone(),
                created: self.clock.now(),
            }));
        }
        let password =
            password.ok_or_else(|| Error::unprocessable("The cluster has no members."))?;
        // Kept sealed on the cluster: members added later get it too.
        let mut c = c;
        let expect = Expect::Version(c.version);
        c.root = Some(self.sealing.at_rest.seal_json(
            &password,
            &crate::taskmanager::workflows::cluster::root_context(c.id),
        )?);
        c.updated = self.clock.now();
        cs.push(Write::Cluster { cluster: c, expect });
        self.store.commit(cs).await?;
        Ok(super::RootCredentials {
            name: "root".into(),
            password,
        })
    }

    /// `GET /clusters/{id}/root`: whether root was enabled on every member.
    pub async fn cluster_root_show(&self, ctx: &RequestContext, id: Uuid) -> Result<bool> {
        let c = self
            .authorized_cluster(ctx, id, rules::CLUSTER_ROOT_INDEX)
            .await?;
        let members = self.cluster_members(c.id).await?;
        let mut all = !members.is_empty();
        for m in &members {
            all &= self.store.get_root_history(m.id).await?.is_some();
        }
        Ok(all)
    }

    /// `GET /clusters/{id}/instances/{instance_id}`: a member's view (404 for an instance of no such member).
    pub async fn show_cluster_instance(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        instance_id: Uuid,
    ) -> Result<InstanceView> {
        let c = self
            .authorized_cluster(ctx, id, rules::CLUSTER_SHOW_INSTANCE)
            .await?;
        let inst = self.load_instance(ctx, instance_id).await?;
        if inst.cluster_id != Some(c.id) {
            return Err(Error::not_found("Instance", instance_id));
        }
        self.view(inst).await
    }

    /// Stores `cluster` with `task` and the workflow that runs it (anchored on `anchor`), plus `extra`, in one
    /// commit at the cluster's version; casts the workflow(s).
    async fn start_cluster_task<P: crate::model::WorkflowParams>(
        &self,
        mut cluster: Cluster,
        task: ClusterTask,
        anchor: Uuid,
        params: &P,
        mut cs: ChangeSet,
        mut casts: Vec<Uuid>,
    ) -> Result<Cluster> {
        let wf = self.new_workflow(anchor, params)?;
        casts.push(wf.id);
        let expect = Expect::Version(cluster.version);
        cluster.task = task;
        cluster.fault = None;
        cluster.updated = self.clock.now();
        cs.push(Write::Workflow {
            workflow: wf,
            expect: Expect::Absent,
        });
        cs.push(Write::Cluster {
            cluster: cluster.clone(),
            expect,
        });
        self.store.commit(cs).await.map_err(|e| match e {
            Error::Conflict { .. } => Error::unprocessable(
                "The cluster changed while this action was asked for (another action started); try again.",
            ),
            e => e,
        })?;
        for w in casts {
            self.cast(w).await;
        }
        Ok(cluster)
    }

    /// `DELETE /clusters/{id}`: every member is deleted by its own workflow, then the cluster.
    pub async fn delete_cluster(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        let c = self
            .authorized_cluster(ctx, id, rules::CLUSTER_DELETE)
            .await?;
        if !matches!(c.task, ClusterTask::None | ClusterTask::Deleting) {
            return Err(c.task.busy());
        }
        if c.task == ClusterTask::Deleting {
            // A delete runs: asking again is harmless.
            return Ok(());
        }
        let members = self.cluster_members(id).await?;
        let Some(anchor) = members.first().map(|m| m.id) else {
            // No member left (all deleted by a workflow that failed after): the cluster goes at once.
            let mut gone = c.clone();
            let expect = Expect::Version(c.version);
            gone.deleted = true;
            gone.updated = self.clock.now();
            return self
                .store
                .commit(ChangeSet::new().with(Write::Cluster {
                    cluster: gone,
                    expect,
                }))
                .await;
        };
        let params = ClusterDeleteParams {
            cluster_id: id,
            members: members.iter().map(|m| m.id).collect(),
        };
        self.start_cluster_task(
            c,
            ClusterTask::Deleting,
            anchor,
            &params,
            ChangeSet::new(),
            Vec::new(),
        )
        .await?;
        Ok(())
    }

    /// `POST /clusters/{id}`: one action. Answers the cluster's view (202).
    pub async fn cluster_action(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        action: ClusterAction,
    ) -> Result<ClusterView> {
        let rule = match &action {
            ClusterAction::ResetStatus { force_delete: true } => rules::CLUSTER_FORCE_DELETE,
            ClusterAction::ResetStatus { .. } => rules::CLUSTER_RESET_STATUS,
            _ => rules::CLUSTER_ACTION,
        };
        let c = self.authorized_cluster(ctx, id, rule).await?;
        let c = match action {
            ClusterAction::Grow(asked) => self.grow(ctx, c, asked, None).await?,
            ClusterAction::Shrink(ids) => self.shrink(c, ids, None).await?,
            ClusterAction::ResetStatus { .. } => self.reset_cluster(c).await?,
            ClusterAction::Upgrade(version) => self.upgrade_cluster(c, &version).await?,
            ClusterAction::Restart => self.roll_cluster(c, RollingChange::Restart).await?,
            ClusterAction::ConfigurationAttach(cid) => {
                self.configure_cluster(ctx, c, Some(cid)).await?
            }
            ClusterAction::ConfigurationDetach => self.configure_cluster(ctx, c, None).await?,
            ClusterAction::AddShard => {
                return Err(Error::not_implemented(
                    "add_shard is MongoDB's (sharded clusters); Redis and Galera clusters grow instead.",
                ))
            }
        };
        self.cluster_view(c).await
    }

    /// Grow: new members (equal to the existing ones) are built and joined. `automatic`: the scaling policy's
    /// reason.
    pub(crate) async fn grow(
        &self,
        ctx: &RequestContext,
        mut c: Cluster,
        asked: Vec<ClusterMemberRequest>,
        automatic: Option<String>,
    ) -> Result<Cluster> {
        if c.task != ClusterTask::None {
            return Err(c.task.busy());
        }
        if asked.is_empty() {
            return Err(Error::bad_request("grow needs at least one instance."));
        }
        let members = self.cluster_members(c.id).await?;
        let anchor = members
            .first()
            .ok_or_else(|| Error::unprocessable("The cluster has no members left; delete it."))?;
        let (version, _) = self.version_and_datastore(c.datastore_version_id).await?;
        let (flavor, size) = self.member_shape(&version, &asked).await?;
        if flavor.id != anchor.flavor_id || size != anchor.volume_size {
            return Err(Error::bad_request(format!(
                "New members must match the cluster's: flavor {} and a volume of {:?} GB.",
                anchor.flavor_id, anchor.volume_size
            )));
        }
        let overrides = self
            .cluster_overrides(ctx, c.configuration_id, &version)
            .await?;
        let now = self.clock.now();
        let mut cs = ChangeSet::new();
        let mut new_members = Vec::new();
        let mut new_replicas = Vec::new();
        let mut casts = Vec::new();
        // Primaries first, then replicas (the order they join in).
        let ordered = asked
            .iter()
            .filter(|m| !m.is_replica())
            .chain(asked.iter().filter(|m| m.is_replica()));
        for (i, a) in ordered.enumerate() {
            let name = a
                .name
                .clone()
                .unwrap_or_else(|| format!("{}-member-{}", c.name, members.len() + i + 1));
            crate::model::validate_instance_name(&name)?;
            let at = now + chrono::Duration::microseconds(i as i64);
            let (inst, wf) = self.member_rows(
                &mut cs, &c, a, name, &flavor, size, &version, &overrides, at,
            )?;
            new_members.push(inst.id);
            if a.is_replica() {
                new_replicas.push(inst.id);
            }
            casts.push(wf);
        }
        let primaries: Vec<Uuid> = members
            .iter()
            .map(|m| m.id)
            .chain(new_members.iter().copied())
            .filter(|m| !c.replicas.contains_key(m) && !new_replicas.contains(m))
            .collect();
        let assigned = crate::model::assign_replicas(&primaries, &c.replicas, &new_replicas);
        c.replicas.extend(assigned);
        let params = ClusterGrowParams {
            cluster_id: c.id,
            new_members,
            automatic,
        };
        let cs = cs.check_quota(
            c.tenant_id.clone(),
            &[Resource::Instances, Resource::Ram, Resource::Volumes],
        );
        let anchor = anchor.id;
        self.start_cluster_task(c, ClusterTask::GrowingCluster, anchor, &params, cs, casts)
            .await
    }

    /// Shrink: the leaving members' data moves to the others, then they are deleted.
    pub(crate) async fn shrink(
        &self,
        c: Cluster,
        ids: Vec<Uuid>,
        automatic: Option<String>,
    ) -> Result<Cluster> {
        if c.task != ClusterTask::None {
            return Err(c.task.busy());
        }
        if ids.is_empty() {
            return Err(Error::bad_request("shrink needs at least one instance id."));
        }
        let members = self.cluster_members(c.id).await?;
        for id in &ids {
            if !members.iter().any(|m| m.id == *id) {
                return Err(Error::bad_request(format!(
                    "Instance {id} is not a member of cluster {}.",
                    c.id
                )));
            }
        }
        let mut leaving = ids.clone();
        leaving.sort();
        leaving.dedup();
        if let Some((r, p)) = c
            .replicas
            .iter()
            .find(|(r, p)| leaving.contains(p) && !leaving.contains(r))
        {
            return Err(Error::bad_request(format!(
                "Instance {r} is a replica of leaving member {p}: list it too (a replica leaves with its \
                 primary)."
            )));
        }
        let (version, _) = self.version_and_datastore(c.datastore_version_id).await?;
        let min = min_members(version.manager) as usize;
        let left = members
            .iter()
            .filter(|m| !leaving.contains(&m.id) && !c.replicas.contains_key(&m.id))
            .count();
        if left < min {
            return Err(Error::bad_request(format!(
                "A {} cluster needs at least {min} members (not counting replicas); shrinking {} of {} would \
                 leave {left}.",
                version.manager,
                leaving.len(),
                members.len()
            )));
        }
        let anchor = members
            .iter()
            .find(|m| !leaving.contains(&m.id))
            .map(|m| m.id)
            .ok_or_else(|| Error::bad_request("No member would stay."))?;
        let params = ClusterShrinkParams {
            cluster_id: c.id,
            leaving,
            automatic,
        };
        self.start_cluster_task(
            c,
            ClusterTask::ShrinkingCluster,
            anchor,
            &params,
            ChangeSet::new(),
            Vec::new(),
        )
        .await
    }

    /// Starts the rolling `change` (one member at a time, see
    /// [`crate::taskmanager::workflows::cluster_rolling`]): the cluster must be free (422) and every member free of
    /// other work (422, naming it).
    async fn roll_cluster(&self, c: Cluster, change: RollingChange) -> Result<Cluster> {
        if c.task != ClusterTask::None {
            return Err(c.task.busy());
        }
        let members = self.cluster_members(c.id).await?;
        let anchor = members
            .first()
            .map(|m| m.id)
            .ok_or_else(|| Error::unprocessable("The cluster has no members left; delete it."))?;
        for m in &members {
            let busy = !(m.task == TaskStatus::None || m.task.is_error());
            if busy || !self.open_workflows_of(m.id).await?.is_empty() {
                return Err(Error::unprocessable(format!(
                    "Member {} ({}) is busy ({}); try again when it has finished.",
                    m.name,
                    m.id,
                    m.task.name()
                )));
            }
        }
        let task = change.cluster_task();
        let params = ClusterRollingParams {
            cluster_id: c.id,
            members: members.iter().map(|m| m.id).collect(),
            change,
        };
        self.start_cluster_task(c, task, anchor, &params, ChangeSet::new(), Vec::new())
            .await
    }

    /// `{"upgrade": {"datastore_version": ...}}`: the target must be another active version of the cluster's
    /// datastore and manager (as an instance's upgrade; 404/400) allowing the members' flavor (400). Members
    /// already on it are skipped, so asking again after a failure goes on where the roll stopped.
    async fn upgrade_cluster(&self, c: Cluster, version: &str) -> Result<Cluster> {
        let (old_version, new_version) = self
            .upgrade_target(
                c.datastore_version_id,
                version,
                &format!("Cluster {}", c.id),
            )
            .await?;
        for m in self.cluster_members(c.id).await? {
            if !new_version.flavor_ids.is_empty() && !new_version.flavor_ids.contains(&m.flavor_id)
            {
                return Err(Error::bad_request(format!(
                    "Flavor {} (member {}) is not allowed for datastore version '{}'.",
                    m.flavor_id, m.id, new_version.name
                )));
            }
        }
        self.roll_cluster(
            c,
            RollingChange::Upgrade {
                old_version: Box::new(old_version),
                new_version: Box::new(new_version),
            },
        )
        .await
    }

    /// `{"configuration_attach": {"configuration_id": ...}}` (`Some`) and `{"configuration_detach": {}}`
    /// (`None`): the group (404 when not the caller's) must be for the cluster's version (400); attaching needs
    /// none attached and detaching one attached (400). Every member gets it (or loses it) in turn; new members get
    /// the cluster's group.
    async fn configure_cluster(
        &self,
        ctx: &RequestContext,
        c: Cluster,
        target: Option<Uuid>,
    ) -> Result<Cluster> {
        match (target, c.configuration_id) {
            (Some(_), Some(old)) => {
                return Err(Error::bad_request(format!(
                    "Cluster {} already has configuration group {old} attached; detach it first.",
                    c.id
                )))
            }
            (None, None) => {
                return Err(Error::bad_request(format!(
                    "Cluster {} has no configuration group attached.",
                    c.id
                )))
            }
            _ => {}
        }
        let (version, _) = self.version_and_datastore(c.datastore_version_id).await?;
        self.cluster_overrides(ctx, target, &version).await?;
        // A group is for one version: after an upgrade that stopped part way, members run two.
        if let Some(m) = self
            .cluster_members(c.id)
            .await?
            .into_iter()
            .find(|m| m.datastore_version_id != c.datastore_version_id)
        {
            return Err(Error::unprocessable(format!(
                "Member {} ({}) runs another datastore version than the cluster (an upgrade stopped part way): \
                 upgrade the cluster again first.",
                m.name, m.id
            )));
        }
        self.roll_cluster(
            c,
            RollingChange::Configuration {
                configuration_id: target,
            },
        )
        .await
    }

    /// Reset status: the cluster's task goes back to NONE, its open workflows and its members' are closed, and
    /// members left with a task get NONE (what a force delete needs before its DELETE).
    async fn reset_cluster(&self, mut c: Cluster) -> Result<Cluster> {
        let members = self.cluster_members(c.id).await?;
        let ids: Vec<Uuid> = members.iter().map(|m| m.id).collect();
        let mut cs = ChangeSet::new();
        for w in self.store.list_open_workflows().await? {
            if ids.contains(&w.instance_id) {
                cs.push(self.close_workflow(w));
            }
        }
        let now = self.clock.now();
        for mut m in members {
            if m.task != TaskStatus::None {
                let expect = Expect::Version(m.version);
                m.task = TaskStatus::None;
                m.updated = now;
                cs.push(Write::Instance {
                    instance: m,
                    expect,
                });
            }
        }
        let expect = Expect::Version(c.version);
        c.task = ClusterTask::None;
        c.updated = now;
        cs.push(Write::Cluster {
            cluster: c.clone(),
            expect,
        });
        self.store.commit(cs).await?;
        c.version += 1;
        Ok(c)
    }
}
