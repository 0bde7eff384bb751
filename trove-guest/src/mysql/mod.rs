//! The `mysql` and `mariadb` engine, on MariaDB binaries (`mariadb-install-db`, `mariadbd`).
//!
//! Memory: `innodb_buffer_pool_size` = 50 % of the flavor RAM (at least 16 MB), `max_connections` = RAM / 4 MB
//! (between 20 and 1000). The engine listens on the instance's bind address and port with `skip-name-resolve`;
//! the guest talks to it as `os_admin` over the instance's unix socket. Users, databases and root are in
//! [`admin`], the configuration in [`config`], TLS in [`tls`].

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection, Row};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use trove_core::model::Manager;
use trove_core::ports::{DatabasesFacet, PrepareRequest, RootFacet, StrategyContext, UsersFacet};
use trove_core::{Error, Result};

mod admin;
mod backup;
mod binlog;
mod cluster;
mod config;
mod replication;
mod tls;

use crate::base::Base;
use crate::common::{find_program, image_dir, run_as_user, socket_path, EngineConfig};
use crate::engine::{Engine, Spawn};
use crate::logs::EngineLogs;
use admin::{account, identified_by};

/// Binaries of the MySQL family.
#[derive(Debug, Clone)]
pub(crate) struct MysqlBinaries {
    /// The server (`mariadbd`, or `mysqld`).
    pub server: PathBuf,
    /// The data directory initialiser (`mariadb-install-db`, or `mysql_install_db`).
    pub install_db: PathBuf,
}

impl MysqlBinaries {
    /// Finds the binaries in `dir`, or in PATH and the Debian locations.
    pub fn find(dir: Option<&Path>) -> Result<MysqlBinaries> {
        let server = find_program(&["mariadbd", "mysqld"], dir, &[]);
        // Debian keeps the server in /usr/sbin and the initialiser in /usr/bin: an image naming the server's
        // directory still finds the initialiser in the usual places.
        let install_names = ["mariadb-install-db", "mysql_install_db"];
        let install_db = find_program(&install_names, dir, &[])
            .or_else(|| find_program(&install_names, None, &[]));
        match (server, install_db) {
            (Some(server), Some(install_db)) => Ok(MysqlBinaries { server, install_db }),
            _ => Err(Error::backend(
                "guest",
                format!(
                    "MariaDB binaries (mariadbd, mariadb-install-db) not found in {}",
                    dir.map_or("PATH or /usr/sbin".to_string(), |d| d.display().to_string())
                ),
                false,
            )),
        }
    }
}

/// Runs one statement with the text protocol (no prepared statement, no logging: it may carry a password).
async fn exec_sql(conn: &mut MySqlConnection, sql: &str) -> std::result::Result<(), sqlx::Error> {
    sqlx::Executor::execute(&mut *conn, sql).await.map(|_| ())
}

/// One MySQL-family instance.
pub(crate) struct Mysql {
    base: Base,
    bins: MysqlBinaries,
    backup_bins: Option<backup::BackupBinaries>,
    socket: PathBuf,
    /// The previous reading of the cluster facet's load figures (its rates are per second since then).
    last_load: std::sync::Mutex<Option<cluster::LoadReading>>,
}

impl Mysql {
    /// The engine of the instance in `ctx` (`manager` is `Mysql` or `Mariadb`).
    pub fn new(manager: Manager, ctx: &StrategyContext, cfg: &EngineConfig) -> Result<Mysql> {
        let base = Base::new(manager, ctx, cfg)?;
        let bins = MysqlBinaries::find(image_dir(ctx).as_deref())?;
        let socket = socket_path(&base.layout.engine_dir, "mysqld.sock", ctx.instance_id);
        let backup_bins = backup::BackupBinaries::find(image_dir(ctx).as_deref());
        Ok(Mysql {
            base,
            bins,
            backup_bins,
            socket,
            last_load: std::sync::Mutex::new(None),
        })
    }

    fn cnf_path(&self) -> PathBuf {
        self.base.layout.engine_dir.join("my.cnf")
    }

    fn err(&self, e: sqlx::Error) -> Error {
        self.base.sql_error("mysql", e)
    }

    fn options(&self, user: &str, password: &str) -> MySqlConnectOptions {
        let o = MySqlConnectOptions::new()
            .socket(&self.socket)
            .username(user)
            .disable_statement_logging();
        if password.is_empty() {
            o
        } else {
            o.password(password)
        }
    }

    async fn connect_admin(&self) -> Result<MySqlConnection> {
        let secret = self.base.layout.required_admin_secret("mysql")?;
        let mut c = self
            .options("os_admin", secret.expose())
            .connect()
            .await
            .map_err(|e| self.err(e))?;
        // The guest's own statements (some carry passwords) stay out of the guest logs a user can publish.
        exec_sql(
            &mut c,
            "SET SESSION sql_log_off = 1, SESSION slow_query_log = 0",
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(c)
    }

    /// Runs statements as the admin, one connection.
    async fn exec(&self, statements: &[String]) -> Result<()> {
        let mut conn = self.connect_admin().await?;
        for s in statements {
            exec_sql(&mut conn, s).await.map_err(|e| self.err(e))?;
        }
        let _ = conn.close().await;
        Ok(())
    }

    /// Whether the data directory was initialised completely ([`Layout::data_initialized`]; data from before
    /// the records: the system schema's directory).
    fn initialized(&self) -> bool {
        let l = &self.base.layout;
        l.data_initialized(l.data_dir.join("mysql").is_dir())
    }

    async fn init_datadir(&self) -> Result<()> {
        let data = &self.base.layout.data_dir;
        // A half-initialised directory from an interrupted attempt is started again from scratch.
        self.base.layout.clear_data_dir();
        let datadir = format!("--datadir={}", data.display());
        // The bootstrap server's temporary tables go to a directory of this instance's, not the shared /tmp
        // (a bootstrap once failed there: its temporary table was gone when it removed it).
        let tmp = self.base.layout.engine_dir.join("install-tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| crate::common::io_err("create", &tmp, e))?;
        crate::common::set_mode(&tmp, 0o700)?;
        self.base.run_as.own(&tmp)?;
        let tmpdir = format!("--tmpdir={}", tmp.display());
        let args: Vec<&OsStr> = vec![
            OsStr::new("--no-defaults"),
            OsStr::new(&datadir),
            OsStr::new(&tmpdir),
            OsStr::new("--auth-root-authentication-method=normal"),
            OsStr::new("--skip-test-db"),
            OsStr::new("--skip-name-resolve"),
        ];
        run_as_user(
            &self.bins.install_db,
            &args,
            self.base.run_as,
            &self.base.layout.engine_dir,
        )
        .await
    }

    /// Creates the admin account (once) and removes the passwordless root accounts of a fresh data dir.
    async fn ensure_admin(&self) -> Result<()> {
        let had_secret = self.base.layout.admin_secret()?.is_some();
        if had_secret && self.connect_admin().await.is_ok() {
            // A restored instance's first start reset the admin's password: its init file is done.
            let _ = std::fs::remove_file(self.admin_reset_file());
            return Ok(());
        }
        let secret = self.base.layout.ensure_admin_secret()?;
        let mut root = self
            .options("root", "")
            .connect()
            .await
            .map_err(|e| self.err(e))?;
        let pw = identified_by(secret.expose());
        let mut stmts = Vec::new();
        for host in ["localhost", "127.0.0.1", "::1"] {
            let acct = account("os_admin", host);
            stmts.push(format!("CREATE USER IF NOT EXISTS {acct} {pw}"));
            stmts.push(format!("ALTER USER {acct} {pw}"));
            stmts.push(format!(
                "GRANT ALL PRIVILEGES ON *.* TO {acct} WITH GRANT OPTION"
            ));
        }
        for s in &stmts {
            exec_sql(&mut root, s).await.map_err(|e| self.err(e))?;
        }
        let _ = root.close().await;
        // Drop every passwordless root account now that os_admin exists.
        let mut admin = self.connect_admin().await?;
        let rows = sqlx::query("SELECT CAST(Host AS CHAR) FROM mysql.user WHERE User = 'root'")
            .fetch_all(&mut admin)
            .await
            .map_err(|e| self.err(e))?;
        for r in rows {
            let host: String = r.try_get(0).map_err(|e| self.err(e))?;
            exec_sql(
                &mut admin,
                &format!("DROP USER IF EXISTS {}", account("root", &host)),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        let _ = admin.close().await;
        Ok(())
    }
}

#[async_trait]
impl Engine for Mysql {
    const PROCESS: &'static str = "mariadbd";

    fn base(&self) -> &Base {
        &self.base
    }

    fn pid_file(&self) -> PathBuf {
        self.base.layout.engine_dir.join("mysqld.pid")
    }

    fn log_file(&self) -> PathBuf {
        self.base.layout.engine_dir.join("mysqld.log")
    }

    fn idents(&self) -> Vec<String> {
        vec![format!("--defaults-file={}", self.cnf_path().display())]
    }

    async fn init(&self) -> Result<()> {
        if self.initialized() {
            return Ok(());
        }
        self.base
            .layout
            .initialize_data(|| async {
                if let Err(e) = self.init_datadir().await {
                    // One retry: a bootstrap interrupted under heavy load leaves a directory the retry starts
                    // afresh.
                    tracing::warn!(instance = %self.base.ctx.instance_id, error = %e, "initialising the data dir failed; retrying once");
                    self.init_datadir().await?;
                }
                Ok(())
            })
            .await
    }

    fn spawn(&self) -> Result<Spawn> {
        let _ = std::fs::remove_file(&self.socket);
        let mut args = vec![OsString::from(format!(
            "--defaults-file={}",
            self.cnf_path().display()
        ))];
        let reset = self.admin_reset_file();
        if reset.exists() {
            args.push(OsString::from(format!("--init-file={}", reset.display())));
        }
        Ok(Spawn {
            program: self.bins.server.clone(),
            args,
            output: self.base.layout.engine_dir.join("mysqld.out"),
        })
    }

    /// An authentication error counts: the server is up.
    async fn answers(&self) -> Result<()> {
        let user = if self.base.layout.admin_secret()?.is_some() {
            "os_admin"
        } else {
            "root"
        };
        let pw = self.base.layout.admin_secret()?.unwrap_or_default();
        match self.options(user, pw.expose()).connect().await {
            Ok(c) => {
                let _ = c.close().await;
                Ok(())
            }
            Err(sqlx::Error::Database(_)) => Ok(()),
            Err(e) => Err(Error::backend("mysql", e, true)),
        }
    }

    async fn probe(&self) -> Result<()> {
        let mut c = self.connect_admin().await?;
        exec_sql(&mut c, "SELECT 1")
            .await
            .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        Ok(())
    }

    async fn bootstrap(&self) -> Result<()> {
        self.ensure_admin().await
    }

    async fn seed(&self, req: &PrepareRequest) -> Result<()> {
        self.create_dbs(&req.databases, false).await?;
        self.create_accounts(&req.users, false).await
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
        Some(EngineLogs::mysql(&self.base, &self.socket))
    }

    fn replication(&self) -> Option<&dyn trove_core::ports::ReplicationFacet> {
        Some(self)
    }

    /// Galera ([`cluster`]).
    fn cluster(&self) -> Option<&dyn trove_core::ports::ClusterFacet> {
        Some(self)
    }

    fn backup_tool(&self) -> Option<&dyn crate::backup::EngineBackup> {
        self.backup_bins
            .as_ref()
            .map(|_| self as &dyn crate::backup::EngineBackup)
    }
}
