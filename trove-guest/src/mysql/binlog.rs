//! MariaDB's binary log for point-in-time restore: every instance writes one (`log_bin` on the volume, row
//! format); each backup flushes it first and records the file it starts with, an incremental ships the files since
//! its parent's as its archive object ([`trove_core::ports::archive_key`]), and a restore to a moment replays the
//! archive of the backup after the moment from where the one before it ends (`mariadb-binlog --start-position
//! --stop-datetime | mariadb`) on a private server run (no network) before the instance first starts.
//!
//! Binary log times are whole seconds: a restore to `hh:mm:ss.fff` applies what was committed before `hh:mm:ss`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::mysql::MySqlConnection;
use sqlx::{Connection, Row};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use trove_core::ports::{archive_key, archive_piece, BackupPiece, DynBackupStore, ObjectMeta};
use trove_core::{Error, Result};

use super::Mysql;
use crate::backup::{feed_pipeline, pipeline_output, unpack_verified, Step, COMPRESS};
use crate::common::{find_program, io_err, spawn_detached, write_engine_file, BACKEND};
use crate::overrides::Configurable;

/// The binary log's directory on the volume and its file names' base.
const DIR: &str = "binlog";
const BASE: &str = "mysql-bin";
/// How long the private replay server may take to answer.
const REPLAY_START: Duration = Duration::from_secs(60);

/// A text column of a `SHOW` result (MariaDB answers some as binary strings).
pub(super) fn text(row: &sqlx::mysql::MySqlRow, i: usize) -> Option<String> {
    row.try_get::<String, _>(i).ok().or_else(|| {
        row.try_get::<Vec<u8>, _>(i)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    })
}

/// The files from `from` up to, not including, the last of `logs` (the one being written).
pub(super) fn closed_since(logs: &[String], from: &str) -> Option<Vec<String>> {
    let start = logs.iter().position(|l| l == from)?;
    let end = logs.len().checked_sub(1)?;
    (start < end).then(|| logs[start..end].to_vec())
}

/// The binary log file and position a prepared backup ends at (`mariadb_backup_binlog_info`, written by
/// `mariadb-backup` when the source had a binary log).
pub(super) fn backup_binlog_position(dir: &Path) -> Option<(String, u64)> {
    ["mariadb_backup_binlog_info", "xtrabackup_binlog_info"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .and_then(|t| {
            let mut it = t.split_whitespace();
            let file = it.next()?.to_string();
            let pos = it.next()?.parse().ok()?;
            Some((file, pos))
        })
}

/// The recorded moment of a piece (`position.time`).
pub(super) fn piece_time(p: &BackupPiece) -> Option<DateTime<Utc>> {
    let t = p.position.as_ref()?.get("time")?.as_str()?;
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// How many pieces of `chain` a restore to `at` applies whole: those that ended at or before it (the archive of
/// the next one, if any, is replayed to `at`); `None` when the moment is before the full backup ended.
pub(super) fn whole_pieces(chain: &[BackupPiece], at: DateTime<Utc>) -> Option<usize> {
    let n = chain
        .iter()
        .take_while(|p| piece_time(p).is_some_and(|t| t <= at))
        .count();
    (n >= 1).then_some(n)
}

impl Mysql {
    /// The binary log directory (made, engine user's, when missing).
    pub(super) fn binlog_dir(&self) -> Result<PathBuf> {
        let d = self.base.layout.volume_dir.join(DIR);
        if !d.is_dir() {
            std::fs::create_dir_all(&d).map_err(|e| io_err("create", &d, e))?;
            crate::common::set_mode(&d, 0o700)?;
            self.base.run_as.own(&d)?;
        }
        Ok(d)
    }

    /// The `my.cnf` lines of the binary log.
    pub(super) fn binlog_cnf(&self) -> Result<String> {
        let d = self.binlog_dir()?;
        // A server id of its own (from the instance id, never 0): replicas must not share their source's.
        let b = self.base.ctx.instance_id.as_bytes();
        let server_id = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) % (u32::MAX - 1) + 1;
        Ok(format!(
            "# binary log: point-in-time restore (see the guest's mysql::binlog)\n\
             server_id = {server_id}\n\
             log_bin = {base}\n\
             log_bin_index = {base}.index\n\
             binlog_format = ROW\n\
             # replicated transactions keep their GTIDs in this log too: a promoted replica serves its siblings\n\
             log_slave_updates = ON\n\
             # a week at most when no backup prunes it earlier\n\
             binlog_expire_logs_seconds = 604800\n",
            base = d.join(BASE).display(),
        ))
    }

    /// Starts a new binary log file; answers its name (`None`: the server writes no binary log).
    pub(super) async fn flush_binlog(&self, c: &mut MySqlConnection) -> Result<Option<String>> {
        sqlx::Executor::execute(&mut *c, "FLUSH BINARY LOGS")
            .await
            .map_err(|e| self.err(e))?;
        let row = sqlx::query("SHOW MASTER STATUS")
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.and_then(|r| text(&r, 0)))
    }

    /// The binary log files the server has, oldest first.
    pub(super) async fn binlogs(&self, c: &mut MySqlConnection) -> Result<Vec<String>> {
        let rows = sqlx::query("SHOW BINARY LOGS")
            .fetch_all(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().filter_map(|r| text(r, 0)).collect())
    }

    /// Ships `files` of the binary log (tar, compressed) as the archive object of `key`.
    pub(super) async fn ship_binlogs(
        &self,
        store: &DynBackupStore,
        key: &str,
        files: &[String],
    ) -> Result<ObjectMeta> {
        let dir = self.binlog_dir()?;
        let mut tar = Step::new("tar", &["-c", "-f", "-", "-C"])
            .arg(dir.as_os_str())
            .arg("--")
            .engine_user();
        for f in files {
            tar = tar.arg(f);
        }
        let steps = [tar, Step::new(COMPRESS[0], &COMPRESS[1..])];
        let out = pipeline_output(&steps, self.base.run_as, &self.base.layout.engine_dir)?;
        store.put(&archive_key(key), out).await
    }

    /// The pid file of the private replay server.
    fn replay_pid(&self) -> PathBuf {
        self.base.layout.engine_dir.join("replay.pid")
    }

    /// Ends a replay server an interrupted restore left running.
    pub(super) async fn end_stale_replay(&self) {
        if let Some(pid) = trove_os::read_pid(&self.replay_pid()) {
            if trove_os::cmdline_contains(pid, &[self.bins.server.display().to_string()]) {
                tracing::warn!(pid, "ending a replay server left by an interrupted restore");
                let _ = trove_os::send_signal(pid, "KILL");
                trove_os::wait_gone(pid, trove_os::KILL_WAIT).await;
            }
        }
        let _ = std::fs::remove_file(self.replay_pid());
    }

    /// Replays the archive of `next` from where the backup before it ends (`ends_at`, its
    /// [`backup_binlog_position`]) up to `at`, on a private
    /// run of the server over the data directory (no network, no binary log of its own; the admin's password is
    /// reset by the init file first).
    pub(super) async fn replay_to(
        &self,
        store: &DynBackupStore,
        ends_at: Option<(String, u64)>,
        next: &BackupPiece,
        at: DateTime<Utc>,
        staging: &Path,
    ) -> Result<()> {
        let l = &self.base.layout;
        let run_as = self.base.run_as;
        let archive = archive_piece(next).ok_or_else(|| {
            Error::unprocessable(format!(
                "Backup {} carries no binary log archive (taken before point-in-time restore or without a \
                 binary log): restore it without restore_time.",
                next.backup_id
            ))
        })?;
        let (file, pos) = ends_at.ok_or_else(|| {
            Error::unprocessable(
                "The backup before the moment records no binary log position (its source wrote no binary log): \
                 restore without restore_time.",
            )
        })?;
        let tar = Step::new("tar", &["-x", "-f", "-", "-C"])
            .arg(staging.as_os_str())
            .engine_user();
        unpack_verified(store, &archive, vec![tar], run_as, &l.engine_dir).await?;
        let mut files: Vec<String> = std::fs::read_dir(staging)
            .map_err(|e| io_err("read", staging, e))?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.as_str() >= file.as_str())
            .collect();
        files.sort();
        if files.first() != Some(&file) {
            return Err(Error::unprocessable(format!(
                "The binary log archive of backup {} does not hold {file}, where the backup before the moment \
                 ends; restore without restore_time.",
                next.backup_id
            )));
        }
        let binlog =
            find_program(&["mariadb-binlog", "mysqlbinlog"], None, &[]).ok_or_else(|| {
                Error::backend(
                    BACKEND,
                    "mariadb-binlog is not installed beside the server",
                    false,
                )
            })?;
        let client = find_program(&["mariadb", "mysql"], None, &[]).ok_or_else(|| {
            Error::backend(
                BACKEND,
                "the mariadb client is not installed beside the server",
                false,
            )
        })?;

        // The private server.
        self.render_config()?;
        self.end_stale_replay().await;
        let sock = l.engine_dir.join("replay.sock");
        let _ = std::fs::remove_file(&sock);
        let args: Vec<OsString> = vec![
            format!("--defaults-file={}", self.cnf_path().display()).into(),
            "--skip-networking".into(),
            "--skip-log-bin".into(),
            format!("--socket={}", sock.display()).into(),
            format!(
                "--pid-file={}",
                self.base
                    .layout
                    .engine_dir
                    .join("replay-mysqld.pid")
                    .display()
            )
            .into(),
            format!("--init-file={}", self.admin_reset_file().display()).into(),
        ];
        let argv: Vec<&std::ffi::OsStr> = args.iter().map(OsString::as_os_str).collect();
        let pid = spawn_detached(
            &self.bins.server,
            &argv,
            run_as,
            &l.engine_dir,
            &l.engine_dir.join("replay.out"),
        )?;
        let _ = trove_os::write_private(&self.replay_pid(), format!("{pid}\n").as_bytes());
        let r = self
            .replay_on(&sock, pid, &binlog, &client, staging, &files, pos, at)
            .await;
        let _ = trove_os::terminate(pid, "TERM", trove_os::KILL_WAIT).await;
        let _ = std::fs::remove_file(self.replay_pid());
        r
    }

    #[allow(clippy::too_many_arguments)]
    async fn replay_on(
        &self,
        sock: &Path,
        pid: u32,
        binlog: &Path,
        client: &Path,
        staging: &Path,
        files: &[String],
        pos: u64,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let l = &self.base.layout;
        let secret = l.required_admin_secret("mysql")?;
        let started = tokio::time::Instant::now();
        loop {
            let o = self.options("os_admin", secret.expose()).socket(sock);
            match sqlx::ConnectOptions::connect(&o).await {
                Ok(c) => {
                    let _ = c.close().await;
                    break;
                }
                Err(e) if started.elapsed() > REPLAY_START || !trove_os::pid_alive(pid) => {
                    return Err(Error::backend(
                        BACKEND,
                        format!(
                            "the replay server did not answer ({e}): {}",
                            trove_os::log_tail(&crate::engine::Engine::log_file(self), 600)
                        ),
                        false,
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        trove_os::crash_point("restore:during_replay");
        // The client reads the admin's login from a file (0600, engine user's), never from its command line.
        let cnf = l.engine_dir.join("replay-client.cnf");
        write_engine_file(
            &cnf,
            &format!(
                "[client]\nuser = os_admin\npassword = {}\nsocket = {}\n",
                secret.expose(),
                sock.display()
            ),
            self.base.run_as,
        )?;
        let mut dump = Step::new("env", &["TZ=UTC"])
            .arg(binlog.as_os_str())
            .arg(format!("--start-position={pos}"))
            .arg(format!(
                "--stop-datetime={}",
                at.format("%Y-%m-%d %H:%M:%S")
            ))
            .engine_user();
        for f in files {
            dump = dump.arg(staging.join(f));
        }
        let apply = Step::new(client, &[])
            .arg(format!("--defaults-file={}", cnf.display()))
            .arg("--binary-mode")
            .engine_user();
        let r = async {
            let out = pipeline_output(&[dump], self.base.run_as, &l.engine_dir)?;
            feed_pipeline(out, &[apply], self.base.run_as, &l.engine_dir).await
        }
        .await;
        let _ = std::fs::remove_file(&cnf);
        r?;
        tracing::info!(
            instance = %self.base.ctx.instance_id,
            files = files.len(),
            to = %at,
            "replayed the binary log to the moment"
        );
        Ok(())
    }
}

/// The `position` of a MariaDB backup: its LSN, the binary log file it starts with, the moment it covers up to,
/// and its archive object when it shipped one.
pub(super) fn position(
    lsn: u64,
    binlog: Option<&str>,
    time: Option<DateTime<Utc>>,
    archive: Option<&ObjectMeta>,
) -> Value {
    let mut p = serde_json::json!({ "to_lsn": lsn });
    if let Some(t) = time {
        p["time"] = t
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .into();
    }
    if let Some(b) = binlog {
        p["binlog"] = b.into();
    }
    if let Some(a) = archive {
        p["archive"] = serde_json::json!({ "size": a.size, "checksum": a.checksum });
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(t: &str) -> BackupPiece {
        BackupPiece {
            backup_id: uuid::Uuid::new_v4(),
            key: "k".into(),
            checksum: String::new(),
            size: 0,
            position: Some(serde_json::json!({ "time": t })),
            incremental: true,
        }
    }

    #[test]
    fn closed_files_since_a_start() {
        let logs: Vec<String> = ["b.1", "b.2", "b.3", "b.4"].map(String::from).to_vec();
        assert_eq!(
            closed_since(&logs, "b.2"),
            Some(vec!["b.2".into(), "b.3".into()])
        );
        assert_eq!(closed_since(&logs, "b.4"), None);
        assert_eq!(closed_since(&logs, "b.0"), None);
    }

    #[test]
    fn a_moment_applies_the_pieces_that_ended_before_it() {
        let chain = [
            piece("2026-01-01T00:00:00Z"),
            piece("2026-01-01T01:00:00Z"),
            piece("2026-01-01T02:00:00Z"),
        ];
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(whole_pieces(&chain, at("2026-01-01T00:30:00Z")), Some(1));
        assert_eq!(whole_pieces(&chain, at("2026-01-01T01:00:00Z")), Some(2));
        assert_eq!(whole_pieces(&chain, at("2025-12-31T23:00:00Z")), None);
        assert_eq!(whole_pieces(&chain, at("2026-01-01T02:00:00Z")), Some(3));
    }

    #[test]
    fn the_binlog_position_of_a_prepared_backup() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(backup_binlog_position(d.path()), None);
        std::fs::write(
            d.path().join("mariadb_backup_binlog_info"),
            "mysql-bin.000003\t1234\t0-1-56\n",
        )
        .unwrap();
        assert_eq!(
            backup_binlog_position(d.path()),
            Some(("mysql-bin.000003".into(), 1234))
        );
    }
}
