//! Guest-log routes (`GET`/`POST /v1.0/{tenant}/instances/{id}/log`): decode, call the core, render upstream's
//! `{"logs": [...]}` / `{"log": {...}}` with every field a string.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use trove_core::model::LogActionRequest;

use super::bodies::invalid;
use super::extract::{uuid_or_404, Caller, JsonBody, P};
use super::fault::{ApiError, ApiResult};
use super::AppState;

/// An action flag (upstream schema: an integer 0 or 1; JSON booleans are taken too).
fn flag(body: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(false),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(true),
        Some(v) => Err(invalid(format!("{key} {v} is not 0 or 1"))),
    }
}

/// `POST /instances/{id}/log` body as upstream's `guest_log:action` schema describes it: a required non-empty
/// `name` and the optional flags `enable`, `disable`, `publish`, `discard`.
pub fn log_action_body(body: &Map<String, Value>) -> Result<LogActionRequest, ApiError> {
    let name = match body.get("name") {
        Some(Value::String(s)) if s.chars().any(|c| c.is_ascii_alphanumeric()) => s.clone(),
        Some(v) => return Err(invalid(format!("name {v} is not a non-empty name"))),
        None => return Err(invalid("'name' is a required property")),
    };
    Ok(LogActionRequest {
        name,
        enable: flag(body, "enable")?,
        disable: flag(body, "disable")?,
        publish: flag(body, "publish")?,
        discard: flag(body, "discard")?,
    })
}

/// `GET /instances/{id}/log`.
pub async fn instance_logs_list(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> ApiResult<Response> {
    let id = uuid_or_404("Instance", &id)?;
    let logs = s.api.list_guest_logs(&c.ctx, id).await?;
    let views: Vec<_> = logs.iter().map(|l| l.view()).collect();
    Ok((StatusCode::OK, Json(json!({ "logs": views }))).into_response())
}

/// `POST /instances/{id}/log`.
pub async fn instance_log_action(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<Map<String, Value>>,
) -> ApiResult<Response> {
    let id = uuid_or_404("Instance", &id)?;
    let req = log_action_body(&b)?;
    let log = s.api.guest_log_action(&c.ctx, id, req).await?;
    Ok((StatusCode::OK, Json(json!({ "log": log.view() }))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn bodies_follow_the_upstream_schema() {
        let r = log_action_body(&body(json!({"name": "general", "enable": 1}))).unwrap();
        assert!(r.enable && !r.disable && !r.publish && !r.discard);
        let r = log_action_body(&body(
            json!({"name": "general", "publish": true, "discard": 0}),
        ))
        .unwrap();
        assert!(r.publish && !r.discard);
        let r = log_action_body(&body(json!({"name": "general"}))).unwrap();
        assert_eq!(
            r,
            LogActionRequest::new("general", trove_core::model::LogAction::Show)
        );
        for bad in [
            json!({}),
            json!({"name": ""}),
            json!({"name": 5}),
            json!({"name": "general", "enable": 2}),
            json!({"name": "general", "enable": "yes"}),
        ] {
            let e = log_action_body(&body(bad.clone())).unwrap_err();
            assert_eq!(e.0.fault().status, 400, "{bad}");
        }
    }
}
