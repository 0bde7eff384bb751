//! `ApiService`: what the REST API does, without HTTP. Validation, quota, persistence and the cast to the task
//! manager happen here; the HTTP layer only decodes bodies and renders the views returned.
//!
//! Requests are plain structs (already decoded from upstream JSON); views carry everything the upstream views
//! show, so the HTTP layer never reads the store itself.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

use crate::config::CoreConfig;
use crate::error::{Error, Result};
use crate::model::{
    Access, Backup, ConfigParam, Configuration, DatabaseSpec, Datastore, DatastoreVersion, Flavor,
    Instance, Locality, ParamType, QuotaLimits, QuotaUsage, RootHistory, Secret,
    ServiceStatusRecord, UserSpec, UserUpdate,
};
use crate::ports::{DynBus, DynClock, DynStore, RequestContext, UserInfo};

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

/// A version together with its datastore (version views need both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionView {
    /// Version.
    pub version: DatastoreVersion,
    /// Its datastore.
    pub datastore: Datastore,
    /// Whether it is the datastore's default version.
    pub is_default: bool,
}

/// `PATCH /mgmt/datastore-versions/{id}` body, decoded: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatastoreVersionPatch {
    /// New manager.
    pub manager: Option<String>,
    /// New packages.
    pub packages: Option<String>,
    /// New image.
    pub image: Option<String>,
    /// New active flag.
    pub active: Option<bool>,
    /// Make it the datastore's default.
    pub default: Option<bool>,
    /// New name.
    pub name: Option<String>,
}

/// `POST /configurations` body, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateConfiguration {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Parameter values.
    pub values: Map<String, Value>,
    /// Datastore name or id (default datastore when absent).
    pub datastore: Option<String>,
    /// Version name or id (the datastore's default when absent).
    pub datastore_version: Option<String>,
    /// Version number.
    pub datastore_version_number: Option<String>,
}

/// `PUT /configurations/{id}` body, decoded: replaces all values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfiguration {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// The complete new values.
    pub values: Map<String, Value>,
}

/// `POST/PUT /mgmt/datastores/versions/{id}/parameters[/{name}]` body, decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigParamSpec {
    /// Parameter name (ignored on PUT, where the URL names it).
    pub name: String,
    /// Value type.
    pub data_type: ParamType,
    /// Whether changing it needs a restart.
    pub restart_required: bool,
    /// Lower bound.
    pub min: Option<Number>,
    /// Upper bound.
    pub max: Option<Number>,
}

/// `POST /backups` body, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateBackup {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Source instance (uuid; href already reduced).
    pub instance: Option<Uuid>,
    /// Parent backup, for incrementals.
    pub parent_id: Option<Uuid>,
    /// Incremental (parent defaults to the last completed backup).
    pub incremental: bool,
    /// Register an existing backup object instead of taking one.
    pub restore_from: Option<RestoreFrom>,
}

/// `restore_from` of a backup create body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestoreFrom {
    /// Where the object is.
    pub remote_location: String,
    /// Version of the datastore that wrote it.
    pub local_datastore_version_id: Uuid,
    /// Size in GB.
    pub size: f64,
}

/// `GET /backups` query, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupQuery {
    /// Only backups of this datastore (name or id).
    pub datastore: Option<String>,
    /// Only backups of this instance.
    pub instance_id: Option<Uuid>,
    /// Only this project's (admin).
    pub project_id: Option<String>,
    /// Every project's (admin).
    pub all_projects: bool,
}

/// `GET /mgmt/instances` query, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MgmtInstanceQuery {
    /// Include deleted instances.
    pub deleted: bool,
    /// Include cluster members.
    pub include_clustered: bool,
    /// Only this project's.
    pub project_id: Option<String>,
}

/// Mgmt instance actions (`POST /mgmt/instances/{id}/action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MgmtAction {
    /// Stop the engine.
    Stop,
    /// Reboot the server.
    Reboot,
    /// Set the task back to NONE.
    ResetTaskStatus,
}

/// A user as named in a URL: `name` or `name@host` (host defaults to `%`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    /// User name.
    pub name: String,
    /// Host pattern.
    pub host: String,
}

impl UserRef {
    /// Parses the (already URL-decoded) `{user}` path segment: the last `@` separates the host.
    pub fn parse(segment: &str) -> UserRef {
        match segment.rsplit_once('@') {
            Some((name, host)) if !host.is_empty() => UserRef {
                name: name.into(),
                host: host.into(),
            },
            Some((name, _)) => UserRef {
                name: name.into(),
                host: "%".into(),
            },
            None => UserRef {
                name: segment.into(),
                host: "%".into(),
            },
        }
    }
}

/// The answer of `POST /instances/{id}/root`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootCredentials {
    /// Always `root` (or the engine's superuser).
    pub name: String,
    /// Password.
    pub password: Secret,
}

/// What the REST API does, without HTTP: every operation of the Trove v1.0 API.
///
/// Every method takes the caller's [`RequestContext`]: another tenant's resources are answered as 404, and
/// management operations need the admin role (403). Errors carry the upstream fault ([`Error::fault`]).
#[allow(dead_code)] // bodies land next
pub struct ApiService {
    store: DynStore,
    bus: DynBus,
    clock: DynClock,
    config: CoreConfig,
}

impl std::fmt::Debug for ApiService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiService")
            .field("region", &self.config.region)
            .finish()
    }
}

fn todo_op(what: &str) -> Error {
    Error::not_implemented(format!("{what} is not implemented yet."))
}

#[allow(unused_variables)]
impl ApiService {
    /// A service over `store` and `bus`, taking time from `clock`.
    pub fn new(store: DynStore, bus: DynBus, clock: DynClock, config: CoreConfig) -> ApiService {
        ApiService {
            store,
            bus,
            clock,
            config,
        }
    }

    /// Shared handle.
    pub fn shared(self) -> Arc<ApiService> {
        Arc::new(self)
    }

    /// The configuration in use.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    // ------------------------------------------------------------------ datastores and flavors

    /// `GET /datastores`: datastores with their (active, for non-admins) versions.
    pub async fn list_datastores(&self, ctx: &RequestContext) -> Result<Vec<DatastoreView>> {
        Err(todo_op("list_datastores"))
    }
    /// `GET /datastores/{id_or_name}`.
    pub async fn show_datastore(
        &self,
        ctx: &RequestContext,
        id_or_name: &str,
    ) -> Result<DatastoreView> {
        Err(todo_op("show_datastore"))
    }
    /// `DELETE /datastores/{id}` (admin; refused while versions are in use).
    pub async fn delete_datastore(&self, ctx: &RequestContext, id_or_name: &str) -> Result<()> {
        Err(todo_op("delete_datastore"))
    }
    /// `GET /datastores/{ds}/versions`.
    pub async fn list_datastore_versions(
        &self,
        ctx: &RequestContext,
        datastore: &str,
    ) -> Result<Vec<VersionView>> {
        Err(todo_op("list_datastore_versions"))
    }
    /// `GET /datastores/{ds}/versions/{id_or_name}`.
    pub async fn show_datastore_version(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
    ) -> Result<VersionView> {
        Err(todo_op("show_datastore_version"))
    }
    /// `GET /datastores/versions/{uuid}`.
    pub async fn show_datastore_version_by_id(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
    ) -> Result<VersionView> {
        Err(todo_op("show_datastore_version_by_id"))
    }
    /// `GET /datastores/{ds}/versions/{version}/flavors`: flavors allowed for the version.
    pub async fn list_version_flavors(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
    ) -> Result<Vec<Flavor>> {
        Err(todo_op("list_version_flavors"))
    }
    /// `GET /datastores/{ds}/versions/{version}/volume-types` (none are configured: an empty list).
    pub async fn list_version_volume_types(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
    ) -> Result<Vec<String>> {
        Err(todo_op("list_version_volume_types"))
    }
    /// `GET /flavors`.
    pub async fn list_flavors(&self, ctx: &RequestContext) -> Result<Vec<Flavor>> {
        Err(todo_op("list_flavors"))
    }
    /// `GET /flavors/{id}`.
    pub async fn show_flavor(&self, ctx: &RequestContext, id: &str) -> Result<Flavor> {
        Err(todo_op("show_flavor"))
    }
    /// Creates or replaces a flavor (admin; trove-manage and embedders).
    pub async fn mgmt_put_flavor(&self, ctx: &RequestContext, flavor: Flavor) -> Result<Flavor> {
        Err(todo_op("mgmt_put_flavor"))
    }
    /// Deletes a flavor (admin).
    pub async fn mgmt_delete_flavor(&self, ctx: &RequestContext, id: &str) -> Result<()> {
        Err(todo_op("mgmt_delete_flavor"))
    }

    // ------------------------------------------------------------------ mgmt datastore versions

    /// `GET /mgmt/datastore-versions` (admin).
    pub async fn mgmt_list_datastore_versions(
        &self,
        ctx: &RequestContext,
    ) -> Result<Vec<VersionView>> {
        Err(todo_op("mgmt_list_datastore_versions"))
    }
    /// `POST /mgmt/datastore-versions` (admin): creates the datastore when missing.
    pub async fn mgmt_create_datastore_version(
        &self,
        ctx: &RequestContext,
        spec: DatastoreVersionSpec,
    ) -> Result<VersionView> {
        Err(todo_op("mgmt_create_datastore_version"))
    }
    /// `GET /mgmt/datastore-versions/{id}` (admin).
    pub async fn mgmt_show_datastore_version(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<VersionView> {
        Err(todo_op("mgmt_show_datastore_version"))
    }
    /// `PATCH /mgmt/datastore-versions/{id}` (admin).
    pub async fn mgmt_update_datastore_version(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        patch: DatastoreVersionPatch,
    ) -> Result<VersionView> {
        Err(todo_op("mgmt_update_datastore_version"))
    }
    /// `DELETE /mgmt/datastore-versions/{id}` (admin; refused while instances use it).
    pub async fn mgmt_delete_datastore_version(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<()> {
        Err(todo_op("mgmt_delete_datastore_version"))
    }

    // ------------------------------------------------------------------ instances

    /// `GET /instances` and `/instances/detail`: the caller's live instances, newest first.
    pub async fn list_instances(
        &self,
        ctx: &RequestContext,
        include_clustered: bool,
    ) -> Result<Vec<InstanceView>> {
        Err(todo_op("list_instances"))
    }
    /// `GET /instances/{id}`.
    pub async fn show_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<InstanceView> {
        Err(todo_op("show_instance"))
    }
    /// `POST /instances`: validates, checks quota, persists (task BUILDING, service NEW, a create workflow) in
    /// one commit and casts the workflow to the task manager. Answers the new instance's view (status BUILD).
    pub async fn create_instance(
        &self,
        ctx: &RequestContext,
        req: CreateInstance,
    ) -> Result<InstanceView> {
        Err(todo_op("create_instance"))
    }
    /// `PUT/PATCH /instances/{id}`: name, configuration attach/detach, replica detach, upgrade, access.
    pub async fn update_instance(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        req: UpdateInstance,
    ) -> Result<()> {
        Err(todo_op("update_instance"))
    }
    /// `DELETE /instances/{id}`.
    pub async fn delete_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        Err(todo_op("delete_instance"))
    }
    /// `POST /instances/{id}/action {"reset_status": {"force_delete": ...}}` followed by a delete, or the
    /// force-delete route: tears the instance down whatever its state, without asking the guest.
    pub async fn force_delete_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        Err(todo_op("force_delete_instance"))
    }
    /// `{"restart": {}}`.
    pub async fn restart_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        Err(todo_op("restart_instance"))
    }
    /// `{"resize": {"flavorRef": ...}}` (href already reduced to the id).
    pub async fn resize_flavor(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        flavor_ref: &str,
    ) -> Result<()> {
        Err(todo_op("resize_flavor"))
    }
    /// `{"resize": {"volume": {"size": N}}}`.
    pub async fn resize_volume(&self, ctx: &RequestContext, id: Uuid, size_gb: u32) -> Result<()> {
        Err(todo_op("resize_volume"))
    }
    /// `{"reset_status": {}}`: task NONE, service UNKNOWN, running backups FAILED, open workflows closed.
    pub async fn reset_status(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        Err(todo_op("reset_status"))
    }
    /// `{"promote_to_replica_source": {}}`.
    pub async fn promote_to_replica_source(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        Err(todo_op("promote_to_replica_source"))
    }
    /// `{"eject_replica_source": {}}`.
    pub async fn eject_replica_source(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        Err(todo_op("eject_replica_source"))
    }
    /// `GET /instances/{id}/configuration`: the configuration values in effect.
    pub async fn instance_configuration(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Map<String, Value>> {
        Err(todo_op("instance_configuration"))
    }
    /// `GET /instances/{id}/backups`.
    pub async fn instance_backups(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Vec<BackupView>> {
        Err(todo_op("instance_backups"))
    }

    // ------------------------------------------------------------------ databases

    /// `GET /instances/{id}/databases`.
    pub async fn list_databases(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Vec<DatabaseSpec>> {
        Err(todo_op("list_databases"))
    }
    /// `POST /instances/{id}/databases`.
    pub async fn create_databases(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        dbs: Vec<DatabaseSpec>,
    ) -> Result<()> {
        Err(todo_op("create_databases"))
    }
    /// `DELETE /instances/{id}/databases/{name}`.
    pub async fn delete_database(&self, ctx: &RequestContext, id: Uuid, name: &str) -> Result<()> {
        Err(todo_op("delete_database"))
    }

    // ------------------------------------------------------------------ users

    /// `GET /instances/{id}/users`.
    pub async fn list_users(&self, ctx: &RequestContext, id: Uuid) -> Result<Vec<UserInfo>> {
        Err(todo_op("list_users"))
    }
    /// `POST /instances/{id}/users`.
    pub async fn create_users(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        users: Vec<UserSpec>,
    ) -> Result<()> {
        Err(todo_op("create_users"))
    }
    /// `GET /instances/{id}/users/{user}`.
    pub async fn show_user(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        user: &UserRef,
    ) -> Result<UserInfo> {
        Err(todo_op("show_user"))
    }
    /// `PUT /instances/{id}/users/{user}`.
    pub async fn update_user(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        user: &UserRef,
        update: UserUpdate,
    ) -> Result<()> {
        Err(todo_op("update_user"))
    }
    /// `DELETE /instances/{id}/users/{user}`.
    pub async fn delete_user(&self, ctx: &RequestContext, id: Uuid, user: &UserRef) -> Result<()> {
        Err(todo_op("delete_user"))
    }
    /// `PUT /instances/{id}/users`: change passwords.
    pub async fn change_passwords(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        users: Vec<UserSpec>,
    ) -> Result<()> {
        Err(todo_op("change_passwords"))
    }
    /// `GET /instances/{id}/users/{user}/databases`.
    pub async fn list_user_access(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        user: &UserRef,
    ) -> Result<Vec<String>> {
        Err(todo_op("list_user_access"))
    }
    /// `PUT /instances/{id}/users/{user}/databases`.
    pub async fn grant_user_access(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        user: &UserRef,
        databases: Vec<String>,
    ) -> Result<()> {
        Err(todo_op("grant_user_access"))
    }
    /// `DELETE /instances/{id}/users/{user}/databases/{db}`.
    pub async fn revoke_user_access(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        user: &UserRef,
        database: &str,
    ) -> Result<()> {
        Err(todo_op("revoke_user_access"))
    }

    // ------------------------------------------------------------------ root

    /// `GET /instances/{id}/root`: whether root was ever enabled (root history).
    pub async fn root_show(&self, ctx: &RequestContext, id: Uuid) -> Result<bool> {
        Err(todo_op("root_show"))
    }
    /// `POST /instances/{id}/root`: enables root (generated password when none given), records the history.
    pub async fn root_enable(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        password: Option<Secret>,
    ) -> Result<RootCredentials> {
        Err(todo_op("root_enable"))
    }
    /// `DELETE /instances/{id}/root`: 404 when root was never enabled.
    pub async fn root_disable(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        Err(todo_op("root_disable"))
    }
    /// `GET /mgmt/instances/{id}/root` (admin): the root history record.
    pub async fn mgmt_root_history(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Option<RootHistory>> {
        Err(todo_op("mgmt_root_history"))
    }

    // ------------------------------------------------------------------ configuration groups

    /// `GET /configurations`.
    pub async fn list_configurations(
        &self,
        ctx: &RequestContext,
    ) -> Result<Vec<ConfigurationView>> {
        Err(todo_op("list_configurations"))
    }
    /// `GET /configurations/{id}`.
    pub async fn show_configuration(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<ConfigurationView> {
        Err(todo_op("show_configuration"))
    }
    /// `POST /configurations`.
    pub async fn create_configuration(
        &self,
        ctx: &RequestContext,
        req: CreateConfiguration,
    ) -> Result<ConfigurationView> {
        Err(todo_op("create_configuration"))
    }
    /// `PUT /configurations/{id}`: replaces the values (and name/description), re-applies to its instances.
    pub async fn update_configuration(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        req: UpdateConfiguration,
    ) -> Result<()> {
        Err(todo_op("update_configuration"))
    }
    /// `PATCH /configurations/{id}`: merges values, re-applies to its instances.
    pub async fn patch_configuration(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        values: Map<String, Value>,
    ) -> Result<()> {
        Err(todo_op("patch_configuration"))
    }
    /// `DELETE /configurations/{id}`: 400 while instances use it.
    pub async fn delete_configuration(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        Err(todo_op("delete_configuration"))
    }
    /// `GET /configurations/{id}/instances`: (id, name) of the instances using it.
    pub async fn configuration_instances(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Vec<(Uuid, String)>> {
        Err(todo_op("configuration_instances"))
    }

    // ------------------------------------------------------------------ configuration parameters

    /// `GET /datastores/{ds}/versions/{ver}/parameters`.
    pub async fn list_parameters(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
    ) -> Result<Vec<ConfigParam>> {
        Err(todo_op("list_parameters"))
    }
    /// `GET /datastores/{ds}/versions/{ver}/parameters/{name}`.
    pub async fn show_parameter(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
        name: &str,
    ) -> Result<ConfigParam> {
        Err(todo_op("show_parameter"))
    }
    /// `GET /datastores/versions/{uuid}/parameters`.
    pub async fn list_parameters_by_version(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
    ) -> Result<Vec<ConfigParam>> {
        Err(todo_op("list_parameters_by_version"))
    }
    /// `GET /datastores/versions/{uuid}/parameters/{name}`.
    pub async fn show_parameter_by_version(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
        name: &str,
    ) -> Result<ConfigParam> {
        Err(todo_op("show_parameter_by_version"))
    }
    /// `GET /mgmt/datastores/versions/{id}/parameters` (admin).
    pub async fn mgmt_list_parameters(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
    ) -> Result<Vec<ConfigParam>> {
        Err(todo_op("mgmt_list_parameters"))
    }
    /// `GET /mgmt/datastores/versions/{id}/parameters/{name}` (admin).
    pub async fn mgmt_show_parameter(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
        name: &str,
    ) -> Result<ConfigParam> {
        Err(todo_op("mgmt_show_parameter"))
    }
    /// `POST /mgmt/datastores/versions/{id}/parameters` (admin; 409 if it exists).
    pub async fn mgmt_create_parameter(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
        spec: ConfigParamSpec,
    ) -> Result<ConfigParam> {
        Err(todo_op("mgmt_create_parameter"))
    }
    /// `PUT /mgmt/datastores/versions/{id}/parameters/{name}` (admin; 404 if missing).
    pub async fn mgmt_update_parameter(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
        name: &str,
        spec: ConfigParamSpec,
    ) -> Result<ConfigParam> {
        Err(todo_op("mgmt_update_parameter"))
    }
    /// `DELETE /mgmt/datastores/versions/{id}/parameters/{name}` (admin).
    pub async fn mgmt_delete_parameter(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
        name: &str,
    ) -> Result<()> {
        Err(todo_op("mgmt_delete_parameter"))
    }

    // ------------------------------------------------------------------ backups

    /// `GET /backups`.
    pub async fn list_backups(
        &self,
        ctx: &RequestContext,
        query: BackupQuery,
    ) -> Result<Vec<BackupView>> {
        Err(todo_op("list_backups"))
    }
    /// `POST /backups`: persists the backup (NEW) and a backup workflow, answers 202 with the view.
    pub async fn create_backup(
        &self,
        ctx: &RequestContext,
        req: CreateBackup,
    ) -> Result<BackupView> {
        Err(todo_op("create_backup"))
    }
    /// `GET /backups/{id}`.
    pub async fn show_backup(&self, ctx: &RequestContext, id: Uuid) -> Result<BackupView> {
        Err(todo_op("show_backup"))
    }
    /// `DELETE /backups/{id}`.
    pub async fn delete_backup(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        Err(todo_op("delete_backup"))
    }

    // ------------------------------------------------------------------ quotas and limits

    /// `GET /mgmt/quotas/{project}`: an owner may read their own; admins any.
    pub async fn show_quota(&self, ctx: &RequestContext, project_id: &str) -> Result<QuotaView> {
        Err(todo_op("show_quota"))
    }
    /// `PUT /mgmt/quotas/{project}` (admin): resource name → limit (−1 unlimited; below −1 is 400; unknown
    /// resource 404). Answers the new limits.
    pub async fn update_quota(
        &self,
        ctx: &RequestContext,
        project_id: &str,
        limits: BTreeMap<String, i64>,
    ) -> Result<QuotaLimits> {
        Err(todo_op("update_quota"))
    }
    /// `GET /limits`: the absolute limits of the caller's tenant (rate limits are the HTTP layer's).
    pub async fn limits(&self, ctx: &RequestContext) -> Result<QuotaView> {
        Err(todo_op("limits"))
    }

    // ------------------------------------------------------------------ mgmt instances

    /// `GET /mgmt/instances` (admin).
    pub async fn mgmt_list_instances(
        &self,
        ctx: &RequestContext,
        query: MgmtInstanceQuery,
    ) -> Result<Vec<InstanceView>> {
        Err(todo_op("mgmt_list_instances"))
    }
    /// `GET /mgmt/instances/{id}` (admin; deleted instances too).
    pub async fn mgmt_show_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<InstanceView> {
        Err(todo_op("mgmt_show_instance"))
    }
    /// `POST /mgmt/instances/{id}/action` (admin).
    pub async fn mgmt_instance_action(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        action: MgmtAction,
    ) -> Result<()> {
        Err(todo_op("mgmt_instance_action"))
    }
    /// `GET /mgmt/instances/{id}/rpc_ping` (admin): pings the guest.
    pub async fn mgmt_rpc_ping(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        Err(todo_op("mgmt_rpc_ping"))
    }
}
