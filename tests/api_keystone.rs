//! The Keystone v3 authenticator against a real Keystone (installed from PyPI into a cached venv), alone
//! (the Authenticator conformance suite) and behind the HTTP layer (tenant and admin checks).

mod api_support;

use std::sync::Arc;
use std::time::Duration;

use api_support::{serve_in_process, Keystone};
use serde_json::{json, Value};
use trove::http::HttpConfig;
use trove_backends::auth::{KeystoneAuth, KeystoneConfig};
use trove_core::api::ApiService;
use trove_core::memory::{MemoryBus, MemoryStore};
use trove_core::model::Secret;
use trove_core::ports::SystemClock;
use trove_core::testing::auth::{run_all, AuthCase};
use trove_core::CoreConfig;

struct Identity {
    http: reqwest::Client,
    url: String,
    admin_token: String,
    admin_project: String,
}

impl Identity {
    async fn password_token(&self, user: &str, password: &str, project: &str) -> (String, Value) {
        let body = json!({ "auth": {
            "identity": { "methods": ["password"], "password": { "user": {
                "name": user, "domain": { "name": "Default" }, "password": password } } },
            "scope": { "project": { "name": project, "domain": { "name": "Default" } } }
        }});
        let r = self
            .http
            .post(format!("{}/auth/tokens", self.url))
            .json(&body)
            .send()
            .await
            .expect("login");
        assert_eq!(r.status().as_u16(), 201, "login of {user} failed");
        let tok = r
            .headers()
            .get("x-subject-token")
            .expect("token header")
            .to_str()
            .expect("ascii")
            .to_string();
        (tok, r.json().await.expect("token body"))
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("X-Auth-Token", &self.admin_token)
            .json(&body)
            .send()
            .await
            .expect("keystone call");
        assert!(r.status().is_success(), "POST {path}: {}", r.status());
        r.json().await.expect("json")
    }

    async fn role_id(&self, name: &str) -> String {
        let r: Value = self
            .http
            .get(format!("{}/roles?name={name}", self.url))
            .header("X-Auth-Token", &self.admin_token)
            .send()
            .await
            .expect("roles")
            .json()
            .await
            .expect("json");
        r["roles"][0]["id"]
            .as_str()
            .expect("role exists")
            .to_string()
    }

    /// Creates a project and a member user in it; returns the project id.
    async fn project_with_member(&self, project: &str, user: &str, password: &str) -> String {
        let p = self
            .post(
                "/projects",
                json!({ "project": { "name": project, "domain_id": "default" } }),
            )
            .await;
        let pid = p["project"]["id"].as_str().expect("project id").to_string();
        let u = self
            .post(
                "/users",
                json!({ "user": { "name": user, "password": password, "domain_id": "default" } }),
            )
            .await;
        let uid = u["user"]["id"].as_str().expect("user id").to_string();
        let member = self.role_id("member").await;
        let r = self
            .http
            .put(format!(
                "{}/projects/{pid}/users/{uid}/roles/{member}",
                self.url
            ))
            .header("X-Auth-Token", &self.admin_token)
            .send()
            .await
            .expect("grant");
        assert!(r.status().is_success(), "role grant: {}", r.status());
        pid
    }

    async fn revoke(&self, token: &str) {
        let r = self
            .http
            .delete(format!("{}/auth/tokens", self.url))
            .header("X-Auth-Token", &self.admin_token)
            .header("X-Subject-Token", token)
            .send()
            .await
            .expect("revoke");
        assert_eq!(r.status().as_u16(), 204, "token revocation");
    }
}

async fn identity(k: &Keystone) -> Identity {
    let mut id = Identity {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client"),
        url: k.url.clone(),
        admin_token: String::new(),
        admin_project: String::new(),
    };
    let (tok, body) = id.password_token("admin", &k.admin_password, "admin").await;
    id.admin_token = tok;
    id.admin_project = body["token"]["project"]["id"]
        .as_str()
        .expect("admin project")
        .to_string();
    id
}

fn authenticator(k: &Keystone, ttl: Duration) -> Arc<KeystoneAuth> {
    Arc::new(
        KeystoneAuth::new(KeystoneConfig {
            auth_url: k.url.clone(),
            username: "admin".into(),
            password: Secret::new(k.admin_password.clone()),
            project_name: "admin".into(),
            cache_ttl: ttl,
            ..Default::default()
        })
        .expect("authenticator"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_authenticator_against_real_keystone() {
    let k = tokio::task::spawn_blocking(Keystone::start)
        .await
        .expect("keystone starts");
    let id = identity(&k).await;

    // --- the conformance suite, with revocation seen within the cache lifetime
    let alpha = id.project_with_member("alpha", "alice", "alice-pw").await;
    let (alice, _) = id.password_token("alice", "alice-pw", "alpha").await;
    let auth = authenticator(&k, Duration::from_secs(2));
    let ctx = auth.authenticate_for_test(&alice, &alpha).await;
    assert!(!ctx.is_admin(), "a member is not an admin");
    let revoke_token = alice.clone();
    let ident = &id;
    let handle = tokio::runtime::Handle::current();
    let revoke = move || {
        let t = revoke_token.clone();
        tokio::task::block_in_place(|| handle.block_on(ident.revoke(&t)));
    };
    run_all(
        auth.clone(),
        AuthCase {
            valid_token: &alice,
            tenant: &alpha,
            revoke: Some((&revoke, Duration::from_secs(2))),
        },
    )
    .await;

    // --- behind the HTTP layer: tenant must match the token's project, mgmt needs admin
    let beta = id.project_with_member("beta", "bob", "bob-pw").await;
    let (bob, _) = id.password_token("bob", "bob-pw", "beta").await;
    let api = Arc::new(ApiService::new(
        Arc::new(MemoryStore::new()),
        Arc::new(MemoryBus::new()),
        Arc::new(SystemClock),
        CoreConfig::default(),
    ));
    let auth = authenticator(&k, Duration::from_secs(30));
    let base = serve_in_process(api, auth, HttpConfig::default()).await;
    let http = reqwest::Client::new();
    let get = |path: String, token: Option<String>| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let mut r = http.get(format!("{base}{path}"));
            if let Some(t) = token {
                r = r.header("X-Auth-Token", t);
            }
            let resp = r.send().await.expect("request");
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    let (s, body) = get(format!("/v1.0/{beta}/instances"), Some(bob.clone())).await;
    assert!(
        s != 401 && s != 403,
        "bob reaches his own project: {s} {body}"
    );
    let (s, body) = get(format!("/v1.0/{alpha}/instances"), Some(bob.clone())).await;
    assert_eq!(s, 403, "bob may not use alpha's URL: {body}");
    assert_eq!(body["forbidden"]["code"], 403, "fault shape: {body}");
    let (s, body) = get(format!("/v1.0/{beta}/instances"), None).await;
    assert_eq!(s, 401, "no token: {body}");
    assert_eq!(body["unauthorized"]["code"], 401);
    let (s, _) = get(format!("/v1.0/{beta}/instances"), Some("garbage".into())).await;
    assert_eq!(s, 401, "a garbage token");
    let (s, body) = get(format!("/v1.0/{beta}/mgmt/instances"), Some(bob.clone())).await;
    assert_eq!(s, 403, "a member may not use mgmt routes: {body}");
    let (s, body) = get(
        format!("/v1.0/{}/mgmt/instances", id.admin_project),
        Some(id.admin_token.clone()),
    )
    .await;
    assert!(
        s != 401 && s != 403,
        "the admin reaches mgmt routes: {s} {body}"
    );
}

/// Small extension so the test reads well.
trait AuthExt {
    async fn authenticate_for_test(
        &self,
        token: &str,
        tenant: &str,
    ) -> trove_core::ports::RequestContext;
}

impl AuthExt for KeystoneAuth {
    async fn authenticate_for_test(
        &self,
        token: &str,
        tenant: &str,
    ) -> trove_core::ports::RequestContext {
        use trove_core::ports::Authenticator;
        self.authenticate(Some(token), tenant)
            .await
            .expect("a fresh member token is accepted")
    }
}
