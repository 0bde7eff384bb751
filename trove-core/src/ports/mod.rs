//! Ports: the traits every adapter implements. The core talks to the world only through these.
//!
//! Each trait's docs carry a **Contract** section; the matching conformance suite in
//! `crate::testing` (feature `testing`) checks it, and an implementation is done when it passes.

mod auth;
mod bus;
mod clock;
mod compute;
mod guest;
mod storage;
mod store;

pub use crate::model::{Facet, FacetSet};
pub use auth::{Authenticator, RequestContext};
pub use bus::{AckHandle, Delivery, MessageBus, ReplyHandle, Subscription};
pub use clock::{Clock, SystemClock};
pub use compute::{migration_target, Compute, GuestLauncher, GuestSpec, Server, ServerSpec};
pub use guest::{
    archive_key, archive_piece, checksum_fault, not_supported, verified_object, BackupFacet,
    BackupJob, BackupOutcome, BackupPiece, BackupProgress, ClusterFacet, ClusterMember,
    ClusterMemberStatus, ClusterSpec, ConfigurationFacet, DatabasesFacet, DatastoreStrategy,
    EngineStatus, FacetCatalog, FsStats, LoadMetrics, LogsFacet, Moved, PrepareRequest,
    ReplicaPosition, ReplicationFacet, ReplicationSource, RestoreSpec, RootFacet, StrategyContext,
    StrategyFactory, TlsFacet, UserInfo, UsersFacet,
};
pub use storage::{BackupStore, BlockStorage, ByteStream, ObjectMeta, Volume};
pub use store::{
    heartbeat_may_overwrite, workflow_claim_renews, workflow_claimable, ChangeSet, Expect,
    InfraStore, QuotaCheck, Write, STICKY_STATUSES,
};

use std::sync::Arc;

/// Shared handle to an [`InfraStore`].
pub type DynStore = Arc<dyn InfraStore>;
/// Shared handle to a [`MessageBus`].
pub type DynBus = Arc<dyn MessageBus>;
/// Shared handle to a [`Compute`].
pub type DynCompute = Arc<dyn Compute>;
/// Shared handle to a [`BlockStorage`].
pub type DynBlockStorage = Arc<dyn BlockStorage>;
/// Shared handle to a [`BackupStore`].
pub type DynBackupStore = Arc<dyn BackupStore>;
/// Shared handle to an [`Authenticator`].
pub type DynAuthenticator = Arc<dyn Authenticator>;
/// Shared handle to a [`Clock`].
pub type DynClock = Arc<dyn Clock>;
