//! [`UsersFacet`]: the engine's user accounts.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{UserSpec, UserUpdate};

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

/// User accounts (upstream `create_user`, `list_users`, `delete_user`, `update_attributes`,
/// `change_passwords`).
///
/// # Contract
/// - A user created without host lists with host `%`; engines without host patterns accept only `%`.
/// - Creating an existing user is a 400; deleting, updating or changing the password of a missing one a 404.
/// - System accounts (the guest's own admin, the engine's built-in ones) are never listed and their names are
///   refused.
/// - A user's databases are granted with it (404 for a missing database); an engine without the databases
///   facet refuses users with databases (422).
#[async_trait]
pub trait UsersFacet: Send + Sync {
    /// Creates users (with their grants).
    async fn create_users(&self, users: &[UserSpec]) -> Result<()>;
    /// Lists users (system ones left out).
    async fn list_users(&self) -> Result<Vec<UserInfo>>;
    /// Deletes a user.
    async fn delete_user(&self, name: &str, host: &str) -> Result<()>;
    /// Changes a user's name, host or password.
    async fn update_user(&self, name: &str, host: &str, update: &UserUpdate) -> Result<()>;
    /// Changes passwords (every user must exist; nothing changes otherwise).
    async fn change_passwords(&self, users: &[UserSpec]) -> Result<()>;
}
