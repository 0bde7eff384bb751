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
/// - `migrate_server` moves a server to another host: the named one, or (with `None`) another host the compute
///   picks. An unknown host, the server's own host, or a compute with no other host answers a 400-class error and
///   changes nothing. The guest is stopped (and with it the engine) before the move and launched again on the new
///   host; the server keeps its id, its volume (block storage does not move) and its engine port. Afterwards
///   `get_server` reports the new host. A missing server is a 404.
/// - `rebuild_server` recreates the server from `image_id` (and, when given, for another datastore version, which
///   is how an upgrade switches the engine): everything generated on the server (rendered engine configuration,
///   the guest's record of it) is made again from scratch; the volume, what the control plane gave the guest
///   (the credentials the data was created with, certificates, settings) and the engine's account files are
///   kept; the guest is launched again (it then waits for the control plane's `rebuild` request to start the
///   engine on the existing data). The server keeps its id, host and port. A missing server is a 404.
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
    /// Moves the server to `host` (or another host the compute picks); answers the server on its new host.
    async fn migrate_server(&self, instance_id: Uuid, host: Option<&str>) -> Result<Server>;
    /// Rebuilds the server from `image_id`, keeping its volume; `datastore_version` switches what runs on it.
    async fn rebuild_server(
        &self,
        instance_id: Uuid,
        image_id: &str,
        datastore_version: Option<&DatastoreVersion>,
    ) -> Result<Server>;
}

/// The host a migration goes to: `wanted` when it is another known host, else the least loaded other host
/// (`load` counts servers per host). Errors are 400s that name the hosts, so every compute answers alike.
pub fn migration_target(
    hosts: &[String],
    current: &str,
    wanted: Option<&str>,
    load: impl Fn(&str) -> usize,
) -> Result<String> {
    match wanted {
        Some(h) if h == current => Err(crate::Error::bad_request(format!(
            "The server is already on host '{h}'; name another host to migrate to."
        ))),
        Some(h) if hosts.iter().any(|x| x == h) => Ok(h.to_string()),
        Some(h) => Err(crate::Error::bad_request(format!(
            "Host '{}' is not a host of this compute ({}).",
            h.escape_default(),
            hosts.join(", ")
        ))),
        None => hosts
            .iter()
            .filter(|h| h.as_str() != current)
            .min_by_key(|h| load(h))
            .cloned()
            .ok_or_else(|| {
                crate::Error::bad_request(format!(
                    "There is no other host to migrate to: this compute has only host '{current}'."
                ))
            }),
    }
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
