//! `POST /instances/{id}/action`: restart, resize (flavor or volume), promote, eject, reset status (with or
//! without force delete).

use axum::extract::State;
use serde_json::{Map, Value};

use super::{accepted, JsonResult};
use crate::http::bodies::{self, InstanceAction};
use crate::http::extract::{uuid_or_404, Caller, JsonBody, P};
use crate::http::AppState;

/// `POST /instances/{id}/action`.
pub(super) async fn action(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<Map<String, Value>>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    match bodies::instance_action(b)? {
        InstanceAction::Restart => s.api.restart_instance(&c.ctx, id).await?,
        InstanceAction::ResizeFlavor(f) => s.api.resize_flavor(&c.ctx, id, &f).await?,
        InstanceAction::ResizeVolume(n) => s.api.resize_volume(&c.ctx, id, n).await?,
        InstanceAction::Promote => s.api.promote_to_replica_source(&c.ctx, id).await?,
        InstanceAction::Eject => s.api.eject_replica_source(&c.ctx, id).await?,
        InstanceAction::ResetStatus {
            force_delete: false,
        } => s.api.reset_status(&c.ctx, id).await?,
        InstanceAction::ResetStatus { force_delete: true } => {
            s.api.force_delete_instance(&c.ctx, id).await?
        }
    }
    accepted()
}
