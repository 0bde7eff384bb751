//! Database users of an instance (`/instances/{id}/users...`), answered by the instance's guest.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiService, Page, PageRequest};
use crate::error::{Error, Result};
use crate::model::{
    validate_database_name, validate_host, validate_password, validate_user_name, Facet, Manager,
    UserSpec, UserUpdate,
};
use crate::policy::rules;
use crate::ports::{RequestContext, UserInfo};

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

impl ApiService {
    fn check_user(m: Manager, user: &UserRef) -> Result<()> {
        validate_user_name(m, &user.name)?;
        validate_host(&user.host)
    }

    /// The manager of the caller's instance `id` for a request that names `users`: `rule` must allow it, users
    /// must be manageable there, and at least one given.
    async fn users_request(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        rule: &str,
        users: &[UserSpec],
    ) -> Result<Manager> {
        let (_, m) = self
            .manage_data_instance(ctx, id, rule, Facet::Users, "users")
            .await?;
        if users.is_empty() {
            return Err(Error::bad_request("No users given."));
        }
        Ok(m)
    }

    /// Checks a user given in a request body: name, password and host (when given).
    fn check_user_spec(m: Manager, u: &UserSpec) -> Result<()> {
        validate_user_name(m, &u.name)?;
        validate_password(&u.password)?;
        match &u.host {
            Some(h) => validate_host(h),
            None => Ok(()),
        }
    }

    /// Checks a user to create: [`Self::check_user_spec`], and the names of the databases it is given.
    pub(super) fn check_new_user(m: Manager, u: &UserSpec) -> Result<()> {
        Self::check_user_spec(m, u)?;
        u.databases
            .iter()
            .try_for_each(|d| validate_database_name(m, d))
    }

    /// `GET /instances/{id}/users`.
    pub async fn list_users(&self, ctx: &RequestContext, id: Uuid) -> Result<Vec<UserInfo>> {
        self.manage_data_instance(ctx, id, rules::USER_INDEX, Facet::Users, "users")
            .await?;
        self.guest(id).list_users().await
    }

    /// `GET /instances/{id}/users`, one page, by `name@host` (the marker names the last user of the previous
    /// page).
    pub async fn list_users_page(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<UserInfo>> {
        let users = self.list_users(ctx, id).await?;
        page.by_key(self.config.page_size, users, |u| {
            format!("{}@{}", u.name, u.host)
        })
    }

    /// `POST /instances/{id}/users`.
    pub async fn create_users(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        users: Vec<UserSpec>,
    ) -> Result<()> {
        let m = self
            .users_request(ctx, id, rules::USER_CREATE, &users)
            .await?;
        for u in &users {
            Self::check_new_user(m, u)?;
        }
        self.guest(id).create_users(users.clone()).await?;
        self.on_acl_replicas(m, id, |g| {
            let users = users.clone();
            async move { g.create_users(users).await }
        })
        .await
    }

    /// Redis keeps its ACL users apart from the data it replicates: a change of users on an instance is made on
    /// each of its running replicas too (a replica built later takes them from its seed backup), and on a member
    /// of a Redis cluster on every other running member (a client of the cluster is redirected to any of them;
    /// a member added by a later grow gets them from the grow workflow). Answers what failed, saying the change
    /// stands on the instance asked.
    async fn on_acl_replicas<F, Fut>(&self, m: Manager, id: Uuid, f: F) -> Result<()>
    where
        F: Fn(crate::rpc::GuestClient) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        if m != Manager::Redis {
            return Ok(());
        }
        let mut peers = self.replicas_of(id).await?;
        if let Some(cluster) = self
            .store
            .get_instance(id)
            .await?
            .and_then(|i| i.cluster_id)
        {
            peers.extend(
                crate::taskmanager::workflows::cluster::cluster_members(
                    self.store.as_ref(),
                    cluster,
                )
                .await?
                .into_iter()
                .filter(|p| p.id != id),
            );
        }
        for r in peers {
            if r.task != crate::state::TaskStatus::None {
                continue;
            }
            if let Err(e) = f(self.guest(r.id)).await {
                let what = if r.cluster_id.is_some() {
                    "the cluster's member"
                } else {
                    "its replica"
                };
                return Err(Error::unprocessable(format!(
                    "The users were changed on {id} but not on {what} {}: {e}. Repeat the request once it is \
                     running.",
                    r.id
                )));
            }
        }
        Ok(())
    }

    async fn find_user(&self, id: Uuid, user: &UserRef) -> Result<UserInfo> {
        self.guest(id)
            .list_users()
            .await?
            .into_iter()
            .find(|u| u.name == user.name && u.host == user.host)
            .ok_or_else(|| Error::not_found("User", format!("{}@{}", user.name, user.host)))
    }

    /// `GET /instances/{id}/users/{user}`.
    pub async fn show_user(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        user: &UserRef,
    ) -> Result<UserInfo> {
        let (_, m) = self
            .manage_data_instance(ctx, id, rules::USER_SHOW, Facet::Users, "users")
            .await?;
        Self::check_user(m, user)?;
        self.find_user(id, user).await
    }

    /// `PUT /instances/{id}/users/{user}`.
    pub async fn update_user(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        user: &UserRef,
        update: UserUpdate,
    ) -> Result<()> {
        let (_, m) = self
            .manage_data_instance(ctx, id, rules::USER_UPDATE, Facet::Users, "users")
            .await?;
        Self::check_user(m, user)?;
        if update.name.is_none() && update.password.is_none() && update.host.is_none() {
            return Err(Error::bad_request(
                "Give at least one of name, password and host.",
            ));
        }
        if let Some(n) = &update.name {
            validate_user_name(m, n)?;
        }
        if let Some(p) = &update.password {
            validate_password(p)?;
        }
        if let Some(h) = &update.host {
            validate_host(h)?;
        }
        self.find_user(id, user).await?;
        self.guest(id)
            .update_user(&user.name, &user.host, update.clone())
            .await?;
        self.on_acl_replicas(m, id, |g| {
            let update = update.clone();
            async move { g.update_user(&user.name, &user.host, update).await }
        })
        .await
    }

    /// `DELETE /instances/{id}/users/{user}`.
    pub async fn delete_user(&self, ctx: &RequestContext, id: Uuid, user: &UserRef) -> Result<()> {
        let (_, m) = self
            .manage_data_instance(ctx, id, rules::USER_DELETE, Facet::Users, "users")
            .await?;
        Self::check_user(m, user)?;
        self.find_user(id, user).await?;
        self.guest(id).delete_user(&user.name, &user.host).await?;
        self.on_acl_replicas(m, id, |g| async move {
            g.delete_user(&user.name, &user.host).await
        })
        .await
    }

    /// `PUT /instances/{id}/users`: change passwords.
    pub async fn change_passwords(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        users: Vec<UserSpec>,
    ) -> Result<()> {
        let m = self
            .users_request(ctx, id, rules::USER_UPDATE_ALL, &users)
            .await?;
        for u in &users {
            Self::check_user_spec(m, u)?;
        }
        let known = self.guest(id).list_users().await?;
        for u in &users {
            let host = u.host.clone().unwrap_or_else(|| "%".into());
            if !known.iter().any(|k| k.name == u.name && k.host == host) {
                return Err(Error::not_found("User", format!("{}@{host}", u.name)));
            }
        }
        self.guest(id).change_passwords(users.clone()).await?;
        self.on_acl_replicas(m, id, |g| {
            let users = users.clone();
            async move { g.change_passwords(users).await }
        })
        .await
    }

    /// `GET /instances/{id}/users/{user}/databases`.
    pub async fn list_user_access(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        user: &UserRef,
    ) -> Result<Vec<String>> {
        let (_, m) = self
            .manage_data_instance(ctx, id, rules::USER_ACCESS_INDEX, Facet::Users, "users")
            .await?;
        Self::check_user(m, user)?;
        Ok(self.find_user(id, user).await?.databases)
    }

    /// `PUT /instances/{id}/users/{user}/databases`.
    pub async fn grant_user_access(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        user: &UserRef,
        databases: Vec<String>,
    ) -> Result<()> {
        let (_, m) = self
            .manage_data_instance(
                ctx,
                id,
                rules::USER_ACCESS_UPDATE,
                Facet::Databases,
                "user access",
            )
            .await?;
        Self::check_user(m, user)?;
        for d in &databases {
            validate_database_name(m, d)?;
        }
        self.find_user(id, user).await?;
        self.guest(id)
            .grant_access(&user.name, &user.host, databases)
            .await
    }

    /// `DELETE /instances/{id}/users/{user}/databases/{db}`.
    pub async fn revoke_user_access(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        user: &UserRef,
        database: &str,
    ) -> Result<()> {
        let (_, m) = self
            .manage_data_instance(
                ctx,
                id,
                rules::USER_ACCESS_DELETE,
                Facet::Databases,
                "user access",
            )
            .await?;
        Self::check_user(m, user)?;
        validate_database_name(m, database)?;
        self.find_user(id, user).await?;
        self.guest(id)
            .revoke_access(&user.name, &user.host, database)
            .await
    }
}
