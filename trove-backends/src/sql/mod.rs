//! [`InfraStore`] on SQLite (the embedded default: one file in the state directory) and PostgreSQL (shared by
//! several workers), with sqlx.
//!
//! # Opening a store
//! Binaries name a [`StoreLocation`] (`--state-dir DIR` or `--database-url URL`) and call [`open`], which
//! refuses a schema newer than this build knows and applies pending migrations, or [`open_checked`], which also
//! refuses a schema that is not up to date (run [`db_sync`], i.e. `trove-manage db_sync`, first).
//!
//! # Schema
//! Migrations are embedded in the binary (`trove-backends/migrations/{sqlite,postgres}`). Each entity is one row
//! holding the columns the store filters, orders or locks on, and the whole record as JSON in `body`.
//!
//! # Durability and concurrency
//! - SQLite runs in WAL mode with `synchronous = FULL`: every acknowledged commit has been fsynced to the WAL, so
//!   neither a `kill -9` of the process nor a power loss loses it. (`NORMAL` would survive a process kill but may
//!   lose the last commits on power loss; the cost of `FULL` is one fsync per commit, which batched heartbeats
//!   amortise.) Every write transaction starts with `BEGIN IMMEDIATE`, so writers (and therefore quota checks)
//!   are serialised; a busy timeout makes other processes (e.g. `trove-manage`) wait instead of failing.
//! - PostgreSQL: a commit with a quota check first takes a transaction-scoped advisory lock on the tenant, so
//!   quota checks of one tenant are serialised while other tenants proceed; versioned writes are conditional
//!   `UPDATE`s (`WHERE version = expected`) and inserts rely on the primary key, so a lost race is a conflict;
//!   workflow claims lock the row (`SELECT ... FOR UPDATE`) and write it back with a conditional `UPDATE`, so a
//!   step is never claimed by two workers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use trove_core::ports::InfraStore;
use trove_core::{Error, Result};

#[macro_use]
mod imp;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// The store's [`InfraStore::catalog_generation`]: shared by a store's clones, bumped after every catalog write.
#[derive(Debug, Clone, Default)]
pub(crate) struct CatalogGeneration(Arc<std::sync::atomic::AtomicU64>);

impl CatalogGeneration {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A guard that bumps the generation when dropped: after the write, whatever its outcome.
    pub(crate) fn write(&self) -> CatalogWrite<'_> {
        CatalogWrite(self)
    }
}

/// See [`CatalogGeneration::write`].
pub(crate) struct CatalogWrite<'a>(&'a CatalogGeneration);

impl Drop for CatalogWrite<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// File name of the SQLite database inside a state directory.
pub const SQLITE_FILE: &str = "trove.sqlite";

/// Where the infrastructure database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// Embedded SQLite: `<dir>/trove.sqlite` (the directory is created if missing).
    StateDir(PathBuf),
    /// A database URL: `postgres://...` / `postgresql://...`, or `sqlite://PATH` / `sqlite:PATH`.
    Url(String),
}

impl StoreLocation {
    /// The per-user state directory the all-in-one and `trove-manage` use by default: `/var/lib/trove-rs` for
    /// root (engines run as an unprivileged user and could not reach a directory under `/root`), otherwise
    /// `$XDG_DATA_HOME/trove-rs`, else `$HOME/.local/share/trove-rs`, else `./trove-rs`.
    pub fn default_state_dir() -> PathBuf {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
                return PathBuf::from("/var/lib/trove-rs");
            }
        }
        if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("trove-rs");
        }
        if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            return PathBuf::from(h)
                .join(".local")
                .join("share")
                .join("trove-rs");
        }
        PathBuf::from("trove-rs")
    }

    /// The location named by command-line options: a URL wins, else the state dir, else the default state dir.
    pub fn from_options(state_dir: Option<PathBuf>, database_url: Option<String>) -> StoreLocation {
        match (database_url, state_dir) {
            (Some(url), _) => StoreLocation::Url(url),
            (None, Some(dir)) => StoreLocation::StateDir(dir),
            (None, None) => StoreLocation::StateDir(StoreLocation::default_state_dir()),
        }
    }

    /// A description safe to print: a URL's password is masked.
    pub fn display(&self) -> String {
        match self {
            StoreLocation::StateDir(d) => format!("sqlite:{}", d.join(SQLITE_FILE).display()),
            StoreLocation::Url(u) => redact_url(u),
        }
    }

    fn resolve(&self) -> Result<Target> {
        match self {
            StoreLocation::StateDir(d) => Ok(Target::Sqlite(d.join(SQLITE_FILE))),
            StoreLocation::Url(u) => {
                if let Some(p) = u
                    .strip_prefix("sqlite://")
                    .or_else(|| u.strip_prefix("sqlite:"))
                {
                    if p.is_empty() {
                        return Err(Error::bad_request(
                            "The sqlite URL names no file (use sqlite://PATH).",
                        ));
                    }
                    Ok(Target::Sqlite(PathBuf::from(p)))
                } else if u.starts_with("postgres://") || u.starts_with("postgresql://") {
                    Ok(Target::Postgres(u.clone()))
                } else {
                    Err(Error::bad_request(format!(
                        "Unsupported database URL '{}': use postgres://USER@HOST:PORT/DB or sqlite://PATH.",
                        redact_url(u)
                    )))
                }
            }
        }
    }
}

enum Target {
    Sqlite(PathBuf),
    Postgres(String),
}

/// Schema versions of a database, as [`schema_status`] and [`db_sync`] report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Highest migration applied to the database (`None`: an empty database).
    pub applied: Option<i64>,
    /// Highest migration this build knows.
    pub known: i64,
}

impl SchemaStatus {
    /// Whether the database is at exactly the version this build knows.
    pub fn up_to_date(&self) -> bool {
        self.applied == Some(self.known)
    }
}

/// Opens the store at `loc`: refuses a schema newer than this build knows, applies pending migrations.
pub async fn open(loc: &StoreLocation) -> Result<Arc<dyn InfraStore>> {
    open_with(loc, true).await
}

/// Opens the store at `loc` without migrating: refuses a schema that is newer than this build knows, or older
/// (with a message telling to run `trove-manage db_sync`).
pub async fn open_checked(loc: &StoreLocation) -> Result<Arc<dyn InfraStore>> {
    open_with(loc, false).await
}

async fn open_with(loc: &StoreLocation, migrate: bool) -> Result<Arc<dyn InfraStore>> {
    match loc.resolve()? {
        Target::Sqlite(path) => sqlite_open(&path, migrate).await,
        Target::Postgres(url) => postgres_open(&url, migrate).await,
    }
}

/// Applies pending migrations (creating the SQLite file if needed) and returns the resulting status.
/// Idempotent; refuses a database whose schema is newer than this build.
pub async fn db_sync(loc: &StoreLocation) -> Result<SchemaStatus> {
    match loc.resolve()? {
        #[cfg(feature = "sqlite")]
        Target::Sqlite(path) => SqliteStore::open(&path).await?.sync().await,
        #[cfg(feature = "postgres")]
        Target::Postgres(url) => PostgresStore::connect(&url).await?.sync().await,
        #[allow(unreachable_patterns)]
        _ => Err(missing_feature(loc)),
    }
}

/// The schema status of the database at `loc`, changing nothing (the SQLite file is created if missing).
pub async fn schema_status(loc: &StoreLocation) -> Result<SchemaStatus> {
    match loc.resolve()? {
        #[cfg(feature = "sqlite")]
        Target::Sqlite(path) => SqliteStore::open(&path).await?.schema_status().await,
        #[cfg(feature = "postgres")]
        Target::Postgres(url) => PostgresStore::connect(&url).await?.schema_status().await,
        #[allow(unreachable_patterns)]
        _ => Err(missing_feature(loc)),
    }
}

#[cfg(feature = "sqlite")]
async fn sqlite_open(path: &Path, migrate: bool) -> Result<Arc<dyn InfraStore>> {
    let store = SqliteStore::open(path).await?;
    store.prepare(migrate).await?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "sqlite"))]
async fn sqlite_open(path: &Path, _migrate: bool) -> Result<Arc<dyn InfraStore>> {
    Err(missing_feature(&StoreLocation::Url(format!(
        "sqlite://{}",
        path.display()
    ))))
}

#[cfg(feature = "postgres")]
async fn postgres_open(url: &str, migrate: bool) -> Result<Arc<dyn InfraStore>> {
    let store = PostgresStore::connect(url).await?;
    store.prepare(migrate).await?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
async fn postgres_open(url: &str, _migrate: bool) -> Result<Arc<dyn InfraStore>> {
    Err(missing_feature(&StoreLocation::Url(url.to_string())))
}

#[allow(dead_code)] // used only when a backend feature is off
fn missing_feature(loc: &StoreLocation) -> Error {
    Error::bad_request(format!(
        "This build has no support for the database at {} (enable the trove-backends feature `sqlite` or `postgres`).",
        loc.display()
    ))
}

/// Checks the applied schema version against the known one: newer is refused; older is migrated (when `migrate`)
/// or refused.
pub(crate) fn check_schema(
    backend: &'static str,
    status: SchemaStatus,
    migrate: bool,
) -> Result<bool> {
    match status.applied {
        Some(v) if v > status.known => Err(Error::Backend {
            backend,
            message: format!(
                "the database schema is at version {v}, newer than this trove-rs build knows ({}); \
                 upgrade trove-rs (refusing to start rather than misread the data)",
                status.known
            ),
            transient: false,
        }),
        Some(v) if v == status.known => Ok(false),
        _ if migrate => Ok(true),
        applied => Err(Error::Backend {
            backend,
            message: format!(
                "the database schema is at version {}, this build needs {}; run `trove-manage db_sync` first",
                applied.map_or_else(|| "none (empty database)".to_string(), |v| v.to_string()),
                status.known
            ),
            transient: false,
        }),
    }
}

/// Masks the password of a URL (`scheme://user:***@host/...`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

// ---- helpers shared by both backends

/// Nanoseconds since the epoch, the ordering key of time columns.
pub(crate) fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt()
        .unwrap_or_else(|| t.timestamp_micros().saturating_mul(1000))
}

pub(crate) fn to_body<T: Serialize>(backend: &'static str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Backend {
        backend,
        message: format!("cannot encode a row: {e}"),
        transient: false,
    })
}

pub(crate) fn from_body<T: DeserializeOwned>(
    backend: &'static str,
    table: &str,
    body: &str,
) -> Result<T> {
    serde_json::from_str(body).map_err(|e| Error::Backend {
        backend,
        message: format!("a row of table {table} cannot be decoded: {e}"),
        transient: false,
    })
}

/// Maps a sqlx error onto [`Error::Backend`]; busy, locked, serialization and connection failures are transient.
pub(crate) fn db_error(backend: &'static str, e: sqlx::Error) -> Error {
    let transient = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            // SQLite BUSY, LOCKED, BUSY_SNAPSHOT; PostgreSQL serialization failure, deadlock, shutdown
            Some("5" | "6" | "517" | "40001" | "40P01" | "57P01" | "57P03")
        ),
        _ => false,
    };
    Error::Backend {
        backend,
        message: e.to_string(),
        transient,
    }
}

/// Whether a sqlx error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://bob:s3cret@db:5432/trove"),
            "postgres://bob:***@db:5432/trove"
        );
        assert_eq!(
            redact_url("postgres://bob@db/trove"),
            "postgres://bob@db/trove"
        );
        assert_eq!(
            redact_url("postgres://db/x?password=a"),
            "postgres://db/x?password=a".to_string()
        );
        assert!(!StoreLocation::Url("postgresql://u:pw@h/d".into())
            .display()
            .contains("pw"));
    }

    #[test]
    fn locations_resolve() {
        assert!(matches!(
            StoreLocation::Url("mysql://x".into()).resolve(),
            Err(Error::BadRequest { .. })
        ));
        assert!(matches!(
            StoreLocation::Url("sqlite://".into()).resolve(),
            Err(Error::BadRequest { .. })
        ));
        assert!(
            matches!(StoreLocation::Url("sqlite:///tmp/a.db".into()).resolve(), Ok(Target::Sqlite(p)) if p == Path::new("/tmp/a.db"))
        );
        let d = StoreLocation::from_options(None, None);
        assert!(matches!(d, StoreLocation::StateDir(p) if p.ends_with("trove-rs")));
    }

    #[test]
    fn schema_checks() {
        let newer = SchemaStatus {
            applied: Some(9),
            known: 1,
        };
        let e = check_schema("sqlite", newer, true).unwrap_err();
        assert!(
            e.to_string().contains("newer than this trove-rs build"),
            "{e}"
        );
        let old = SchemaStatus {
            applied: None,
            known: 1,
        };
        assert!(check_schema("sqlite", old, true).unwrap());
        assert!(check_schema("sqlite", old, false)
            .unwrap_err()
            .to_string()
            .contains("db_sync"));
        assert!(!check_schema(
            "sqlite",
            SchemaStatus {
                applied: Some(1),
                known: 1
            },
            false
        )
        .unwrap());
    }
}
