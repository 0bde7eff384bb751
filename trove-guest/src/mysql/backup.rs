//! MariaDB backups with `mariadb-backup`: streamed (`--stream=xbstream`) through zstd into the backup store,
//! incremental from the parent's LSN (`--incremental-lsn`); restore = unpack every object of the chain
//! (`mbstream -x`) into staging directories on the volume while its checksum is verified, `--prepare` the full
//! backup and then each incremental onto it, and move the result into the empty data directory.
//!
//! The restored system tables hold the source's `os_admin` password: the first start after a restore runs an
//! init file that gives `os_admin` this instance's own password ([`Mysql::admin_reset_file`]); it is removed once
//! the guest logged in with it.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::Connection;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use trove_core::ports::{BackupJob, BackupOutcome, BackupProgress, DynBackupStore, RestoreSpec};
use trove_core::{Error, Result};

use super::admin::{account, identified_by, lit};
use super::binlog::{backup_binlog_position, closed_since, position, whole_pieces};
use super::Mysql;
use crate::backup::{
    move_contents, pipeline_output, staging_dir, unpack_verified, EngineBackup, Step, COMPRESS,
};
use crate::common::{find_program, run_as_user, write_engine_file, BACKEND};

/// The MariaDB backup binaries.
#[derive(Debug, Clone)]
pub(crate) struct BackupBinaries {
    /// `mariadb-backup` (or `mariabackup`).
    pub backup: PathBuf,
    /// `mbstream`.
    pub mbstream: PathBuf,
}

impl BackupBinaries {
    /// Finds them in `dir`, PATH or the Debian locations; `None` when either is missing (no backups then).
    pub fn find(dir: Option<&Path>) -> Option<BackupBinaries> {
        let backup = find_program(&["mariadb-backup", "mariabackup"], dir, &[])
            .or_else(|| find_program(&["mariadb-backup", "mariabackup"], None, &[]))?;
        let mbstream = find_program(&["mbstream"], dir, &[])
            .or_else(|| find_program(&["mbstream"], None, &[]))?;
        Some(BackupBinaries { backup, mbstream })
    }
}

/// The LSN a backup ends at, from the `xtrabackup_checkpoints` file `mariadb-backup` wrote.
fn to_lsn(dir: &Path) -> Result<u64> {
    let p = dir.join("xtrabackup_checkpoints");
    let text = std::fs::read_to_string(&p).map_err(|e| crate::common::io_err("read", &p, e))?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "to_lsn")
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| Error::backend(BACKEND, format!("no to_lsn in {}", p.display()), false))
}

impl Mysql {
    /// The init file the first start after a restore runs (see the module docs).
    pub(super) fn admin_reset_file(&self) -> PathBuf {
        self.base.layout.engine_dir.join("admin-reset.sql")
    }

    /// The defaults file `mariadb-backup` reads: the engine's own, plus the admin's login (0600, engine user).
    fn backup_cnf(&self) -> Result<PathBuf> {
        let secret = self.base.layout.required_admin_secret("mysql")?;
        let p = self.base.layout.engine_dir.join("backup.cnf");
        let body = format!(
            "!include {cnf}\n[mariadb-backup]\nuser = os_admin\npassword = {pw}\nsocket = {sock}\n",
            cnf = self.cnf_path().display(),
            pw = secret.expose(),
            sock = self.socket.display(),
        );
        write_engine_file(&p, &body, self.base.run_as)?;
        Ok(p)
    }

    fn bins(&self) -> Result<&BackupBinaries> {
        self.backup_bins.as_ref().ok_or_else(|| {
            Error::backend(
                BACKEND,
                "mariadb-backup or mbstream is not installed; install the mariadb-backup package",
                false,
            )
        })
    }

    async fn take_backup(
        &self,
        store: &DynBackupStore,
        job: &BackupJob,
        progress: &BackupProgress,
    ) -> Result<BackupOutcome> {
        let bins = self.bins()?;
        let l = &self.base.layout;
        let cnf = self.backup_cnf()?;
        let lsn_dir = staging_dir(&l.engine_dir, "backup-lsn", self.base.run_as)?;
        let tmp_dir = staging_dir(&l.engine_dir, "backup-tmp", self.base.run_as)?;
        let mut tool = Step::new(&bins.backup, &[])
            .arg(format!("--defaults-file={}", cnf.display()))
            .arg("--backup")
            .arg("--stream=xbstream")
            .arg(format!("--target-dir={}", tmp_dir.display()))
            .arg(format!("--extra-lsndir={}", lsn_dir.display()))
            .engine_user();
        if let Some(parent) = &job.parent {
            let lsn = parent
                .position
                .as_ref()
                .and_then(|p| p.get("to_lsn"))
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    Error::unprocessable(format!(
                        "Backup {} records no LSN to build an incremental on; take a full backup.",
                        parent.backup_id
                    ))
                })?;
            tool = tool.arg(format!("--incremental-lsn={lsn}"));
        }
        let steps = [tool, Step::new(COMPRESS[0], &COMPRESS[1..])];
        let result = async {
            // The binary log: a new file the backup starts in (what an incremental on it ships from), and the
            // files since the parent's still there (else the incremental could not carry them).
            let parent_binlog = job
                .parent
                .as_ref()
                .and_then(|p| p.position.as_ref()?.get("binlog")?.as_str().map(String::from));
            let mut c = self.connect_admin().await?;
            let start_binlog = self.flush_binlog(&mut c).await?;
            if let Some(pb) = &parent_binlog {
                if !self.binlogs(&mut c).await?.contains(pb) {
                    let _ = c.close().await;
                    return Err(Error::unprocessable(format!(
                        "The binary log since backup {} is not all on the instance any more (a later backup \
                         pruned it): take the incremental on the latest backup (--incremental without --parent), \
                         or a full backup.",
                        job.parent.as_ref().map(|p| p.backup_id).unwrap_or_default()
                    )));
                }
            }
            let _ = c.close().await;
            let stream = pipeline_output(&steps, self.base.run_as, &l.engine_dir)?;
            trove_os::crash_point("backup:before_put");
            let object = store.put(&job.key, progress.counted(stream)).await?;
            let time = chrono::Utc::now();
            let lsn = to_lsn(&lsn_dir)?;
            let archive = match &parent_binlog {
                Some(pb) => match self.ship_since(store, &job.key, pb).await {
                    Ok(a) => Some(a),
                    Err(e) => {
                        let _ = store.delete(&job.key).await;
                        return Err(e);
                    }
                },
                None => None,
            };
            if let Some(sb) = &start_binlog {
                self.prune_binlog(sb, job).await;
            }
            // The moment a point-in-time restore may reach: recorded only when the binary log can get there (an
            // incremental on a backup from before the binary log carries no archive).
            let reach = (job.parent.is_none() || archive.is_some()).then_some(time);
            Ok(BackupOutcome {
                object,
                position: Some(position(
                    lsn,
                    start_binlog.as_deref(),
                    reach,
                    archive.as_ref(),
                )),
            })
        }
        .await;
        let _ = std::fs::remove_file(&cnf);
        let _ = std::fs::remove_dir_all(&lsn_dir);
        let _ = std::fs::remove_dir_all(&tmp_dir);
        result
    }

    /// Removes the binary log files no incremental on a live backup needs: those before `own` (where one on this
    /// backup starts) or before the older file the instance's oldest live backup starts with (`retain_from`).
    async fn prune_binlog(&self, own: &str, job: &BackupJob) {
        let retain = job
            .retain_from
            .as_ref()
            .and_then(|p| p.get("binlog")?.as_str());
        let keep = match retain {
            Some(r) if r < own => r,
            _ => own,
        };
        let r = async {
            let mut c = self.connect_admin().await?;
            let logs = self.binlogs(&mut c).await;
            let _ = c.close().await;
            if logs?.iter().any(|l| l == keep) {
                self.exec(&[format!("PURGE BINARY LOGS TO {}", lit(keep))])
                    .await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "pruning the binary log failed");
        }
    }

    /// Closes the binary log file being written and ships the files from `from` as the archive of `key`.
    async fn ship_since(
        &self,
        store: &DynBackupStore,
        key: &str,
        from: &str,
    ) -> Result<trove_core::ports::ObjectMeta> {
        let mut c = self.connect_admin().await?;
        let r = async {
            self.flush_binlog(&mut c).await?;
            self.binlogs(&mut c).await
        }
        .await;
        let _ = c.close().await;
        let files = closed_since(&r?, from).ok_or_else(|| {
            Error::backend(
                BACKEND,
                format!("the binary log since {from} is gone while the backup ran"),
                true,
            )
        })?;
        self.ship_binlogs(store, key, &files).await
    }

    async fn restore_chain(&self, store: &DynBackupStore, spec: &RestoreSpec) -> Result<()> {
        // A moment: the backups that ended before it whole, then the archive of the next one replayed to it.
        let whole = match spec.restore_time {
            Some(at) => whole_pieces(&spec.chain, at).ok_or_else(|| {
                Error::bad_request(format!(
                    "The restore time {at} is before the full backup of the chain ended."
                ))
            })?,
            None => spec.chain.len(),
        };
        let bins = self.bins()?;
        self.end_stale_replay().await;
        let l = &self.base.layout;
        let run_as = self.base.run_as;
        let started = std::time::Instant::now();
        // 1. Unpack every object (each verified as it streams; a mismatch stops before anything is prepared).
        let mut dirs = Vec::new();
        for (i, piece) in spec.chain[..whole].iter().enumerate() {
            let dir = staging_dir(&l.volume_dir, &format!("restore-{i}"), run_as)?;
            let mbstream = Step::new(&bins.mbstream, &["-x", "-C"])
                .arg(&dir)
                .engine_user();
            if let Err(e) =
                unpack_verified(store, piece, vec![mbstream], run_as, &l.engine_dir).await
            {
                for d in dirs.iter().chain(std::iter::once(&dir)) {
                    let _ = std::fs::remove_dir_all(d);
                }
                return Err(e);
            }
            dirs.push(dir);
        }
        trove_os::crash_point("restore:after_unpack");
        let unpacked = started.elapsed();
        // 2. Prepare the full backup, then apply each incremental in order.
        let full = dirs
            .first()
            .ok_or_else(|| Error::bad_request("A restore needs at least one backup."))?;
        let target = format!("--target-dir={}", full.display());
        run_as_user(
            &bins.backup,
            &[OsStr::new("--prepare"), OsStr::new(&target)],
            run_as,
            &l.engine_dir,
        )
        .await?;
        for inc in &dirs[1..] {
            let inc_arg = format!("--incremental-dir={}", inc.display());
            run_as_user(
                &bins.backup,
                &[
                    OsStr::new("--prepare"),
                    OsStr::new(&target),
                    OsStr::new(&inc_arg),
                ],
                run_as,
                &l.engine_dir,
            )
            .await?;
        }
        trove_os::crash_point("restore:after_prepare");
        let prepared = started.elapsed();
        // 3. The admin's password is reset by the first start (an init file), then the data moves into place.
        let secret = l.ensure_admin_secret()?;
        let pw = identified_by(secret.expose());
        // Not into the binary log: the instance's own admin is no transaction of the data (a replica restored
        // from this backup would otherwise hold writes its source never made).
        let mut sql = String::from("SET SESSION sql_log_bin = 0;\n");
        for host in ["localhost", "127.0.0.1", "::1"] {
            let acct = account("os_admin", host);
            sql.push_str(&format!(
                "CREATE USER IF NOT EXISTS {acct} {pw};\n\
                 ALTER USER {acct} {pw};\n\
                 GRANT ALL PRIVILEGES ON *.* TO {acct} WITH GRANT OPTION;\n"
            ));
        }
        write_engine_file(&self.admin_reset_file(), &sql, run_as)?;
        let ends_at = dirs.last().and_then(|d| backup_binlog_position(d));
        move_contents(full, &l.data_dir)?;
        for d in &dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        // 4. To a moment: the next backup's binary log archive, replayed up to it.
        if let (Some(at), Some(next)) = (spec.restore_time, spec.chain.get(whole)) {
            let staging = staging_dir(&l.volume_dir, "restore-binlog", run_as)?;
            let r = self.replay_to(store, ends_at, next, at, &staging).await;
            let _ = std::fs::remove_dir_all(&staging);
            r?;
        }
        tracing::info!(
            instance = %self.base.ctx.instance_id,
            backups = spec.chain.len(),
            unpacked_ms = unpacked.as_millis() as u64,
            prepared_ms = prepared.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "restored the backup chain into the data directory"
        );
        Ok(())
    }
}

#[async_trait]
impl EngineBackup for Mysql {
    fn incremental(&self) -> bool {
        true
    }

    async fn backup(
        &self,
        store: &DynBackupStore,
        job: &BackupJob,
        progress: &BackupProgress,
    ) -> Result<BackupOutcome> {
        self.take_backup(store, job, progress).await
    }

    async fn restore(&self, store: &DynBackupStore, spec: &RestoreSpec) -> Result<()> {
        self.restore_chain(store, spec).await
    }
}
