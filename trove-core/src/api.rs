//! `ApiService`: what the REST API does, without HTTP. Validation, quota, persistence and the cast to the task
//! manager happen here; the HTTP layer only decodes bodies and renders the views returned.
//!
//! Requests are plain structs (already decoded from upstream JSON); views carry everything the upstream views
//! show, so the HTTP layer never reads the store itself.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::model::{
    Access, Backup, ConfigParam, Configuration, DatabaseSpec, Datastore, DatastoreVersion, Flavor, Instance,
    Locality, QuotaLimits, QuotaUsage, Secret, ServiceStatusRecord, UserSpec,
};

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
}

/// Everything the instance views show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// The stored instance.
    pub instance: Instance,
    /// Guest status (with heartbeat time and volume usage).
    pub service: Option<ServiceStatusRecord>,
    /// Derived API `status`.
    pub status: String,
    /// Derived `operating_status`.
    pub operating_status: String,
    /// Datastore.
    pub datastore: Datastore,
    /// Datastore version.
    pub datastore_version: DatastoreVersion,
    /// Attached configuration group (id, name).
    pub configuration: Option<(Uuid, String)>,
    /// Replicas of this instance.
    pub replicas: Vec<Uuid>,
    /// Root password, when root was enabled on create.
    pub password: Option<Secret>,
}

/// A datastore with its versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatastoreView {
    /// Datastore.
    pub datastore: Datastore,
    /// Its versions (active ones for non-admins).
    pub versions: Vec<DatastoreVersion>,
}

/// A configuration group with its usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigurationView {
    /// Group.
    pub configuration: Configuration,
    /// Datastore.
    pub datastore: Datastore,
    /// Version.
    pub datastore_version: DatastoreVersion,
    /// Instances using it.
    pub instance_count: usize,
}

/// A backup with its datastore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupView {
    /// Backup.
    pub backup: Backup,
    /// Datastore of the source.
    pub datastore: Option<Datastore>,
    /// Version of the source.
    pub datastore_version: Option<DatastoreVersion>,
}

/// Quota of a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaView {
    /// Limits.
    pub limits: QuotaLimits,
    /// Usage.
    pub usage: QuotaUsage,
}

/// `POST /mgmt/datastore-versions` body, decoded (also used by trove-manage).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatastoreVersionSpec {
    /// Datastore name (created if missing).
    pub datastore_name: String,
    /// Version name.
    pub name: String,
    /// Manager.
    pub manager: String,
    /// Image.
    pub image: String,
    /// Packages.
    pub packages: String,
    /// Active.
    pub active: bool,
    /// Version number (defaults to the name).
    pub version: Option<String>,
    /// Make it the datastore's default.
    pub default: bool,
}

/// Placeholder so that the module's imports stay in use until the service lands.
#[doc(hidden)]
pub type _Unused = (Map<String, Value>, Flavor, ConfigParam);
