use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Who is calling: the result of authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestContext {
    /// Project (tenant) id.
    pub tenant_id: String,
    /// User id.
    pub user_id: String,
    /// Role names.
    pub roles: Vec<String>,
}

impl RequestContext {
    /// Whether the caller has the admin role (upstream `context_is_admin`).
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }
    /// A context for `tenant` with no roles (embedded use and tests).
    pub fn tenant(tenant: impl Into<String>) -> RequestContext {
        let tenant_id = tenant.into();
        RequestContext {
            user_id: tenant_id.clone(),
            tenant_id,
            roles: vec![],
        }
    }
    /// A context for `tenant` with the admin role.
    pub fn admin(tenant: impl Into<String>) -> RequestContext {
        let mut c = RequestContext::tenant(tenant);
        c.roles.push("admin".into());
        c
    }
}

/// Turns a request's token into a [`RequestContext`].
///
/// # Contract
/// - An unknown, expired or missing token (where one is required) is [`crate::Error::Unauthorized`] (401).
/// - When the URL names a tenant that is not the token's project, the result is [`crate::Error::Forbidden`] (403).
/// - Implementations may cache, but a revoked token must stop working within the cache lifetime.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates `token` for a request whose URL names `url_tenant`.
    async fn authenticate(&self, token: Option<&str>, url_tenant: &str) -> Result<RequestContext>;
}
