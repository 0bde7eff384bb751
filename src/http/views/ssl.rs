//! Instance TLS views (upstream API 1.3): `{"ssl": {...}}`.

use serde::Serialize;
use serde_json::{json, Value};

/// `GET` and `POST /instances/{id}/ssl`: the TLS state, or the result of a change.
pub fn show(view: &impl Serialize) -> Value {
    json!({ "ssl": view })
}
