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

use async_trait::async_trait;
use futures::StreamExt;
use std::ffi::OsString;

use trove_core::model::Manager;
use trove_core::ports::{
    verified_object, BackupJob, BackupOutcome, BackupProgress, DynBackupStore, RestoreSpec,
};
use trove_core::{Error, Result};

use super::admin::lit;
use super::tls::rewrite_hba;
use super::Postgres;
use crate::backup::{
    feed_pipeline, move_contents, only_full, pipeline_output, staging_dir, EngineBackup, Step,
    COMPRESS, DECOMPRESS,
};
use crate::common::{io_err, write_engine_file, BACKEND};
use crate::overrides::Configurable;

/// The `pg_hba.conf` of a fresh instance (initdb's lines with `--auth=scram-sha-256`, and password logins from
/// every address), before its TLS mode is applied.
const FRESH_HBA: &str = "\
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
host    all             all             all                     scram-sha-256
";

/// Where a restore unpacks, beside the data directory.
const STAGING: &str = "restore-staging";

/// A value of a libpq passfile line (`:` and `\` escaped).
fn passfile_field(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}

/// A value of a libpq connection string, quoted.
fn conninfo_value(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl Postgres {
    fn passfile(&self) -> std::path::PathBuf {
        self.base.layout.engine_dir.join("backup.pgpass")
    }

    /// The settings and access rules of this instance over what the backup brought.
    fn own_settings(&self) -> Result<()> {
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
        let mode = crate::tls::state(&self.base)?.current.mode;
        write_engine_file(
            &data.join("pg_hba.conf"),
            &rewrite_hba(FRESH_HBA, mode),
            self.base.run_as,
        )?;
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
    /// running yet). The statement goes through standard input; an error ends the run (`exit_on_error`) and is
    /// logged without the statement (`log_min_error_statement = panic`).
    async fn reset_admin_password(&self) -> Result<()> {
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
        step = step.arg("postgres");
        let input = futures::stream::iter([Ok(sql.into_bytes())]).boxed();
        feed_pipeline(input, &[step], self.base.run_as, &l.engine_dir).await
    }
}

#[async_trait]
impl EngineBackup for Postgres {
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
            let out = pipeline_output(&steps, self.base.run_as, &l.engine_dir)?;
            store.put(&job.key, progress.counted(out)).await
        }
        .await;
        let _ = std::fs::remove_file(&passfile);
        Ok(BackupOutcome {
            object: r?,
            position: None,
        })
    }

    async fn restore(&self, store: &DynBackupStore, spec: &RestoreSpec) -> Result<()> {
        let piece = only_full(spec, Manager::Postgresql)?;
        let l = &self.base.layout;
        let run_as = self.base.run_as;
        let staging = staging_dir(&l.volume_dir, STAGING, run_as)?;
        let steps = [
            Step::new(DECOMPRESS[0], &DECOMPRESS[1..]),
            Step::new("tar", &["-x", "-f", "-", "-C"])
                .arg(staging.as_os_str())
                .engine_user(),
        ];
        let r = async {
            feed_pipeline(
                verified_object(store, piece).await?,
                &steps,
                run_as,
                &l.engine_dir,
            )
            .await
        }
        .await;
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
        move_contents(&staging, &l.data_dir)?;
        self.own_settings()?;
        self.reset_admin_password().await
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
