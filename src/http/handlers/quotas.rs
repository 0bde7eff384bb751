//! `GET /limits` and `/mgmt/quotas/{project}` (show, update).

use axum::extract::State;

use super::{ok, JsonResult};
use crate::http::bodies;
use crate::http::extract::{percent_decode, Caller, JsonBody, P};
use crate::http::ratelimit::unlimited_view;
use crate::http::{views, AppState};

/// `GET /limits`: the tenant's absolute limits, then the rate limits (unlimited ones when rate limiting is off).
pub(super) async fn limits(State(s): State<AppState>, c: Caller) -> JsonResult {
    let q = s.api.limits(&c.ctx).await?;
    let rate = match &s.limiter {
        Some(l) => l.limits_view(&c.tenant),
        None => unlimited_view(),
    };
    ok(views::quotas::limits(&q, rate))
}

/// `GET /mgmt/quotas/{project}`.
pub(super) async fn show(
    State(s): State<AppState>,
    c: Caller,
    P((_, project)): P<(String, String)>,
) -> JsonResult {
    let q = s.api.show_quota(&c.ctx, &percent_decode(&project)).await?;
    ok(views::quotas::show(&q))
}

/// `PUT /mgmt/quotas/{project}`.
pub(super) async fn update(
    State(s): State<AppState>,
    c: Caller,
    P((_, project)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::QuotasBody>,
) -> JsonResult {
    let limits = b.into_limits()?;
    let l = s
        .api
        .update_quota(&c.ctx, &percent_decode(&project), limits)
        .await?;
    ok(views::quotas::updated(&l))
}
