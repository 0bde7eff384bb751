//! PostgreSQL streaming replication ([`ReplicationFacet`]): replicas are hot standbys streaming the source's WAL
//! as the role `os_repl` (`REPLICATION`, its password generated once on each instance and set when it hands out
//! its [`ReplicationSource`]); positions are LSNs (a standby's replay position, a primary's flushed WAL); promote
//! is `pg_promote`; a former source rejoins with `pg_rewind`.
//!
//! How a replica comes to follow (`attach`), cheapest first:
//! 1. A standby (a replica restored from a seed backup with [`RestoreSpec::replica`], or a replica moving to the
//!    new source after a switchover) gets the source in `primary_conninfo` and reloads; it follows once its WAL
//!    receiver streams the source's timeline.
//! 2. A primary (the old source of a switchover, or a fenced one) or a standby that cannot follow from where it is
//!    (it holds WAL the new source never had): stopped, `pg_rewind` against the source, started as a standby.
//! 3. Otherwise (the source no longer holds the WAL the replica needs, or the rewind failed): a fresh copy with
//!    `pg_basebackup` from the source, started as a standby.
//!
//! **Replication slots**: each replica streams through its own physical slot on its source (`trove_<replica id>`,
//!    made by the replica's guest as `os_repl` before it follows), so a replica that lags or restarts finds the WAL
//!    it needs. A slot can fill the source's volume when its replica is gone, so every instance renders
//!    `max_slot_wal_keep_size` = a quarter of its volume: past it PostgreSQL invalidates the slot (the replica then
//!    needs a fresh copy, which `attach` makes) instead of filling the disk. The source's guest warns in its log
//!    when a slot holds more than half that, drops its invalidated slots when it hands out its source info, and a
//!    detached replica drops its slot on its old source. `wal_keep_size` (a twentieth of the volume, at most 128 MB)
//!    keeps the WAL between a seed backup and its replica's attach in the common case.
//!
//! The guest reaches its own engine as `os_admin` over the unix socket without a password (`trust` on that socket
//! only: it lives in a 0700 directory of the engine user): a replica's catalog, the admin's password with it, is
//! its source's.
//!
//! A primary hands over (`set_read_only(true)`, a switchover) by a clean stop: nobody writes after it, a superuser
//! included, and its WAL senders pass everything up to the shutdown checkpoint on; its position is then its
//! control file's last checkpoint (`pg_controldata`, only for a clean shutdown); allowing writes again (a
//! switchover undone) starts it. A fenced source (killed by its guest in a failover) is rendered with
//! `default_transaction_read_only = on`, so a restart by anyone keeps applications from writing until it rejoins as
//! a standby, which is read only for everyone.
//!
//! [`RestoreSpec::replica`]: trove_core::ports::RestoreSpec::replica

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use std::ffi::OsStr;
use std::time::Duration;

use trove_core::model::Secret;
use trove_core::ports::{ReplicaPosition, ReplicationFacet, ReplicationSource};
use trove_core::{Error, Result};

use super::admin::{ident, lit};
use super::{exec_sql, Postgres, ADMIN_DB};
use crate::common::{io_err, log_tail, run_as_user, set_mode, write_engine_file, Following};
use crate::engine::{start_engine, stop_engine, Engine};
use crate::overrides::Configurable;

/// The replication role replicas log in with.
pub(crate) const REPL_USER: &str = "os_repl";
/// The guest secret of the followed source's replication password.
const SOURCE_SECRET: &str = "pg_source.secret";
/// How long a replica waits for its WAL receiver to stream the source's timeline before it tries the next way.
const FOLLOW_WAIT: Duration = Duration::from_secs(10);

/// The functions `pg_rewind` calls on its source, granted to the replication role (it reads the data directory,
/// which a replication role may copy whole anyway).
const REWIND_FUNCTIONS: [&str; 4] = [
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
];

/// `pg_stat_wal_receiver`'s status, received timeline, flushed and start LSNs, and the replay LSN (as text).
type Row5 = (
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Where a source was when a replica attached.
#[derive(Debug, Clone, Copy)]
struct SourceAt {
    /// Its timeline.
    tli: u32,
    /// Its flushed WAL.
    lsn: u64,
}

/// A value of a libpq connection string, quoted.
fn conninfo_value(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A value of `postgresql.conf`, quoted.
pub(super) fn conf_value(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A value of a libpq passfile line (`:` and `\` escaped).
fn passfile_field(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}

/// The timeline of a WAL file name (its first 8 hex digits).
fn timeline_of(walfile: &str) -> Option<u32> {
    u32::from_str_radix(walfile.get(..8)?, 16).ok()
}

/// An LSN as PostgreSQL prints it (`16/B374D848`).
fn lsn_of(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// An LSN as PostgreSQL prints a number (`numeric` text).
fn parse_lsn(text: &str) -> Option<u64> {
    text.split('.').next()?.trim().parse().ok()
}

/// `wal_keep_size` and `max_slot_wal_keep_size` (MB) for a volume of `volume_gb` (0: unknown).
pub(super) fn wal_retention_mb(volume_gb: u32) -> (u64, u64) {
    if volume_gb == 0 {
        return (128, 1024);
    }
    let mb = u64::from(volume_gb) * 1024;
    ((mb / 20).clamp(16, 128), (mb / 4).max(64))
}

impl Postgres {
    /// This instance's slot on the source it follows.
    fn slot_name(&self) -> String {
        format!("trove_{}", self.base.ctx.instance_id.simple())
    }

    /// The passfile the engine (its WAL receiver, `pg_rewind`, `pg_basebackup`) logs in to the source with.
    fn source_passfile(&self) -> std::path::PathBuf {
        self.base.layout.engine_dir.join("replication.pgpass")
    }

    /// The libpq connection string to `f`'s source (the password from the passfile); `replication` adds the
    /// database the non-replication tools need.
    fn source_conninfo(&self, f: &Following, dbname: bool) -> String {
        let mut s = format!(
            "host={} port={} user={} passfile={} application_name={} connect_timeout=5",
            conninfo_value(&f.host),
            f.port,
            conninfo_value(&f.user),
            conninfo_value(&self.source_passfile().display().to_string()),
            conninfo_value(&self.slot_name()),
        );
        if dbname {
            s.push_str(" dbname=postgres");
        }
        s
    }

    /// The `trove.conf` lines of replication: WAL retention, and whom a replica follows, or that a fenced
    /// primary takes no writes.
    pub(super) fn replication_conf(&self) -> Result<String> {
        let st = self.base.layout.state()?;
        let (keep, cap) = wal_retention_mb(st.volume_size_gb);
        let mut conf = format!(
            "# replication (see the guest's postgres::replication)\n\
             wal_log_hints = on\n\
             hot_standby = on\n\
             wal_keep_size = {keep}MB\n\
             max_slot_wal_keep_size = {cap}MB\n\
             wal_retrieve_retry_interval = 1000\n"
        );
        match &st.following {
            Some(f) => conf.push_str(&format!(
                "primary_conninfo = {}\nprimary_slot_name = {}\n",
                conf_value(&self.source_conninfo(f, false)),
                conf_value(&self.slot_name())
            )),
            None if st.read_only => conf.push_str("default_transaction_read_only = on\n"),
            None => {}
        }
        Ok(conf)
    }

    /// Whether the engine is a standby.
    pub(super) async fn in_recovery(&self) -> Result<bool> {
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let r = sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()")
            .fetch_one(&mut c)
            .await
            .map_err(|e| self.err(e));
        let _ = c.close().await;
        r
    }

    /// The engine's timeline: a standby's is the one it replays, a primary's the one it writes (`None`: the
    /// engine does not answer).
    async fn timeline(&self) -> Option<u32> {
        let mut c = self.connect_admin(ADMIN_DB).await.ok()?;
        let r = sqlx::query_scalar::<_, i64>(
            "SELECT CASE WHEN pg_is_in_recovery() \
             THEN COALESCE((SELECT received_tli::bigint FROM pg_stat_wal_receiver), \
                           (SELECT timeline_id::bigint FROM pg_control_checkpoint())) \
             ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END",
        )
        .fetch_one(&mut c)
        .await
        .ok();
        let _ = c.close().await;
        r.and_then(|t| u32::try_from(t).ok())
    }

    /// The position of a stopped engine: its last checkpoint, only when it was shut down cleanly (then nothing
    /// follows it); a crashed engine's WAL goes beyond its last checkpoint, so its position is unknown.
    async fn stopped_position(&self) -> Result<ReplicaPosition> {
        let tool = self.bins.controldata.clone().ok_or_else(|| {
            Error::backend(
                "postgresql",
                "pg_controldata is not installed beside the PostgreSQL server",
                false,
            )
        })?;
        let out = tokio::process::Command::new(&tool)
            .arg("-D")
            .arg(&self.base.layout.data_dir)
            .env("LC_ALL", "C")
            .output()
            .await
            .map_err(|e| Error::backend("postgresql", format!("pg_controldata: {e}"), true))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let state = field("Database cluster state:").unwrap_or_default();
        if state != "shut down" {
            return Err(Error::backend(
                "postgresql",
                format!(
                    "the engine does not run and its cluster state is '{state}': its position is unknown"
                ),
                true,
            ));
        }
        field("Latest checkpoint location:")
            .and_then(|v| lsn_of(&v))
            .map(|lsn| ReplicaPosition::Lsn { lsn })
            .ok_or_else(|| {
                Error::backend(
                    "postgresql",
                    "pg_controldata shows no checkpoint location",
                    false,
                )
            })
    }

    /// Reloads the rendered configuration (waiting until it is loaded).
    async fn reload_conf(&self) -> Result<()> {
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let r = super::config::reload(&mut c, &["primary_conninfo".to_string()]).await;
        let _ = c.close().await;
        r.map(|_| ())
    }

    /// A connection to `source` as its replication role (to its `postgres` database).
    async fn connect_source(&self, source: &ReplicationSource) -> Result<PgConnection> {
        PgConnectOptions::new()
            .host(&source.host)
            .port(source.port)
            .username(&source.user)
            .password(source.password.expose())
            .database(ADMIN_DB)
            .disable_statement_logging()
            .connect()
            .await
            .map_err(|e| {
                Error::backend(
                    "postgresql",
                    format!(
                        "the source {}:{} refused the replication role: {e}",
                        source.host, source.port
                    ),
                    true,
                )
            })
    }

    /// Makes this replica's slot on `source` (if missing); answers where the source is now.
    async fn reserve_slot(&self, source: &ReplicationSource) -> Result<SourceAt> {
        let mut c = self.connect_source(source).await?;
        let r = async {
            sqlx::query(
                "SELECT pg_create_physical_replication_slot($1, true) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            )
            .bind(self.slot_name())
            .execute(&mut c)
            .await?;
            sqlx::query_as::<_, (String, String)>(
                "SELECT pg_walfile_name(pg_current_wal_lsn()), \
                 (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::text",
            )
            .fetch_one(&mut c)
            .await
        }
        .await;
        let _ = c.close().await;
        let (walfile, lsn) = r.map_err(|e| {
            Error::backend(
                "postgresql",
                format!("the replication slot could not be made on the source: {e}"),
                true,
            )
        })?;
        match (timeline_of(&walfile), parse_lsn(&lsn)) {
            (Some(tli), Some(lsn)) => Ok(SourceAt { tli, lsn }),
            _ => Err(Error::backend(
                "postgresql",
                format!("the source answered no timeline or position: {walfile} {lsn}"),
                false,
            )),
        }
    }

    /// Waits (bounded by [`FOLLOW_WAIT`]) until the WAL receiver streams the source's timeline and the replica
    /// either received WAL from it or has replayed up to where the source was when it attached. A receiver that
    /// connects but misses a segment the source no longer holds shows "streaming" a moment and receives nothing.
    async fn streams(&self, at: SourceAt) -> bool {
        let deadline = tokio::time::Instant::now() + FOLLOW_WAIT;
        loop {
            if let Ok(mut c) = self.connect_admin(ADMIN_DB).await {
                let row = sqlx::query_as::<_, Row5>(
                    "SELECT status::text, received_tli::bigint, (flushed_lsn - '0/0'::pg_lsn)::text, \
                     (receive_start_lsn - '0/0'::pg_lsn)::text, \
                     (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::text FROM pg_stat_wal_receiver",
                )
                .fetch_optional(&mut c)
                .await
                .ok()
                .flatten();
                let _ = c.close().await;
                if let Some((status, tli, flushed, start, replayed)) = row {
                    let lsn = |t: Option<String>| t.as_deref().and_then(parse_lsn);
                    let received = match (lsn(flushed), lsn(start), lsn(replayed)) {
                        (Some(f), Some(s), r) => f > s || r.is_some_and(|r| r >= at.lsn),
                        _ => false,
                    };
                    if status.as_deref() == Some("streaming")
                        && tli == Some(i64::from(at.tli))
                        && received
                    {
                        return true;
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The data directory made a standby of the recorded source: this instance's own settings over what a copy
    /// of another instance brought, and `standby.signal`.
    fn as_standby(&self) -> Result<()> {
        self.own_settings()?;
        write_engine_file(
            &self.base.layout.data_dir.join("standby.signal"),
            "",
            self.base.run_as,
        )
    }

    /// `pg_rewind` of the (stopped) data directory against the recorded source.
    async fn rewind(&self, f: &Following) -> Result<()> {
        let tool = self.bins.rewind.clone().ok_or_else(|| {
            Error::backend(
                "postgresql",
                "pg_rewind is not installed beside the PostgreSQL server",
                false,
            )
        })?;
        let data = format!("--target-pgdata={}", self.base.layout.data_dir.display());
        let source = format!("--source-server={}", self.source_conninfo(f, true));
        let args: Vec<&OsStr> = [data.as_str(), source.as_str()]
            .into_iter()
            .map(OsStr::new)
            .collect();
        run_as_user(&tool, &args, self.base.run_as, &self.base.layout.engine_dir).await
    }

    /// A fresh copy of the recorded source with `pg_basebackup`, streaming its WAL through this replica's slot.
    async fn fresh_copy(&self, f: &Following) -> Result<()> {
        let tool = self.bins.basebackup.clone().ok_or_else(|| {
            Error::backend(
                "postgresql",
                "pg_basebackup is not installed beside the PostgreSQL server",
                false,
            )
        })?;
        let l = &self.base.layout;
        l.clear_data_dir();
        set_mode(&l.data_dir, 0o700)?;
        let data = format!("--pgdata={}", l.data_dir.display());
        let slot = format!("--slot={}", self.slot_name());
        let conn = format!("--dbname={}", self.source_conninfo(f, false));
        let args: Vec<&OsStr> = [
            data.as_str(),
            "--no-password",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-manifest",
            slot.as_str(),
            conn.as_str(),
        ]
        .into_iter()
        .map(OsStr::new)
        .collect();
        run_as_user(&tool, &args, self.base.run_as, &l.engine_dir).await
    }

    /// The last error lines of the engine's log (why a WAL receiver does not stream).
    fn log_errors(&self) -> Option<String> {
        let tail = log_tail(&self.log_file(), 16 * 1024);
        let lines: Vec<&str> = tail
            .lines()
            .filter(|l| l.contains("FATAL") || l.contains("ERROR"))
            .collect();
        let last = lines
            .iter()
            .rev()
            .take(2)
            .rev()
            .copied()
            .collect::<Vec<_>>();
        (!last.is_empty()).then(|| last.join(" / "))
    }

    /// Drops the replication slots this instance holds for replicas that no longer use them: every slot (a
    /// standby serves nobody) or only the invalidated ones (a source).
    async fn drop_stale_slots(&self, all: bool) {
        let sql = if all {
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name LIKE 'trove\\_%' AND NOT active"
        } else {
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name LIKE 'trove\\_%' AND NOT active AND wal_status = 'lost'"
        };
        if let Ok(mut c) = self.connect_admin(ADMIN_DB).await {
            if let Err(e) = sqlx::query(sql).execute(&mut c).await {
                tracing::debug!(error = %e, "stale replication slots not dropped");
            }
            let _ = c.close().await;
        }
    }

    /// Warns (in the guest's log, at most once a minute) about slots that hold more than half of what
    /// `max_slot_wal_keep_size` allows, and slots PostgreSQL invalidated: their replicas need a fresh copy.
    pub(super) async fn check_slots(&self) {
        {
            let mut last = self.slots_checked.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let Ok(mut c) = self.connect_admin(ADMIN_DB).await else {
            return;
        };
        let rows = sqlx::query(
            "SELECT slot_name::text, wal_status, safe_wal_size FROM pg_replication_slots \
             WHERE slot_name LIKE 'trove\\_%'",
        )
        .fetch_all(&mut c)
        .await
        .unwrap_or_default();
        let _ = c.close().await;
        let (_, cap) = wal_retention_mb(self.base.layout.state().map_or(0, |s| s.volume_size_gb));
        for r in rows {
            let name: String = r.try_get(0).unwrap_or_default();
            let status: Option<String> = r.try_get(1).ok().flatten();
            let safe: Option<i64> = r.try_get(2).ok().flatten();
            if status.as_deref() == Some("lost") {
                tracing::warn!(
                    instance = %self.base.ctx.instance_id,
                    slot = %name,
                    "replication slot invalidated: its replica fell more than max_slot_wal_keep_size ({cap} MB) \
                     behind; attach it again (it copies the source afresh)"
                );
            } else if safe.is_some_and(|b| b < (cap as i64) * 1024 * 1024 / 2) {
                tracing::warn!(
                    instance = %self.base.ctx.instance_id,
                    slot = %name,
                    safe_mb = safe.unwrap_or_default() / (1024 * 1024),
                    "replication slot holds more than half of max_slot_wal_keep_size ({cap} MB) for a lagging or \
                     gone replica; past it the slot is invalidated so the volume does not fill"
                );
            }
        }
    }

    /// Records `source` as the followed one (its password in the guest's secret and the engine's passfile).
    fn record_source(&self, source: &ReplicationSource) -> Result<Following> {
        let l = &self.base.layout;
        crate::common::write_private(
            &l.secret_file(SOURCE_SECRET),
            source.password.expose().as_bytes(),
        )?;
        write_engine_file(
            &self.source_passfile(),
            &format!(
                "*:*:*:{}:{}\n",
                passfile_field(&source.user),
                passfile_field(source.password.expose())
            ),
            self.base.run_as,
        )?;
        let f = Following::of(source);
        let rec = f.clone();
        l.update_state(move |s| {
            s.following = Some(rec);
            s.read_only = true;
        })?;
        Ok(f)
    }

    /// The source last followed, with its password, if any.
    fn recorded_source(&self) -> Result<Option<ReplicationSource>> {
        let l = &self.base.layout;
        let (Some(f), Some(pw)) = (l.state()?.following, l.stored_secret(SOURCE_SECRET)?) else {
            return Ok(None);
        };
        Ok(Some(ReplicationSource {
            host: f.host,
            port: f.port,
            user: f.user,
            password: pw,
        }))
    }

    /// Stops following: the followed source is forgotten (its secret and passfile removed).
    fn forget_source(&self) -> Result<()> {
        let l = &self.base.layout;
        l.update_state(|s| {
            s.following = None;
            s.read_only = false;
        })?;
        for p in [l.secret_file(SOURCE_SECRET), self.source_passfile()] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &p, e)),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ReplicationFacet for Postgres {
    async fn source_info(&self) -> Result<ReplicationSource> {
        let pw: Secret = self.base.layout.ensure_secret("os_repl.secret")?;
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let r = async {
            let exists = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
                .bind(REPL_USER)
                .fetch_optional(&mut c)
                .await?
                .is_some();
            let verb = if exists { "ALTER" } else { "CREATE" };
            let mut stmts = vec![
                format!(
                    "{verb} ROLE {} WITH LOGIN REPLICATION PASSWORD {}",
                    ident(REPL_USER),
                    lit(pw.expose())
                ),
                format!("GRANT CONNECT ON DATABASE postgres TO {}", ident(REPL_USER)),
            ];
            for f in REWIND_FUNCTIONS {
                stmts.push(format!(
                    "GRANT EXECUTE ON FUNCTION {f} TO {}",
                    ident(REPL_USER)
                ));
            }
            for s in &stmts {
                exec_sql(&mut c, s).await?;
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        let _ = c.close().await;
        r.map_err(|e| self.err(e))?;
        self.drop_stale_slots(false).await;
        Ok(ReplicationSource {
            host: self.base.connect_host(),
            port: self.base.ctx.port,
            user: REPL_USER.to_string(),
            password: pw,
        })
    }

    async fn attach(&self, source: &ReplicationSource) -> Result<()> {
        let at_source = self.reserve_slot(source).await?;
        let f = self.record_source(source)?;
        self.render_config()?;
        let at = format!("{}:{}", source.host, source.port);
        // 1. A standby follows after a reload.
        if self.running_pid().is_some() && self.in_recovery().await? {
            self.reload_conf().await?;
            if self.streams(at_source).await {
                self.drop_stale_slots(true).await;
                tracing::info!(instance = %self.base.ctx.instance_id, source = %at, "following the source");
                return Ok(());
            }
            tracing::info!(
                instance = %self.base.ctx.instance_id,
                source = %at,
                reason = ?self.log_errors(),
                "cannot follow the source from where the standby is: rewinding"
            );
        }
        // 2. A former source (or a standby off the source's history): rewound. A standby on the source's timeline
        // that does not follow misses WAL the source no longer has: only a fresh copy helps.
        let rewinding = self.timeline().await != Some(at_source.tli);
        stop_engine(self).await?;
        let rewound = if rewinding {
            self.rewind(&f).await
        } else {
            Err(Error::backend(
                "postgresql",
                "on the source's timeline: the source no longer holds the WAL the replica needs",
                false,
            ))
        };
        match rewound {
            Ok(()) => {
                self.as_standby()?;
                start_engine(self).await?;
                if self.streams(at_source).await {
                    self.drop_stale_slots(true).await;
                    tracing::info!(instance = %self.base.ctx.instance_id, source = %at, "rewound; following the source");
                    return Ok(());
                }
                tracing::info!(
                    instance = %self.base.ctx.instance_id,
                    reason = ?self.log_errors(),
                    "the rewound standby does not follow: copying the source afresh"
                );
                stop_engine(self).await?;
            }
            Err(e) => tracing::info!(
                instance = %self.base.ctx.instance_id,
                error = %e,
                "not rewound: copying the source afresh"
            ),
        }
        // 3. A fresh copy.
        self.fresh_copy(&f).await?;
        self.as_standby()?;
        start_engine(self).await?;
        if self.streams(at_source).await {
            tracing::info!(instance = %self.base.ctx.instance_id, source = %at, "copied afresh; following the source");
            return Ok(());
        }
        Err(Error::backend(
            "postgresql",
            format!(
                "the replica does not stream from {at} even after a fresh copy{}",
                self.log_errors()
                    .map(|e| format!(" (engine log: {e})"))
                    .unwrap_or_default()
            ),
            true,
        ))
    }

    async fn position(&self) -> Result<ReplicaPosition> {
        if self.running_pid().is_none() {
            return self.stopped_position().await;
        }
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let r = sqlx::query_scalar::<_, String>(
            "SELECT (CASE WHEN pg_is_in_recovery() \
             THEN COALESCE(pg_last_wal_replay_lsn(), '0/0'::pg_lsn) \
             ELSE pg_current_wal_flush_lsn() END - '0/0'::pg_lsn)::text",
        )
        .fetch_one(&mut c)
        .await
        .map_err(|e| self.err(e));
        let _ = c.close().await;
        let text = r?;
        let lsn = parse_lsn(&text)
            .ok_or_else(|| Error::backend("postgresql", format!("not an LSN: {text}"), false))?;
        Ok(ReplicaPosition::Lsn { lsn })
    }

    async fn lag_reason(&self) -> Option<String> {
        let mut c = self.connect_admin(ADMIN_DB).await.ok()?;
        let status =
            sqlx::query_scalar::<_, String>("SELECT status::text FROM pg_stat_wal_receiver")
                .fetch_optional(&mut c)
                .await
                .ok()
                .flatten();
        let _ = c.close().await;
        match status.as_deref() {
            Some("streaming") => None,
            other => Some(format!(
                "WAL receiver {}{}",
                other.unwrap_or("not running"),
                self.log_errors()
                    .map(|e| format!("; engine log: {e}"))
                    .unwrap_or_default()
            )),
        }
    }

    /// A primary hands over by a clean stop: nobody, a superuser included, writes after it, and its WAL
    /// senders pass everything up to the shutdown checkpoint to the standbys first. Its position is then read
    /// from its control file; allowing writes again starts it.
    async fn set_read_only(&self, read_only: bool) -> Result<()> {
        self.base.layout.update_state(|s| s.read_only = read_only)?;
        self.render_config()?;
        let running = self.running_pid().is_some();
        if !read_only {
            if running {
                return self.reload_conf().await;
            }
            return start_engine(self).await;
        }
        if !running || self.in_recovery().await? {
            return Ok(());
        }
        // Stopped on purpose (SHUTDOWN, not CRASHED: nothing restarts it behind the handover's back).
        self.base.layout.update_state(|s| s.running = false)?;
        stop_engine(self).await?;
        tracing::info!(instance = %self.base.ctx.instance_id, "stopped cleanly to hand over");
        Ok(())
    }

    async fn promote(&self) -> Result<()> {
        if self.in_recovery().await? {
            let mut c = self.connect_admin(ADMIN_DB).await?;
            let r = async {
                let done = sqlx::query_scalar::<_, bool>("SELECT pg_promote(true, 60)")
                    .fetch_one(&mut c)
                    .await?;
                // The control file names the new timeline only after a checkpoint: pg_rewind of a former source
                // against this one reads it there (without it, it sees one timeline and rewinds nothing).
                if done {
                    exec_sql(&mut c, "CHECKPOINT").await?;
                }
                Ok::<_, sqlx::Error>(done)
            }
            .await
            .map_err(|e| self.err(e));
            let _ = c.close().await;
            if !r? {
                return Err(Error::backend(
                    "postgresql",
                    "the standby was not promoted within 60 s",
                    true,
                ));
            }
        }
        self.forget_source()?;
        self.render_config()?;
        self.reload_conf().await?;
        tracing::info!(instance = %self.base.ctx.instance_id, "promoted: a writable source");
        Ok(())
    }

    async fn detach(&self) -> Result<()> {
        let old = self.recorded_source()?;
        self.promote().await?;
        // The slot on the old source would keep its WAL for nobody.
        if let Some(src) = old {
            match self.connect_source(&src).await {
                Ok(mut c) => {
                    let r = sqlx::query(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                         WHERE slot_name = $1 AND NOT active",
                    )
                    .bind(self.slot_name())
                    .execute(&mut c)
                    .await;
                    let _ = c.close().await;
                    if let Err(e) = r {
                        tracing::info!(error = %e, "the slot on the old source was not dropped");
                    }
                }
                Err(e) => {
                    tracing::info!(error = %e, "the old source was not reached to drop the slot")
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timelines_lsns_and_quoting() {
        assert_eq!(timeline_of("00000002000000000000000A"), Some(2));
        assert_eq!(timeline_of("0000001A00000000000000FF"), Some(26));
        assert_eq!(timeline_of("zz"), None);
        assert_eq!(parse_lsn("50331784"), Some(50_331_784));
        assert_eq!(parse_lsn("7.0"), Some(7));
        assert_eq!(parse_lsn("-"), None);
        assert_eq!(lsn_of("0/6000028"), Some(0x0600_0028));
        assert_eq!(lsn_of("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert_eq!(lsn_of("x"), None);
        assert_eq!(conf_value("host='a' x"), "'host=''a'' x'");
        assert_eq!(passfile_field("a:b\\c"), "a\\:b\\\\c");
    }

    #[test]
    fn wal_retention_follows_the_volume() {
        assert_eq!(wal_retention_mb(0), (128, 1024));
        assert_eq!(wal_retention_mb(1), (51, 256));
        assert_eq!(wal_retention_mb(10), (128, 2560));
    }
}
