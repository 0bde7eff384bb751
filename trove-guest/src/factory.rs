//! Picking a strategy by manager, and finding out which engines this machine has.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use trove_core::model::Manager;
use trove_core::ports::{DatastoreStrategy, DynBackupStore, StrategyContext, StrategyFactory};
use trove_core::{Error, Result};

use crate::common::EngineConfig;
use crate::engine::ProcessStrategy;
use crate::mysql::{Mysql, MysqlBinaries};
use crate::postgres::{Postgres, PostgresBinaries};
use crate::redis::{find_redis_server, Redis};

/// Builds the real-engine strategy of an instance from its datastore version's manager.
///
/// Directory layout of an instance (from its [`StrategyContext`]): `<server_dir>/guest/` (control plane only:
/// admin secret, recorded state), `<server_dir>/engine/` (engine user: rendered config, pid file, logs, socket),
/// `<volume>/data/` (engine data). The datastore version's `image`, when not empty, is the directory holding the
/// engine's binaries.
#[derive(Debug, Clone, Default)]
pub struct EngineStrategyFactory {
    config: EngineConfig,
    backups: Option<DynBackupStore>,
}

impl EngineStrategyFactory {
    /// A factory whose strategies run engines as `config` says.
    pub fn new(config: EngineConfig) -> EngineStrategyFactory {
        EngineStrategyFactory {
            config,
            backups: None,
        }
    }

    /// Strategies back up into (and restore from) `store`; without one they offer no backups.
    pub fn with_backup_store(mut self, store: DynBackupStore) -> EngineStrategyFactory {
        self.backups = Some(store);
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }
}

impl StrategyFactory for EngineStrategyFactory {
    fn strategy(&self, ctx: &StrategyContext) -> Result<Arc<dyn DatastoreStrategy>> {
        match ctx.datastore_version.manager {
            m @ (Manager::Mysql | Manager::Mariadb) => Ok(Arc::new(ProcessStrategy::new(
                Mysql::new(m, ctx, &self.config)?,
                self.backups.clone(),
            ))),
            Manager::Postgresql => Ok(Arc::new(ProcessStrategy::new(
                Postgres::new(ctx, &self.config)?,
                self.backups.clone(),
            ))),
            Manager::Redis => Ok(Arc::new(ProcessStrategy::new(
                Redis::new(ctx, &self.config)?,
                self.backups.clone(),
            ))),
            m @ (Manager::Mongodb | Manager::Cassandra) => Err(Error::not_implemented(format!(
                "No engine strategy for datastore manager {m}: its server cannot run on this host."
            ))),
        }
    }
}

/// An engine found on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectedEngine {
    /// The manager that runs it.
    pub manager: Manager,
    /// Major.minor version of the engine binaries, e.g. `10.11`, `15`, `7.0`.
    pub version: String,
    /// The full version string the binary reports.
    pub full_version: String,
    /// Directory of the server binary (suitable as the datastore version's `image`).
    pub bin_dir: PathBuf,
    /// What serves it, when that is not obvious (`mysql` is served by MariaDB binaries).
    pub note: Option<String>,
}

/// What [`detect_engines`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineDetection {
    /// Engines that can run here.
    pub found: Vec<DetectedEngine>,
    /// Managers that cannot, with the reason.
    pub missing: Vec<(Manager, String)>,
}

fn version_output(bin: &Path, arg: &str) -> Option<String> {
    let out = std::process::Command::new(bin).arg(arg).output().ok()?;
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    let s = s.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The first `a.b[.c]` number in `text`, cut to `parts` components.
fn version_number(text: &str, after: &str, parts: usize) -> Option<String> {
    let start = text.find(after).map_or(0, |i| i + after.len());
    let rest = &text[start..];
    let begin = rest.find(|c: char| c.is_ascii_digit())?;
    let num: String = rest[begin..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let cut: Vec<&str> = num
        .split('.')
        .filter(|p| !p.is_empty())
        .take(parts)
        .collect();
    (!cut.is_empty()).then(|| cut.join("."))
}

fn parent_dir(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Finds the engines installed on this machine (PATH and the Debian locations), for registering datastores at
/// first start and reporting the missing ones.
pub fn detect_engines() -> EngineDetection {
    let mut d = EngineDetection::default();
    match MysqlBinaries::find(None) {
        Ok(b) => {
            let full = version_output(&b.server, "--version").unwrap_or_default();
            let version = version_number(&full, "Ver", 2).unwrap_or_default();
            let dir = parent_dir(&b.server);
            let is_mariadb = full.contains("MariaDB");
            d.found.push(DetectedEngine {
                manager: Manager::Mariadb,
                version: version.clone(),
                full_version: full.clone(),
                bin_dir: dir.clone(),
                note: None,
            });
            d.found.push(DetectedEngine {
                manager: Manager::Mysql,
                version,
                full_version: full,
                bin_dir: dir,
                note: is_mariadb.then(|| {
                    "served by MariaDB binaries (Oracle MySQL is not installed)".to_string()
                }),
            });
        }
        Err(e) => {
            d.missing.push((Manager::Mariadb, e.to_string()));
            d.missing.push((Manager::Mysql, e.to_string()));
        }
    }
    match PostgresBinaries::find(None) {
        Ok(b) => {
            let full = version_output(&b.postgres, "--version").unwrap_or_default();
            d.found.push(DetectedEngine {
                manager: Manager::Postgresql,
                version: version_number(&full, "(PostgreSQL)", 1).unwrap_or_default(),
                full_version: full,
                bin_dir: parent_dir(&b.postgres),
                note: None,
            });
        }
        Err(e) => d.missing.push((Manager::Postgresql, e.to_string())),
    }
    match find_redis_server(None) {
        Ok(b) => {
            let full = version_output(&b, "--version").unwrap_or_default();
            d.found.push(DetectedEngine {
                manager: Manager::Redis,
                version: version_number(&full, "v=", 2).unwrap_or_default(),
                full_version: full,
                bin_dir: parent_dir(&b),
                note: None,
            });
        }
        Err(e) => d.missing.push((Manager::Redis, e.to_string())),
    }
    for m in [Manager::Mongodb, Manager::Cassandra] {
        d.missing
            .push((m, format!("no {m} server can run on this host")));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            version_number(
                "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian",
                "Ver",
                2
            )
            .as_deref(),
            Some("10.11")
        );
        assert_eq!(
            version_number("postgres (PostgreSQL) 15.20 (Debian)", "(PostgreSQL)", 1).as_deref(),
            Some("15")
        );
        assert_eq!(
            version_number("Redis server v=7.0.15 sha=0", "v=", 2).as_deref(),
            Some("7.0")
        );
    }
}
