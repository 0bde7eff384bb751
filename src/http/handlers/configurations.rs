//! `/configurations`: list (paged in the core), create, show, update (PUT), edit (PATCH), delete, and the
//! instances using a group.

use axum::extract::State;
use axum::http::StatusCode;

use super::{accepted, empty, ok, page_request, JsonResult};
use crate::http::bodies;
use crate::http::extract::{uuid_or_404, Caller, JsonBody, P, Q};
use crate::http::{views, AppState};

/// `GET /configurations`.
pub(super) async fn list(State(s): State<AppState>, c: Caller, q: Q) -> JsonResult {
    let page = s
        .api
        .list_configurations_page(&c.ctx, &page_request(&s, &q))
        .await?;
    ok(views::configurations::list(&c, &page))
}

/// `POST /configurations`.
pub(super) async fn create(
    State(s): State<AppState>,
    c: Caller,
    JsonBody(b): JsonBody<bodies::ConfigurationCreateBody>,
) -> JsonResult {
    let v = s.api.create_configuration(&c.ctx, b.into_request()).await?;
    ok(views::configurations::show(&v))
}

/// `GET /configurations/{id}`.
pub(super) async fn show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Configuration", &id)?;
    let v = s.api.show_configuration(&c.ctx, id).await?;
    ok(views::configurations::show(&v))
}

/// `PUT /configurations/{id}`: replaces name, description and values.
pub(super) async fn update(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::ConfigurationUpdateBody>,
) -> JsonResult {
    let id = uuid_or_404("Configuration", &id)?;
    s.api
        .update_configuration(&c.ctx, id, b.into_request())
        .await?;
    accepted()
}

/// `PATCH /configurations/{id}`: merges values.
pub(super) async fn patch(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::ConfigurationUpdateBody>,
) -> JsonResult {
    let id = uuid_or_404("Configuration", &id)?;
    s.api
        .patch_configuration(&c.ctx, id, b.into_patch_values()?)
        .await?;
    empty(StatusCode::OK)
}

/// `DELETE /configurations/{id}`.
pub(super) async fn delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Configuration", &id)?;
    s.api.delete_configuration(&c.ctx, id).await?;
    accepted()
}

/// `GET /configurations/{id}/instances`.
pub(super) async fn instances(
    State(s): State<AppState>,
    c: Caller,
    q: Q,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Configuration", &id)?;
    let page = s
        .api
        .configuration_instances_page(&c.ctx, id, &page_request(&s, &q))
        .await?;
    ok(views::configurations::instances(&c, &page))
}
