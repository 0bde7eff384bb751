//! The Trove v1.0 REST API over axum: a thin layer that decodes and checks request bodies, calls
//! [`ApiService`], and renders the upstream views and faults.
//!
//! ```no_run
//! # async fn run(api: std::sync::Arc<trove_core::api::ApiService>) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use trove::http::{router, HttpConfig};
//! use trove_core::memory::NoAuth;
//!
//! let app = router(api, Arc::new(NoAuth::new()), HttpConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8779").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

mod bodies;
mod cluster_bodies;
mod extract;
mod fault;
mod handlers;
mod middleware;
pub mod openapi;
pub mod ratelimit;
mod rendered;
mod views;

use std::sync::Arc;

use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use trove_core::api::ApiService;
use trove_core::ports::Authenticator;

pub use bodies::{InstanceAction, MgmtAction as MgmtActionBody};
pub use fault::{fault_response, ApiError};
pub use ratelimit::{RateLimiter, RateLimits};

/// Settings of the HTTP layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Largest accepted request body in bytes; larger bodies are answered 413 (upstream's WSGI default is
    /// 114688).
    pub max_body_bytes: usize,
    /// Per-tenant rate limits; `None` turns rate limiting off (the embedded default).
    pub rate_limits: Option<RateLimits>,
    /// Base URL used in links (upstream `public_endpoint`); the request's `Host` when unset.
    pub public_endpoint: Option<String>,
    /// Largest accepted `limit` of a list.
    pub max_page_size: usize,
    /// The API is served over HTTPS: links built from the request's `Host` start with `https://` (without a
    /// `public_endpoint`).
    pub https: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 114_688,
            rate_limits: None,
            public_endpoint: None,
            max_page_size: 10_000,
            https: false,
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The core service.
    pub api: Arc<ApiService>,
    /// Who is calling.
    pub auth: Arc<dyn Authenticator>,
    /// Settings.
    pub config: Arc<HttpConfig>,
    /// Rate limiter, when enabled.
    pub limiter: Option<Arc<RateLimiter>>,
    /// The OpenAPI document (built once from the route table).
    pub openapi: Arc<Value>,
    /// Rendered bodies of the catalog reads, reused while their data is unchanged.
    pub(crate) rendered: Arc<rendered::RenderedBodies>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Builds the complete API router: version documents, `/openapi.json` and every `/v1.0/{tenant_id}/...` route.
pub fn router(api: Arc<ApiService>, auth: Arc<dyn Authenticator>, config: HttpConfig) -> Router {
    let routes = handlers::routes();
    let openapi = Arc::new(openapi::document(&routes.docs));
    let state = AppState {
        api,
        auth,
        limiter: config.rate_limits.map(|l| Arc::new(RateLimiter::new(l))),
        config: Arc::new(config),
        openapi,
        rendered: Arc::default(),
    };
    routes
        .router
        .fallback(fault::not_found_fallback)
        .method_not_allowed_fallback(fault::method_not_allowed_fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::authenticate,
        ))
        .with_state(state)
}

/// The OpenAPI 3 document of the API, generated from the route table.
pub fn openapi_document() -> Value {
    openapi::document(&handlers::routes().docs)
}
