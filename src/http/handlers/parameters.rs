//! Configuration parameters of a datastore version (`/datastores/.../parameters`) and their management by
//! admins (`/mgmt/datastores/versions/{id}/parameters`).

use axum::extract::State;
use axum::http::StatusCode;

use super::{empty, ok, JsonResult};
use crate::http::bodies;
use crate::http::extract::{percent_decode, uuid_or_404, Caller, JsonBody, P};
use crate::http::{views, AppState};

/// `GET /datastores/{ds}/versions/{version}/parameters`.
pub(super) async fn list(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds, v)): P<(String, String, String)>,
) -> JsonResult {
    let ps = s
        .api
        .list_parameters(&c.ctx, &percent_decode(&ds), &percent_decode(&v))
        .await?;
    ok(views::configurations::parameters(&ps))
}

/// `GET /datastores/{ds}/versions/{version}/parameters/{name}`.
pub(super) async fn show(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds, v, name)): P<(String, String, String, String)>,
) -> JsonResult {
    let p = s
        .api
        .show_parameter(
            &c.ctx,
            &percent_decode(&ds),
            &percent_decode(&v),
            &percent_decode(&name),
        )
        .await?;
    ok(views::configurations::parameter(&p))
}

/// `GET /datastores/versions/{id}/parameters`.
pub(super) async fn list_by_version(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let ps = s.api.list_parameters_by_version(&c.ctx, id).await?;
    ok(views::configurations::parameters(&ps))
}

/// `GET /datastores/versions/{id}/parameters/{name}`.
pub(super) async fn show_by_version(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, name)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let p = s
        .api
        .show_parameter_by_version(&c.ctx, id, &percent_decode(&name))
        .await?;
    ok(views::configurations::parameter(&p))
}

/// `GET /mgmt/datastores/versions/{id}/parameters`.
pub(super) async fn mgmt_list(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let ps = s.api.mgmt_list_parameters(&c.ctx, id).await?;
    ok(views::configurations::parameters(&ps))
}

/// `POST /mgmt/datastores/versions/{id}/parameters`.
pub(super) async fn mgmt_create(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::ParameterBody>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let p = s
        .api
        .mgmt_create_parameter(&c.ctx, id, b.into_spec()?)
        .await?;
    ok(views::configurations::parameters(std::slice::from_ref(&p)))
}

/// `GET /mgmt/datastores/versions/{id}/parameters/{name}`.
pub(super) async fn mgmt_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, name)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let p = s
        .api
        .mgmt_show_parameter(&c.ctx, id, &percent_decode(&name))
        .await?;
    ok(views::configurations::parameter(&p))
}

/// `PUT /mgmt/datastores/versions/{id}/parameters/{name}`.
pub(super) async fn mgmt_update(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, name)): P<(String, String, String)>,
    JsonBody(b): JsonBody<bodies::ParameterBody>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let p = s
        .api
        .mgmt_update_parameter(&c.ctx, id, &percent_decode(&name), b.into_spec()?)
        .await?;
    ok(views::configurations::parameter_row(&p))
}

/// `DELETE /mgmt/datastores/versions/{id}/parameters/{name}`.
pub(super) async fn mgmt_delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, name)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    s.api
        .mgmt_delete_parameter(&c.ctx, id, &percent_decode(&name))
        .await?;
    empty(StatusCode::NO_CONTENT)
}
