//! Request bodies as upstream's JSON schemas (`trove/common/apischema.py`) describe them, decoded into the
//! core's request types. Only shape is checked here; meaning is checked by the core.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use trove_core::api::{
    ConfigParamSpec, CreateBackup, CreateBackupStrategy, CreateConfiguration, CreateInstance,
    DatastoreVersionPatch, DatastoreVersionSpec, RestoreFrom, UpdateConfiguration, UpdateInstance,
};
use trove_core::error::Error;
use trove_core::model::{
    Access, DatabaseSpec, Locality, LogActionRequest, ParamType, Secret, SslActionBody, UserSpec,
    UserUpdate,
};
use uuid::Uuid;

use super::extract::{decode_value, uuid_or_404};
use super::fault::ApiError;

pub(crate) fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError(Error::validation(msg.into()))
}

/// The last path segment of an id or href (`flavorRef`, `configuration`, `instance`).
pub fn ref_id(v: &str) -> &str {
    v.trim_end_matches('/').rsplit('/').next().unwrap_or(v)
}

/// A string-or-integer reference such as `flavorRef`.
pub(crate) fn string_or_int(field: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(ref_id(s).to_string()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        _ => Err(invalid(format!(
            "{field} {v} is not a non-empty string or an integer"
        ))),
    }
}

/// A positive integer given as a number or a numeric string (upstream `volume.size`).
pub(crate) fn positive_int(field: &str, v: &Value) -> Result<u32, ApiError> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.filter(|n| *n >= 1)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| invalid(format!("{field} {v} is not a positive integer")))
}

pub(crate) fn uuid_field(field: &str, s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(ref_id(s)).map_err(|_| {
        invalid(format!(
            "{field} '{}' is not a valid UUID",
            s.escape_default()
        ))
    })
}

/// `{"name": ...}` items of database lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameRef {
    /// Name.
    pub name: String,
}

/// A database in a create request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseBody {
    name: String,
    #[serde(default)]
    character_set: Option<String>,
    #[serde(default)]
    collate: Option<String>,
}

impl From<DatabaseBody> for DatabaseSpec {
    fn from(d: DatabaseBody) -> DatabaseSpec {
        DatabaseSpec {
            name: d.name,
            character_set: d.character_set,
            collate: d.collate,
        }
    }
}

/// A user in a create request or a password change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    name: String,
    password: String,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    databases: Vec<NameRef>,
}

impl From<UserBody> for UserSpec {
    fn from(u: UserBody) -> UserSpec {
        UserSpec {
            name: u.name,
            password: Secret::new(u.password),
            host: u.host,
            databases: u.databases.into_iter().map(|d| d.name).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeBody {
    size: Value,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatastoreRefBody {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    version_number: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestorePointBody {
    #[serde(rename = "backupRef")]
    backup_ref: String,
    /// Extension: stop the restore at this moment (RFC 3339).
    #[serde(default)]
    restore_time: Option<String>,
}

/// `access` of create and update.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessBody {
    #[serde(default)]
    is_public: bool,
    #[serde(default)]
    allowed_cidrs: Vec<String>,
}

fn valid_cidr(c: &str) -> bool {
    let Some((ip, bits)) = c.split_once('/') else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits.parse::<u8>().is_ok_and(|b| b <= 32),
        Ok(std::net::IpAddr::V6(_)) => bits.parse::<u8>().is_ok_and(|b| b <= 128),
        Err(_) => false,
    }
}

impl AccessBody {
    /// Checks the CIDRs and converts.
    pub fn into_access(self) -> Result<Access, ApiError> {
        if let Some(bad) = self.allowed_cidrs.iter().find(|c| !valid_cidr(c)) {
            return Err(invalid(format!(
                "access.allowed_cidrs '{}' is not a CIDR",
                bad.escape_default()
            )));
        }
        Ok(Access {
            is_public: self.is_public,
            allowed_cidrs: self.allowed_cidrs,
        })
    }
}

/// `POST /instances`.
#[derive(Debug, Deserialize)]
pub struct CreateInstanceBody {
    instance: CreateInstanceFields,
}

#[derive(Debug, Deserialize)]
struct CreateInstanceFields {
    name: String,
    #[serde(default, rename = "flavorRef")]
    flavor_ref: Option<Value>,
    #[serde(default)]
    volume: Option<VolumeBody>,
    #[serde(default)]
    datastore: Option<DatastoreRefBody>,
    #[serde(default)]
    databases: Vec<DatabaseBody>,
    #[serde(default)]
    users: Vec<UserBody>,
    #[serde(default, rename = "restorePoint")]
    restore_point: Option<RestorePointBody>,
    #[serde(default)]
    replica_of: Option<String>,
    #[serde(default)]
    slave_of: Option<String>,
    #[serde(default)]
    replica_count: Option<u32>,
    #[serde(default)]
    availability_zone: Option<String>,
    #[serde(default)]
    nics: Vec<Map<String, Value>>,
    #[serde(default)]
    modules: Vec<Value>,
    #[serde(default)]
    region_name: Option<String>,
    #[serde(default)]
    locality: Option<String>,
    #[serde(default)]
    configuration: Option<String>,
    #[serde(default)]
    configuration_id: Option<String>,
    #[serde(default)]
    access: Option<AccessBody>,
}

impl CreateInstanceBody {
    /// Converts into the core request.
    pub fn into_request(self) -> Result<CreateInstance, ApiError> {
        let f = self.instance;
        if f.nics.len() > 1 {
            return Err(invalid("instance.nics: at most one network may be given"));
        }
        if !f.modules.is_empty() {
            return Err(ApiError(Error::not_implemented(
                "Modules are not supported by this deployment.",
            )));
        }
        if let Some(rc) = f.replica_count {
            if !(1..=3).contains(&rc) {
                return Err(invalid(format!(
                    "instance.replica_count {rc} is not between 1 and 3"
                )));
            }
        }
        let locality = match f.locality.as_deref() {
            None => None,
            Some(l) => Some(
                serde_json::from_value::<Locality>(Value::String(l.to_string()))
                    .map_err(|_| invalid(format!("instance.locality '{}' is not one of affinity, soft-affinity, anti-affinity, soft-anti-affinity", l.escape_default())))?,
            ),
        };
        let (volume_size, volume_type) = match f.volume {
            None => (None, None),
            Some(v) => (Some(positive_int("instance.volume.size", &v.size)?), v.kind),
        };
        let (datastore, datastore_version, datastore_version_number) = match f.datastore {
            None => (None, None, None),
            Some(d) => (d.kind, d.version, d.version_number),
        };
        let replica_of = f
            .replica_of
            .or(f.slave_of)
            .map(|r| uuid_field("instance.replica_of", &r))
            .transpose()?;
        Ok(CreateInstance {
            name: f.name,
            flavor_ref: f
                .flavor_ref
                .as_ref()
                .map(|v| string_or_int("instance.flavorRef", v))
                .transpose()?,
            volume_size,
            volume_type,
            datastore,
            datastore_version,
            datastore_version_number,
            databases: f.databases.into_iter().map(Into::into).collect(),
            users: f.users.into_iter().map(Into::into).collect(),
            restore_point: f
                .restore_point
                .as_ref()
                .map(|r| uuid_field("instance.restorePoint.backupRef", &r.backup_ref))
                .transpose()?,
            restore_time: f
                .restore_point
                .as_ref()
                .and_then(|r| r.restore_time.as_deref())
                .map(|t| {
                    chrono::DateTime::parse_from_rfc3339(t)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .map_err(|e| {
                            Error::bad_request(format!(
                                "instance.restorePoint.restore_time '{t}' is not an RFC 3339 time ({e}); \
                                 write it like 2026-12-06T08:30:00Z."
                            ))
                        })
                })
                .transpose()?,
            replica_of,
            replica_count: f.replica_count,
            configuration: f
                .configuration
                .or(f.configuration_id)
                .map(|c| uuid_field("instance.configuration", &c))
                .transpose()?,
            locality,
            availability_zone: f.availability_zone,
            region_name: f.region_name,
            access: f.access.map(AccessBody::into_access).transpose()?,
        })
    }
}

/// `PUT`/`PATCH /instances/{id}`: `{"instance": {...}}` with only the upstream keys.
pub fn update_instance(body: Map<String, Value>, patch: bool) -> Result<UpdateInstance, ApiError> {
    let inst = match body.get("instance") {
        Some(Value::Object(m)) => m.clone(),
        _ => {
            return Err(invalid(
                "'instance' is a required property and must be an object",
            ))
        }
    };
    if let Some(k) = body.keys().find(|k| *k != "instance") {
        return Err(invalid(format!(
            "Additional properties are not allowed ('{}' was unexpected)",
            k.escape_default()
        )));
    }
    // PATCH (the deprecated edit) also knows the old `slave_of` spelling.
    let allowed: &[&str] = if patch {
        &[
            "name",
            "replica_of",
            "slave_of",
            "configuration",
            "datastore_version",
            "access",
            "auto_failover",
        ]
    } else {
        &[
            "name",
            "replica_of",
            "configuration",
            "datastore_version",
            "access",
            "auto_failover",
        ]
    };
    if let Some(k) = inst.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(format!(
            "instance: Additional properties are not allowed ('{}' was unexpected)",
            k.escape_default()
        )));
    }
    let mut u = UpdateInstance::default();
    if let Some(n) = inst.get("name") {
        u.name = Some(
            n.as_str()
                .ok_or_else(|| invalid("instance.name is not a string"))?
                .to_string(),
        );
    }
    if inst.contains_key("replica_of") || inst.contains_key("slave_of") {
        u.replica_of = Some(None);
    }
    match inst.get("configuration") {
        None => {}
        Some(Value::Null) => u.configuration = Some(None),
        Some(Value::String(s)) => {
            let id = Uuid::parse_str(ref_id(s))
                .map_err(|_| ApiError(Error::not_found("Configuration", s)))?;
            u.configuration = Some(Some(id));
        }
        Some(other) => {
            return Err(invalid(format!(
                "instance.configuration {other} is not a string or null"
            )))
        }
    }
    if let Some(v) = inst.get("datastore_version") {
        u.datastore_version = Some(
            v.as_str()
                .ok_or_else(|| invalid("instance.datastore_version is not a string"))?
                .to_string(),
        );
    }
    if let Some(a) = inst.get("access") {
        let a: AccessBody = serde_json::from_value(a.clone())
            .map_err(|e| invalid(format!("instance.access: {e}")))?;
        u.access = Some(a.into_access()?);
    }
    // Extension: automatic failover of this replication source on or off (`null`: the deployment's setting).
    match inst.get("auto_failover") {
        None => {}
        Some(Value::Null) => u.auto_failover = Some(None),
        Some(Value::Bool(b)) => u.auto_failover = Some(Some(*b)),
        Some(other) => {
            return Err(invalid(format!(
                "instance.auto_failover {other} is not a boolean or null"
            )))
        }
    }
    // `{"instance": {}}` detaches the configuration group (upstream behaviour).
    if inst.is_empty() {
        u.configuration = Some(None);
    }
    Ok(u)
}

/// `POST /instances/{id}/action`.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceAction {
    /// `{"restart": {}}`
    Restart,
    /// `{"resize": {"flavorRef": ...}}`
    ResizeFlavor(String),
    /// `{"resize": {"volume": {"size": N}}}`
    ResizeVolume(u32),
    /// `{"promote_to_replica_source": {}}`
    Promote,
    /// `{"eject_replica_source": {}}`
    Eject,
    /// `{"reset_status": {"force_delete"?: bool}}`
    ResetStatus {
        /// The force-delete variant (different policy upstream).
        force_delete: bool,
    },
}

pub(crate) fn one_key(body: &Map<String, Value>, what: &str) -> Result<(String, Value), ApiError> {
    let mut it = body.iter();
    match (it.next(), it.next()) {
        (Some((k, v)), None) => Ok((k.clone(), v.clone())),
        _ => Err(invalid(format!("{what}: exactly one action must be given"))),
    }
}

pub(crate) fn empty_object(key: &str, v: &Value) -> Result<(), ApiError> {
    match v {
        Value::Object(m) if m.is_empty() => Ok(()),
        Value::Null => Ok(()),
        _ => Err(invalid(format!("{key} must be an empty object"))),
    }
}

/// Decodes an instance action body.
pub fn instance_action(body: Map<String, Value>) -> Result<InstanceAction, ApiError> {
    let (key, v) = one_key(&body, "action")?;
    match key.as_str() {
        "restart" => empty_object("restart", &v).map(|_| InstanceAction::Restart),
        "promote_to_replica_source" => empty_object(&key, &v).map(|_| InstanceAction::Promote),
        "eject_replica_source" => empty_object(&key, &v).map(|_| InstanceAction::Eject),
        "reset_status" => {
            let m = match v {
                Value::Object(m) => m,
                Value::Null => Map::new(),
                _ => return Err(invalid("reset_status must be an object")),
            };
            if let Some(k) = m.keys().find(|k| *k != "force_delete") {
                return Err(invalid(format!(
                    "reset_status: unexpected property '{}'",
                    k.escape_default()
                )));
            }
            let force_delete = match m.get("force_delete") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(invalid("reset_status.force_delete is not a boolean")),
            };
            Ok(InstanceAction::ResetStatus { force_delete })
        }
        "resize" => {
            let m = match v {
                Value::Object(m) => m,
                _ => return Err(invalid("resize must be an object")),
            };
            // Upstream checks `volume` first.
            if let Some(vol) = m.get("volume") {
                let size = vol
                    .get("size")
                    .ok_or_else(|| invalid("resize.volume.size is required"))?;
                return Ok(InstanceAction::ResizeVolume(positive_int(
                    "resize.volume.size",
                    size,
                )?));
            }
            if let Some(f) = m.get("flavorRef") {
                return Ok(InstanceAction::ResizeFlavor(string_or_int(
                    "resize.flavorRef",
                    f,
                )?));
            }
            Err(invalid(
                "resize: one of 'volume' or 'flavorRef' is required",
            ))
        }
        other => Err(invalid(format!(
            "'{}' is not a known instance action",
            other.escape_default()
        ))),
    }
}

/// `POST /mgmt/instances/{id}/action`.
#[derive(Debug, Clone, PartialEq)]
pub enum MgmtAction {
    /// `{"stop": {}}`
    Stop,
    /// `{"reboot": {}}`
    Reboot,
    /// `{"reset-task-status": {}}`
    ResetTaskStatus,
    /// `{"migrate": {"host"?}}`
    Migrate(Option<String>),
    /// `{"rebuild": {"image_id"}}`
    Rebuild(String),
}

impl From<MgmtAction> for trove_core::api::MgmtAction {
    fn from(a: MgmtAction) -> trove_core::api::MgmtAction {
        use trove_core::api::MgmtAction as Core;
        match a {
            MgmtAction::Stop => Core::Stop,
            MgmtAction::Reboot => Core::Reboot,
            MgmtAction::ResetTaskStatus => Core::ResetTaskStatus,
            MgmtAction::Migrate(host) => Core::Migrate { host },
            MgmtAction::Rebuild(image_id) => Core::Rebuild { image_id },
        }
    }
}

/// Decodes a management action body.
pub fn mgmt_action(body: Map<String, Value>) -> Result<MgmtAction, ApiError> {
    let (key, v) = one_key(&body, "action")?;
    match key.as_str() {
        "stop" => empty_object(&key, &v).map(|_| MgmtAction::Stop),
        "reboot" => empty_object(&key, &v).map(|_| MgmtAction::Reboot),
        "reset-task-status" => empty_object(&key, &v).map(|_| MgmtAction::ResetTaskStatus),
        "migrate" => {
            if !(v.is_object() || v.is_null()) {
                return Err(invalid("migrate must be an object"));
            }
            let host = match v.get("host") {
                None | Some(Value::Null) => None,
                Some(Value::String(h)) => Some(h.clone()),
                Some(_) => return Err(invalid("migrate.host must be a string")),
            };
            Ok(MgmtAction::Migrate(host))
        }
        "rebuild" => {
            let image = v
                .get("image_id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("rebuild.image_id is required"))?;
            Ok(MgmtAction::Rebuild(image.to_string()))
        }
        other => Err(invalid(format!(
            "'{}' is not a known management action",
            other.escape_default()
        ))),
    }
}

/// `{"databases": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabasesBody {
    /// Databases.
    pub databases: Vec<DatabaseBody>,
}

impl DatabasesBody {
    /// The databases to create.
    pub fn into_specs(self) -> Vec<DatabaseSpec> {
        self.databases.into_iter().map(Into::into).collect()
    }
}

/// `{"databases": [{"name"}]}` (grant access).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseNamesBody {
    /// Names.
    pub databases: Vec<NameRef>,
}

impl DatabaseNamesBody {
    /// The database names.
    pub fn into_names(self) -> Vec<String> {
        self.databases.into_iter().map(|d| d.name).collect()
    }
}

/// `{"users": [...]}` (create, change passwords).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersBody {
    /// Users.
    pub users: Vec<UserBody>,
}

impl UsersBody {
    /// The users (to create, or with their new passwords).
    pub fn into_specs(self) -> Vec<UserSpec> {
        self.users.into_iter().map(Into::into).collect()
    }
}

/// `{"user": {name?, password?, host?}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdateBody {
    user: UserUpdateFields,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserUpdateFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    host: Option<String>,
}

impl UserUpdateBody {
    /// Converts; at least one attribute is required.
    pub fn into_update(self) -> Result<UserUpdate, ApiError> {
        let f = self.user;
        if f.name.is_none() && f.password.is_none() && f.host.is_none() {
            return Err(invalid(
                "user: at least one of name, password or host is required",
            ));
        }
        Ok(UserUpdate {
            name: f.name,
            password: f.password.map(Secret::new),
            host: f.host,
        })
    }
}

/// `POST /root` optional body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootBody {
    /// Chosen password.
    #[serde(default)]
    pub password: Option<String>,
}

impl RootBody {
    /// The chosen password of an optional body (`None`: the guest generates one).
    pub fn password_of(body: Option<RootBody>) -> Option<Secret> {
        body.and_then(|b| b.password).map(Secret::new)
    }
}

/// `POST /backups`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupBody {
    /// Fields.
    pub backup: BackupFields,
}

impl BackupBody {
    /// The core's request, once the shape is checked (storage driver, `restore_from`, ids, incremental flag).
    pub fn into_request(self) -> Result<CreateBackup, ApiError> {
        let f = self.backup;
        f.check()?;
        let restore_from = match &f.restore_from {
            None => None,
            Some(m) => Some(
                serde_json::from_value::<RestoreFrom>(Value::Object(m.clone()))
                    .map_err(|e| invalid(format!("backup.restore_from: {e}")))?,
            ),
        };
        Ok(CreateBackup {
            instance: f.instance_id()?,
            parent_id: f.parent()?,
            incremental: f.is_incremental()?,
            name: f.name,
            description: f.description,
            restore_from,
            container: f.swift_container,
        })
    }
}

/// Fields of a backup create.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFields {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Instance id or href.
    #[serde(default)]
    pub instance: Option<String>,
    /// Parent backup.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// 0 or 1 (or a boolean).
    #[serde(default)]
    pub incremental: Option<Value>,
    /// Container to write the backup to (default: the backup strategy's).
    #[serde(default)]
    pub swift_container: Option<String>,
    /// `swift` or `cinder` (accepted; the configured backup store is used).
    #[serde(default)]
    pub storage_driver: Option<String>,
    /// Register an existing remote backup.
    #[serde(default)]
    pub restore_from: Option<Map<String, Value>>,
}

impl BackupFields {
    /// Instance id, if given.
    pub fn instance_id(&self) -> Result<Option<Uuid>, ApiError> {
        self.instance
            .as_deref()
            .map(|s| uuid_field("backup.instance", s))
            .transpose()
    }
    /// Parent id, if given.
    pub fn parent(&self) -> Result<Option<Uuid>, ApiError> {
        self.parent_id
            .as_deref()
            .map(|s| uuid_field("backup.parent_id", s))
            .transpose()
    }
    /// Whether an incremental backup was asked for.
    pub fn is_incremental(&self) -> Result<bool, ApiError> {
        match &self.incremental {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(false),
            Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(true),
            Some(other) => Err(invalid(format!("backup.incremental {other} is not 0 or 1"))),
        }
    }
    /// Checks the storage driver.
    pub fn check(&self) -> Result<(), ApiError> {
        if let Some(d) = &self.storage_driver {
            if d != "swift" && d != "cinder" {
                return Err(invalid(format!(
                    "backup.storage_driver '{}' is not swift or cinder",
                    d.escape_default()
                )));
            }
        }
        Ok(())
    }
}

/// `POST /instances/{id}/backup_schedules` (a trove-rs extension).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupScheduleBody {
    /// Fields.
    pub backup_schedule: BackupScheduleFields,
}

/// Fields of a backup schedule: exactly one of `cron` and `interval`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupScheduleFields {
    /// Name.
    pub name: String,
    /// A five-field cron expression (UTC).
    #[serde(default)]
    pub cron: Option<String>,
    /// Seconds between runs (at least 60).
    #[serde(default)]
    pub interval: Option<u64>,
    /// Incremental backups (MariaDB).
    #[serde(default)]
    pub incremental: bool,
    /// Keep at most this many completed backups.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Keep backups this many days.
    #[serde(default)]
    pub keep_days: Option<u32>,
}

impl BackupScheduleBody {
    /// The core's request.
    pub fn into_request(self) -> Result<trove_core::api::CreateBackupSchedule, ApiError> {
        let f = self.backup_schedule;
        let times = match (f.cron, f.interval) {
            (Some(c), None) => trove_core::model::ScheduleTimes::Cron(c),
            (None, Some(i)) => trove_core::model::ScheduleTimes::Interval(i),
            _ => {
                return Err(trove_core::Error::bad_request(
                    "A backup schedule needs exactly one of 'cron' (e.g. \"30 2 * * *\") and 'interval' (seconds).",
                )
                .into())
            }
        };
        Ok(trove_core::api::CreateBackupSchedule {
            name: f.name,
            times,
            incremental: f.incremental,
            keep_last: f.keep_last,
            keep_days: f.keep_days,
        })
    }
}

/// `POST /backup_strategies`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupStrategyBody {
    /// Fields.
    pub backup_strategy: BackupStrategyFields,
}

impl BackupStrategyBody {
    /// The core's request (an empty `instance_id` is the tenant-wide strategy; one that is no UUID is a 404).
    pub fn into_request(self) -> Result<CreateBackupStrategy, ApiError> {
        let f = self.backup_strategy;
        let instance_id = match f.instance_id.as_deref() {
            None | Some("") => None,
            Some(i) => Some(uuid_or_404("Instance", i)?),
        };
        Ok(CreateBackupStrategy {
            instance_id,
            container: f.swift_container,
        })
    }
}

/// Fields of a backup strategy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupStrategyFields {
    /// Instance (optional: project-wide).
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Container.
    pub swift_container: String,
}

/// `POST /configurations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigurationCreateBody {
    /// Fields.
    pub configuration: ConfigurationCreateFields,
}

impl ConfigurationCreateBody {
    /// The core's request.
    pub fn into_request(self) -> CreateConfiguration {
        let (datastore, datastore_version, datastore_version_number) =
            self.configuration.datastore();
        let f = self.configuration;
        CreateConfiguration {
            name: f.name,
            description: f.description,
            values: f.values,
            datastore,
            datastore_version,
            datastore_version_number,
        }
    }
}

/// Fields of a configuration create.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigurationCreateFields {
    /// Name.
    pub name: String,
    /// Values.
    pub values: Map<String, Value>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Datastore.
    #[serde(default)]
    datastore: Option<DatastoreRefBody>,
}

impl ConfigurationCreateFields {
    /// `(datastore, version, version_number)` named by the request.
    pub fn datastore(&self) -> (Option<String>, Option<String>, Option<String>) {
        match &self.datastore {
            None => (None, None, None),
            Some(d) => (d.kind.clone(), d.version.clone(), d.version_number.clone()),
        }
    }
}

/// `PUT /configurations/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigurationUpdateBody {
    /// Fields.
    pub configuration: ConfigurationUpdateFields,
}

impl ConfigurationUpdateBody {
    /// The core's request of a `PUT` (name, description and all values).
    pub fn into_request(self) -> UpdateConfiguration {
        let f = self.configuration;
        UpdateConfiguration {
            name: f.name,
            description: f.description,
            values: f.values,
        }
    }

    /// The values of a `PATCH`, which accepts nothing else.
    pub fn into_patch_values(self) -> Result<Map<String, Value>, ApiError> {
        if self.configuration.name.is_some() || self.configuration.description.is_some() {
            return Err(invalid("configuration: PATCH accepts only 'values'"));
        }
        Ok(self.configuration.values)
    }
}

/// Fields of a configuration update (PUT) or edit (PATCH: values only).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigurationUpdateFields {
    /// Values.
    pub values: Map<String, Value>,
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
}

/// `PUT /mgmt/quotas/{project}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasBody {
    /// Resource → limit.
    pub quotas: Map<String, Value>,
}

impl QuotasBody {
    /// Resource name → limit (each an integer; the core checks names and ranges).
    pub fn into_limits(self) -> Result<BTreeMap<String, i64>, ApiError> {
        let mut limits = BTreeMap::new();
        for (k, v) in self.quotas {
            let n = v
                .as_i64()
                .ok_or_else(|| invalid(format!("quotas.{k} is not an integer")))?;
            limits.insert(k, n);
        }
        Ok(limits)
    }
}

/// `POST /mgmt/datastore-versions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionCreateBody {
    /// Fields.
    pub version: VersionCreateFields,
}

impl VersionCreateBody {
    /// The core's spec (at most 5 image tags are accepted; they are not kept).
    pub fn into_spec(self) -> Result<DatastoreVersionSpec, ApiError> {
        let f = self.version;
        if f.image_tags.len() > 5 {
            return Err(invalid("version.image_tags: at most 5 tags"));
        }
        Ok(DatastoreVersionSpec {
            datastore_name: f.datastore_name,
            name: f.name,
            manager: f.datastore_manager,
            image: f.image.unwrap_or_default(),
            packages: f.packages.join(","),
            active: f.active,
            version: f.version,
            default: f.default,
        })
    }
}

/// Fields of a datastore version create.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionCreateFields {
    /// Version name.
    pub name: String,
    /// Datastore name.
    pub datastore_name: String,
    /// Manager.
    pub datastore_manager: String,
    /// Image.
    #[serde(default)]
    pub image: Option<String>,
    /// Image tags (accepted; at most 5).
    #[serde(default)]
    pub image_tags: Vec<String>,
    /// Packages.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Active.
    pub active: bool,
    /// Make default.
    #[serde(default)]
    pub default: bool,
    /// Version number.
    #[serde(default)]
    pub version: Option<String>,
    /// Registry extension (accepted, unused).
    #[serde(default)]
    #[allow(dead_code)]
    pub registry_ext: Option<String>,
    /// Replication strategy (accepted, unused).
    #[serde(default)]
    #[allow(dead_code)]
    pub repl_strategy: Option<String>,
}

/// `PATCH /mgmt/datastore-versions/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionPatchBody {
    /// Manager.
    #[serde(default)]
    pub datastore_manager: Option<String>,
    /// Packages.
    #[serde(default)]
    pub packages: Option<Vec<String>>,
    /// Image.
    #[serde(default)]
    pub image: Option<String>,
    /// Image tags.
    #[serde(default)]
    #[allow(dead_code)]
    pub image_tags: Option<Vec<String>>,
    /// Registry extension.
    #[serde(default)]
    #[allow(dead_code)]
    pub registry_ext: Option<String>,
    /// Replication strategy.
    #[serde(default)]
    #[allow(dead_code)]
    pub repl_strategy: Option<String>,
    /// Active.
    #[serde(default)]
    pub active: Option<bool>,
    /// Default.
    #[serde(default)]
    pub default: Option<bool>,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
}

impl VersionPatchBody {
    /// The core's patch.
    pub fn into_patch(self) -> DatastoreVersionPatch {
        DatastoreVersionPatch {
            manager: self.datastore_manager,
            packages: self.packages.map(|p| p.join(",")),
            image: self.image,
            active: self.active,
            default: self.default,
            name: self.name,
        }
    }
}

/// `{"configuration-parameter": {...}}` (mgmt create / update).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterBody {
    /// Fields.
    #[serde(rename = "configuration-parameter")]
    pub parameter: ParameterFields,
}

impl ParameterBody {
    /// The core's spec: a known type name and a 0/1 `restart_required`.
    pub fn into_spec(self) -> Result<ConfigParamSpec, ApiError> {
        let f = self.parameter;
        let data_type: ParamType = serde_json::from_value(Value::String(f.data_type.clone()))
            .map_err(|_| {
                invalid(format!(
                    "configuration-parameter.data_type '{}' is not one of integer, string, boolean, float, list",
                    f.data_type.escape_default()
                ))
            })?;
        Ok(ConfigParamSpec {
            restart_required: f.restart_required()?,
            name: f.name,
            data_type,
            min: f.min,
            max: f.max,
        })
    }
}

/// Fields of a parameter rule. Both `min`/`max` (schema) and `min_size`/`max_size` (samples) are accepted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterFields {
    /// Name.
    pub name: String,
    /// Type name.
    pub data_type: String,
    /// 0/1 or a boolean.
    pub restart_required: Value,
    /// Minimum.
    #[serde(default, alias = "min_size")]
    pub min: Option<serde_json::Number>,
    /// Maximum.
    #[serde(default, alias = "max_size")]
    pub max: Option<serde_json::Number>,
}

impl ParameterFields {
    /// `restart_required` as a boolean.
    pub fn restart_required(&self) -> Result<bool, ApiError> {
        match &self.restart_required {
            Value::Bool(b) => Ok(*b),
            Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
            Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
            other => Err(invalid(format!(
                "configuration-parameter.restart_required {other} is not 0 or 1"
            ))),
        }
    }
}

/// A guest-log action flag (upstream schema: an integer 0 or 1; JSON booleans are taken too).
fn log_flag(body: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(false),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(true),
        Some(v) => Err(invalid(format!("{key} {v} is not 0 or 1"))),
    }
}

/// `POST /instances/{id}/log` body as upstream's `guest_log:action` schema describes it: a required non-empty
/// `name` and the optional flags `enable`, `disable`, `publish`, `discard`.
pub fn log_action_body(body: &Map<String, Value>) -> Result<LogActionRequest, ApiError> {
    let name = match body.get("name") {
        Some(Value::String(s)) if s.chars().any(|c| c.is_ascii_alphanumeric()) => s.clone(),
        Some(v) => return Err(invalid(format!("name {v} is not a non-empty name"))),
        None => return Err(invalid("'name' is a required property")),
    };
    Ok(LogActionRequest {
        name,
        enable: log_flag(body, "enable")?,
        disable: log_flag(body, "disable")?,
        publish: log_flag(body, "publish")?,
        discard: log_flag(body, "discard")?,
    })
}

/// `POST /instances/{id}/ssl`: `{"ssl": {"enable"|"disable"|"rollback": true, ...}}`.
#[derive(Debug, Deserialize)]
pub struct SslBody {
    ssl: Option<Value>,
}

impl SslBody {
    /// The action inside the envelope (400 without an `ssl` object).
    pub fn into_action(self) -> Result<SslActionBody, ApiError> {
        let Some(inner) = self.ssl else {
            return Err(ApiError(Error::bad_request(
                "The request body must hold an 'ssl' object.",
            )));
        };
        decode_value(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn actions_decode_as_upstream() {
        assert_eq!(
            instance_action(obj(json!({"restart": {}}))).unwrap(),
            InstanceAction::Restart
        );
        assert_eq!(
            instance_action(obj(json!({"resize": {"flavorRef": "http://x/flavors/7"}}))).unwrap(),
            InstanceAction::ResizeFlavor("7".into())
        );
        assert_eq!(
            instance_action(obj(
                json!({"resize": {"volume": {"size": "4"}, "flavorRef": 2}})
            ))
            .unwrap(),
            InstanceAction::ResizeVolume(4)
        );
        assert_eq!(
            instance_action(obj(json!({"reset_status": {"force_delete": true}}))).unwrap(),
            InstanceAction::ResetStatus { force_delete: true }
        );
        assert!(instance_action(obj(json!({"restart": {}, "resize": {}}))).is_err());
        assert!(instance_action(obj(json!({"explode": {}}))).is_err());
        assert!(instance_action(obj(json!({"resize": {"volume": {"size": 0}}}))).is_err());
    }

    #[test]
    fn update_keys_are_checked() {
        let u = update_instance(obj(json!({"instance": {}})), false).unwrap();
        assert_eq!(u.configuration, Some(None));
        let u = update_instance(obj(json!({"instance": {"replica_of": null}})), true).unwrap();
        assert_eq!(u.replica_of, Some(None));
        assert!(update_instance(obj(json!({"instance": {"flavor": "x"}})), false).is_err());
        assert_eq!(
            update_instance(obj(json!({"instance": {"configuration": "nope"}})), false)
                .unwrap_err()
                .0
                .fault()
                .status,
            404
        );
    }

    #[test]
    fn create_fields() {
        let b: CreateInstanceBody = serde_json::from_value(json!({"instance": {
            "name": "db1", "flavorRef": 1, "volume": {"size": "2", "type": null},
            "datastore": {"type": "mysql", "version": "5.7"}, "access": {"is_public": false},
            "nics": [{"net-id": "x"}], "locality": "anti-affinity"
        }}))
        .unwrap();
        let r = b.into_request().unwrap();
        assert_eq!(r.flavor_ref.as_deref(), Some("1"));
        assert_eq!(r.volume_size, Some(2));
        assert_eq!(r.locality, Some(Locality::AntiAffinity));
        let bad: CreateInstanceBody = serde_json::from_value(
            json!({"instance": {"name": "x", "access": {"allowed_cidrs": ["1.2.3.4"]}}}),
        )
        .unwrap();
        assert!(bad.into_request().is_err());
    }

    #[test]
    fn log_bodies_follow_the_upstream_schema() {
        let r = log_action_body(&obj(json!({"name": "general", "enable": 1}))).unwrap();
        assert!(r.enable && !r.disable && !r.publish && !r.discard);
        let r = log_action_body(&obj(
            json!({"name": "general", "publish": true, "discard": 0}),
        ))
        .unwrap();
        assert!(r.publish && !r.discard);
        let r = log_action_body(&obj(json!({"name": "general"}))).unwrap();
        assert_eq!(
            r,
            LogActionRequest::new("general", trove_core::model::LogAction::Show)
        );
        for bad in [
            json!({}),
            json!({"name": ""}),
            json!({"name": 5}),
            json!({"name": "general", "enable": 2}),
            json!({"name": "general", "enable": "yes"}),
        ] {
            let e = log_action_body(&obj(bad.clone())).unwrap_err();
            assert_eq!(e.0.fault().status, 400, "{bad}");
        }
    }
}
