//! Bounded waits for an observed condition (never a sleep followed by an assertion).

use std::time::{Duration, Instant};

pub use trove_core::testing::fixtures::eventually;

/// Polls an instance through the core API until `pred` holds; panics on ERROR or after `within`.
pub async fn wait_view(
    api: &trove_core::api::ApiService,
    ctx: &trove_core::ports::RequestContext,
    id: uuid::Uuid,
    what: &str,
    within: Duration,
    pred: impl Fn(&trove_core::api::InstanceView) -> bool,
) -> trove_core::api::InstanceView {
    let start = Instant::now();
    loop {
        let v = api
            .show_instance(ctx, id)
            .await
            .unwrap_or_else(|e| panic!("{what}: show failed: {e}"));
        if pred(&v) {
            return v;
        }
        assert!(
            v.status != "ERROR",
            "{what}: the instance went to ERROR: {:?} {:?}",
            v.instance.fault,
            v.service
        );
        assert!(
            start.elapsed() < within,
            "{what}: not reached within {within:?}; status {} operating_status {} task {:?} service {:?}",
            v.status,
            v.operating_status,
            v.instance.task,
            v.service
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// No task running and the engine HEALTHY.
pub fn idle_healthy(v: &trove_core::api::InstanceView) -> bool {
    v.instance.task == trove_core::state::TaskStatus::None && v.operating_status == "HEALTHY"
}
