//! Backups of PostgreSQL: full backups with `pg_basebackup` (a tar of the data directory with the WAL it needs,
//! so it restores alone), compressed with `zstd`.
//!
//! - Backup: `pg_basebackup -D - -Ft -X fetch -c fast` as the engine user over the instance's own unix socket,
//!   logging in as `os_admin` (a superuser, so it has `REPLICATION`; initdb's `pg_hba.conf` has the
//!   `local replication all scram-sha-256` line it needs) with its password in a passfile (0600, the engine
//!   user's, removed afterwards), never on a command line.
//! - Restore: the verified object is unpacked into a staging directory beside the data directory and moved in
//!   only once the whole stream checked out. The backup's own settings give way to this instance's:
//!   `postgresql.auto.conf` (`ALTER SYSTEM`) goes, `pg_hba.conf` is made again as a fresh instance's (with this
//!   instance's TLS mode), `trove.conf` is rendered again. The restored `os_admin` still has the source's password:
//!   one run of the server in single-user mode (no network, no authentication; it also replays the backup's WAL)
//!   sets it to this instance's secret before the server first starts.
//! - Incremental: the WAL since the parent, from the instance's archive ([`super::wal`]): a committed marker
//!   transaction (so every moment up to the backup's recorded `time` has a later commit to stop before), a segment
//!   switch, a wait until the archiver delivered that segment, then a tar of the segments from the parent's through
//!   it, compressed. A backup's `position` is `{"wal": SEGMENT, "time": RFC3339}`: the first segment an incremental
//!   on it ships, and the moment it covers up to. Each backup prunes the archive up to the first segment the
//!   instance's oldest live backup needs (`retain_from`), so an incremental on any of them finds its WAL.
//! - Restore of a replica's seed ([`RestoreSpec::replica`]): the full backup as above, started as a standby
//!   (`standby.signal`) with nothing of the guest's written, so it can go on with its source's WAL.
//! - Restore of a chain: the full backup as above, every incremental's segments unpacked (verified) into a
//!   directory the single-user run recovers from (`recovery.signal`, `restore_command`), to the end of the last
//!   incremental or to `recovery_target_time` (point-in-time restore), then promoted.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::Connection;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use trove_core::ports::{
    BackupJob, BackupOutcome, BackupPiece, BackupProgress, DynBackupStore, RestoreSpec,
};
use trove_core::{Error, Result};

use super::admin::lit;
use super::tls::rewrite_hba;
use super::{wal, Postgres, ADMIN_DB};
use crate::backup::{
    feed_pipeline, move_contents, pipeline_output, staging_dir, unpack_verified, EngineBackup,
    Step, COMPRESS,
};
use crate::common::{io_err, write_engine_file, BACKEND};
use crate::overrides::Configurable;

/// The `pg_hba.conf` of an instance before its TLS mode is applied: the guest's own `os_admin` over the unix socket
/// without a password (see [`super::replication`]), then initdb's lines with `--auth=scram-sha-256`, the
/// replication role and password logins from every address.
const FRESH_HBA: &str = "\
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             os_admin                                trust
local   replication     os_admin                                trust
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
host    replication     os_repl         all                     scram-sha-256
host    all             all             all                     scram-sha-256
";

/// Where a restore unpacks, beside the data directory.
const STAGING: &str = "restore-staging";
/// Where a restore unpacks the WAL of the chain's incrementals.
const RESTORE_WAL: &str = "restore-wal";
/// How long an incremental waits for the archiver to deliver its last segment.
const ARCHIVE_WAIT: Duration = Duration::from_secs(60);

/// A value of a libpq passfile line (`:` and `\` escaped).
fn passfile_field(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}

/// A value of a libpq connection string, quoted.
fn conninfo_value(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A moment as PostgreSQL and the backup positions write it.
fn moment(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The first segment an incremental on the instance's oldest live backup ships (see [`BackupJob::retain_from`]).
fn retained(job: &BackupJob) -> Option<&str> {
    job.retain_from.as_ref()?.get("wal")?.as_str()
}

/// The first segment an incremental on `parent` ships.
fn parent_segment(parent: &BackupPiece) -> Result<String> {
    parent
        .position
        .as_ref()
        .and_then(|p| p.get("wal"))
        .and_then(Value::as_str)
        .filter(|s| wal::segment_index(s).is_some())
        .map(str::to_string)
        .ok_or_else(|| {
            Error::unprocessable(format!(
                "Backup {} records no WAL position to build an incremental on (it was taken before WAL \
                 archiving); take a full backup.",
                parent.backup_id
            ))
        })
}

impl Postgres {
    fn passfile(&self) -> std::path::PathBuf {
        self.base.layout.engine_dir.join("backup.pgpass")
    }

    /// The WAL archive's spool directory ([`wal`]).
    pub(super) fn wal_spool(&self) -> PathBuf {
        self.base.layout.volume_dir.join(wal::SPOOL)
    }

    /// Makes the spool (engine user's) so the archiver starts keeping segments.
    fn ensure_spool(&self) -> Result<PathBuf> {
        let d = self.wal_spool();
        if !d.is_dir() {
            std::fs::create_dir_all(&d).map_err(|e| io_err("create", &d, e))?;
            crate::common::set_mode(&d, 0o700)?;
            self.base.run_as.own(&d)?;
        }
        Ok(d)
    }

    /// One text value of `sql` as the admin.
    async fn query_text(&self, sql: &str) -> Result<String> {
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let r = sqlx::query_scalar::<_, String>(sql)
            .fetch_one(&mut c)
            .await
            .map_err(|e| self.err(e));
        let _ = c.close().await;
        r
    }

    /// Commits a marker transaction and switches to a new segment; answers the segment switched from (the last
    /// an incremental taken now ships) once the archiver delivered it to the spool.
    async fn switch_and_archive(&self, spool: &std::path::Path) -> Result<String> {
        let mut c = self.connect_admin(ADMIN_DB).await?;
        let r = async {
            // A transaction with an id writes a commit record: recovery to any moment before now finds a commit
            // after it to stop before.
            sqlx::query("SELECT txid_current()").execute(&mut c).await?;
            sqlx::query_scalar::<_, String>("SELECT pg_walfile_name(pg_switch_wal())")
                .fetch_one(&mut c)
                .await
        }
        .await
        .map_err(|e| self.err(e));
        let seg = match r {
            Ok(s) => s,
            Err(e) => {
                let _ = c.close().await;
                return Err(e);
            }
        };
        let deadline = tokio::time::Instant::now() + ARCHIVE_WAIT;
        while !spool.join(&seg).is_file() {
            if tokio::time::Instant::now() > deadline {
                let failure: Option<(Option<String>, Option<DateTime<Utc>>)> = sqlx::query_as(
                    "SELECT last_failed_wal, last_failed_time FROM pg_stat_archiver",
                )
                .fetch_optional(&mut c)
                .await
                .ok()
                .flatten();
                let _ = c.close().await;
                return Err(Error::backend(
                    BACKEND,
                    format!(
                        "WAL archiving did not deliver segment {seg} within {} s (last failure: {:?}); see the \
                         guest log of the instance",
                        ARCHIVE_WAIT.as_secs(),
                        failure
                    ),
                    true,
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = c.close().await;
        Ok(seg)
    }

    /// Ships the segments since `parent` as the object of `job`.
    async fn ship_wal(
        &self,
        store: &DynBackupStore,
        job: &BackupJob,
        parent: &BackupPiece,
        progress: &BackupProgress,
    ) -> Result<BackupOutcome> {
        let l = &self.base.layout;
        let from = parent_segment(parent)?;
        let spool = self.wal_spool();
        if !spool.is_dir() {
            return Err(Error::unprocessable(
                "This instance keeps no WAL archive yet (it starts with the first full backup): take a full \
                 backup.",
            ));
        }
        let time = Utc::now();
        let to = self.switch_and_archive(&spool).await?;
        let names = wal::select(&wal::list(&spool)?, &from, &to)?;
        let mut tar = Step::new("tar", &["-c", "-f", "-", "-C"])
            .arg(spool.as_os_str())
            .arg("--")
            .engine_user();
        for n in &names {
            tar = tar.arg(n);
        }
        let steps = [tar, Step::new(COMPRESS[0], &COMPRESS[1..])];
        let out = pipeline_output(&steps, self.base.run_as, &l.engine_dir)?;
        let object = store.put(&job.key, progress.counted(out)).await?;
        let pruned = wal::prune(&spool, wal::keep_from(&to, retained(job)))?;
        tracing::info!(
            instance = %self.base.ctx.instance_id,
            segments = names.len(),
            pruned,
            "shipped the WAL since backup {} ({from}..{to})",
            parent.backup_id
        );
        Ok(BackupOutcome {
            object,
            position: Some(json!({ "wal": to, "time": moment(time) })),
        })
    }

    /// Writes this instance's `pg_hba.conf` (with its TLS mode).
    pub(super) fn write_hba(&self) -> Result<()> {
        let mode = crate::tls::state(&self.base)?.current.mode;
        write_engine_file(
            &self.base.layout.data_dir.join("pg_hba.conf"),
            &rewrite_hba(FRESH_HBA, mode),
            self.base.run_as,
        )
    }

    /// The settings and access rules of this instance over what a copy of another instance (a backup, a rewind,
    /// a fresh replica copy) brought.
    pub(super) fn own_settings(&self) -> Result<()> {
        let data = &self.base.layout.data_dir;
        for f in [
            "postgresql.auto.conf",
            "backup_manifest",
            "standby.signal",
            "recovery.signal",
        ] {
            let p = data.join(f);
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| io_err("remove", &p, e))?;
            }
        }
        self.write_hba()?;
        // The backup's main file is a fresh instance's with our include; make sure the include is there (last,
        // so the rendered settings win).
        let main = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&main).map_err(|e| io_err("read", &main, e))?;
        if !text.lines().any(|l| l.trim() == "include = 'trove.conf'") {
            text.push_str("\ninclude = 'trove.conf'\n");
            write_engine_file(&main, &text, self.base.run_as)?;
        }
        self.render_config()
    }

    /// Sets `os_admin`'s password to this instance's secret with the server in single-user mode (it is not
    /// running yet), after the recovery `recovery` sets up (settings; none: the backup's own WAL only). The
    /// statement goes through standard input; an error ends the run (`exit_on_error`) and is logged without the
    /// statement (`log_min_error_statement = panic`).
    async fn reset_admin_password(&self, recovery: &[String]) -> Result<()> {
        let l = &self.base.layout;
        let secret = l.ensure_admin_secret()?;
        if secret.expose().contains(['\n', '\r']) {
            return Err(Error::backend(
                BACKEND,
                "the admin secret holds a line break",
                false,
            ));
        }
        let sql = format!(
            "ALTER ROLE os_admin WITH SUPERUSER LOGIN PASSWORD {}\n",
            lit(secret.expose())
        );
        let mut step = Step::new(&self.bins.postgres, &["--single", "-D"])
            .arg(l.data_dir.as_os_str())
            .engine_user();
        for setting in [
            "exit_on_error=on",
            "log_min_error_statement=panic",
            "log_statement=none",
            "password_encryption=scram-sha-256",
        ] {
            step = step.arg("-c").arg(setting);
        }
        for setting in recovery {
            step = step.arg("-c").arg(setting);
        }
        step = step.arg("postgres");
        let input = futures::stream::iter([Ok(sql.into_bytes())]).boxed();
        feed_pipeline(input, &[step], self.base.run_as, &l.engine_dir).await
    }
}

#[async_trait]
impl EngineBackup for Postgres {
    fn incremental(&self) -> bool {
        true
    }

    async fn backup(
        &self,
        store: &DynBackupStore,
        job: &BackupJob,
        progress: &BackupProgress,
    ) -> Result<BackupOutcome> {
        // A standby keeps no WAL archive of its own: its full backups carry no position to build on.
        let standby = self.in_recovery().await?;
        if let Some(parent) = &job.parent {
            if standby {
                return Err(Error::unprocessable(
                    "A replica keeps no WAL archive: take incremental backups of its replication source.",
                ));
            }
            return self.ship_wal(store, job, parent, progress).await;
        }
        let l = &self.base.layout;
        let tool = self.bins.basebackup.clone().ok_or_else(|| {
            Error::backend(
                BACKEND,
                "pg_basebackup is not installed beside the PostgreSQL server",
                false,
            )
        })?;
        let secret = l.required_admin_secret("postgresql")?;
        let passfile = self.passfile();
        write_engine_file(
            &passfile,
            &format!("*:*:*:os_admin:{}\n", passfile_field(secret.expose())),
            self.base.run_as,
        )?;
        let conninfo = format!(
            "host={} port={} user=os_admin dbname=postgres passfile={} application_name=trove_backup",
            conninfo_value(&self.socket_dir.display().to_string()),
            self.base.ctx.port,
            conninfo_value(&passfile.display().to_string()),
        );
        let steps = [
            Step::new(
                tool,
                &[
                    "--no-password",
                    "--pgdata=-",
                    "--format=tar",
                    "--wal-method=fetch",
                    "--checkpoint=fast",
                    "--no-manifest",
                ],
            )
            .arg(OsString::from(format!("--dbname={conninfo}")))
            .engine_user(),
            Step::new(COMPRESS[0], &COMPRESS[1..]),
        ];
        let r = async {
            // The archive starts (or goes on) before the backup: every segment from the one current now is kept.
            if standby {
                let out = pipeline_output(&steps, self.base.run_as, &l.engine_dir)?;
                let object = store.put(&job.key, progress.counted(out)).await?;
                return Ok(BackupOutcome {
                    object,
                    position: None,
                });
            }
            let spool = self.ensure_spool()?;
            let from = self
                .query_text("SELECT pg_walfile_name(pg_current_wal_lsn())")
                .await?;
            let out = pipeline_output(&steps, self.base.run_as, &l.engine_dir)?;
            let object = store.put(&job.key, progress.counted(out)).await?;
            let time = Utc::now();
            wal::prune(&spool, wal::keep_from(&from, retained(job)))?;
            Ok::<_, Error>(BackupOutcome {
                object,
                position: Some(json!({ "wal": from, "time": moment(time) })),
            })
        }
        .await;
        let _ = std::fs::remove_file(&passfile);
        r
    }

    async fn restore(&self, store: &DynBackupStore, spec: &RestoreSpec) -> Result<()> {
        let (piece, incrementals) = match spec.chain.split_first() {
            Some((full, rest)) if !full.incremental => (full, rest),
            _ => {
                return Err(Error::bad_request(
                    "A restore needs a chain that starts with a full backup.",
                ))
            }
        };
        if spec.restore_time.is_some() && incrementals.is_empty() {
            return Err(Error::bad_request(
                "A point-in-time restore needs an incremental backup after the moment.",
            ));
        }
        let l = &self.base.layout;
        let run_as = self.base.run_as;
        let staging = staging_dir(&l.volume_dir, STAGING, run_as)?;
        let tar = Step::new("tar", &["-x", "-f", "-", "-C"])
            .arg(staging.as_os_str())
            .engine_user();
        let r = unpack_verified(store, piece, vec![tar], run_as, &l.engine_dir).await;
        if let Err(e) = r {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        if !staging.join("global").join("pg_control").is_file() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(Error::unprocessable(format!(
                "Backup {} holds no PostgreSQL data directory.",
                piece.backup_id
            )));
        }
        // The WAL of every incremental, verified, before anything moves into the data directory.
        let wal_dir = staging_dir(&l.volume_dir, RESTORE_WAL, run_as)?;
        for inc in incrementals {
            let tar = Step::new("tar", &["-x", "-f", "-", "-C"])
                .arg(wal_dir.as_os_str())
                .engine_user();
            if let Err(e) = unpack_verified(store, inc, vec![tar], run_as, &l.engine_dir).await {
                let _ = std::fs::remove_dir_all(&staging);
                let _ = std::fs::remove_dir_all(&wal_dir);
                return Err(e);
            }
        }
        trove_os::crash_point("restore:after_unpack");
        move_contents(&staging, &l.data_dir)?;
        self.own_settings()?;
        if spec.replica && incrementals.is_empty() {
            // A replica's seed: a standby from the start, replaying the backup's WAL and then its source's
            // (`attach`); the guest writes nothing of its own (the source's admin password stays; the guest
            // reaches its engine over the socket without one).
            let _ = std::fs::remove_dir_all(&wal_dir);
            l.ensure_admin_secret()?;
            return write_engine_file(&l.data_dir.join("standby.signal"), "", run_as);
        }
        let mut recovery = Vec::new();
        if !incrementals.is_empty() {
            write_engine_file(&l.data_dir.join("recovery.signal"), "", run_as)?;
            recovery.push(format!(
                "restore_command={}",
                wal::restore_command(&wal_dir)
            ));
            recovery.push("recovery_target_action=promote".to_string());
            if let Some(t) = spec.restore_time {
                recovery.push(format!(
                    "recovery_target_time={}",
                    t.format("%Y-%m-%d %H:%M:%S%.6f+00")
                ));
            }
        }
        let r = self.reset_admin_password(&recovery).await;
        let _ = std::fs::remove_dir_all(&wal_dir);
        r.map_err(|e| match spec.restore_time {
            Some(t) => Error::unprocessable(format!("Recovering to {} failed: {e}", moment(t))),
            None => e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passfile_and_conninfo_quoting() {
        assert_eq!(passfile_field("a:b\\c"), "a\\:b\\\\c");
        assert_eq!(conninfo_value("/x y/'z"), "'/x y/\\'z'");
    }

    #[test]
    fn the_fresh_hba_turns_hostssl_for_enforced_tls() {
        let t = rewrite_hba(FRESH_HBA, Some(trove_core::model::SslMode::Enforced));
        assert!(t.contains("hostssl"));
        assert!(t.contains("local   replication"));
    }
}
