//! [`LogsFacet`]: the logs the engine exposes.

use async_trait::async_trait;

use crate::error::Result;
use crate::guest_log::GuestLogContext;
use crate::model::{GuestLog, LogActionRequest};

/// Guest logs (upstream `guest_log_list`, `guest_log_action`); the bookkeeping is
/// [`crate::guest_log`]'s.
///
/// # Contract
/// - The list holds exactly the manager's exposed logs ([`crate::model::exposed_logs`]).
/// - An action on a log the manager does not expose is a 404; see [`crate::guest_log::log_action`] for the rest.
#[async_trait]
pub trait LogsFacet: Send + Sync {
    /// The logs the engine exposes.
    async fn guest_log_list(&self, ctx: &GuestLogContext) -> Result<Vec<GuestLog>>;
    /// One action on one log.
    async fn guest_log_action(
        &self,
        ctx: &GuestLogContext,
        req: &LogActionRequest,
    ) -> Result<GuestLog>;
}
