//! The `redis` strategy (`redis-server`).
//!
//! Memory: `maxmemory` = 50 % of the flavor RAM (at least 16 MB) with `noeviction`, leaving room for the fork of
//! a background save. Persistence is the append-only file (`appendonly yes`, no RDB save points). Users are ACL
//! users kept in an ACL file (`ACL SAVE` after each change, so they survive restarts); the `default` user is off
//! until root is enabled, which turns it on with the root password. Redis has no databases in Trove's sense: those
//! calls answer "not supported" (422).

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, ConnectionInfo, ProtocolVersion, RedisConnectionInfo};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Arc;

use trove_core::model::{
    validate_password, validate_user_name, Manager, Secret, SslChange, SslChangeResult, SslView,
    UserSpec, UserUpdate,
};
use trove_core::ports::{
    DatastoreStrategy, EngineStatus, FsStats, PrepareRequest, StrategyContext, UserInfo,
};
use trove_core::state::ServiceStatus;
use trove_core::{Error, Result};

mod tls;

use crate::base::Base;
use crate::common::{
    check_override_key, down_status, find_program, image_dir, override_value, read_pid, share_mb,
    spawn_detached, status, wait_ready, write_engine_file, EngineConfig,
};

/// Permissions of users created through the API: every key and channel, every command but administration.
const USER_RULES: &[&str] = &["~*", "&*", "+@all", "-@admin"];

/// The strategy for one Redis instance.
pub struct RedisStrategy {
    base: Base,
    server: PathBuf,
}

impl std::fmt::Debug for RedisStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStrategy")
            .field("port", &self.base.ctx.port)
            .finish()
    }
}

/// Finds `redis-server` in `dir`, or in PATH and the Debian locations.
pub fn find_redis_server(dir: Option<&std::path::Path>) -> Result<PathBuf> {
    find_program(&["redis-server"], dir, &[]).ok_or_else(|| {
        Error::backend(
            "guest",
            format!(
                "redis-server not found in {}",
                dir.map_or("PATH or /usr/bin".to_string(), |d| d.display().to_string())
            ),
            false,
        )
    })
}

impl RedisStrategy {
    /// A strategy for the instance in `ctx`.
    pub fn new(ctx: &StrategyContext, cfg: &EngineConfig) -> Result<RedisStrategy> {
        let base = Base::new(Manager::Redis, ctx, cfg)?;
        let server = find_redis_server(image_dir(ctx).as_deref())?;
        Ok(RedisStrategy { base, server })
    }

    /// The strategy as a trait object.
    pub fn into_dyn(self) -> Arc<dyn DatastoreStrategy> {
        Arc::new(self)
    }

    fn conf_path(&self) -> PathBuf {
        self.base.layout.engine_dir.join("redis.conf")
    }
    fn acl_path(&self) -> PathBuf {
        self.base.layout.engine_dir.join("users.acl")
    }
    /// What the engine's command line contains (tells our engine from a process that reused its pid).
    fn idents(&self) -> Vec<String> {
        vec![
            self.conf_path().display().to_string(),
            format!(":{}", self.base.ctx.port),
        ]
    }

    fn pid_path(&self) -> PathBuf {
        self.base.layout.engine_dir.join("redis.pid")
    }
    fn log_path(&self) -> PathBuf {
        self.base.layout.engine_dir.join("redis.log")
    }

    fn err(&self, e: redis::RedisError) -> Error {
        if e.is_io_error()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.is_connection_dropped()
        {
            Error::backend("redis", e, true)
        } else {
            Error::Guest {
                instance_id: self.base.ctx.instance_id,
                message: e.to_string(),
            }
        }
    }

    async fn connect_admin(&self) -> Result<MultiplexedConnection> {
        let secret = self.base.layout.admin_secret()?.ok_or_else(|| {
            Error::backend(
                "redis",
                "the instance has no admin account yet (not prepared)",
                false,
            )
        })?;
        // The unix socket when the engine has one (TLS may have closed the plain port).
        let socket = self.admin_socket();
        let addr = if socket.exists() {
            ConnectionAddr::Unix(socket)
        } else {
            ConnectionAddr::Tcp(self.base.connect_host(), self.base.ctx.port)
        };
        let info = ConnectionInfo {
            addr,
            redis: RedisConnectionInfo {
                db: 0,
                username: Some("os_admin".into()),
                password: Some(secret.expose().to_string()),
                protocol: ProtocolVersion::RESP2,
            },
        };
        let client = redis::Client::open(info).map_err(|e| self.err(e))?;
        client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| self.err(e))
    }

    async fn acl(&self, args: &[&str]) -> Result<redis::Value> {
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

    fn render_config(&self) -> Result<()> {
        let st = self.base.layout.state()?;
        let l = &self.base.layout;
        let bind = if self.base.ctx.bind_address.is_empty() {
            "127.0.0.1"
        } else {
            &self.base.ctx.bind_address
        };
        let mut conf = format!(
            "# Rendered by trove-guest for {mem} MB of RAM; do not edit (apply a configuration group instead).\n\
             bind {bind}\n\
             port {port}\n\
             protected-mode no\n\
             daemonize no\n\
             dir \"{data}\"\n\
             pidfile \"{pid}\"\n\
             logfile \"{log}\"\n\
             aclfile \"{acl}\"\n\
             appendonly yes\n\
             save \"\"\n\
             # 50 % of the flavor RAM\n\
             maxmemory {maxmem}mb\n\
             maxmemory-policy noeviction\n",
            mem = st.memory_mb,
            port = self.base.ctx.port,
            data = l.data_dir.display(),
            pid = self.pid_path().display(),
            log = self.log_path().display(),
            acl = self.acl_path().display(),
            maxmem = share_mb(st.memory_mb, 0.5, 16),
        );
        if !st.overrides.is_empty() {
            conf.push_str("# configuration overrides\n");
            for (k, v) in &st.overrides {
                conf.push_str(&format!("{k} \"{}\"\n", override_value(k, v)?));
            }
        }
        conf.push_str(&self.tls_conf()?);
        write_engine_file(&self.conf_path(), &conf, self.base.run_as)
    }

    /// The first ACL file: `default` off, `os_admin` with every right (password stored hashed).
    fn ensure_acl_file(&self) -> Result<()> {
        if self.acl_path().is_file() {
            return Ok(());
        }
        let secret = self.base.layout.ensure_admin_secret()?;
        let hash = hex::encode(Sha256::digest(secret.expose().as_bytes()));
        let text = format!(
            "user default off resetpass resetkeys resetchannels -@all\n\
             user os_admin on #{hash} ~* &* +@all\n"
        );
        write_engine_file(&self.acl_path(), &text, self.base.run_as)
    }

    async fn start_engine(&self) -> Result<()> {
        self.base.layout.update_state(|s| s.running = true)?;
        let pid = match self.base.engine_pid(&self.pid_path(), &self.idents()) {
            Some(pid) => pid,
            None => {
                let _ = std::fs::remove_file(self.pid_path());
                self.render_config()?;
                self.ensure_acl_file()?;
                let conf = self.conf_path().display().to_string();
                spawn_detached(
                    &self.server,
                    &[OsStr::new(&conf)],
                    self.base.run_as,
                    &self.base.layout.engine_dir,
                    &self.base.layout.engine_dir.join("redis.out"),
                )?
            }
        };
        self.base.record_pid(pid)?;
        wait_ready(
            "redis-server",
            self.base.cfg.ready_timeout,
            || Some(pid),
            &self.log_path(),
            || self.ping(),
        )
        .await
    }

    async fn ping(&self) -> Result<()> {
        let mut c = self.connect_admin().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
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
    async fn create_acl_users(&self, users: &[UserSpec], strict: bool) -> Result<()> {
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

    fn check_user(&self, name: &str) -> Result<()> {
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
impl DatastoreStrategy for RedisStrategy {
    fn manager(&self) -> Manager {
        Manager::Redis
    }

    async fn prepare(&self, req: &PrepareRequest) -> Result<()> {
        if !req.databases.is_empty() {
            return Err(Error::unprocessable(
                "Operation not supported for datastore redis: databases.",
            ));
        }
        self.base.validate_users(&req.users)?;
        for k in req.overrides.keys() {
            check_override_key(k)?;
        }
        if let Some(p) = &req.root_password {
            validate_password(p)?;
        }
        self.base.layout.create(self.base.run_as)?;
        self.base.layout.update_state(|s| {
            s.memory_mb = req.memory_mb;
            if let Some(gb) = req.volume_size_gb {
                s.volume_size_gb = gb;
            }
            if !req.overrides.is_empty() {
                s.overrides = req.overrides.clone();
            }
        })?;
        self.start_engine().await?;
        self.base.layout.update_state(|s| s.prepared = true)?;
        self.create_acl_users(&req.users, false).await?;
        if let Some(p) = &req.root_password {
            self.enable_root(Some(p.clone())).await?;
        }
        Ok(())
    }

    async fn start(&self) -> Result<()> {
        self.start_engine().await
    }

    async fn stop(&self) -> Result<()> {
        // SIGTERM makes Redis flush the append-only file and exit cleanly.
        self.base
            .stop_process(&self.pid_path(), &self.idents(), "TERM")
            .await
    }

    async fn status(&self) -> EngineStatus {
        let st = match self.base.layout.state() {
            Ok(s) => s,
            Err(e) => return status(ServiceStatus::Unknown, Some(e.to_string())),
        };
        match self.base.engine_pid(&self.pid_path(), &self.idents()) {
            Some(_) if !st.prepared => status(ServiceStatus::Building, None),
            Some(_) => match tokio::time::timeout(self.base.cfg.probe_timeout, self.ping()).await {
                Ok(Ok(())) => status(ServiceStatus::Healthy, None),
                Ok(Err(e)) => status(
                    ServiceStatus::Blocked,
                    Some(format!("the engine runs but does not answer: {e}")),
                ),
                Err(_) => status(
                    ServiceStatus::Blocked,
                    Some("the engine runs but does not answer in time".into()),
                ),
            },
            None => down_status(&st, read_pid(&self.pid_path()).or(st.pid), &self.log_path()),
        }
    }

    async fn filesystem_stats(&self) -> Result<FsStats> {
        self.base.fs_stats().await
    }

    async fn apply_flavor(&self, memory_mb: u32) -> Result<()> {
        let st = self.base.layout.update_state(|s| s.memory_mb = memory_mb)?;
        self.render_config()?;
        if st.running {
            self.stop().await?;
            self.start().await?;
        }
        Ok(())
    }

    async fn resize_fs(&self, size_gb: u32) -> Result<()> {
        self.base.record_volume_size(size_gb)
    }

    async fn create_users(&self, users: &[UserSpec]) -> Result<()> {
        self.create_acl_users(users, true).await
    }

    async fn list_users(&self) -> Result<Vec<UserInfo>> {
        Ok(self
            .user_names()
            .await?
            .into_iter()
            .filter(|n| n != "os_admin" && n != "default")
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

    async fn apply_overrides(&self, overrides: &Map<String, Value>) -> Result<bool> {
        // See `crate::overrides`: stored and rendered first, then changed parameters applied live where possible.
        let changed = crate::overrides::begin(&self.base, overrides)?;
        self.render_config()?;
        let restart_keys = if changed.is_empty() {
            Vec::new()
        } else {
            let conf = std::fs::read_to_string(self.conf_path()).map_err(|e| {
                Error::backend(
                    "redis",
                    format!("reading the rendered config failed: {e}"),
                    false,
                )
            })?;
            // An engine that does not answer starts with the rendered file.
            match self.connect_admin().await {
                Ok(mut c) => crate::overrides::redis_live(&mut c, &conf, &changed).await?,
                Err(_) => changed,
            }
        };
        crate::overrides::finish(&self.base, restart_keys)
    }

    async fn ssl_show(&self, include_certificate: bool) -> Result<SslView> {
        crate::tls::show(&self.base, include_certificate)
    }

    async fn ssl_action(&self, change: &SslChange) -> Result<SslChangeResult> {
        crate::tls::action(self, change).await
    }

    async fn ssl_rollback(&self) -> Result<SslChangeResult> {
        crate::tls::rollback(self).await
    }
}
