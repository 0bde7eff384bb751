//! [`DatabasesFacet`]: the engine's databases and who may use them.

use async_trait::async_trait;

use crate::error::Result;
use crate::model::DatabaseSpec;

/// Databases and access to them (upstream `create_database`, `list_databases`, `delete_database`,
/// `grant_access`, `revoke_access`).
///
/// # Contract
/// - Creating an existing database is a 400; deleting a missing one a 404.
/// - System databases are never listed.
/// - Granting to a missing user or a missing database is a 404; a revoked database is no longer listed with the
///   user ([`super::UsersFacet::list_users`]).
#[async_trait]
pub trait DatabasesFacet: Send + Sync {
    /// Creates databases.
    async fn create_databases(&self, dbs: &[DatabaseSpec]) -> Result<()>;
    /// Lists databases (system ones left out).
    async fn list_databases(&self) -> Result<Vec<DatabaseSpec>>;
    /// Deletes a database.
    async fn delete_database(&self, name: &str) -> Result<()>;
    /// Grants a user access to databases.
    async fn grant_access(&self, name: &str, host: &str, dbs: &[String]) -> Result<()>;
    /// Revokes a user's access to a database.
    async fn revoke_access(&self, name: &str, host: &str, db: &str) -> Result<()>;
}
