//! The `redis` engine (`redis-server`).
//!
//! Memory: `maxmemory` = 50 % of the flavor RAM (at least 16 MB) with `noeviction`, leaving room for the fork of
//! a background save. Persistence is the append-only file (`appendonly yes`, no RDB save points). Users are ACL
//! users kept in an ACL file (`ACL SAVE` after each change, so they survive restarts); the `default` user is off
//! until root is enabled, which turns it on with the root password. Redis has no databases in Trove's sense: those
//! calls answer "not supported" (422).

//!
//! Users and root are in [`admin`], the configuration in [`config`], TLS (and the admin socket) in [`tls`],
//! backups in [`backup`], Redis Cluster membership in [`cluster`].

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, ConnectionInfo, ProtocolVersion, RedisConnectionInfo};
use std::path::{Path, PathBuf};

use trove_core::model::Manager;
use trove_core::ports::{PrepareRequest, RootFacet, StrategyContext, UsersFacet};
use trove_core::{Error, Result};

mod admin;
mod backup;
mod cluster;
mod config;
mod replication;
mod tls;

use crate::backup::EngineBackup;
use crate::base::Base;
use crate::common::{find_program, image_dir, write_engine_file, EngineConfig};
use crate::engine::{Engine, Spawn};

/// One Redis instance.
pub(crate) struct Redis {
    base: Base,
    server: PathBuf,
    /// The previous reading of the cluster facet's `load` (its rates are taken between readings).
    load_prev: std::sync::Mutex<Option<cluster::LoadSample>>,
}

/// Finds `redis-server` in `dir`, or in PATH and the Debian locations.
pub(crate) fn find_redis_server(dir: Option<&Path>) -> Result<PathBuf> {
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

impl Redis {
    /// The engine of the instance in `ctx`.
    pub fn new(ctx: &StrategyContext, cfg: &EngineConfig) -> Result<Redis> {
        let base = Base::new(Manager::Redis, ctx, cfg)?;
        let server = find_redis_server(image_dir(ctx).as_deref())?;
        Ok(Redis {
            base,
            server,
            load_prev: std::sync::Mutex::new(None),
        })
    }

    fn conf_path(&self) -> PathBuf {
        self.base.layout.engine_dir.join("redis.conf")
    }

    fn acl_path(&self) -> PathBuf {
        self.base.layout.engine_dir.join("users.acl")
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
        let secret = self.base.layout.required_admin_secret("redis")?;
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

    /// The first ACL file: `default` off, `os_admin` with every right (password stored hashed).
    fn ensure_acl_file(&self) -> Result<()> {
        if self.acl_path().is_file() {
            return Ok(());
        }
        let secret = self.base.layout.ensure_admin_secret()?;
        let text = format!(
            "user default off resetpass resetkeys resetchannels -@all\n{}\n",
            backup::admin_acl_line(secret.expose())
        );
        write_engine_file(&self.acl_path(), &text, self.base.run_as)
    }

    async fn ping(&self) -> Result<()> {
        let mut c = self.connect_admin().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[async_trait]
impl Engine for Redis {
    const PROCESS: &'static str = "redis-server";
    /// SIGTERM makes Redis flush the append-only file and exit cleanly.
    const STOP_SIGNAL: &'static str = "TERM";

    fn base(&self) -> &Base {
        &self.base
    }

    fn pid_file(&self) -> PathBuf {
        self.base.layout.engine_dir.join("redis.pid")
    }

    fn log_file(&self) -> PathBuf {
        self.base.layout.engine_dir.join("redis.log")
    }

    fn idents(&self) -> Vec<String> {
        vec![
            self.conf_path().display().to_string(),
            format!(":{}", self.base.ctx.port),
        ]
    }

    fn spawn(&self) -> Result<Spawn> {
        self.ensure_acl_file()?;
        Ok(Spawn {
            program: self.server.clone(),
            args: vec![self.conf_path().into_os_string()],
            output: self.base.layout.engine_dir.join("redis.out"),
        })
    }

    async fn answers(&self) -> Result<()> {
        self.ping().await
    }

    async fn seed(&self, req: &PrepareRequest) -> Result<()> {
        self.create_acl_users(&req.users, false).await
    }

    fn users(&self) -> Option<&dyn UsersFacet> {
        Some(self)
    }

    fn root(&self) -> Option<&dyn RootFacet> {
        Some(self)
    }

    fn replication(&self) -> Option<&dyn trove_core::ports::ReplicationFacet> {
        Some(self)
    }

    fn cluster(&self) -> Option<&dyn trove_core::ports::ClusterFacet> {
        Some(self)
    }

    fn backup_tool(&self) -> Option<&dyn EngineBackup> {
        Some(self)
    }
}
