//! In-process [`BlockStorage`] and [`BackupStore`].

use async_trait::async_trait;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::ports::{BackupStore, BlockStorage, ByteStream, ObjectMeta, Volume};

const GIB: u64 = 1 << 30;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone)]
struct VolumeRecord {
    volume: Volume,
    used: u64,
}

#[derive(Debug, Default)]
struct VolumeState {
    volumes: HashMap<Uuid, VolumeRecord>,
    fail_create: usize,
    fail_grow: usize,
}

/// In-memory volumes: a size limit and a used-bytes figure that tests set with [`MemoryBlockStorage::set_usage`].
///
/// Volume paths are synthetic (`/memory/volumes/<instance>`); nothing touches the filesystem.
#[derive(Debug, Default)]
pub struct MemoryBlockStorage {
    state: Mutex<VolumeState>,
    max_size_gb: Option<u32>,
}

impl MemoryBlockStorage {
    /// Storage with no per-volume size limit.
    pub fn new() -> MemoryBlockStorage {
        MemoryBlockStorage::default()
    }

    /// Storage refusing volumes (and growth) above `gb` with a 400.
    pub fn with_max_size_gb(gb: u32) -> MemoryBlockStorage {
        MemoryBlockStorage {
            max_size_gb: Some(gb),
            ..Default::default()
        }
    }

    /// Sets the bytes used on a volume (may exceed the limit: usage reports it).
    pub fn set_usage(&self, instance_id: Uuid, used_bytes: u64) -> Result<()> {
        let mut st = lock(&self.state);
        let rec = st
            .volumes
            .get_mut(&instance_id)
            .ok_or_else(|| Error::not_found("Volume", instance_id))?;
        rec.used = used_bytes;
        Ok(())
    }

    /// Makes the next `n` `create_volume` calls fail with a transient backend error.
    pub fn fail_next_create(&self, n: usize) {
        lock(&self.state).fail_create = n;
    }

    /// Makes the next `n` `grow_volume` calls fail with a transient backend error.
    pub fn fail_next_grow(&self, n: usize) {
        lock(&self.state).fail_grow = n;
    }

    /// Every volume, in no particular order.
    pub fn volumes(&self) -> Vec<Volume> {
        lock(&self.state)
            .volumes
            .values()
            .map(|r| r.volume.clone())
            .collect()
    }

    fn check_size(&self, size_gb: u32) -> Result<()> {
        if size_gb == 0 {
            return Err(Error::bad_request(
                "Volume size must be a positive number of GB.",
            ));
        }
        if let Some(max) = self.max_size_gb {
            if size_gb > max {
                return Err(Error::bad_request(format!(
                    "Volume size {size_gb} GB is over the maximum of {max} GB."
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl BlockStorage for MemoryBlockStorage {
    async fn create_volume(
        &self,
        instance_id: Uuid,
        size_gb: u32,
        _volume_type: Option<&str>,
    ) -> Result<Volume> {
        let mut st = lock(&self.state);
        if st.fail_create > 0 {
            st.fail_create -= 1;
            return Err(Error::backend(
                "memory-storage",
                "injected create failure",
                true,
            ));
        }
        if let Some(rec) = st.volumes.get(&instance_id) {
            return Ok(rec.volume.clone());
        }
        self.check_size(size_gb)?;
        let volume = Volume {
            id: Uuid::new_v4().to_string(),
            instance_id,
            size_gb,
            path: PathBuf::from(format!("/memory/volumes/{instance_id}")),
        };
        st.volumes.insert(
            instance_id,
            VolumeRecord {
                volume: volume.clone(),
                used: 0,
            },
        );
        Ok(volume)
    }

    async fn get_volume(&self, instance_id: Uuid) -> Result<Option<Volume>> {
        Ok(lock(&self.state)
            .volumes
            .get(&instance_id)
            .map(|r| r.volume.clone()))
    }

    async fn grow_volume(&self, instance_id: Uuid, new_size_gb: u32) -> Result<Volume> {
        let mut st = lock(&self.state);
        if st.fail_grow > 0 {
            st.fail_grow -= 1;
            return Err(Error::backend(
                "memory-storage",
                "injected grow failure",
                true,
            ));
        }
        let current = st
            .volumes
            .get(&instance_id)
            .ok_or_else(|| Error::not_found("Volume", instance_id))?;
        if new_size_gb <= current.volume.size_gb {
            return Err(Error::bad_request(format!(
                "The new volume size {new_size_gb} GB must be larger than the current size of {} GB.",
                current.volume.size_gb
            )));
        }
        self.check_size(new_size_gb)?;
        let rec = st
            .volumes
            .get_mut(&instance_id)
            .ok_or_else(|| Error::not_found("Volume", instance_id))?;
        rec.volume.size_gb = new_size_gb;
        Ok(rec.volume.clone())
    }

    async fn usage(&self, instance_id: Uuid) -> Result<(u64, u64)> {
        let st = lock(&self.state);
        let rec = st
            .volumes
            .get(&instance_id)
            .ok_or_else(|| Error::not_found("Volume", instance_id))?;
        Ok((rec.used, u64::from(rec.volume.size_gb) * GIB))
    }

    async fn delete_volume(&self, instance_id: Uuid) -> Result<()> {
        lock(&self.state).volumes.remove(&instance_id);
        Ok(())
    }
}

#[derive(Debug, Default)]
struct ObjectState {
    objects: BTreeMap<String, (Arc<Vec<u8>>, ObjectMeta)>,
    fail_put: usize,
}

/// In-memory backup objects, checksummed with SHA-256.
#[derive(Debug, Default)]
pub struct MemoryBackupStore {
    state: Mutex<ObjectState>,
}

/// Size of the chunks [`MemoryBackupStore::get`] streams.
const CHUNK: usize = 64 * 1024;

impl MemoryBackupStore {
    /// An empty store.
    pub fn new() -> MemoryBackupStore {
        MemoryBackupStore::default()
    }

    /// Makes the next `n` `put` calls fail after reading their stream (no object is left behind).
    pub fn fail_next_put(&self, n: usize) {
        lock(&self.state).fail_put = n;
    }

    /// Number of stored objects.
    pub fn len(&self) -> usize {
        lock(&self.state).objects.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::bad_request("A backup object key must not be empty."));
    }
    Ok(())
}

#[async_trait]
impl BackupStore for MemoryBackupStore {
    async fn put(&self, key: &str, mut data: ByteStream) -> Result<ObjectMeta> {
        check_key(key)?;
        let mut buf = Vec::new();
        let mut hasher = Sha256::new();
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            buf.extend_from_slice(&chunk);
        }
        let mut st = lock(&self.state);
        if st.fail_put > 0 {
            st.fail_put -= 1;
            return Err(Error::backend(
                "memory-backup-store",
                "injected put failure",
                true,
            ));
        }
        let meta = ObjectMeta {
            key: key.to_string(),
            size: buf.len() as u64,
            checksum: hex::encode(hasher.finalize()),
        };
        st.objects
            .insert(key.to_string(), (Arc::new(buf), meta.clone()));
        Ok(meta)
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        let data = lock(&self.state)
            .objects
            .get(key)
            .map(|(d, _)| d.clone())
            .ok_or_else(|| Error::not_found("Backup object", key))?;
        let chunks: Vec<Result<Vec<u8>>> = data.chunks(CHUNK).map(|c| Ok(c.to_vec())).collect();
        Ok(futures::stream::iter(chunks).boxed())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        lock(&self.state).objects.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Ok(lock(&self.state)
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, (_, m))| m.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grow_must_be_larger_and_usage_reports_overflow() {
        let s = MemoryBlockStorage::with_max_size_gb(10);
        let id = Uuid::new_v4();
        let v = s.create_volume(id, 2, None).await.unwrap();
        assert_eq!(s.create_volume(id, 5, None).await.unwrap(), v);
        assert_eq!(s.grow_volume(id, 2).await.unwrap_err().fault().status, 400);
        assert_eq!(s.grow_volume(id, 11).await.unwrap_err().fault().status, 400);
        assert_eq!(s.grow_volume(id, 3).await.unwrap().size_gb, 3);
        s.set_usage(id, 4 * GIB).unwrap();
        assert_eq!(s.usage(id).await.unwrap(), (4 * GIB, 3 * GIB));
        s.delete_volume(id).await.unwrap();
        s.delete_volume(id).await.unwrap();
        assert!(s.get_volume(id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn failed_put_leaves_nothing() {
        let s = MemoryBackupStore::new();
        let bad: ByteStream =
            futures::stream::iter(vec![Ok(vec![1u8]), Err(Error::backend("x", "boom", false))])
                .boxed();
        assert!(s.put("k", bad).await.is_err());
        assert!(s.is_empty());
        let meta = s
            .put(
                "k",
                futures::stream::iter(vec![Ok(b"abc".to_vec())]).boxed(),
            )
            .await
            .unwrap();
        assert_eq!(
            meta.checksum,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
