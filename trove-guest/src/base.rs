//! The part of a strategy that does not depend on the engine: context, layout, identity, fs stats.

use std::path::Path;

use trove_core::model::{
    validate_database_name, validate_host, validate_password, validate_user_name, Manager,
};
use trove_core::model::{DatabaseSpec, UserSpec};
use trove_core::ports::{FsStats, StrategyContext};
use trove_core::{Error, Result};

use crate::common::{pid_alive, read_pid, EngineConfig, Layout, RunAs};

const GIB: u64 = 1024 * 1024 * 1024;

/// Instance-wide facts every strategy holds.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub manager: Manager,
    pub ctx: StrategyContext,
    pub layout: Layout,
    pub run_as: RunAs,
    pub cfg: EngineConfig,
}

impl Base {
    pub fn new(manager: Manager, ctx: &StrategyContext, cfg: &EngineConfig) -> Result<Base> {
        Ok(Base {
            manager,
            ctx: ctx.clone(),
            layout: Layout::new(ctx),
            run_as: RunAs::resolve(cfg.run_as.as_deref())?,
            cfg: cfg.clone(),
        })
    }

    /// The address the control plane connects to: the bind address, loopback for wildcard binds.
    pub fn connect_host(&self) -> String {
        match self.ctx.bind_address.trim() {
            "" | "0.0.0.0" | "::" | "*" => "127.0.0.1".to_string(),
            a => a.to_string(),
        }
    }

    /// The engine's pid: from its pid file, else the pid recorded at spawn (the engine may not have written its
    /// pid file yet), and only when that process is alive and its command line names this instance (`idents`), so
    /// a pid reused by another process after a crash or a host reboot is not mistaken for the engine.
    pub fn engine_pid(&self, pid_file: &Path, idents: &[String]) -> Option<u32> {
        let ours = |p: u32| pid_alive(p) && trove_os::cmdline_contains(p, idents);
        read_pid(pid_file)
            .filter(|p| ours(*p))
            .or_else(|| self.layout.state().ok()?.pid.filter(|p| ours(*p)))
    }

    /// Records the pid of a freshly spawned engine.
    pub fn record_pid(&self, pid: u32) -> Result<()> {
        self.layout.update_state(|s| s.pid = Some(pid)).map(|_| ())
    }

    /// Stops the engine with `signal` (its clean shutdown signal), killing it when it does not go within the stop
    /// timeout.
    pub async fn stop_process(
        &self,
        pid_file: &Path,
        idents: &[String],
        signal: &str,
    ) -> Result<()> {
        self.layout.update_state(|s| s.running = false)?;
        let Some(pid) = self.engine_pid(pid_file, idents) else {
            return Ok(());
        };
        let how = trove_os::terminate(pid, signal, self.cfg.stop_timeout)
            .await
            .map_err(|e| Error::backend("guest", e, false))?;
        match how {
            trove_os::Termination::Ended => Ok(()),
            trove_os::Termination::Killed => {
                tracing::warn!(instance = %self.ctx.instance_id, pid, "engine did not stop in time; killed it");
                Ok(())
            }
            trove_os::Termination::Survived => Err(Error::backend(
                "guest",
                format!("engine process {pid} does not stop"),
                false,
            )),
        }
    }

    /// Volume usage against the recorded limit (the filesystem's size when no limit is recorded).
    pub async fn fs_stats(&self) -> Result<FsStats> {
        let dir = self.layout.volume_dir.clone();
        let limit_gb = self.layout.state()?.volume_size_gb;
        tokio::task::spawn_blocking(move || {
            let used = trove_os::dir_usage(&dir);
            let total = if limit_gb > 0 {
                u64::from(limit_gb) * GIB
            } else {
                fs_size(&dir).unwrap_or(used)
            };
            Ok(FsStats {
                used_bytes: used,
                total_bytes: total,
            })
        })
        .await
        .map_err(|e| Error::backend("guest", e, false))?
    }

    /// Records a new volume limit.
    pub fn record_volume_size(&self, size_gb: u32) -> Result<()> {
        self.layout
            .update_state(|s| s.volume_size_gb = size_gb)
            .map(|_| ())
    }

    /// An SQL engine's error: what the engine refused (its message, for the caller), or a transient backend
    /// error (connection, protocol).
    pub fn sql_error(&self, backend: &'static str, e: sqlx::Error) -> Error {
        match e {
            sqlx::Error::Database(d) => Error::Guest {
                instance_id: self.ctx.instance_id,
                message: d.message().to_string(),
            },
            other => Error::backend(backend, other, true),
        }
    }

    /// Validates names before anything reaches the engine.
    pub fn validate_databases(&self, dbs: &[DatabaseSpec]) -> Result<()> {
        for db in dbs {
            validate_database_name(self.manager, &db.name)?;
            for v in [&db.character_set, &db.collate].into_iter().flatten() {
                check_charset(v)?;
            }
        }
        Ok(())
    }

    /// Validates users before anything reaches the engine.
    pub fn validate_users(&self, users: &[UserSpec]) -> Result<()> {
        for u in users {
            validate_user_name(self.manager, &u.name)?;
            validate_password(&u.password)?;
            if let Some(h) = &u.host {
                validate_host(h)?;
            }
            for d in &u.databases {
                validate_database_name(self.manager, d)?;
            }
            self.check_reserved(&u.name)?;
        }
        Ok(())
    }

    /// Refuses names the guest keeps for itself.
    pub fn check_reserved(&self, name: &str) -> Result<()> {
        let reserved: &[&str] = match self.manager {
            Manager::Postgresql => &["os_admin", "os_repl", "postgres", "root"],
            Manager::Redis => &["os_admin", "os_repl", "os_cluster", "default"],
            _ => &[
                "os_admin",
                "os_repl",
                "os_sst",
                "root",
                "mariadb.sys",
                "mysql",
            ],
        };
        if reserved.contains(&name) {
            return Err(Error::bad_request(format!(
                "The user name '{name}' is reserved."
            )));
        }
        Ok(())
    }
}

/// Character set and collation names: letters, digits, `_`, `-`, `.`.
pub(crate) fn check_charset(v: &str) -> Result<()> {
    if v.is_empty()
        || v.len() > 64
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(Error::bad_request(format!(
            "'{}' is not a valid character set or collation name.",
            v.escape_default()
        )));
    }
    Ok(())
}

/// Size of the filesystem holding `dir`, from `df` (no `unsafe` statvfs).
fn fs_size(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=size"])
        .arg(dir)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}
