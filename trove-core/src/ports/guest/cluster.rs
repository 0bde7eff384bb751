//! [`ClusterFacet`]: the engine as a member of a cluster of peers (Redis Cluster, MariaDB Galera), where upstream's
//! guests (removed in 2020) had `cluster_complete`, `get_node_ip`, `add_members`, `remove_nodes`, ...
//!
//! The control plane creates each member as an ordinary instance (prepared standalone, empty), then makes it a
//! member with [`ClusterFacet::join`], and keeps every member's view of who belongs right with
//! [`ClusterFacet::set_members`]. Where data is spread over the members (Redis slots), [`ClusterFacet::rebalance`]
//! gives every member its fair share and [`ClusterFacet::drain`] empties members that are to leave. Where every
//! member holds everything (Galera), those two only check and answer that nothing had to move.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Result;
use crate::model::Secret;

/// One member as every member sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// The member's instance.
    pub instance_id: Uuid,
    /// The address its engine listens on.
    pub host: String,
    /// Its engine port. An engine's cluster traffic uses ports derived from it (documented per engine: Redis's
    /// cluster bus is `port + 10000`; Galera's group, IST and SST ports are `port + 1`, `+ 2`, `+ 3`).
    pub port: u16,
    /// Redis Cluster: the member whose shard this member serves as a replica (it owns no slots of its own and
    /// takes over its primary's slots when that primary fails). `None`: a primary. Galera ignores it.
    pub replica_of: Option<Uuid>,
}

/// What a member needs to know of its cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// The cluster (Galera: its name is derived from it, so members of two clusters never merge).
    pub cluster_id: Uuid,
    /// Every member, in the order they joined; the first is the one a new cluster starts from.
    pub members: Vec<ClusterMember>,
    /// The password of the cluster's internal account, the same on every member (Redis: the account members
    /// use to move keys to each other and clients of the cluster's users need on every member; Galera: the state
    /// transfer account). Made by the control plane; sealed on the bus like every secret; never logged.
    pub secret: Secret,
}

impl ClusterSpec {
    /// The member `id`, if it belongs.
    pub fn member(&self, id: Uuid) -> Option<&ClusterMember> {
        self.members.iter().find(|m| m.instance_id == id)
    }

    /// The members that own data of their own (Redis primaries; every Galera member).
    pub fn primaries(&self) -> impl Iterator<Item = &ClusterMember> {
        self.members.iter().filter(|m| m.replica_of.is_none())
    }
}

/// What a rebalance or drain moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// Units of placement moved (Redis: hash slots; Galera: always 0).
    pub slots: u32,
    /// Keys (rows) moved with them.
    pub keys: u64,
}

/// A member's own view of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterMemberStatus {
    /// It is a member and serves requests as one (Redis: `cluster_state:ok` as it sees it; Galera: `Synced`).
    pub ready: bool,
    /// How many members it sees as belonging and reachable (Galera `wsrep_cluster_size`; Redis: known nodes that
    /// are not failed).
    pub members_seen: u32,
    /// Redis: hash slots it owns (a replica: 0). Galera: `None`.
    pub slots: Option<u32>,
    /// Keys (Redis `DBSIZE`), when the engine counts them cheaply.
    pub keys: Option<u64>,
    /// The engine's own words for its state (Galera `wsrep_local_state_comment`, Redis `cluster_state`).
    pub state: String,
    /// Redis: the `host:port` of the primary this member serves as a replica now (`None`: a primary). After a
    /// failover the engines' roles differ from the ones the member was given: the control plane learns them here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<String>,
}

pub use crate::model::LoadMetrics;

/// The engine as a member of a cluster.
///
/// # Contract
/// - `join` makes this prepared, running engine (holding no data of its own) a member of `cluster`, which lists
///   it: when it is `cluster.members[0]` and no other member runs, it starts the cluster; otherwise it joins the
///   members that run (Galera: by state transfer from one of them). It answers once the member is ready. Joining
///   again is a no-op.
/// - `set_members` tells a member who belongs now: it forgets members no longer listed and remembers the listed
///   ones across restarts (Galera's `wsrep_cluster_address`). It never moves data.
/// - `rebalance` (called on any member) moves data so every primary owns a fair share (Redis: `16384 / n` slots,
///   the remainder one each to the first) and answers what moved; nothing is lost and clients in cluster mode
///   keep reading and writing while it runs. Done again, it moves nothing.
/// - `drain(cluster, leaving)` (called on any member staying) moves everything the `leaving` members own to the
///   others, then answers; afterwards those members can be stopped with nothing lost. Refused (4xx, nothing moved)
///   when what stays could not hold the cluster (Galera: fewer than the engine's minimum).
/// - `status` answers this member's view; `load` its load figures.
/// - `recovery_position` answers, with the engine stopped, how far it got (Galera: the last committed seqno from
///   `grastate.dat` or `--wsrep-recover`), so that after every member stopped the most advanced one is started
///   with [`ClusterFacet::bootstrap`] and the others `join` it. Engines without one answer `None`.
/// - `users` answers the users made through the API on this member, each as one opaque line the same engine's
///   `set_users` makes again (credentials included, as the engine keeps them: a password hash, never the
///   password); `set_users` makes each given user on this member, replacing one of the same name. Engines whose
///   users travel with their data (Galera) answer none and set nothing. Both are idempotent.
#[async_trait]
pub trait ClusterFacet: Send + Sync {
    /// Makes this engine a member of `cluster`.
    async fn join(&self, cluster: &ClusterSpec) -> Result<()>;
    /// Who belongs now.
    async fn set_members(&self, cluster: &ClusterSpec) -> Result<()>;
    /// Gives every primary its fair share.
    async fn rebalance(&self, cluster: &ClusterSpec) -> Result<Moved>;
    /// Empties the `leaving` members.
    async fn drain(&self, cluster: &ClusterSpec, leaving: &[Uuid]) -> Result<Moved>;
    /// This member's view of the cluster.
    async fn status(&self) -> Result<ClusterMemberStatus>;
    /// Load figures.
    async fn load(&self) -> Result<LoadMetrics>;
    /// How far the stopped engine got, for choosing who restarts a stopped cluster.
    async fn recovery_position(&self) -> Result<Option<u64>>;
    /// Starts the cluster again from this (most advanced) member after every member stopped.
    async fn bootstrap(&self, cluster: &ClusterSpec) -> Result<()>;
    /// The users made through the API on this member, as lines `set_users` takes.
    async fn users(&self) -> Result<Vec<Secret>> {
        Ok(Vec::new())
    }
    /// Makes each of `users` (lines from another member's `users`) on this member.
    async fn set_users(&self, users: &[Secret]) -> Result<()> {
        let _ = users;
        Ok(())
    }
}
