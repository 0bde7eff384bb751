//! The version documents (`GET /`, `GET /v1.0`) and `/openapi.json`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::Value;

use crate::http::{views, AppState};

/// The base URL of links: the configured public endpoint, else the request's `Host` (when it looks like one).
fn base_of(s: &AppState, headers: &HeaderMap) -> String {
    if let Some(b) = &s.config.public_endpoint {
        return b.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// `GET /`.
pub(super) async fn list(State(s): State<AppState>, headers: HeaderMap) -> Json<Value> {
    Json(views::versions::list(&base_of(&s, &headers)))
}

/// `GET /v1.0` and `/v1.0/`.
pub(super) async fn show(State(s): State<AppState>, headers: HeaderMap) -> Json<Value> {
    Json(views::versions::show(&base_of(&s, &headers)))
}

/// `GET /openapi.json`.
pub(super) async fn openapi(State(s): State<AppState>) -> Json<Value> {
    Json((*s.openapi).clone())
}
