//! The workflows this crate ships, one module each, and the steps several of them share.
//!
//! | workflow | module |
//! |---|---|
//! | create an instance (or restore one from a backup) | [`create`] |
//! | take a backup | [`backup`] |
//! | delete / force delete | [`delete`] |
//! | restart the engine / reboot the server (mgmt) | [`restart`] |
//! | resize flavor / resize volume | [`resize`] |
//! | apply a configuration group | [`configuration`] |
//! | upgrade to another datastore version | [`upgrade`] |
//! | migrate to another host (mgmt) | [`migrate`] |
//! | rebuild the server (mgmt) | [`rebuild`] |
//! | detach a replica, promote a replica (switchover), eject a source | [`replication`] |
//! | create, grow, shrink, delete a cluster; start it again after a full stop | [`cluster`] |

use serde::{Deserialize, Serialize};
use serde_json::Map;
use std::future::Future;
use std::time::Duration;

use super::context::{Failure, StepContext, StepResult, Stop, WaitHealthy};
use super::registry::Registry;
use crate::error::Result;
use crate::ports::{DynClock, PrepareRequest};
use crate::state::ServiceStatus;

pub mod backup;
pub mod cluster;
pub mod cluster_rolling;
pub mod configuration;
pub mod create;
pub mod delete;
pub mod migrate;
pub mod rebuild;
pub mod replication;
pub mod resize;
pub mod restart;
pub mod upgrade;

pub use backup::BackupParams;
pub use configuration::ApplyConfigurationParams;
pub use create::CreateParams;
pub use delete::{DeleteParams, ForceDeleteParams};
pub use migrate::MigrateParams;
pub use rebuild::RebuildParams;
pub use replication::{DetachParams, EjectParams, PromoteParams};
pub use resize::{ResizeFlavorParams, ResizeVolumeParams};
pub use restart::{RebootParams, RestartParams};
pub use upgrade::UpgradeParams;

/// Adds every shipped workflow to `r`.
pub(super) fn register_standard(r: Registry) -> Registry {
    r.register(create::Create)
        .register(delete::Delete)
        .register(delete::ForceDelete)
        .register(restart::Restart)
        .register(restart::Reboot)
        .register(resize::ResizeFlavor)
        .register(resize::ResizeVolume)
        .register(configuration::ApplyConfiguration)
        .register(upgrade::Upgrade)
        .register(migrate::Migrate)
        .register(rebuild::Rebuild)
        .register(backup::TakeBackup)
        .register(replication::Detach)
        .register(replication::Promote)
        .register(replication::Eject)
        .register(cluster::ClusterCreate)
        .register(cluster::ClusterGrow)
        .register(cluster::ClusterShrink)
        .register(cluster_rolling::ClusterRolling)
        .register(cluster::ClusterDelete)
        .register(cluster::ClusterRecover)
}

/// Whether the guest stopped its engine in a tolerant `stop_db` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stopped {
    pub stopped: bool,
}

/// Step `stop_db`: asks the guest to stop its engine, waiting at most `timeout`. A guest that does not answer is
/// only logged: the steps after it (compute stops the engine itself before it moves, rebuilds or deletes a
/// server) do not depend on it.
pub(crate) async fn stop_db_tolerant(
    cx: &mut StepContext<'_>,
    timeout: Duration,
) -> StepResult<Stopped> {
    let guest = cx.guest();
    let instance_id = cx.instance_id();
    cx.step("stop_db", |_| async move {
        match guest.stop_db(timeout).await {
            Ok(()) => Ok(Stopped { stopped: true }),
            Err(e) => {
                tracing::info!(instance = %instance_id, error = %e, "stop_db failed; continuing");
                Ok(Stopped { stopped: false })
            }
        }
    })
    .await
}

/// What the guest needs to bring the engine up again on its data: the flavor's memory, the volume size and the
/// overrides of the attached configuration group. No databases, users or root password.
pub(crate) async fn rebuild_request(cx: &StepContext<'_>) -> StepResult<PrepareRequest> {
    let inst = cx.instance().await?;
    let overrides = match inst.configuration_id {
        Some(cid) => cx
            .store()
            .get_configuration(cid)
            .await
            .map_err(super::context::abort_on_store)?
            .map(|c| c.values)
            .unwrap_or_default(),
        None => Map::new(),
    };
    Ok(PrepareRequest {
        memory_mb: inst.ram_mb,
        volume_size_gb: inst.volume_size,
        databases: vec![],
        users: vec![],
        root_password: None,
        overrides,
        restore: None,
    })
}

/// Steps `ask` and `wait`: casts `rebuild` to the guest (the cast waits in the guest's topic until the guest
/// serves it) and waits for its healthy report, asking again when the guest reports it is idle
/// ([`StepContext::guest_work`]).
pub(crate) async fn guest_rebuild(
    cx: &mut StepContext<'_>,
    ask: &str,
    wait: &str,
) -> StepResult<ServiceStatus> {
    let req = rebuild_request(cx).await?;
    let guest = cx.guest();
    let high = cx.config().agent_call_high_timeout;
    cx.guest_work(wait, WaitHealthy::after(ask, high), || {
        let (guest, req) = (guest.clone(), req.clone());
        async move {
            guest.rebuild(req).await.map_err(|e| {
                Stop::Fail(Failure::new("The guest could not be asked to rebuild.", &e))
            })
        }
    })
    .await
}

/// Runs `f` up to three times while it fails with a transient error, pausing on the workflow's clock.
pub(crate) async fn retry<F, Fut>(clock: &DynClock, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut attempt = 0u32;
    loop {
        match f().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && attempt < 2 => {
                attempt += 1;
                clock
                    .sleep(Duration::from_millis(50 * u64::from(attempt)))
                    .await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A failure to hand to `?` from inside a step's effect.
pub(crate) fn fail(message: &str, e: &crate::Error) -> Stop {
    Stop::Fail(Failure::new(message, e))
}
