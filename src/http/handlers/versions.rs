//! The version documents (`GET /`, `GET /v1.0`) and `/openapi.json`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::Value;

use crate::http::middleware::base_url;
use crate::http::{views, AppState};

/// `GET /`.
pub(super) async fn list(State(s): State<AppState>, headers: HeaderMap) -> Json<Value> {
    Json(views::versions::list(&base_url(&s, &headers)))
}

/// `GET /v1.0` and `/v1.0/`.
pub(super) async fn show(State(s): State<AppState>, headers: HeaderMap) -> Json<Value> {
    Json(views::versions::show(&base_url(&s, &headers)))
}

/// `GET /openapi.json`.
pub(super) async fn openapi(State(s): State<AppState>) -> Json<Value> {
    Json((*s.openapi).clone())
}
