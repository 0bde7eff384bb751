//! `GET` and `POST /instances/{id}/ssl` (upstream API 1.3): decode, call
//! [`ApiService::ssl_show`](trove_core::api::ApiService::ssl_show) /
//! [`ApiService::ssl_action`](trove_core::api::ApiService::ssl_action), render `{"ssl": ...}`.

use axum::extract::State;

use super::{ok, JsonResult};
use crate::http::bodies::SslBody;
use crate::http::extract::{uuid_or_404, Caller, JsonBody, P, Q};
use crate::http::{views, AppState};

/// `GET /instances/{id}/ssl[?include_certificate=true]`.
pub(super) async fn show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    q: Q,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let view = s
        .api
        .ssl_show(&c.ctx, id, q.flag("include_certificate"))
        .await?;
    ok(views::ssl::show(&view))
}

/// `POST /instances/{id}/ssl` with `{"ssl": {"enable"|"disable"|"rollback": true, ...}}`.
pub(super) async fn action(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<SslBody>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let result = s.api.ssl_action(&c.ctx, id, b.into_action()?).await?;
    ok(views::ssl::show(&result))
}
