//! The users facet on the wire.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{to_value, unit, GuestClient, GuestRequest};
use crate::error::Result;
use crate::model::{Facet, UserSpec, UserUpdate};
use crate::ports::{not_supported, DatastoreStrategy, UserInfo, UsersFacet};

/// Requests of the users facet ([`UsersFacet`]), with upstream's method names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum UsersRequest {
    /// Create users with their grants.
    CreateUser {
        /// The users.
        users: Vec<UserSpec>,
    },
    /// List users.
    ListUsers,
    /// Delete a user.
    DeleteUser {
        /// Name.
        username: String,
        /// Host.
        hostname: String,
    },
    /// Change a user's name, host or password.
    UpdateAttributes {
        /// Name.
        username: String,
        /// Host.
        hostname: String,
        /// What changes.
        user_attrs: UserUpdate,
    },
    /// Change passwords.
    ChangePasswords {
        /// Users with their new passwords.
        users: Vec<UserSpec>,
    },
}

impl UsersRequest {
    /// Runs the request on the facet.
    pub async fn serve(self, facet: &dyn UsersFacet) -> Result<Value> {
        match self {
            UsersRequest::CreateUser { users } => unit(facet.create_users(&users).await),
            UsersRequest::ListUsers => to_value(facet.list_users().await),
            UsersRequest::DeleteUser { username, hostname } => {
                unit(facet.delete_user(&username, &hostname).await)
            }
            UsersRequest::UpdateAttributes {
                username,
                hostname,
                user_attrs,
            } => unit(facet.update_user(&username, &hostname, &user_attrs).await),
            UsersRequest::ChangePasswords { users } => unit(facet.change_passwords(&users).await),
        }
    }

    /// Runs the request on `strategy`'s users facet; without one, upstream's 422.
    pub async fn serve_on(self, strategy: &dyn DatastoreStrategy) -> Result<Value> {
        match strategy.users() {
            Some(f) => self.serve(f).await,
            None => Err(not_supported(strategy.manager(), Facet::Users.as_str())),
        }
    }
}

impl GuestClient {
    async fn users(&self, req: UsersRequest) -> Result<Value> {
        self.call(GuestRequest::Users(req), self.high()).await
    }

    /// Creates users (with their grants).
    pub async fn create_users(&self, users: Vec<UserSpec>) -> Result<()> {
        self.users(UsersRequest::CreateUser { users })
            .await
            .map(|_| ())
    }
    /// Lists users.
    pub async fn list_users(&self) -> Result<Vec<UserInfo>> {
        self.call(GuestRequest::Users(UsersRequest::ListUsers), self.high())
            .await
    }
    /// Deletes a user.
    pub async fn delete_user(&self, username: &str, hostname: &str) -> Result<()> {
        self.users(UsersRequest::DeleteUser {
            username: username.into(),
            hostname: hostname.into(),
        })
        .await
        .map(|_| ())
    }
    /// Changes a user's name, host or password.
    pub async fn update_user(
        &self,
        username: &str,
        hostname: &str,
        update: UserUpdate,
    ) -> Result<()> {
        self.users(UsersRequest::UpdateAttributes {
            username: username.into(),
            hostname: hostname.into(),
            user_attrs: update,
        })
        .await
        .map(|_| ())
    }
    /// Changes passwords.
    pub async fn change_passwords(&self, users: Vec<UserSpec>) -> Result<()> {
        self.users(UsersRequest::ChangePasswords { users })
            .await
            .map(|_| ())
    }
}
