//! Guest side of trove-rs: [`DatastoreStrategy`](trove_core::ports::DatastoreStrategy) implementations that run
//! the real engines as local processes, built by [`EngineStrategyFactory`].
//!
//! One process-engine base implements the lifecycle and the configuration, TLS and log facets for every engine;
//! an engine module (`mysql/`, `postgres/`, `redis/`) supplies only what differs: its binaries, configuration
//! rendering and live changes, spawn command, probes, admin bootstrap, stop signal, and its users, databases and
//! root facets (`admin.rs`).
//!
//! | manager | users | databases | root | configuration | tls | logs | backup |
//! |---|---|---|---|---|---|---|---|
//! | `mysql`, `mariadb` | yes | yes | yes | yes | yes | yes | full + incremental (`mariadb-backup`) |
//! | `postgresql` | yes | yes | yes | yes | yes | yes | full (`pg_basebackup`) |
//! | `redis` | yes | no | yes | yes | yes | no | full (`BGSAVE` snapshot and the ACL file) |
//!
//! Backups need a backup store ([`EngineStrategyFactory::with_backup_store`]); their streams are compressed with
//! `zstd`, which must be installed.
//!
//! | manager | engine | memory rendered from the flavor RAM |
//! |---|---|---|
//! | `mysql`, `mariadb` | MariaDB (`mariadb-install-db`, `mariadbd`) | `innodb_buffer_pool_size` = 50 % |
//! | `postgresql` | PostgreSQL (`initdb`, `postgres`) | `shared_buffers` = 25 %, `effective_cache_size` = 75 % |
//! | `redis` | Redis (`redis-server`) | `maxmemory` = 50 % (`noeviction`) |
//!
//! Each instance has its own directories (see [`EngineStrategyFactory`]), port and admin account `os_admin`, whose
//! generated password is kept in `<server_dir>/guest/os_admin.secret` (mode 0600, owner only). When the control
//! plane runs as root the engines run as an unprivileged user (`nobody` unless configured), and they survive a
//! restart of the control plane: a new strategy for the same directories adopts the running engine by its pid file.
//!
//! Status: HEALTHY when the engine answers; SHUTDOWN after a clean stop; CRASHED (with the reason and the last log
//! lines) when the process is gone without a stop; BLOCKED when it runs but does not answer.
//!
//! TLS (`ssl_show` / `ssl_action` / `ssl_rollback`): certificates are generated (self-signed, one year, named after
//! the instance's addresses) or loaded from a `file://` PEM bundle with the `openssl` command, which must be
//! installed; the state (current and previous setting) lives in `<server_dir>/guest/tls/`, the engine's copies in
//! `<server_dir>/engine/tls/`, so restarts keep it. MariaDB turns TLS on or off at a restart (`restart_required`)
//! and has no `mtls`; PostgreSQL and Redis apply every change live (Redis `basic` serves TLS on a second port).
#![forbid(unsafe_code)]

mod backup;
mod base;
mod common;
mod engine;
mod factory;
mod logs;
mod mysql;
mod overrides;
mod postgres;
mod redis;
mod tls;

pub use common::{current_uid, EngineConfig, RunAs};
pub use factory::{detect_engines, DetectedEngine, EngineDetection, EngineStrategyFactory};
