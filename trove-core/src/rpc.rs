//! Typed RPC over the [`MessageBus`](crate::ports::MessageBus): the messages of the task manager, the conductor and the guest agents,
//! their envelope (version, sender, time, optional signature) and thin clients.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use crate::error::{Error, Fault, Result};
use crate::model::{DatabaseSpec, Secret, UserSpec, UserUpdate};
use crate::ports::{DynBus, FsStats, PrepareRequest, UserInfo};
use crate::state::{BackupState, ServiceStatus};

/// Version of the message formats below. Receivers accept messages of this version or older.
pub const PROTOCOL_VERSION: u32 = 1;
/// Topic of the task manager.
pub const TASKMANAGER_TOPIC: &str = "taskmanager";
/// Topic of the conductor.
pub const CONDUCTOR_TOPIC: &str = "trove-conductor";

/// Topic of an instance's guest agent.
pub fn guest_topic(instance_id: Uuid) -> String {
    format!("guestagent.{instance_id}")
}

/// What every message travels in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Protocol version of the sender.
    pub v: u32,
    /// Who sent it (`api`, `taskmanager`, `guest:<instance_id>`...).
    pub sender: String,
    /// When it was sent; receivers drop messages older than the last seen from the same sender.
    pub sent: DateTime<Utc>,
    /// The message.
    pub body: T,
    /// Hex HMAC-SHA256 over the canonical JSON of `[v, sender, sent, body]`, when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

fn mac_input<T: Serialize>(
    v: u32,
    sender: &str,
    sent: &DateTime<Utc>,
    body: &T,
) -> Result<Vec<u8>> {
    serde_json::to_vec(&(v, sender, sent, body))
        .map_err(|e| Error::bad_request(format!("unencodable message: {e}")))
}

impl<T: Serialize + DeserializeOwned> Envelope<T> {
    /// Wraps a message.
    pub fn new(sender: impl Into<String>, body: T) -> Envelope<T> {
        Envelope {
            v: PROTOCOL_VERSION,
            sender: sender.into(),
            sent: Utc::now(),
            body,
            sig: None,
        }
    }

    /// Signs the envelope with `key`.
    pub fn signed(mut self, key: &Secret) -> Result<Envelope<T>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes())
            .map_err(|_| Error::bad_request("invalid signing key"))?;
        mac.update(&mac_input(self.v, &self.sender, &self.sent, &self.body)?);
        self.sig = Some(hex::encode(mac.finalize().into_bytes()));
        Ok(self)
    }

    /// Checks the signature against `key` (constant time). Unsigned envelopes fail.
    pub fn verify(&self, key: &Secret) -> bool {
        let Some(sig) = self.sig.as_deref().and_then(|s| hex::decode(s).ok()) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()) else {
            return false;
        };
        let Ok(input) = mac_input(self.v, &self.sender, &self.sent, &self.body) else {
            return false;
        };
        mac.update(&input);
        mac.verify_slice(&sig).is_ok()
    }

    /// Encodes to bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| Error::bad_request(format!("unencodable message: {e}")))
    }

    /// Decodes from bytes; a newer protocol version is refused.
    pub fn decode(bytes: &[u8]) -> Result<Envelope<T>> {
        let env: Envelope<T> = serde_json::from_slice(bytes)
            .map_err(|e| Error::bad_request(format!("undecodable message: {e}")))?;
        if env.v > PROTOCOL_VERSION {
            return Err(Error::bad_request(format!(
                "message protocol version {} is newer than this service understands ({PROTOCOL_VERSION}); upgrade it",
                env.v
            )));
        }
        Ok(env)
    }
}

/// Casts to the task manager (upstream: every TM method is a cast).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum TaskManagerRequest {
    /// Run (or resume) a stored workflow.
    RunWorkflow {
        /// The workflow.
        workflow_id: Uuid,
    },
}

/// Casts to the conductor (guest reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum ConductorRequest {
    /// Periodic status of a guest.
    Heartbeat {
        /// Reporting instance.
        instance_id: Uuid,
        /// Service status.
        status: ServiceStatus,
        /// Why, when not healthy.
        reason: Option<String>,
        /// Volume usage.
        fs: Option<FsStats>,
    },
    /// Progress of a backup.
    UpdateBackup {
        /// Instance that runs it.
        instance_id: Uuid,
        /// Backup id.
        backup_id: Uuid,
        /// New state.
        state: BackupState,
        /// Size in GB.
        size: Option<f64>,
        /// Object checksum.
        checksum: Option<String>,
        /// Object location.
        location: Option<String>,
    },
    /// Root was enabled on the guest.
    ReportRoot {
        /// Instance.
        instance_id: Uuid,
        /// Who.
        user: String,
    },
}

/// Requests to a guest agent (upstream guest API, §3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum GuestRequest {
    /// Bring the engine up for the first time.
    Prepare(PrepareRequest),
    /// Bring the engine up again on its existing data after the server was rebuilt (or switched to another
    /// datastore version): render its configuration from the flavor and the attached overrides and start it
    /// (upstream `rebuild(ds_version, config_contents, config_overrides)`). Databases and users are left alone.
    Rebuild(PrepareRequest),
    Restart,
    StartDb,
    StopDb,
    GetFilesystemStats,
    RpcPing,
    /// Re-render config for a new flavor and restart (upstream `start_db_with_conf_changes`).
    ApplyFlavor {
        memory_mb: u32,
    },
    ResizeFs {
        size_gb: u32,
    },
    CreateDatabase {
        databases: Vec<DatabaseSpec>,
    },
    ListDatabases,
    DeleteDatabase {
        database: String,
    },
    CreateUser {
        users: Vec<UserSpec>,
    },
    ListUsers,
    DeleteUser {
        username: String,
        hostname: String,
    },
    UpdateAttributes {
        username: String,
        hostname: String,
        user_attrs: UserUpdate,
    },
    ChangePasswords {
        users: Vec<UserSpec>,
    },
    GrantAccess {
        username: String,
        hostname: String,
        databases: Vec<String>,
    },
    RevokeAccess {
        username: String,
        hostname: String,
        database: String,
    },
    EnableRoot {
        root_password: Option<Secret>,
    },
    DisableRoot,
    ApplyOverrides {
        overrides: Map<String, Value>,
    },
    /// The instance's TLS state (upstream `ssl_show`, 1.3).
    SslShow {
        include_certificate: bool,
    },
    /// Turn TLS on or off (upstream `ssl_action`, 1.3).
    SslAction {
        change: crate::model::SslChange,
    },
    /// Restore the TLS state before the last action (upstream `ssl_rollback`, 1.3).
    SslRollback,
    /// The logs the guest exposes (upstream `guest_log_list`).
    GuestLogList,
    /// One action on one log (upstream `guest_log_action`; at most one flag set).
    GuestLogAction {
        log_name: String,
        enable: bool,
        disable: bool,
        publish: bool,
        discard: bool,
    },
}

/// A reply: the result value, or an error with its upstream status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Success.
    Ok(Value),
    /// Failure.
    Err {
        /// Upstream HTTP status of the error.
        status: u16,
        /// Message.
        message: String,
    },
}

impl Reply {
    /// Encodes a handler result as a reply.
    pub fn from_result<T: Serialize>(r: Result<T>) -> Reply {
        match r {
            Ok(v) => match serde_json::to_value(v) {
                Ok(v) => Reply::Ok(v),
                Err(e) => Reply::Err {
                    status: 500,
                    message: e.to_string(),
                },
            },
            Err(e) => Reply::Err {
                status: e.fault().status,
                message: e.to_string(),
            },
        }
    }

    /// Turns a reply back into a result, keeping the remote error's status.
    pub fn into_result<T: DeserializeOwned>(self, instance_id: Uuid) -> Result<T> {
        match self {
            Reply::Ok(v) => serde_json::from_value(v).map_err(|e| Error::Guest {
                instance_id,
                message: format!("unexpected reply: {e}"),
            }),
            Reply::Err { status, message } => Err(error_from_status(status, message, instance_id)),
        }
    }
}

/// Rebuilds an error from a status and message that crossed the wire.
pub fn error_from_status(status: u16, message: String, instance_id: Uuid) -> Error {
    match Fault::for_status(status).status {
        400 => Error::BadRequest { message },
        401 => Error::Unauthorized { message },
        403 => Error::Forbidden { message },
        404 => Error::NotFound {
            what: "Resource",
            id: message,
        },
        409 => Error::Conflict { message },
        413 => Error::OverLimit {
            message,
            retry_after: None,
        },
        422 => Error::Unprocessable { message },
        501 => Error::NotImplemented { message },
        _ => Error::Guest {
            instance_id,
            message,
        },
    }
}

/// Call timeouts towards guests (upstream `agent_call_low_timeout` / `agent_call_high_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestTimeouts {
    /// Quick calls (lists, pings).
    pub low: Duration,
    /// Slow calls (prepare, restart, root).
    pub high: Duration,
}

impl Default for GuestTimeouts {
    fn default() -> Self {
        GuestTimeouts {
            low: Duration::from_secs(15),
            high: Duration::from_secs(180),
        }
    }
}

/// Client of one instance's guest agent.
#[derive(Clone)]
pub struct GuestClient {
    bus: DynBus,
    instance_id: Uuid,
    sender: String,
    timeouts: GuestTimeouts,
}

impl std::fmt::Debug for GuestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestClient")
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

impl GuestClient {
    /// A client for `instance_id`'s guest.
    pub fn new(
        bus: DynBus,
        instance_id: Uuid,
        sender: impl Into<String>,
        timeouts: GuestTimeouts,
    ) -> GuestClient {
        GuestClient {
            bus,
            instance_id,
            sender: sender.into(),
            timeouts,
        }
    }

    /// Sends a request and waits for its reply.
    pub async fn call<T: DeserializeOwned>(
        &self,
        req: GuestRequest,
        timeout: Duration,
    ) -> Result<T> {
        let body = Envelope::new(self.sender.clone(), req).encode()?;
        let reply = self
            .bus
            .call(&guest_topic(self.instance_id), body, timeout)
            .await?;
        let reply: Reply = serde_json::from_slice(&reply).map_err(|e| Error::Guest {
            instance_id: self.instance_id,
            message: format!("undecodable reply: {e}"),
        })?;
        reply.into_result(self.instance_id)
    }

    /// Sends a request without waiting.
    pub async fn cast(&self, req: GuestRequest) -> Result<()> {
        let body = Envelope::new(self.sender.clone(), req).encode()?;
        self.bus.cast(&guest_topic(self.instance_id), body).await
    }

    /// The low (quick) timeout.
    pub fn low(&self) -> Duration {
        self.timeouts.low
    }
    /// The high (slow) timeout.
    pub fn high(&self) -> Duration {
        self.timeouts.high
    }

    async fn call_unit(&self, req: GuestRequest, timeout: Duration) -> Result<()> {
        self.call::<Value>(req, timeout).await.map(|_| ())
    }

    // ---- lifecycle (every strategy)

    /// Asks the guest to prepare a fresh engine (a cast: the guest may not serve its topic yet).
    pub async fn prepare(&self, req: PrepareRequest) -> Result<()> {
        self.cast(GuestRequest::Prepare(req)).await
    }
    /// Asks the guest to bring the engine up again on its existing data (a cast, like prepare).
    pub async fn rebuild(&self, req: PrepareRequest) -> Result<()> {
        self.cast(GuestRequest::Rebuild(req)).await
    }
    /// Restarts the engine.
    pub async fn restart(&self) -> Result<()> {
        self.call_unit(GuestRequest::Restart, self.high()).await
    }
    /// Starts the engine.
    pub async fn start_db(&self) -> Result<()> {
        self.call_unit(GuestRequest::StartDb, self.high()).await
    }
    /// Stops the engine, waiting at most `timeout` for the guest's answer.
    pub async fn stop_db(&self, timeout: Duration) -> Result<()> {
        self.call_unit(GuestRequest::StopDb, timeout).await
    }
    /// Checks that the guest answers.
    pub async fn ping(&self) -> Result<()> {
        self.call_unit(GuestRequest::RpcPing, self.low()).await
    }
    /// Volume usage.
    pub async fn filesystem_stats(&self) -> Result<FsStats> {
        self.call(GuestRequest::GetFilesystemStats, self.low())
            .await
    }
    /// Re-renders the engine's memory settings for a flavor of `memory_mb` and restarts it.
    pub async fn apply_flavor(&self, memory_mb: u32) -> Result<()> {
        self.call_unit(GuestRequest::ApplyFlavor { memory_mb }, self.high())
            .await
    }
    /// The volume grew to `size_gb`.
    pub async fn resize_fs(&self, size_gb: u32) -> Result<()> {
        self.call_unit(GuestRequest::ResizeFs { size_gb }, self.high())
            .await
    }

    // ---- users

    /// Creates users (with their grants).
    pub async fn create_users(&self, users: Vec<UserSpec>) -> Result<()> {
        self.call_unit(GuestRequest::CreateUser { users }, self.high())
            .await
    }
    /// Lists users.
    pub async fn list_users(&self) -> Result<Vec<UserInfo>> {
        self.call(GuestRequest::ListUsers, self.high()).await
    }
    /// Deletes a user.
    pub async fn delete_user(&self, username: &str, hostname: &str) -> Result<()> {
        let req = GuestRequest::DeleteUser {
            username: username.into(),
            hostname: hostname.into(),
        };
        self.call_unit(req, self.high()).await
    }
    /// Changes a user's name, host or password.
    pub async fn update_user(
        &self,
        username: &str,
        hostname: &str,
        update: UserUpdate,
    ) -> Result<()> {
        let req = GuestRequest::UpdateAttributes {
            username: username.into(),
            hostname: hostname.into(),
            user_attrs: update,
        };
        self.call_unit(req, self.high()).await
    }
    /// Changes passwords.
    pub async fn change_passwords(&self, users: Vec<UserSpec>) -> Result<()> {
        self.call_unit(GuestRequest::ChangePasswords { users }, self.high())
            .await
    }

    // ---- databases

    /// Creates databases.
    pub async fn create_databases(&self, databases: Vec<DatabaseSpec>) -> Result<()> {
        self.call_unit(GuestRequest::CreateDatabase { databases }, self.high())
            .await
    }
    /// Lists databases.
    pub async fn list_databases(&self) -> Result<Vec<DatabaseSpec>> {
        self.call(GuestRequest::ListDatabases, self.low()).await
    }
    /// Deletes a database.
    pub async fn delete_database(&self, database: &str) -> Result<()> {
        let req = GuestRequest::DeleteDatabase {
            database: database.into(),
        };
        self.call_unit(req, self.high()).await
    }
    /// Grants a user access to databases.
    pub async fn grant_access(
        &self,
        username: &str,
        hostname: &str,
        databases: Vec<String>,
    ) -> Result<()> {
        let req = GuestRequest::GrantAccess {
            username: username.into(),
            hostname: hostname.into(),
            databases,
        };
        self.call_unit(req, self.high()).await
    }
    /// Revokes a user's access to a database.
    pub async fn revoke_access(
        &self,
        username: &str,
        hostname: &str,
        database: &str,
    ) -> Result<()> {
        let req = GuestRequest::RevokeAccess {
            username: username.into(),
            hostname: hostname.into(),
            database: database.into(),
        };
        self.call_unit(req, self.high()).await
    }

    // ---- root

    /// Enables root with the given or a generated password; answers the password.
    pub async fn enable_root(&self, root_password: Option<Secret>) -> Result<Secret> {
        self.call(GuestRequest::EnableRoot { root_password }, self.high())
            .await
    }
    /// Disables root.
    pub async fn disable_root(&self) -> Result<()> {
        self.call_unit(GuestRequest::DisableRoot, self.high()).await
    }

    // ---- configuration

    /// Applies configuration overrides; answers whether a restart is needed for them to take effect.
    pub async fn apply_overrides(&self, overrides: Map<String, Value>) -> Result<bool> {
        self.call(GuestRequest::ApplyOverrides { overrides }, self.high())
            .await
    }

    // ---- TLS

    /// The TLS state.
    pub async fn ssl_show(&self, include_certificate: bool) -> Result<crate::model::SslView> {
        let req = GuestRequest::SslShow {
            include_certificate,
        };
        self.call(req, self.high()).await
    }
    /// Turns TLS on or off.
    pub async fn ssl_action(
        &self,
        change: crate::model::SslChange,
    ) -> Result<crate::model::SslChangeResult> {
        self.call(GuestRequest::SslAction { change }, self.high())
            .await
    }
    /// Restores the TLS state before the last action.
    pub async fn ssl_rollback(&self) -> Result<crate::model::SslChangeResult> {
        self.call(GuestRequest::SslRollback, self.high()).await
    }

    // ---- logs

    /// The logs the guest exposes.
    pub async fn guest_log_list(&self) -> Result<Vec<crate::model::GuestLog>> {
        self.call(GuestRequest::GuestLogList, self.high()).await
    }
    /// One action on one log (publishing copies the log: the high timeout).
    pub async fn guest_log_action(
        &self,
        req: &crate::model::LogActionRequest,
    ) -> Result<crate::model::GuestLog> {
        let r = GuestRequest::GuestLogAction {
            log_name: req.name.clone(),
            enable: req.enable,
            disable: req.disable,
            publish: req.publish,
            discard: req.discard,
        };
        self.call(r, self.high()).await
    }
}

/// Client of the task manager.
#[derive(Clone)]
pub struct TaskManagerClient {
    bus: DynBus,
    sender: String,
}

impl TaskManagerClient {
    /// A client sending as `sender`.
    pub fn new(bus: DynBus, sender: impl Into<String>) -> TaskManagerClient {
        TaskManagerClient {
            bus,
            sender: sender.into(),
        }
    }
    /// Asks a task manager to run a workflow.
    pub async fn run_workflow(&self, workflow_id: Uuid) -> Result<()> {
        let body = Envelope::new(
            self.sender.clone(),
            TaskManagerRequest::RunWorkflow { workflow_id },
        )
        .encode()?;
        self.bus.cast(TASKMANAGER_TOPIC, body).await
    }
}

/// Client of the conductor, used by guests; signs every report when it has a key.
#[derive(Clone)]
pub struct ConductorClient {
    bus: DynBus,
    sender: String,
    key: Option<Arc<Secret>>,
}

impl ConductorClient {
    /// A client sending as `sender`, signing with `key` when given.
    pub fn new(bus: DynBus, sender: impl Into<String>, key: Option<Secret>) -> ConductorClient {
        ConductorClient {
            bus,
            sender: sender.into(),
            key: key.map(Arc::new),
        }
    }
    /// Sends a report.
    pub async fn send(&self, req: ConductorRequest) -> Result<()> {
        let mut env = Envelope::new(self.sender.clone(), req);
        if let Some(k) = &self.key {
            env = env.signed(k)?;
        }
        self.bus.cast(CONDUCTOR_TOPIC, env.encode()?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_the_sender_and_body() {
        let key = Secret::new("k1");
        let env = Envelope::new(
            "guest:a",
            ConductorRequest::ReportRoot {
                instance_id: Uuid::nil(),
                user: "root".into(),
            },
        )
        .signed(&key)
        .unwrap();
        assert!(env.verify(&key));
        assert!(!env.verify(&Secret::new("k2")));
        let mut forged = env.clone();
        forged.sender = "guest:b".into();
        assert!(!forged.verify(&key));
        let back: Envelope<ConductorRequest> = Envelope::decode(&env.encode().unwrap()).unwrap();
        assert!(back.verify(&key));
    }

    #[test]
    fn remote_errors_keep_their_status() {
        let r = Reply::from_result::<()>(Err(Error::unprocessable("nope")));
        let e = r.into_result::<()>(Uuid::nil()).unwrap_err();
        assert_eq!(e.fault().status, 422);
    }
}
