//! DirBlockStorage and FsBackupStore: the core's conformance suites plus what the suites cannot see.

use futures::StreamExt;
use std::sync::Arc;
use uuid::Uuid;

use trove_backends::local::{DirBlockStorage, FsBackupStore};
use trove_core::ports::{BackupStore, BlockStorage, ByteStream};
use trove_core::testing::storage::{run_backup_store, run_block_storage};
use trove_core::Error;

#[tokio::test]
async fn dir_block_storage_passes_the_suite() {
    let dir = tempfile::tempdir().expect("tmp");
    run_block_storage(Arc::new(DirBlockStorage::open(dir.path()).expect("open"))).await;
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("read").count(),
        0,
        "the suite's volumes left files"
    );
}

#[tokio::test]
async fn usage_counts_bytes_and_reports_over_limit() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = DirBlockStorage::open(dir.path()).expect("open");
    let id = Uuid::new_v4();
    let v = s.create_volume(id, 1, Some("local")).await.expect("create");
    assert!(v.path.is_dir());
    let (before, limit) = s.usage(id).await.expect("usage");
    std::fs::write(v.path.join("blob"), vec![7u8; 3 << 20]).expect("write");
    let (after, _) = s.usage(id).await.expect("usage");
    assert!(
        after >= before + (3 << 20),
        "usage follows the data ({before} -> {after})"
    );
    assert!(!s.over_limit(id).await.expect("over"));
    assert_eq!(limit, 1 << 30);
    // Past the limit: reported, not hidden. `fallocate` allocates the blocks without writing them.
    let st = std::process::Command::new("fallocate")
        .args(["-l", "1100M"])
        .arg(v.path.join("big"))
        .status()
        .expect("fallocate");
    assert!(st.success());
    let (used, limit) = s.usage(id).await.expect("usage");
    assert!(used > limit, "{used} <= {limit}");
    assert!(s.over_limit(id).await.expect("over"));
    // Growing lifts the limit above the data.
    s.grow_volume(id, 2).await.expect("grow");
    assert!(!s.over_limit(id).await.expect("over"));
    // Found again by a new instance over the same root.
    let again = DirBlockStorage::open(dir.path()).expect("reopen");
    assert_eq!(
        again.get_volume(id).await.expect("get").map(|v| v.size_gb),
        Some(2)
    );
    assert_eq!(
        again
            .create_volume(Uuid::new_v4(), 0, None)
            .await
            .expect_err("0 GB")
            .fault()
            .status,
        400
    );
    assert!(matches!(
        again.grow_volume(Uuid::new_v4(), 5).await,
        Err(Error::NotFound { .. })
    ));
    again.delete_volume(id).await.expect("delete");
    assert!(!v.path.exists());
}

#[tokio::test]
async fn fs_backup_store_passes_the_suite() {
    let dir = tempfile::tempdir().expect("tmp");
    run_backup_store(Arc::new(FsBackupStore::open(dir.path()).expect("open"))).await;
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from(".tmp")],
        "the suite's objects left files"
    );
}

fn stream_of(chunks: Vec<Vec<u8>>) -> ByteStream {
    futures::stream::iter(chunks.into_iter().map(Ok)).boxed()
}

#[tokio::test]
async fn keys_cannot_escape_the_root_and_objects_persist() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = FsBackupStore::open(dir.path().join("store")).expect("open");
    for bad in [
        "../x", "/abs", "a//b", "a/./b", "", ".tmp/x", "a/..", "x.obj/y",
    ] {
        let e = s
            .put(bad, stream_of(vec![b"x".to_vec()]))
            .await
            .expect_err(bad);
        assert_eq!(e.fault().status, 400, "{bad}: {e}");
    }
    assert!(!dir.path().join("x").exists());
    // A key and a "directory" of the same name can coexist.
    s.put("a", stream_of(vec![b"one".to_vec()]))
        .await
        .expect("put a");
    s.put("a/b", stream_of(vec![b"two".to_vec()]))
        .await
        .expect("put a/b");
    let meta = s.list("").await.expect("list");
    assert_eq!(
        meta.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(),
        ["a", "a/b"]
    );
    // Overwrite replaces atomically; a new store over the same root sees the objects.
    s.put("a", stream_of(vec![b"three".to_vec()]))
        .await
        .expect("overwrite");
    let again = FsBackupStore::open(dir.path().join("store")).expect("reopen");
    let mut got = Vec::new();
    let mut st = again.get("a").await.expect("get");
    while let Some(c) = st.next().await {
        got.extend(c.expect("chunk"));
    }
    assert_eq!(got, b"three");
    let m = again.list("a/").await.expect("list");
    assert_eq!((m.len(), m[0].size), (1, 3));
}

/// Several processes share a store root: opening it keeps another process's put in flight (a young temp file)
/// and removes the left-overs of a crash (an old one).
#[tokio::test]
async fn opening_a_store_removes_only_stale_temp_files() {
    let dir = tempfile::tempdir().expect("tmp");
    FsBackupStore::open(dir.path()).expect("open");
    let tmp = dir.path().join(".tmp");
    let (young, old) = (tmp.join("young"), tmp.join("old"));
    std::fs::write(&young, b"in flight").expect("write");
    std::fs::write(&old, b"left by a crash").expect("write");
    let touched = std::process::Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(&old)
        .status()
        .expect("touch");
    assert!(touched.success());
    FsBackupStore::open(dir.path()).expect("open again");
    assert!(young.exists(), "a put in flight lost its temp file");
    assert!(!old.exists(), "a stale temp file is left");
}
