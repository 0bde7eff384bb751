//! `/backup_strategies`: create, list, delete.

use axum::extract::State;
use axum::http::StatusCode;
use trove_core::api::BackupStrategyQuery;

use super::{accepted, ok, with_status, JsonResult};
use crate::http::bodies;
use crate::http::extract::{uuid_or_404, Caller, JsonBody, Q};
use crate::http::fault::ApiError;
use crate::http::{views, AppState};

/// `?instance_id` (empty: the tenant-wide strategy) and `?project_id` of the strategy routes.
fn strategy_query(q: &Q) -> Result<BackupStrategyQuery, ApiError> {
    Ok(BackupStrategyQuery {
        instance_id: match q.get("instance_id") {
            None | Some("") => None,
            Some(i) => Some(uuid_or_404("Instance", i)?),
        },
        project_id: q.get("project_id").map(str::to_string),
    })
}

/// `POST /backup_strategies`.
pub(super) async fn create(
    State(s): State<AppState>,
    c: Caller,
    JsonBody(b): JsonBody<bodies::BackupStrategyBody>,
) -> JsonResult {
    let st = s
        .api
        .create_backup_strategy(&c.ctx, b.into_request()?)
        .await?;
    with_status(StatusCode::ACCEPTED, views::backups::strategy_show(&st))
}

/// `GET /backup_strategies`.
pub(super) async fn list(State(s): State<AppState>, c: Caller, q: Q) -> JsonResult {
    let all = s
        .api
        .list_backup_strategies(&c.ctx, strategy_query(&q)?)
        .await?;
    ok(views::backups::strategies(&all))
}

/// `DELETE /backup_strategies`.
pub(super) async fn delete(State(s): State<AppState>, c: Caller, q: Q) -> JsonResult {
    s.api
        .delete_backup_strategy(&c.ctx, strategy_query(&q)?)
        .await?;
    accepted()
}
