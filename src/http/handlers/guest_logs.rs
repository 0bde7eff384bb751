//! Guest-log routes (`GET`/`POST /instances/{id}/log`).

use axum::extract::State;
use serde_json::{Map, Value};

use super::{ok, JsonResult};
use crate::http::bodies::log_action_body;
use crate::http::extract::{uuid_or_404, Caller, JsonBody, P};
use crate::http::{views, AppState};

/// `GET /instances/{id}/log`.
pub(super) async fn list(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let logs = s.api.list_guest_logs(&c.ctx, id).await?;
    ok(views::guest_logs::list(&logs))
}

/// `POST /instances/{id}/log`.
pub(super) async fn action(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<Map<String, Value>>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let req = log_action_body(&b)?;
    let log = s.api.guest_log_action(&c.ctx, id, req).await?;
    ok(views::guest_logs::show(&log))
}
