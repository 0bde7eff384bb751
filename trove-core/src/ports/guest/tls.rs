//! [`TlsFacet`]: the instance's TLS.

use async_trait::async_trait;

use crate::error::Result;
use crate::model::{SslChange, SslChangeResult, SslView};

/// Instance TLS (upstream `ssl_show`, `ssl_action`, `ssl_rollback`, API 1.3).
///
/// # Contract
/// - A fresh instance shows TLS off.
/// - An action records the state before it, which `ssl_rollback` restores (a rollback without a previous state
///   is a 400); the state survives restarts.
/// - `restart_required` says the engine serves the new state only after a restart.
/// - A mode the engine cannot serve is a 400, and nothing changes.
#[async_trait]
pub trait TlsFacet: Send + Sync {
    /// The TLS state (certificate PEM included when asked).
    async fn ssl_show(&self, include_certificate: bool) -> Result<SslView>;
    /// Turns TLS on (installing a certificate) or off; the state before is kept for [`Self::ssl_rollback`].
    async fn ssl_action(&self, change: &SslChange) -> Result<SslChangeResult>;
    /// Restores the TLS state before the last action.
    async fn ssl_rollback(&self) -> Result<SslChangeResult>;
}
