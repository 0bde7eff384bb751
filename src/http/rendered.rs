//! Rendered bodies of the catalog reads (`GET /datastores`, `/datastores/{ds}/versions`, `/flavors`), reused
//! while what they were rendered from is equal: the same data (compared in full, so the answer is always the
//! one rendering would give), for the same caller view (base URL, tenant, admin or not) and request path.
//! Building these bodies as JSON trees cost several times the rest of the request.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use axum::body::Bytes;
use serde_json::Value;

use super::extract::Caller;
use super::fault::ApiError;

/// Entries kept per route; beyond that the cache starts over (many tenants or hosts: no worse than rendering).
const MAX_ENTRIES: usize = 256;

struct Entry<T> {
    base: String,
    tenant: String,
    admin: bool,
    path: String,
    input: T,
    body: Bytes,
}

impl<T: PartialEq> Entry<T> {
    fn matches(&self, c: &Caller, input: &T) -> bool {
        self.admin == c.ctx.is_admin()
            && self.base == c.base
            && self.tenant == c.tenant
            && self.path == c.path_and_query
            && self.input == *input
    }
}

/// The rendered bodies of one route.
pub(crate) struct Rendered<T> {
    entries: Mutex<HashMap<u64, Entry<T>>>,
}

impl<T> Default for Rendered<T> {
    fn default() -> Self {
        Rendered {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

fn key(c: &Caller) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (c.ctx.is_admin(), &c.base, &c.tenant, &c.path_and_query).hash(&mut h);
    h.finish()
}

impl<T: PartialEq> Rendered<T> {
    /// The body `render` gives for `input` and the caller: the one rendered before when nothing it depends on
    /// changed.
    pub(crate) fn body(
        &self,
        c: &Caller,
        input: T,
        render: impl FnOnce(&Caller, &T) -> Value,
    ) -> Result<Bytes, ApiError> {
        let k = key(c);
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = entries.get(&k).filter(|e| e.matches(c, &input)) {
                return Ok(e.body.clone());
            }
        }
        // Serializing a JSON value does not fail (its keys are strings); answered as a 500 should it ever.
        let body = Bytes::from(
            serde_json::to_vec(&render(c, &input))
                .map_err(|e| ApiError(trove_core::Error::backend("http", e, false)))?,
        );
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            k,
            Entry {
                base: c.base.clone(),
                tenant: c.tenant.clone(),
                admin: c.ctx.is_admin(),
                path: c.path_and_query.clone(),
                input,
                body: body.clone(),
            },
        );
        Ok(body)
    }
}

/// The rendered-body caches of the catalog reads.
#[derive(Default)]
pub(crate) struct RenderedBodies {
    /// `GET /datastores`.
    pub(crate) datastores: Rendered<Vec<trove_core::api::DatastoreView>>,
    /// `GET /datastores/{ds}/versions`.
    pub(crate) versions: Rendered<Vec<trove_core::api::VersionView>>,
    /// `GET /flavors`.
    pub(crate) flavors: Rendered<Vec<trove_core::model::Flavor>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use trove_core::ports::RequestContext;

    fn caller(base: &str, admin: bool) -> Caller {
        let mut ctx = RequestContext::tenant("t");
        if admin {
            ctx.roles.push("admin".into());
        }
        Caller {
            ctx,
            tenant: "t".into(),
            base: base.into(),
            path_and_query: "/v1.0/t/flavors".into(),
        }
    }

    #[test]
    fn a_body_is_reused_only_for_equal_data_and_the_same_caller_view() {
        let cache = Rendered::<Vec<u32>>::default();
        let renders = Cell::new(0);
        let render = |c: &Caller, v: &Vec<u32>| {
            renders.set(renders.get() + 1);
            serde_json::json!({ "base": c.base, "admin": c.ctx.is_admin(), "v": v })
        };
        let a = caller("http://a", false);
        let first = cache.body(&a, vec![1, 2], render).expect("body");
        let again = cache.body(&a, vec![1, 2], render).expect("body");
        assert_eq!((first.clone(), renders.get()), (again, 1), "reused");
        let changed = cache.body(&a, vec![1, 3], render).expect("body");
        assert_eq!(renders.get(), 2, "new data is rendered");
        assert_ne!(changed, first);
        let other_host = cache.body(&caller("http://b", false), vec![1, 3], render);
        assert!(String::from_utf8_lossy(&other_host.expect("body")).contains("http://b"));
        let admin = cache.body(&caller("http://a", true), vec![1, 3], render);
        assert!(String::from_utf8_lossy(&admin.expect("body")).contains("\"admin\":true"));
        assert_eq!(renders.get(), 4, "another caller view is rendered");
    }
}
