//! [`S3BackupStore`]: backup objects in an S3-compatible store (path-style requests, Signature Version 4).
//!
//! See [`S3BackupStore`].

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use trove_core::model::Secret;
use trove_core::ports::{BackupStore, ByteStream, ObjectMeta};
use trove_core::{Error, Result};

use super::sigv4::{self, canonical_query, Signer, UNSIGNED_PAYLOAD};
use super::{
    check_endpoint, excerpt, http_client, map_concurrent, secs, split_key, status_error,
    unreachable, uri_decode, uri_encode, verified_stream, xml, Input, Location, MIB,
};

const BACKEND: &str = "s3";
const META_SHA256: &str = "x-amz-meta-sha256";
const META_REF: &str = "x-amz-meta-sha256-ref";
/// Companion objects holding the checksums of multipart objects.
const COMPANIONS: &str = ".trove-sha256/";
const CONCURRENCY: usize = 8;
const MAX_PARTS: u32 = 10_000;
const OCTET_STREAM: &str = "application/octet-stream";

/// Settings of [`S3BackupStore`].
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct S3Config {
    /// Endpoint, e.g. `http://127.0.0.1:8080` (Swift's s3api) or `http://minio:9000`; requests are path-style
    /// (`<endpoint>/<bucket>/<object>`).
    pub endpoint: String,
    /// Region the requests are signed for (`us-east-1` unless the store says otherwise).
    pub region: String,
    /// Access key id (Swift's s3api with tempauth: `account:user`).
    pub access_key: String,
    /// Secret access key.
    pub secret_key: Secret,
    /// Objects longer than this are uploaded in parts this long (default 16 MiB; 5 MiB to 5 GiB); two parts are
    /// in memory during an upload. An object may have at most 10,000 parts on AWS, and 1,000 on Swift's s3api by
    /// default (`max_upload_part_num`), so this also bounds the object size (16 MiB × 1,000 ≈ 15.6 GiB).
    pub part_size: u64,
    /// Time allowed to connect.
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// Time allowed without progress on a request (no overall deadline: objects may be many GB).
    #[serde(with = "secs")]
    pub read_timeout: Duration,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: "http://127.0.0.1:8080".into(),
            region: "us-east-1".into(),
            access_key: String::new(),
            secret_key: Secret::default(),
            part_size: 16 * MIB,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

struct Inner {
    cfg: S3Config,
    client: reqwest::Client,
    /// Endpoint without a trailing `/`, and its path (the prefix of every canonical URI).
    base: String,
    base_path: String,
    host: String,
}

/// Backup objects in an S3-compatible store; keys map as the [`objstore`](crate::objstore) docs say.
///
/// A put reads up to `part_size` bytes: a stream that ends there is one PutObject whose signed payload hash is
/// the object's SHA-256, also stored as `x-amz-meta-sha256`. A longer stream becomes a multipart upload (one part
/// uploading while the next is read, so at most two parts in memory; parts are sent `UNSIGNED-PAYLOAD`). The
/// checksum of a multipart object is only known after its last part, when its metadata can no longer change:
/// it is stored in a small companion object `.trove-sha256/<id>` of the same bucket, named by the object's
/// `x-amz-meta-sha256-ref` (a random id given at the upload's start), written before the upload completes. A
/// failed put aborts the upload and removes the companion. Object names under `.trove-sha256/` are reserved.
///
/// Deletes are single DELETEs (Swift's s3api wants Content-MD5 on multi-object DeleteObjects).
#[derive(Clone)]
pub struct S3BackupStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for S3BackupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3BackupStore")
            .field("config", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

/// A request body and the payload hash it is signed with.
enum Payload {
    Empty,
    /// Signed with its SHA-256 (computed here unless given).
    Signed(Bytes, Option<String>),
    /// Sent as `UNSIGNED-PAYLOAD`.
    Unsigned(Bytes),
}

fn header_str(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Bucket naming rules (3-63 characters: lower-case letters, digits, `.` and `-`, starting and ending with a
/// letter or digit, no `..`).
fn check_bucket(key: &str, bucket: &str) -> Result<()> {
    let ok_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let ends = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=63).contains(&bucket.len())
        || !ok_chars
        || !ends(bucket.bytes().next())
        || !ends(bucket.bytes().last())
        || bucket.contains("..")
    {
        return Err(Error::bad_request(format!(
            "The backup object key '{}' is not valid: its first part must be a bucket name (3 to 63 lower-case \
             letters, digits, '.' or '-').",
            key.escape_default()
        )));
    }
    Ok(())
}

/// The bucket of a key's first part: container names as Swift and upstream Trove use them (`database_backups`)
/// become bucket names (`_` turns into `-`, upper case into lower case). Keys keep the name as given.
fn bucket_name(container: &str) -> String {
    container.to_ascii_lowercase().replace('_', "-")
}

fn check_key(key: &str) -> Result<Location> {
    let mut loc = split_key(key)?;
    loc.container = bucket_name(&loc.container);
    check_bucket(key, &loc.container)?;
    if loc.object.starts_with(COMPANIONS) {
        return Err(Error::bad_request(format!(
            "The backup object key '{}' is not valid: '{COMPANIONS}' holds checksums.",
            key.escape_default()
        )));
    }
    Ok(loc)
}

/// Code and message of an S3 error answer.
async fn error_detail(mut resp: Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < 8192 {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    match (xml::first(&text, "Code"), xml::first(&text, "Message")) {
        (Some(c), Some(m)) => excerpt(&format!("{c}: {m}"), 200),
        (Some(c), None) => c,
        _ => excerpt(&text, 200),
    }
}

/// Removes what a multipart put started when it fails or is dropped half-way.
struct Cleanup {
    inner: Arc<Inner>,
    state: StdMutex<CleanupState>,
    armed: bool,
}

#[derive(Default, Clone)]
struct CleanupState {
    upload: Option<(Location, String)>,
    companion: Option<Location>,
}

impl Cleanup {
    fn set_upload(&self, loc: Location, id: String) {
        self.state.lock().expect("cleanup").upload = Some((loc, id));
    }
    fn set_companion(&self, loc: Location) {
        self.state.lock().expect("cleanup").companion = Some(loc);
    }
    fn take(&self) -> CleanupState {
        std::mem::take(&mut *self.state.lock().expect("cleanup"))
    }
    async fn run(mut self) {
        self.armed = false;
        let st = self.take();
        self.inner.clean(st).await;
    }
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let st = self.take();
        if st.upload.is_none() && st.companion.is_none() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let inner = self.inner.clone();
            rt.spawn(async move { inner.clean(st).await });
        }
    }
}

impl Inner {
    /// One signed request. `bucket`/`object` are raw names; `query` raw pairs.
    async fn call(
        &self,
        method: Method,
        bucket: Option<&str>,
        object: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
        payload: Payload,
    ) -> Result<Response> {
        let mut path = self.base_path.clone();
        if let Some(b) = bucket {
            path.push('/');
            path.push_str(&uri_encode(b, false));
            if let Some(o) = object {
                path.push('/');
                path.push_str(&uri_encode(o, true));
            }
        } else {
            path.push('/');
        }
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let qs = canonical_query(&query);
        let url = if qs.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{qs}", self.base)
        };
        let (body, payload_hash) = match payload {
            Payload::Empty => (None, hex::encode(Sha256::digest(b""))),
            Payload::Signed(b, hash) => {
                let h = hash.unwrap_or_else(|| hex::encode(Sha256::digest(&b)));
                (Some(b), h)
            }
            Payload::Unsigned(b) => (Some(b), UNSIGNED_PAYLOAD.to_string()),
        };
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let mut signed: Vec<(String, String)> = vec![
            ("host".into(), self.host.clone()),
            ("x-amz-content-sha256".into(), payload_hash.clone()),
            ("x-amz-date".into(), amz_date.clone()),
        ];
        signed.extend(
            headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
        );
        let auth = Signer {
            access_key: &self.cfg.access_key,
            secret_key: self.cfg.secret_key.expose(),
            region: &self.cfg.region,
            service: "s3",
        }
        .authorization(&sigv4::Request {
            method: method.as_str(),
            canonical_uri: &path,
            query: &query,
            headers: &signed,
            payload_hash: &payload_hash,
            amz_date: &amz_date,
        });
        let mut auth = reqwest::header::HeaderValue::from_str(&auth).map_err(|_| {
            Error::validation("the S3 access key contains characters not allowed in an HTTP header")
        })?;
        auth.set_sensitive(true);
        let method_name = method.as_str().to_string();
        let mut rb = self
            .client
            .request(method, &url)
            .header("authorization", auth);
        for (k, v) in signed.iter().filter(|(k, _)| k != "host") {
            rb = rb.header(k.as_str(), v.as_str());
        }
        // An empty body gets no Content-Length by itself; PUT and POST need one.
        let empty = body.as_ref().is_none_or(Bytes::is_empty);
        if empty && matches!(method_name.as_str(), "PUT" | "POST") {
            rb = rb.header("content-length", "0");
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        rb.send()
            .await
            .map_err(|e| unreachable(BACKEND, &self.cfg.endpoint, e))
    }

    /// The error of an unexpected answer to `what`.
    async fn fail(&self, what: &str, resp: Response) -> Error {
        let status = resp.status();
        let detail = error_detail(resp).await;
        let what = if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            format!("{what} with access key '{}'", self.cfg.access_key)
        } else {
            what.to_string()
        };
        status_error(BACKEND, &self.cfg.endpoint, &what, status, &detail)
    }

    async fn ensure_bucket(&self, bucket: &str) -> Result<()> {
        let payload = if self.cfg.region == "us-east-1" {
            Payload::Empty
        } else {
            Payload::Signed(
                Bytes::from(format!(
                    "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                     <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                    xml::escape(&self.cfg.region)
                )),
                None,
            )
        };
        let resp = self
            .call(Method::PUT, Some(bucket), None, &[], &[], payload)
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        if resp.status() == StatusCode::CONFLICT {
            let detail = error_detail(resp).await;
            if detail.starts_with("BucketAlreadyOwnedByYou") {
                return Ok(());
            }
            return Err(Error::backend(
                BACKEND,
                format!(
                    "bucket '{bucket}' at {} cannot be used: {detail}",
                    self.cfg.endpoint
                ),
                false,
            ));
        }
        Err(self
            .fail(&format!("creating bucket '{bucket}'"), resp)
            .await)
    }

    async fn delete_object(&self, bucket: &str, object: &str) -> Result<()> {
        let resp = self
            .call(
                Method::DELETE,
                Some(bucket),
                Some(object),
                &[],
                &[],
                Payload::Empty,
            )
            .await?;
        if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(self
            .fail(&format!("deleting '{bucket}/{object}'"), resp)
            .await)
    }

    /// Aborts an upload and removes a companion; failures are logged.
    async fn clean(&self, st: CleanupState) {
        if let Some((loc, id)) = st.upload {
            let r = self
                .call(
                    Method::DELETE,
                    Some(&loc.container),
                    Some(&loc.object),
                    &[("uploadId", &id)],
                    &[],
                    Payload::Empty,
                )
                .await;
            match r {
                Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {}
                Ok(r) => {
                    tracing::warn!(bucket = %loc.container, status = %r.status(), "cannot abort a multipart upload")
                }
                Err(e) => {
                    tracing::warn!(bucket = %loc.container, error = %e, "cannot abort a multipart upload")
                }
            }
        }
        if let Some(c) = st.companion {
            if let Err(e) = self.delete_object(&c.container, &c.object).await {
                tracing::warn!(bucket = %c.container, error = %e, "cannot delete a checksum companion");
            }
        }
    }

    /// The companion of an object's checksum reference.
    fn companion(bucket: &str, reference: &str) -> Location {
        Location {
            container: bucket.to_string(),
            object: format!("{COMPANIONS}{reference}"),
        }
    }

    /// The checksum reference of an existing object (its companion's id), if any.
    async fn reference_of(&self, loc: &Location) -> Result<Option<String>> {
        let resp = self
            .call(
                Method::HEAD,
                Some(&loc.container),
                Some(&loc.object),
                &[],
                &[],
                Payload::Empty,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.fail("reading an object's metadata", resp).await);
        }
        Ok(header_str(&resp, META_REF).filter(|r| valid_ref(r)))
    }

    /// The checksum kept in a companion, if it is there.
    async fn companion_checksum(&self, bucket: &str, reference: &str) -> Result<Option<String>> {
        let c = Self::companion(bucket, reference);
        let resp = self
            .call(
                Method::GET,
                Some(&c.container),
                Some(&c.object),
                &[],
                &[],
                Payload::Empty,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.fail("reading a checksum", resp).await);
        }
        let text = resp
            .text()
            .await
            .map_err(|e| unreachable(BACKEND, &self.cfg.endpoint, e))?;
        let t = text.trim().to_ascii_lowercase();
        Ok((t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())).then_some(t))
    }

    /// The stored checksum of an object from its answer's headers (directly, or through its companion).
    async fn stored_checksum(&self, bucket: &str, resp: &Response) -> Result<Option<String>> {
        if let Some(s) = header_str(resp, META_SHA256).filter(|s| s.len() == 64) {
            return Ok(Some(s.to_ascii_lowercase()));
        }
        match header_str(resp, META_REF).filter(|r| valid_ref(r)) {
            Some(r) => self.companion_checksum(bucket, &r).await,
            None => Ok(None),
        }
    }

    async fn put_object(
        &self,
        key: &str,
        loc: &Location,
        input: &mut Input,
        cleanup: &Cleanup,
    ) -> Result<ObjectMeta> {
        let old_ref = self.reference_of(loc).await?;
        let part_size = self.cfg.part_size as usize;
        let first = input.read_up_to(part_size).await?;
        if !input.has_more().await? {
            let checksum = input.checksum();
            let resp = self
                .call(
                    Method::PUT,
                    Some(&loc.container),
                    Some(&loc.object),
                    &[],
                    &[
                        ("content-type", OCTET_STREAM.into()),
                        (META_SHA256, checksum.clone()),
                    ],
                    Payload::Signed(first, Some(checksum.clone())),
                )
                .await?;
            if !resp.status().is_success() {
                return Err(self.fail(&format!("storing '{key}'"), resp).await);
            }
            self.drop_old_companion(loc, old_ref).await;
            return Ok(ObjectMeta {
                key: key.to_string(),
                size: input.total(),
                checksum,
            });
        }

        let reference = uuid::Uuid::new_v4().simple().to_string();
        let resp = self
            .call(
                Method::POST,
                Some(&loc.container),
                Some(&loc.object),
                &[("uploads", "")],
                &[
                    ("content-type", OCTET_STREAM.into()),
                    (META_REF, reference.clone()),
                ],
                Payload::Empty,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .fail(&format!("starting the upload of '{key}'"), resp)
                .await);
        }
        let text = resp
            .text()
            .await
            .map_err(|e| unreachable(BACKEND, &self.cfg.endpoint, e))?;
        let Some(upload_id) = xml::first(&text, "UploadId").filter(|u| !u.is_empty()) else {
            return Err(Error::backend(
                BACKEND,
                format!(
                    "the object store at {} started an upload without an UploadId",
                    self.cfg.endpoint
                ),
                false,
            ));
        };
        cleanup.set_upload(loc.clone(), upload_id.clone());

        let mut etags: Vec<String> = Vec::new();
        let mut part = first;
        loop {
            let number = etags.len() as u32 + 1;
            if number > MAX_PARTS {
                return Err(Error::backend(
                    BACKEND,
                    format!(
                        "'{key}' needs more than {MAX_PARTS} parts of {part_size} bytes; raise part_size"
                    ),
                    false,
                ));
            }
            // Upload this part while reading the next one.
            let number_s = number.to_string();
            let query = [
                ("partNumber", number_s.as_str()),
                ("uploadId", upload_id.as_str()),
            ];
            let upload = self.call(
                Method::PUT,
                Some(&loc.container),
                Some(&loc.object),
                &query,
                &[],
                Payload::Unsigned(part),
            );
            let next = async {
                if input.has_more().await? {
                    input.read_up_to(part_size).await.map(Some)
                } else {
                    Ok(None)
                }
            };
            let (resp, next) = tokio::join!(upload, next);
            let resp = resp?;
            if !resp.status().is_success() {
                return Err(self
                    .fail(&format!("storing part {number} of '{key}'"), resp)
                    .await);
            }
            let Some(etag) = header_str(&resp, "etag") else {
                return Err(Error::backend(
                    BACKEND,
                    format!(
                        "the object store at {} stored part {number} of '{key}' without an ETag",
                        self.cfg.endpoint
                    ),
                    false,
                ));
            };
            etags.push(etag);
            match next? {
                Some(p) => part = p,
                None => break,
            }
        }

        let checksum = input.checksum();
        let companion = Self::companion(&loc.container, &reference);
        cleanup.set_companion(companion.clone());
        let resp = self
            .call(
                Method::PUT,
                Some(&companion.container),
                Some(&companion.object),
                &[],
                &[("content-type", "text/plain".into())],
                Payload::Signed(Bytes::from(checksum.clone()), None),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .fail(&format!("storing the checksum of '{key}'"), resp)
                .await);
        }
        let mut body = String::from("<CompleteMultipartUpload>");
        for (i, e) in etags.iter().enumerate() {
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                xml::escape(e)
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let resp = self
            .call(
                Method::POST,
                Some(&loc.container),
                Some(&loc.object),
                &[("uploadId", &upload_id)],
                &[("content-type", "application/xml".into())],
                Payload::Signed(Bytes::from(body), None),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .fail(&format!("completing the upload of '{key}'"), resp)
                .await);
        }
        // A 200 may still carry an error (the store fails after answering the headers).
        let text = resp
            .text()
            .await
            .map_err(|e| unreachable(BACKEND, &self.cfg.endpoint, e))?;
        if text.contains("<Error>") {
            let detail = match (xml::first(&text, "Code"), xml::first(&text, "Message")) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                _ => excerpt(&text, 200),
            };
            return Err(Error::backend(
                BACKEND,
                format!(
                    "the object store at {} could not complete the upload of '{key}': {detail}",
                    self.cfg.endpoint
                ),
                true,
            ));
        }
        self.drop_old_companion(loc, old_ref).await;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: input.total(),
            checksum,
        })
    }

    /// After an overwrite: the replaced object's companion is no longer anyone's.
    async fn drop_old_companion(&self, loc: &Location, old_ref: Option<String>) {
        if let Some(r) = old_ref {
            let c = Self::companion(&loc.container, &r);
            if let Err(e) = self.delete_object(&c.container, &c.object).await {
                tracing::warn!(bucket = %c.container, error = %e, "cannot delete an old checksum companion");
            }
        }
    }

    /// Object names (and sizes) under `prefix` in `bucket`, companions left out; empty for a missing bucket.
    async fn list_bucket(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q: Vec<(&str, &str)> = vec![
                ("list-type", "2"),
                ("prefix", prefix),
                ("encoding-type", "url"),
            ];
            if let Some(t) = &token {
                q.push(("continuation-token", t));
            }
            let resp = self
                .call(Method::GET, Some(bucket), None, &q, &[], Payload::Empty)
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(names);
            }
            if !resp.status().is_success() {
                return Err(self.fail(&format!("listing bucket '{bucket}'"), resp).await);
            }
            let text = resp
                .text()
                .await
                .map_err(|e| unreachable(BACKEND, &self.cfg.endpoint, e))?;
            let url_encoded = xml::first(&text, "EncodingType").is_some_and(|e| e == "url");
            for c in xml::blocks(&text, "Contents") {
                if let Some(k) = xml::first(c, "Key") {
                    let k = if url_encoded { uri_decode(&k) } else { k };
                    if !k.starts_with(COMPANIONS) {
                        names.push(k);
                    }
                }
            }
            let truncated = xml::first(&text, "IsTruncated").is_some_and(|t| t == "true");
            token = xml::first(&text, "NextContinuationToken").filter(|t| !t.is_empty());
            if !truncated || token.is_none() {
                return Ok(names);
            }
        }
    }

    async fn list_buckets(&self) -> Result<Vec<String>> {
        let resp = self
            .call(Method::GET, None, None, &[], &[], Payload::Empty)
            .await?;
        if !resp.status().is_success() {
            return Err(self.fail("listing buckets", resp).await);
        }
        let text = resp
            .text()
            .await
            .map_err(|e| unreachable(BACKEND, &self.cfg.endpoint, e))?;
        Ok(xml::blocks(&text, "Bucket")
            .into_iter()
            .filter_map(|b| xml::first(b, "Name"))
            .collect())
    }

    /// Size and checksum of one object; `None` when it is gone. An object without a stored checksum (not
    /// written by this store) is read to compute one.
    async fn meta(&self, key: String, loc: &Location) -> Result<Option<ObjectMeta>> {
        let resp = self
            .call(
                Method::HEAD,
                Some(&loc.container),
                Some(&loc.object),
                &[],
                &[],
                Payload::Empty,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.fail(&format!("reading '{key}'"), resp).await);
        }
        let size = header_str(&resp, "content-length").and_then(|s| s.parse::<u64>().ok());
        let sum = self.stored_checksum(&loc.container, &resp).await?;
        let (size, checksum) = match (size, sum) {
            (Some(size), Some(sum)) => (size, sum),
            _ => {
                let mut resp = self
                    .call(
                        Method::GET,
                        Some(&loc.container),
                        Some(&loc.object),
                        &[],
                        &[],
                        Payload::Empty,
                    )
                    .await?;
                if resp.status() == StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                if !resp.status().is_success() {
                    return Err(self.fail(&format!("reading '{key}'"), resp).await);
                }
                let mut h = Sha256::new();
                let mut n = 0u64;
                while let Some(c) = resp
                    .chunk()
                    .await
                    .map_err(|e| unreachable(BACKEND, &self.cfg.endpoint, e))?
                {
                    n += c.len() as u64;
                    h.update(&c);
                }
                (n, hex::encode(h.finalize()))
            }
        };
        Ok(Some(ObjectMeta {
            key,
            size,
            checksum,
        }))
    }
}

/// Only references this store makes (32 hex digits) name companions.
fn valid_ref(r: &str) -> bool {
    r.len() == 32 && r.bytes().all(|b| b.is_ascii_hexdigit())
}

impl S3BackupStore {
    /// A store for `config` (checked here; no request is made until the first call).
    pub fn new(config: S3Config) -> Result<S3BackupStore> {
        let url = check_endpoint("endpoint", &config.endpoint)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::validation(
                "the S3 endpoint must not have a query or fragment",
            ));
        }
        if config.access_key.is_empty() {
            return Err(Error::validation("the S3 access key is empty"));
        }
        if config.region.is_empty() {
            return Err(Error::validation("the S3 region is empty"));
        }
        if !(5 * MIB..=5 * 1024 * MIB).contains(&config.part_size) {
            return Err(Error::validation(format!(
                "part_size {} is outside 5 MiB to 5 GiB",
                config.part_size
            )));
        }
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => unreachable!("check_endpoint requires a host"),
        };
        let base_path = url.path().trim_end_matches('/').to_string();
        let base = format!("{}://{host}{base_path}", url.scheme());
        let client = http_client(BACKEND, config.connect_timeout, config.read_timeout)?;
        Ok(S3BackupStore {
            inner: Arc::new(Inner {
                cfg: config,
                client,
                base,
                base_path,
                host,
            }),
        })
    }

    /// Makes one signed request now (lists the buckets): checks the endpoint and the credentials.
    pub async fn check(&self) -> Result<()> {
        self.inner.list_buckets().await.map(|_| ())
    }
}

#[async_trait]
impl BackupStore for S3BackupStore {
    async fn put(&self, key: &str, data: ByteStream) -> Result<ObjectMeta> {
        let loc = check_key(key)?;
        let inner = &self.inner;
        inner.ensure_bucket(&loc.container).await?;
        let mut input = Input::new(data);
        let cleanup = Cleanup {
            inner: inner.clone(),
            state: StdMutex::default(),
            armed: true,
        };
        match inner.put_object(key, &loc, &mut input, &cleanup).await {
            Ok(meta) => {
                cleanup.disarm();
                Ok(meta)
            }
            Err(e) => {
                cleanup.run().await;
                Err(e)
            }
        }
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        let loc = match check_key(key) {
            Ok(l) => l,
            Err(_) if split_key(key).is_ok() => return Err(Error::not_found("Backup object", key)),
            Err(e) => return Err(e),
        };
        let inner = &self.inner;
        let resp = inner
            .call(
                Method::GET,
                Some(&loc.container),
                Some(&loc.object),
                &[],
                &[],
                Payload::Empty,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::not_found("Backup object", key));
        }
        if !resp.status().is_success() {
            return Err(inner.fail(&format!("reading '{key}'"), resp).await);
        }
        let expected = inner.stored_checksum(&loc.container, &resp).await?;
        Ok(verified_stream(
            BACKEND,
            inner.cfg.endpoint.clone(),
            key.to_string(),
            resp,
            expected,
        ))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let loc = check_key(key)?;
        let inner = &self.inner;
        let reference = inner.reference_of(&loc).await?;
        inner.delete_object(&loc.container, &loc.object).await?;
        if let Some(r) = reference {
            let c = Inner::companion(&loc.container, &r);
            inner.delete_object(&c.container, &c.object).await?;
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let inner = &self.inner;
        // (bucket, the key's first part): a prefix naming its container keeps that name in the keys listed.
        let (buckets, object_prefix) = match prefix.split_once('/') {
            Some((c, rest)) => (vec![(bucket_name(c), c.to_string())], rest.to_string()),
            None => (
                inner
                    .list_buckets()
                    .await?
                    .into_iter()
                    .filter(|b| b.starts_with(&bucket_name(prefix)))
                    .map(|b| (b.clone(), b))
                    .collect(),
                String::new(),
            ),
        };
        let mut keys = Vec::new();
        for (b, first) in buckets {
            if check_bucket(&b, &b).is_err() {
                continue;
            }
            for o in inner.list_bucket(&b, &object_prefix).await? {
                let key = format!("{first}/{o}");
                if let Ok(loc) = check_key(&key) {
                    keys.push((key, loc));
                }
            }
        }
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        let metas = map_concurrent(keys, CONCURRENCY, |(key, loc)| async move {
            inner.meta(key, &loc).await
        })
        .await?;
        Ok(metas.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> S3Config {
        S3Config {
            access_key: "AKIDEXAMPLE".into(),
            secret_key: Secret::new("hunter2-s3-secret"),
            ..S3Config::default()
        }
    }

    #[test]
    fn debug_hides_the_credentials() {
        let store = S3BackupStore::new(cfg()).expect("new");
        for s in [format!("{:?}", cfg()), format!("{store:?}")] {
            assert!(!s.contains("hunter2"), "{s}");
            assert!(!s.contains("AKIDEXAMPLE"), "{s}");
        }
    }

    #[test]
    fn config_is_checked() {
        for bad in [
            S3Config {
                part_size: MIB,
                ..cfg()
            },
            S3Config {
                endpoint: "https://s3.example".into(),
                ..cfg()
            },
            S3Config {
                endpoint: "http://user:pw@s3.example".into(),
                ..cfg()
            },
            S3Config {
                access_key: String::new(),
                ..cfg()
            },
        ] {
            let e = S3BackupStore::new(bad).expect_err("bad config");
            assert_eq!(e.fault().status, 400, "{e}");
            assert!(!e.to_string().contains("hunter2"));
        }
        let s = S3BackupStore::new(S3Config {
            endpoint: "http://127.0.0.1:9000/s3/".into(),
            ..cfg()
        })
        .expect("path endpoint");
        assert_eq!(s.inner.base, "http://127.0.0.1:9000/s3");
        assert_eq!(s.inner.base_path, "/s3");
        assert_eq!(s.inner.host, "127.0.0.1:9000");
    }

    #[test]
    fn keys_need_bucket_names() {
        for bad in ["ab/x", "-a-/x", "a..b/x", "_b_/x", "bucket/.trove-sha256/x"] {
            assert_eq!(check_key(bad).expect_err(bad).fault().status, 400, "{bad}");
        }
        check_key("backups/2024/x.xb").expect("good");
        check_key("my.bucket-1/x").expect("good");
        // Container names as Swift and upstream Trove use them map to bucket names.
        assert_eq!(
            check_key("database_backups/x").expect("mapped").container,
            "database-backups"
        );
        assert_eq!(check_key("Upper/x").expect("mapped").container, "upper");
    }
}
