//! `/instances`: list (basic and detailed views), create, show, update (PUT and PATCH), delete, the
//! configuration in effect, and the modules route (not offered).

use axum::extract::State;
use serde_json::{Map, Value};
use trove_core::error::Error;

use super::{accepted, ok, ok_bytes, page_request, JsonResult};
use crate::http::bodies;
use crate::http::extract::{uuid_or_404, Caller, JsonBody, P, Q};
use crate::http::fault::ApiError;
use crate::http::{views, AppState};

/// `GET /instances`.
pub(super) async fn list(State(s): State<AppState>, c: Caller, q: Q) -> JsonResult {
    index(s, c, q, false).await
}

/// `GET /instances/detail`.
pub(super) async fn detail(State(s): State<AppState>, c: Caller, q: Q) -> JsonResult {
    index(s, c, q, true).await
}

async fn index(s: AppState, c: Caller, q: Q, detail: bool) -> JsonResult {
    let (clustered, page) = (q.flag("include_clustered"), page_request(&s, &q));
    let page = if detail {
        s.api
            .list_instances_detail_page(&c.ctx, clustered, &page)
            .await?
    } else {
        s.api.list_instances_page(&c.ctx, clustered, &page).await?
    };
    ok_bytes(views::instances::list(c, page, detail).await?)
}

/// `POST /instances`.
pub(super) async fn create(
    State(s): State<AppState>,
    c: Caller,
    JsonBody(b): JsonBody<bodies::CreateInstanceBody>,
) -> JsonResult {
    let req = b.into_request()?;
    let v = s.api.create_instance(&c.ctx, req).await?;
    ok(views::instances::show(&c, &v))
}

/// `GET /instances/{id}`.
pub(super) async fn show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let v = s.api.show_instance(&c.ctx, id).await?;
    ok(views::instances::show(&c, &v))
}

/// `PUT /instances/{id}`.
pub(super) async fn update(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<Map<String, Value>>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let req = bodies::update_instance(b, false)?;
    s.api.update_instance(&c.ctx, id, req).await?;
    accepted()
}

/// `PATCH /instances/{id}`.
pub(super) async fn patch(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<Map<String, Value>>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let req = bodies::update_instance(b, true)?;
    s.api.update_instance(&c.ctx, id, req).await?;
    accepted()
}

/// `DELETE /instances/{id}`.
pub(super) async fn delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api.delete_instance(&c.ctx, id).await?;
    accepted()
}

/// `GET /instances/{id}/configuration`.
pub(super) async fn configuration(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let cfg = s.api.instance_configuration(&c.ctx, id).await?;
    ok(views::instances::configuration(&cfg))
}

/// `GET /instances/{id}/modules`: modules are not offered (501).
pub(super) async fn modules(c: Caller, P((_, id)): P<(String, String)>) -> JsonResult {
    let _ = (c, id);
    Err(ApiError(Error::not_implemented(
        "Modules are not supported by this deployment (no module store); instances run without them.",
    )))
}

/// `GET /instances/{id}/events` (extension).
pub(super) async fn events(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let all = s.api.list_instance_events(&c.ctx, id).await?;
    ok(serde_json::json!({ "events": all }))
}
