//! [`FsBackupStore`]: backup objects as files with their SHA-256.

use async_trait::async_trait;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use trove_core::ports::{BackupStore, ByteStream, ObjectMeta};
use trove_core::{Error, Result};

use super::{io_err, BACKEND};

const OBJ: &str = ".obj";
const SUM: &str = ".sha256";
const TMP_DIR: &str = ".tmp";
const CHUNK: usize = 256 * 1024;
/// Temp files of puts older than this are left-overs of a crash.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// Backup objects under a root directory. Key `a/b/c` is the file `<root>/a/b/c.obj`, its hex SHA-256 in
/// `c.obj.sha256` beside it. A put streams into `<root>/.tmp/` while hashing, syncs, and renames into place, so
/// an object is either whole or absent.
#[derive(Debug, Clone)]
pub struct FsBackupStore {
    root: PathBuf,
}

impl FsBackupStore {
    /// A store under `root` (created if missing). A put interrupted by a crash leaves only a temp file: those older
    /// than an hour are removed here (younger ones may be another process's put in flight: several
    /// processes may share one root, e.g. a task manager and the guests of a host).
    pub fn open(root: impl Into<PathBuf>) -> Result<FsBackupStore> {
        let root = root.into();
        let tmp = root.join(TMP_DIR);
        std::fs::create_dir_all(&tmp).map_err(|e| io_err("create", &tmp, e))?;
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let stale = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_none_or(|age| age >= STALE_TEMP);
                if stale {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(FsBackupStore { root })
    }

    /// The file of a key; keys are `/`-separated, relative, without `.`/`..` or empty parts.
    fn path(&self, key: &str) -> Result<PathBuf> {
        let bad = |why: &str| {
            Error::bad_request(format!(
                "The backup object key '{}' is not valid: {why}.",
                key.escape_default()
            ))
        };
        if key.is_empty() || key.len() > 1024 {
            return Err(bad("it must be 1 to 1024 characters"));
        }
        let parts: Vec<&str> = key.split('/').collect();
        let mut p = self.root.clone();
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty()
                || *part == "."
                || *part == ".."
                || part.contains('\0')
                || part.contains('\\')
            {
                return Err(bad("empty, '.' or '..' parts are not allowed"));
            }
            if i == 0 && *part == TMP_DIR {
                return Err(bad("'.tmp' is reserved"));
            }
            if i + 1 < parts.len() {
                if part.ends_with(OBJ) {
                    return Err(bad("a directory part may not end in '.obj'"));
                }
                p.push(part);
            } else {
                p.push(format!("{part}{OBJ}"));
            }
        }
        Ok(p)
    }

    fn sum_path(obj: &Path) -> PathBuf {
        let mut s = obj.as_os_str().to_os_string();
        s.push(SUM);
        PathBuf::from(s)
    }

    async fn meta_of(key: String, obj: &Path) -> Result<ObjectMeta> {
        let size = tokio::fs::metadata(obj)
            .await
            .map_err(|e| io_err("stat", obj, e))?
            .len();
        let checksum = match tokio::fs::read_to_string(Self::sum_path(obj)).await {
            Ok(s) if s.trim().len() == 64 => s.trim().to_string(),
            _ => {
                // No (or a damaged) checksum file: compute it.
                let mut f = tokio::fs::File::open(obj)
                    .await
                    .map_err(|e| io_err("open", obj, e))?;
                let mut h = Sha256::new();
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n = f.read(&mut buf).await.map_err(|e| io_err("read", obj, e))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                hex::encode(h.finalize())
            }
        };
        Ok(ObjectMeta {
            key,
            size,
            checksum,
        })
    }

    async fn write_stream(tmp: &Path, mut data: ByteStream) -> Result<(u64, String)> {
        let mut f = tokio::fs::File::create(tmp)
            .await
            .map_err(|e| io_err("create", tmp, e))?;
        let mut h = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            h.update(&chunk);
            size += chunk.len() as u64;
            f.write_all(&chunk)
                .await
                .map_err(|e| io_err("write", tmp, e))?;
        }
        f.flush().await.map_err(|e| io_err("write", tmp, e))?;
        f.sync_all().await.map_err(|e| io_err("sync", tmp, e))?;
        Ok((size, hex::encode(h.finalize())))
    }
}

fn collect(dir: &Path, rel: &str, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if rel.is_empty() && name == TMP_DIR {
            continue;
        }
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            let sub = format!("{rel}{name}/");
            // Only descend where keys can still match the prefix.
            if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                collect(&e.path(), &sub, prefix, out);
            }
        } else if let Some(stem) = name.strip_suffix(OBJ) {
            let key = format!("{rel}{stem}");
            if key.starts_with(prefix) {
                out.push((key, e.path()));
            }
        }
    }
}

#[async_trait]
impl BackupStore for FsBackupStore {
    async fn put(&self, key: &str, data: ByteStream) -> Result<ObjectMeta> {
        let dest = self.path(key)?;
        let tmp = self
            .root
            .join(TMP_DIR)
            .join(uuid::Uuid::new_v4().simple().to_string());
        let (size, checksum) = match Self::write_stream(&tmp, data).await {
            Ok(r) => r,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let commit = async {
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| io_err("create", parent, e))?;
            }
            let sum = Self::sum_path(&dest);
            tokio::fs::write(&sum, checksum.as_bytes())
                .await
                .map_err(|e| io_err("write", &sum, e))?;
            tokio::fs::rename(&tmp, &dest)
                .await
                .map_err(|e| io_err("rename", &dest, e))
        };
        if let Err(e) = commit.await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
            checksum,
        })
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        let path = self.path(key)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found("Backup object", key))
            }
            Err(e) => return Err(io_err("open", &path, e)),
        };
        let stream = futures::stream::unfold(Some((file, path)), |state| async move {
            let (mut f, path) = state?;
            let mut buf = vec![0u8; CHUNK];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(buf), Some((f, path))))
                }
                Err(e) => Some((Err(io_err("read", &path, e)), None)),
            }
        });
        Ok(stream.boxed())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        for p in [path.clone(), Self::sum_path(&path)] {
            match tokio::fs::remove_file(&p).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &p, e)),
            }
        }
        // Remove directories left empty, up to the root.
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || tokio::fs::remove_dir(&d).await.is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let p = prefix.to_string();
        let mut found = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            collect(&root, "", &p, &mut out);
            out
        })
        .await
        .map_err(|e| Error::backend(BACKEND, e, false))?;
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut metas = Vec::with_capacity(found.len());
        for (key, path) in found {
            metas.push(Self::meta_of(key, &path).await?);
        }
        Ok(metas)
    }
}
