use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

use super::compute::GuestSpec;
use crate::error::{Error, Result};
use crate::guest_log::GuestLogContext;
use crate::model::{
    Capabilities, DatabaseSpec, Manager, Secret, SslChange, SslChangeResult, SslView, UserSpec,
    UserUpdate,
};
use crate::model::{GuestLog, LogActionRequest};
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

/// A user as listed by the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Name.
    pub name: String,
    /// Host pattern (`%` where the engine has none).
    pub host: String,
    /// Databases the user may access.
    pub databases: Vec<String>,
}

fn unsupported(manager: Manager, what: &str) -> Error {
    Error::unprocessable(format!(
        "Operation not supported for datastore {manager}: {what}."
    ))
}

fn ssl_unsupported(manager: Manager) -> Error {
    Error::not_implemented(format!("SSL is not supported for datastore {manager}."))
}

/// The guest side of one engine: everything the guest agent asks of a running datastore.
///
/// One strategy value serves one instance (it knows its data dir and port from its [`StrategyContext`]).
/// Methods for what an engine does not support keep their default, which answers upstream's 422
/// "Operation not supported".
///
/// # Contract
/// - `prepare` is idempotent: a second call on a prepared instance only ensures the engine runs.
/// - Names arrive validated ([`crate::model::validate_database_name`]); strategies still quote every identifier.
/// - `status` never fails because the engine is down: it answers SHUTDOWN or CRASHED with a reason.
/// - Passwords are [`Secret`]s and never logged.
#[async_trait]
pub trait DatastoreStrategy: Send + Sync + 'static {
    /// Which manager this is.
    fn manager(&self) -> Manager;
    /// What it supports.
    fn capabilities(&self) -> Capabilities {
        self.manager().capabilities()
    }
    /// Initialises and starts the engine, creates initial databases and users.
    async fn prepare(&self, req: &PrepareRequest) -> Result<()>;
    /// Starts the engine.
    async fn start(&self) -> Result<()>;
    /// Stops the engine.
    async fn stop(&self) -> Result<()>;
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

    /// Creates databases.
    async fn create_databases(&self, _dbs: &[DatabaseSpec]) -> Result<()> {
        Err(unsupported(self.manager(), "databases"))
    }
    /// Lists databases (system ones left out).
    async fn list_databases(&self) -> Result<Vec<DatabaseSpec>> {
        Err(unsupported(self.manager(), "databases"))
    }
    /// Deletes a database.
    async fn delete_database(&self, _name: &str) -> Result<()> {
        Err(unsupported(self.manager(), "databases"))
    }
    /// Creates users (with their grants).
    async fn create_users(&self, _users: &[UserSpec]) -> Result<()> {
        Err(unsupported(self.manager(), "users"))
    }
    /// Lists users (system ones left out).
    async fn list_users(&self) -> Result<Vec<UserInfo>> {
        Err(unsupported(self.manager(), "users"))
    }
    /// Deletes a user.
    async fn delete_user(&self, _name: &str, _host: &str) -> Result<()> {
        Err(unsupported(self.manager(), "users"))
    }
    /// Changes a user's name, host or password.
    async fn update_user(&self, _name: &str, _host: &str, _update: &UserUpdate) -> Result<()> {
        Err(unsupported(self.manager(), "users"))
    }
    /// Changes passwords.
    async fn change_passwords(&self, _users: &[UserSpec]) -> Result<()> {
        Err(unsupported(self.manager(), "users"))
    }
    /// Grants access to databases.
    async fn grant_access(&self, _name: &str, _host: &str, _dbs: &[String]) -> Result<()> {
        Err(unsupported(self.manager(), "user access"))
    }
    /// Revokes access to a database.
    async fn revoke_access(&self, _name: &str, _host: &str, _db: &str) -> Result<()> {
        Err(unsupported(self.manager(), "user access"))
    }
    /// Enables root with the given or a generated password; returns the password.
    async fn enable_root(&self, _password: Option<Secret>) -> Result<Secret> {
        Err(unsupported(self.manager(), "root"))
    }
    /// Disables root.
    async fn disable_root(&self) -> Result<()> {
        Err(unsupported(self.manager(), "root"))
    }
    /// Applies configuration overrides; returns whether a restart is needed for them to take effect.
    async fn apply_overrides(&self, _overrides: &Map<String, Value>) -> Result<bool> {
        Err(unsupported(self.manager(), "configuration"))
    }
    /// The TLS state (certificate PEM included when asked).
    async fn ssl_show(&self, _include_certificate: bool) -> Result<SslView> {
        Err(ssl_unsupported(self.manager()))
    }
    /// Turns TLS on (installing a certificate) or off; the state before is kept for [`Self::ssl_rollback`].
    async fn ssl_action(&self, _change: &SslChange) -> Result<SslChangeResult> {
        Err(ssl_unsupported(self.manager()))
    }
    /// Restores the TLS state before the last action.
    async fn ssl_rollback(&self) -> Result<SslChangeResult> {
        Err(ssl_unsupported(self.manager()))
    }
    /// The logs the engine exposes (upstream `guest_log_list`); none by default.
    async fn guest_log_list(&self, _ctx: &GuestLogContext) -> Result<Vec<GuestLog>> {
        Ok(Vec::new())
    }
    /// One action on one log (upstream `guest_log_action`); see [`crate::guest_log::log_action`]. By default the
    /// engine has no logs: every name is a 404.
    async fn guest_log_action(
        &self,
        _ctx: &GuestLogContext,
        req: &LogActionRequest,
    ) -> Result<GuestLog> {
        Err(Error::not_found("Log", req.name.escape_default()))
    }
}

/// Everything a strategy needs to know about its instance.
pub type StrategyContext = GuestSpec;

/// Builds a strategy for an instance from its manager.
pub trait StrategyFactory: Send + Sync + 'static {
    /// A strategy for the instance described by `ctx`.
    fn strategy(&self, ctx: &StrategyContext) -> Result<Arc<dyn DatastoreStrategy>>;
}
