//! SwiftBackupStore and S3BackupStore against a real single-node Swift (tempauth + s3api on loopback) started by
//! `tests/support/swift.sh` (installed from Debian packages when missing): the core's BackupStore conformance suite
//! on both, plus what it cannot see (segments, multipart uploads, cleanup after failures, credentials, an
//! unreachable store, a revoked token). When Swift cannot be started the tests fail; they never skip.
//!
//! The directory of the Swift instance is `TROVE_SWIFT_DIR`, or `<target>/tmp/swift` (where `tests/run.sh`
//! starts it before the suite). It keeps running afterwards; `tests/support/swift.sh stop DIR` stops it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use sha2::{Digest, Sha256};

use trove_backends::objstore::{S3BackupStore, S3Config, SwiftBackupStore, SwiftConfig};
use trove_core::model::Secret;
use trove_core::ports::{BackupStore, ByteStream};
use trove_core::testing::storage::run_backup_store;
use trove_core::Error;

const MIB: usize = 1 << 20;

/// What `swift.sh start` printed.
struct Env(HashMap<String, String>);

impl Env {
    fn get(&self, k: &str) -> &str {
        self.0
            .get(k)
            .unwrap_or_else(|| panic!("swift.sh did not print {k}"))
    }
}

fn swift_dir() -> PathBuf {
    std::env::var_os("TROVE_SWIFT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("swift"))
}

/// Starts (or finds running) the test Swift, once per test process.
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/support/swift.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(swift_dir())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "Swift could not be started by {} ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Env(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    })
}

fn swift_config() -> SwiftConfig {
    let e = env();
    SwiftConfig {
        auth_url: e.get("auth_url").into(),
        user: e.get("user").into(),
        key: Secret::new(e.get("key")),
        segment_size: MIB as u64,
        ..SwiftConfig::default()
    }
}

fn s3_config() -> S3Config {
    let e = env();
    S3Config {
        endpoint: e.get("url").into(),
        region: e.get("region").into(),
        access_key: e.get("access_key").into(),
        secret_key: Secret::new(e.get("secret_key")),
        part_size: 5 * MIB as u64,
        ..S3Config::default()
    }
}

fn swift_store() -> SwiftBackupStore {
    SwiftBackupStore::new(swift_config()).expect("swift store")
}

fn s3_store() -> S3BackupStore {
    S3BackupStore::new(s3_config()).expect("s3 store")
}

/// A unique container/bucket-safe name part.
fn unique(what: &str) -> String {
    format!("{what}{}", uuid::Uuid::new_v4().simple())
}

/// Deterministic pseudo-random bytes (xorshift), so a misplaced segment cannot go unnoticed.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `bytes` in chunks of irregular sizes (never aligned to a segment).
fn chunked(bytes: &[u8], chunk: usize) -> ByteStream {
    let chunks: Vec<trove_core::Result<Vec<u8>>> =
        bytes.chunks(chunk).map(|c| Ok(c.to_vec())).collect();
    futures::stream::iter(chunks).boxed()
}

/// `good` bytes, then an error from the source.
fn failing_after(good: &[u8], chunk: usize) -> ByteStream {
    let mut chunks: Vec<trove_core::Result<Vec<u8>>> =
        good.chunks(chunk).map(|c| Ok(c.to_vec())).collect();
    chunks.push(Err(Error::backend("test", "the source died", false)));
    futures::stream::iter(chunks).boxed()
}

async fn read_all(store: &dyn BackupStore, key: &str) -> Vec<u8> {
    let mut s = store.get(key).await.expect("get");
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend(c.expect("chunk"));
    }
    out
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The Swift API as a test sees it (tempauth as test:tester), to look behind the stores.
struct Raw {
    http: reqwest::Client,
    token: String,
    url: String,
}

impl Raw {
    async fn login(user: &str, key: &str) -> Raw {
        let http = reqwest::Client::new();
        let r = http
            .get(env().get("auth_url"))
            .header("X-Storage-User", user)
            .header("X-Storage-Pass", key)
            .send()
            .await
            .expect("auth");
        assert!(r.status().is_success(), "auth: {}", r.status());
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .expect(n)
                .to_string()
        };
        Raw {
            token: h("x-auth-token"),
            url: h("x-storage-url"),
            http,
        }
    }

    async fn new() -> Raw {
        Raw::login("test:tester", "testing").await
    }

    /// Object names in a container under a prefix (empty for a missing container).
    async fn names(&self, container: &str, prefix: &str) -> Vec<String> {
        let r = self
            .http
            .get(format!("{}/{container}", self.url))
            .query(&[("format", "json"), ("prefix", prefix)])
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .expect("listing");
        if r.status() == 404 || r.status() == 204 {
            return Vec::new();
        }
        assert!(r.status().is_success(), "listing: {}", r.status());
        let v: serde_json::Value = r.json().await.expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .map(|o| o["name"].as_str().expect("name").to_string())
            .collect()
    }

    async fn head(&self, container: &str, object: &str) -> reqwest::Response {
        self.http
            .head(format!("{}/{container}/{object}", self.url))
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .expect("head")
    }
}

#[tokio::test]
async fn swift_store_passes_the_suite() {
    run_backup_store(Arc::new(swift_store())).await;
}

#[tokio::test]
async fn s3_store_passes_the_suite() {
    run_backup_store(Arc::new(s3_store())).await;
}

/// Objects of 3.5 segments (flat and with nested manifests), one between the look-ahead and a segment, and an
/// overwrite: stored as the docs say, read back whole, listed with their checksums, deleted with their segments.
#[tokio::test]
async fn swift_large_objects_are_segmented_and_cleaned_up() {
    let raw = Raw::new().await;
    let container = unique("slo");
    let segments = format!("{container}_segments");
    let big = data(3 * MIB + MIB / 2, 7);
    for (manifest_segments, nested) in [(1000, false), (2, true)] {
        let store = SwiftBackupStore::new(SwiftConfig {
            manifest_segments,
            ..swift_config()
        })
        .expect("store");
        let key = format!("{container}/db/full-{manifest_segments}.xbstream");
        let object = key.split_once('/').expect("key").1;
        let meta = store.put(&key, chunked(&big, 300_001)).await.expect("put");
        assert_eq!(
            (meta.size, meta.checksum.as_str()),
            (big.len() as u64, sha(&big).as_str())
        );
        let head = raw.head(&container, object).await;
        assert_eq!(head.status(), 200);
        assert_eq!(
            head.headers()
                .get("x-static-large-object")
                .map(|v| v.to_str().expect("str")),
            Some("True"),
            "a 3.5-segment object is an SLO"
        );
        assert_eq!(
            head.headers()
                .get("x-object-meta-sha256")
                .map(|v| v.to_str().expect("str")),
            Some(sha(&big).as_str())
        );
        let segs = raw.names(&segments, object).await;
        let (manifests, data_segs): (Vec<_>, Vec<_>) =
            segs.iter().partition(|s| s.contains("/manifest-"));
        assert_eq!(data_segs.len(), 4, "3.5 segments of 1 MiB: {segs:?}");
        assert_eq!(
            manifests.len(),
            if nested { 2 } else { 0 },
            "sub-manifests: {segs:?}"
        );
        assert!(read_all(&store, &key).await == big, "bytes read differ");
        let listed = store.list(&format!("{container}/db/")).await.expect("list");
        assert_eq!(listed, vec![meta.clone()], "list shows size and checksum");
        store.delete(&key).await.expect("delete");
        store.delete(&key).await.expect("delete twice");
        assert!(matches!(store.get(&key).await, Err(Error::NotFound { .. })));
        assert_eq!(
            raw.names(&segments, object).await,
            Vec::<String>::new(),
            "delete removes the segments"
        );
    }

    // Longer than the 1 MiB look-ahead, shorter than a segment: a plain object, no segment left.
    let store = SwiftBackupStore::new(SwiftConfig {
        segment_size: 2 * MIB as u64,
        ..swift_config()
    })
    .expect("store");
    let mid = data(MIB + MIB / 2, 9);
    let key = format!("{container}/mid");
    let meta = store.put(&key, chunked(&mid, 65_536)).await.expect("put");
    assert_eq!(meta.checksum, sha(&mid));
    let head = raw.head(&container, "mid").await;
    assert!(head.headers().get("x-static-large-object").is_none());
    assert_eq!(
        head.headers()
            .get("x-object-meta-sha256")
            .map(|v| v.to_str().expect("str")),
        Some(sha(&mid).as_str())
    );
    assert_eq!(raw.names(&segments, "mid").await, Vec::<String>::new());
    assert!(read_all(&store, &key).await == mid);

    // Overwriting a large object with another, then with a small one, leaves no old segments behind.
    let store = swift_store();
    let key = format!("{container}/again");
    store.put(&key, chunked(&big, MIB)).await.expect("put 1");
    let big2 = data(2 * MIB + 5, 11);
    store.put(&key, chunked(&big2, MIB)).await.expect("put 2");
    assert_eq!(raw.names(&segments, "again/").await.len(), 3);
    assert!(read_all(&store, &key).await == big2);
    store.put(&key, chunked(b"small", 2)).await.expect("put 3");
    assert_eq!(raw.names(&segments, "again/").await, Vec::<String>::new());
    assert_eq!(read_all(&store, &key).await, b"small");
    for k in ["mid", "again"] {
        store
            .delete(&format!("{container}/{k}"))
            .await
            .expect("delete");
    }
    assert_eq!(raw.names(&container, "").await, Vec::<String>::new());
}

/// A source that fails after 2.5 segments: the put fails with the source's error and leaves no object and no
/// segment; an object of the same key written before stays as it was.
#[tokio::test]
async fn swift_failed_put_leaves_no_object_and_no_segments() {
    let raw = Raw::new().await;
    let store = swift_store();
    let container = unique("fail");
    let key = format!("{container}/broken.xbstream");
    let err = store
        .put(&key, failing_after(&data(2 * MIB + MIB / 2, 3), 100_000))
        .await
        .expect_err("a put whose source fails is an error");
    assert!(err.to_string().contains("the source died"), "{err}");
    assert!(matches!(store.get(&key).await, Err(Error::NotFound { .. })));
    assert!(store
        .list(&format!("{container}/"))
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        raw.names(&format!("{container}_segments"), "").await,
        Vec::<String>::new(),
        "no segment left"
    );

    // Over an existing object: it survives unchanged.
    let old = data(MIB * 2, 5);
    store.put(&key, chunked(&old, MIB)).await.expect("put");
    store
        .put(&key, failing_after(&data(3 * MIB, 6), 200_000))
        .await
        .expect_err("failing put");
    assert!(
        read_all(&store, &key).await == old,
        "the old object is intact"
    );
    assert_eq!(
        raw.names(&format!("{container}_segments"), "").await.len(),
        2,
        "only the old object's segments"
    );
    store.delete(&key).await.expect("delete");
    assert_eq!(
        raw.names(&format!("{container}_segments"), "").await,
        Vec::<String>::new()
    );
}

/// `good` bytes in chunks; when the source reaches `at`, `act` runs first (e.g. sabotaging the upload).
fn with_action_at<F, Fut>(good: Vec<u8>, chunk: usize, at: usize, act: F) -> ByteStream
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    futures::stream::unfold(
        (good, 0usize, Some(act)),
        move |(good, off, mut act)| async move {
            if off >= good.len() {
                return None;
            }
            if off >= at {
                if let Some(a) = act.take() {
                    a().await;
                }
            }
            let end = (off + chunk).min(good.len());
            let c = good[off..end].to_vec();
            Some((Ok(c), (good, end, act)))
        },
    )
    .boxed()
}

impl Raw {
    /// Deletes the objects of a container whose names end in `suffix`; answers how many.
    async fn delete_matching(&self, container: &str, prefix: &str, suffix: &str) -> usize {
        let mut n = 0;
        for name in self.names(container, prefix).await {
            if name.ends_with(suffix) {
                let r = self
                    .http
                    .delete(format!("{}/{container}/{name}", self.url))
                    .header("X-Auth-Token", &self.token)
                    .send()
                    .await
                    .expect("delete");
                assert!(r.status().is_success(), "delete {name}: {}", r.status());
                n += 1;
            }
        }
        n
    }
}

/// The store fails the upload (a segment removed behind the put's back makes the manifest fail): the put is an
/// error and removes the segments it wrote.
#[tokio::test]
async fn swift_upload_failing_in_the_store_leaves_no_segments() {
    let raw = Arc::new(Raw::new().await);
    let store = swift_store();
    let container = unique("storefail");
    let segments = format!("{container}_segments");
    let key = format!("{container}/sabotaged");
    let r = raw.clone();
    let seg = segments.clone();
    let source = with_action_at(
        data(3 * MIB + MIB / 2, 21),
        100_000,
        5 * MIB / 2,
        move || async move {
            assert_eq!(r.delete_matching(&seg, "sabotaged/", "/00000000").await, 1);
        },
    );
    let err = store
        .put(&key, source)
        .await
        .expect_err("the manifest fails");
    assert!(err.to_string().contains("manifest"), "{err}");
    assert!(matches!(store.get(&key).await, Err(Error::NotFound { .. })));
    assert_eq!(raw.names(&container, "").await, Vec::<String>::new());
    assert_eq!(
        raw.names(&segments, "").await,
        Vec::<String>::new(),
        "the put removed its segments"
    );
}

/// The store fails the multipart upload (a part removed behind the put's back makes the completion fail): the
/// put is an error, the upload is aborted and the checksum companion removed.
#[tokio::test]
async fn s3_upload_failing_in_the_store_is_aborted() {
    let raw = Arc::new(Raw::new().await);
    let store = s3_store();
    let bucket = unique("storefail");
    let key = format!("{bucket}/sabotaged");
    let r = raw.clone();
    let parts = format!("{bucket}+segments");
    let source = with_action_at(
        data(17 * MIB + MIB / 2, 23),
        500_000,
        12 * MIB,
        move || async move {
            assert_eq!(r.delete_matching(&parts, "sabotaged/", "/1").await, 1);
        },
    );
    let err = store
        .put(&key, source)
        .await
        .expect_err("the completion fails");
    assert!(err.to_string().contains("completing the upload"), "{err}");
    assert!(matches!(store.get(&key).await, Err(Error::NotFound { .. })));
    assert_eq!(
        raw.names(&bucket, "").await,
        Vec::<String>::new(),
        "no object, no companion"
    );
    assert_eq!(
        raw.names(&format!("{bucket}+segments"), "").await,
        Vec::<String>::new(),
        "the upload is aborted and its parts gone"
    );
}

/// A 3.5-part object goes up as a multipart upload (an SLO behind s3api), with its checksum in its companion;
/// read back whole; listed with its checksum; deleted with its parts and companion. A failed multipart put
/// leaves no object, no upload in progress, no part and no companion.
#[tokio::test]
async fn s3_multipart_round_trip_and_failed_put() {
    let raw = Raw::new().await;
    let store = s3_store();
    let bucket = unique("mp");
    let big = data(17 * MIB + MIB / 2, 13);
    let key = format!("{bucket}/db/full.xbstream");
    let meta = store
        .put(&key, chunked(&big, 1_000_003))
        .await
        .expect("put");
    assert_eq!(
        (meta.size, meta.checksum.as_str()),
        (big.len() as u64, sha(&big).as_str())
    );
    let head = raw.head(&bucket, "db/full.xbstream").await;
    assert_eq!(
        head.headers()
            .get("x-static-large-object")
            .map(|v| v.to_str().expect("str")),
        Some("True"),
        "a multipart upload"
    );
    let companions = raw.names(&bucket, ".trove-sha256/").await;
    assert_eq!(companions.len(), 1, "one companion: {companions:?}");
    assert!(read_all(&store, &key).await == big, "bytes read differ");
    assert_eq!(
        store.list(&format!("{bucket}/")).await.expect("list"),
        vec![meta.clone()],
        "list: the object (not its companion) with size and checksum"
    );
    store.delete(&key).await.expect("delete");
    store.delete(&key).await.expect("delete twice");
    assert!(matches!(store.get(&key).await, Err(Error::NotFound { .. })));
    assert_eq!(raw.names(&bucket, "").await, Vec::<String>::new());
    assert_eq!(
        raw.names(&format!("{bucket}+segments"), "").await,
        Vec::<String>::new(),
        "no part left"
    );

    let broken = format!("{bucket}/broken");
    let err = store
        .put(
            &broken,
            failing_after(&data(12 * MIB + MIB / 2, 17), 700_000),
        )
        .await
        .expect_err("a put whose source fails is an error");
    assert!(err.to_string().contains("the source died"), "{err}");
    assert!(matches!(
        store.get(&broken).await,
        Err(Error::NotFound { .. })
    ));
    assert!(store
        .list(&format!("{bucket}/"))
        .await
        .expect("list")
        .is_empty());
    assert_eq!(raw.names(&bucket, "").await, Vec::<String>::new());
    assert_eq!(
        raw.names(&format!("{bucket}+segments"), "").await,
        Vec::<String>::new(),
        "no upload in progress, no part left"
    );
}

/// Wrong credentials: a clear, permanent error that says to check the credentials and never shows the secret.
#[tokio::test]
async fn wrong_credentials_are_a_clear_error_without_the_secret() {
    let secret = "not-the-key-7f3a9";
    let swift = SwiftBackupStore::new(SwiftConfig {
        key: Secret::new(secret),
        ..swift_config()
    })
    .expect("store");
    let s3 = S3BackupStore::new(S3Config {
        secret_key: Secret::new(secret),
        ..s3_config()
    })
    .expect("store");
    let stores: [(&str, Arc<dyn BackupStore>); 2] =
        [("swift", Arc::new(swift)), ("s3", Arc::new(s3))];
    for (name, store) in stores {
        let mut errors = vec![store
            .put("creds/x", chunked(b"data", 4))
            .await
            .expect_err("put with wrong credentials")];
        errors.push(match store.get("creds/x").await {
            Ok(_) => panic!("{name}: get with wrong credentials"),
            Err(e) => e,
        });
        errors.push(store.list("creds/").await.expect_err("list"));
        for e in errors {
            let msg = e.to_string();
            assert!(msg.contains("check the credentials"), "{name}: {msg}");
            assert!(!msg.contains(secret), "{name}: the secret leaked: {msg}");
            assert!(!format!("{e:?}").contains(secret), "{name}: {e:?}");
            assert!(!e.is_transient(), "{name}: {msg}");
        }
    }
}

/// Nothing listening: a transient error naming the endpoint.
#[tokio::test]
async fn unreachable_store_is_a_transient_error_naming_the_endpoint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let swift = SwiftBackupStore::new(SwiftConfig {
        auth_url: format!("{endpoint}/auth/v1.0"),
        ..swift_config()
    })
    .expect("store");
    let s3 = S3BackupStore::new(S3Config {
        endpoint: endpoint.clone(),
        ..s3_config()
    })
    .expect("store");
    let stores: [(&str, Arc<dyn BackupStore>); 2] =
        [("swift", Arc::new(swift)), ("s3", Arc::new(s3))];
    for (name, store) in stores {
        let e = store
            .put("down/x", chunked(b"data", 4))
            .await
            .expect_err("put");
        assert!(e.is_transient(), "{name}: {e}");
        assert_eq!(e.fault().status, 503, "{name}: {e}");
        assert!(e.to_string().contains(&endpoint), "{name}: {e}");
        assert!(e.to_string().contains("unreachable"), "{name}: {e}");
        let e = store.list("down/").await.expect_err("list");
        assert!(e.is_transient(), "{name}: {e}");
    }
}

/// A token revoked behind the store's back (deleted from memcached, where tempauth keeps it): the next call gets a
/// 401, logs in again once and succeeds. Uses its own tempauth user so no other test's token is touched.
#[tokio::test]
async fn swift_logs_in_again_after_a_401() {
    let store = SwiftBackupStore::new(SwiftConfig {
        user: "reauth:tester".into(),
        key: Secret::new("testing"),
        ..swift_config()
    })
    .expect("store");
    let key = format!("{}/obj", unique("reauth"));
    store.put(&key, chunked(b"before", 3)).await.expect("put");
    // tempauth hands every login of a user the same token while it lives: the store's token.
    let raw = Raw::login("reauth:tester", "testing").await;
    let (container, object) = key.split_once('/').expect("key");
    assert_eq!(raw.head(container, object).await.status(), 200);
    let mem_key = hex::encode(md5::Md5::digest(
        format!("AUTH_/token/{}", raw.token).as_bytes(),
    ));
    {
        use std::io::{BufRead, BufReader, Write};
        let mut c =
            std::net::TcpStream::connect(env().get("memcached")).expect("connect memcached");
        write!(c, "delete {mem_key}\r\n").expect("write");
        let mut line = String::new();
        BufReader::new(&c).read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "DELETED", "memcached: {line}");
    }
    assert_eq!(
        raw.head(container, object).await.status(),
        401,
        "the old token is revoked"
    );
    assert_eq!(read_all(&store, &key).await, b"before");
    store
        .put(&key, chunked(b"after", 5))
        .await
        .expect("put again");
    assert_eq!(read_all(&store, &key).await, b"after");
    store.delete(&key).await.expect("delete");
}

/// Swift's (and upstream Trove's) container names with `_` are not bucket names: S3 keeps the key as given and
/// stores it in the bucket with `-` (`database_backups` → `database-backups`).
#[tokio::test]
async fn s3_maps_container_names_to_bucket_names() {
    let s3 = s3_store();
    let key = format!("database_backups/mapped-{}", uuid::Uuid::new_v4().simple());
    let data: ByteStream = futures::stream::iter([Ok(b"mapped".to_vec())]).boxed();
    let meta = s3
        .put(&key, data)
        .await
        .expect("put under an underscored container");
    assert_eq!(meta.key, key);
    assert_eq!(read_all(&s3, &key).await, b"mapped");
    let listed = s3.list("database_backups/mapped-").await.expect("list");
    assert!(listed.iter().any(|o| o.key == key), "{listed:?}");
    s3.delete(&key).await.expect("delete");
    assert!(matches!(s3.get(&key).await, Err(Error::NotFound { .. })));
}
