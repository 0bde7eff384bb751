//! [`RootFacet`]: the engine's superuser.

use async_trait::async_trait;

use crate::error::Result;
use crate::model::Secret;

/// The root account (upstream `enable_root`, `disable_root`).
///
/// # Contract
/// - `enable_root` uses the given password, or generates one when none (or an empty one) is given, and answers
///   it; enabling again changes the password.
/// - `disable_root` is idempotent.
#[async_trait]
pub trait RootFacet: Send + Sync {
    /// Enables root with the given or a generated password; returns the password.
    async fn enable_root(&self, password: Option<Secret>) -> Result<Secret>;
    /// Disables root.
    async fn disable_root(&self) -> Result<()>;
}
