//! Authenticators that need no identity service.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::ports::{Authenticator, RequestContext};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accepts any token, or none: the caller is the tenant named in the URL.
///
/// For embedded use and single-user deployments only. Roles are empty, or `admin` when built with
/// [`NoAuth::admin`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAuth {
    admin: bool,
}

impl NoAuth {
    /// Every caller is a plain member of the URL's tenant.
    pub fn new() -> NoAuth {
        NoAuth { admin: false }
    }
    /// Every caller is an admin of the URL's tenant.
    pub fn admin() -> NoAuth {
        NoAuth { admin: true }
    }
}

#[async_trait]
impl Authenticator for NoAuth {
    async fn authenticate(&self, _token: Option<&str>, url_tenant: &str) -> Result<RequestContext> {
        if url_tenant.is_empty() {
            return Err(Error::Unauthorized {
                message: "The request names no tenant.".into(),
            });
        }
        Ok(if self.admin {
            RequestContext::admin(url_tenant)
        } else {
            RequestContext::tenant(url_tenant)
        })
    }
}

/// A fixed map from token to caller; tokens can be added and revoked at run time.
///
/// A missing or unknown token is a 401; a token used for another tenant's URL is a 403.
#[derive(Default)]
pub struct StaticTokens {
    tokens: Mutex<HashMap<String, RequestContext>>,
}

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are credentials: show only how many there are.
        f.debug_struct("StaticTokens")
            .field("tokens", &lock(&self.tokens).len())
            .finish()
    }
}

impl StaticTokens {
    /// No tokens.
    pub fn new() -> StaticTokens {
        StaticTokens::default()
    }

    /// Adds (or replaces) a token; builder form.
    pub fn with(self, token: impl Into<String>, ctx: RequestContext) -> StaticTokens {
        self.insert(token, ctx);
        self
    }

    /// Adds (or replaces) a token.
    pub fn insert(&self, token: impl Into<String>, ctx: RequestContext) {
        lock(&self.tokens).insert(token.into(), ctx);
    }

    /// Revokes a token; it stops working at once.
    pub fn revoke(&self, token: &str) {
        lock(&self.tokens).remove(token);
    }
}

#[async_trait]
impl Authenticator for StaticTokens {
    async fn authenticate(&self, token: Option<&str>, url_tenant: &str) -> Result<RequestContext> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Unauthorized {
                message: "Authentication required: no token given.".into(),
            })?;
        let ctx = lock(&self.tokens)
            .get(token)
            .cloned()
            .ok_or_else(|| Error::Unauthorized {
                message: "The token is not valid.".into(),
            })?;
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

    #[tokio::test]
    async fn static_tokens() {
        let a = StaticTokens::new().with("t1", RequestContext::tenant("p1"));
        assert_eq!(
            a.authenticate(Some("t1"), "p1").await.unwrap().tenant_id,
            "p1"
        );
        assert_eq!(
            a.authenticate(Some("t1"), "p2")
                .await
                .unwrap_err()
                .fault()
                .status,
            403
        );
        assert_eq!(
            a.authenticate(None, "p1").await.unwrap_err().fault().status,
            401
        );
        a.revoke("t1");
        assert_eq!(
            a.authenticate(Some("t1"), "p1")
                .await
                .unwrap_err()
                .fault()
                .status,
            401
        );
        assert!(!format!("{a:?}").contains("t1"));
    }

    #[tokio::test]
    async fn no_auth() {
        let c = NoAuth::new().authenticate(None, "p").await.unwrap();
        assert_eq!(c.tenant_id, "p");
        assert!(!c.is_admin());
        assert!(NoAuth::admin()
            .authenticate(Some("x"), "p")
            .await
            .unwrap()
            .is_admin());
    }
}
