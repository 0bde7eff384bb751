//! Views of what an instance's guest answers: users, databases, user access and root.

use serde_json::{json, Value};
use trove_core::api::{Page, RootCredentials};
use trove_core::model::{DatabaseSpec, RootHistory};
use trove_core::ports::UserInfo;
use uuid::Uuid;

use super::ts;
use crate::http::extract::Caller;

/// A user with the databases it can access.
pub fn user(u: &UserInfo) -> Value {
    let dbs: Vec<Value> = u.databases.iter().map(|d| json!({ "name": d })).collect();
    json!({ "name": u.name, "host": u.host, "databases": dbs })
}

/// `GET /instances/{id}/users`, one page.
pub fn list(c: &Caller, page: &Page<UserInfo>) -> Value {
    super::page(c, "users", page, user)
}

/// `GET /instances/{id}/users/{user}`.
pub fn show(u: &UserInfo) -> Value {
    json!({ "user": user(u) })
}

/// `GET /instances/{id}/databases`, one page.
pub fn databases(c: &Caller, page: &Page<DatabaseSpec>) -> Value {
    super::page(c, "databases", page, |d| json!({ "name": d.name }))
}

/// `GET /instances/{id}/users/{user}/databases`: the databases a user can access.
pub fn access(databases: &[String]) -> Value {
    let rows: Vec<Value> = databases.iter().map(|d| json!({ "name": d })).collect();
    json!({ "databases": rows })
}

/// `GET /instances/{id}/root`.
pub fn root_enabled(enabled: bool) -> Value {
    json!({ "rootEnabled": enabled })
}

/// `POST /instances/{id}/root`: the superuser's name and password.
pub fn root_user(creds: &RootCredentials) -> Value {
    json!({ "user": { "name": creds.name, "password": creds.password.expose() } })
}

/// `GET /mgmt/instances/{id}/root`: who enabled root and when ("Never" / "Nobody" when nobody did).
pub fn root_history(id: Uuid, history: Option<&RootHistory>) -> Value {
    match history {
        Some(h) => {
            json!({ "root_history": { "id": h.instance_id, "enabled": ts(&h.created), "user": h.user } })
        }
        None => json!({ "root_history": { "id": id, "enabled": "Never", "user": "Nobody" } }),
    }
}
