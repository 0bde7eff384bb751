//! Instances (`/instances`): create (with replicas), list, show, update (name, configuration attach/detach,
//! replica detach, upgrade, access) and delete.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{forbidden, ApiService, InstanceView, Page, PageRequest};
use crate::error::{Error, Result};
use crate::model::{
    validate_database_name, validate_instance_name, Access, DatabaseSpec, Facet, Instance,
    InstanceFilter, Locality, Resource, ServiceStatusRecord, UserSpec, WorkflowParams,
};
use crate::policy::rules;
use crate::ports::{ChangeSet, Expect, RequestContext, Write};
use crate::state::{Operation, ServerStatus, ServiceStatus, TaskStatus};
use crate::taskmanager::{ApplyConfigurationParams, CreateParams, DeleteParams, ForceDeleteParams};

/// `POST /instances` body, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateInstance {
    /// Name.
    pub name: String,
    /// Flavor id (href already reduced to its last segment).
    pub flavor_ref: Option<String>,
    /// Volume size GB.
    pub volume_size: Option<u32>,
    /// Volume type.
    pub volume_type: Option<String>,
    /// Datastore name or id.
    pub datastore: Option<String>,
    /// Version name or id.
    pub datastore_version: Option<String>,
    /// Version number.
    pub datastore_version_number: Option<String>,
    /// Initial databases.
    pub databases: Vec<DatabaseSpec>,
    /// Initial users.
    pub users: Vec<UserSpec>,
    /// Backup to restore from.
    pub restore_point: Option<Uuid>,
    /// Stop the restore at this moment (extension `restorePoint.restore_time`; point-in-time restore).
    pub restore_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Source to replicate.
    pub replica_of: Option<Uuid>,
    /// Number of replicas (with `replica_of`).
    pub replica_count: Option<u32>,
    /// Configuration group.
    pub configuration: Option<Uuid>,
    /// Locality.
    pub locality: Option<Locality>,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// Region.
    pub region_name: Option<String>,
    /// Access.
    pub access: Option<Access>,
}

/// `PUT/PATCH /instances/{id}` body, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateInstance {
    /// New name.
    pub name: Option<String>,
    /// `Some(None)`: detach from the replica source.
    pub replica_of: Option<Option<Uuid>>,
    /// `Some(Some(id))`: attach a group; `Some(None)`: detach.
    pub configuration: Option<Option<Uuid>>,
    /// New datastore version (upgrade).
    pub datastore_version: Option<String>,
    /// New access.
    pub access: Option<Access>,
    /// Extension: `Some(Some(b))` turns automatic failover of this replication source on or off,
    /// `Some(None)` goes back to the deployment's setting.
    pub auto_failover: Option<Option<bool>>,
}

fn validate_cidr(cidr: &str) -> Result<()> {
    let ok = match cidr.split_once('/') {
        Some((ip, bits)) => {
            ip.parse::<std::net::IpAddr>().is_ok()
                && bits
                    .parse::<u8>()
                    .is_ok_and(|b| b <= if ip.contains(':') { 128 } else { 32 })
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "'{}' is not a valid CIDR.",
            cidr.escape_default()
        )))
    }
}

/// The caller's live instances (cluster members too when `include_clustered`).
fn tenant_filter(ctx: &RequestContext, include_clustered: bool) -> InstanceFilter {
    InstanceFilter {
        tenant_id: Some(ctx.tenant_id.clone()),
        include_clustered,
        ..Default::default()
    }
}

impl ApiService {
    /// Refuses a point-in-time restore of `b` to `t` (400) unless the engine offers it and the archive of the chain
    /// ending at `b` covers `t` ([`crate::model::restore_window`]); the fault names the window that is covered.
    async fn check_restore_time(
        &self,
        manager: crate::model::Manager,
        b: &crate::model::Backup,
        t: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        if !manager.point_in_time_restore() {
            return Err(Error::bad_request(format!(
                "Point-in-time restore (restorePoint.restore_time) is not offered for datastore {manager}; \
                 restore backup {} without restore_time.",
                b.id
            )));
        }
        let mut chain = vec![b.clone()];
        while let Some(pid) = chain.last().and_then(|c| c.parent_id) {
            match self.store.get_backup(pid).await? {
                Some(p) if !p.deleted && chain.len() <= 1000 => chain.push(p),
                _ => {
                    return Err(Error::bad_request(format!(
                        "The chain of backup {} is broken at {pid}.",
                        b.id
                    )))
                }
            }
        }
        chain.reverse();
        let fmt = |t: chrono::DateTime<chrono::Utc>| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        };
        match crate::model::restore_window(&chain) {
            Some((from, to)) if from <= t && t <= to => Ok(()),
            Some((from, to)) => Err(Error::bad_request(format!(
                "restore_time {} is outside what backup {} covers: from {} to {}. Choose a moment in that range, \
                 or the backup whose range holds it (an incremental taken after the moment).",
                fmt(t),
                b.id,
                fmt(from),
                fmt(to)
            ))),
            None => Err(Error::bad_request(format!(
                "Backup {} covers no point-in-time range: a restore can stop between the end of a full backup and \
                 the end of an incremental on it. Take an incremental after the moment to restore to, and restore \
                 from it.",
                b.id
            ))),
        }
    }

    /// The live replicas of `id` (cluster members included).
    pub(super) async fn replicas_of(&self, id: Uuid) -> Result<Vec<Instance>> {
        self.store
            .list_instances(&InstanceFilter {
                replica_of: Some(id),
                include_clustered: true,
                ..Default::default()
            })
            .await
    }

    /// The live instances of every tenant (cluster members included) that use configuration group `id`.
    pub(super) async fn instances_using(&self, configuration_id: Uuid) -> Result<Vec<Instance>> {
        self.store
            .list_instances(&InstanceFilter {
                configuration_id: Some(configuration_id),
                include_clustered: true,
                ..Default::default()
            })
            .await
    }

    /// Every live instance, cluster members included.
    pub(super) async fn all_instances(&self) -> Result<Vec<Instance>> {
        self.store
            .list_instances(&InstanceFilter {
                include_clustered: true,
                ..Default::default()
            })
            .await
    }

    /// `GET /instances` and `/instances/detail`: the caller's live instances, newest first.
    pub async fn list_instances(
        &self,
        ctx: &RequestContext,
        include_clustered: bool,
    ) -> Result<Vec<InstanceView>> {
        self.authorize_on_tenant(ctx, rules::INSTANCE_INDEX)?;
        let instances = self
            .store
            .list_instances(&tenant_filter(ctx, include_clustered))
            .await?;
        self.views(instances).await
    }

    /// `GET /instances`, one page: the caller's live instances, newest first, paged by `page` before any view
    /// is built. Answers the page and the marker of the next one when more follow; an unknown marker is a 400.
    pub async fn list_instances_page(
        &self,
        ctx: &RequestContext,
        include_clustered: bool,
        page: &PageRequest,
    ) -> Result<Page<InstanceView>> {
        self.authorize_on_tenant(ctx, rules::INSTANCE_INDEX)?;
        self.tenant_instances_page(ctx, include_clustered, page)
            .await
    }

    /// `GET /instances/detail`, one page: as [`ApiService::list_instances_page`], under its own rule.
    pub async fn list_instances_detail_page(
        &self,
        ctx: &RequestContext,
        include_clustered: bool,
        page: &PageRequest,
    ) -> Result<Page<InstanceView>> {
        self.authorize_on_tenant(ctx, rules::INSTANCE_DETAIL)?;
        self.tenant_instances_page(ctx, include_clustered, page)
            .await
    }

    async fn tenant_instances_page(
        &self,
        ctx: &RequestContext,
        include_clustered: bool,
        page: &PageRequest,
    ) -> Result<Page<InstanceView>> {
        let instances = self
            .store
            .list_instances(&tenant_filter(ctx, include_clustered))
            .await?;
        self.views_page(instances, page).await
    }

    /// `GET /instances/{id}`.
    pub async fn show_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<InstanceView> {
        let inst = self
            .authorized_instance(ctx, id, rules::INSTANCE_SHOW)
            .await?;
        self.view(inst).await
    }

    /// `POST /instances`: validates, checks quota, persists (task BUILDING, service NEW, a create workflow) in
    /// one commit and casts the workflow to the task manager. Answers the new instance's view (status BUILD).
    pub async fn create_instance(
        &self,
        ctx: &RequestContext,
        req: CreateInstance,
    ) -> Result<InstanceView> {
        // What has an operation of its own is checked under that operation's rule as well (upstream).
        self.authorize_on_tenant(ctx, rules::INSTANCE_CREATE)?;
        if req.configuration.is_some() {
            self.authorize_on_tenant(ctx, rules::INSTANCE_UPDATE)?;
        }
        if !req.users.is_empty() {
            self.authorize_on_tenant(ctx, rules::USER_CREATE)?;
        }
        if !req.databases.is_empty() {
            self.authorize_on_tenant(ctx, rules::DATABASE_CREATE)?;
        }
        validate_instance_name(&req.name)?;
        if req.replica_count.is_some() && req.replica_of.is_none() {
            return Err(Error::bad_request(
                "replica_count is only valid together with replica_of.",
            ));
        }
        if let Some(n) = req.replica_count {
            if !(1..=3).contains(&n) {
                return Err(Error::bad_request("replica_count must be between 1 and 3."));
            }
        }
        // Replica: everything is copied from the source.
        let (flavor, ds, version, volume_size, volume_type, group) = match req.replica_of {
            Some(source_id) => {
                if req.locality.is_some() {
                    return Err(Error::bad_request(
                        "A replica may not be given locality; it is the source's (give it when creating the source).",
                    ));
                }
                if !req.databases.is_empty() || !req.users.is_empty() {
                    return Err(Error::bad_request(
                        "Cannot create a replica with users or databases.",
                    ));
                }
                let source = self.load_instance(ctx, source_id).await?;
                if source.replica_of.is_some() {
                    return Err(Error::Unauthorized {
                        message: format!("Cannot create a replica of replica {source_id}."),
                    });
                }
                self.gate(&source, Operation::CreateReplica).await?;
                let flavor = self
                    .store
                    .get_flavor(&source.flavor_id)
                    .await?
                    .ok_or_else(|| {
                        Error::bad_request(format!(
                            "Flavor {} of the source no longer exists.",
                            source.flavor_id
                        ))
                    })?;
                let (v, ds) = self
                    .version_and_datastore(source.datastore_version_id)
                    .await?;
                self.require_facet(v.manager, Facet::Replication, "replication")?;
                self.require_facet(
                    v.manager,
                    Facet::Backup,
                    "replication (seeding from a backup)",
                )?;
                let size = self
                    .replica_shape(ctx, &req, &source, &flavor, &ds, &v)
                    .await?;
                (
                    flavor,
                    ds,
                    v,
                    size,
                    source.volume_type.clone(),
                    source.locality.map(|l| (source_id, l)),
                )
            }
            None => {
                let (ds, v) = self
                    .resolve_version(
                        ctx,
                        req.datastore.as_deref(),
                        req.datastore_version.as_deref(),
                        req.datastore_version_number.as_deref(),
                    )
                    .await?;
                let flavor_ref = req
                    .flavor_ref
                    .as_deref()
                    .ok_or_else(|| Error::bad_request("flavorRef is required."))?;
                let flavor = self.store.get_flavor(flavor_ref).await?.ok_or_else(|| {
                    Error::bad_request(format!("Flavor {flavor_ref} could not be found."))
                })?;
                if !v.flavor_ids.is_empty() && !v.flavor_ids.contains(&flavor.id) {
                    return Err(Error::not_found(
                        "Flavor for datastore version",
                        format!("{} ({})", flavor.id, v.name),
                    ));
                }
                let size = self.checked_volume_size(req.volume_size)?;
                (flavor, ds, v, size, req.volume_type.clone(), None)
            }
        };
        let manager = version.manager;
        if self.facets.get(manager).is_none() {
            return Err(Error::bad_request(format!(
                "Datastore version '{}' cannot run here: this deployment has no strategy for the {manager} \
                 manager.",
                version.name
            )));
        }
        if !req.databases.is_empty() {
            self.require_facet(manager, Facet::Databases, "databases")?;
        }
        if !req.users.is_empty() {
            self.require_facet(manager, Facet::Users, "users")?;
        }
        if req.configuration.is_some() {
            self.require_facet(manager, Facet::Configuration, "configuration")?;
        }
        if req.restore_point.is_some() {
            self.require_facet(manager, Facet::Backup, "restore from a backup")?;
        }
        for db in &req.databases {
            validate_database_name(manager, &db.name)?;
        }
        for u in &req.users {
            Self::check_new_user(manager, u)?;
        }
        if let Some(a) = &req.access {
            for c in &a.allowed_cidrs {
                validate_cidr(c)?;
            }
        }
        let overrides = match req.configuration {
            Some(cid) => {
                let c = self.load_configuration(ctx, cid).await?;
                if c.datastore_version_id != version.id {
                    return Err(Error::bad_request(format!(
                        "Configuration group {cid} is for another datastore version than the instance."
                    )));
                }
                c.values
            }
            None => Map::new(),
        };
        let restore = match req.restore_point {
            Some(bid) => {
                let b = self.load_backup(ctx, bid).await?;
                if !b.state.is_restorable() {
                    return Err(Error::conflict(format!(
                        "Backup {bid} is not completed (state {}).",
                        b.state.as_str()
                    )));
                }
                let (bv, _) = self.version_and_datastore(b.datastore_version_id).await?;
                if bv.datastore_id != ds.id {
                    return Err(Error::bad_request(format!(
                        "Backup {bid} is of another datastore."
                    )));
                }
                if let (Some(bs), Some(vs)) = (b.size, volume_size) {
                    if bs > f64::from(vs) {
                        return Err(Error::bad_request(format!(
                            "Backup {bid} is {bs:.3} GB and does not fit a volume of {vs} GB; ask for a volume of \
                             at least {} GB.",
                            bs.ceil()
                        )));
                    }
                }
                if let Some(t) = req.restore_time {
                    self.check_restore_time(manager, &b, t).await?;
                }
                Some(bid)
            }
            None if req.restore_time.is_some() => {
                return Err(Error::bad_request(
                    "restorePoint.restore_time needs restorePoint.backupRef: the backup to restore from.",
                ));
            }
            None => None,
        };
        let count = if req.replica_of.is_some() {
            req.replica_count.unwrap_or(1)
        } else {
            1
        };
        if let (Some(source), Some((_, Locality::AntiAffinity))) = (req.replica_of, group) {
            self.check_anti_affinity(source, count).await?;
        }
        let now = self.clock.now();
        let mut cs = ChangeSet::new();
        let mut created = Vec::new();
        let mut workflows = Vec::new();
        for n in 0..count {
            let name = if count > 1 {
                format!("{}-{}", req.name, n + 1)
            } else {
                req.name.clone()
            };
            let inst = Instance {
                id: Uuid::new_v4(),
                name,
                tenant_id: ctx.tenant_id.clone(),
                datastore_version_id: version.id,
                flavor_id: flavor.id.clone(),
                ram_mb: flavor.ram_mb,
                volume_size,
                volume_type: volume_type.clone(),
                task: TaskStatus::Building,
                server_status: ServerStatus::Build,
                server_id: None,
                volume_id: None,
                host: None,
                addresses: Vec::new(),
                port: None,
                configuration_id: req.configuration,
                replica_of: req.replica_of,
                locality: req.locality,
                region: req
                    .region_name
                    .clone()
                    .unwrap_or_else(|| self.config.region.clone()),
                availability_zone: req.availability_zone.clone(),
                access: req.access.clone().unwrap_or_default(),
                fault: None,
                cluster_id: None,
                auto_failover: None,
                created: now,
                updated: now,
                deleted: false,
                deleted_at: None,
                version: 0,
            };
            // A replica is seeded from a backup of its source, taken by its own workflow.
            let seed_backup = match req.replica_of {
                Some(source_id) => {
                    let b = self.seed_backup(source_id, &inst, now).await?;
                    let id = b.id;
                    cs.push(Write::Backup(b));
                    Some(id)
                }
                None => None,
            };
            let params = CreateParams {
                seed_backup,
                flavor: flavor.clone(),
                datastore_version: version.clone(),
                databases: req.databases.clone(),
                users: req.users.clone(),
                root_password: None,
                overrides: overrides.clone(),
                group: group.or(req.locality.map(|l| (inst.id, l))),
                scrubbed: false,
                sealed: None,
                replica_of: req.replica_of,
                restore_point: restore,
                restore_time: req.restore_time,
            };
            let mut params = params;
            params.seal_secrets(&self.sealing.at_rest, inst.id)?;
            let wf = self.new_workflow(inst.id, &params)?;
            cs.push(Write::Instance {
                instance: inst.clone(),
                expect: Expect::Absent,
            });
            cs.push(Write::ServiceStatus(ServiceStatusRecord {
                instance_id: inst.id,
                status: ServiceStatus::New,
                reason: None,
                volume: None,
                load: None,
                updated_at: now,
            }));
            cs.push(Write::Workflow {
                workflow: wf.clone(),
                expect: Expect::Absent,
            });
            workflows.push(wf.id);
            created.push(inst);
        }
        let cs = cs.check_quota(
            ctx.tenant_id.clone(),
            &[Resource::Instances, Resource::Ram, Resource::Volumes],
        );
        self.store.commit(cs).await?;
        for w in workflows {
            self.cast(w).await;
        }
        let first = created
            .into_iter()
            .next()
            .ok_or_else(|| Error::bad_request("nothing to create"))?;
        self.view(first).await
    }

    /// The volume size a create asks for, checked: required with volume support (1 GB or more, at most
    /// `max_accepted_volume_size`: 413 beyond), refused without it.
    pub(super) fn checked_volume_size(&self, asked: Option<u32>) -> Result<Option<u32>> {
        match (self.config.volume_support, asked) {
            (true, None) => Err(Error::bad_request("A volume size is required.")),
            (true, Some(0)) => Err(Error::bad_request("The volume size must be at least 1 GB.")),
            (true, Some(s)) if s > self.config.max_accepted_volume_size => Err(Error::OverLimit {
                message: format!(
                    "Volume size {s} GB exceeds the maximum volume size of {} GB.",
                    self.config.max_accepted_volume_size
                ),
                retry_after: None,
            }),
            (true, Some(s)) => Ok(Some(s)),
            (false, Some(_)) => Err(Error::not_implemented(
                "Volume support is not enabled; do not give a volume size.",
            )),
            (false, None) => Ok(None),
        }
    }

    /// Strict anti-affinity puts every member of a replication set on a host of its own: refused at once (400
    /// naming the hosts) when `count` more replicas of `source` would not fit, instead of a build that fails.
    async fn check_anti_affinity(&self, source: Uuid, count: u32) -> Result<()> {
        let Some(compute) = &self.compute else {
            return Ok(());
        };
        let hosts = compute.hosts().await?;
        let members = 1 + self.replicas_of(source).await?.len() + count as usize;
        if members > hosts.len() {
            return Err(Error::bad_request(format!(
                "Locality anti-affinity puts each of the {members} members of this replication set on a host of its \
                 own, but this deployment has {} host(s): {}. Ask for fewer replicas or add hosts.",
                hosts.len(),
                hosts.join(", ")
            )));
        }
        Ok(())
    }

    /// Stores a change of `inst` made by the API alone, at the version it was read.
    async fn save_instance(&self, mut inst: Instance) -> Result<()> {
        let expect = Expect::Version(inst.version);
        inst.updated = self.clock.now();
        self.store
            .commit(ChangeSet::new().with(Write::Instance {
                instance: inst,
                expect,
            }))
            .await
    }

    /// The volume size of a replica of `source`. The legacy client always sends a flavor, a size and a datastore
    /// (`trove create NAME FLAVOR --size N --datastore D --replica_of SRC`): they are accepted when they are the
    /// source's (a larger volume is taken as asked); a conflict is a 400 naming both values.
    async fn replica_shape(
        &self,
        ctx: &RequestContext,
        req: &CreateInstance,
        source: &Instance,
        flavor: &crate::model::Flavor,
        ds: &crate::model::Datastore,
        v: &crate::model::DatastoreVersion,
    ) -> Result<Option<u32>> {
        if let Some(f) = req.flavor_ref.as_deref() {
            let given = self.store.get_flavor(f).await?;
            if given.as_ref().map(|g| g.id.as_str()) != Some(flavor.id.as_str()) {
                return Err(Error::bad_request(format!(
                    "A replica runs on its source's flavor {} ({}); flavorRef {f} differs. Leave it out or give \
                     the source's.",
                    flavor.id, flavor.name
                )));
            }
        }
        if req.datastore.is_some() || req.datastore_version.is_some() {
            let (gds, gv) = self
                .resolve_version(
                    ctx,
                    req.datastore.as_deref().or(Some(ds.name.as_str())),
                    req.datastore_version.as_deref(),
                    req.datastore_version_number.as_deref(),
                )
                .await?;
            if gds.id != ds.id || (req.datastore_version.is_some() && gv.id != v.id) {
                return Err(Error::bad_request(format!(
                    "A replica runs its source's datastore {} {}; {} {} differs. Leave the datastore out or give \
                     the source's.",
                    ds.name,
                    v.name,
                    gds.name,
                    if req.datastore_version.is_some() { gv.name.as_str() } else { "" }
                )));
            }
        }
        match (req.volume_size, source.volume_size) {
            (Some(asked), Some(src)) if asked < src => Err(Error::bad_request(format!(
                "A replica's volume must hold its source's data: {asked} GB is smaller than the source's {src} GB."
            ))),
            (Some(asked), Some(_)) if asked > self.config.max_accepted_volume_size => Err(Error::OverLimit {
                message: format!(
                    "Volume size {asked} GB exceeds the maximum volume size of {} GB.",
                    self.config.max_accepted_volume_size
                ),
                retry_after: None,
            }),
            (Some(asked), Some(_)) => Ok(Some(asked)),
            (Some(_), None) => Err(Error::bad_request(
                "The source has no volume; do not give the replica a volume size.",
            )),
            (None, src) => Ok(src),
        }
    }

    /// The backup record (NEW) that seeds `replica` from `source_id`.
    async fn seed_backup(
        &self,
        source_id: Uuid,
        replica: &Instance,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::model::Backup> {
        let source = self
            .store
            .get_instance(source_id)
            .await?
            .ok_or_else(|| Error::not_found("Instance", source_id))?;
        let (b, _) = crate::taskmanager::workflows::backup::plan(
            &source,
            crate::taskmanager::workflows::replication::seed_backup_name(&replica.name),
            Some(format!(
                "Seeds replica {}; deleted once it follows its source.",
                replica.id
            )),
            None,
            crate::taskmanager::workflows::backup::DEFAULT_BACKUP_CONTAINER.to_string(),
            None,
            now,
        )?;
        Ok(b)
    }

    /// `PUT/PATCH /instances/{id}`: name, configuration attach/detach, replica detach, upgrade, access.
    pub async fn update_instance(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        req: UpdateInstance,
    ) -> Result<()> {
        let mut inst = self
            .authorized_instance(ctx, id, rules::INSTANCE_UPDATE)
            .await?;
        let others = [
            req.replica_of.is_some(),
            req.configuration.is_some(),
            req.datastore_version.is_some(),
            req.access.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if others > 1 {
            return Err(Error::bad_request(
                "Only one attribute besides name may be updated at a time.",
            ));
        }
        if let Some(name) = &req.name {
            validate_instance_name(name)?;
        }
        if let Some(auto) = req.auto_failover {
            if others > 0 {
                return Err(Error::bad_request(
                    "Only one attribute besides name may be updated at a time.",
                ));
            }
            inst.auto_failover = auto;
            if let Some(name) = req.name.clone() {
                inst.name = name;
            }
            return self.save_instance(inst).await;
        }
        if others == 0 && req.name.is_none() {
            // An empty body detaches the configuration group (upstream).
            if inst.configuration_id.is_none() {
                return Ok(());
            }
        }
        if let Some(name) = req.name.clone() {
            let expect = Expect::Version(inst.version);
            inst.name = name;
            inst.updated = self.clock.now();
            self.store
                .commit(ChangeSet::new().with(Write::Instance {
                    instance: inst.clone(),
                    expect,
                }))
                .await?;
            inst.version += 1;
            if others == 0 {
                return Ok(());
            }
        }
        if let Some(None) = req.replica_of {
            if inst.replica_of.is_none() {
                return Err(Error::bad_request(format!(
                    "Instance {id} is not a replica."
                )));
            }
            let (v, _) = self
                .version_and_datastore(inst.datastore_version_id)
                .await?;
            self.require_facet(v.manager, Facet::Replication, "replication")?;
            self.gate(&inst, Operation::Detach).await?;
            let params = crate::taskmanager::DetachParams {
                source_id: inst.replica_of.unwrap_or_default(),
            };
            self.start_workflow(inst, &params, TaskStatus::Detaching, vec![], None)
                .await?;
            return Ok(());
        }
        if let Some(Some(_)) = req.replica_of {
            return Err(Error::bad_request(
                "replica_of can only be set to null (detach) on update.",
            ));
        }
        if let Some(access) = req.access {
            for c in &access.allowed_cidrs {
                validate_cidr(c)?;
            }
            inst.access = access;
            return self.save_instance(inst).await;
        }
        if let Some(version) = &req.datastore_version {
            return self.upgrade_instance(ctx, inst, version).await;
        }
        // An empty body (no configuration key) detaches, like `configuration: null`.
        let target = req.configuration.unwrap_or_default();
        self.gate(&inst, Operation::AssignConfiguration).await?;
        if target.is_some() {
            let (v, _) = self
                .version_and_datastore(inst.datastore_version_id)
                .await?;
            self.require_facet(v.manager, Facet::Configuration, "configuration")?;
        }
        match target {
            Some(cid) => {
                if inst.configuration_id.is_some() {
                    return Err(Error::bad_request(format!(
                        "Instance {id} already has a configuration group attached; detach it first."
                    )));
                }
                let c = self.load_configuration(ctx, cid).await?;
                if c.datastore_version_id != inst.datastore_version_id {
                    return Err(Error::bad_request(format!(
                        "Configuration group {cid} is for another datastore version than the instance."
                    )));
                }
                inst.configuration_id = Some(cid);
            }
            None => {
                if inst.configuration_id.is_none() {
                    return Err(Error::bad_request(format!(
                        "Instance {id} has no configuration group attached."
                    )));
                }
                inst.configuration_id = None;
            }
        }
        let task = inst.task;
        self.start_workflow(
            inst,
            &ApplyConfigurationParams {
                configuration_id: target,
            },
            task,
            vec![],
            None,
        )
        .await?;
        Ok(())
    }

    async fn delete_common(&self, ctx: &RequestContext, id: Uuid, force: bool) -> Result<()> {
        let inst = if force {
            self.authorized_instance(ctx, id, rules::INSTANCE_FORCE_DELETE)
                .await?
        } else {
            self.instance_for(ctx, id, rules::INSTANCE_DELETE, Operation::Delete)
                .await?
                .0
        };
        let replicas = self.replicas_of(id).await?;
        if !replicas.is_empty() {
            return Err(forbidden("Detach replicas before deleting replica source."));
        }
        let open = self.open_workflows_of(id).await?;
        if !force && inst.task == TaskStatus::Deleting {
            if let Some(w) = open
                .iter()
                .find(|w| w.kind == DeleteParams::KIND || w.kind == ForceDeleteParams::KIND)
            {
                self.cast(w.id).await;
                return Ok(());
            }
        }
        let extra: Vec<Write> = open.into_iter().map(|w| self.close_workflow(w)).collect();
        let mut inst = inst;
        inst.configuration_id = None;
        if force {
            self.start_workflow(
                inst,
                &ForceDeleteParams {},
                TaskStatus::Deleting,
                extra,
                None,
            )
            .await?;
        } else {
            self.start_workflow(inst, &DeleteParams {}, TaskStatus::Deleting, extra, None)
                .await?;
        }
        Ok(())
    }

    /// `DELETE /instances/{id}`.
    pub async fn delete_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        self.delete_common(ctx, id, false).await
    }

    /// `POST /instances/{id}/action {"reset_status": {"force_delete": ...}}` followed by a delete, or the
    /// force-delete route: tears the instance down whatever its state, without asking the guest.
    pub async fn force_delete_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        self.delete_common(ctx, id, true).await
    }

    /// `GET /instances/{id}/configuration`: the configuration values in effect.
    pub async fn instance_configuration(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Map<String, Value>> {
        let inst = self
            .authorized_instance(ctx, id, rules::INSTANCE_CONFIGURATION)
            .await?;
        match inst.configuration_id {
            Some(c) => Ok(self
                .store
                .get_configuration(c)
                .await?
                .map(|c| c.values)
                .unwrap_or_default()),
            None => Ok(Map::new()),
        }
    }
}
