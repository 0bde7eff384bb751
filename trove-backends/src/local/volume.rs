//! [`DirBlockStorage`]: volumes as directories with a recorded size limit.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use uuid::Uuid;

use trove_core::ports::{BlockStorage, Volume};
use trove_core::{Error, Result};

use super::{io_err, write_atomic, BACKEND};

const GIB: u64 = 1 << 30;

/// What is recorded about a volume (`<root>/<instance_id>/volume.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct VolumeRecord {
    id: String,
    instance_id: Uuid,
    size_gb: u32,
    volume_type: Option<String>,
}

/// Volumes as directories: `<root>/<instance_id>/fs/` holds the data (the [`Volume::path`]), `volume.json` beside
/// it the size limit. Usage is measured by walking the directory (allocated blocks); data beyond the limit is
/// reported by [`BlockStorage::usage`] (used > limit) and by [`DirBlockStorage::over_limit`], never hidden.
#[derive(Debug, Clone)]
pub struct DirBlockStorage {
    root: PathBuf,
}

impl DirBlockStorage {
    /// Volumes under `root` (created if missing; existing volumes are found again).
    pub fn open(root: impl Into<PathBuf>) -> Result<DirBlockStorage> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| io_err("create", &root, e))?;
        // Engines run as an unprivileged user and must reach their data below this directory.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io_err("chmod", &root, e))?;
        Ok(DirBlockStorage { root })
    }

    fn dir(&self, id: Uuid) -> PathBuf {
        self.root.join(id.to_string())
    }

    fn record_path(&self, id: Uuid) -> PathBuf {
        self.dir(id).join("volume.json")
    }

    fn read(&self, id: Uuid) -> Result<Option<VolumeRecord>> {
        match std::fs::read(self.record_path(id)) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                Error::backend(
                    BACKEND,
                    format!("corrupt {}: {e}", self.record_path(id).display()),
                    false,
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &self.record_path(id), e)),
        }
    }

    fn write(&self, rec: &VolumeRecord) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(rec).map_err(|e| Error::backend(BACKEND, e, false))?;
        write_atomic(&self.record_path(rec.instance_id), &bytes)
    }

    fn view(&self, rec: &VolumeRecord) -> Volume {
        Volume {
            id: rec.id.clone(),
            instance_id: rec.instance_id,
            size_gb: rec.size_gb,
            path: self.dir(rec.instance_id).join("fs"),
        }
    }

    /// Whether the volume holds more than its limit.
    pub async fn over_limit(&self, instance_id: Uuid) -> Result<bool> {
        let (used, limit) = self.usage(instance_id).await?;
        Ok(used > limit)
    }
}

#[async_trait]
impl BlockStorage for DirBlockStorage {
    async fn create_volume(
        &self,
        instance_id: Uuid,
        size_gb: u32,
        volume_type: Option<&str>,
    ) -> Result<Volume> {
        if size_gb == 0 {
            return Err(Error::bad_request("A volume size must be at least 1 GB."));
        }
        if let Some(rec) = self.read(instance_id)? {
            return Ok(self.view(&rec));
        }
        let dir = self.dir(instance_id);
        let fs = dir.join("fs");
        std::fs::create_dir_all(&fs).map_err(|e| io_err("create", &fs, e))?;
        for (d, mode) in [(&dir, 0o755), (&fs, 0o711)] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
                .map_err(|e| io_err("chmod", d, e))?;
        }
        let rec = VolumeRecord {
            id: format!("vol-{}", instance_id.simple()),
            instance_id,
            size_gb,
            volume_type: volume_type.map(str::to_string),
        };
        self.write(&rec)?;
        Ok(self.view(&rec))
    }

    async fn get_volume(&self, instance_id: Uuid) -> Result<Option<Volume>> {
        Ok(self.read(instance_id)?.map(|r| self.view(&r)))
    }

    async fn grow_volume(&self, instance_id: Uuid, new_size_gb: u32) -> Result<Volume> {
        let mut rec = self
            .read(instance_id)?
            .ok_or_else(|| Error::not_found("Volume", instance_id))?;
        if new_size_gb <= rec.size_gb {
            return Err(Error::bad_request(format!(
                "The new volume size {new_size_gb} GB must be larger than the current size {} GB.",
                rec.size_gb
            )));
        }
        rec.size_gb = new_size_gb;
        self.write(&rec)?;
        Ok(self.view(&rec))
    }

    async fn usage(&self, instance_id: Uuid) -> Result<(u64, u64)> {
        let rec = self
            .read(instance_id)?
            .ok_or_else(|| Error::not_found("Volume", instance_id))?;
        let path = self.view(&rec).path;
        let used = tokio::task::spawn_blocking(move || trove_os::dir_usage(&path))
            .await
            .map_err(|e| Error::backend(BACKEND, e, false))?;
        Ok((used, u64::from(rec.size_gb) * GIB))
    }

    async fn delete_volume(&self, instance_id: Uuid) -> Result<()> {
        let dir = self.dir(instance_id);
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &dir, e)),
        })
        .await
        .map_err(|e| Error::backend(BACKEND, e, false))?
    }
}
