//! Redis replication ([`ReplicationFacet`]): the source's ACL user `os_repl` (only `PSYNC`, `REPLCONF`, `PING`;
//! password stored hashed in the ACL file), replicas following with `REPLICAOF` as that user (`masteruser`,
//! `masterauth`), positions as the replication offset. Whom a replica follows is kept in the guest state (the
//! password in `master.secret`, 0600) and rendered into `redis.conf`, so a restart keeps following.
//!
//! Redis has no read-only mode for a source: `set_read_only(true)` pauses every client's writes (`CLIENT PAUSE
//! WRITE`) for the handover; a replica is read only by itself (`replica-read-only`).

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use trove_core::model::Secret;
use trove_core::ports::{ReplicaPosition, ReplicationFacet, ReplicationSource};
use trove_core::{Error, Result};

use super::Redis;
use crate::common::{write_private, Following, BACKEND};
use crate::engine::{start_engine, Engine};

/// The replication ACL user.
const REPL_USER: &str = "os_repl";
/// The file of the followed source's replication password under the guest directory.
const MASTER_SECRET: &str = "master.secret";
/// How long a source's writes stay paused at most when nobody ends the pause (ms).
const PAUSE_MS: &str = "600000";

/// A `redis.conf` value, quoted.
pub(super) fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `master_repl_offset` of an `INFO replication` answer.
fn repl_offset(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether `INFO replication` shows a replica whose link to its source is not up, or that is still loading its
/// first copy: its offset says nothing yet about what it holds of that source.
fn unsynced_replica(info: &str) -> bool {
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(k).map(|v| v.trim().to_string()))
    };
    field("role:").as_deref() == Some("slave")
        && (field("master_link_status:").as_deref() != Some("up")
            || field("master_sync_in_progress:").as_deref() == Some("1"))
}

/// `min-replicas-to-write` of a fenced source: no set has this many replicas, so it refuses every write.
const FENCED_MIN_REPLICAS: u32 = 1_000_000;

impl Redis {
    fn repl_secret(&self) -> Result<Secret> {
        self.base.layout.ensure_secret("os_repl.secret")
    }

    /// The `redis.conf` lines of the source this instance follows, if any.
    pub(super) fn replica_conf(&self) -> Result<String> {
        let st = self.base.layout.state()?;
        let (Some(f), Some(pw)) = (st.following, self.base.layout.stored_secret(MASTER_SECRET)?)
        else {
            // A fenced source (failed over) takes no write when it comes back: it would need more replicas than
            // any set has.
            return Ok(if st.read_only {
                format!("# fenced (see the guest's redis::replication)\nmin-replicas-to-write {FENCED_MIN_REPLICAS}\nmin-replicas-max-lag 1\n")
            } else {
                String::new()
            });
        };
        Ok(format!(
            "# a replica (see the guest's redis::replication)\nreplicaof {} {}\nmasteruser {}\nmasterauth {}\n\
             replica-read-only yes\n",
            quoted(&f.host),
            f.port,
            quoted(&f.user),
            quoted(pw.expose())
        ))
    }

    async fn command(&self, name: &str, args: &[&str]) -> Result<redis::Value> {
        let mut c = self.connect_admin().await?;
        let mut cmd = redis::cmd(name);
        for a in args {
            cmd.arg(*a);
        }
        cmd.query_async(&mut c).await.map_err(|e| self.err(e))
    }
}

#[async_trait]
impl ReplicationFacet for Redis {
    async fn source_info(&self) -> Result<ReplicationSource> {
        let pw = self.repl_secret()?;
        let hash = format!("#{}", hex::encode(Sha256::digest(pw.expose().as_bytes())));
        self.acl(&[
            "SETUSER",
            REPL_USER,
            "reset",
            "on",
            &hash,
            "+psync",
            "+replconf",
            "+ping",
        ])
        .await?;
        self.acl(&["SAVE"]).await?;
        Ok(ReplicationSource {
            host: self.base.connect_host(),
            port: self.base.ctx.port,
            user: REPL_USER.to_string(),
            password: pw,
        })
    }

    async fn attach(&self, source: &ReplicationSource) -> Result<()> {
        // A fenced former source (killed, kept from taking writes) comes back to follow.
        if self.running_pid().is_none() {
            start_engine(self).await?;
        }
        write_private(
            &self.base.layout.secret_file(MASTER_SECRET),
            source.password.expose().as_bytes(),
        )?;
        self.base
            .layout
            .update_state(|s| s.following = Some(Following::of(source)))?;
        let port = source.port.to_string();
        self.command("CONFIG", &["SET", "masteruser", &source.user])
            .await?;
        self.command("CONFIG", &["SET", "masterauth", source.password.expose()])
            .await?;
        self.command("REPLICAOF", &[&source.host, &port]).await?;
        // A source paused for its handover takes its new role's writes from its new source.
        self.command("CLIENT", &["UNPAUSE"]).await?;
        tracing::info!(
            instance = %self.base.ctx.instance_id,
            source = %format!("{}:{}", source.host, source.port),
            "following the source"
        );
        Ok(())
    }

    async fn position(&self) -> Result<ReplicaPosition> {
        let v = self.command("INFO", &["replication"]).await?;
        let text: String = redis::from_redis_value(&v).map_err(|e| self.err(e))?;
        let offset = repl_offset(&text).ok_or_else(|| {
            Error::backend(BACKEND, "INFO replication has no master_repl_offset", false)
        })?;
        Ok(ReplicaPosition::Offset { offset })
    }

    /// A replica has caught up only once its link to the source is up and its first copy loaded (right after
    /// `REPLICAOF` its offset is still the one it had before).
    async fn wait_for(
        &self,
        position: &ReplicaPosition,
        timeout: std::time::Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self.command("INFO", &["replication"]).await?;
            let text: String = redis::from_redis_value(&v).map_err(|e| self.err(e))?;
            let at = repl_offset(&text).map(|offset| ReplicaPosition::Offset { offset });
            if !unsynced_replica(&text)
                && at.as_ref().and_then(|a| a.covers(position)) == Some(true)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::backend(
                    BACKEND,
                    format!(
                        "the replica reached {at:?}, not {position:?}, within {} s{}",
                        timeout.as_secs(),
                        if unsynced_replica(&text) {
                            " (its link to the source is not up)"
                        } else {
                            ""
                        }
                    ),
                    true,
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn set_read_only(&self, read_only: bool) -> Result<()> {
        if read_only {
            self.command("CLIENT", &["PAUSE", PAUSE_MS, "WRITE"])
                .await?;
        } else {
            self.command("CLIENT", &["UNPAUSE"]).await?;
        }
        Ok(())
    }

    async fn promote(&self) -> Result<()> {
        self.command("REPLICAOF", &["NO", "ONE"]).await?;
        self.command("CLIENT", &["UNPAUSE"]).await?;
        self.command("CONFIG", &["SET", "min-replicas-to-write", "0"])
            .await?;
        self.base.layout.update_state(|s| {
            s.following = None;
            s.read_only = false;
        })?;
        let _ = std::fs::remove_file(self.base.layout.secret_file(MASTER_SECRET));
        Ok(())
    }

    async fn detach(&self) -> Result<()> {
        self.promote().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_counts_as_synced_only_with_its_link_up_and_its_copy_loaded() {
        assert!(!unsynced_replica(
            "role:master\r\nmaster_repl_offset:10\r\n"
        ));
        assert!(unsynced_replica(
            "role:slave\r\nmaster_link_status:down\r\nmaster_sync_in_progress:0\r\n"
        ));
        assert!(unsynced_replica(
            "role:slave\r\nmaster_link_status:up\r\nmaster_sync_in_progress:1\r\n"
        ));
        assert!(!unsynced_replica(
            "role:slave\r\nmaster_link_status:up\r\nmaster_sync_in_progress:0\r\n"
        ));
    }

    #[test]
    fn the_offset_of_an_info_answer() {
        let info =
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:4242\r\n";
        assert_eq!(repl_offset(info), Some(4242));
        assert_eq!(repl_offset("role:master\r\n"), None);
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
