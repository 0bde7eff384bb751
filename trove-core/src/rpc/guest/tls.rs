//! The TLS facet on the wire.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{to_value, GuestClient, GuestRequest};
use crate::error::{Error, Result};
use crate::model::{SslChange, SslChangeResult, SslView};
use crate::ports::{DatastoreStrategy, TlsFacet};

/// Requests of the TLS facet ([`TlsFacet`]), with upstream's method names (API 1.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum TlsRequest {
    /// The instance's TLS state.
    SslShow {
        /// Include the certificate PEM.
        include_certificate: bool,
    },
    /// Turn TLS on or off.
    SslAction {
        /// What to do.
        change: SslChange,
    },
    /// Restore the TLS state before the last action.
    SslRollback,
}

impl TlsRequest {
    /// Runs the request on the facet.
    pub async fn serve(self, facet: &dyn TlsFacet) -> Result<Value> {
        match self {
            TlsRequest::SslShow {
                include_certificate,
            } => to_value(facet.ssl_show(include_certificate).await),
            TlsRequest::SslAction { change } => to_value(facet.ssl_action(&change).await),
            TlsRequest::SslRollback => to_value(facet.ssl_rollback().await),
        }
    }

    /// Runs the request on `strategy`'s TLS facet; without one, a 501.
    pub async fn serve_on(self, strategy: &dyn DatastoreStrategy) -> Result<Value> {
        match strategy.tls() {
            Some(f) => self.serve(f).await,
            None => Err(Error::not_implemented(format!(
                "SSL is not supported for datastore {}.",
                strategy.manager()
            ))),
        }
    }
}

impl GuestClient {
    /// The TLS state.
    pub async fn ssl_show(&self, include_certificate: bool) -> Result<SslView> {
        let req = GuestRequest::Tls(TlsRequest::SslShow {
            include_certificate,
        });
        self.call(req, self.high()).await
    }
    /// Turns TLS on or off.
    pub async fn ssl_action(&self, change: SslChange) -> Result<SslChangeResult> {
        let req = GuestRequest::Tls(TlsRequest::SslAction { change });
        self.call(req, self.high()).await
    }
    /// Restores the TLS state before the last action.
    pub async fn ssl_rollback(&self) -> Result<SslChangeResult> {
        self.call(GuestRequest::Tls(TlsRequest::SslRollback), self.high())
            .await
    }
}
