//! The databases facet on the wire.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{to_value, unit, GuestClient, GuestRequest};
use crate::error::Result;
use crate::model::{DatabaseSpec, Facet};
use crate::ports::{not_supported, DatabasesFacet, DatastoreStrategy};

/// Requests of the databases facet ([`DatabasesFacet`]), with upstream's method names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum DatabasesRequest {
    /// Create databases.
    CreateDatabase {
        /// The databases.
        databases: Vec<DatabaseSpec>,
    },
    /// List databases.
    ListDatabases,
    /// Delete a database.
    DeleteDatabase {
        /// Its name.
        database: String,
    },
    /// Grant a user access to databases.
    GrantAccess {
        /// User name.
        username: String,
        /// User host.
        hostname: String,
        /// The databases.
        databases: Vec<String>,
    },
    /// Revoke a user's access to a database.
    RevokeAccess {
        /// User name.
        username: String,
        /// User host.
        hostname: String,
        /// The database.
        database: String,
    },
}

impl DatabasesRequest {
    /// Runs the request on the facet.
    pub async fn serve(self, facet: &dyn DatabasesFacet) -> Result<Value> {
        match self {
            DatabasesRequest::CreateDatabase { databases } => {
                unit(facet.create_databases(&databases).await)
            }
            DatabasesRequest::ListDatabases => to_value(facet.list_databases().await),
            DatabasesRequest::DeleteDatabase { database } => {
                unit(facet.delete_database(&database).await)
            }
            DatabasesRequest::GrantAccess {
                username,
                hostname,
                databases,
            } => unit(facet.grant_access(&username, &hostname, &databases).await),
            DatabasesRequest::RevokeAccess {
                username,
                hostname,
                database,
            } => unit(facet.revoke_access(&username, &hostname, &database).await),
        }
    }

    /// Runs the request on `strategy`'s databases facet; without one, upstream's 422 (naming `user access` for
    /// grants, as upstream does).
    pub async fn serve_on(self, strategy: &dyn DatastoreStrategy) -> Result<Value> {
        match strategy.databases() {
            Some(f) => self.serve(f).await,
            None => {
                let what = match self {
                    DatabasesRequest::GrantAccess { .. }
                    | DatabasesRequest::RevokeAccess { .. } => "user access",
                    DatabasesRequest::CreateDatabase { .. }
                    | DatabasesRequest::ListDatabases
                    | DatabasesRequest::DeleteDatabase { .. } => Facet::Databases.as_str(),
                };
                Err(not_supported(strategy.manager(), what))
            }
        }
    }
}

impl GuestClient {
    async fn databases(&self, req: DatabasesRequest) -> Result<()> {
        self.call::<Value>(GuestRequest::Databases(req), self.high())
            .await
            .map(|_| ())
    }

    /// Creates databases.
    pub async fn create_databases(&self, databases: Vec<DatabaseSpec>) -> Result<()> {
        self.databases(DatabasesRequest::CreateDatabase { databases })
            .await
    }
    /// Lists databases.
    pub async fn list_databases(&self) -> Result<Vec<DatabaseSpec>> {
        let req = GuestRequest::Databases(DatabasesRequest::ListDatabases);
        self.call(req, self.low()).await
    }
    /// Deletes a database.
    pub async fn delete_database(&self, database: &str) -> Result<()> {
        self.databases(DatabasesRequest::DeleteDatabase {
            database: database.into(),
        })
        .await
    }
    /// Grants a user access to databases.
    pub async fn grant_access(
        &self,
        username: &str,
        hostname: &str,
        databases: Vec<String>,
    ) -> Result<()> {
        self.databases(DatabasesRequest::GrantAccess {
            username: username.into(),
            hostname: hostname.into(),
            databases,
        })
        .await
    }
    /// Revokes a user's access to a database.
    pub async fn revoke_access(
        &self,
        username: &str,
        hostname: &str,
        database: &str,
    ) -> Result<()> {
        self.databases(DatabasesRequest::RevokeAccess {
            username: username.into(),
            hostname: hostname.into(),
            database: database.into(),
        })
        .await
    }
}
