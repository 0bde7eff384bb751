//! `GET` and `POST /v1.0/{tenant}/instances/{id}/ssl` (upstream API 1.3): decode, call
//! [`ApiService::ssl_show`](trove_core::api::ApiService::ssl_show) /
//! [`ApiService::ssl_action`](trove_core::api::ApiService::ssl_action), render `{"ssl": ...}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use trove_core::error::Error;
use trove_core::model::SslActionBody;

use super::extract::{decode_value, uuid_or_404, Caller, JsonBody, P, Q};
use super::fault::{ApiError, ApiResult};
use super::AppState;

/// `{"ssl": {...}}`.
#[derive(Debug, Deserialize)]
pub(super) struct SslEnvelope {
    ssl: Option<serde_json::Value>,
}

/// `GET /instances/{id}/ssl[?include_certificate=true]`.
pub(super) async fn ssl_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    q: Q,
) -> ApiResult<Response> {
    let id = uuid_or_404("Instance", &id)?;
    let view = s
        .api
        .ssl_show(&c.ctx, id, q.flag("include_certificate"))
        .await?;
    Ok((StatusCode::OK, Json(json!({ "ssl": view }))).into_response())
}

/// `POST /instances/{id}/ssl` with `{"ssl": {"enable"|"disable"|"rollback": true, ...}}`.
pub(super) async fn ssl_action(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<SslEnvelope>,
) -> ApiResult<Response> {
    let id = uuid_or_404("Instance", &id)?;
    let Some(inner) = b.ssl else {
        return Err(ApiError(Error::bad_request(
            "The request body must hold an 'ssl' object.",
        )));
    };
    let body: SslActionBody = decode_value(inner)?;
    let result = s.api.ssl_action(&c.ctx, id, body).await?;
    Ok((StatusCode::OK, Json(json!({ "ssl": result }))).into_response())
}
