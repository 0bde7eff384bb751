//! Backups of Redis: full backups of the dataset (an RDB snapshot made with `BGSAVE`) and the users (the ACL
//! file: users do not live in the RDB), as a tar compressed with `zstd`.
//!
//! - Backup: `ACL SAVE`, then `BGSAVE` (scheduled after a running AOF rewrite), waiting until the save counter
//!   moved and the save ended well; the snapshot (`dump.rdb`, hard-linked so a later save cannot change it under
//!   the tar, never copied) and a copy of the ACL file are streamed by `tar` as the engine user.
//! - Restore: the verified object is unpacked into a staging directory beside the data directory, then the RDB
//!   moves into the (empty) data directory as `dump.rdb` and, hard-linked, as the append-only file
//!   (`appendonly.aof`, which Redis reads as an AOF with an RDB preamble and, from 7.0, turns into its multi-part
//!   AOF): the instance persists with `appendonly yes`, and Redis ignores `dump.rdb` then. The ACL file comes
//!   back with its `os_admin` line set to this instance's secret, so the source's users keep their passwords and
//!   the guest keeps its own.

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use trove_core::model::Manager;
use trove_core::ports::{BackupJob, BackupOutcome, BackupProgress, DynBackupStore, RestoreSpec};
use trove_core::{Error, Result};

use super::Redis;
use crate::backup::{
    only_full, pipeline_output, staging_dir, unpack_verified, EngineBackup, Step, COMPRESS,
};
use crate::common::{io_err, write_engine_file};

/// The RDB file's name (Redis's default `dbfilename`), in the data directory and in the archive.
const RDB: &str = "dump.rdb";
/// The ACL file's name in the archive.
const ACL: &str = "users.acl";
/// Where a backup gathers its snapshot (links, not copies of the data), beside the data directory.
const SNAPSHOT: &str = "backup-snapshot";
/// Where a restore unpacks, beside the data directory.
const STAGING: &str = "restore-staging";
/// How long a background save may take.
const SAVE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The `os_admin` line of the ACL file for `secret` (the password stored hashed).
pub(super) fn admin_acl_line(secret: &str) -> String {
    let hash = hex::encode(Sha256::digest(secret.as_bytes()));
    format!("user os_admin on #{hash} ~* &* +@all")
}

/// A restored ACL file with `os_admin` given `secret` (its line replaced, or added when missing).
fn with_admin(acl: &str, secret: &str) -> String {
    let mut out = String::with_capacity(acl.len() + 128);
    for line in acl.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("user") && words.next() == Some("os_admin") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&admin_acl_line(secret));
    out.push('\n');
    out
}

/// The fields of an `INFO` answer.
fn info_fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Where the background saves are: how many ended well (`rdb_saves`, Redis 7) or when the last one did.
#[derive(Debug, Clone, PartialEq)]
struct SaveMark {
    saves: Option<u64>,
    last: u64,
}

impl SaveMark {
    fn of(f: &HashMap<String, String>) -> SaveMark {
        SaveMark {
            saves: f.get("rdb_saves").and_then(|v| v.parse().ok()),
            last: f
                .get("rdb_last_save_time")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        }
    }

    /// Whether a save ended well after `self`.
    fn passed_by(&self, now: &SaveMark) -> bool {
        match (self.saves, now.saves) {
            (Some(a), Some(b)) => b > a,
            _ => now.last > self.last,
        }
    }
}

impl Redis {
    async fn persistence(
        &self,
        c: &mut redis::aio::MultiplexedConnection,
    ) -> Result<HashMap<String, String>> {
        let text: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(info_fields(&text))
    }

    /// A fresh RDB snapshot in the data directory: `BGSAVE`, and its end awaited.
    async fn snapshot(&self) -> Result<()> {
        let mut c = self.connect_admin().await?;
        let first = self.persistence(&mut c).await?;
        let before = SaveMark::of(&first);
        let was_ok = first.get("rdb_last_bgsave_status").map(String::as_str) == Some("ok");
        if before.saves.is_none() {
            // Only the time of the last save tells ours: let the clock pass the second of an earlier one.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let deadline = tokio::time::Instant::now() + SAVE_TIMEOUT;
        // A save already running may have begun before the data the caller wants: wait for it, then save again.
        loop {
            let r: redis::RedisResult<String> = redis::cmd("BGSAVE")
                .arg("SCHEDULE")
                .query_async(&mut c)
                .await;
            match r {
                Ok(_) => break,
                Err(e) if e.to_string().contains("already in progress") => {}
                Err(e) => return Err(self.err(e)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::backend(
                    "redis",
                    "a background save never ended",
                    true,
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut seen_running = false;
        loop {
            let f = self.persistence(&mut c).await?;
            let running = f.get("rdb_bgsave_in_progress").map(String::as_str) == Some("1");
            seen_running |= running;
            let ok = f.get("rdb_last_bgsave_status").map(String::as_str) == Some("ok");
            if !running && before.passed_by(&SaveMark::of(&f)) {
                if ok {
                    return Ok(());
                }
            } else if !running && !ok && (seen_running || was_ok) {
                return Err(Error::backend(
                    "redis",
                    "the background save failed (see the engine's log)",
                    false,
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::backend(
                    "redis",
                    "the background save did not end in time",
                    true,
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The snapshot directory: the RDB linked, the ACL file copied.
    fn gather(&self, dir: &Path) -> Result<()> {
        let rdb = self.base.layout.data_dir.join(RDB);
        std::fs::hard_link(&rdb, dir.join(RDB)).map_err(|e| io_err("link", &rdb, e))?;
        let acl = std::fs::read_to_string(self.acl_path())
            .map_err(|e| io_err("read", &self.acl_path(), e))?;
        write_engine_file(&dir.join(ACL), &acl, self.base.run_as)
    }

    /// The append-only file's name (Redis's default, unless a configuration override set another).
    fn aof_name(&self) -> Result<String> {
        let st = self.base.layout.state()?;
        Ok(st
            .overrides
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("appendfilename"))
            .and_then(|(_, v)| v.as_str().map(str::to_string))
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .unwrap_or_else(|| "appendonly.aof".to_string()))
    }

    /// Moves the unpacked backup into place (see the module's documentation).
    fn install(&self, staging: &Path, secret: &str) -> Result<()> {
        let data = &self.base.layout.data_dir;
        let (rdb, acl) = (staging.join(RDB), staging.join(ACL));
        let acl_text = std::fs::read_to_string(&acl).map_err(|e| io_err("read", &acl, e))?;
        let dst = data.join(RDB);
        std::fs::rename(&rdb, &dst).map_err(|e| io_err("move", &dst, e))?;
        let aof = data.join(self.aof_name()?);
        std::fs::hard_link(&dst, &aof).map_err(|e| io_err("link", &aof, e))?;
        write_engine_file(
            &self.acl_path(),
            &with_admin(&acl_text, secret),
            self.base.run_as,
        )
    }
}

#[async_trait]
impl EngineBackup for Redis {
    fn incremental(&self) -> bool {
        false
    }

    async fn backup(
        &self,
        store: &DynBackupStore,
        job: &BackupJob,
        progress: &BackupProgress,
    ) -> Result<BackupOutcome> {
        let l = &self.base.layout;
        let run_as = self.base.run_as;
        // The ACL file as the engine has it, then the data.
        self.acl(&["SAVE"]).await?;
        self.snapshot().await?;
        let dir = staging_dir(&l.volume_dir, SNAPSHOT, run_as)?;
        let r = async {
            self.gather(&dir)?;
            let steps = [
                Step::new("tar", &["-c", "-f", "-", "-C"])
                    .arg(dir.as_os_str())
                    .arg(RDB)
                    .arg(ACL)
                    .engine_user(),
                Step::new(COMPRESS[0], &COMPRESS[1..]),
            ];
            let out = pipeline_output(&steps, run_as, &l.engine_dir)?;
            store.put(&job.key, progress.counted(out)).await
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(BackupOutcome {
            object: r?,
            position: None,
        })
    }

    async fn restore(&self, store: &DynBackupStore, spec: &RestoreSpec) -> Result<()> {
        let piece = only_full(spec, Manager::Redis)?;
        let l = &self.base.layout;
        let run_as = self.base.run_as;
        let secret = l.ensure_admin_secret()?;
        let staging = staging_dir(&l.volume_dir, STAGING, run_as)?;
        let tar = Step::new("tar", &["-x", "-f", "-", "-C"])
            .arg(staging.as_os_str())
            .engine_user();
        let r = async {
            unpack_verified(store, piece, vec![tar], run_as, &l.engine_dir).await?;
            if !staging.join(RDB).is_file() || !staging.join(ACL).is_file() {
                return Err(Error::unprocessable(format!(
                    "Backup {} holds no Redis snapshot.",
                    piece.backup_id
                )));
            }
            self.install(&staging, secret.expose())
        }
        .await;
        let _ = std::fs::remove_dir_all(&staging);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restored_acl_file_gets_this_instances_admin() {
        let src = "user default off resetchannels -@all\n\
                   user os_admin on #aaaa ~* &* +@all\n\
                   user alice on #bbbb ~* &* +@all -@admin\n";
        let out = with_admin(src, "new-secret");
        assert!(out.contains("user alice on #bbbb"));
        assert!(!out.contains("#aaaa"));
        assert_eq!(out.matches("user os_admin").count(), 1);
        assert!(out.contains(&admin_acl_line("new-secret")));
        assert_eq!(
            with_admin("user default off\n", "s")
                .matches("os_admin")
                .count(),
            1
        );
    }

    #[test]
    fn save_marks_prefer_the_counter() {
        let a = SaveMark {
            saves: Some(1),
            last: 10,
        };
        assert!(a.passed_by(&SaveMark {
            saves: Some(2),
            last: 10
        }));
        assert!(!a.passed_by(&SaveMark {
            saves: Some(1),
            last: 11
        }));
        let old = SaveMark {
            saves: None,
            last: 10,
        };
        assert!(old.passed_by(&SaveMark {
            saves: None,
            last: 11
        }));
        let f = info_fields("# Persistence\r\nrdb_saves:3\r\nrdb_last_save_time:99\r\n");
        assert_eq!(
            SaveMark::of(&f),
            SaveMark {
                saves: Some(3),
                last: 99
            }
        );
    }
}
