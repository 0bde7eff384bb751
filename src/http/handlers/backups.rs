//! `/backups` and `/instances/{id}/backups`: list (paged by offset in the core), create, show, delete.

use axum::extract::State;
use axum::http::StatusCode;
use trove_core::api::BackupQuery;

use super::{accepted, ok, page_request, with_status, JsonResult};
use crate::http::bodies;
use crate::http::extract::{uuid_or_404, Caller, JsonBody, P, Q};
use crate::http::fault::ApiError;
use crate::http::{views, AppState};

/// The filters of `GET /backups`.
fn backup_query(q: &Q) -> Result<BackupQuery, ApiError> {
    Ok(BackupQuery {
        datastore: q.get("datastore").map(str::to_string),
        instance_id: q
            .get("instance_id")
            .map(|i| uuid_or_404("Instance", i))
            .transpose()?,
        project_id: q.get("project_id").map(str::to_string),
        all_projects: q.flag("all_projects"),
    })
}

/// `GET /backups`.
pub(super) async fn list(State(s): State<AppState>, c: Caller, q: Q) -> JsonResult {
    let query = backup_query(&q)?;
    let page = s
        .api
        .list_backups_page(&c.ctx, query, &page_request(&s, &q))
        .await?;
    ok(views::backups::list(&c, &page))
}

/// `GET /instances/{id}/backups`.
pub(super) async fn of_instance(
    State(s): State<AppState>,
    c: Caller,
    q: Q,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let page = s
        .api
        .instance_backups_page(&c.ctx, id, &page_request(&s, &q))
        .await?;
    ok(views::backups::list(&c, &page))
}

/// `POST /backups`.
pub(super) async fn create(
    State(s): State<AppState>,
    c: Caller,
    JsonBody(b): JsonBody<bodies::BackupBody>,
) -> JsonResult {
    let v = s.api.create_backup(&c.ctx, b.into_request()?).await?;
    with_status(StatusCode::ACCEPTED, views::backups::show(&v))
}

/// `GET /backups/{id}`.
pub(super) async fn show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Backup", &id)?;
    let v = s.api.show_backup(&c.ctx, id).await?;
    ok(views::backups::show(&v))
}

/// `DELETE /backups/{id}`.
pub(super) async fn delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Backup", &id)?;
    s.api.delete_backup(&c.ctx, id).await?;
    accepted()
}

/// `GET /instances/{id}/backup_schedules` (extension).
pub(super) async fn schedules(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let all = s.api.list_backup_schedules(&c.ctx, id).await?;
    ok(views::backups::schedules(&all))
}

/// `POST /instances/{id}/backup_schedules` (extension).
pub(super) async fn create_schedule(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::BackupScheduleBody>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let sch = s
        .api
        .create_backup_schedule(&c.ctx, id, b.into_request()?)
        .await?;
    with_status(StatusCode::ACCEPTED, views::backups::schedule_show(&sch))
}

/// `DELETE /instances/{id}/backup_schedules/{schedule_id}` (extension).
pub(super) async fn delete_schedule(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, sid)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let sid = uuid_or_404("Backup schedule", &sid)?;
    s.api.delete_backup_schedule(&c.ctx, id, sid).await?;
    accepted()
}
