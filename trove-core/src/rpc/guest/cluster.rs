//! The cluster facet on the wire (upstream's removed cluster guests had `cluster_complete`, `add_members`,
//! `remove_nodes`, ... under names of their engine). The cluster's internal password travels inside the request,
//! sealed with the rest of it on a sealed bus.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{to_value, unit, GuestClient, GuestRequest};
use crate::error::Result;
use crate::model::Facet;
use crate::ports::{
    not_supported, ClusterFacet, ClusterMemberStatus, ClusterSpec, DatastoreStrategy, LoadMetrics,
    Moved,
};

/// Requests of the cluster facet ([`ClusterFacet`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum ClusterRequest {
    /// Become a member of the cluster.
    Join {
        /// The cluster.
        cluster: ClusterSpec,
    },
    /// Who belongs now.
    SetMembers {
        /// The cluster.
        cluster: ClusterSpec,
    },
    /// Give every primary its fair share.
    Rebalance {
        /// The cluster.
        cluster: ClusterSpec,
    },
    /// Empty the leaving members.
    Drain {
        /// The cluster (still listing the leaving members).
        cluster: ClusterSpec,
        /// The members about to leave.
        leaving: Vec<Uuid>,
    },
    /// This member's view.
    Status,
    /// Load figures.
    Load,
    /// How far the stopped engine got.
    RecoveryPosition,
    /// Start the cluster again from this member.
    Bootstrap {
        /// The cluster.
        cluster: ClusterSpec,
    },
    /// The users made through the API on this member.
    Users,
    /// Make these users (another member's) on this member.
    SetUsers {
        /// Lines from another member's `users`.
        users: Vec<crate::model::Secret>,
    },
}

impl ClusterRequest {
    /// Runs the request on the facet.
    pub async fn serve(self, facet: &dyn ClusterFacet) -> Result<Value> {
        match self {
            ClusterRequest::Join { cluster } => unit(facet.join(&cluster).await),
            ClusterRequest::SetMembers { cluster } => unit(facet.set_members(&cluster).await),
            ClusterRequest::Rebalance { cluster } => to_value(facet.rebalance(&cluster).await),
            ClusterRequest::Drain { cluster, leaving } => {
                to_value(facet.drain(&cluster, &leaving).await)
            }
            ClusterRequest::Status => to_value(facet.status().await),
            ClusterRequest::Load => to_value(facet.load().await),
            ClusterRequest::RecoveryPosition => to_value(facet.recovery_position().await),
            ClusterRequest::Bootstrap { cluster } => unit(facet.bootstrap(&cluster).await),
            ClusterRequest::Users => to_value(facet.users().await),
            ClusterRequest::SetUsers { users } => unit(facet.set_users(&users).await),
        }
    }

    /// Runs the request on `strategy`'s cluster facet; without one, upstream's 422.
    pub async fn serve_on(self, strategy: &dyn DatastoreStrategy) -> Result<Value> {
        match strategy.cluster() {
            Some(f) => self.serve(f).await,
            None => Err(not_supported(strategy.manager(), Facet::Cluster.as_str())),
        }
    }
}

impl GuestClient {
    /// Makes the instance a member of `cluster`.
    pub async fn cluster_join(&self, cluster: ClusterSpec) -> Result<()> {
        let req = GuestRequest::Cluster(ClusterRequest::Join { cluster });
        self.call_unit(req, self.high()).await
    }
    /// Tells the member who belongs now.
    pub async fn cluster_set_members(&self, cluster: ClusterSpec) -> Result<()> {
        let req = GuestRequest::Cluster(ClusterRequest::SetMembers { cluster });
        self.call_unit(req, self.high()).await
    }
    /// Gives every primary of the cluster its fair share.
    pub async fn cluster_rebalance(&self, cluster: ClusterSpec) -> Result<Moved> {
        let req = GuestRequest::Cluster(ClusterRequest::Rebalance { cluster });
        self.call(req, self.high()).await
    }
    /// Empties the `leaving` members.
    pub async fn cluster_drain(&self, cluster: ClusterSpec, leaving: Vec<Uuid>) -> Result<Moved> {
        let req = GuestRequest::Cluster(ClusterRequest::Drain { cluster, leaving });
        self.call(req, self.high()).await
    }
    /// The member's view of its cluster.
    pub async fn cluster_status(&self) -> Result<ClusterMemberStatus> {
        let req = GuestRequest::Cluster(ClusterRequest::Status);
        self.call(req, self.low()).await
    }
    /// The member's load figures.
    pub async fn cluster_load(&self) -> Result<LoadMetrics> {
        let req = GuestRequest::Cluster(ClusterRequest::Load);
        self.call(req, self.low()).await
    }
    /// How far the member's stopped engine got.
    pub async fn cluster_recovery_position(&self) -> Result<Option<u64>> {
        let req = GuestRequest::Cluster(ClusterRequest::RecoveryPosition);
        self.call(req, self.high()).await
    }
    /// Starts the cluster again from this member.
    pub async fn cluster_bootstrap(&self, cluster: ClusterSpec) -> Result<()> {
        let req = GuestRequest::Cluster(ClusterRequest::Bootstrap { cluster });
        self.call_unit(req, self.high()).await
    }
    /// The users made through the API on the member (opaque lines with their credentials).
    pub async fn cluster_users(&self) -> Result<Vec<crate::model::Secret>> {
        let req = GuestRequest::Cluster(ClusterRequest::Users);
        self.call(req, self.low()).await
    }
    /// Makes `users` (another member's) on the member.
    pub async fn cluster_set_users(&self, users: Vec<crate::model::Secret>) -> Result<()> {
        let req = GuestRequest::Cluster(ClusterRequest::SetUsers { users });
        self.call_unit(req, self.high()).await
    }
}
