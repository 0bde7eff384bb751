//! [`ReplicationFacet`]: the engine as a replication source or replica (upstream guest `get_replication_snapshot`,
//! `attach_replica`, `detach_replica`, `make_read_only`, `enable_as_master`, `wait_for_txn`, ...).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::model::Secret;

/// Where an engine is in its replication stream. Positions of one engine compare with [`ReplicaPosition::ahead_of`];
/// the candidate of a failover is the most advanced healthy replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReplicaPosition {
    /// MariaDB: the GTID position (`domain-server-sequence`, one per replication domain, comma-separated).
    Gtid {
        /// `@@gtid_current_pos` (source) or `@@gtid_slave_pos` (replica).
        gtid: String,
    },
    /// PostgreSQL: a WAL location, as a number.
    Lsn {
        /// The LSN.
        lsn: u64,
    },
    /// Redis: the replication offset.
    Offset {
        /// The offset.
        offset: u64,
    },
}

/// The sequence number of each domain of a MariaDB GTID position (`0-1-56,1-2-7` → `[(0, 56), (1, 7)]`).
fn gtid_sequences(gtid: &str) -> Option<Vec<(u32, u64)>> {
    let mut out = Vec::new();
    for part in gtid.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut it = part.split('-');
        let domain = it.next()?.parse().ok()?;
        let _server: u32 = it.next()?.parse().ok()?;
        let seq = it.next()?.parse().ok()?;
        if it.next().is_some() {
            return None;
        }
        out.push((domain, seq));
    }
    out.sort_unstable();
    Some(out)
}

impl ReplicaPosition {
    /// Whether `self` holds everything `other` holds (`None`: the two do not compare: other engines, or GTID
    /// positions that are not valid).
    pub fn covers(&self, other: &ReplicaPosition) -> Option<bool> {
        match (self, other) {
            (ReplicaPosition::Lsn { lsn: a }, ReplicaPosition::Lsn { lsn: b }) => Some(a >= b),
            (ReplicaPosition::Offset { offset: a }, ReplicaPosition::Offset { offset: b }) => {
                Some(a >= b)
            }
            (ReplicaPosition::Gtid { gtid: a }, ReplicaPosition::Gtid { gtid: b }) => {
                let (a, b) = (gtid_sequences(a)?, gtid_sequences(b)?);
                Some(b.iter().all(|(d, sb)| {
                    a.iter()
                        .find(|(da, _)| da == d)
                        .is_some_and(|(_, sa)| sa >= sb)
                }))
            }
            _ => None,
        }
    }

    /// Whether `self` holds more than `other` (it covers it and differs).
    pub fn ahead_of(&self, other: &ReplicaPosition) -> Option<bool> {
        Some(self.covers(other)? && self != other)
    }
}

/// How a replica reaches its source: the source's address and the replication account the source made for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicationSource {
    /// Host or address the replica connects to.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The replication account.
    pub user: String,
    /// Its password (sealed on the bus like every secret).
    pub password: Secret,
}

/// The engine as a member of a replication set.
///
/// # Contract
/// - `source_info` makes (once; again answers the same account) the replication account replicas log in with, and
///   answers how to reach this engine. The account may replicate and nothing else.
/// - `attach` makes this engine, holding a copy of the source's data (restored from a backup of it), a replica of
///   `source`: it follows from where its data ends (no transaction applied twice or skipped) and takes no writes
///   from any account but the guest's. Attaching again to the same source is a no-op; to another source, it follows
///   that one from where it is.
/// - `position` answers where the engine is: the last transaction written (source) or applied (replica).
/// - `wait_for` answers once the engine covers `position`, or times out with a transient error saying how far it
///   got.
/// - `set_read_only(true)` stops every account but the guest's from writing (a source about to hand over, or fenced);
///   an engine may instead stop cleanly (PostgreSQL), as long as `position` still answers where it stopped and
///   `set_read_only(false)` starts it again.
/// - `promote` stops following, and makes the engine a writable source from exactly what it applied.
/// - `detach` is `promote` without a new role: a standalone writable instance.
#[async_trait]
pub trait ReplicationFacet: Send + Sync {
    /// The replication account and address of this engine as a source.
    async fn source_info(&self) -> Result<ReplicationSource>;
    /// Follows `source`.
    async fn attach(&self, source: &ReplicationSource) -> Result<()>;
    /// The engine's position.
    async fn position(&self) -> Result<ReplicaPosition>;
    /// Waits until the engine covers `position` (polling [`Self::position`]; an engine with a server-side wait may
    /// do better).
    async fn wait_for(&self, position: &ReplicaPosition, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let at = self.position().await?;
            if at.covers(position) == Some(true) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let why = self
                    .lag_reason()
                    .await
                    .map(|w| format!(" (replica error: {w})"))
                    .unwrap_or_default();
                return Err(Error::backend(
                    "guest",
                    format!(
                        "the replica reached {at:?}, not {position:?}, within {} s{why}",
                        timeout.as_secs()
                    ),
                    true,
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    /// Why the engine does not catch up, when it says (its replica's last error), for the fault of a wait.
    async fn lag_reason(&self) -> Option<String> {
        None
    }
    /// Stops (or allows again) writes from every account but the guest's.
    async fn set_read_only(&self, read_only: bool) -> Result<()>;
    /// Becomes a writable source from what it applied.
    async fn promote(&self) -> Result<()>;
    /// Becomes a standalone writable instance.
    async fn detach(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gtid(s: &str) -> ReplicaPosition {
        ReplicaPosition::Gtid { gtid: s.into() }
    }

    #[test]
    fn positions_compare_within_an_engine() {
        assert_eq!(gtid("0-1-56").covers(&gtid("0-1-55")), Some(true));
        assert_eq!(gtid("0-1-55").covers(&gtid("0-1-56")), Some(false));
        // The server id changes with the source; the sequence goes on.
        assert_eq!(gtid("0-2-57").ahead_of(&gtid("0-1-56")), Some(true));
        assert_eq!(gtid("0-1-9,1-3-4").covers(&gtid("1-3-4")), Some(true));
        assert_eq!(gtid("0-1-9").covers(&gtid("0-1-9,1-3-4")), Some(false));
        assert_eq!(gtid("0-1-9").ahead_of(&gtid("0-1-9")), Some(false));
        assert_eq!(gtid("junk").covers(&gtid("0-1-1")), None);
        let lsn = |l| ReplicaPosition::Lsn { lsn: l };
        assert_eq!(lsn(10).ahead_of(&lsn(9)), Some(true));
        assert_eq!(lsn(10).covers(&ReplicaPosition::Offset { offset: 1 }), None);
    }
}
