//! [`ConfigurationFacet`]: configuration groups applied to the engine.

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::error::Result;

/// Configuration overrides (upstream `apply_overrides` / `update_overrides`).
///
/// # Contract
/// - The given set replaces the one applied before (an empty set removes every override); it is kept across
///   restarts.
/// - The answer is whether a changed parameter waits for a restart; applying the set in force again answers
///   what it answered before until the engine was restarted.
/// - A parameter name or value that cannot be rendered safely is a 400, and nothing changes.
#[async_trait]
pub trait ConfigurationFacet: Send + Sync {
    /// Applies configuration overrides; returns whether a restart is needed for them to take effect.
    async fn apply_overrides(&self, overrides: &Map<String, Value>) -> Result<bool>;
}
