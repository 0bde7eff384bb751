//! Redis replication ([`ReplicationFacet`]): the source's ACL user `os_repl` (only `PSYNC`, `REPLCONF`, `PING`;
//! password stored hashed in the ACL file), replicas following with `REPLICAOF` as that user (`masteruser`,
//! `masterauth`), positions as the replication offset. Whom a replica follows is kept in the guest state (the
//! password in `master.secret`, 0600) and rendered into `redis.conf`, so a restart keeps following.
//!
//! Redis has no read-only mode for a source: `set_read_only(true)` pauses every client's writes (`CLIENT PAUSE
//! WRITE`) for the handover; a replica is read only by itself (`replica-read-only`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;

use trove_core::model::Secret;
use trove_core::ports::{ReplicaPosition, ReplicationFacet, ReplicationSource};
use trove_core::{Error, Result};

use super::Redis;
use crate::common::{io_err, write_private, BACKEND};

/// The replication ACL user.
const REPL_USER: &str = "os_repl";
/// How long a source's writes stay paused at most when nobody ends the pause (ms).
const PAUSE_MS: &str = "600000";

/// Whom a replica follows (its password is kept apart, in `master.secret`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Following {
    /// Source host.
    pub host: String,
    /// Source port.
    pub port: u16,
    /// Replication user.
    pub user: String,
}

/// A `redis.conf` value, quoted.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `master_repl_offset` of an `INFO replication` answer.
fn repl_offset(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
}

impl Redis {
    fn secret_file(&self, name: &str) -> PathBuf {
        self.base.layout.guest_dir.join(name)
    }

    /// A secret the guest stored under its directory as `name`, if any.
    fn guest_secret(&self, name: &str) -> Result<Option<Secret>> {
        let p = self.secret_file(name);
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(Some(Secret::new(s.trim().to_string()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &p, e)),
        }
    }

    fn repl_secret(&self) -> Result<Secret> {
        if let Some(s) = self.guest_secret("os_repl.secret")? {
            return Ok(s);
        }
        let s = Secret::generate(32);
        write_private(&self.secret_file("os_repl.secret"), s.expose().as_bytes())?;
        Ok(s)
    }

    /// The `redis.conf` lines of the source this instance follows, if any.
    pub(super) fn replica_conf(&self) -> Result<String> {
        let st = self.base.layout.state()?;
        let (Some(f), Some(pw)) = (st.following, self.guest_secret("master.secret")?) else {
            return Ok(String::new());
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
        write_private(
            &self.secret_file("master.secret"),
            source.password.expose().as_bytes(),
        )?;
        self.base.layout.update_state(|s| {
            s.following = Some(Following {
                host: source.host.clone(),
                port: source.port,
                user: source.user.clone(),
            })
        })?;
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

    async fn wait_for(&self, position: &ReplicaPosition, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let at = self.position().await?;
            if at.covers(position) == Some(true) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::backend(
                    BACKEND,
                    format!(
                        "the replica reached {at:?}, not {position:?}, within {} s",
                        timeout.as_secs()
                    ),
                    true,
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
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
        self.base.layout.update_state(|s| s.following = None)?;
        let _ = std::fs::remove_file(self.secret_file("master.secret"));
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
    fn the_offset_of_an_info_answer() {
        let info =
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:4242\r\n";
        assert_eq!(repl_offset(info), Some(4242));
        assert_eq!(repl_offset("role:master\r\n"), None);
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
