//! The `mysql` and `mariadb` strategies, on MariaDB binaries (`mariadb-install-db`, `mariadbd`).
//!
//! Memory: `innodb_buffer_pool_size` = 50 % of the flavor RAM (at least 16 MB), `max_connections` = RAM / 4 MB
//! (between 20 and 1000). The engine listens on the instance's bind address and port with `skip-name-resolve`;
//! the guest talks to it as `os_admin` over the instance's unix socket.

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection, Row};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Arc;

use trove_core::model::{
    validate_database_name, validate_host, validate_password, validate_user_name, DatabaseSpec,
    Manager, Secret, SslChange, SslChangeResult, SslView, UserSpec, UserUpdate,
};
use trove_core::ports::{
    DatastoreStrategy, EngineStatus, FsStats, PrepareRequest, StrategyContext, UserInfo,
};
use trove_core::state::ServiceStatus;
use trove_core::{Error, Result};

mod tls;

use crate::base::Base;
use crate::common::{
    check_override_key, down_status, find_program, image_dir, override_value, run_as_user,
    share_mb, socket_path, spawn_detached, status, wait_ready, write_engine_file, EngineConfig,
};

/// Users the guest keeps out of listings.
const SYSTEM_USERS: &[&str] = &["os_admin", "root", "mariadb.sys", "mysql", "PUBLIC", ""];
/// Schemas the guest keeps out of listings.
const SYSTEM_DBS: &[&str] = &[
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
    "lost+found",
];

/// Binaries of the MySQL family.
#[derive(Debug, Clone)]
pub struct MysqlBinaries {
    /// The server (`mariadbd`, or `mysqld`).
    pub server: PathBuf,
    /// The data directory initialiser (`mariadb-install-db`, or `mysql_install_db`).
    pub install_db: PathBuf,
}

impl MysqlBinaries {
    /// Finds the binaries in `dir`, or in PATH and the Debian locations.
    pub fn find(dir: Option<&std::path::Path>) -> Result<MysqlBinaries> {
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

/// Quotes an identifier with backticks.
pub(crate) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a string literal (backslashes and quotes escaped).
pub(crate) fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A database name in a GRANT: backticked, with the LIKE wildcards `_` and `%` escaped so only that database matches.
fn grant_db(name: &str) -> String {
    ident(&grant_db_name(name))
}

/// The database name as stored in `mysql.db` after a GRANT on [`grant_db`].
fn grant_db_name(name: &str) -> String {
    name.replace('\\', "\\\\")
        .replace('_', "\\_")
        .replace('%', "\\%")
}

fn unescape_grant_db(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn account(name: &str, host: &str) -> String {
    format!("{}@{}", lit(name), lit(host))
}

/// The strategy for one MySQL-family instance.
pub struct MysqlStrategy {
    base: Base,
    bins: MysqlBinaries,
    socket: PathBuf,
}

impl std::fmt::Debug for MysqlStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlStrategy")
            .field("manager", &self.base.manager)
            .field("port", &self.base.ctx.port)
            .finish()
    }
}

impl MysqlStrategy {
    /// A strategy for the instance in `ctx` (`manager` is `Mysql` or `Mariadb`).
    pub fn new(
        manager: Manager,
        ctx: &StrategyContext,
        cfg: &EngineConfig,
    ) -> Result<MysqlStrategy> {
        let base = Base::new(manager, ctx, cfg)?;
        let bins = MysqlBinaries::find(image_dir(ctx).as_deref())?;
        let socket = socket_path(&base.layout.engine_dir, "mysqld.sock", ctx.instance_id);
        Ok(MysqlStrategy { base, bins, socket })
    }

    /// The strategy as a trait object.
    pub fn into_dyn(self) -> Arc<dyn DatastoreStrategy> {
        Arc::new(self)
    }

    fn cnf_path(&self) -> PathBuf {
        self.base.layout.engine_dir.join("my.cnf")
    }
    /// What the engine's command line contains (tells our engine from a process that reused its pid).
    fn idents(&self) -> Vec<String> {
        vec![format!("--defaults-file={}", self.cnf_path().display())]
    }

    fn pid_path(&self) -> PathBuf {
        self.base.layout.engine_dir.join("mysqld.pid")
    }
    fn log_path(&self) -> PathBuf {
        self.base.layout.engine_dir.join("mysqld.log")
    }

    fn err(&self, e: sqlx::Error) -> Error {
        match e {
            sqlx::Error::Database(d) => Error::Guest {
                instance_id: self.base.ctx.instance_id,
                message: d.message().to_string(),
            },
            other => Error::backend("mysql", other, true),
        }
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
        let secret = self.base.layout.admin_secret()?.ok_or_else(|| {
            Error::backend(
                "mysql",
                "the instance has no admin account yet (not prepared)",
                false,
            )
        })?;
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

    fn render_config(&self) -> Result<()> {
        let st = self.base.layout.state()?;
        let l = &self.base.layout;
        let pool_mb = share_mb(st.memory_mb, 0.5, 16);
        let max_conn = (st.memory_mb / 4).clamp(20, 1000);
        let mut cnf = format!(
            "# Rendered by trove-guest for {mem} MB of RAM; do not edit (apply a configuration group instead).\n\
             [mysqld]\n\
             datadir = {data}\n\
             port = {port}\n\
             bind-address = {bind}\n\
             socket = {sock}\n\
             pid-file = {pid}\n\
             log-error = {log}\n\
             skip-name-resolve\n\
             character-set-server = utf8mb4\n\
             collation-server = utf8mb4_general_ci\n\
             # 50 % of the flavor RAM\n\
             innodb_buffer_pool_size = {pool_mb}M\n\
             max_connections = {max_conn}\n",
            mem = st.memory_mb,
            data = l.data_dir.display(),
            port = self.base.ctx.port,
            bind = if self.base.ctx.bind_address.is_empty() { "127.0.0.1" } else { &self.base.ctx.bind_address },
            sock = self.socket.display(),
            pid = self.pid_path().display(),
            log = self.log_path().display(),
        );
        if !st.overrides.is_empty() {
            cnf.push_str("# configuration overrides\n");
            for (k, v) in &st.overrides {
                cnf.push_str(&format!("{k} = {}\n", override_value(k, v)?));
            }
        }
        cnf.push_str(&self.tls_cnf()?);
        cnf.push_str(&crate::logs::mysql_cnf(&self.base.layout)?);
        write_engine_file(&self.cnf_path(), &cnf, self.base.run_as)
    }

    fn initialized(&self) -> bool {
        self.base.layout.data_dir.join("mysql").is_dir()
    }

    async fn init_datadir(&self) -> Result<()> {
        let data = &self.base.layout.data_dir;
        // A half-initialised directory from an interrupted attempt is started again from scratch.
        if let Ok(rd) = std::fs::read_dir(data) {
            for e in rd.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
        let datadir = format!("--datadir={}", data.display());
        let args: Vec<&OsStr> = vec![
            OsStr::new("--no-defaults"),
            OsStr::new(&datadir),
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

    /// Starts the engine unless it runs, and waits until it answers.
    async fn start_engine(&self) -> Result<()> {
        self.base.layout.update_state(|s| s.running = true)?;
        let pid = match self.base.engine_pid(&self.pid_path(), &self.idents()) {
            Some(pid) => pid,
            None => {
                let _ = std::fs::remove_file(self.pid_path());
                let _ = std::fs::remove_file(&self.socket);
                self.render_config()?;
                let defaults = format!("--defaults-file={}", self.cnf_path().display());
                spawn_detached(
                    &self.bins.server,
                    &[OsStr::new(&defaults)],
                    self.base.run_as,
                    &self.base.layout.engine_dir,
                    &self.base.layout.engine_dir.join("mysqld.out"),
                )?
            }
        };
        self.base.record_pid(pid)?;
        wait_ready(
            "mariadbd",
            self.base.cfg.ready_timeout,
            || Some(pid),
            &self.log_path(),
            || self.answers(),
        )
        .await
    }

    /// The server answers (an authentication error counts: it is up).
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

    /// Creates the admin account (once) and removes the passwordless root accounts of a fresh data dir.
    async fn ensure_admin(&self) -> Result<()> {
        let had_secret = self.base.layout.admin_secret()?.is_some();
        if had_secret && self.connect_admin().await.is_ok() {
            return Ok(());
        }
        let secret = self.base.layout.ensure_admin_secret()?;
        let mut root = self
            .options("root", "")
            .connect()
            .await
            .map_err(|e| self.err(e))?;
        let pw = lit(secret.expose());
        let mut stmts = Vec::new();
        for host in ["localhost", "127.0.0.1", "::1"] {
            let acct = account("os_admin", host);
            stmts.push(format!(
                "CREATE USER IF NOT EXISTS {acct} IDENTIFIED BY {pw}"
            ));
            stmts.push(format!("ALTER USER {acct} IDENTIFIED BY {pw}"));
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

    /// Validates an account and gives its host (`%` when empty).
    fn check_account<'a>(&self, name: &str, host: &'a str) -> Result<&'a str> {
        validate_user_name(self.base.manager, name)?;
        self.base.check_reserved(name)?;
        let host = Self::user_host(Some(host));
        validate_host(host)?;
        Ok(host)
    }

    async fn has_db(&self, c: &mut MySqlConnection, name: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?")
            .bind(name)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.is_some())
    }

    async fn has_user(&self, c: &mut MySqlConnection, name: &str, host: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM mysql.user WHERE User = ? AND Host = ?")
            .bind(name)
            .bind(host)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.is_some())
    }

    async fn require_user(&self, c: &mut MySqlConnection, name: &str, host: &str) -> Result<()> {
        if self.has_user(c, name, host).await? {
            Ok(())
        } else {
            Err(Error::not_found("User", format!("{name}@{host}")))
        }
    }

    /// Creates databases; `strict` refuses existing ones (the API), otherwise they are left as they are (prepare).
    async fn create_dbs(&self, dbs: &[DatabaseSpec], strict: bool) -> Result<()> {
        self.base.validate_databases(dbs)?;
        if dbs.is_empty() {
            return Ok(());
        }
        let mut c = self.connect_admin().await?;
        let mut todo = Vec::new();
        for db in dbs {
            if !self.has_db(&mut c, &db.name).await? {
                todo.push(db);
            } else if strict {
                return Err(Error::bad_request(format!(
                    "A database named '{}' already exists.",
                    db.name
                )));
            }
        }
        for db in todo {
            let mut s = format!("CREATE DATABASE IF NOT EXISTS {}", ident(&db.name));
            if let Some(cs) = &db.character_set {
                s.push_str(&format!(" CHARACTER SET {cs}"));
            }
            if let Some(co) = &db.collate {
                s.push_str(&format!(" COLLATE {co}"));
            }
            exec_sql(&mut c, &s).await.map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }

    /// Creates users with their grants; `strict` refuses existing ones (the API), otherwise their password and
    /// grants are set again (prepare).
    async fn create_accounts(&self, users: &[UserSpec], strict: bool) -> Result<()> {
        self.base.validate_users(users)?;
        if users.is_empty() {
            return Ok(());
        }
        let mut c = self.connect_admin().await?;
        for u in users {
            let host = Self::user_host(u.host.as_deref());
            if strict && self.has_user(&mut c, &u.name, host).await? {
                return Err(Error::bad_request(format!(
                    "A user named '{}'@'{host}' already exists.",
                    u.name
                )));
            }
            for d in &u.databases {
                if !self.has_db(&mut c, d).await? {
                    return Err(Error::not_found("Database", d));
                }
            }
        }
        for u in users {
            let acct = account(&u.name, Self::user_host(u.host.as_deref()));
            let pw = lit(u.password.expose());
            let mut stmts = vec![
                format!("CREATE USER IF NOT EXISTS {acct} IDENTIFIED BY {pw}"),
                format!("ALTER USER {acct} IDENTIFIED BY {pw}"),
            ];
            for d in &u.databases {
                stmts.push(format!(
                    "GRANT ALL PRIVILEGES ON {}.* TO {acct}",
                    grant_db(d)
                ));
            }
            for st in &stmts {
                exec_sql(&mut c, st).await.map_err(|e| self.err(e))?;
            }
        }
        let _ = c.close().await;
        Ok(())
    }

    fn user_host(host: Option<&str>) -> &str {
        host.filter(|h| !h.is_empty()).unwrap_or("%")
    }
}

#[async_trait]
impl DatastoreStrategy for MysqlStrategy {
    fn manager(&self) -> Manager {
        self.base.manager
    }

    async fn prepare(&self, req: &PrepareRequest) -> Result<()> {
        self.base.validate_databases(&req.databases)?;
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
        if !self.initialized() {
            if let Err(e) = self.init_datadir().await {
                // One retry: a bootstrap interrupted under heavy load leaves a directory the retry starts afresh.
                tracing::warn!(instance = %self.base.ctx.instance_id, error = %e, "initialising the data dir failed; retrying once");
                self.init_datadir().await?;
            }
        }
        self.start_engine().await?;
        self.ensure_admin().await?;
        self.base.layout.update_state(|s| s.prepared = true)?;
        self.create_dbs(&req.databases, false).await?;
        self.create_accounts(&req.users, false).await?;
        if let Some(p) = &req.root_password {
            self.enable_root(Some(p.clone())).await?;
        }
        Ok(())
    }

    async fn start(&self) -> Result<()> {
        self.start_engine().await
    }

    async fn stop(&self) -> Result<()> {
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
            Some(_) => {
                let probe = async {
                    let mut c = self.connect_admin().await?;
                    exec_sql(&mut c, "SELECT 1")
                        .await
                        .map_err(|e| self.err(e))?;
                    let _ = c.close().await;
                    Ok::<_, Error>(())
                };
                match tokio::time::timeout(self.base.cfg.probe_timeout, probe).await {
                    Ok(Ok(())) => status(ServiceStatus::Healthy, None),
                    Ok(Err(e)) => status(
                        ServiceStatus::Blocked,
                        Some(format!("the engine runs but does not answer: {e}")),
                    ),
                    Err(_) => status(
                        ServiceStatus::Blocked,
                        Some("the engine runs but does not answer in time".into()),
                    ),
                }
            }
            None => down_status(
                &st,
                crate::common::read_pid(&self.pid_path()).or(st.pid),
                &self.log_path(),
            ),
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

    async fn create_databases(&self, dbs: &[DatabaseSpec]) -> Result<()> {
        self.create_dbs(dbs, true).await
    }

    async fn list_databases(&self) -> Result<Vec<DatabaseSpec>> {
        let mut c = self.connect_admin().await?;
        let rows = sqlx::query(
            "SELECT CAST(SCHEMA_NAME AS CHAR), CAST(DEFAULT_CHARACTER_SET_NAME AS CHAR), \
             CAST(DEFAULT_COLLATION_NAME AS CHAR) FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
        )
        .fetch_all(&mut c)
        .await
        .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        let mut out = Vec::new();
        for r in rows {
            let name: String = r.try_get(0).map_err(|e| self.err(e))?;
            if SYSTEM_DBS.contains(&name.as_str()) || name.starts_with("#mysql50#") {
                continue;
            }
            out.push(DatabaseSpec {
                name,
                character_set: r.try_get(1).map_err(|e| self.err(e))?,
                collate: r.try_get(2).map_err(|e| self.err(e))?,
            });
        }
        Ok(out)
    }

    async fn delete_database(&self, name: &str) -> Result<()> {
        validate_database_name(self.base.manager, name)?;
        let mut c = self.connect_admin().await?;
        if !self.has_db(&mut c, name).await? {
            return Err(Error::not_found("Database", name));
        }
        exec_sql(&mut c, &format!("DROP DATABASE {}", ident(name)))
            .await
            .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        Ok(())
    }

    async fn create_users(&self, users: &[UserSpec]) -> Result<()> {
        self.create_accounts(users, true).await
    }

    async fn list_users(&self) -> Result<Vec<UserInfo>> {
        let mut c = self.connect_admin().await?;
        let rows = sqlx::query(
            "SELECT CAST(User AS CHAR), CAST(Host AS CHAR) FROM mysql.user WHERE is_role = 'N' ORDER BY User, Host",
        )
        .fetch_all(&mut c)
        .await
        .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let name: String = r.try_get(0).map_err(|e| self.err(e))?;
            let host: String = r.try_get(1).map_err(|e| self.err(e))?;
            if SYSTEM_USERS.contains(&name.as_str()) {
                continue;
            }
            let dbs = sqlx::query(
                "SELECT CAST(Db AS CHAR) FROM mysql.db WHERE User = ? AND Host = ? ORDER BY Db",
            )
            .bind(&name)
            .bind(&host)
            .fetch_all(&mut c)
            .await
            .map_err(|e| self.err(e))?;
            let mut databases = Vec::new();
            for d in dbs {
                let db: String = d.try_get(0).map_err(|e| self.err(e))?;
                databases.push(unescape_grant_db(&db));
            }
            out.push(UserInfo {
                name,
                host,
                databases,
            });
        }
        let _ = c.close().await;
        Ok(out)
    }

    async fn delete_user(&self, name: &str, host: &str) -> Result<()> {
        let host = self.check_account(name, host)?;
        let mut c = self.connect_admin().await?;
        self.require_user(&mut c, name, host).await?;
        exec_sql(&mut c, &format!("DROP USER {}", account(name, host)))
            .await
            .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        Ok(())
    }

    async fn update_user(&self, name: &str, host: &str, update: &UserUpdate) -> Result<()> {
        let host = self.check_account(name, host)?;
        if let Some(n) = &update.name {
            validate_user_name(self.base.manager, n)?;
            self.base.check_reserved(n)?;
        }
        if let Some(h) = &update.host {
            validate_host(h)?;
        }
        if let Some(p) = &update.password {
            validate_password(p)?;
        }
        let mut c = self.connect_admin().await?;
        self.require_user(&mut c, name, host).await?;
        let acct = account(name, host);
        let (new_name, new_host) = (
            update.name.as_deref().unwrap_or(name),
            update.host.as_deref().unwrap_or(host),
        );
        let renamed = (new_name, new_host) != (name, host);
        if renamed && self.has_user(&mut c, new_name, new_host).await? {
            return Err(Error::bad_request(format!(
                "A user named '{new_name}'@'{new_host}' already exists."
            )));
        }
        if let Some(p) = &update.password {
            exec_sql(
                &mut c,
                &format!("ALTER USER {acct} IDENTIFIED BY {}", lit(p.expose())),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        if renamed {
            exec_sql(
                &mut c,
                &format!("RENAME USER {acct} TO {}", account(new_name, new_host)),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }

    async fn change_passwords(&self, users: &[UserSpec]) -> Result<()> {
        self.base.validate_users(users)?;
        let mut c = self.connect_admin().await?;
        for u in users {
            let host = Self::user_host(u.host.as_deref());
            self.require_user(&mut c, &u.name, host).await?;
        }
        for u in users {
            let acct = account(&u.name, Self::user_host(u.host.as_deref()));
            exec_sql(
                &mut c,
                &format!(
                    "ALTER USER {acct} IDENTIFIED BY {}",
                    lit(u.password.expose())
                ),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }

    async fn grant_access(&self, name: &str, host: &str, dbs: &[String]) -> Result<()> {
        let host = self.check_account(name, host)?;
        for d in dbs {
            validate_database_name(self.base.manager, d)?;
        }
        let mut c = self.connect_admin().await?;
        self.require_user(&mut c, name, host).await?;
        for d in dbs {
            if !self.has_db(&mut c, d).await? {
                return Err(Error::not_found("Database", d));
            }
        }
        for d in dbs {
            exec_sql(
                &mut c,
                &format!(
                    "GRANT ALL PRIVILEGES ON {}.* TO {}",
                    grant_db(d),
                    account(name, host)
                ),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }

    async fn revoke_access(&self, name: &str, host: &str, db: &str) -> Result<()> {
        let host = self.check_account(name, host)?;
        validate_database_name(self.base.manager, db)?;
        let mut c = self.connect_admin().await?;
        self.require_user(&mut c, name, host).await?;
        if !self.has_db(&mut c, db).await? {
            return Err(Error::not_found("Database", db));
        }
        let granted = sqlx::query("SELECT 1 FROM mysql.db WHERE User = ? AND Host = ? AND Db = ?")
            .bind(name)
            .bind(host)
            .bind(grant_db_name(db))
            .fetch_optional(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        if granted.is_some() {
            exec_sql(
                &mut c,
                &format!(
                    "REVOKE ALL PRIVILEGES ON {}.* FROM {}",
                    grant_db(db),
                    account(name, host)
                ),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }

    async fn enable_root(&self, password: Option<Secret>) -> Result<Secret> {
        let pw = password.unwrap_or_else(|| Secret::generate(24));
        validate_password(&pw)?;
        let acct = account("root", "%");
        let p = lit(pw.expose());
        self.exec(&[
            format!("CREATE USER IF NOT EXISTS {acct} IDENTIFIED BY {p}"),
            format!("ALTER USER {acct} IDENTIFIED BY {p}"),
            format!("GRANT ALL PRIVILEGES ON *.* TO {acct} WITH GRANT OPTION"),
        ])
        .await?;
        Ok(pw)
    }

    async fn disable_root(&self) -> Result<()> {
        self.exec(&[format!("DROP USER IF EXISTS {}", account("root", "%"))])
            .await
    }

    async fn apply_overrides(&self, overrides: &Map<String, Value>) -> Result<bool> {
        // See `crate::overrides`: stored and rendered first, then changed parameters applied live where possible.
        let changed = crate::overrides::begin(&self.base, overrides)?;
        self.render_config()?;
        let restart_keys = if changed.is_empty() {
            Vec::new()
        } else {
            let cnf = std::fs::read_to_string(self.cnf_path()).map_err(|e| {
                Error::backend(
                    "mysql",
                    format!("reading the rendered config failed: {e}"),
                    false,
                )
            })?;
            // An engine that does not answer starts with the rendered file.
            match self.connect_admin().await {
                Ok(mut c) => {
                    let r = crate::overrides::mysql_live(&mut c, &cnf, &changed).await;
                    let _ = c.close().await;
                    r?
                }
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

    async fn guest_log_list(
        &self,
        ctx: &trove_core::guest_log::GuestLogContext,
    ) -> Result<Vec<trove_core::model::GuestLog>> {
        trove_core::guest_log::list_logs(
            &crate::logs::EngineLogs::mysql(&self.base, &self.socket),
            ctx,
        )
        .await
    }

    async fn guest_log_action(
        &self,
        ctx: &trove_core::guest_log::GuestLogContext,
        req: &trove_core::model::LogActionRequest,
    ) -> Result<trove_core::model::GuestLog> {
        trove_core::guest_log::log_action(
            &crate::logs::EngineLogs::mysql(&self.base, &self.socket),
            ctx,
            req,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(lit("it's\\"), "'it\\'s\\\\'");
        assert_eq!(grant_db("my_db"), "`my\\_db`");
        assert_eq!(unescape_grant_db("my\\_db"), "my_db");
        assert!(crate::base::check_charset("utf8mb4").is_ok());
        assert!(crate::base::check_charset("utf8; DROP").is_err());
    }
}
