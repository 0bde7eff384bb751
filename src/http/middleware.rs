//! Request pipeline: body-size cap, authentication, the tenant check and rate limiting. What a caller may do
//! (admin-only and mgmt operations included) is the core's policy decision (`trove_core::policy`).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use trove_core::error::Error;

use super::extract::Caller;
use super::fault::ApiError;
use super::AppState;

/// Splits `/v1.0/{tenant}/rest` into `(tenant, "/rest")`.
fn split_tenant(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1.0/")?;
    match rest.find('/') {
        Some(i) => Some((&rest[..i], &rest[i..])),
        None if !rest.is_empty() => Some((rest, "")),
        None => None,
    }
}

/// The base URL links are built from: the configured public endpoint, else the request's Host (when it looks
/// like one) with the scheme the API is served with.
pub(super) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(b) = &state.config.public_endpoint {
        return b.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
        })
        .unwrap_or("localhost");
    let scheme = if state.config.https { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// Authenticates requests under `/v1.0/{tenant}/...`; others (version documents, `/openapi.json`) pass through.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    // Reject oversized bodies before reading them.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.config.max_body_bytes as u64) {
        return ApiError(Error::OverLimit {
            message: format!(
                "The request body is larger than the limit of {} bytes.",
                state.config.max_body_bytes
            ),
            retry_after: None,
        })
        .into_response();
    }

    let path = req.uri().path().to_string();
    let Some((tenant, tenant_path)) = split_tenant(&path) else {
        return next.run(req).await;
    };
    let token = req
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ctx = match state.auth.authenticate(token.as_deref(), tenant).await {
        Ok(ctx) => ctx,
        Err(e) => return ApiError(e).into_response(),
    };
    if ctx.tenant_id != tenant {
        // Whatever the authenticator does, a token never reaches another project's URL.
        return ApiError(Error::Forbidden {
            message: format!(
                "User with tenant id {} cannot access this resource.",
                ctx.tenant_id
            ),
        })
        .into_response();
    }
    let method = req.method().clone();
    if let Some(limiter) = &state.limiter {
        if let Err(secs) = limiter.check(tenant, &method, tenant_path) {
            return ApiError(Error::OverLimit {
                message: "This request was rate-limited.".into(),
                retry_after: Some(secs),
            })
            .into_response();
        }
    }
    let caller = Caller {
        tenant: tenant.to_string(),
        base: base_url(&state, req.headers()),
        path_and_query: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        ctx,
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_split() {
        assert_eq!(
            split_tenant("/v1.0/abc/instances"),
            Some(("abc", "/instances"))
        );
        assert_eq!(split_tenant("/v1.0/abc"), Some(("abc", "")));
        assert_eq!(split_tenant("/v1.0/"), None);
        assert_eq!(split_tenant("/"), None);
    }
}
