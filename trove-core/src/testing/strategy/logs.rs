//! The guest-logs part of the strategy suite (strategies offering [`crate::ports::LogsFacet`]).

use super::DynStrategy;
use crate::guest_log::GuestLogContext;
use crate::model::{exposed_logs, LogAction, LogActionRequest, LogStatus};

/// The list holds the manager's exposed logs; the first can be turned on and off; a log the manager does not
/// expose is a 404; publishing without a log store is refused and changes nothing.
pub async fn list_enable_disable(strategy: &DynStrategy) {
    let logs = strategy.logs().expect("the strategy offers the logs facet");
    let m = strategy.manager();
    let ctx = GuestLogContext {
        instance_id: uuid::Uuid::new_v4(),
        store: None,
    };
    let listed: Vec<String> = logs
        .guest_log_list(&ctx)
        .await
        .expect("guest_log_list")
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(listed, exposed_logs(m), "{m}: the exposed logs are listed");
    let e = logs
        .guest_log_action(
            &ctx,
            &LogActionRequest::new("conf_no_such_log", LogAction::Enable),
        )
        .await
        .expect_err("an unknown log");
    assert_eq!(e.fault().status, 404, "{m}: {e}");
    let Some(name) = exposed_logs(m).first() else {
        return;
    };
    let on = logs
        .guest_log_action(&ctx, &LogActionRequest::new(*name, LogAction::Enable))
        .await
        .expect("enable a log");
    assert_ne!(on.status, LogStatus::Disabled, "{m}: {name} is on");
    let e = logs
        .guest_log_action(&ctx, &LogActionRequest::new(*name, LogAction::Publish))
        .await
        .expect_err("publishing without a log store");
    assert_eq!(e.fault().status, 501, "{m}: {e}");
    let off = logs
        .guest_log_action(&ctx, &LogActionRequest::new(*name, LogAction::Disable))
        .await
        .expect("disable a log");
    assert_eq!(off.status, LogStatus::Disabled, "{m}: {name} is off");
}

/// Every check of the logs part.
pub async fn run(strategy: &DynStrategy) {
    list_enable_disable(strategy).await;
}
