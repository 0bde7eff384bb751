//! The guest-logs facet on the wire.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{to_value, GuestClient, GuestRequest};
use crate::error::{Error, Result};
use crate::guest_log::GuestLogContext;
use crate::model::{GuestLog, LogActionRequest};
use crate::ports::{DatastoreStrategy, LogsFacet};

/// Requests of the guest-logs facet ([`LogsFacet`]), with upstream's method names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum LogsRequest {
    /// The logs the guest exposes.
    GuestLogList,
    /// One action on one log (at most one flag set).
    GuestLogAction {
        /// The log.
        log_name: String,
        /// Turn it on.
        enable: bool,
        /// Turn it off.
        disable: bool,
        /// Publish what was written since the last publish.
        publish: bool,
        /// Delete what was published.
        discard: bool,
    },
}

impl From<&LogActionRequest> for LogsRequest {
    fn from(req: &LogActionRequest) -> LogsRequest {
        LogsRequest::GuestLogAction {
            log_name: req.name.clone(),
            enable: req.enable,
            disable: req.disable,
            publish: req.publish,
            discard: req.discard,
        }
    }
}

impl LogsRequest {
    /// Runs the request on the facet, for the instance and log store of `ctx`.
    pub async fn serve(self, facet: &dyn LogsFacet, ctx: &GuestLogContext) -> Result<Value> {
        match self {
            LogsRequest::GuestLogList => to_value(facet.guest_log_list(ctx).await),
            LogsRequest::GuestLogAction {
                log_name,
                enable,
                disable,
                publish,
                discard,
            } => {
                let req = LogActionRequest {
                    name: log_name,
                    enable,
                    disable,
                    publish,
                    discard,
                };
                to_value(facet.guest_log_action(ctx, &req).await)
            }
        }
    }

    /// Runs the request on `strategy`'s logs facet; without one the engine exposes no log: the list is empty and
    /// every name is a 404.
    pub async fn serve_on(
        self,
        strategy: &dyn DatastoreStrategy,
        ctx: &GuestLogContext,
    ) -> Result<Value> {
        match (strategy.logs(), self) {
            (Some(f), req) => req.serve(f, ctx).await,
            (None, LogsRequest::GuestLogList) => to_value(Ok(Vec::<GuestLog>::new())),
            (None, LogsRequest::GuestLogAction { log_name, .. }) => {
                Err(Error::not_found("Log", log_name.escape_default()))
            }
        }
    }
}

impl GuestClient {
    /// The logs the guest exposes.
    pub async fn guest_log_list(&self) -> Result<Vec<GuestLog>> {
        self.call(GuestRequest::Logs(LogsRequest::GuestLogList), self.high())
            .await
    }
    /// One action on one log (publishing copies the log: the high timeout).
    pub async fn guest_log_action(&self, req: &LogActionRequest) -> Result<GuestLog> {
        self.call(GuestRequest::Logs(req.into()), self.high()).await
    }
}
