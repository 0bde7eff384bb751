//! The `postgresql` engine (`initdb`, `postgres`).
//!
//! Memory: `shared_buffers` = 25 % of the flavor RAM (at least 16 MB), `effective_cache_size` = 75 %,
//! `max_connections` = RAM / 8 MB (between 20 and 500). The bootstrap superuser is `os_admin` (scram password);
//! every connection needs a password (`scram-sha-256` for local and host lines) but the guest's own as `os_admin`
//! over the instance's unix socket (in a 0700 directory of the engine user; [`replication`] says why). `PUBLIC` loses `CONNECT` on every
//! database, so access is exactly what was granted; a grant also gives the user the database's `public` schema
//! (PostgreSQL 15 no longer lets `PUBLIC` create there).

//!
//! Users, databases and root are in [`admin`], the configuration in [`config`], TLS in [`tls`], backups in
//! [`backup`].

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use trove_core::model::Manager;
use trove_core::ports::{
    DatabasesFacet, PrepareRequest, ReplicationFacet, RootFacet, StrategyContext, UsersFacet,
};
use trove_core::{Error, Result};

mod admin;
mod backup;
mod config;
mod replication;
mod tls;
mod wal;

use crate::backup::EngineBackup;
use crate::base::Base;
use crate::common::{
    find_program, image_dir, io_err, run_as_user, set_mode, write_engine_file, EngineConfig,
};
use crate::engine::{Engine, Spawn};
use crate::logs::EngineLogs;

/// Debian's versioned binary directories, newest first.
fn debian_pg_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_str()?.parse().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    dirs.into_iter().map(|(_, d)| d).collect()
}

/// Binaries of PostgreSQL.
#[derive(Debug, Clone)]
pub(crate) struct PostgresBinaries {
    /// `initdb`.
    pub initdb: PathBuf,
    /// `postgres`.
    pub postgres: PathBuf,
    /// `pg_basebackup` of the same installation (backups and fresh replica copies need it).
    pub basebackup: Option<PathBuf>,
    /// `pg_rewind` of the same installation (a former source rejoining as a replica).
    pub rewind: Option<PathBuf>,
    /// `pg_controldata` of the same installation (the position of a cleanly stopped source).
    pub controldata: Option<PathBuf>,
}

impl PostgresBinaries {
    /// Finds the binaries in `dir`, or in the newest Debian directory and PATH.
    pub fn find(dir: Option<&Path>) -> Result<PostgresBinaries> {
        let initdb;
        let postgres;
        if let Some(d) = dir {
            initdb = find_program(&["initdb"], Some(d), &[]);
            postgres = find_program(&["postgres"], Some(d), &[]);
        } else {
            // initdb and postgres must come from one installation: prefer Debian's versioned directory.
            let found = debian_pg_dirs().into_iter().find_map(|d| {
                Some((
                    find_program(&["initdb"], Some(&d), &[])?,
                    find_program(&["postgres"], Some(&d), &[])?,
                ))
            });
            match found {
                Some((i, p)) => {
                    initdb = Some(i);
                    postgres = Some(p);
                }
                None => {
                    initdb = find_program(&["initdb"], None, &[]);
                    postgres = find_program(&["postgres"], None, &[]);
                }
            }
        }
        match (initdb, postgres) {
            (Some(initdb), Some(postgres)) => {
                // pg_basebackup of the same installation (its protocol must match the server's).
                let beside = |name: &str| {
                    postgres
                        .parent()
                        .and_then(|d| find_program(&[name], Some(d), &[]))
                };
                Ok(PostgresBinaries {
                    basebackup: beside("pg_basebackup"),
                    rewind: beside("pg_rewind"),
                    controldata: beside("pg_controldata"),
                    initdb,
                    postgres,
                })
            }
            _ => Err(Error::backend(
                "guest",
                format!(
                    "PostgreSQL binaries (initdb, postgres) not found in {}",
                    dir.map_or("/usr/lib/postgresql/*/bin or PATH".to_string(), |d| d
                        .display()
                        .to_string())
                ),
                false,
            )),
        }
    }
}

/// Runs one statement with the text protocol (no prepared statement, no logging: it may carry a password).
async fn exec_sql(conn: &mut PgConnection, sql: &str) -> std::result::Result<(), sqlx::Error> {
    sqlx::Executor::execute(&mut *conn, sql).await.map(|_| ())
}

/// One PostgreSQL instance.
pub(crate) struct Postgres {
    base: Base,
    bins: PostgresBinaries,
    socket_dir: PathBuf,
    /// When the replication slots were last checked ([`Postgres::check_slots`]).
    slots_checked: std::sync::Mutex<Option<std::time::Instant>>,
}

const ADMIN_DB: &str = "postgres";

impl Postgres {
    /// The engine of the instance in `ctx`.
    pub fn new(ctx: &StrategyContext, cfg: &EngineConfig) -> Result<Postgres> {
        let base = Base::new(Manager::Postgresql, ctx, cfg)?;
        let bins = PostgresBinaries::find(image_dir(ctx).as_deref())?;
        let engine = &base.layout.engine_dir;
        // The socket is `<dir>/.s.PGSQL.<port>`; unix socket paths are limited to 107 bytes.
        let socket_dir = if engine.as_os_str().len() + 20 < 100 {
            engine.clone()
        } else {
            std::env::temp_dir().join(format!("trove-{}", ctx.instance_id.simple()))
        };
        Ok(Postgres {
            base,
            bins,
            socket_dir,
            slots_checked: std::sync::Mutex::new(None),
        })
    }

    fn conf_path(&self) -> PathBuf {
        self.base.layout.data_dir.join("trove.conf")
    }

    fn err(&self, e: sqlx::Error) -> Error {
        self.base.sql_error("postgresql", e)
    }

    fn options(&self, user: &str, password: &str, db: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(self.base.ctx.port)
            .username(user)
            .password(password)
            .database(db)
            .disable_statement_logging()
    }

    async fn connect_admin(&self, db: &str) -> Result<PgConnection> {
        let secret = self.base.layout.required_admin_secret("postgresql")?;
        // The guest writes even where applications may not (a fenced source).
        self.options("os_admin", secret.expose(), db)
            .options([("default_transaction_read_only", "off")])
            .connect()
            .await
            .map_err(|e| self.err(e))
    }

    async fn exec(&self, db: &str, statements: &[String]) -> Result<()> {
        if statements.is_empty() {
            return Ok(());
        }
        let mut c = self.connect_admin(db).await?;
        for s in statements {
            exec_sql(&mut c, s).await.map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }

    /// Whether the data directory was initialised completely ([`Layout::data_initialized`]; data from before
    /// the records: PostgreSQL's control file).
    fn initialized(&self) -> bool {
        let l = &self.base.layout;
        l.data_initialized(l.data_dir.join("global").join("pg_control").is_file())
    }

    async fn init_datadir(&self) -> Result<()> {
        let l = &self.base.layout;
        self.base.layout.clear_data_dir();
        set_mode(&l.data_dir, 0o700)?;
        let secret = l.ensure_admin_secret()?;
        // initdb reads the bootstrap password from a file the engine user can read; it is removed right after.
        let pwfile = l.engine_dir.join("initdb.pw");
        write_engine_file(&pwfile, secret.expose(), self.base.run_as)?;
        let data = format!("--pgdata={}", l.data_dir.display());
        let pw = format!("--pwfile={}", pwfile.display());
        let args: Vec<&OsStr> = [
            data.as_str(),
            "--username=os_admin",
            pw.as_str(),
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ]
        .into_iter()
        .map(OsStr::new)
        .collect();
        let res = run_as_user(&self.bins.initdb, &args, self.base.run_as, &l.engine_dir).await;
        let _ = std::fs::remove_file(&pwfile);
        res?;
        // Include the rendered settings, and allow password logins from every address the engine listens on.
        let main = l.data_dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&main).map_err(|e| io_err("read", &main, e))?;
        text.push_str("\ninclude = 'trove.conf'\n");
        write_engine_file(&main, &text, self.base.run_as)?;
        self.write_hba()
    }
}

#[async_trait]
impl Engine for Postgres {
    const PROCESS: &'static str = "postgres";
    /// SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected, a checkpoint is written.
    const STOP_SIGNAL: &'static str = "INT";

    fn base(&self) -> &Base {
        &self.base
    }

    fn pid_file(&self) -> PathBuf {
        self.base.layout.data_dir.join("postmaster.pid")
    }

    fn log_file(&self) -> PathBuf {
        self.base.layout.engine_dir.join("postgresql.log")
    }

    fn idents(&self) -> Vec<String> {
        vec![self.base.layout.data_dir.display().to_string()]
    }

    async fn init(&self) -> Result<()> {
        if self.initialized() {
            return Ok(());
        }
        self.base
            .layout
            .initialize_data(|| self.init_datadir())
            .await
    }

    fn spawn(&self) -> Result<Spawn> {
        if self.socket_dir != self.base.layout.engine_dir {
            std::fs::create_dir_all(&self.socket_dir)
                .map_err(|e| io_err("create", &self.socket_dir, e))?;
            set_mode(&self.socket_dir, 0o700)?;
            self.base.run_as.own(&self.socket_dir)?;
        }
        Ok(Spawn {
            program: self.bins.postgres.clone(),
            args: vec![
                OsString::from("-D"),
                self.base.layout.data_dir.clone().into_os_string(),
            ],
            output: self.log_file(),
        })
    }

    async fn answers(&self) -> Result<()> {
        let c = self.connect_admin(ADMIN_DB).await?;
        let _ = c.close().await;
        Ok(())
    }

    async fn probe(&self) -> Result<()> {
        let mut c = self.connect_admin(ADMIN_DB).await?;
        exec_sql(&mut c, "SELECT 1")
            .await
            .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        self.check_slots().await;
        Ok(())
    }

    /// Access is what is granted: PUBLIC may not connect to the built-in databases (once, at the first prepare).
    async fn bootstrap(&self) -> Result<()> {
        // A standby's catalog is its source's (which did this itself).
        if self.base.layout.state()?.prepared || self.in_recovery().await? {
            return Ok(());
        }
        self.exec(
            ADMIN_DB,
            &[
                "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC".to_string(),
                "REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC".to_string(),
            ],
        )
        .await
    }

    async fn seed(&self, req: &PrepareRequest) -> Result<()> {
        self.create_dbs(&req.databases, false).await?;
        self.create_roles(&req.users, false).await
    }

    fn users(&self) -> Option<&dyn UsersFacet> {
        Some(self)
    }

    fn databases(&self) -> Option<&dyn DatabasesFacet> {
        Some(self)
    }

    fn root(&self) -> Option<&dyn RootFacet> {
        Some(self)
    }

    fn guest_logs(&self) -> Option<EngineLogs> {
        Some(EngineLogs::postgres(&self.base, &self.socket_dir))
    }

    fn backup_tool(&self) -> Option<&dyn EngineBackup> {
        Some(self)
    }

    fn replication(&self) -> Option<&dyn ReplicationFacet> {
        Some(self)
    }
}
