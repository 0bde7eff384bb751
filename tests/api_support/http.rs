//! HTTP: the API router served in-process, an async client of an API server, and blocking calls for sync tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::Value;
use trove::http::{router, HttpConfig};
use trove_core::memory::StaticTokens;
use trove_core::ports::{Authenticator, RequestContext};

/// Serves the API router in-process on an ephemeral port; returns `http://127.0.0.1:PORT`.
pub async fn serve_in_process(
    api: Arc<trove_core::api::ApiService>,
    auth: Arc<dyn Authenticator>,
    config: HttpConfig,
) -> String {
    let app = router(api, auth, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// Three tokens: `tok-a` (project alpha), `tok-b` (project beta) and `tok-ops` (admin of project ops).
pub fn alpha_beta_ops_tokens() -> StaticTokens {
    StaticTokens::new()
        .with("tok-a", RequestContext::tenant("alpha"))
        .with("tok-b", RequestContext::tenant("beta"))
        .with("tok-ops", RequestContext::admin("ops"))
}

/// A body as the tests look at it: JSON when it parses, the text as a string when it does not, null when empty.
fn parse_body(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
    }
}

/// An async client of an API server: requests carry an `X-Auth-Token` and ask for JSON.
#[derive(Clone, Debug)]
pub struct HttpClient {
    /// Where relative paths start (`http://HOST:PORT`, or deeper).
    pub base: String,
    /// The token of [`HttpClient::send`].
    pub token: String,
    http: reqwest::Client,
}

impl HttpClient {
    /// A client of `base` sending `token`.
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> HttpClient {
        HttpClient {
            base: base.into(),
            token: token.into(),
            http: reqwest::Client::new(),
        }
    }

    /// `method` on `path` (under `base`, or a whole URL) with `token` (none when empty) and `body` as it is
    /// (sent as JSON): the status, the body and the headers of the answer.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&str>,
    ) -> (u16, Value, HeaderMap) {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self
            .http
            .request(m, &url)
            .header("Accept", "application/json")
            .timeout(Duration::from_secs(120));
        if !token.is_empty() {
            r = r.header("X-Auth-Token", token);
        }
        if let Some(b) = body {
            r = r
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = r
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        (status, parse_body(&text), headers)
    }

    /// `method` on `path` with the client's token and a JSON `body`: the status and body of the answer.
    pub async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(Value::to_string);
        let (s, b, _) = self
            .request(method, path, &self.token, body.as_deref())
            .await;
        (s, b)
    }

    /// A GET with `token`: the status and body of the answer.
    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let (s, b, _) = self.request("GET", path, token, None).await;
        (s, b)
    }

    /// A GET that must answer 200; its body.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (s, b) = self.send("GET", path, None).await;
        assert_eq!(s, 200, "GET {path}: {b}");
        b
    }

    /// Polls the instance at `path` until its status is one of `want`; panics when it turns ERROR or after
    /// `within`. Answers the instance view.
    pub async fn wait_instance(&self, path: &str, want: &[&str], within: Duration) -> Value {
        self.wait_instance_where(path, &format!("{want:?}"), within, |i| {
            want.contains(&i["status"].as_str().unwrap_or_default())
        })
        .await
    }

    /// Polls the instance at `path` until `pred` holds for its view (`what` names the wait); panics when it turns
    /// ERROR or after `within`. Answers the instance view.
    pub async fn wait_instance_where(
        &self,
        path: &str,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let (s, b) = self.send("GET", path, None).await;
            let inst = &b["instance"];
            if s == 200 && pred(inst) {
                return inst.clone();
            }
            assert!(
                inst["status"] != "ERROR",
                "{path} turned ERROR waiting for {what}: {b}"
            );
            assert!(
                start.elapsed() < within,
                "{path} not {what} within {within:?}: {s} {b}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `method` on `url` with token `t` and a raw JSON `body`, from sync code: the status and body of the answer.
pub fn blocking(method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (s, b, _) = HttpClient::new("", "t")
            .request(method, url, "t", body)
            .await;
        (s, b)
    })
}

/// Like [`blocking`], but a request that gets no answer at all (the server died) is `None` instead of a panic.
pub fn try_blocking(method: &str, url: &str, body: Option<&str>) -> Option<(u16, Value)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = reqwest::Client::new()
            .request(m, url)
            .header("Accept", "application/json")
            .header("X-Auth-Token", "t")
            .timeout(Duration::from_secs(120));
        if let Some(b) = body {
            r = r
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = r.send().await.ok()?;
        let status = resp.status().as_u16();
        let text = resp.text().await.ok()?;
        Some((status, parse_body(&text)))
    })
}

/// A blocking JSON GET (status, body) for sync tests.
pub fn get_json(url: &str) -> (u16, Value) {
    blocking("GET", url, None)
}

/// A blocking POST of a JSON `body` (status, body) for sync tests.
pub fn post_json(url: &str, body: &str) -> (u16, Value) {
    blocking("POST", url, Some(body))
}

/// Polls instance `id` of `tenant` until `pred` holds for the status code and the instance view (`what` names
/// the wait); panics when it turns ERROR or after `within`. For sync tests.
pub fn wait_instance_blocking(
    base: &str,
    tenant: &str,
    id: &str,
    what: &str,
    within: Duration,
    pred: impl Fn(u16, &Value) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        let (s, body) = get_json(&format!("{base}/v1.0/{tenant}/instances/{id}"));
        if pred(s, &body["instance"]) {
            return;
        }
        assert!(
            body["instance"]["status"] != "ERROR",
            "instance {id} went to ERROR waiting for {what}: {body}"
        );
        assert!(
            Instant::now() < deadline,
            "instance {id} not {what} within {within:?}: {s} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls an instance until its status is `want` (`GONE`: until it answers 404); panics on ERROR or after
/// `within`. For sync tests.
pub fn wait_status(base: &str, tenant: &str, id: &str, want: &str, within: Duration) {
    wait_instance_blocking(base, tenant, id, want, within, |s, i| {
        (want == "GONE" && s == 404) || i["status"] == want
    })
}
