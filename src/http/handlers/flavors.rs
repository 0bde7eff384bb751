//! `/flavors`: list and show.

use axum::extract::State;

use super::{ok, ok_shared, JsonResult};
use crate::http::extract::{percent_decode, Caller, P};
use crate::http::{views, AppState};

/// `GET /flavors`.
pub(super) async fn list(State(s): State<AppState>, c: Caller) -> JsonResult {
    let all = s.api.list_flavors(&c.ctx).await?;
    ok_shared(
        s.rendered
            .flavors
            .body(&c, all, |c, all| views::flavors::list(c, all))?,
    )
}

/// `GET /flavors/{id}`.
pub(super) async fn show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let f = s.api.show_flavor(&c.ctx, &percent_decode(&id)).await?;
    ok(views::flavors::show(&c, &f))
}
