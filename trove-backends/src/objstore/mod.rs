//! Object-store adapters of [`trove_core::ports::BackupStore`]: OpenStack Swift ([`SwiftBackupStore`]) and
//! S3-compatible stores ([`S3BackupStore`]), both over plain HTTP with `reqwest`.
//!
//! Keys map the same way in both: the first `/`-separated part of a key is the container (bucket), created on
//! demand, the rest the object name (`backups/2024/full.xbstream` is object `2024/full.xbstream` in `backups`).
//! Objects stream in and out: a put holds at most a 1 MiB look-ahead (Swift) or two parts (S3) in memory, hashes
//! the bytes with SHA-256 as they pass and stores the hex digest with the object. A put that fails,
//! whether its input stream or the store errs, removes what it wrote before returning the error (and, when the put
//! is dropped half-way, in a background task). A get hands out the bytes as they arrive and checks them against
//! the stored SHA-256 at the end: a mismatch is the stream's last item, an error. `list` answers the keys in
//! lexical order with their sizes and checksums (read with one request per object).
//!
//! Errors: an unreachable store is a transient [`trove_core::Error::Backend`] naming the endpoint; refused
//! credentials (401/403) say "check the credentials"; a full store (507) says so. Keys, passwords, secret keys and
//! tokens never appear in `Debug` output, logs or error messages (errors name the user or access key id refused).
//!
//! TLS: the workspace builds `reqwest` without TLS, so endpoints are `http://` (constructors refuse `https://`
//! with a clear error); reach an https store through a local TLS-originating proxy, or enable a TLS feature of
//! `reqwest`.

mod s3;
mod sigv4;
mod swift;
mod xml;

pub use s3::{S3BackupStore, S3Config};
pub use swift::{SwiftAuth, SwiftBackupStore, SwiftConfig};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::time::Duration;

use trove_core::ports::ByteStream;
use trove_core::{Error, Result};

const MIB: u64 = 1 << 20;

/// Longest object name accepted (Swift's default limit; S3 allows the same).
const MAX_OBJECT_NAME: usize = 1024;

/// A key split into its container (bucket) and object name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    pub container: String,
    pub object: String,
}

fn bad_key(key: &str, why: &str) -> Error {
    Error::bad_request(format!(
        "The backup object key '{}' is not valid: {why}.",
        key.escape_default()
    ))
}

/// Splits and checks a key: `container/object`, no empty, `.` or `..` parts (they would not survive URL
/// normalisation), no control characters, an object name of at most 1024 bytes.
pub(crate) fn split_key(key: &str) -> Result<Location> {
    let Some((container, object)) = key.split_once('/') else {
        return Err(bad_key(
            key,
            "it needs a container part and an object part ('container/object')",
        ));
    };
    if object.len() > MAX_OBJECT_NAME {
        return Err(bad_key(key, "the object name is longer than 1024 bytes"));
    }
    if key.chars().any(char::is_control) {
        return Err(bad_key(key, "control characters are not allowed"));
    }
    if key
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(bad_key(key, "empty, '.' or '..' parts are not allowed"));
    }
    Ok(Location {
        container: container.to_string(),
        object: object.to_string(),
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/` when `keep_slash`): the encoding
/// SigV4 prescribes, and a safe one for Swift paths.
pub(crate) fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes `%XX` escapes (for S3 listings asked with `encoding-type=url`).
pub(crate) fn uri_decode(s: &str) -> String {
    fn hex_val(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|v| v as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks an endpoint URL: parseable, `http`, with a host.
pub(crate) fn check_endpoint(field: &str, url: &str) -> Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        Error::validation(format!(
            "{field} '{}' is not a URL: {e}",
            url.escape_default()
        ))
    })?;
    match parsed.scheme() {
        "http" => {}
        "https" => {
            return Err(Error::validation(format!(
                "{field} '{url}' uses https, but this build has no TLS support in its HTTP client; \
                 use an http endpoint (e.g. behind a TLS-terminating proxy)"
            )))
        }
        other => {
            return Err(Error::validation(format!(
                "{field} '{url}' has scheme '{other}'; expected http"
            )))
        }
    }
    if parsed.host_str().is_none() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::validation(format!(
            "{field} must be http://host[:port][/path], without credentials"
        )));
    }
    Ok(parsed)
}

/// An HTTP client for a store: bounded connect and read (idle) times, no overall deadline (objects may be large).
pub(crate) fn http_client(
    backend: &'static str,
    connect_timeout: Duration,
    read_timeout: Duration,
) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .read_timeout(read_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::backend(backend, format!("cannot build the HTTP client: {e}"), false))
}

/// A request that got no answer: transient, naming the endpoint (never the credentials: they are not in URLs).
pub(crate) fn unreachable(backend: &'static str, endpoint: &str, e: reqwest::Error) -> Error {
    let what = if e.is_timeout() {
        "did not answer in time"
    } else if e.is_connect() {
        "is unreachable"
    } else {
        "failed mid-request"
    };
    Error::backend(
        backend,
        format!(
            "the object store at {endpoint} {what}: {}",
            error_chain(&e.without_url())
        ),
        true,
    )
}

/// An error and its sources on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

/// The error of an unexpected HTTP answer. `detail` is a short excerpt of the answer (never echoes credentials).
pub(crate) fn status_error(
    backend: &'static str,
    endpoint: &str,
    what: &str,
    status: reqwest::StatusCode,
    detail: &str,
) -> Error {
    let code = status.as_u16();
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    };
    match code {
        401 | 403 => Error::backend(
            backend,
            format!(
                "the object store at {endpoint} refused {what} (HTTP {code}{detail}); check the credentials"
            ),
            false,
        ),
        507 => Error::backend(
            backend,
            format!(
                "the object store at {endpoint} is out of space (HTTP 507 Insufficient Storage) during {what}; \
                 free space or add capacity"
            ),
            false,
        ),
        413 => Error::backend(
            backend,
            format!("the object store at {endpoint} refused {what} as too large (HTTP 413{detail})"),
            false,
        ),
        _ => Error::backend(
            backend,
            format!("the object store at {endpoint} answered {what} with HTTP {code}{detail}"),
            status.is_server_error() || code == 408 || code == 429,
        ),
    }
}

/// The first `max` characters of an answer body, on one line, HTML tags taken out.
pub(crate) fn excerpt(body: &str, max: usize) -> String {
    let mut text = String::with_capacity(body.len());
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' if body.trim_start().starts_with("<html")
                || body.trim_start().starts_with("<!") =>
            {
                in_tag = true;
                text.push(' ');
            }
            '>' if in_tag => in_tag = false,
            _ if in_tag => {}
            c => text.push(c),
        }
    }
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > max {
        format!("{}…", one.chars().take(max).collect::<String>())
    } else {
        one
    }
}

/// The input of a put: hands out pieces of at most a given size, hashing and counting what it hands out.
pub(crate) struct Input {
    stream: ByteStream,
    /// The stream returned its end (it is not polled again: streams need not be fused).
    ended: bool,
    pending: Bytes,
    hasher: Sha256,
    total: u64,
}

impl Input {
    pub(crate) fn new(stream: ByteStream) -> Input {
        Input {
            stream,
            ended: false,
            pending: Bytes::new(),
            hasher: Sha256::new(),
            total: 0,
        }
    }

    /// Pulls the next non-empty chunk into `pending` when it is empty; false at the end of the stream.
    async fn fill_pending(&mut self) -> Result<bool> {
        while self.pending.is_empty() {
            if self.ended {
                return Ok(false);
            }
            match self.stream.next().await {
                None => {
                    self.ended = true;
                    return Ok(false);
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(v)) => self.pending = Bytes::from(v),
            }
        }
        Ok(true)
    }

    /// Whether more bytes follow.
    pub(crate) async fn has_more(&mut self) -> Result<bool> {
        self.fill_pending().await
    }

    /// The next piece of at most `max` bytes (`max` > 0), or `None` at the end.
    pub(crate) async fn next_piece(&mut self, max: usize) -> Result<Option<Bytes>> {
        if !self.fill_pending().await? {
            return Ok(None);
        }
        let piece = if self.pending.len() > max {
            self.pending.split_to(max)
        } else {
            std::mem::take(&mut self.pending)
        };
        self.hasher.update(&piece);
        self.total += piece.len() as u64;
        Ok(Some(piece))
    }

    /// Reads up to `limit` bytes into one buffer (less only at the end of the stream).
    pub(crate) async fn read_up_to(&mut self, limit: usize) -> Result<Bytes> {
        let mut buf = BytesMut::new();
        while buf.len() < limit {
            match self.next_piece(limit - buf.len()).await? {
                Some(p) => {
                    if buf.is_empty() && p.len() == limit {
                        return Ok(p);
                    }
                    buf.extend_from_slice(&p)
                }
                None => break,
            }
        }
        Ok(buf.freeze())
    }

    /// Bytes handed out so far.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Hex SHA-256 of the bytes handed out so far.
    pub(crate) fn checksum(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

/// The body stream of a get: chunks as they arrive; at the end, the SHA-256 of what was read is checked
/// against `expected` (when the store has one), a mismatch being the stream's last item, an error.
pub(crate) fn verified_stream(
    backend: &'static str,
    endpoint: String,
    key: String,
    resp: reqwest::Response,
    expected: Option<String>,
) -> ByteStream {
    struct St {
        body: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
        hasher: Option<Sha256>,
        expected: Option<String>,
    }
    let st = St {
        body: resp.bytes_stream().boxed(),
        hasher: Some(Sha256::new()),
        expected: expected.map(|e| e.to_ascii_lowercase()),
    };
    futures::stream::unfold(st, move |mut st| {
        let endpoint = endpoint.clone();
        let key = key.clone();
        async move {
            let hasher = st.hasher.as_mut()?;
            match st.body.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    Some((Ok(chunk.to_vec()), st))
                }
                Some(Err(e)) => {
                    st.hasher = None;
                    Some((Err(unreachable(backend, &endpoint, e)), st))
                }
                None => {
                    let got = hex::encode(st.hasher.take()?.finalize());
                    match &st.expected {
                        Some(want) if *want != got => Some((
                            Err(Error::backend(
                                backend,
                                format!(
                                    "backup object '{key}' read from {endpoint} does not match its SHA-256 \
                                     (stored {want}, read {got})"
                                ),
                                false,
                            )),
                            st,
                        )),
                        _ => None,
                    }
                }
            }
        }
    })
    .boxed()
}

/// Serde helpers: durations as (fractional) seconds.
pub(crate) mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        if !(v.is_finite() && v >= 0.0) {
            return Err(serde::de::Error::custom(
                "a duration must be a non-negative number of seconds",
            ));
        }
        Ok(Duration::from_secs_f64(v))
    }
}

/// Runs `f` on each item with at most `n` at a time, keeping the input order.
pub(crate) async fn map_concurrent<T, U, F, Fut>(items: Vec<T>, n: usize, f: F) -> Result<Vec<U>>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<U>>,
{
    futures::stream::iter(items.into_iter().map(f))
        .buffered(n)
        .collect::<Vec<Result<U>>>()
        .await
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_container_and_object() {
        assert_eq!(
            split_key("backups/2024/full.xb").expect("ok"),
            Location {
                container: "backups".into(),
                object: "2024/full.xb".into()
            }
        );
        for bad in [
            "",
            "nocontainer",
            "/abs",
            "c/",
            "c//o",
            "c/./o",
            "c/../o",
            "c/o/..",
            "c/o\n",
        ] {
            assert_eq!(split_key(bad).expect_err(bad).fault().status, 400, "{bad}");
        }
        let long = format!("c/{}", "x".repeat(1025));
        assert!(split_key(&long).is_err());
    }

    #[test]
    fn answers_become_clear_errors() {
        let at = "http://127.0.0.1:8080";
        let e = status_error(
            "swift",
            at,
            "storing 'c/o'",
            reqwest::StatusCode::INSUFFICIENT_STORAGE,
            "",
        );
        assert!(e.to_string().contains("out of space (HTTP 507"), "{e}");
        assert!(!e.is_transient());
        let e = status_error(
            "s3",
            at,
            "listing",
            reqwest::StatusCode::FORBIDDEN,
            "AccessDenied: no",
        );
        assert!(e.to_string().contains("check the credentials"), "{e}");
        assert!(e.to_string().contains(at), "{e}");
        let e = status_error(
            "s3",
            at,
            "listing",
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
            "",
        );
        assert!(e.is_transient(), "{e}");
        assert_eq!(
            excerpt(
                "<html><h1>Unauthorized</h1><p>This server could not verify.</p></html>",
                200
            ),
            "Unauthorized This server could not verify."
        );
        assert_eq!(excerpt("a <b> c", 200), "a <b> c");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }

    #[test]
    fn uri_encoding_round_trips() {
        assert_eq!(uri_encode("a b/ü~*", true), "a%20b/%C3%BC~%2A");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(uri_decode("a%20b/%C3%BC~%2A"), "a b/ü~*");
        assert_eq!(uri_decode("100%"), "100%");
    }

    #[tokio::test]
    async fn input_cuts_pieces_and_hashes() {
        let chunks: Vec<Result<Vec<u8>>> = vec![Ok(vec![1; 5]), Ok(vec![]), Ok(vec![2; 7])];
        // Not fused: polling it after its end panics, which the input must never do.
        let unfused = futures::stream::unfold(chunks.into_iter(), |mut it| async move {
            it.next().map(|c| (c, it))
        });
        let mut input = Input::new(unfused.boxed());
        let a = input.read_up_to(4).await.expect("a");
        assert_eq!(&a[..], &[1; 4]);
        assert!(input.has_more().await.expect("more"));
        let b = input.read_up_to(100).await.expect("b");
        assert_eq!(b.len(), 8);
        assert!(!input.has_more().await.expect("end"));
        assert!(!input.has_more().await.expect("still the end"));
        assert!(input.next_piece(10).await.expect("end").is_none());
        assert_eq!(input.total(), 12);
        let mut all = vec![1u8; 5];
        all.extend([2u8; 7]);
        assert_eq!(input.checksum(), hex::encode(Sha256::digest(&all)));
    }
}
