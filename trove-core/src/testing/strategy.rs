//! Conformance suite for [`crate::ports::DatastoreStrategy`]: what the guest agent asks of an engine.
//!
//! [`run_all`] takes a factory for a fresh (never prepared) strategy, so real engine strategies run the same
//! checks as the simulated one. Checks for what the manager does not claim ([`crate::model::Capabilities`])
//! verify the 422 "not supported" answer instead.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Map;

use crate::error::Result;
use crate::model::{DatabaseSpec, Secret, UserSpec, UserUpdate};
use crate::ports::{DatastoreStrategy, PrepareRequest};
use crate::state::ServiceStatus;

/// How long a check waits for an engine to report that it runs.
pub const READY_LIMIT: Duration = Duration::from_secs(60);

/// A shared strategy.
pub type DynStrategy = Arc<dyn DatastoreStrategy>;

/// Database created by [`prepare_request`].
pub const PREPARED_DB: &str = "conf_db1";
/// User created by [`prepare_request`].
pub const PREPARED_USER: &str = "conf_user1";

fn db(name: &str) -> DatabaseSpec {
    DatabaseSpec {
        name: name.into(),
        character_set: None,
        collate: None,
    }
}

fn is_running(s: ServiceStatus) -> bool {
    matches!(s, ServiceStatus::Running | ServiceStatus::Healthy)
}

/// The prepare request the suite uses: one database and one user with access to it, where the manager supports
/// them.
pub fn prepare_request(strategy: &DynStrategy) -> PrepareRequest {
    let caps = strategy.capabilities();
    PrepareRequest {
        memory_mb: 512,
        volume_size_gb: Some(1),
        databases: if caps.databases {
            vec![db(PREPARED_DB)]
        } else {
            vec![]
        },
        users: if caps.users {
            vec![UserSpec {
                name: PREPARED_USER.into(),
                password: Secret::new("Conformance-pw1"),
                host: None,
                databases: if caps.databases {
                    vec![PREPARED_DB.into()]
                } else {
                    vec![]
                },
            }]
        } else {
            vec![]
        },
        root_password: None,
        overrides: Map::new(),
    }
}

/// Waits until the engine reports that it runs; fails the check after [`READY_LIMIT`].
pub async fn wait_running(strategy: &DynStrategy, what: &str) {
    let start = std::time::Instant::now();
    loop {
        let st = strategy.status().await;
        if is_running(st.status) {
            return;
        }
        assert!(
            start.elapsed() < READY_LIMIT,
            "{what}: engine not running after {READY_LIMIT:?}: {:?} {:?}",
            st.status,
            st.reason
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Database names, sorted.
async fn db_names(strategy: &DynStrategy) -> Vec<String> {
    let mut v: Vec<String> = strategy
        .list_databases()
        .await
        .expect("list_databases")
        .into_iter()
        .map(|d| d.name)
        .collect();
    v.sort();
    v
}

/// A fresh strategy's status does not claim a running engine, and asking does not fail.
pub async fn fresh_engine_is_not_running(strategy: &DynStrategy) {
    let st = strategy.status().await;
    assert!(
        !is_running(st.status),
        "an unprepared engine reports {:?}",
        st.status
    );
}

/// `prepare` starts the engine with the requested databases and users, and a second `prepare` changes nothing.
pub async fn prepare_is_idempotent(strategy: &DynStrategy) {
    let req = prepare_request(strategy);
    strategy.prepare(&req).await.expect("prepare");
    wait_running(strategy, "after prepare").await;
    let caps = strategy.capabilities();
    if caps.databases {
        assert!(
            db_names(strategy).await.contains(&PREPARED_DB.to_string()),
            "prepare creates databases"
        );
    }
    let users_before = if caps.users {
        Some(strategy.list_users().await.expect("list_users"))
    } else {
        None
    };
    if let Some(users) = &users_before {
        assert!(
            users.iter().any(|u| u.name == PREPARED_USER),
            "prepare creates users"
        );
    }
    strategy.prepare(&req).await.expect("prepare is idempotent");
    wait_running(strategy, "after a second prepare").await;
    if let Some(before) = users_before {
        let after = strategy.list_users().await.expect("list_users");
        assert_eq!(
            after.len(),
            before.len(),
            "a second prepare creates no users"
        );
    }
}

/// Databases: create, list, refuse duplicates, delete, and 404 for a missing one.
pub async fn databases_lifecycle(strategy: &DynStrategy) {
    strategy
        .create_databases(&[db("conf_db2"), db("conf_db3")])
        .await
        .expect("create_databases");
    let names = db_names(strategy).await;
    for n in ["conf_db2", "conf_db3"] {
        assert!(
            names.contains(&n.to_string()),
            "created database {n} is listed: {names:?}"
        );
    }
    let e = strategy
        .create_databases(&[db("conf_db2")])
        .await
        .expect_err("a duplicate database is refused");
    assert_eq!(e.fault().status, 400, "duplicate database: {e}");
    strategy
        .delete_database("conf_db3")
        .await
        .expect("delete_database");
    assert!(
        !db_names(strategy).await.contains(&"conf_db3".to_string()),
        "deleted database is not listed"
    );
    let e = strategy
        .delete_database("conf_db_missing")
        .await
        .expect_err("deleting a missing database fails");
    assert_eq!(e.fault().status, 404, "missing database: {e}");
}

/// Users: create, list with host and databases, refuse duplicates, change password, rename, delete, 404s.
pub async fn users_lifecycle(strategy: &DynStrategy) {
    let caps = strategy.capabilities();
    let user = UserSpec {
        name: "conf_user2".into(),
        password: Secret::new("Conformance-pw2"),
        host: None,
        databases: if caps.databases {
            vec![PREPARED_DB.into()]
        } else {
            vec![]
        },
    };
    strategy
        .create_users(std::slice::from_ref(&user))
        .await
        .expect("create_users");
    let listed = strategy.list_users().await.expect("list_users");
    let u = listed
        .iter()
        .find(|u| u.name == "conf_user2")
        .expect("created user is listed");
    assert_eq!(u.host, "%", "a user created without host has host %");
    if caps.databases {
        assert!(
            u.databases.contains(&PREPARED_DB.to_string()),
            "the user's grants are listed: {u:?}"
        );
    }
    let e = strategy
        .create_users(std::slice::from_ref(&user))
        .await
        .expect_err("a duplicate user is refused");
    assert_eq!(e.fault().status, 400, "duplicate user: {e}");
    let changed = UserSpec {
        password: Secret::new("Conformance-pw3"),
        ..user.clone()
    };
    strategy
        .change_passwords(&[changed])
        .await
        .expect("change_passwords");
    let rename = UserUpdate {
        name: Some("conf_user3".into()),
        ..UserUpdate::default()
    };
    strategy
        .update_user("conf_user2", "%", &rename)
        .await
        .expect("update_user");
    let names: Vec<String> = strategy
        .list_users()
        .await
        .expect("list_users")
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert!(
        names.contains(&"conf_user3".to_string()) && !names.contains(&"conf_user2".to_string()),
        "{names:?}"
    );
    strategy
        .delete_user("conf_user3", "%")
        .await
        .expect("delete_user");
    let names: Vec<String> = strategy
        .list_users()
        .await
        .expect("list_users")
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert!(
        !names.contains(&"conf_user3".to_string()),
        "deleted user is not listed"
    );
    let e = strategy
        .delete_user("conf_user_missing", "%")
        .await
        .expect_err("deleting a missing user fails");
    assert_eq!(e.fault().status, 404, "missing user: {e}");
}

/// Grants: grant, list, revoke; unknown user or database is a 404.
pub async fn grant_and_revoke(strategy: &DynStrategy) {
    strategy
        .create_databases(&[db("conf_db4")])
        .await
        .expect("create_databases");
    strategy
        .grant_access(PREPARED_USER, "%", &["conf_db4".to_string()])
        .await
        .expect("grant_access");
    let grants = |users: Vec<crate::ports::UserInfo>| {
        users
            .into_iter()
            .find(|u| u.name == PREPARED_USER)
            .map(|u| u.databases)
            .unwrap_or_default()
    };
    let g = grants(strategy.list_users().await.expect("list_users"));
    assert!(
        g.contains(&"conf_db4".to_string()),
        "granted database is listed: {g:?}"
    );
    strategy
        .revoke_access(PREPARED_USER, "%", "conf_db4")
        .await
        .expect("revoke_access");
    let g = grants(strategy.list_users().await.expect("list_users"));
    assert!(
        !g.contains(&"conf_db4".to_string()),
        "revoked database is not listed: {g:?}"
    );
    let e = strategy
        .grant_access("conf_user_missing", "%", &["conf_db4".to_string()])
        .await
        .expect_err("granting to a missing user fails");
    assert_eq!(e.fault().status, 404, "missing user: {e}");
    let e = strategy
        .grant_access(PREPARED_USER, "%", &["conf_db_missing".to_string()])
        .await
        .expect_err("granting a missing database fails");
    assert_eq!(e.fault().status, 404, "missing database: {e}");
    strategy
        .delete_database("conf_db4")
        .await
        .expect("delete_database");
}

/// Root: enable with a generated or given password, disable.
pub async fn root_enable_disable(strategy: &DynStrategy) {
    let generated = strategy.enable_root(None).await.expect("enable_root");
    assert!(
        !generated.is_empty(),
        "enable_root without a password generates one"
    );
    let given = strategy
        .enable_root(Some(Secret::new("Conformance-root1")))
        .await
        .expect("enable_root again");
    assert_eq!(
        given.expose(),
        "Conformance-root1",
        "enable_root uses the given password"
    );
    strategy.disable_root().await.expect("disable_root");
}

/// Data survives a restart, and the engine runs afterwards.
pub async fn restart_keeps_data(strategy: &DynStrategy) {
    let caps = strategy.capabilities();
    let (dbs, users) = (
        if caps.databases {
            Some(db_names(strategy).await)
        } else {
            None
        },
        if caps.users {
            Some(strategy.list_users().await.expect("list_users").len())
        } else {
            None
        },
    );
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
            strategy.list_users().await.expect("list_users").len(),
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

/// What the manager does not claim is refused with a 422.
pub async fn unsupported_is_422(strategy: &DynStrategy) {
    let caps = strategy.capabilities();
    let mut results: Vec<(&str, Result<()>)> = Vec::new();
    if !caps.databases {
        results.push((
            "list_databases",
            strategy.list_databases().await.map(|_| ()),
        ));
        results.push((
            "create_databases",
            strategy.create_databases(&[db("conf_x")]).await,
        ));
        results.push((
            "grant_access",
            strategy
                .grant_access(PREPARED_USER, "%", &["conf_x".into()])
                .await,
        ));
    }
    if !caps.users {
        results.push(("list_users", strategy.list_users().await.map(|_| ())));
    }
    if !caps.root {
        results.push(("enable_root", strategy.enable_root(None).await.map(|_| ())));
    }
    for (what, r) in results {
        match r {
            Err(e) => assert_eq!(
                e.fault().status,
                422,
                "{what} on {}: {e}",
                strategy.manager()
            ),
            Ok(()) => panic!("{what} must be refused by {}", strategy.manager()),
        }
    }
}

/// Runs every check on one fresh strategy made by `fresh`, in order, leaving the engine running.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<DynStrategy>>,
{
    let strategy = fresh().await.expect("a fresh strategy");
    let caps = strategy.capabilities();
    fresh_engine_is_not_running(&strategy).await;
    prepare_is_idempotent(&strategy).await;
    if caps.databases {
        databases_lifecycle(&strategy).await;
    }
    if caps.users {
        users_lifecycle(&strategy).await;
    }
    if caps.users && caps.databases {
        grant_and_revoke(&strategy).await;
    }
    if caps.root {
        root_enable_disable(&strategy).await;
    }
    unsupported_is_422(&strategy).await;
    restart_keeps_data(&strategy).await;
    stop_reports_shutdown(&strategy).await;
    flavor_and_filesystem(&strategy).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{SimulatedStrategy, SimulatedStrategyFactory};
    use crate::model::Manager;
    use crate::ports::{GuestSpec, StrategyFactory};

    #[tokio::test]
    async fn simulated_strategy_passes_the_suite_for_every_manager() {
        for manager in Manager::ALL {
            run_all(|| async move {
                Ok(Arc::new(SimulatedStrategy::standalone(manager)) as DynStrategy)
            })
            .await;
        }
    }

    #[tokio::test]
    async fn simulated_factory_crash_shows_in_status() {
        let factory = SimulatedStrategyFactory::new();
        let spec = crate::testing::sample_server_spec(Manager::Postgresql);
        let ctx = GuestSpec {
            instance_id: spec.instance_id,
            datastore_version: spec.datastore_version,
            flavor: spec.flavor,
            server_dir: "/memory/x".into(),
            volume_path: None,
            bind_address: "127.0.0.1".into(),
            port: 5432,
        };
        let f = factory.clone();
        let c = ctx.clone();
        run_all(|| async move { f.strategy(&c) }).await;
        factory.engine(ctx.instance_id).crash("disk on fire");
        let st = factory.strategy(&ctx).expect("strategy").status().await;
        assert_eq!(st.status, ServiceStatus::Crashed);
        assert_eq!(st.reason.as_deref(), Some("disk on fire"));
    }
}
