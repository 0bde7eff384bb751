//! Users and root of Redis: the [`UsersFacet`] and [`RootFacet`] of [`Redis`], as ACL users kept in the ACL
//! file (`ACL SAVE` after each change). Redis has no databases facet: users with databases are refused (422).

use async_trait::async_trait;

use trove_core::model::{
    validate_password, validate_user_name, Manager, Secret, UserSpec, UserUpdate,
};
use trove_core::ports::{RootFacet, UserInfo, UsersFacet};
use trove_core::{Error, Result};

use super::Redis;

/// Permissions of users created through the API: every key and channel, every command but administration.
const USER_RULES: &[&str] = &["~*", "&*", "+@all", "-@admin"];

impl Redis {
    pub(super) async fn acl(&self, args: &[&str]) -> Result<redis::Value> {
        let mut c = self.connect_admin().await?;
        let mut cmd = redis::cmd("ACL");
        for a in args {
            cmd.arg(*a);
        }
        cmd.query_async(&mut c).await.map_err(|e| self.err(e))
    }

    async fn acl_save(&self) -> Result<()> {
        self.acl(&["SAVE"]).await.map(|_| ())
    }

    async fn require_user(&self, name: &str) -> Result<()> {
        if self.user_names().await?.iter().any(|n| n == name) {
            Ok(())
        } else {
            Err(Error::not_found("User", name))
        }
    }

    /// The rules of a user as `ACL LIST` shows them (password hashes as `#<sha256>`).
    async fn user_rules(&self, name: &str) -> Result<Vec<String>> {
        let mut c = self.connect_admin().await?;
        let lines: Vec<String> = redis::cmd("ACL")
            .arg("LIST")
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        lines
            .iter()
            .find_map(|l| {
                let mut parts = l.split(' ');
                (parts.next() == Some("user") && parts.next() == Some(name))
                    .then(|| parts.map(str::to_string).collect())
            })
            .ok_or_else(|| Error::not_found("User", name))
    }

    /// Creates ACL users; `strict` refuses existing ones (the API), otherwise they are set again (prepare).
    pub(super) async fn create_acl_users(&self, users: &[UserSpec], strict: bool) -> Result<()> {
        self.base.validate_users(users)?;
        if users.iter().any(|u| !u.databases.is_empty()) {
            return Err(Error::unprocessable(
                "Operation not supported for datastore redis: databases.",
            ));
        }
        if users.is_empty() {
            return Ok(());
        }
        if strict {
            let names = self.user_names().await?;
            if let Some(u) = users.iter().find(|u| names.contains(&u.name)) {
                return Err(Error::bad_request(format!(
                    "A user named '{}' already exists.",
                    u.name
                )));
            }
        }
        for u in users {
            let pw = format!(">{}", u.password.expose());
            let mut args = vec!["SETUSER", u.name.as_str(), "reset", "on", pw.as_str()];
            args.extend_from_slice(USER_RULES);
            self.acl(&args).await?;
        }
        self.acl_save().await
    }

    pub(super) fn check_user(&self, name: &str) -> Result<()> {
        validate_user_name(Manager::Redis, name)?;
        self.base.check_reserved(name)
    }

    async fn user_names(&self) -> Result<Vec<String>> {
        let mut c = self.connect_admin().await?;
        let names: Vec<String> = redis::cmd("ACL")
            .arg("USERS")
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(names)
    }
}

#[async_trait]
impl UsersFacet for Redis {
    async fn create_users(&self, users: &[UserSpec]) -> Result<()> {
        self.create_acl_users(users, true).await
    }

    async fn list_users(&self) -> Result<Vec<UserInfo>> {
        Ok(self
            .user_names()
            .await?
            .into_iter()
            .filter(|n| {
                !["os_admin", "default", super::cluster::CLUSTER_USER].contains(&n.as_str())
            })
            .map(|name| UserInfo {
                name,
                host: "%".into(),
                databases: Vec::new(),
            })
            .collect())
    }

    async fn delete_user(&self, name: &str, _host: &str) -> Result<()> {
        self.check_user(name)?;
        self.require_user(name).await?;
        self.acl(&["DELUSER", name]).await?;
        self.acl_save().await
    }

    async fn update_user(&self, name: &str, _host: &str, update: &UserUpdate) -> Result<()> {
        self.check_user(name)?;
        if let Some(n) = &update.name {
            self.check_user(n)?;
        }
        if update.host.as_deref().is_some_and(|h| h != "%") {
            return Err(Error::bad_request(
                "Redis users have no host; only '%' is accepted.",
            ));
        }
        if let Some(p) = &update.password {
            validate_password(p)?;
        }
        let names = self.user_names().await?;
        if !names.iter().any(|n| n == name) {
            return Err(Error::not_found("User", name));
        }
        let mut current = name.to_string();
        if let Some(new) = update.name.as_deref().filter(|n| *n != name) {
            if names.iter().any(|n| n == new) {
                return Err(Error::bad_request(format!(
                    "A user named '{new}' already exists."
                )));
            }
            // Redis cannot rename: copy the user's rules (password hashes included) to the new name.
            let rules = self.user_rules(name).await?;
            let mut args = vec!["SETUSER", new, "reset"];
            args.extend(rules.iter().map(String::as_str));
            self.acl(&args).await?;
            self.acl(&["DELUSER", name]).await?;
            current = new.to_string();
        }
        if let Some(p) = &update.password {
            let pw = format!(">{}", p.expose());
            self.acl(&["SETUSER", current.as_str(), "resetpass", pw.as_str()])
                .await?;
        }
        self.acl_save().await
    }

    async fn change_passwords(&self, users: &[UserSpec]) -> Result<()> {
        self.base.validate_users(users)?;
        for u in users {
            self.require_user(&u.name).await?;
        }
        for u in users {
            let pw = format!(">{}", u.password.expose());
            self.acl(&["SETUSER", u.name.as_str(), "resetpass", pw.as_str()])
                .await?;
        }
        self.acl_save().await
    }
}

#[async_trait]
impl RootFacet for Redis {
    async fn enable_root(&self, password: Option<Secret>) -> Result<Secret> {
        let pw = password.unwrap_or_else(|| Secret::generate(24));
        validate_password(&pw)?;
        let p = format!(">{}", pw.expose());
        self.acl(&[
            "SETUSER",
            "default",
            "reset",
            "on",
            p.as_str(),
            "~*",
            "&*",
            "+@all",
        ])
        .await?;
        self.acl_save().await?;
        Ok(pw)
    }

    async fn disable_root(&self) -> Result<()> {
        self.acl(&["SETUSER", "default", "reset", "off", "-@all"])
            .await?;
        self.acl_save().await
    }
}
