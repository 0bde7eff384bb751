//! Keystone v3 token validation (what keystonemiddleware's `auth_token` does for upstream Trove).
//!
//! The service logs in with a password (scoped to its project) to get a service token, then validates each
//! user token with `GET /v3/auth/tokens` (`X-Auth-Token`: service token, `X-Subject-Token`: the user's).
//! Validated tokens are cached for [`KeystoneConfig::cache_ttl`] (never past their expiry), so a revoked token
//! stops working within that time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use trove_core::error::{Error, Result};
use trove_core::model::Secret;
use trove_core::ports::{Authenticator, RequestContext};

/// Settings of the Keystone authenticator.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KeystoneConfig {
    /// Identity endpoint, e.g. `http://127.0.0.1:5000/v3` (`/v3` is added when missing).
    pub auth_url: String,
    /// Service user name.
    pub username: String,
    /// Service user password.
    pub password: Secret,
    /// Service project name.
    pub project_name: String,
    /// Domain of the service user.
    pub user_domain_name: String,
    /// Domain of the service project.
    pub project_domain_name: String,
    /// How long a validated token is trusted without asking Keystone again.
    #[serde(with = "secs")]
    pub cache_ttl: Duration,
    /// Timeout of each request to Keystone.
    #[serde(with = "secs")]
    pub timeout: Duration,
}

impl Default for KeystoneConfig {
    fn default() -> Self {
        KeystoneConfig {
            auth_url: "http://127.0.0.1:5000/v3".into(),
            username: "trove".into(),
            password: Secret::default(),
            project_name: "service".into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
            cache_ttl: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for KeystoneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneConfig")
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("project_name", &self.project_name)
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

mod secs {
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

struct Cached {
    ctx: RequestContext,
    until: Instant,
}

/// Validates tokens against Keystone v3.
pub struct KeystoneAuth {
    config: KeystoneConfig,
    base: String,
    client: reqwest::Client,
    service_token: tokio::sync::Mutex<Option<(Secret, Instant)>>,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for KeystoneAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneAuth")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn unreachable_keystone(e: impl std::fmt::Display) -> Error {
    Error::backend(
        "keystone",
        format!("identity service unreachable: {e}"),
        true,
    )
}

/// Seconds from now until `expires_at` (an ISO 8601 time), or `None` when it cannot be read.
fn remaining(expires_at: Option<&str>) -> Option<Duration> {
    let t = DateTime::parse_from_rfc3339(expires_at?)
        .ok()?
        .with_timezone(&Utc);
    (t - Utc::now()).to_std().ok()
}

impl KeystoneAuth {
    /// An authenticator for `config` (no request is made until the first token arrives).
    pub fn new(config: KeystoneConfig) -> Result<KeystoneAuth> {
        let trimmed = config.auth_url.trim_end_matches('/');
        let base = if trimmed.ends_with("/v3") {
            trimmed.to_string()
        } else {
            format!("{trimmed}/v3")
        };
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| {
                Error::backend(
                    "keystone",
                    format!("cannot build the HTTP client: {e}"),
                    false,
                )
            })?;
        Ok(KeystoneAuth {
            config,
            base,
            client,
            service_token: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// A service token, logging in when there is none or it is about to expire.
    async fn service_token(&self, refresh: bool) -> Result<Secret> {
        let mut guard = self.service_token.lock().await;
        if let Some((tok, until)) = guard.as_ref() {
            if !refresh && Instant::now() < *until {
                return Ok(tok.clone());
            }
        }
        let body = json!({ "auth": {
            "identity": { "methods": ["password"], "password": { "user": {
                "name": self.config.username,
                "domain": { "name": self.config.user_domain_name },
                "password": self.config.password.expose(),
            }}},
            "scope": { "project": {
                "name": self.config.project_name,
                "domain": { "name": self.config.project_domain_name },
            }},
        }});
        let resp = self
            .client
            .post(format!("{}/auth/tokens?nocatalog", self.base))
            .json(&body)
            .send()
            .await
            .map_err(unreachable_keystone)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::backend(
                "keystone",
                format!("the service user could not log in (HTTP {status}); check the keystone settings"),
                status.is_server_error(),
            ));
        }
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(Secret::new)
            .ok_or_else(|| {
                Error::backend(
                    "keystone",
                    "the login answer carries no X-Subject-Token",
                    false,
                )
            })?;
        let v: Value = resp.json().await.map_err(unreachable_keystone)?;
        let life = remaining(v.pointer("/token/expires_at").and_then(Value::as_str))
            .unwrap_or(Duration::from_secs(300));
        // Renew a minute early (or halfway for short-lived tokens).
        let margin = Duration::from_secs(60).min(life / 2);
        *guard = Some((token.clone(), Instant::now() + life - margin));
        Ok(token)
    }

    /// Asks Keystone about `token`: `Ok(None)` when it is not a valid token.
    async fn validate(&self, token: &str) -> Result<Option<(RequestContext, Option<Duration>)>> {
        let mut refreshed = false;
        loop {
            let service = self.service_token(refreshed).await?;
            let request = || {
                self.client
                    .get(format!("{}/auth/tokens?nocatalog", self.base))
                    .header("X-Auth-Token", service.expose())
                    .header("X-Subject-Token", token)
                    .send()
            };
            // A pooled connection the server closed meanwhile fails at once: retry that (idempotent) GET once.
            let resp = match request().await {
                Ok(r) => r,
                Err(e) if e.is_request() || e.is_connect() => {
                    request().await.map_err(unreachable_keystone)?
                }
                Err(e) => return Err(unreachable_keystone(e)),
            };
            let status = resp.status().as_u16();
            match status {
                200 => {
                    let v: Value = resp.json().await.map_err(unreachable_keystone)?;
                    let t = v.get("token").cloned().unwrap_or(Value::Null);
                    let life = remaining(t.get("expires_at").and_then(Value::as_str));
                    if t.get("expires_at").is_some() && life.is_none() {
                        return Ok(None); // expired
                    }
                    let Some(project) = t.pointer("/project/id").and_then(Value::as_str) else {
                        // An unscoped or domain-scoped token names no project: it cannot use a tenant URL.
                        return Ok(None);
                    };
                    let user = t
                        .pointer("/user/id")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let roles = t
                        .get("roles")
                        .and_then(Value::as_array)
                        .map(|rs| {
                            rs.iter()
                                .filter_map(|r| r.get("name").and_then(Value::as_str))
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default();
                    let ctx = RequestContext {
                        tenant_id: project.into(),
                        user_id: user.into(),
                        roles,
                    };
                    return Ok(Some((ctx, life)));
                }
                // 404: not a valid token; 400: malformed token.
                404 | 400 => return Ok(None),
                401 | 403 if !refreshed => {
                    // The service token expired or was revoked: log in again once.
                    refreshed = true;
                }
                other => {
                    return Err(Error::backend(
                        "keystone",
                        format!("token validation answered HTTP {other}"),
                        other >= 500 || other == 401 || other == 403,
                    ))
                }
            }
        }
    }

    fn cached(&self, token: &str) -> Option<RequestContext> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        cache.retain(|_, c| c.until > now);
        cache.get(token).map(|c| c.ctx.clone())
    }
}

#[async_trait]
impl Authenticator for KeystoneAuth {
    async fn authenticate(&self, token: Option<&str>, url_tenant: &str) -> Result<RequestContext> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Unauthorized {
                message: "Authentication required: no token given.".into(),
            })?;
        let ctx = match self.cached(token) {
            Some(ctx) => ctx,
            None => {
                let (ctx, life) =
                    self.validate(token)
                        .await?
                        .ok_or_else(|| Error::Unauthorized {
                            message: "The token is not valid.".into(),
                        })?;
                let ttl = life.map_or(self.config.cache_ttl, |l| l.min(self.config.cache_ttl));
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.insert(
                    token.to_string(),
                    Cached {
                        ctx: ctx.clone(),
                        until: Instant::now() + ttl,
                    },
                );
                ctx
            }
        };
        if ctx.tenant_id != url_tenant {
            return Err(Error::Forbidden {
                message: format!(
                    "User with tenant id {} cannot access this resource (tenant {}).",
                    ctx.tenant_id,
                    url_tenant.escape_default()
                ),
            });
        }
        Ok(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_debug() {
        let a = KeystoneAuth::new(KeystoneConfig {
            auth_url: "http://k:5000/".into(),
            password: Secret::new("hunter2"),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a.base, "http://k:5000/v3");
        assert!(!format!("{a:?}").contains("hunter2"));
        let b = KeystoneAuth::new(KeystoneConfig {
            auth_url: "http://k/identity/v3/".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(b.base, "http://k/identity/v3");
        assert!(remaining(Some("2000-01-01T00:00:00.000000Z")).is_none());
        assert!(remaining(Some("2999-01-01T00:00:00.000000Z")).is_some());
    }

    #[tokio::test]
    async fn unreachable_keystone_is_a_503_and_no_token_a_401() {
        let a = KeystoneAuth::new(KeystoneConfig {
            auth_url: "http://127.0.0.1:9".into(),
            timeout: Duration::from_secs(2),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            a.authenticate(None, "p").await.unwrap_err().fault().status,
            401
        );
        assert_eq!(
            a.authenticate(Some("x"), "p")
                .await
                .unwrap_err()
                .fault()
                .status,
            503
        );
    }
}
