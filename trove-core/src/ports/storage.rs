use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use uuid::Uuid;

use crate::error::Result;

/// A volume holding an instance's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    /// Volume id.
    pub id: String,
    /// Instance it belongs to; volumes are looked up by it, which makes `create_volume` idempotent.
    pub instance_id: Uuid,
    /// Size limit in GB.
    pub size_gb: u32,
    /// Where it is mounted (a directory for local volumes).
    pub path: PathBuf,
}

/// Volumes with size limits.
///
/// # Contract
/// - `create_volume` is idempotent per instance.
/// - `grow_volume` to a size not larger than the current one is a 400; afterwards `get_volume` shows the new size.
/// - `usage` reports bytes used and the limit; data over the limit is reported, never silently allowed.
/// - `delete_volume` removes every byte and is idempotent.
#[async_trait]
pub trait BlockStorage: Send + Sync + 'static {
    /// Creates (or returns) the volume of an instance.
    async fn create_volume(
        &self,
        instance_id: Uuid,
        size_gb: u32,
        volume_type: Option<&str>,
    ) -> Result<Volume>;
    /// The volume of an instance.
    async fn get_volume(&self, instance_id: Uuid) -> Result<Option<Volume>>;
    /// Grows the volume.
    async fn grow_volume(&self, instance_id: Uuid, new_size_gb: u32) -> Result<Volume>;
    /// Usage of the volume: (used bytes, limit bytes).
    async fn usage(&self, instance_id: Uuid) -> Result<(u64, u64)>;
    /// Deletes the volume.
    async fn delete_volume(&self, instance_id: Uuid) -> Result<()>;
}

/// A stream of bytes.
pub type ByteStream = BoxStream<'static, Result<Vec<u8>>>;

/// Metadata of a stored backup object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub checksum: String,
}

/// Storage for backup objects.
///
/// # Contract
/// - `put` stores the whole stream or nothing (a failed put leaves no object) and returns its checksum.
/// - `get` of a missing key is [`crate::Error::NotFound`]; the bytes read equal the bytes put.
/// - `delete` is idempotent; `list` returns the keys under a prefix in lexical order.
#[async_trait]
pub trait BackupStore: std::fmt::Debug + Send + Sync + 'static {
    /// Stores an object.
    async fn put(&self, key: &str, data: ByteStream) -> Result<ObjectMeta>;
    /// Reads an object.
    async fn get(&self, key: &str) -> Result<ByteStream>;
    /// Deletes an object.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Lists objects under a prefix.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
}
