//! The root facet on the wire.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{to_value, unit, GuestClient, GuestRequest};
use crate::error::Result;
use crate::model::{Facet, Secret};
use crate::ports::{not_supported, DatastoreStrategy, RootFacet};

/// Requests of the root facet ([`RootFacet`]), with upstream's method names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum RootRequest {
    /// Enable root with the given (or a generated) password; answers the password.
    EnableRoot {
        /// The password, when the caller chose one.
        root_password: Option<Secret>,
    },
    /// Disable root.
    DisableRoot,
}

impl RootRequest {
    /// Runs the request on the facet.
    pub async fn serve(self, facet: &dyn RootFacet) -> Result<Value> {
        match self {
            RootRequest::EnableRoot { root_password } => {
                to_value(facet.enable_root(root_password).await)
            }
            RootRequest::DisableRoot => unit(facet.disable_root().await),
        }
    }

    /// Runs the request on `strategy`'s root facet; without one, upstream's 422.
    pub async fn serve_on(self, strategy: &dyn DatastoreStrategy) -> Result<Value> {
        match strategy.root() {
            Some(f) => self.serve(f).await,
            None => Err(not_supported(strategy.manager(), Facet::Root.as_str())),
        }
    }
}

impl GuestClient {
    /// Enables root with the given or a generated password; answers the password.
    pub async fn enable_root(&self, root_password: Option<Secret>) -> Result<Secret> {
        let req = GuestRequest::Root(RootRequest::EnableRoot { root_password });
        self.call(req, self.high()).await
    }
    /// Disables root.
    pub async fn disable_root(&self) -> Result<()> {
        let req = GuestRequest::Root(RootRequest::DisableRoot);
        self.call_unit(req, self.high()).await
    }
}
