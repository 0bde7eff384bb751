//! The `postgresql` strategy (`initdb`, `postgres`).
//!
//! Memory: `shared_buffers` = 25 % of the flavor RAM (at least 16 MB), `effective_cache_size` = 75 %,
//! `max_connections` = RAM / 8 MB (between 20 and 500). The bootstrap superuser is `os_admin` (scram password);
//! every connection needs a password (`scram-sha-256` for local and host lines). `PUBLIC` loses `CONNECT` on every
//! database, so access is exactly what was granted; a grant also gives the user the database's `public` schema
//! (PostgreSQL 15 no longer lets `PUBLIC` create there).

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use trove_core::model::{
    validate_database_name, validate_password, validate_user_name, DatabaseSpec, Manager, Secret,
    SslChange, SslChangeResult, SslView, UserSpec, UserUpdate,
};
use trove_core::ports::{
    DatastoreStrategy, EngineStatus, FsStats, PrepareRequest, StrategyContext, UserInfo,
};
use trove_core::state::ServiceStatus;
use trove_core::{Error, Result};

mod tls;

use crate::base::Base;
use crate::common::{
    check_override_key, down_status, find_program, image_dir, io_err, override_value, read_pid,
    run_as_user, set_mode, share_mb, spawn_detached, status, wait_ready, write_engine_file,
    EngineConfig,
};

/// Binaries of PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresBinaries {
    /// `initdb`.
    pub initdb: PathBuf,
    /// `postgres`.
    pub postgres: PathBuf,
}

/// Debian's versioned binary directories, newest first.
pub(crate) fn debian_pg_dirs() -> Vec<PathBuf> {
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
            (Some(initdb), Some(postgres)) => Ok(PostgresBinaries { initdb, postgres }),
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

/// Quotes an identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal as an escape string (`E'...'`), safe whatever `standard_conforming_strings` says.
pub(crate) fn lit(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The strategy for one PostgreSQL instance.
pub struct PostgresStrategy {
    base: Base,
    bins: PostgresBinaries,
    socket_dir: PathBuf,
}

impl std::fmt::Debug for PostgresStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStrategy")
            .field("port", &self.base.ctx.port)
            .finish()
    }
}

const ADMIN_DB: &str = "postgres";

impl PostgresStrategy {
    /// A strategy for the instance in `ctx`.
    pub fn new(ctx: &StrategyContext, cfg: &EngineConfig) -> Result<PostgresStrategy> {
        let base = Base::new(Manager::Postgresql, ctx, cfg)?;
        let bins = PostgresBinaries::find(image_dir(ctx).as_deref())?;
        let engine = &base.layout.engine_dir;
        // The socket is `<dir>/.s.PGSQL.<port>`; unix socket paths are limited to 107 bytes.
        let socket_dir = if engine.as_os_str().len() + 20 < 100 {
            engine.clone()
        } else {
            std::env::temp_dir().join(format!("trove-{}", ctx.instance_id.simple()))
        };
        Ok(PostgresStrategy {
            base,
            bins,
            socket_dir,
        })
    }

    /// The strategy as a trait object.
    pub fn into_dyn(self) -> Arc<dyn DatastoreStrategy> {
        Arc::new(self)
    }

    /// What the engine's command line contains (tells our engine from a process that reused its pid).
    fn idents(&self) -> Vec<String> {
        vec![self.base.layout.data_dir.display().to_string()]
    }

    fn pid_path(&self) -> PathBuf {
        self.base.layout.data_dir.join("postmaster.pid")
    }
    fn log_path(&self) -> PathBuf {
        self.base.layout.engine_dir.join("postgresql.log")
    }
    fn conf_path(&self) -> PathBuf {
        self.base.layout.data_dir.join("trove.conf")
    }

    fn err(&self, e: sqlx::Error) -> Error {
        match e {
            sqlx::Error::Database(d) => Error::Guest {
                instance_id: self.base.ctx.instance_id,
                message: d.message().to_string(),
            },
            other => Error::backend("postgresql", other, true),
        }
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
        let secret = self.base.layout.admin_secret()?.ok_or_else(|| {
            Error::backend(
                "postgresql",
                "the instance has no admin account yet (not prepared)",
                false,
            )
        })?;
        self.options("os_admin", secret.expose(), db)
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

    fn render_config(&self) -> Result<()> {
        let st = self.base.layout.state()?;
        let bind = if self.base.ctx.bind_address.is_empty() {
            "127.0.0.1"
        } else {
            &self.base.ctx.bind_address
        };
        let mut conf = format!(
            "# Rendered by trove-guest for {mem} MB of RAM; do not edit (apply a configuration group instead).\n\
             listen_addresses = '{bind}'\n\
             port = {port}\n\
             unix_socket_directories = '{sock}'\n\
             unix_socket_permissions = 0700\n\
             # 25 % of the flavor RAM\n\
             shared_buffers = {sb}MB\n\
             # 75 % of the flavor RAM\n\
             effective_cache_size = {ecs}MB\n\
             max_connections = {mc}\n\
             standard_conforming_strings = on\n\
             password_encryption = 'scram-sha-256'\n",
            mem = st.memory_mb,
            port = self.base.ctx.port,
            sock = self.socket_dir.display(),
            sb = share_mb(st.memory_mb, 0.25, 16),
            ecs = share_mb(st.memory_mb, 0.75, 32),
            mc = (st.memory_mb / 8).clamp(20, 500),
        );
        if !st.overrides.is_empty() {
            conf.push_str("# configuration overrides\n");
            for (k, v) in &st.overrides {
                conf.push_str(&format!("{k} = '{}'\n", override_value(k, v)?));
            }
        }
        conf.push_str(&self.tls_conf()?);
        write_engine_file(&self.conf_path(), &conf, self.base.run_as)
    }

    fn initialized(&self) -> bool {
        self.base.layout.data_dir.join("PG_VERSION").is_file()
            && self
                .base
                .layout
                .data_dir
                .join("global")
                .join("pg_control")
                .is_file()
    }

    async fn init_datadir(&self) -> Result<()> {
        let l = &self.base.layout;
        if let Ok(rd) = std::fs::read_dir(&l.data_dir) {
            for e in rd.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
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
        let hba = l.data_dir.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).map_err(|e| io_err("read", &hba, e))?;
        text.push_str(
            "\nhost    all             all             all                     scram-sha-256\n",
        );
        write_engine_file(&hba, &text, self.base.run_as)
    }

    async fn start_engine(&self) -> Result<()> {
        self.base.layout.update_state(|s| s.running = true)?;
        let pid = match self.base.engine_pid(&self.pid_path(), &self.idents()) {
            Some(pid) => pid,
            None => {
                let _ = std::fs::remove_file(self.pid_path());
                if self.socket_dir != self.base.layout.engine_dir {
                    std::fs::create_dir_all(&self.socket_dir)
                        .map_err(|e| io_err("create", &self.socket_dir, e))?;
                    set_mode(&self.socket_dir, 0o700)?;
                    self.base.run_as.own(&self.socket_dir)?;
                }
                self.render_config()?;
                let data = self.base.layout.data_dir.display().to_string();
                spawn_detached(
                    &self.bins.postgres,
                    &[OsStr::new("-D"), OsStr::new(&data)],
                    self.base.run_as,
                    &self.base.layout.engine_dir,
                    &self.log_path(),
                )?
            }
        };
        self.base.record_pid(pid)?;
        wait_ready(
            "postgres",
            self.base.cfg.ready_timeout,
            || Some(pid),
            &self.log_path(),
            || self.answers(),
        )
        .await
    }

    async fn answers(&self) -> Result<()> {
        match self.connect_admin(ADMIN_DB).await {
            Ok(c) => {
                let _ = c.close().await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn database_exists(&self, c: &mut PgConnection, name: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.is_some())
    }

    async fn role_exists(&self, c: &mut PgConnection, name: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(name)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.is_some())
    }

    async fn user_databases(&self, c: &mut PgConnection) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT datname::text FROM pg_database WHERE NOT datistemplate ORDER BY datname",
        )
        .fetch_all(&mut *c)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(|e| self.err(e)))
            .collect()
    }

    async fn grant(&self, name: &str, dbs: &[String]) -> Result<()> {
        for d in dbs {
            self.exec(
                ADMIN_DB,
                &[format!(
                    "GRANT ALL PRIVILEGES ON DATABASE {} TO {}",
                    ident(d),
                    ident(name)
                )],
            )
            .await?;
            self.exec(
                d,
                &[format!("GRANT ALL ON SCHEMA public TO {}", ident(name))],
            )
            .await?;
        }
        Ok(())
    }

    async fn require_role(&self, c: &mut PgConnection, name: &str) -> Result<()> {
        if self.role_exists(c, name).await? {
            Ok(())
        } else {
            Err(Error::not_found("User", name))
        }
    }

    /// Creates databases; `strict` refuses existing ones (the API), otherwise they are left as they are (prepare).
    async fn create_dbs(&self, dbs: &[DatabaseSpec], strict: bool) -> Result<()> {
        self.base.validate_databases(dbs)?;
        if dbs.is_empty() {
            return Ok(());
        }
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let mut todo = Vec::new();
        for db in dbs {
            if !self.database_exists(&mut c, &db.name).await? {
                todo.push(db);
            } else if strict {
                return Err(Error::bad_request(format!(
                    "A database named '{}' already exists.",
                    db.name
                )));
            }
        }
        for db in todo {
            let mut s = format!("CREATE DATABASE {}", ident(&db.name));
            if db.character_set.is_some() || db.collate.is_some() {
                s.push_str(" TEMPLATE template0");
            }
            if let Some(cs) = &db.character_set {
                s.push_str(&format!(" ENCODING {}", lit(cs)));
            }
            if let Some(co) = &db.collate {
                s.push_str(&format!(" LC_COLLATE {} LC_CTYPE {}", lit(co), lit(co)));
            }
            exec_sql(&mut c, &s).await.map_err(|e| self.err(e))?;
            exec_sql(
                &mut c,
                &format!("REVOKE ALL ON DATABASE {} FROM PUBLIC", ident(&db.name)),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }

    /// Creates login roles with their grants; `strict` refuses existing ones (the API), otherwise their password
    /// and grants are set again (prepare).
    async fn create_roles(&self, users: &[UserSpec], strict: bool) -> Result<()> {
        self.base.validate_users(users)?;
        if users.is_empty() {
            return Ok(());
        }
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let mut exists = Vec::new();
        for u in users {
            let e = self.role_exists(&mut c, &u.name).await?;
            if e && strict {
                return Err(Error::bad_request(format!(
                    "A user named '{}' already exists.",
                    u.name
                )));
            }
            for d in &u.databases {
                if !self.database_exists(&mut c, d).await? {
                    return Err(Error::not_found("Database", d));
                }
            }
            exists.push(e);
        }
        for (u, e) in users.iter().zip(exists) {
            let verb = if e { "ALTER" } else { "CREATE" };
            exec_sql(
                &mut c,
                &format!(
                    "{verb} ROLE {} LOGIN PASSWORD {}",
                    ident(&u.name),
                    lit(u.password.expose())
                ),
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        for u in users {
            self.grant(&u.name, &u.databases).await?;
        }
        Ok(())
    }

    fn check_user(&self, name: &str) -> Result<()> {
        validate_user_name(Manager::Postgresql, name)?;
        self.base.check_reserved(name)
    }
}

#[async_trait]
impl DatastoreStrategy for PostgresStrategy {
    fn manager(&self) -> Manager {
        Manager::Postgresql
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
            self.init_datadir().await?;
        }
        self.start_engine().await?;
        let st = self.base.layout.state()?;
        if !st.prepared {
            // Access is what is granted: PUBLIC may not connect to the built-in databases.
            self.exec(
                ADMIN_DB,
                &[
                    "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC".to_string(),
                    "REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC".to_string(),
                ],
            )
            .await?;
            self.base.layout.update_state(|s| s.prepared = true)?;
        }
        self.create_dbs(&req.databases, false).await?;
        self.create_roles(&req.users, false).await?;
        if let Some(p) = &req.root_password {
            self.enable_root(Some(p.clone())).await?;
        }
        Ok(())
    }

    async fn start(&self) -> Result<()> {
        self.start_engine().await
    }

    async fn stop(&self) -> Result<()> {
        // SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected, a checkpoint is written.
        self.base
            .stop_process(&self.pid_path(), &self.idents(), "INT")
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
                    let mut c = self.connect_admin(ADMIN_DB).await?;
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

    async fn create_databases(&self, dbs: &[DatabaseSpec]) -> Result<()> {
        self.create_dbs(dbs, true).await
    }

    async fn list_databases(&self) -> Result<Vec<DatabaseSpec>> {
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let rows = sqlx::query(
            "SELECT datname::text, pg_encoding_to_char(encoding)::text, datcollate::text FROM pg_database \
             WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY datname",
        )
        .fetch_all(&mut c)
        .await
        .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        rows.iter()
            .map(|r| {
                Ok(DatabaseSpec {
                    name: r.try_get(0).map_err(|e| self.err(e))?,
                    character_set: r.try_get(1).map_err(|e| self.err(e))?,
                    collate: r.try_get(2).map_err(|e| self.err(e))?,
                })
            })
            .collect()
    }

    async fn delete_database(&self, name: &str) -> Result<()> {
        validate_database_name(Manager::Postgresql, name)?;
        if name == ADMIN_DB {
            return Err(Error::bad_request("The database 'postgres' is reserved."));
        }
        let mut c = self.connect_admin(ADMIN_DB).await?;
        if !self.database_exists(&mut c, name).await? {
            return Err(Error::not_found("Database", name));
        }
        exec_sql(
            &mut c,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name)),
        )
        .await
        .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        Ok(())
    }

    async fn create_users(&self, users: &[UserSpec]) -> Result<()> {
        self.create_roles(users, true).await
    }

    async fn list_users(&self) -> Result<Vec<UserInfo>> {
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let rows = sqlx::query(
            "SELECT r.rolname::text, COALESCE(ARRAY(SELECT d.datname::text FROM pg_database d, aclexplode(d.datacl) a \
               WHERE a.grantee = r.oid AND a.privilege_type = 'CONNECT' ORDER BY d.datname), '{}') \
             FROM pg_roles r WHERE r.rolcanlogin AND r.rolname NOT IN ('os_admin', 'postgres') \
               AND r.rolname NOT LIKE 'pg\\_%' ORDER BY r.rolname",
        )
        .fetch_all(&mut c)
        .await
        .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        rows.iter()
            .map(|r| {
                Ok(UserInfo {
                    name: r.try_get(0).map_err(|e| self.err(e))?,
                    host: "%".to_string(),
                    databases: r.try_get(1).map_err(|e| self.err(e))?,
                })
            })
            .collect()
    }

    async fn delete_user(&self, name: &str, _host: &str) -> Result<()> {
        self.check_user(name)?;
        let mut c = self.connect_admin(ADMIN_DB).await?;
        self.require_role(&mut c, name).await?;
        let dbs = self.user_databases(&mut c).await?;
        let _ = c.close().await;
        // What the user owns goes to os_admin (data is kept); its privileges go away in every database.
        for d in &dbs {
            self.exec(
                d,
                &[
                    format!("REASSIGN OWNED BY {} TO os_admin", ident(name)),
                    format!("DROP OWNED BY {}", ident(name)),
                ],
            )
            .await?;
        }
        self.exec(ADMIN_DB, &[format!("DROP ROLE IF EXISTS {}", ident(name))])
            .await
    }

    async fn update_user(&self, name: &str, _host: &str, update: &UserUpdate) -> Result<()> {
        self.check_user(name)?;
        if let Some(n) = &update.name {
            self.check_user(n)?;
        }
        if let Some(p) = &update.password {
            validate_password(p)?;
        }
        if update.host.as_deref().is_some_and(|h| h != "%") {
            return Err(Error::bad_request(
                "PostgreSQL users have no host; only '%' is accepted.",
            ));
        }
        let mut c = self.connect_admin(ADMIN_DB).await?;
        self.require_role(&mut c, name).await?;
        let mut stmts = Vec::new();
        if let Some(n) = update.name.as_deref().filter(|n| *n != name) {
            if self.role_exists(&mut c, n).await? {
                return Err(Error::bad_request(format!(
                    "A user named '{n}' already exists."
                )));
            }
            stmts.push(format!("ALTER ROLE {} RENAME TO {}", ident(name), ident(n)));
        }
        let _ = c.close().await;
        let current = update.name.as_deref().unwrap_or(name);
        if let Some(p) = &update.password {
            stmts.push(format!(
                "ALTER ROLE {} PASSWORD {}",
                ident(current),
                lit(p.expose())
            ));
        }
        self.exec(ADMIN_DB, &stmts).await
    }

    async fn change_passwords(&self, users: &[UserSpec]) -> Result<()> {
        self.base.validate_users(users)?;
        let mut c = self.connect_admin(ADMIN_DB).await?;
        for u in users {
            self.require_role(&mut c, &u.name).await?;
        }
        let _ = c.close().await;
        let stmts: Vec<String> = users
            .iter()
            .map(|u| {
                format!(
                    "ALTER ROLE {} PASSWORD {}",
                    ident(&u.name),
                    lit(u.password.expose())
                )
            })
            .collect();
        self.exec(ADMIN_DB, &stmts).await
    }

    async fn grant_access(&self, name: &str, _host: &str, dbs: &[String]) -> Result<()> {
        self.check_user(name)?;
        for d in dbs {
            validate_database_name(Manager::Postgresql, d)?;
        }
        let mut c = self.connect_admin(ADMIN_DB).await?;
        self.require_role(&mut c, name).await?;
        for d in dbs {
            if !self.database_exists(&mut c, d).await? {
                return Err(Error::not_found("Database", d));
            }
        }
        let _ = c.close().await;
        self.grant(name, dbs).await
    }

    async fn revoke_access(&self, name: &str, _host: &str, db: &str) -> Result<()> {
        self.check_user(name)?;
        validate_database_name(Manager::Postgresql, db)?;
        let mut c = self.connect_admin(ADMIN_DB).await?;
        self.require_role(&mut c, name).await?;
        if !self.database_exists(&mut c, db).await? {
            return Err(Error::not_found("Database", db));
        }
        let _ = c.close().await;
        self.exec(
            db,
            &[format!("REVOKE ALL ON SCHEMA public FROM {}", ident(name))],
        )
        .await?;
        self.exec(
            ADMIN_DB,
            &[format!(
                "REVOKE ALL PRIVILEGES ON DATABASE {} FROM {}",
                ident(db),
                ident(name)
            )],
        )
        .await
    }

    async fn enable_root(&self, password: Option<Secret>) -> Result<Secret> {
        let pw = password.unwrap_or_else(|| Secret::generate(24));
        validate_password(&pw)?;
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let verb = if self.role_exists(&mut c, "postgres").await? {
            "ALTER"
        } else {
            "CREATE"
        };
        exec_sql(
            &mut c,
            &format!(
                "{verb} ROLE postgres SUPERUSER LOGIN PASSWORD {}",
                lit(pw.expose())
            ),
        )
        .await
        .map_err(|e| self.err(e))?;
        let _ = c.close().await;
        Ok(pw)
    }

    async fn disable_root(&self) -> Result<()> {
        let mut c = self.connect_admin(ADMIN_DB).await?;
        if self.role_exists(&mut c, "postgres").await? {
            exec_sql(&mut c, "ALTER ROLE postgres NOLOGIN PASSWORD NULL")
                .await
                .map_err(|e| self.err(e))?;
        }
        let _ = c.close().await;
        Ok(())
    }

    async fn apply_overrides(&self, overrides: &Map<String, Value>) -> Result<bool> {
        // See `crate::overrides`: stored and rendered first, then changed parameters applied live where possible.
        let changed = crate::overrides::begin(&self.base, overrides)?;
        self.render_config()?;
        let restart_keys = if changed.is_empty() {
            Vec::new()
        } else {
            // An engine that does not answer starts with the rendered file.
            match self.connect_admin(ADMIN_DB).await {
                Ok(mut c) => {
                    let r = crate::overrides::postgres_live(&mut c, &changed).await;
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
            &crate::logs::EngineLogs::postgres(&self.base, &self.socket_dir),
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
            &crate::logs::EngineLogs::postgres(&self.base, &self.socket_dir),
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
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(lit("it's\\"), "E'it\\'s\\\\'");
    }
}
