//! `/instances/{id}/users`: list (paged in the core), create, change passwords, show, update, delete, and a
//! user's database access (list, grant, revoke).

use axum::extract::State;
use trove_core::api::UserRef;

use super::{accepted, ok, page_request, JsonResult};
use crate::http::bodies;
use crate::http::extract::{percent_decode, uuid_or_404, Caller, JsonBody, P, Q};
use crate::http::{views, AppState};

/// The `{user}` path segment: `name` or `name@host`, percent-decoded.
fn user_ref(seg: &str) -> UserRef {
    UserRef::parse(&percent_decode(seg))
}

/// `GET /instances/{id}/users`.
pub(super) async fn list(
    State(s): State<AppState>,
    c: Caller,
    q: Q,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let page = s
        .api
        .list_users_page(&c.ctx, id, &page_request(&s, &q))
        .await?;
    ok(views::users::list(&c, &page))
}

/// `POST /instances/{id}/users`.
pub(super) async fn create(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::UsersBody>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api.create_users(&c.ctx, id, b.into_specs()).await?;
    accepted()
}

/// `PUT /instances/{id}/users`: change passwords.
pub(super) async fn change_passwords(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::UsersBody>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api.change_passwords(&c.ctx, id, b.into_specs()).await?;
    accepted()
}

/// `GET /instances/{id}/users/{user}`.
pub(super) async fn show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, u)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let info = s.api.show_user(&c.ctx, id, &user_ref(&u)).await?;
    ok(views::users::show(&info))
}

/// `PUT /instances/{id}/users/{user}`.
pub(super) async fn update(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, u)): P<(String, String, String)>,
    JsonBody(b): JsonBody<bodies::UserUpdateBody>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api
        .update_user(&c.ctx, id, &user_ref(&u), b.into_update()?)
        .await?;
    accepted()
}

/// `DELETE /instances/{id}/users/{user}`.
pub(super) async fn delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, u)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api.delete_user(&c.ctx, id, &user_ref(&u)).await?;
    accepted()
}

/// `GET /instances/{id}/users/{user}/databases`.
pub(super) async fn access_list(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, u)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let dbs = s.api.list_user_access(&c.ctx, id, &user_ref(&u)).await?;
    ok(views::users::access(&dbs))
}

/// `PUT /instances/{id}/users/{user}/databases`.
pub(super) async fn access_grant(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, u)): P<(String, String, String)>,
    JsonBody(b): JsonBody<bodies::DatabaseNamesBody>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api
        .grant_user_access(&c.ctx, id, &user_ref(&u), b.into_names())
        .await?;
    accepted()
}

/// `DELETE /instances/{id}/users/{user}/databases/{db}`.
pub(super) async fn access_revoke(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, u, db)): P<(String, String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api
        .revoke_user_access(&c.ctx, id, &user_ref(&u), &percent_decode(&db))
        .await?;
    accepted()
}
