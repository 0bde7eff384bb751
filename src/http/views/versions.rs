//! The API version documents (`GET /`, `GET /v1.0`).

use serde_json::{json, Value};

/// The one version entry, with links under `base`.
fn version_entry(base: &str) -> Value {
    json!({
        "id": "v1.0",
        "status": "CURRENT",
        "updated": "2012-08-01T00:00:00Z",
        "links": [{ "rel": "self", "href": format!("{base}/v1.0/") }],
    })
}

/// `GET /`.
pub fn list(base: &str) -> Value {
    json!({ "versions": [version_entry(base)] })
}

/// `GET /v1.0`.
pub fn show(base: &str) -> Value {
    json!({ "version": version_entry(base) })
}
