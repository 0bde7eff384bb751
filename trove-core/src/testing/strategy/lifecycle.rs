//! The lifecycle part of the strategy suite: what every strategy does, whatever facets it offers.

use super::{
    db, db_names, is_running, offers, prepare_request, user_count, wait_running, DynStrategy,
    PREPARED_DB, PREPARED_USER,
};
use crate::model::{Facet, Secret, UserSpec};
use crate::state::ServiceStatus;

/// A fresh strategy's status does not claim a running engine, and asking does not fail.
pub async fn fresh_engine_is_not_running(strategy: &DynStrategy) {
    let st = strategy.status().await;
    assert!(
        !is_running(st.status),
        "an unprepared engine reports {:?}",
        st.status
    );
}

/// On a fresh engine, `prepare` with databases or users the strategy does not offer is a 422, and the engine
/// is not started by it.
pub async fn prepare_refuses_what_is_not_offered(strategy: &DynStrategy) {
    let mut refused = Vec::new();
    if !offers(strategy, Facet::Databases) {
        let mut req = prepare_request(strategy);
        req.databases = vec![db(PREPARED_DB)];
        refused.push(("databases", req));
    }
    if !offers(strategy, Facet::Users) {
        let mut req = prepare_request(strategy);
        req.users = vec![UserSpec {
            name: PREPARED_USER.into(),
            password: Secret::new("Conformance-pw1"),
            host: None,
            databases: vec![],
        }];
        refused.push(("users", req));
    }
    for (what, req) in refused {
        let e = strategy
            .prepare(&req)
            .await
            .expect_err("prepare with what the strategy does not offer");
        assert_eq!(
            e.fault().status,
            422,
            "{}: prepare with {what}: {e}",
            strategy.manager()
        );
        fresh_engine_is_not_running(strategy).await;
    }
}

/// `prepare` starts the engine with the requested databases and users, and a second `prepare` changes nothing.
pub async fn prepare_is_idempotent(strategy: &DynStrategy) {
    let req = prepare_request(strategy);
    strategy.prepare(&req).await.expect("prepare");
    wait_running(strategy, "after prepare").await;
    if offers(strategy, Facet::Databases) {
        assert!(
            db_names(strategy).await.contains(&PREPARED_DB.to_string()),
            "prepare creates databases"
        );
    }
    let users_before = if offers(strategy, Facet::Users) {
        let users = strategy
            .users()
            .expect("users facet")
            .list_users()
            .await
            .expect("list_users");
        assert!(
            users.iter().any(|u| u.name == PREPARED_USER),
            "prepare creates users"
        );
        Some(users.len())
    } else {
        None
    };
    strategy.prepare(&req).await.expect("prepare is idempotent");
    wait_running(strategy, "after a second prepare").await;
    if let Some(before) = users_before {
        assert_eq!(
            user_count(strategy).await,
            before,
            "a second prepare creates no users"
        );
    }
}

/// Data survives a restart, and the engine runs afterwards.
pub async fn restart_keeps_data(strategy: &DynStrategy) {
    let dbs = if offers(strategy, Facet::Databases) {
        Some(db_names(strategy).await)
    } else {
        None
    };
    let users = if offers(strategy, Facet::Users) {
        Some(user_count(strategy).await)
    } else {
        None
    };
    strategy.restart().await.expect("restart");
    wait_running(strategy, "after restart").await;
    if let Some(before) = dbs {
        assert_eq!(
            db_names(strategy).await,
            before,
            "databases survive a restart"
        );
    }
    if let Some(before) = users {
        assert_eq!(
            user_count(strategy).await,
            before,
            "users survive a restart"
        );
    }
}

/// After `stop`, `status` answers SHUTDOWN (not an error); `start` brings it back.
pub async fn stop_reports_shutdown(strategy: &DynStrategy) {
    strategy.stop().await.expect("stop");
    let st = strategy.status().await;
    assert_eq!(
        st.status,
        ServiceStatus::Shutdown,
        "a stopped engine is SHUTDOWN ({:?})",
        st.reason
    );
    strategy.start().await.expect("start");
    wait_running(strategy, "after start").await;
}

/// A new flavor's memory is applied and the engine runs afterwards; volume stats are reported.
pub async fn flavor_and_filesystem(strategy: &DynStrategy) {
    strategy.apply_flavor(1024).await.expect("apply_flavor");
    wait_running(strategy, "after apply_flavor").await;
    let fs = strategy.filesystem_stats().await.expect("filesystem_stats");
    assert!(fs.total_bytes > 0, "a volume has a size");
    assert!(fs.used_bytes > 0, "a prepared engine uses some bytes");
}
