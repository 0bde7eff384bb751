//! Conformance suites for [`crate::ports::BlockStorage`] and [`crate::ports::BackupStore`].

use futures::StreamExt;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::Error;
use crate::ports::{ByteStream, DynBackupStore, DynBlockStorage};

const GIB: u64 = 1 << 30;

/// `create_volume` is idempotent per instance and `get_volume` finds it.
pub async fn create_volume_is_idempotent(storage: &DynBlockStorage) {
    let id = Uuid::new_v4();
    assert_eq!(
        storage.get_volume(id).await.expect("get_volume"),
        None,
        "no volume before create"
    );
    let v = storage
        .create_volume(id, 1, None)
        .await
        .expect("create_volume");
    assert_eq!((v.instance_id, v.size_gb), (id, 1));
    let again = storage
        .create_volume(id, 1, None)
        .await
        .expect("create_volume again");
    assert_eq!(again, v, "create_volume is idempotent per instance");
    assert_eq!(storage.get_volume(id).await.expect("get_volume"), Some(v));
    storage.delete_volume(id).await.expect("delete_volume");
}

/// Growing to a size not larger than the current one is a 400; growing works and shows in `get_volume`
/// and in the usage limit.
pub async fn grow_must_be_larger(storage: &DynBlockStorage) {
    let id = Uuid::new_v4();
    storage
        .create_volume(id, 1, None)
        .await
        .expect("create_volume");
    let (_, limit) = storage.usage(id).await.expect("usage");
    assert_eq!(limit, GIB, "the limit is the size in bytes");
    for bad in [0, 1] {
        let e = storage
            .grow_volume(id, bad)
            .await
            .expect_err("growing to a size not larger is refused");
        assert_eq!(
            e.fault().status,
            400,
            "refusal to grow to {bad} GB is a 400: {e}"
        );
    }
    let v = storage.grow_volume(id, 2).await.expect("grow_volume");
    assert_eq!(v.size_gb, 2);
    assert_eq!(
        storage
            .get_volume(id)
            .await
            .expect("get_volume")
            .map(|v| v.size_gb),
        Some(2)
    );
    let (used, limit) = storage.usage(id).await.expect("usage");
    assert_eq!(limit, 2 * GIB, "usage shows the new limit");
    assert!(
        used < limit,
        "a fresh volume is not full ({used} of {limit})"
    );
    storage.delete_volume(id).await.expect("delete_volume");
}

/// `delete_volume` removes the volume and is idempotent.
pub async fn delete_volume_is_idempotent(storage: &DynBlockStorage) {
    let id = Uuid::new_v4();
    storage
        .create_volume(id, 1, None)
        .await
        .expect("create_volume");
    storage.delete_volume(id).await.expect("delete_volume");
    assert_eq!(
        storage.get_volume(id).await.expect("get_volume"),
        None,
        "gone after delete"
    );
    storage
        .delete_volume(id)
        .await
        .expect("delete_volume twice");
    storage
        .delete_volume(Uuid::new_v4())
        .await
        .expect("delete a volume that never existed");
}

/// Runs every check of the BlockStorage contract.
pub async fn run_block_storage(storage: DynBlockStorage) {
    create_volume_is_idempotent(&storage).await;
    grow_must_be_larger(&storage).await;
    delete_volume_is_idempotent(&storage).await;
}

fn stream_of(chunks: Vec<Vec<u8>>) -> ByteStream {
    futures::stream::iter(chunks.into_iter().map(Ok)).boxed()
}

async fn read_all(store: &DynBackupStore, key: &str) -> Vec<u8> {
    let mut s = store.get(key).await.expect("get");
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

/// A unique key prefix for one run.
pub fn unique_prefix() -> String {
    format!("conformance/{}/", Uuid::new_v4().simple())
}

/// The bytes read equal the bytes put, and `put` reports their size and SHA-256.
pub async fn put_get_round_trip(store: &DynBackupStore) {
    let prefix = unique_prefix();
    let key = format!("{prefix}full.xbstream");
    let chunks: Vec<Vec<u8>> = (0..5u8)
        .map(|i| vec![i; 100_000 + usize::from(i)])
        .collect();
    let all: Vec<u8> = chunks.concat();
    let meta = store.put(&key, stream_of(chunks)).await.expect("put");
    assert_eq!(meta.key, key);
    assert_eq!(meta.size, all.len() as u64);
    assert_eq!(
        meta.checksum,
        hex::encode(Sha256::digest(&all)),
        "checksum is the hex SHA-256"
    );
    assert!(
        read_all(store, &key).await == all,
        "bytes read differ from bytes put"
    );
    let empty = format!("{prefix}empty");
    let meta = store
        .put(&empty, stream_of(vec![]))
        .await
        .expect("put empty");
    assert_eq!(meta.size, 0);
    assert!(read_all(store, &empty).await.is_empty());
    store.delete(&key).await.expect("delete");
    store.delete(&empty).await.expect("delete");
}

/// `get` of a missing key is NotFound.
pub async fn get_missing_is_not_found(store: &DynBackupStore) {
    let key = format!("{}missing", unique_prefix());
    match store.get(&key).await {
        Err(Error::NotFound { .. }) => {}
        Err(e) => panic!("get of a missing key must be NotFound, got {e:?}"),
        Ok(_) => panic!("get of a missing key must be NotFound, got a stream"),
    }
}

/// A put whose stream fails leaves no object.
pub async fn failed_put_leaves_nothing(store: &DynBackupStore) {
    let prefix = unique_prefix();
    let key = format!("{prefix}broken");
    let broken: ByteStream = futures::stream::iter(vec![
        Ok(vec![1u8; 70_000]),
        Err(Error::backend("conformance", "the source died", false)),
    ])
    .boxed();
    assert!(
        store.put(&key, broken).await.is_err(),
        "a put whose stream fails is an error"
    );
    assert!(
        store.list(&prefix).await.expect("list").is_empty(),
        "a failed put leaves no object"
    );
    assert!(
        matches!(store.get(&key).await, Err(Error::NotFound { .. })),
        "a failed put leaves no object"
    );
}

/// `delete` is idempotent; `list` returns the keys under a prefix in lexical order and nothing else.
pub async fn list_and_delete(store: &DynBackupStore) {
    let prefix = unique_prefix();
    let other = unique_prefix();
    for k in ["b", "a/2", "a/1", "c"] {
        store
            .put(
                &format!("{prefix}{k}"),
                stream_of(vec![k.as_bytes().to_vec()]),
            )
            .await
            .expect("put");
    }
    store
        .put(&format!("{other}a"), stream_of(vec![b"x".to_vec()]))
        .await
        .expect("put");
    let keys: Vec<String> = store
        .list(&prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key)
        .collect();
    let want: Vec<String> = ["a/1", "a/2", "b", "c"]
        .iter()
        .map(|k| format!("{prefix}{k}"))
        .collect();
    assert_eq!(keys, want, "list: keys under the prefix, in lexical order");
    let sub: Vec<String> = store
        .list(&format!("{prefix}a/"))
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(sub, want[..2].to_vec());
    for k in &want {
        store.delete(k).await.expect("delete");
        store.delete(k).await.expect("delete twice");
    }
    store.delete(&format!("{other}a")).await.expect("delete");
    assert!(
        store.list(&prefix).await.expect("list").is_empty(),
        "deleted objects are not listed"
    );
}

/// Runs every check of the BackupStore contract.
pub async fn run_backup_store(store: DynBackupStore) {
    put_get_round_trip(&store).await;
    get_missing_is_not_found(&store).await;
    failed_put_leaves_nothing(&store).await;
    list_and_delete(&store).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryBackupStore, MemoryBlockStorage};
    use std::sync::Arc;

    #[tokio::test]
    async fn memory_block_storage_passes_the_suite() {
        let s = Arc::new(MemoryBlockStorage::new());
        run_block_storage(s.clone()).await;
        assert!(s.volumes().is_empty(), "the suite cleans up");
    }

    #[tokio::test]
    async fn memory_backup_store_passes_the_suite() {
        let s = Arc::new(MemoryBackupStore::new());
        run_backup_store(s.clone()).await;
        assert!(s.is_empty(), "the suite cleans up");
    }
}
