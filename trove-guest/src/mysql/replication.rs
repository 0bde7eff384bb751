//! MariaDB GTID replication ([`ReplicationFacet`]): the source's replication account `os_repl` (REPLICATION SLAVE
//! only, its password generated once and kept beside the admin's), replicas following with `MASTER_USE_GTID`,
//! positions as `@@gtid_current_pos`, `read_only` for every account but the guest's (rendered into `my.cnf` from
//! the guest state so a restart keeps it).
//!
//! Where a replica starts: the more advanced of its own `@@gtid_current_pos` (a former source, or a replica moving to
//! another source) and the GTID of the backup its data was restored from (`mariadb_backup_binlog_info` in the data
//! directory). The guest's own writes on a restored instance (the admin reset) stay out of the binary log, so a
//! replica holds no transaction its source never made.

use async_trait::async_trait;
use sqlx::{Connection, Row};

use trove_core::model::Secret;
use trove_core::ports::{ReplicaPosition, ReplicationFacet, ReplicationSource};
use trove_core::{Error, Result};

use crate::engine::{start_engine, Engine};

use super::admin::{account, identified_by, lit};
use super::{exec_sql, Mysql};

/// The replication account replicas log in with.
const REPL_USER: &str = "os_repl";
/// How long an attached replica's threads may take to run.
const FOLLOW_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The GTID of the backup a data directory was restored from (third field of `mariadb_backup_binlog_info`).
fn restored_gtid(data: &std::path::Path) -> Option<String> {
    ["mariadb_backup_binlog_info", "xtrabackup_binlog_info"]
        .iter()
        .find_map(|f| std::fs::read_to_string(data.join(f)).ok())
        .and_then(|t| t.split_whitespace().nth(2).map(str::to_string))
        .filter(|g| !g.is_empty())
}

/// Where a replica starts: the more advanced of its own position and the GTID of the backup it was restored
/// from. A freshly restored instance's own position is the replica position its source had followed up to (the
/// restored `mysql.gtid_slave_pos`), older than the backup when the source had been promoted since; a former source
/// rejoining is ahead of any backup it was once restored from.
fn start_gtid(own: String, restored: Option<String>) -> String {
    let Some(restored) = restored else {
        return own;
    };
    if own.is_empty() {
        return restored;
    }
    let (o, r) = (
        ReplicaPosition::Gtid { gtid: own.clone() },
        ReplicaPosition::Gtid {
            gtid: restored.clone(),
        },
    );
    if r.ahead_of(&o) == Some(true) {
        restored
    } else {
        own
    }
}

impl Mysql {
    /// The replication account's password, generated and stored (0600) on first use.
    fn repl_secret(&self) -> Result<Secret> {
        self.base.layout.ensure_secret("os_repl.secret")
    }

    /// One text value of `sql` as the admin.
    async fn admin_text(&self, sql: &str) -> Result<String> {
        let mut c = self.connect_admin().await?;
        let r = sqlx::query_scalar::<_, String>(sql)
            .fetch_one(&mut c)
            .await
            .map_err(|e| self.err(e));
        let _ = c.close().await;
        r
    }

    /// Waits (bounded) until both replica threads run; fails with the replica's error when one stops, e.g. a
    /// former source holding transactions its new source never had (`from`: the position it asked for).
    async fn replica_threads_run(&self, from: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + FOLLOW_WAIT;
        loop {
            let (io, sql, error) = self.replica_status().await?;
            if io == "Yes" && sql == "Yes" {
                return Ok(());
            }
            let stopped = io == "No" || sql == "No";
            if stopped || tokio::time::Instant::now() >= deadline {
                return Err(Error::backend(
                    "mysql",
                    format!(
                        "the replica does not follow from {from} (IO thread {io}, SQL thread {sql}){}",
                        error.map(|e| format!(": {e}")).unwrap_or_default()
                    ),
                    !stopped,
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// `Slave_IO_Running`, `Slave_SQL_Running` and the last error of `SHOW SLAVE STATUS`.
    async fn replica_status(&self) -> Result<(String, String, Option<String>)> {
        let mut c = self.connect_admin().await?;
        let row = sqlx::query("SHOW SLAVE STATUS")
            .fetch_optional(&mut c)
            .await
            .map_err(|e| self.err(e));
        let _ = c.close().await;
        let Some(row) = row? else {
            return Ok((
                "No".into(),
                "No".into(),
                Some("no replica configured".into()),
            ));
        };
        let get = |name: &str| {
            row.try_get::<String, _>(name)
                .ok()
                .or_else(|| {
                    row.try_get::<Vec<u8>, _>(name)
                        .ok()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                })
                .filter(|s| !s.is_empty())
        };
        Ok((
            get("Slave_IO_Running").unwrap_or_default(),
            get("Slave_SQL_Running").unwrap_or_default(),
            get("Last_SQL_Error").or_else(|| get("Last_IO_Error")),
        ))
    }

    /// Records and applies who may write.
    async fn read_only(&self, on: bool) -> Result<()> {
        self.base.layout.update_state(|s| s.read_only = on)?;
        self.exec(&[format!("SET GLOBAL read_only = {}", u8::from(on))])
            .await
    }
}

#[async_trait]
impl ReplicationFacet for Mysql {
    async fn source_info(&self) -> Result<ReplicationSource> {
        let pw = self.repl_secret()?;
        let acct = account(REPL_USER, "%");
        let id = identified_by(pw.expose());
        self.exec(&[
            // The account is the instance's own, not data: kept out of the binary log.
            "SET SESSION sql_log_bin = 0".to_string(),
            format!("CREATE USER IF NOT EXISTS {acct} {id}"),
            format!("ALTER USER {acct} {id}"),
            format!("GRANT REPLICATION SLAVE ON *.* TO {acct}"),
        ])
        .await?;
        let host = if self.base.ctx.bind_address.is_empty() {
            "127.0.0.1".to_string()
        } else {
            self.base.ctx.bind_address.clone()
        };
        Ok(ReplicationSource {
            host,
            port: self.base.ctx.port,
            user: REPL_USER.to_string(),
            password: pw,
        })
    }

    async fn attach(&self, source: &ReplicationSource) -> Result<()> {
        // A fenced former source (killed, rendered read only) comes back to follow.
        if self.running_pid().is_none() {
            start_engine(self).await?;
        }
        let own = self
            .admin_text("SELECT CAST(@@GLOBAL.gtid_current_pos AS CHAR)")
            .await?;
        let start = start_gtid(own, restored_gtid(&self.base.layout.data_dir));
        self.read_only(true).await?;
        let mut c = self.connect_admin().await?;
        let stmts = [
            "STOP SLAVE".to_string(),
            format!("SET GLOBAL gtid_slave_pos = {}", lit(&start)),
            format!(
                "CHANGE MASTER TO MASTER_HOST = {}, MASTER_PORT = {}, MASTER_USER = {}, MASTER_PASSWORD = {}, \
                 MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
                lit(&source.host),
                source.port,
                lit(&source.user),
                lit(source.password.expose())
            ),
            "START SLAVE".to_string(),
        ];
        for s in &stmts {
            if let Err(e) = exec_sql(&mut c, s).await {
                let _ = c.close().await;
                return Err(self.err(e));
            }
        }
        let _ = c.close().await;
        self.replica_threads_run(&start).await?;
        tracing::info!(
            instance = %self.base.ctx.instance_id,
            source = %format!("{}:{}", source.host, source.port),
            from = %start,
            "following the source"
        );
        Ok(())
    }

    async fn position(&self) -> Result<ReplicaPosition> {
        Ok(ReplicaPosition::Gtid {
            gtid: self
                .admin_text("SELECT CAST(@@GLOBAL.gtid_current_pos AS CHAR)")
                .await?,
        })
    }

    async fn lag_reason(&self) -> Option<String> {
        self.replica_status().await.ok().and_then(|(_, _, e)| e)
    }

    async fn set_read_only(&self, read_only: bool) -> Result<()> {
        self.read_only(read_only).await
    }

    async fn promote(&self) -> Result<()> {
        self.exec(&["STOP SLAVE".to_string(), "RESET SLAVE ALL".to_string()])
            .await?;
        self.read_only(false).await
    }

    async fn detach(&self) -> Result<()> {
        self.promote().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_starts_from_the_more_advanced_of_its_own_and_the_backups_position() {
        let s = |x: &str| x.to_string();
        // Restored from a backup of a promoted replica: its copied slave position is behind the backup.
        assert_eq!(start_gtid(s("0-1-5"), Some(s("0-2-7"))), "0-2-7");
        // A former source rejoining: ahead of the backup it was once restored from.
        assert_eq!(start_gtid(s("0-2-40"), Some(s("0-1-5"))), "0-2-40");
        assert_eq!(start_gtid(s(""), Some(s("0-1-5"))), "0-1-5");
        assert_eq!(start_gtid(s("0-1-5"), None), "0-1-5");
    }

    #[test]
    fn the_gtid_of_a_restored_backup() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(restored_gtid(d.path()), None);
        std::fs::write(
            d.path().join("mariadb_backup_binlog_info"),
            "mysql-bin.000002\t385\t0-7-12\n",
        )
        .unwrap();
        assert_eq!(restored_gtid(d.path()).as_deref(), Some("0-7-12"));
        std::fs::write(
            d.path().join("mariadb_backup_binlog_info"),
            "mysql-bin.000002\t385\n",
        )
        .unwrap();
        assert_eq!(restored_gtid(d.path()), None);
    }
}
