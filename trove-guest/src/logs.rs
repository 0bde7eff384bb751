//! Guest logs of the real engines: where each engine writes its exposed logs, how they are turned on and off,
//! and where the guest remembers their state. The bookkeeping (status, publish, discard) is
//! [`trove_core::guest_log`]'s; this module is its [`LogEngine`] for MariaDB and PostgreSQL.
//!
//! | manager | log | file | on / off |
//! |---|---|---|---|
//! | `mysql`, `mariadb` | `general` | `<engine_dir>/general.log` | `SET GLOBAL general_log`, and `general_log = 1` in the rendered `my.cnf` |
//! | `mysql`, `mariadb` | `slow_query` | `<engine_dir>/slow_query.log` | `SET GLOBAL slow_query_log`, and `slow_query_log = 1` in `my.cnf` |
//! | `postgresql` | `general` | the server log `<engine_dir>/postgresql.log` | `ALTER SYSTEM SET log_statement = 'all'` / `'none'`, then `pg_reload_conf()`; the guest's own role `os_admin` is kept out (`ALTER ROLE ... SET log_statement = 'none'`) |
//!
//! Every change applies at once and survives a restart of the engine (MariaDB: the state is rendered into the
//! configuration at each start; PostgreSQL: `ALTER SYSTEM` writes `postgresql.auto.conf`). The state of each log
//! (on, bytes published, next part) is kept in `<server_dir>/guest/logs.json`.

use async_trait::async_trait;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use trove_core::guest_log::LogEngine;
use trove_core::model::{exposed_log_type, LogState, Manager};
use trove_core::ports::ByteStream;
use trove_core::{Error, Result};

use crate::base::Base;
use crate::common::{io_err, write_private, Layout, BACKEND};

/// Size of the chunks a log is read in when it is published.
const CHUNK: u64 = 256 * 1024;
/// How long PostgreSQL may take to load a changed setting after `pg_reload_conf()`.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

/// How the engine is reached and which file is its server log.
#[derive(Debug, Clone)]
enum Engine {
    Mysql { socket: PathBuf },
    Postgres { socket_dir: PathBuf, port: u16 },
}

/// The guest logs of one real engine.
#[derive(Debug, Clone)]
pub(crate) struct EngineLogs {
    manager: Manager,
    layout: Layout,
    engine: Engine,
}

fn state_path(layout: &Layout) -> PathBuf {
    layout.guest_dir.join("logs.json")
}

fn read_states(layout: &Layout) -> Result<BTreeMap<String, LogState>> {
    let p = state_path(layout);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::backend(BACKEND, format!("corrupt {}: {e}", p.display()), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(io_err("read", &p, e)),
    }
}

/// The MariaDB file of a log.
fn mysql_log_file(layout: &Layout, name: &str) -> PathBuf {
    layout.engine_dir.join(format!("{name}.log"))
}

/// The `my.cnf` lines that keep the logs that are on, on across restarts (empty when none is).
pub(crate) fn mysql_cnf(layout: &Layout) -> Result<String> {
    let states = read_states(layout)?;
    let mut out = String::new();
    for name in ["general", "slow_query"] {
        if states.get(name).is_some_and(|s| s.enabled) {
            if out.is_empty() {
                out.push_str("# guest logs that are on\n");
            }
            let var = mysql_var(name)?;
            out.push_str(&format!(
                "{var} = 1\n{var}_file = {}\n",
                mysql_log_file(layout, name).display()
            ));
        }
    }
    Ok(out)
}

/// The server variable of a MariaDB log.
fn mysql_var(name: &str) -> Result<&'static str> {
    match name {
        "general" => Ok("general_log"),
        "slow_query" => Ok("slow_query_log"),
        other => Err(Error::not_found("Log", other.escape_default())),
    }
}

/// Quotes a MariaDB string literal.
fn mysql_lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl EngineLogs {
    /// The logs of a MariaDB instance reached at `socket`.
    pub(crate) fn mysql(base: &Base, socket: &Path) -> EngineLogs {
        EngineLogs {
            manager: base.manager,
            layout: base.layout.clone(),
            engine: Engine::Mysql {
                socket: socket.to_path_buf(),
            },
        }
    }

    /// The logs of a PostgreSQL instance reached at `socket_dir`.
    pub(crate) fn postgres(base: &Base, socket_dir: &Path) -> EngineLogs {
        EngineLogs {
            manager: base.manager,
            layout: base.layout.clone(),
            engine: Engine::Postgres {
                socket_dir: socket_dir.to_path_buf(),
                port: base.ctx.port,
            },
        }
    }

    fn file(&self, name: &str) -> Result<PathBuf> {
        exposed_log_type(self.manager, name)?;
        Ok(match &self.engine {
            Engine::Mysql { .. } => mysql_log_file(&self.layout, name),
            Engine::Postgres { .. } => self.layout.engine_dir.join("postgresql.log"),
        })
    }

    fn admin_password(&self) -> Result<String> {
        let secret = self.layout.required_admin_secret(BACKEND)?;
        Ok(secret.expose().to_string())
    }

    fn sql_err(&self, e: sqlx::Error) -> Error {
        match e {
            sqlx::Error::Database(d) => Error::backend(BACKEND, d.message(), false),
            other => Error::backend(BACKEND, other, true),
        }
    }

    async fn mysql_set(&self, socket: &Path, name: &str, on: bool) -> Result<()> {
        let var = mysql_var(name)?;
        let file = mysql_log_file(&self.layout, name);
        let file = file
            .to_str()
            .ok_or_else(|| Error::backend(BACKEND, "the log path is not UTF-8", false))?;
        let mut c = MySqlConnectOptions::new()
            .socket(socket)
            .username("os_admin")
            .password(&self.admin_password()?)
            .disable_statement_logging()
            .connect()
            .await
            .map_err(|e| self.sql_err(e))?;
        let statements = if on {
            vec![
                "SET GLOBAL log_output = 'FILE'".to_string(),
                format!("SET GLOBAL {var}_file = {}", mysql_lit(file)),
                format!("SET GLOBAL {var} = ON"),
            ]
        } else {
            vec![format!("SET GLOBAL {var} = OFF")]
        };
        for s in &statements {
            sqlx::Executor::execute(&mut c, s.as_str())
                .await
                .map_err(|e| self.sql_err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }

    async fn postgres_set(&self, socket_dir: &Path, port: u16, on: bool) -> Result<()> {
        let opts = PgConnectOptions::new()
            .socket(socket_dir)
            .port(port)
            .username("os_admin")
            .password(&self.admin_password()?)
            .database("postgres")
            .disable_statement_logging();
        // A session's pg_conf_load_time() is the postmaster's last load of the configuration when it started.
        let load_time = "SELECT extract(epoch FROM pg_conf_load_time())::float8";
        let mut c = opts.connect().await.map_err(|e| self.sql_err(e))?;
        let before: f64 = sqlx::query(load_time)
            .fetch_one(&mut c)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.sql_err(e))?;
        let change = if on {
            "ALTER SYSTEM SET log_statement = 'all'"
        } else {
            "ALTER SYSTEM SET log_statement = 'none'"
        };
        // The guest's own sessions (status probes, user and database management) stay out of the log.
        for s in [
            "ALTER ROLE os_admin SET log_statement = 'none'",
            change,
            "SELECT pg_reload_conf()",
        ] {
            sqlx::Executor::execute(&mut c, s)
                .await
                .map_err(|e| self.sql_err(e))?;
        }
        let _ = c.close().await;
        // The postmaster reloads asynchronously: wait until a new session was started from the reloaded
        // configuration, so statements run after this answer are logged (or not) as asked.
        let start = Instant::now();
        loop {
            let mut c = opts.connect().await.map_err(|e| self.sql_err(e))?;
            let now: f64 = sqlx::query(load_time)
                .fetch_one(&mut c)
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| self.sql_err(e))?;
            let _ = c.close().await;
            if now > before {
                return Ok(());
            }
            if start.elapsed() > RELOAD_WAIT {
                return Err(Error::Timeout {
                    what: "PostgreSQL to reload its configuration after a log change".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[async_trait]
impl LogEngine for EngineLogs {
    fn manager(&self) -> Manager {
        self.manager
    }

    async fn state(&self, name: &str) -> Result<LogState> {
        Ok(read_states(&self.layout)?
            .get(name)
            .copied()
            .unwrap_or_default())
    }

    async fn save_state(&self, name: &str, state: &LogState) -> Result<()> {
        let mut all = read_states(&self.layout)?;
        all.insert(name.to_string(), *state);
        let bytes =
            serde_json::to_vec_pretty(&all).map_err(|e| Error::backend(BACKEND, e, false))?;
        write_private(&state_path(&self.layout), &bytes)
    }

    async fn set_enabled(&self, name: &str, on: bool) -> Result<bool> {
        exposed_log_type(self.manager, name)?;
        match &self.engine {
            Engine::Mysql { socket } => self.mysql_set(socket, name, on).await?,
            Engine::Postgres { socket_dir, port } => {
                self.postgres_set(socket_dir, *port, on).await?
            }
        }
        Ok(false)
    }

    async fn size(&self, name: &str) -> Result<u64> {
        let path = self.file(name)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err("stat", &path, e)),
        }
    }

    async fn read(&self, name: &str, from: u64, to: u64) -> Result<ByteStream> {
        let path = self.file(name)?;
        let mut f = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_err("open", &path, e))?;
        f.seek(std::io::SeekFrom::Start(from))
            .await
            .map_err(|e| io_err("seek", &path, e))?;
        let stream = futures::stream::unfold(
            (f, to.saturating_sub(from), path),
            |(mut f, left, path)| async move {
                if left == 0 {
                    return None;
                }
                let mut buf = vec![0u8; CHUNK.min(left) as usize];
                match f.read_exact(&mut buf).await {
                    Ok(_) => {
                        let n = buf.len() as u64;
                        Some((Ok(buf), (f, left - n, path)))
                    }
                    Err(e) => Some((Err(io_err("read", &path, e)), (f, 0, path))),
                }
            },
        );
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use trove_core::guest_log::{log_action, GuestLogContext, LogStore};
    use trove_core::memory::MemoryBackupStore;
    use trove_core::model::{LogAction, LogActionRequest, LogStatus, DEFAULT_LOG_CONTAINER};

    fn layout(dir: &Path) -> Layout {
        let l = Layout {
            server_dir: dir.to_path_buf(),
            guest_dir: dir.join("guest"),
            engine_dir: dir.join("engine"),
            volume_dir: dir.join("volume"),
            data_dir: dir.join("volume/data"),
        };
        std::fs::create_dir_all(&l.guest_dir).unwrap();
        std::fs::create_dir_all(&l.engine_dir).unwrap();
        l
    }

    #[test]
    fn cnf_lines_only_for_logs_that_are_on() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(dir.path());
        assert_eq!(mysql_cnf(&l).unwrap(), "");
        let mut all = BTreeMap::new();
        all.insert(
            "slow_query".to_string(),
            LogState {
                enabled: true,
                ..Default::default()
            },
        );
        all.insert("general".to_string(), LogState::default());
        write_private(&state_path(&l), &serde_json::to_vec(&all).unwrap()).unwrap();
        let cnf = mysql_cnf(&l).unwrap();
        assert!(cnf.contains("slow_query_log = 1\n"), "{cnf}");
        assert!(cnf.contains(&format!(
            "slow_query_log_file = {}",
            l.engine_dir.join("slow_query.log").display()
        )));
        assert!(!cnf.contains("general_log"), "{cnf}");
    }

    /// Publishing reads exactly the unpublished byte range of the file, in chunks (a log bigger than a chunk,
    /// grown between publishes), and the parts concatenate to the file.
    #[tokio::test]
    async fn publish_reads_exact_ranges_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(dir.path());
        let logs = EngineLogs {
            manager: Manager::Postgresql,
            layout: l.clone(),
            engine: Engine::Postgres {
                socket_dir: dir.path().to_path_buf(),
                port: 1,
            },
        };
        // The server log is on already (no engine to switch here).
        logs.save_state(
            "general",
            &LogState {
                enabled: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let file = l.engine_dir.join("postgresql.log");
        let first: Vec<u8> = (0..(CHUNK as usize * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&file, &first).unwrap();
        let store: trove_core::ports::DynBackupStore =
            std::sync::Arc::new(MemoryBackupStore::new());
        let ctx = GuestLogContext {
            instance_id: uuid::Uuid::new_v4(),
            store: Some(LogStore::new(store.clone(), DEFAULT_LOG_CONTAINER)),
        };
        let publish = LogActionRequest::new("general", LogAction::Publish);
        let v = log_action(&logs, &ctx, &publish).await.unwrap();
        assert_eq!(
            (v.status, v.published),
            (LogStatus::Published, first.len() as u64)
        );
        let mut all = first.clone();
        all.extend_from_slice(b"LOG:  statement: SELECT 42\n");
        std::fs::write(&file, &all).unwrap();
        let v = log_action(
            &logs,
            &ctx,
            &LogActionRequest::new("general", LogAction::Show),
        )
        .await
        .unwrap();
        assert_eq!((v.status, v.pending), (LogStatus::Partial, 27));
        log_action(&logs, &ctx, &publish).await.unwrap();
        let mut joined = Vec::new();
        let prefix = format!("{DEFAULT_LOG_CONTAINER}/{}", v.prefix.unwrap());
        let parts = store.list(&prefix).await.unwrap();
        assert_eq!(parts.len(), 2);
        for p in parts {
            let mut s = store.get(&p.key).await.unwrap();
            while let Some(c) = s.next().await {
                joined.extend(c.unwrap());
            }
        }
        assert_eq!(joined, all);
        // The state survives in the guest directory.
        let again = read_states(&l).unwrap();
        assert_eq!(again["general"].published, all.len() as u64);
    }
}
