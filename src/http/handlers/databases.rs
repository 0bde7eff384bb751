//! `/instances/{id}/databases`: list (paged in the core), create, show (not offered), delete.

use axum::extract::State;
use trove_core::error::Error;

use super::{accepted, ok, page_request, JsonResult};
use crate::http::bodies;
use crate::http::extract::{percent_decode, uuid_or_404, Caller, JsonBody, P, Q};
use crate::http::fault::ApiError;
use crate::http::{views, AppState};

/// `GET /instances/{id}/databases`.
pub(super) async fn list(
    State(s): State<AppState>,
    c: Caller,
    q: Q,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let page = s
        .api
        .list_databases_page(&c.ctx, id, &page_request(&s, &q))
        .await?;
    ok(views::users::databases(&c, &page))
}

/// `POST /instances/{id}/databases`.
pub(super) async fn create(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::DatabasesBody>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api.create_databases(&c.ctx, id, b.into_specs()).await?;
    accepted()
}

/// `GET /instances/{id}/databases/{db}`: upstream answers 501.
pub(super) async fn show(c: Caller, P((_, _id, _db)): P<(String, String, String)>) -> JsonResult {
    let _ = c;
    Err(ApiError(Error::not_implemented(
        "Showing a single database is not supported (upstream answers 501).",
    )))
}

/// `DELETE /instances/{id}/databases/{db}`.
pub(super) async fn delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, db)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api
        .delete_database(&c.ctx, id, &percent_decode(&db))
        .await?;
    accepted()
}
