//! `/mgmt/instances`: every tenant's instances (paged in the core), one instance, the mgmt actions and the
//! guest ping (admin).

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Map, Value};
use trove_core::api::MgmtInstanceQuery;

use super::{accepted, empty, ok, ok_bytes, page_request, JsonResult};
use crate::http::bodies;
use crate::http::extract::{uuid_or_404, Caller, JsonBody, P, Q};
use crate::http::{views, AppState};

/// `GET /mgmt/instances`.
pub(super) async fn instances(State(s): State<AppState>, c: Caller, q: Q) -> JsonResult {
    let query = MgmtInstanceQuery {
        deleted: q.flag("deleted"),
        include_clustered: q.flag("include_clustered"),
        project_id: q.get("project_id").map(str::to_string),
    };
    // The core checks the policy rule before the page: a refused caller gets 403 whatever the `limit`.
    let page = s
        .api
        .mgmt_list_instances_page(&c.ctx, query, &page_request(&s, &q))
        .await?;
    ok_bytes(views::instances::mgmt_list(c, page).await?)
}

/// `GET /mgmt/instances/{id}`.
pub(super) async fn instance_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let v = s.api.mgmt_show_instance(&c.ctx, id).await?;
    ok(views::instances::mgmt_show(&c, &v))
}

/// `POST /mgmt/instances/{id}/action`.
pub(super) async fn instance_action(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<Map<String, Value>>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let action = bodies::mgmt_action(b)?.into();
    s.api.mgmt_instance_action(&c.ctx, id, action).await?;
    accepted()
}

/// `GET /mgmt/instances/{id}/rpc_ping`.
pub(super) async fn rpc_ping(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api.mgmt_rpc_ping(&c.ctx, id).await?;
    empty(StatusCode::NO_CONTENT)
}
