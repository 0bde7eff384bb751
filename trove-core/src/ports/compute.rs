use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use uuid::Uuid;

use crate::error::Result;
use crate::model::{Address, DatastoreVersion, Flavor, Locality};
use crate::state::ServerStatus;

/// What to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerSpec {
    /// Instance the server is for; servers are looked up by it, which makes `create_server` idempotent.
    pub instance_id: Uuid,
    /// Display name.
    pub name: String,
    /// Size.
    pub flavor: Flavor,
    /// What runs on it (manager, image).
    pub datastore_version: DatastoreVersion,
    /// Volume to attach (its path for local volumes).
    pub volume_path: Option<PathBuf>,
    /// Placement group (the replica set's source id) and its policy.
    pub group: Option<(Uuid, Locality)>,
    /// Availability zone (host name for local compute).
    pub availability_zone: Option<String>,
}

/// A server as compute reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// Server id.
    pub id: String,
    /// Instance id.
    pub instance_id: Uuid,
    /// Host it runs on.
    pub host: String,
    /// Status.
    pub status: ServerStatus,
    /// Where to connect.
    pub addresses: Vec<Address>,
    /// Engine port, where not the standard one.
    pub port: Option<u16>,
}

/// Servers for instances.
///
/// # Contract
/// - `create_server` is idempotent per instance: calling it again returns the existing server.
/// - `create_server` honours `group`: `affinity` puts members on one host, `anti-affinity` on distinct hosts, and
///   fails with a clear error when it cannot; the soft variants prefer but never fail.
/// - `delete_server` of a missing server succeeds; afterwards `get_server` answers `None`.
/// - `resize_server` keeps the server's data and leaves it ACTIVE with the new flavor.
/// - Creating a server starts its guest agent (through the [`GuestLauncher`] the compute was built with).
#[async_trait]
pub trait Compute: Send + Sync + 'static {
    /// Creates (or returns) the server of an instance.
    async fn create_server(&self, spec: &ServerSpec) -> Result<Server>;
    /// The server of an instance.
    async fn get_server(&self, instance_id: Uuid) -> Result<Option<Server>>;
    /// Deletes the server of an instance (idempotent).
    async fn delete_server(&self, instance_id: Uuid) -> Result<()>;
    /// Reboots the server.
    async fn reboot_server(&self, instance_id: Uuid) -> Result<()>;
    /// Moves the server to another flavor.
    async fn resize_server(&self, instance_id: Uuid, flavor: &Flavor) -> Result<()>;
    /// Hosts servers can be placed on.
    async fn hosts(&self) -> Result<Vec<String>>;
}

/// What a guest agent needs to start beside its server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestSpec {
    /// Instance id (the guest serves `guestagent.<id>`).
    pub instance_id: Uuid,
    /// Datastore version (manager, image).
    pub datastore_version: DatastoreVersion,
    /// Flavor.
    pub flavor: Flavor,
    /// The server's own directory.
    pub server_dir: PathBuf,
    /// The volume (data) directory.
    pub volume_path: Option<PathBuf>,
    /// Address the engine listens on.
    pub bind_address: String,
    /// Port the engine listens on.
    pub port: u16,
}

/// Starts and stops guest agents; compute calls it when servers come and go.
///
/// # Contract
/// - `launch` is idempotent: a guest already running for the instance is left alone.
/// - `stop` returns once the guest no longer serves its topic; stopping a missing guest succeeds.
#[async_trait]
pub trait GuestLauncher: Send + Sync + 'static {
    /// Starts the guest agent of an instance.
    async fn launch(&self, spec: &GuestSpec) -> Result<()>;
    /// Stops it.
    async fn stop(&self, instance_id: Uuid) -> Result<()>;
}
