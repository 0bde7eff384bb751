//! Upstream fault bodies: `{"<faultName>": {"code": N, "message": "..."}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use trove_core::error::{Error, Fault};

/// An error answered as an upstream Trove fault.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// Renders a fault body with an explicit status and message.
pub fn fault_response(status: u16, message: &str) -> Response {
    let fault = Fault::for_status(status);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({ fault.name: { "code": status, "message": message } });
    (code, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let fault = self.0.fault();
        let message = match &self.0 {
            // Internal details of backends stay in the log, never in the answer.
            Error::Backend { .. } | Error::Guest { .. } | Error::Timeout { .. } => {
                tracing::error!(error = %self.0, "request failed");
                if fault.status == 503 {
                    "The service is temporarily unavailable; retry later.".to_string()
                } else {
                    format!("Internal Server Error: {}", self.0)
                }
            }
            other => other.to_string(),
        };
        if let Error::OverLimit {
            retry_after: Some(secs),
            ..
        } = &self.0
        {
            let body = json!({ "overLimit": {
                "code": 413,
                "message": message,
                "details": "Only a limited number of requests per minute are allowed; retry later.",
                "retryAfter": secs.to_string(),
            }});
            let mut resp = (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return resp;
        }
        fault_response(fault.status, &message)
    }
}

/// 404 for a route that does not exist.
pub async fn not_found_fallback() -> Response {
    fault_response(404, "The resource could not be found.")
}

/// 405 for a route that exists without this method.
pub async fn method_not_allowed_fallback() -> Response {
    fault_response(405, "The method is not allowed for this resource.")
}
