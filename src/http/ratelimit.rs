//! Per-tenant request rate limits as upstream (`trove/common/limits.py`): per verb, per minute; a request over
//! its limit is answered 413 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::Method;
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Requests allowed per minute and tenant (upstream `http_*_rate`, all 200 by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimits {
    /// GET requests.
    pub get: u32,
    /// POST requests.
    pub post: u32,
    /// PUT and PATCH requests.
    pub put: u32,
    /// DELETE requests.
    pub delete: u32,
    /// POST requests under `/mgmt`.
    pub mgmt_post: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            get: 200,
            post: 200,
            put: 200,
            delete: 200,
            mgmt_post: 200,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Class {
    Post,
    Put,
    Delete,
    Get,
    MgmtPost,
}

impl Class {
    const ALL: [Class; 5] = [
        Class::Post,
        Class::Put,
        Class::Delete,
        Class::Get,
        Class::MgmtPost,
    ];

    fn verb(self) -> &'static str {
        match self {
            Class::Post | Class::MgmtPost => "POST",
            Class::Put => "PUT",
            Class::Delete => "DELETE",
            Class::Get => "GET",
        }
    }
}

/// A token bucket that refills `capacity` tokens per minute.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The limiter: one bucket per tenant and verb class.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<(String, Class), Bucket>>,
}

const MINUTE: f64 = 60.0;

impl RateLimiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn capacity(&self, c: Class) -> f64 {
        f64::from(match c {
            Class::Post => self.limits.post,
            Class::Put => self.limits.put,
            Class::Delete => self.limits.delete,
            Class::Get => self.limits.get,
            Class::MgmtPost => self.limits.mgmt_post,
        })
    }

    fn classes(method: &Method, tenant_path: &str) -> Vec<Class> {
        let mut v = Vec::with_capacity(2);
        match *method {
            Method::GET | Method::HEAD => v.push(Class::Get),
            Method::POST => {
                v.push(Class::Post);
                if tenant_path.starts_with("/mgmt") {
                    v.push(Class::MgmtPost);
                }
            }
            Method::PUT | Method::PATCH => v.push(Class::Put),
            Method::DELETE => v.push(Class::Delete),
            _ => {}
        }
        v
    }

    fn refill(&self, b: &mut Bucket, c: Class, now: Instant) {
        let cap = self.capacity(c);
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * cap / MINUTE).min(cap);
        b.last = now;
    }

    /// Takes one token for the request; `Err(seconds)` when the tenant must wait before retrying.
    /// `tenant_path` is the path after `/v1.0/{tenant}`.
    pub fn check(&self, tenant: &str, method: &Method, tenant_path: &str) -> Result<(), u64> {
        let now = Instant::now();
        let classes = Self::classes(method, tenant_path);
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait: f64 = 0.0;
        for c in &classes {
            let cap = self.capacity(*c);
            let b = map.entry((tenant.to_string(), *c)).or_insert(Bucket {
                tokens: cap,
                last: now,
            });
            self.refill(b, *c, now);
            if b.tokens < 1.0 {
                let per_sec = cap / MINUTE;
                let secs = if per_sec > 0.0 {
                    (1.0 - b.tokens) / per_sec
                } else {
                    MINUTE
                };
                wait = wait.max(secs);
            }
        }
        if wait > 0.0 {
            return Err(wait.ceil().max(1.0) as u64);
        }
        for c in &classes {
            if let Some(b) = map.get_mut(&(tenant.to_string(), *c)) {
                b.tokens -= 1.0;
            }
        }
        Ok(())
    }

    /// The rate entries of `GET /limits` for a tenant.
    pub fn limits_view(&self, tenant: &str) -> Vec<Value> {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        Class::ALL
            .iter()
            .map(|c| {
                let cap = self.capacity(*c);
                let remaining = match map.get_mut(&(tenant.to_string(), *c)) {
                    Some(b) => {
                        self.refill(b, *c, now);
                        b.tokens.floor().max(0.0)
                    }
                    None => cap,
                };
                let wait = if remaining >= 1.0 || cap == 0.0 {
                    0.0
                } else {
                    MINUTE / cap
                };
                let next = Utc::now() + Duration::from_secs_f64(wait);
                let (uri, regex) = if *c == Class::MgmtPost {
                    ("*/mgmt", "^/mgmt")
                } else {
                    ("*", ".*")
                };
                json!({
                    "verb": c.verb(),
                    "uri": uri,
                    "regex": regex,
                    "value": cap as u64,
                    "remaining": remaining as u64,
                    "unit": "MINUTE",
                    "nextAvailable": next.to_rfc3339_opts(SecondsFormat::Secs, true),
                })
            })
            .collect()
    }
}

/// The `GET /limits` rate entries when no limiter runs: the configured defaults, all remaining.
pub fn unlimited_view() -> Vec<Value> {
    RateLimiter::new(RateLimits::default()).limits_view("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_limit_asks_to_retry_later() {
        let l = RateLimiter::new(RateLimits {
            get: 2,
            ..Default::default()
        });
        assert!(l.check("t", &Method::GET, "/instances").is_ok());
        assert!(l.check("t", &Method::GET, "/instances").is_ok());
        let wait = l.check("t", &Method::GET, "/instances").unwrap_err();
        assert!((1..=30).contains(&wait), "{wait}");
        // other tenants and verbs are not affected
        assert!(l.check("u", &Method::GET, "/instances").is_ok());
        assert!(l.check("t", &Method::POST, "/instances").is_ok());
    }

    #[test]
    fn mgmt_posts_count_twice() {
        let l = RateLimiter::new(RateLimits {
            mgmt_post: 1,
            ..Default::default()
        });
        assert!(l
            .check("t", &Method::POST, "/mgmt/instances/x/action")
            .is_ok());
        assert!(l
            .check("t", &Method::POST, "/mgmt/instances/x/action")
            .is_err());
        assert!(l.check("t", &Method::POST, "/instances").is_ok());
        let view = l.limits_view("t");
        assert_eq!(view.len(), 5);
        assert_eq!(view[4]["remaining"], 0);
    }
}
