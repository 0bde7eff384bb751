//! `/clusters`: list, create, show, delete, show a member, and the actions POSTed to a cluster.

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::{accepted, ok, with_status, JsonResult};
use crate::http::cluster_bodies;
use crate::http::extract::{uuid_or_404, Caller, JsonBody, P};
use crate::http::{views, AppState};

/// `GET /clusters`.
pub(super) async fn list(State(s): State<AppState>, c: Caller) -> JsonResult {
    let all = s.api.list_clusters(&c.ctx).await?;
    ok(views::clusters::list(&c, &all))
}

/// `POST /clusters` (200, as upstream).
pub(super) async fn create(
    State(s): State<AppState>,
    c: Caller,
    JsonBody(b): JsonBody<Map<String, Value>>,
) -> JsonResult {
    let req = cluster_bodies::create_cluster(b)?;
    let v = s.api.create_cluster(&c.ctx, req).await?;
    ok(views::clusters::show(&c, &v))
}

/// `GET /clusters/{id}`.
pub(super) async fn show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Cluster", &id)?;
    let v = s.api.show_cluster(&c.ctx, id).await?;
    ok(views::clusters::show(&c, &v))
}

/// `POST /clusters/{id}`: one action (202 with the cluster).
pub(super) async fn action(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<Map<String, Value>>,
) -> JsonResult {
    let id = uuid_or_404("Cluster", &id)?;
    let action = cluster_bodies::cluster_action(b)?;
    let v = s.api.cluster_action(&c.ctx, id, action).await?;
    with_status(StatusCode::ACCEPTED, views::clusters::show(&c, &v))
}

/// `DELETE /clusters/{id}`.
pub(super) async fn delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Cluster", &id)?;
    s.api.delete_cluster(&c.ctx, id).await?;
    accepted()
}

/// `GET /clusters/{id}/instances/{instance_id}`.
pub(super) async fn show_instance(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, iid)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Cluster", &id)?;
    let iid = uuid_or_404("Instance", &iid)?;
    let v = s.api.show_cluster_instance(&c.ctx, id, iid).await?;
    ok(serde_json::json!({ "instance": views::instances::instance(&c, &v, true) }))
}

/// `GET /clusters/{id}/events` (extension).
pub(super) async fn events(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Cluster", &id)?;
    let all = s.api.list_cluster_events(&c.ctx, id).await?;
    ok(serde_json::json!({ "events": all }))
}

/// `PUT /clusters/{id}/scaling_policy` (extension): `{"scaling_policy": {...}}`.
pub(super) async fn set_scaling_policy(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<Map<String, Value>>,
) -> JsonResult {
    let id = uuid_or_404("Cluster", &id)?;
    let policy = cluster_bodies::scaling_policy(b)?;
    let v = s.api.set_scaling_policy(&c.ctx, id, Some(policy)).await?;
    ok(views::clusters::show(&c, &v))
}

/// `DELETE /clusters/{id}/scaling_policy` (extension).
pub(super) async fn delete_scaling_policy(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Cluster", &id)?;
    s.api.set_scaling_policy(&c.ctx, id, None).await?;
    accepted()
}
