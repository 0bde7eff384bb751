//! [`PostgresStore`]: the infrastructure store for distributed deployments.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Postgres;
use trove_core::{Error, Result};

use super::imp::WriteTx;
use super::{check_schema, db_error, redact_url, CatalogGeneration, SchemaStatus};

/// Migrations of the PostgreSQL schema, embedded in the binary.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// First key of the advisory locks that serialise quota checks (the second is a hash of the tenant id).
const QUOTA_LOCK_CLASS: i32 = 0x7472_6f76; // "trov"

/// [`InfraStore`](trove_core::ports::InfraStore) on PostgreSQL (see the [module docs](super) for how commits,
/// quota checks and workflow claims stay correct with several workers).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    url: String,
    catalog: CatalogGeneration,
}

impl PostgresStore {
    pub(crate) const BACKEND: &'static str = "postgres";
    pub(crate) const FOR_UPDATE: &'static str = " FOR UPDATE";

    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB`) without checking or migrating the schema;
    /// see [`super::open`] for the checked way.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        Self::connect_with(url, 16).await
    }

    /// Connects with a pool of at most `max_connections`.
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<PostgresStore> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await
            .map_err(|e| Error::Backend {
                backend: Self::BACKEND,
                message: format!("cannot connect to {}: {e}", redact_url(url)),
                transient: true,
            })?;
        Ok(PostgresStore {
            pool,
            url: url.to_string(),
            catalog: CatalogGeneration::default(),
        })
    }

    /// The connection pool (for benchmarks and tools; writes through it bypass the store's rules).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The applied and known schema versions.
    pub async fn schema_status(&self) -> Result<SchemaStatus> {
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let has_table: Option<String> =
            sqlx::query_scalar("SELECT CAST(to_regclass('_sqlx_migrations') AS TEXT)")
                .fetch_one(&self.pool)
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

    /// Applies pending migrations (refusing a newer schema) and returns the resulting status. Concurrent callers
    /// are serialised by the migrator's own lock.
    pub async fn sync(&self) -> Result<SchemaStatus> {
        let status = self.schema_status().await?;
        if check_schema(Self::BACKEND, status, true)? {
            MIGRATOR.run(&self.pool).await.map_err(|e| Error::Backend {
                backend: Self::BACKEND,
                message: format!("migrating {} failed: {e}", redact_url(&self.url)),
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

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn begin_write(
        &self,
        quota_tenant: Option<&str>,
    ) -> Result<WriteTx<Postgres>> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| db_error(Self::BACKEND, e))?;
        if let Some(tenant) = quota_tenant {
            // Held until commit or rollback: quota checks of one tenant run one at a time, and the check (a
            // statement run after the lock is granted) sees every row committed by the previous holder.
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(QUOTA_LOCK_CLASS)
                .bind(tenant)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(Self::BACKEND, e))?;
        }
        Ok(WriteTx {
            tx,
            _gate: None,
            backend: Self::BACKEND,
        })
    }
}

impl_infra_store!(PostgresStore, Postgres);
