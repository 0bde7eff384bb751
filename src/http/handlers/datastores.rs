//! `/datastores`: datastores, their versions, a version's flavors and volume types; and the admin's
//! `/mgmt/datastore-versions`.

use axum::extract::State;
use axum::http::StatusCode;

use super::{accepted, ok, ok_shared, with_status, JsonResult};
use crate::http::bodies;
use crate::http::extract::{percent_decode, uuid_or_404, Caller, JsonBody, P};
use crate::http::{views, AppState};

/// `GET /datastores`.
pub(super) async fn list(State(s): State<AppState>, c: Caller) -> JsonResult {
    let all = s.api.list_datastores(&c.ctx).await?;
    ok_shared(
        s.rendered
            .datastores
            .body(&c, all, |c, all| views::datastores::list(c, all))?,
    )
}

/// `GET /datastores/{id_or_name}`.
pub(super) async fn show(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds)): P<(String, String)>,
) -> JsonResult {
    let d = s.api.show_datastore(&c.ctx, &percent_decode(&ds)).await?;
    ok(views::datastores::show(&c, &d))
}

/// `DELETE /datastores/{id_or_name}`.
pub(super) async fn delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds)): P<(String, String)>,
) -> JsonResult {
    s.api.delete_datastore(&c.ctx, &percent_decode(&ds)).await?;
    accepted()
}

/// `GET /datastores/{ds}/versions`.
pub(super) async fn versions(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds)): P<(String, String)>,
) -> JsonResult {
    let all = s
        .api
        .list_datastore_versions(&c.ctx, &percent_decode(&ds))
        .await?;
    ok_shared(
        s.rendered
            .versions
            .body(&c, all, |c, all| views::datastores::versions(c, all))?,
    )
}

/// `GET /datastores/{ds}/versions/{version}`.
pub(super) async fn version_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds, v)): P<(String, String, String)>,
) -> JsonResult {
    let v = s
        .api
        .show_datastore_version(&c.ctx, &percent_decode(&ds), &percent_decode(&v))
        .await?;
    ok(views::datastores::version_show(&c, &v))
}

/// `GET /datastores/versions/{id}`.
pub(super) async fn version_by_id(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let v = s.api.show_datastore_version_by_id(&c.ctx, id).await?;
    ok(views::datastores::version_show(&c, &v))
}

/// `GET /datastores/{ds}/versions/{version}/flavors`.
pub(super) async fn version_flavors(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds, v)): P<(String, String, String)>,
) -> JsonResult {
    let all = s
        .api
        .list_version_flavors(&c.ctx, &percent_decode(&ds), &percent_decode(&v))
        .await?;
    ok(views::flavors::list(&c, &all))
}

/// `GET /datastores/{ds}/versions/{version}/volume-types`.
pub(super) async fn version_volume_types(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds, v)): P<(String, String, String)>,
) -> JsonResult {
    let all = s
        .api
        .list_version_volume_types(&c.ctx, &percent_decode(&ds), &percent_decode(&v))
        .await?;
    ok(views::datastores::volume_types(&all))
}

/// `GET /mgmt/datastore-versions`.
pub(super) async fn mgmt_versions(State(s): State<AppState>, c: Caller) -> JsonResult {
    let all = s.api.mgmt_list_datastore_versions(&c.ctx).await?;
    ok(views::datastores::mgmt_versions(&all))
}

/// `POST /mgmt/datastore-versions`.
pub(super) async fn mgmt_version_create(
    State(s): State<AppState>,
    c: Caller,
    JsonBody(b): JsonBody<bodies::VersionCreateBody>,
) -> JsonResult {
    let v = s
        .api
        .mgmt_create_datastore_version(&c.ctx, b.into_spec()?)
        .await?;
    with_status(
        StatusCode::ACCEPTED,
        views::datastores::mgmt_version_show(&v),
    )
}

/// `GET /mgmt/datastore-versions/{id}`.
pub(super) async fn mgmt_version_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let v = s.api.mgmt_show_datastore_version(&c.ctx, id).await?;
    ok(views::datastores::mgmt_version_show(&v))
}

/// `PATCH /mgmt/datastore-versions/{id}`.
pub(super) async fn mgmt_version_patch(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::VersionPatchBody>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    s.api
        .mgmt_update_datastore_version(&c.ctx, id, b.into_patch())
        .await?;
    accepted()
}

/// `DELETE /mgmt/datastore-versions/{id}`.
pub(super) async fn mgmt_version_delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    s.api.mgmt_delete_datastore_version(&c.ctx, id).await?;
    accepted()
}
