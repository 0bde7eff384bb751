//! The configuration facet on the wire.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{to_value, GuestClient, GuestRequest};
use crate::error::Result;
use crate::model::Facet;
use crate::ports::{not_supported, ConfigurationFacet, DatastoreStrategy};

/// Requests of the configuration facet ([`ConfigurationFacet`]), with upstream's method names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum ConfigurationRequest {
    /// Apply configuration overrides (the set replaces the one before); answers whether a restart is needed.
    ApplyOverrides {
        /// Parameter name to value.
        overrides: Map<String, Value>,
    },
}

impl ConfigurationRequest {
    /// Runs the request on the facet.
    pub async fn serve(self, facet: &dyn ConfigurationFacet) -> Result<Value> {
        match self {
            ConfigurationRequest::ApplyOverrides { overrides } => {
                to_value(facet.apply_overrides(&overrides).await)
            }
        }
    }

    /// Runs the request on `strategy`'s configuration facet; without one, upstream's 422.
    pub async fn serve_on(self, strategy: &dyn DatastoreStrategy) -> Result<Value> {
        match strategy.configuration() {
            Some(f) => self.serve(f).await,
            None => Err(not_supported(
                strategy.manager(),
                Facet::Configuration.as_str(),
            )),
        }
    }
}

impl GuestClient {
    /// Applies configuration overrides; answers whether a restart is needed for them to take effect.
    pub async fn apply_overrides(&self, overrides: Map<String, Value>) -> Result<bool> {
        let req = GuestRequest::Configuration(ConfigurationRequest::ApplyOverrides { overrides });
        self.call(req, self.high()).await
    }
}
