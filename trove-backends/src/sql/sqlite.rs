//! [`SqliteStore`]: the embedded infrastructure store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Sqlite;
use tokio::sync::Mutex;
use trove_core::{Error, Result};

use super::imp::WriteTx;
use super::{check_schema, db_error, CatalogGeneration, SchemaStatus};

/// Migrations of the SQLite schema, embedded in the binary.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a writer waits for another process's write lock before failing with a transient error.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// [`InfraStore`](trove_core::ports::InfraStore) on one SQLite file (WAL mode, `synchronous = FULL`; see the
/// [module docs](super)). Writers in this process queue on an in-process gate, then take SQLite's write lock
/// with `BEGIN IMMEDIATE`; readers run concurrently.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    gate: Arc<Mutex<()>>,
    path: PathBuf,
    catalog: CatalogGeneration,
}

impl SqliteStore {
    pub(crate) const BACKEND: &'static str = "sqlite";
    pub(crate) const FOR_UPDATE: &'static str = "";

    /// Opens (creating the file and its directory if missing) the database at `path`, without checking or
    /// migrating the schema; see [`super::open`] for the checked way.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            // A new state directory can be traversed but not listed by others (0711): engines run as an
            // unprivileged user and must reach their own directories below it. The database files themselves are
            // private to the owner (0600, below), as they describe every tenant's instances.
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o711);
            builder.create(dir).map_err(|e| Error::Backend {
                backend: Self::BACKEND,
                message: format!("cannot create the state directory {}: {e}", dir.display()),
                transient: false,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // Deleted and overwritten content is zeroed, not left in free pages (defence in depth: secrets
            // are sealed before they reach the store).
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|e| Error::Backend {
                backend: Self::BACKEND,
                message: format!("cannot open {}: {e}", path.display()),
                transient: false,
            })?;
        #[cfg(unix)]
        for suffix in ["", "-wal", "-shm"] {
            use std::os::unix::fs::PermissionsExt;
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let file = std::path::PathBuf::from(file);
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(
                    |e| Error::Backend {
                        backend: Self::BACKEND,
                        message: format!("cannot make {} private: {e}", file.display()),
                        transient: false,
                    },
                )?;
            }
        }
        Ok(SqliteStore {
            pool,
            gate: Arc::new(Mutex::new(())),
            path: path.to_path_buf(),
            catalog: CatalogGeneration::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection pool (for benchmarks and tools; writes through it bypass the store's rules).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The applied and known schema versions.
    pub async fn schema_status(&self) -> Result<SchemaStatus> {
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let has_table: Option<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(Self::BACKEND, e))?;
        if has_table.is_none() {
            return Ok(SchemaStatus {
                applied: None,
                known,
            });
        }
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| db_error(Self::BACKEND, e))?;
        Ok(SchemaStatus { applied, known })
    }

    /// Applies pending migrations (refusing a newer schema) and returns the resulting status.
    pub async fn sync(&self) -> Result<SchemaStatus> {
        let status = self.schema_status().await?;
        if check_schema(Self::BACKEND, status, true)? {
            MIGRATOR.run(&self.pool).await.map_err(|e| Error::Backend {
                backend: Self::BACKEND,
                message: format!("migrating {} failed: {e}", self.path.display()),
                transient: false,
            })?;
        }
        self.schema_status().await
    }

    /// Checks the schema at start-up: newer is refused; older is migrated when `migrate`, refused otherwise.
    pub async fn prepare(&self, migrate: bool) -> Result<()> {
        let status = self.schema_status().await?;
        if check_schema(Self::BACKEND, status, migrate)? {
            self.sync().await?;
        }
        Ok(())
    }

    /// Closes the pool (checkpointing the WAL on the last connection).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn begin_write(&self, _quota_tenant: Option<&str>) -> Result<WriteTx<Sqlite>> {
        // One writer at a time in this process; BEGIN IMMEDIATE takes the database write lock up front (other
        // processes wait up to the busy timeout), so a quota check sees every committed row and no concurrent
        // writer can slip in before this transaction commits.
        let gate = self.gate.clone().lock_owned().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error(Self::BACKEND, e))?;
        Ok(WriteTx {
            tx,
            _gate: Some(gate),
            backend: Self::BACKEND,
        })
    }
}

impl_infra_store!(SqliteStore, Sqlite);
