//! The guest side of one engine: a [`DatastoreStrategy`] is the engine's lifecycle (prepare, start, stop,
//! restart, status, volume, flavor) plus optional facets, each its own trait in this directory:
//!
//! | facet | trait | what |
//! |---|---|---|
//! | [`Facet::Users`] | [`UsersFacet`] | create, list, delete, update users; change passwords |
//! | [`Facet::Databases`] | [`DatabasesFacet`] | create, list, delete databases; grant and revoke access |
//! | [`Facet::Root`] | [`RootFacet`] | enable, disable the root account |
//! | [`Facet::Configuration`] | [`ConfigurationFacet`] | apply configuration overrides |
//! | [`Facet::Tls`] | [`TlsFacet`] | instance TLS: show, change, roll back |
//! | [`Facet::Logs`] | [`LogsFacet`] | guest logs: list, one action on one log |
//! | [`Facet::Backup`] | [`BackupFacet`] | backups into the deployment's store; restore in prepare |
//! | [`Facet::Replication`] | [`ReplicationFacet`] | source, replica, positions, read only, promote, detach |
//! | [`Facet::Cluster`] | [`ClusterFacet`] | cluster membership: join, members, rebalance, drain, load |
//!
//! A strategy offers a facet by answering `Some` from its accessor ([`DatastoreStrategy::users`], ...); what it
//! offers ([`DatastoreStrategy::facets`]) is derived from those accessors, so it cannot claim what it does not do.
//! The guest agent answers a request for a facet the strategy lacks with upstream's status (see
//! [`crate::rpc::GuestRequest`]).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

mod backup;
mod cluster;
mod configuration;
mod databases;
mod logs;
mod replication;
mod root;
mod tls;
mod users;

pub use backup::{
    archive_key, archive_piece, checksum_fault, verified_object, BackupFacet, BackupJob,
    BackupOutcome, BackupPiece, BackupProgress, RestoreSpec,
};
pub use cluster::{
    ClusterFacet, ClusterMember, ClusterMemberStatus, ClusterSpec, LoadMetrics, Moved,
};
pub use configuration::ConfigurationFacet;
pub use databases::DatabasesFacet;
pub use logs::LogsFacet;
pub use replication::{ReplicaPosition, ReplicationFacet, ReplicationSource};
pub use root::RootFacet;
pub use tls::TlsFacet;
pub use users::{UserInfo, UsersFacet};

use super::compute::GuestSpec;
use crate::error::{Error, Result};
use crate::model::{
    DatabaseSpec, DatastoreVersion, Facet, FacetSet, Flavor, Manager, Secret, UserSpec,
};
use crate::state::ServiceStatus;

/// What `prepare` gets: everything needed to bring a fresh engine up (upstream guest `prepare`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepareRequest {
    /// Memory of the flavor in MB; engine memory settings are rendered from it.
    pub memory_mb: u32,
    /// Volume size in GB.
    pub volume_size_gb: Option<u32>,
    /// Databases to create.
    pub databases: Vec<DatabaseSpec>,
    /// Users to create.
    pub users: Vec<UserSpec>,
    /// Root password to set, when root is enabled on create.
    pub root_password: Option<Secret>,
    /// Configuration overrides to render.
    pub overrides: Map<String, Value>,
    /// Make the data from these backups instead of an empty data directory (restore to a new instance); the
    /// databases and users of the request are then left out (the backup brings its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
}

/// The engine's state as the strategy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStatus {
    /// Service status to report (HEALTHY, SHUTDOWN, CRASHED...).
    pub status: ServiceStatus,
    /// Why, when not healthy.
    pub reason: Option<String>,
}

/// Filesystem usage (upstream `get_filesystem_stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsStats {
    /// Bytes used.
    pub used_bytes: u64,
    /// Bytes allowed.
    pub total_bytes: u64,
}

/// Upstream's 422 for an operation the datastore does not support: "Operation not supported for datastore
/// `manager`: `what`." (`what` is a facet name, or `user access` for grants).
pub fn not_supported(manager: Manager, what: &str) -> Error {
    Error::unprocessable(format!(
        "Operation not supported for datastore {manager}: {what}."
    ))
}

/// The guest side of one engine: its lifecycle, and the facets it offers through the accessors.
///
/// One strategy value serves one instance (it knows its data dir and port from its [`StrategyContext`]).
///
/// # Contract
/// - `prepare` is idempotent: a second call on a prepared instance only ensures the engine runs. It creates the
///   request's databases, users and root password, and refuses them (422, [`not_supported`]) when the strategy
///   lacks the facet.
/// - Work survives the guest's death (the rule every long guest operation follows: prepare and rebuild now,
///   backup, restore and replica copy later): a call cut short at any point (the guest killed, the machine off)
///   and made again finishes the work, or cleans up its half-made state and starts again. A strategy records
///   "done" only after its last step, and `status` of an instance whose prepare never finished answers NEW (not
///   running) or BUILDING (running), so its agent reports that it waits to be prepared. The task manager relies on
///   this: a guest that reports being idle after it was asked is asked again
///   ([`StepContext::guest_work`](crate::taskmanager::StepContext::guest_work)).
/// - `status` never fails because the engine is down: it answers SHUTDOWN or CRASHED with a reason.
/// - An accessor answers the same every time; [`DatastoreStrategy::facets`] is derived from the accessors and is
///   not overridden.
/// - Names arrive validated ([`crate::model::validate_database_name`]); strategies still quote every identifier.
/// - Passwords are [`Secret`]s and never logged.
#[async_trait]
pub trait DatastoreStrategy: Send + Sync + 'static {
    /// Which manager this is.
    fn manager(&self) -> Manager;
    /// Initialises and starts the engine, creates initial databases and users.
    async fn prepare(&self, req: &PrepareRequest) -> Result<()>;
    /// Starts the engine.
    async fn start(&self) -> Result<()>;
    /// Stops the engine.
    async fn stop(&self) -> Result<()>;

    /// Fences the engine for a failover: from now on it takes no write, even if it was frozen and resumes, or
    /// its guest restarts it. By default a stop; process strategies kill the engine at once (a frozen engine
    /// cannot stop cleanly) and keep it read only.
    async fn fence(&self) -> Result<()> {
        self.stop().await
    }
    /// Restarts the engine.
    async fn restart(&self) -> Result<()> {
        self.stop().await?;
        self.start().await
    }
    /// Current engine status.
    async fn status(&self) -> EngineStatus;
    /// Volume usage.
    async fn filesystem_stats(&self) -> Result<FsStats>;
    /// Re-renders the engine configuration for a new flavor memory and restarts.
    async fn apply_flavor(&self, memory_mb: u32) -> Result<()>;
    /// The volume grew to `size_gb`.
    async fn resize_fs(&self, size_gb: u32) -> Result<()>;

    /// The users facet, when the engine has users.
    fn users(&self) -> Option<&dyn UsersFacet> {
        None
    }
    /// The databases facet, when the engine has databases.
    fn databases(&self) -> Option<&dyn DatabasesFacet> {
        None
    }
    /// The root facet, when the engine has a superuser that can be enabled.
    fn root(&self) -> Option<&dyn RootFacet> {
        None
    }
    /// The configuration facet, when configuration groups can be applied.
    fn configuration(&self) -> Option<&dyn ConfigurationFacet> {
        None
    }
    /// The TLS facet, when the engine can serve TLS.
    fn tls(&self) -> Option<&dyn TlsFacet> {
        None
    }
    /// The guest-logs facet, when the engine exposes logs.
    fn logs(&self) -> Option<&dyn LogsFacet> {
        None
    }
    /// The backup facet, when the engine can be backed up (and restored) into this deployment's store.
    fn backup(&self) -> Option<&dyn BackupFacet> {
        None
    }
    /// The replication facet, when the engine can be a replication source and replica.
    fn replication(&self) -> Option<&dyn ReplicationFacet> {
        None
    }
    /// The cluster facet, when the engine can be a member of a cluster of peers.
    fn cluster(&self) -> Option<&dyn ClusterFacet> {
        None
    }

    /// What the strategy offers, derived from the accessors above (do not override).
    fn facets(&self) -> FacetSet {
        let offered = [
            (Facet::Users, self.users().is_some()),
            (Facet::Databases, self.databases().is_some()),
            (Facet::Root, self.root().is_some()),
            (Facet::Configuration, self.configuration().is_some()),
            (Facet::Tls, self.tls().is_some()),
            (Facet::Logs, self.logs().is_some()),
            (Facet::Backup, self.backup().is_some()),
            (Facet::Replication, self.replication().is_some()),
            (Facet::Cluster, self.cluster().is_some()),
        ];
        offered
            .into_iter()
            .filter_map(|(f, on)| on.then_some(f))
            .collect()
    }
}

/// Everything a strategy needs to know about its instance.
pub type StrategyContext = GuestSpec;

/// A context for no instance, to ask a factory what its strategy for `manager` offers: nothing may be created
/// for it (its directories do not exist).
fn probe_context(manager: Manager) -> StrategyContext {
    StrategyContext {
        instance_id: uuid::Uuid::nil(),
        datastore_version: DatastoreVersion {
            id: uuid::Uuid::nil(),
            datastore_id: uuid::Uuid::nil(),
            name: String::new(),
            manager,
            image: String::new(),
            packages: String::new(),
            active: true,
            version: String::new(),
            flavor_ids: Vec::new(),
        },
        flavor: Flavor {
            id: String::new(),
            name: String::new(),
            ram_mb: 0,
            vcpus: 0,
            disk_gb: 0,
            ephemeral_gb: 0,
        },
        server_dir: "/nonexistent/trove-facet-probe".into(),
        volume_path: None,
        bind_address: "127.0.0.1".into(),
        port: manager.default_port(),
    }
}

/// Builds a strategy for an instance from its manager.
pub trait StrategyFactory: Send + Sync + 'static {
    /// A strategy for the instance described by `ctx`. Building one does no I/O on the instance's directories.
    fn strategy(&self, ctx: &StrategyContext) -> Result<Arc<dyn DatastoreStrategy>>;

    /// What this factory's strategy for `manager` offers; `None` when it has none here (an engine that is not
    /// installed, a manager it does not know). Derived from a strategy built for a context of no instance, so it
    /// follows the strategies' accessors.
    fn facets(&self, manager: Manager) -> Option<FacetSet> {
        self.strategy(&probe_context(manager))
            .ok()
            .map(|s| s.facets())
    }
}

/// What a deployment's strategies offer, per manager: the catalog the API answers "not supported" from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacetCatalog {
    managers: BTreeMap<Manager, FacetSet>,
}

impl FacetCatalog {
    /// The catalog of `factory`: every manager it has a strategy for, with that strategy's facets.
    pub fn from_factory(factory: &dyn StrategyFactory) -> FacetCatalog {
        Manager::ALL
            .into_iter()
            .filter_map(|m| factory.facets(m).map(|f| (m, f)))
            .collect()
    }

    /// The facets of `manager`'s strategy; `None` when the deployment has none for it.
    pub fn get(&self, manager: Manager) -> Option<FacetSet> {
        self.managers.get(&manager).copied()
    }

    /// Whether `manager`'s strategy offers `facet` (false when the deployment has no strategy for it).
    pub fn offers(&self, manager: Manager, facet: Facet) -> bool {
        self.get(manager).is_some_and(|s| s.contains(facet))
    }

    /// Records what `manager`'s strategy offers.
    pub fn insert(&mut self, manager: Manager, facets: FacetSet) {
        self.managers.insert(manager, facets);
    }

    /// The managers with a strategy, and what each offers.
    pub fn iter(&self) -> impl Iterator<Item = (Manager, FacetSet)> + '_ {
        self.managers.iter().map(|(m, f)| (*m, *f))
    }
}

impl FromIterator<(Manager, FacetSet)> for FacetCatalog {
    fn from_iter<I: IntoIterator<Item = (Manager, FacetSet)>>(iter: I) -> FacetCatalog {
        let mut c = FacetCatalog::default();
        for (m, f) in iter {
            c.insert(m, f);
        }
        c
    }
}
