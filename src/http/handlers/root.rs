//! `/instances/{id}/root` (show, enable, disable) and the root history of `/mgmt/instances/{id}/root`.

use axum::extract::State;
use axum::http::StatusCode;

use super::{empty, ok, JsonResult};
use crate::http::bodies::RootBody;
use crate::http::extract::{uuid_or_404, Caller, OptJsonBody, P};
use crate::http::{views, AppState};

/// `GET /instances/{id}/root`.
pub(super) async fn show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let enabled = s.api.root_show(&c.ctx, id).await?;
    ok(views::users::root_enabled(enabled))
}

/// `POST /instances/{id}/root` (an optional body chooses the password).
pub(super) async fn enable(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    OptJsonBody(b): OptJsonBody<RootBody>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let creds = s
        .api
        .root_enable(&c.ctx, id, RootBody::password_of(b))
        .await?;
    ok(views::users::root_user(&creds))
}

/// `DELETE /instances/{id}/root`.
pub(super) async fn disable(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api.root_disable(&c.ctx, id).await?;
    empty(StatusCode::NO_CONTENT)
}

/// `GET /mgmt/instances/{id}/root` (admin).
pub(super) async fn mgmt_history(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let history = s.api.mgmt_root_history(&c.ctx, id).await?;
    ok(views::users::root_history(id, history.as_ref()))
}

/// `GET /clusters/{id}/root`.
pub(super) async fn cluster_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Cluster", &id)?;
    let enabled = s.api.cluster_root_show(&c.ctx, id).await?;
    ok(views::users::root_enabled(enabled))
}

/// `POST /clusters/{id}/root`: one root password on every member.
pub(super) async fn cluster_enable(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    OptJsonBody(b): OptJsonBody<RootBody>,
) -> JsonResult {
    let id = uuid_or_404("Cluster", &id)?;
    let creds = s
        .api
        .cluster_root_enable(&c.ctx, id, RootBody::password_of(b))
        .await?;
    ok(views::users::root_user(&creds))
}
