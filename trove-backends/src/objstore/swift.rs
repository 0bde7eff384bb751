//! [`SwiftBackupStore`]: backup objects in OpenStack Swift (object API v1), authenticated with tempauth (v1.0)
//! or a Keystone v3 password.
//!
//! See [`SwiftBackupStore`].

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::SinkExt;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use trove_core::model::Secret;
use trove_core::ports::{BackupStore, ByteStream, ObjectMeta};
use trove_core::{Error, Result};

use super::{
    check_endpoint, excerpt, http_client, map_concurrent, secs, split_key, status_error,
    unreachable, uri_encode, verified_stream, Input, Location, MIB,
};

const BACKEND: &str = "swift";
/// Containers of segments are named after their container with this suffix; such names are not keys.
const SEGMENTS_SUFFIX: &str = "_segments";
const META_SHA256: &str = "x-object-meta-sha256";
const LOOKAHEAD: u64 = MIB;
const CONCURRENCY: usize = 8;
/// A token this close to its expiry is renewed before use (a streamed upload cannot be replayed on a 401).
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
const OCTET_STREAM: &str = "application/octet-stream";

/// How [`SwiftBackupStore`] logs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwiftAuth {
    /// Swift's v1.0 auth (tempauth, swauth): `GET auth_url` with `X-Storage-User`/`X-Storage-Pass` answers
    /// `X-Auth-Token` and `X-Storage-Url`.
    #[default]
    Tempauth,
    /// Keystone v3 password auth scoped to a project; the storage URL is the catalog's `object-store` endpoint.
    Keystone,
}

/// Settings of [`SwiftBackupStore`].
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SwiftConfig {
    /// Auth endpoint: tempauth `http://host:8080/auth/v1.0`, or Keystone `http://host:5000/v3` (`/v3` is added
    /// when missing).
    pub auth_url: String,
    /// Auth protocol.
    pub auth: SwiftAuth,
    /// User: `account:user` for tempauth, the user name for Keystone.
    pub user: String,
    /// Key (tempauth) or password (Keystone).
    pub key: Secret,
    /// Keystone: project of the token.
    pub project_name: String,
    /// Keystone: domain of the user.
    pub user_domain_name: String,
    /// Keystone: domain of the project.
    pub project_domain_name: String,
    /// Keystone: region of the `object-store` endpoint (any when unset).
    pub region: Option<String>,
    /// Keystone: interface of the `object-store` endpoint (`public`, `internal` or `admin`).
    pub interface: String,
    /// Storage URL to use instead of the one auth answers (`http://host:8080/v1/AUTH_account`), e.g. when the
    /// proxy announces a name this host cannot reach.
    pub storage_url: Option<String>,
    /// Objects longer than this are stored as Static Large Objects of segments this long (default 64 MiB;
    /// 1 MiB to 5 GiB).
    pub segment_size: u64,
    /// Segments per SLO manifest (default 1000, the cluster's default `max_manifest_segments`); longer objects
    /// get nested manifests.
    pub manifest_segments: usize,
    /// Time allowed to connect.
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// Time allowed without progress on a request (no overall deadline: objects may be many GB).
    #[serde(with = "secs")]
    pub read_timeout: Duration,
}

impl Default for SwiftConfig {
    fn default() -> Self {
        SwiftConfig {
            auth_url: "http://127.0.0.1:8080/auth/v1.0".into(),
            auth: SwiftAuth::Tempauth,
            user: String::new(),
            key: Secret::default(),
            project_name: "service".into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
            region: None,
            interface: "public".into(),
            storage_url: None,
            segment_size: 64 * MIB,
            manifest_segments: 1000,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
        }
    }
}

impl std::fmt::Debug for SwiftConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwiftConfig")
            .field("auth_url", &self.auth_url)
            .field("auth", &self.auth)
            .field("user", &self.user)
            .field("project_name", &self.project_name)
            .field("storage_url", &self.storage_url)
            .field("segment_size", &self.segment_size)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Session {
    token: Secret,
    url: String,
    /// When to log in again: before the token expires, by [`EXPIRY_MARGIN`] or half its life if shorter.
    renew_at: Option<Instant>,
}

impl Session {
    fn new(token: String, url: &str, life: Option<Duration>) -> Session {
        let now = Instant::now();
        Session {
            token: Secret::new(token),
            url: url.trim_end_matches('/').to_string(),
            renew_at: life.map(|l| now + l - EXPIRY_MARGIN.min(l / 2)),
        }
    }

    fn fresh(&self) -> bool {
        self.renew_at.is_none_or(|t| Instant::now() < t)
    }
}

struct Inner {
    cfg: SwiftConfig,
    client: reqwest::Client,
    session: tokio::sync::Mutex<Option<Session>>,
}

/// Backup objects in OpenStack Swift (object API v1); keys map as the [`objstore`](crate::objstore) docs say.
///
/// A put streams. Up to a small look-ahead (1 MiB, or the segment size when smaller) is read first: a stream that
/// ends there is stored with one PUT carrying its size and `X-Object-Meta-Sha256`. Anything longer streams
/// (chunked) into segments of `segment_size` bytes in `<container>_segments`, named
/// `<object>/<upload id>/<8-digit number>`, while being hashed; then an object that turned out to fit in one segment
/// is copied into place by the cluster (with its checksum) and the segment removed, and a longer one gets a Static
/// Large Object manifest carrying the checksum (nested manifests past `manifest_segments` segments). The object
/// appears only once complete; a failed put deletes every segment it wrote. Overwriting a large object deletes the
/// old one's segments once the new object is in place.
///
/// A request answered 401 is sent again once after logging in anew; a streamed segment upload cannot be repeated,
/// so tokens are renewed ahead of their expiry instead. `list` reads each object's size and checksum with a HEAD
/// (eight at a time). Object names are at most 982 bytes (segment names add 42 to them, and Swift allows 1024).
#[derive(Clone)]
pub struct SwiftBackupStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SwiftBackupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwiftBackupStore")
            .field("config", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

/// One entry of an SLO manifest.
struct Entry {
    path: String,
    etag: Option<String>,
    size: u64,
}

fn manifest_json(entries: &[Entry]) -> Bytes {
    let v: Vec<Value> = entries
        .iter()
        .map(|e| json!({ "path": e.path, "etag": e.etag, "size_bytes": e.size }))
        .collect();
    Bytes::from(Value::Array(v).to_string())
}

fn header_str(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// At most 2 KiB of an answer's body.
async fn body_excerpt(mut resp: Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < 2048 {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    excerpt(&String::from_utf8_lossy(&buf), 200)
}

/// The `object-store` endpoint of a Keystone v3 token's catalog.
fn catalog_url(token: &Value, interface: &str, region: Option<&str>) -> Option<String> {
    token["catalog"]
        .as_array()?
        .iter()
        .filter(|s| s["type"] == "object-store")
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .find(|e| {
            e["interface"] == interface
                && region.is_none_or(|r| e["region_id"] == r || e["region"] == r)
        })
        .and_then(|e| e["url"].as_str())
        .map(|u| u.trim_end_matches('/').to_string())
}

/// Longest object name: segment names add `/<32 hex digits>/<8 digits>` and Swift allows 1024 bytes.
const MAX_OBJECT: usize = 1024 - 42;

fn check_container(key: &str, loc: &Location) -> Result<()> {
    if loc.object.len() > MAX_OBJECT {
        return Err(Error::bad_request(format!(
            "The backup object key '{}' is not valid: the object name is longer than {MAX_OBJECT} bytes.",
            key.escape_default()
        )));
    }
    if loc.container.len() > 256 {
        return Err(Error::bad_request(format!(
            "The backup object key '{}' is not valid: the container name is longer than 256 bytes.",
            key.escape_default()
        )));
    }
    if loc.container.ends_with(SEGMENTS_SUFFIX) {
        return Err(Error::bad_request(format!(
            "The backup object key '{}' is not valid: containers ending in '{SEGMENTS_SUFFIX}' hold segments.",
            key.escape_default()
        )));
    }
    Ok(())
}

fn object_path(container: &str, object: &str) -> String {
    format!(
        "/{}/{}",
        uri_encode(container, false),
        uri_encode(object, true)
    )
}

/// Removes what a put wrote when it is dropped before finishing (a cancelled put); see [`Inner::delete_paths`].
struct Cleanup {
    inner: Arc<Inner>,
    paths: Arc<StdMutex<Vec<String>>>,
    armed: bool,
}

impl Cleanup {
    fn add(&self, path: String) {
        self.paths.lock().expect("cleanup list").push(path);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.paths.lock().expect("cleanup list"))
    }
    async fn run(mut self) {
        self.armed = false;
        let paths = self.take();
        self.inner.delete_paths(&paths).await;
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
        let paths = self.take();
        if paths.is_empty() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let inner = self.inner.clone();
            rt.spawn(async move { inner.delete_paths(&paths).await });
        }
    }
}

impl Inner {
    fn auth_endpoint(&self) -> &str {
        &self.cfg.auth_url
    }

    async fn authenticate(&self) -> Result<Session> {
        let mut s = match self.cfg.auth {
            SwiftAuth::Tempauth => self.tempauth().await?,
            SwiftAuth::Keystone => self.keystone().await?,
        };
        if let Some(u) = &self.cfg.storage_url {
            u.trim_end_matches('/').clone_into(&mut s.url);
        }
        Ok(s)
    }

    async fn tempauth(&self) -> Result<Session> {
        let mut pass = HeaderValue::from_str(self.cfg.key.expose()).map_err(|_| {
            Error::validation("the Swift key contains characters not allowed in an HTTP header")
        })?;
        pass.set_sensitive(true);
        let resp = self
            .client
            .get(&self.cfg.auth_url)
            .header("X-Storage-User", &self.cfg.user)
            .header("X-Storage-Pass", pass)
            .send()
            .await
            .map_err(|e| unreachable(BACKEND, self.auth_endpoint(), e))?;
        let status = resp.status();
        if !status.is_success() {
            let detail = body_excerpt(resp).await;
            return Err(status_error(
                BACKEND,
                self.auth_endpoint(),
                &format!("the credentials of user '{}'", self.cfg.user),
                status,
                &detail,
            ));
        }
        let token = header_str(&resp, "x-auth-token");
        let url = header_str(&resp, "x-storage-url").or(self.cfg.storage_url.clone());
        let (Some(token), Some(url)) = (token, url) else {
            return Err(Error::backend(
                BACKEND,
                format!(
                    "the auth answer of {} lacks X-Auth-Token or X-Storage-Url",
                    self.auth_endpoint()
                ),
                false,
            ));
        };
        let life = header_str(&resp, "x-auth-token-expires")
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        Ok(Session::new(token, &url, life))
    }

    async fn keystone(&self) -> Result<Session> {
        let trimmed = self.cfg.auth_url.trim_end_matches('/');
        let base = if trimmed.ends_with("/v3") {
            trimmed.to_string()
        } else {
            format!("{trimmed}/v3")
        };
        let body = json!({ "auth": {
            "identity": { "methods": ["password"], "password": { "user": {
                "name": self.cfg.user,
                "domain": { "name": self.cfg.user_domain_name },
                "password": self.cfg.key.expose(),
            }}},
            "scope": { "project": {
                "name": self.cfg.project_name,
                "domain": { "name": self.cfg.project_domain_name },
            }},
        }});
        let resp = self
            .client
            .post(format!("{base}/auth/tokens"))
            .json(&body)
            .send()
            .await
            .map_err(|e| unreachable(BACKEND, self.auth_endpoint(), e))?;
        let status = resp.status();
        if !status.is_success() {
            let detail = body_excerpt(resp).await;
            return Err(status_error(
                BACKEND,
                self.auth_endpoint(),
                &format!("the credentials of user '{}'", self.cfg.user),
                status,
                &detail,
            ));
        }
        let token = header_str(&resp, "x-subject-token");
        let v: Value = resp
            .json()
            .await
            .map_err(|e| unreachable(BACKEND, self.auth_endpoint(), e))?;
        let url =
            self.cfg.storage_url.clone().or_else(|| {
                catalog_url(&v["token"], &self.cfg.interface, self.cfg.region.as_deref())
            });
        let (Some(token), Some(url)) = (token, url) else {
            return Err(Error::backend(
                BACKEND,
                format!(
                    "the Keystone token of {} has no X-Subject-Token or no {} object-store endpoint{} \
                     in its catalog (set storage_url)",
                    self.auth_endpoint(),
                    self.cfg.interface,
                    self.cfg
                        .region
                        .as_deref()
                        .map(|r| format!(" in region {r}"))
                        .unwrap_or_default()
                ),
                false,
            ));
        };
        let life = v["token"]["expires_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| {
                (t.with_timezone(&chrono::Utc) - chrono::Utc::now())
                    .to_std()
                    .ok()
            });
        Ok(Session::new(token, &url, life))
    }

    /// The current session, logging in when there is none or it is about to expire.
    async fn session(&self) -> Result<Session> {
        let mut g = self.session.lock().await;
        if let Some(s) = g.as_ref().filter(|s| s.fresh()) {
            return Ok(s.clone());
        }
        let s = self.authenticate().await?;
        *g = Some(s.clone());
        Ok(s)
    }

    /// A new session after `stale` was refused (unless another task already renewed it).
    async fn renew(&self, stale: &Session) -> Result<Session> {
        let mut g = self.session.lock().await;
        if let Some(s) = g.as_ref().filter(|s| s.token != stale.token && s.fresh()) {
            return Ok(s.clone());
        }
        let s = self.authenticate().await?;
        *g = Some(s.clone());
        Ok(s)
    }

    fn request(
        &self,
        s: &Session,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<reqwest::RequestBuilder> {
        let mut token = HeaderValue::from_str(s.token.expose()).map_err(|_| {
            Error::backend(BACKEND, "the auth token is not a valid header value", false)
        })?;
        token.set_sensitive(true);
        let mut map = HeaderMap::new();
        map.insert("x-auth-token", token);
        let mut rb = self
            .client
            .request(method, format!("{}{path}", s.url))
            .headers(map);
        for (k, v) in headers {
            rb = rb.header(*k, v);
        }
        Ok(rb)
    }

    /// One request on the storage URL (`path` starts with `/`, is encoded, may carry a query); on a 401 the token
    /// is renewed and the request sent once more.
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Bytes>,
    ) -> Result<Response> {
        let mut s = self.session().await?;
        let mut renewed = false;
        loop {
            let mut rb = self.request(&s, method.clone(), path, headers)?;
            if let Some(b) = &body {
                // An empty body gets no Content-Length by itself, and Swift wants one on a PUT.
                if b.is_empty() {
                    rb = rb.header("content-length", "0");
                }
                rb = rb.body(b.clone());
            }
            let resp = rb
                .send()
                .await
                .map_err(|e| unreachable(BACKEND, &s.url, e))?;
            if resp.status() == StatusCode::UNAUTHORIZED && !renewed {
                renewed = true;
                s = self.renew(&s).await?;
                continue;
            }
            return Ok(resp);
        }
    }

    /// The error of an unexpected answer to `what`.
    async fn fail(&self, what: &str, resp: Response) -> Error {
        let status = resp.status();
        let endpoint = self
            .session
            .lock()
            .await
            .as_ref()
            .map(|s| s.url.clone())
            .unwrap_or_else(|| self.cfg.auth_url.clone());
        let detail = body_excerpt(resp).await;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return status_error(
                BACKEND,
                &endpoint,
                &format!("{what} for user '{}'", self.cfg.user),
                status,
                &detail,
            );
        }
        status_error(BACKEND, &endpoint, what, status, &detail)
    }

    /// PUTs `path` with a chunked body: `first`, then bytes of `input` up to `limit` in all. Not retried (the
    /// bytes are gone); the token is renewed beforehand when near its expiry. An error of the input is returned
    /// as is after aborting the request, so the cluster stores nothing.
    async fn put_streamed(
        &self,
        path: &str,
        headers: &[(&str, String)],
        first: Bytes,
        input: &mut Input,
        limit: u64,
    ) -> Result<(u64, Response)> {
        let s = self.session().await?;
        let (mut tx, rx) = futures::channel::mpsc::channel::<std::io::Result<Bytes>>(2);
        let rb = self
            .request(&s, Method::PUT, path, headers)?
            .body(reqwest::Body::wrap_stream(rx));
        let feed = async move {
            let mut sent = first.len() as u64;
            if !first.is_empty() && tx.send(Ok(first)).await.is_err() {
                return (sent, None);
            }
            while sent < limit {
                let max = usize::try_from(limit - sent).unwrap_or(usize::MAX);
                match input.next_piece(max).await {
                    Ok(Some(p)) => {
                        sent += p.len() as u64;
                        if tx.send(Ok(p)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx
                            .send(Err(std::io::Error::other("the backup source failed")))
                            .await;
                        return (sent, Some(e));
                    }
                }
            }
            (sent, None)
        };
        let (resp, (sent, source_err)) = tokio::join!(rb.send(), feed);
        if let Some(e) = source_err {
            return Err(e);
        }
        let resp = resp.map_err(|e| unreachable(BACKEND, &s.url, e))?;
        Ok((sent, resp))
    }

    /// Creates a container unless it exists.
    async fn ensure_container(&self, container: &str) -> Result<()> {
        let path = format!("/{}", uri_encode(container, false));
        let resp = self.call(Method::PUT, &path, &[], None).await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(self
            .fail(&format!("creating container '{container}'"), resp)
            .await)
    }

    /// Deletes objects (encoded paths) one by one, ignoring those already gone; failures are logged.
    async fn delete_paths(&self, paths: &[String]) {
        for p in paths {
            match self.call(Method::DELETE, p, &[], None).await {
                Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {}
                Ok(r) => tracing::warn!(path = %p, status = %r.status(), "cannot delete a segment"),
                Err(e) => tracing::warn!(path = %p, error = %e, "cannot delete a segment"),
            }
        }
    }

    /// The segments of the SLO at `path` (encoded paths), empty when it is no SLO or absent.
    async fn slo_segments(&self, path: &str) -> Result<Vec<String>> {
        let resp = self.call(Method::HEAD, path, &[], None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !resp.status().is_success() {
            return Err(self.fail("reading an object's metadata", resp).await);
        }
        let slo = header_str(&resp, "x-static-large-object")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if !slo {
            return Ok(Vec::new());
        }
        let resp = self
            .call(
                Method::GET,
                &format!("{path}?multipart-manifest=get"),
                &[],
                None,
            )
            .await?;
        if !resp.status().is_success() {
            return Ok(Vec::new());
        }
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str())
            .filter_map(|name| {
                let (c, o) = name.trim_start_matches('/').split_once('/')?;
                Some(object_path(c, o))
            })
            .collect())
    }

    /// A put once the containers exist; `cleanup` collects what must go if it fails.
    async fn put_object(
        &self,
        key: &str,
        loc: &Location,
        input: &mut Input,
        cleanup: &Cleanup,
    ) -> Result<ObjectMeta> {
        let path = object_path(&loc.container, &loc.object);
        let old_segments = self.slo_segments(&path).await?;
        let seg_size = self.cfg.segment_size;
        let head = input.read_up_to(LOOKAHEAD.min(seg_size) as usize).await?;
        if !input.has_more().await? {
            let checksum = input.checksum();
            let resp = self
                .call(
                    Method::PUT,
                    &path,
                    &[
                        ("content-type", OCTET_STREAM.into()),
                        (META_SHA256, checksum.clone()),
                    ],
                    Some(head),
                )
                .await?;
            if !resp.status().is_success() {
                return Err(self.fail(&format!("storing '{key}'"), resp).await);
            }
            self.delete_paths(&old_segments).await;
            return Ok(ObjectMeta {
                key: key.to_string(),
                size: input.total(),
                checksum,
            });
        }

        let seg_container = format!("{}{SEGMENTS_SUFFIX}", loc.container);
        self.ensure_container(&seg_container).await?;
        let upload = uuid::Uuid::new_v4().simple().to_string();
        let per_manifest = self.cfg.manifest_segments;
        let mut top: Vec<Entry> = Vec::new();
        let mut cur: Vec<Entry> = Vec::new();
        let mut first = head;
        let mut first_seg_path = String::new();
        let mut n = 0u64;
        loop {
            if cur.len() == per_manifest {
                if top.len() + 1 >= per_manifest {
                    return Err(Error::backend(
                        BACKEND,
                        format!(
                            "'{key}' is larger than {per_manifest}² segments of {seg_size} bytes; \
                             raise segment_size"
                        ),
                        false,
                    ));
                }
                top.push(
                    self.sub_manifest(&seg_container, loc, &upload, top.len(), &cur, cleanup)
                        .await?,
                );
                cur.clear();
            }
            let name = format!("{}/{upload}/{n:08}", loc.object);
            let seg_path = object_path(&seg_container, &name);
            cleanup.add(seg_path.clone());
            if n == 0 {
                first_seg_path.clone_from(&seg_path);
            }
            let (size, resp) = self
                .put_streamed(
                    &seg_path,
                    &[("content-type", OCTET_STREAM.into())],
                    std::mem::take(&mut first),
                    input,
                    seg_size,
                )
                .await?;
            if !resp.status().is_success() {
                return Err(self
                    .fail(&format!("storing segment {n} of '{key}'"), resp)
                    .await);
            }
            cur.push(Entry {
                path: format!("/{seg_container}/{name}"),
                etag: header_str(&resp, "etag").map(|e| e.trim_matches('"').to_string()),
                size,
            });
            n += 1;
            if !input.has_more().await? {
                break;
            }
        }
        let checksum = input.checksum();
        let meta_headers = [
            ("content-type", OCTET_STREAM.to_string()),
            (META_SHA256, checksum.clone()),
        ];
        if top.is_empty() && cur.len() == 1 {
            // It fit in one segment after all: the cluster copies it into place, with its checksum.
            let mut headers = meta_headers.to_vec();
            headers.push(("x-copy-from", first_seg_path.clone()));
            headers.push(("x-fresh-metadata", "true".into()));
            let resp = self
                .call(Method::PUT, &path, &headers, Some(Bytes::new()))
                .await?;
            if !resp.status().is_success() {
                return Err(self.fail(&format!("storing '{key}'"), resp).await);
            }
            self.delete_paths(&cleanup.take()).await;
        } else {
            if !top.is_empty() {
                top.push(
                    self.sub_manifest(&seg_container, loc, &upload, top.len(), &cur, cleanup)
                        .await?,
                );
                cur = top;
            }
            let resp = self
                .call(
                    Method::PUT,
                    &format!("{path}?multipart-manifest=put"),
                    &meta_headers,
                    Some(manifest_json(&cur)),
                )
                .await?;
            if !resp.status().is_success() {
                return Err(self
                    .fail(&format!("storing the manifest of '{key}'"), resp)
                    .await);
            }
        }
        self.delete_paths(&old_segments).await;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: input.total(),
            checksum,
        })
    }

    /// Stores a manifest of `entries` in the segments container; answers its entry in the top manifest.
    async fn sub_manifest(
        &self,
        seg_container: &str,
        loc: &Location,
        upload: &str,
        index: usize,
        entries: &[Entry],
        cleanup: &Cleanup,
    ) -> Result<Entry> {
        let name = format!("{}/{upload}/manifest-{index:05}", loc.object);
        let path = object_path(seg_container, &name);
        cleanup.add(path.clone());
        let resp = self
            .call(
                Method::PUT,
                &format!("{path}?multipart-manifest=put"),
                &[("content-type", OCTET_STREAM.into())],
                Some(manifest_json(entries)),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.fail("storing a sub-manifest", resp).await);
        }
        Ok(Entry {
            path: format!("/{seg_container}/{name}"),
            etag: None,
            size: entries.iter().map(|e| e.size).sum(),
        })
    }

    /// Size and checksum of one object (HEAD); `None` when it is gone. An object without a stored checksum (not
    /// written by this store) is read to compute one.
    async fn meta(&self, key: String, loc: &Location) -> Result<Option<ObjectMeta>> {
        let path = object_path(&loc.container, &loc.object);
        let resp = self.call(Method::HEAD, &path, &[], None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.fail(&format!("reading '{key}'"), resp).await);
        }
        // Not `content_length()`: for a HEAD that is the (empty) body's length.
        let size = header_str(&resp, "content-length").and_then(|s| s.parse::<u64>().ok());
        let sum = header_str(&resp, META_SHA256).filter(|s| s.len() == 64);
        let (size, checksum) = match (size, sum) {
            (Some(size), Some(sum)) => (size, sum.to_ascii_lowercase()),
            _ => {
                let resp = self.call(Method::GET, &path, &[], None).await?;
                if resp.status() == StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                if !resp.status().is_success() {
                    return Err(self.fail(&format!("reading '{key}'"), resp).await);
                }
                let url = resp.url().to_string();
                let mut body = resp;
                let mut h = <sha2::Sha256 as sha2::Digest>::new();
                let mut n = 0u64;
                while let Some(c) = body
                    .chunk()
                    .await
                    .map_err(|e| unreachable(BACKEND, &url, e))?
                {
                    n += c.len() as u64;
                    sha2::Digest::update(&mut h, &c);
                }
                (n, hex::encode(sha2::Digest::finalize(h)))
            }
        };
        Ok(Some(ObjectMeta {
            key,
            size,
            checksum,
        }))
    }

    /// Names in a JSON listing at `path` (an account or container), page by page.
    async fn listing(&self, path: &str, prefix: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut marker = String::new();
        loop {
            let q = format!(
                "{path}?format=json&prefix={}&marker={}",
                uri_encode(prefix, false),
                uri_encode(&marker, false)
            );
            let resp = self.call(Method::GET, &q, &[], None).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(names);
            }
            if !resp.status().is_success() {
                return Err(self.fail("listing", resp).await);
            }
            let page: Value = if resp.status() == StatusCode::NO_CONTENT {
                Value::Array(Vec::new())
            } else {
                let url = resp.url().to_string();
                resp.json()
                    .await
                    .map_err(|e| unreachable(BACKEND, &url, e))?
            };
            let batch: Vec<String> = page
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["name"].as_str().map(str::to_string))
                .collect();
            match batch.last() {
                Some(last) => marker = last.clone(),
                None => return Ok(names),
            }
            names.extend(batch);
        }
    }
}

impl SwiftBackupStore {
    /// A store for `config` (checked here; no request is made until the first call).
    pub fn new(config: SwiftConfig) -> Result<SwiftBackupStore> {
        check_endpoint("auth_url", &config.auth_url)?;
        if let Some(u) = &config.storage_url {
            check_endpoint("storage_url", u)?;
        }
        if config.user.is_empty() {
            return Err(Error::validation("the Swift user is empty"));
        }
        if !(MIB..=5 * 1024 * MIB).contains(&config.segment_size) {
            return Err(Error::validation(format!(
                "segment_size {} is outside 1 MiB to 5 GiB",
                config.segment_size
            )));
        }
        if config.manifest_segments < 2 {
            return Err(Error::validation("manifest_segments must be at least 2"));
        }
        let client = http_client(BACKEND, config.connect_timeout, config.read_timeout)?;
        Ok(SwiftBackupStore {
            inner: Arc::new(Inner {
                cfg: config,
                client,
                session: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Logs in now (instead of at the first call): checks the endpoint and the credentials.
    pub async fn check(&self) -> Result<()> {
        self.inner.session().await.map(|_| ())
    }
}

#[async_trait]
impl BackupStore for SwiftBackupStore {
    async fn put(&self, key: &str, data: ByteStream) -> Result<ObjectMeta> {
        let loc = split_key(key)?;
        check_container(key, &loc)?;
        let inner = &self.inner;
        inner.ensure_container(&loc.container).await?;
        let mut input = Input::new(data);
        let cleanup = Cleanup {
            inner: inner.clone(),
            paths: Arc::default(),
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
        let loc = split_key(key)?;
        if check_container(key, &loc).is_err() {
            return Err(Error::not_found("Backup object", key));
        }
        let path = object_path(&loc.container, &loc.object);
        let resp = self.inner.call(Method::GET, &path, &[], None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::not_found("Backup object", key));
        }
        if !resp.status().is_success() {
            return Err(self.inner.fail(&format!("reading '{key}'"), resp).await);
        }
        let expected = header_str(&resp, META_SHA256).filter(|s| s.len() == 64);
        let endpoint = resp.url().origin().ascii_serialization();
        Ok(verified_stream(
            BACKEND,
            endpoint,
            key.to_string(),
            resp,
            expected,
        ))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let loc = split_key(key)?;
        check_container(key, &loc)?;
        let inner = &self.inner;
        let path = object_path(&loc.container, &loc.object);
        // For an SLO this deletes the manifest and its segments. The answer is 200 whatever happened; its body
        // says. A plain object is "Not an SLO manifest" (Swift 2.30) and is deleted on its own.
        let resp = inner
            .call(
                Method::DELETE,
                &format!("{path}?multipart-manifest=delete"),
                &[("accept", "application/json".into())],
                None,
            )
            .await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        if !status.is_success() {
            return Err(inner.fail(&format!("deleting '{key}'"), resp).await);
        }
        let endpoint = resp.url().origin().ascii_serialization();
        let text = resp.text().await.unwrap_or_default();
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return Ok(());
        };
        let errors: Vec<String> = v["Errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e.to_string())
            .collect();
        if errors.iter().any(|e| e.contains("Not an SLO manifest")) {
            let resp = inner.call(Method::DELETE, &path, &[], None).await?;
            if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND {
                return Ok(());
            }
            return Err(inner.fail(&format!("deleting '{key}'"), resp).await);
        }
        let st = v["Response Status"].as_str().unwrap_or("200 OK");
        if !errors.is_empty() || !(st.starts_with('2') || st.starts_with("404")) {
            return Err(Error::backend(
                BACKEND,
                format!(
                    "the object store at {endpoint} could not delete all of '{key}': {}",
                    excerpt(&text, 300)
                ),
                true,
            ));
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let inner = &self.inner;
        let (containers, object_prefix) = match prefix.split_once('/') {
            Some((c, rest)) => (vec![c.to_string()], rest.to_string()),
            None => (inner.listing("", prefix).await?, String::new()),
        };
        let mut keys = Vec::new();
        for c in containers {
            if c.is_empty() || c.ends_with(SEGMENTS_SUFFIX) {
                continue;
            }
            let path = format!("/{}", uri_encode(&c, false));
            for o in inner.listing(&path, &object_prefix).await? {
                let key = format!("{c}/{o}");
                // Objects whose names are not valid keys (not written here) are skipped.
                if let Ok(loc) = split_key(&key) {
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

    #[test]
    fn debug_hides_the_key() {
        let cfg = SwiftConfig {
            user: "test:tester".into(),
            key: Secret::new("hunter2-swift"),
            ..SwiftConfig::default()
        };
        let store = SwiftBackupStore::new(cfg.clone()).expect("new");
        for s in [format!("{cfg:?}"), format!("{store:?}")] {
            assert!(!s.contains("hunter2"), "{s}");
            assert!(s.contains("test:tester"), "{s}");
        }
    }

    #[test]
    fn config_is_checked() {
        let ok = SwiftConfig {
            user: "u".into(),
            ..SwiftConfig::default()
        };
        for bad in [
            SwiftConfig {
                auth_url: "https://swift.example/auth/v1.0".into(),
                ..ok.clone()
            },
            SwiftConfig {
                auth_url: "not a url".into(),
                ..ok.clone()
            },
            SwiftConfig {
                segment_size: 1000,
                ..ok.clone()
            },
            SwiftConfig {
                user: String::new(),
                ..ok.clone()
            },
        ] {
            let e = SwiftBackupStore::new(bad).expect_err("bad config");
            assert_eq!(e.fault().status, 400, "{e}");
        }
        SwiftBackupStore::new(ok).expect("good config");
    }

    #[test]
    fn keystone_catalog_gives_the_object_store_url() {
        let token = json!({ "catalog": [
            { "type": "identity", "endpoints": [{ "interface": "public", "region_id": "r1", "url": "http://k/v3" }] },
            { "type": "object-store", "endpoints": [
                { "interface": "internal", "region_id": "r1", "url": "http://int:8080/v1/AUTH_p" },
                { "interface": "public", "region_id": "r1", "url": "http://pub1:8080/v1/AUTH_p/" },
                { "interface": "public", "region_id": "r2", "url": "http://pub2:8080/v1/AUTH_p" }
            ]}
        ]});
        assert_eq!(
            catalog_url(&token, "public", None).as_deref(),
            Some("http://pub1:8080/v1/AUTH_p")
        );
        assert_eq!(
            catalog_url(&token, "public", Some("r2")).as_deref(),
            Some("http://pub2:8080/v1/AUTH_p")
        );
        assert_eq!(
            catalog_url(&token, "internal", None).as_deref(),
            Some("http://int:8080/v1/AUTH_p")
        );
        assert_eq!(catalog_url(&token, "admin", None), None);
    }

    #[test]
    fn sessions_renew_before_expiry() {
        let s = Session::new(
            "t".into(),
            "http://h/v1/AUTH_a/",
            Some(Duration::from_secs(86400)),
        );
        assert!(s.fresh());
        assert_eq!(s.url, "http://h/v1/AUTH_a");
        // A short-lived token is used for half its life, not renewed on every call.
        assert!(Session::new("t".into(), "u", Some(Duration::from_secs(60))).fresh());
        assert!(!Session::new("t".into(), "u", Some(Duration::ZERO)).fresh());
        assert!(Session::new("t".into(), "u", None).fresh());
    }

    #[test]
    fn segment_containers_are_not_keys() {
        let loc = split_key("a_segments/x").expect("split");
        assert_eq!(
            check_container("a_segments/x", &loc)
                .expect_err("reserved")
                .fault()
                .status,
            400
        );
        assert_eq!(object_path("c d", "a b/c"), "/c%20d/a%20b/c");
        let long = format!("c/{}", "o".repeat(MAX_OBJECT + 1));
        let loc = split_key(&long).expect("split");
        assert!(check_container(&long, &loc).is_err());
    }
}
