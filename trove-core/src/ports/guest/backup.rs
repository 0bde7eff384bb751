//! [`BackupFacet`]: taking a backup of the engine into the deployment's [`BackupStore`]; and what a restore
//! (a prepare with [`PrepareRequest::restore`](super::PrepareRequest::restore)) is given.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::ports::{ByteStream, DynBackupStore, ObjectMeta};

/// What a guest is asked to back up (the cast `backup`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupJob {
    /// The backup record this work fills.
    pub backup_id: Uuid,
    /// The object key to write (its first part is the container).
    pub key: String,
    /// The parent of an incremental backup; `None`: a full backup.
    pub parent: Option<BackupPiece>,
    /// The position of the instance's oldest backup an incremental may still be taken on (its oldest completed
    /// one): the engine's archive (WAL, binary log) is kept from there, so an incremental on any live backup finds
    /// what it needs. `None`: keep only what an incremental on this backup needs.
    #[serde(default)]
    pub retain_from: Option<Value>,
}

/// One stored backup, as an incremental on top of it or a restore needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupPiece {
    /// Backup id.
    pub backup_id: Uuid,
    /// Object key.
    pub key: String,
    /// Hex SHA-256 of the object, as recorded when it was written.
    pub checksum: String,
    /// Size of the object in bytes.
    pub size: u64,
    /// Where in the engine's history the backup ends (engine-specific, e.g. an InnoDB LSN), for the next
    /// incremental.
    #[serde(default)]
    pub position: Option<Value>,
    /// Whether it holds only the changes since its parent.
    pub incremental: bool,
}

/// The key of the archive object a backup may carry beside its own (`<key>.archive`): the engine's log since the
/// parent that a point-in-time restore replays (MariaDB's binary logs). Its size and checksum are in the backup's
/// position (`"archive": {"size": N, "checksum": HEX}`); deleting a backup deletes both objects.
pub fn archive_key(key: &str) -> String {
    format!("{key}.archive")
}

/// The archive object of `piece` as a piece of its own (checked like any object), when it carries one.
pub fn archive_piece(piece: &BackupPiece) -> Option<BackupPiece> {
    let a = piece.position.as_ref()?.get("archive")?;
    Some(BackupPiece {
        backup_id: piece.backup_id,
        key: archive_key(&piece.key),
        checksum: a.get("checksum")?.as_str()?.to_string(),
        size: a.get("size")?.as_u64()?,
        position: None,
        incremental: true,
    })
}

/// What a finished backup reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupOutcome {
    /// The object written.
    pub object: ObjectMeta,
    /// Where in the engine's history it ends (see [`BackupPiece::position`]).
    pub position: Option<Value>,
}

/// What a restoring prepare gets: the chain of backups to apply, the full one first, each incremental after its
/// parent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestoreSpec {
    /// The chain, full backup first.
    pub chain: Vec<BackupPiece>,
    /// Stop replaying at this moment (point-in-time restore), when the engine can.
    #[serde(default)]
    pub restore_time: Option<DateTime<Utc>>,
    /// The restore seeds a replica of the backup's instance: the data stays exactly the source's (the guest writes
    /// nothing of its own into the engine's history, which the replica goes on from when it attaches). PostgreSQL
    /// starts such a copy as a standby instead of ending its recovery.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replica: bool,
}

/// Bytes a running backup has written so far (read by the guest agent for its progress reports).
#[derive(Debug, Clone, Default)]
pub struct BackupProgress(Arc<AtomicU64>);

impl BackupProgress {
    /// Counts `n` more bytes.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes so far.
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// `stream`, counting what passes into this progress.
    pub fn counted(&self, stream: ByteStream) -> ByteStream {
        let me = self.clone();
        stream
            .inspect(move |c| {
                if let Ok(c) = c {
                    me.add(c.len() as u64);
                }
            })
            .boxed()
    }
}

/// The object of `piece`, read from `store`, ending in a checksum error instead of its last chunk when its bytes
/// do not match the recorded size and SHA-256: a consumer that applies nothing before the stream ended cleanly
/// applies nothing of a damaged object.
pub async fn verified_object(store: &DynBackupStore, piece: &BackupPiece) -> Result<ByteStream> {
    let inner = store.get(&piece.key).await?;
    let expect = (piece.checksum.to_ascii_lowercase(), piece.size);
    let id = piece.backup_id;
    struct St {
        inner: ByteStream,
        hash: Sha256,
        size: u64,
        held: Option<Vec<u8>>,
        done: bool,
    }
    let st = St {
        inner,
        hash: Sha256::new(),
        size: 0,
        held: None,
        done: false,
    };
    // One chunk is held back until the next arrives, so the last one is released only once the whole object
    // checked out.
    Ok(futures::stream::unfold(st, move |mut st| {
        let expect = expect.clone();
        async move {
            if st.done {
                return None;
            }
            loop {
                match st.inner.next().await {
                    Some(Ok(c)) => {
                        st.hash.update(&c);
                        st.size += c.len() as u64;
                        if let Some(prev) = st.held.replace(c) {
                            return Some((Ok(prev), st));
                        }
                    }
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                    None => {
                        st.done = true;
                        let sum = hex::encode(std::mem::take(&mut st.hash).finalize());
                        if sum != expect.0 || st.size != expect.1 {
                            return Some((
                                Err(checksum_fault(id, &expect.0, &sum, expect.1, st.size)),
                                st,
                            ));
                        }
                        return st.held.take().map(|c| (Ok(c), st));
                    }
                }
            }
        }
    })
    .boxed())
}

/// The fault of an object whose bytes do not match its record.
pub fn checksum_fault(id: Uuid, expected: &str, found: &str, size: u64, read: u64) -> Error {
    Error::Unprocessable {
        message: format!(
            "The object of backup {id} is damaged: its checksum is {found} ({read} bytes) where {expected} \
             ({size} bytes) was recorded; nothing was restored from it. Restore from another backup."
        ),
    }
}

/// Backups of the engine (upstream guest `create_backup`; restore is part of `prepare`).
///
/// # Contract
/// - `backup` streams the engine's backup tool into the deployment's store under `job.key`, never staging the
///   whole backup on the volume or in memory, counting the bytes written into `progress`. It answers only when the
///   object is complete; on any failure no object is left under `job.key` (nor under its [`archive_key`]).
/// - An incremental job (`job.parent` set) on a strategy without incrementals is refused before anything is
///   written.
/// - A restore (prepare with `restore`) verifies the size and checksum of every object of the chain before
///   anything reaches the engine's data directory; a mismatch is a [`checksum_fault`].
/// - Work survives the guest's death like prepare: a backup asked again after a crash starts again from nothing.
#[async_trait]
pub trait BackupFacet: Send + Sync {
    /// Whether incremental backups are offered.
    fn incremental(&self) -> bool;
    /// Takes a backup.
    async fn backup(&self, job: &BackupJob, progress: &BackupProgress) -> Result<BackupOutcome>;
}
