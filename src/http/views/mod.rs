//! JSON views, shaped as upstream renders them (`trove/*/views.py`): one module per resource, each function
//! answering a whole response body (or, for the pieces others reuse, one object); the shared pieces (timestamps,
//! links, list pages) are here.

pub mod backups;
pub mod clusters;
pub mod configurations;
pub mod datastores;
pub mod flavors;
pub mod guest_logs;
pub mod instances;
pub mod quotas;
pub mod ssl;
pub mod users;
pub mod versions;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use trove_core::api::Page;

use super::extract::Caller;

/// Upstream timestamp format (`2019-12-23T20:58:35`).
pub fn ts(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// `self` and `bookmark` links of a resource.
pub fn links(c: &Caller, coll: &str, id: &str) -> Value {
    json!([
        { "href": format!("{}/v1.0/{}/{coll}/{id}", c.base, c.tenant), "rel": "self" },
        { "href": format!("{}/{coll}/{id}", c.base), "rel": "bookmark" },
    ])
}

/// A page of a listing: `{key: [rows...]}`, plus `links` to the next page when there is one.
pub fn page<T>(c: &Caller, key: &str, page: &Page<T>, row: impl Fn(&T) -> Value) -> Value {
    let mut o = Map::new();
    o.insert(key.into(), page.items.iter().map(row).collect());
    if let Some(m) = &page.next {
        o.insert("links".into(), next_link(c, m));
    }
    Value::Object(o)
}

/// The `links` of a page that has a successor: the request URL with `marker` replaced.
pub fn next_link(c: &Caller, marker: &str) -> Value {
    let (path, query) = c
        .path_and_query
        .split_once('?')
        .unwrap_or((&c.path_and_query, ""));
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("marker="))
        .map(str::to_string)
        .collect();
    parts.push(format!("marker={}", percent_encode(marker)));
    json!([{ "rel": "next", "href": format!("{}{}?{}", c.base, path, parts.join("&")) }])
}

/// Percent-encodes everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::extract::percent_decode;
    use super::*;

    #[test]
    fn percent_roundtrip() {
        assert_eq!(percent_decode("bob%40%25"), "bob@%");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_encode("bob@%"), "bob%40%25");
    }
}
