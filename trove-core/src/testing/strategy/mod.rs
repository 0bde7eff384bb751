//! Conformance suite for [`crate::ports::DatastoreStrategy`]: what the guest agent asks of an engine.
//!
//! [`run_all`] takes a factory for a fresh (never prepared) strategy, so real engine strategies run the same
//! checks as the simulated one. It checks that [`DatastoreStrategy::facets`] matches the accessors, runs the
//! lifecycle part ([`lifecycle`]) and one part per facet the strategy offers ([`users`], [`databases`],
//! [`root`], [`configuration`], [`tls`], [`logs`]), and checks that a request for a facet it lacks gets
//! upstream's answer from the guest agent's dispatch ([`missing_facets_answer_upstream_statuses`]). Replication
//! needs two engines: [`replication::run`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Map;

use crate::error::Result;
use crate::guest_log::GuestLogContext;
use crate::model::{DatabaseSpec, Facet, LogAction, LogActionRequest, Secret, UserSpec};
use crate::ports::{DatastoreStrategy, PrepareRequest};
use crate::rpc::{
    ConfigurationRequest, DatabasesRequest, LogsRequest, RootRequest, TlsRequest, UsersRequest,
};
use crate::state::ServiceStatus;

pub mod configuration;
pub mod databases;
pub mod lifecycle;
pub mod logs;
pub mod replication;
pub mod root;
pub mod tls;
pub mod users;

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

/// Whether `strategy` offers `facet`.
fn offers(strategy: &DynStrategy, facet: Facet) -> bool {
    strategy.facets().contains(facet)
}

/// The prepare request the suite uses: one database and one user with access to it, where the strategy offers
/// those facets.
pub fn prepare_request(strategy: &DynStrategy) -> PrepareRequest {
    let (users, dbs) = (
        offers(strategy, Facet::Users),
        offers(strategy, Facet::Databases),
    );
    PrepareRequest {
        memory_mb: 512,
        volume_size_gb: Some(1),
        databases: if dbs { vec![db(PREPARED_DB)] } else { vec![] },
        users: if users {
            vec![UserSpec {
                name: PREPARED_USER.into(),
                password: Secret::new("Conformance-pw1"),
                host: None,
                databases: if dbs {
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
        restore: None,
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

/// Database names, sorted (the strategy offers the databases facet).
async fn db_names(strategy: &DynStrategy) -> Vec<String> {
    let mut v: Vec<String> = strategy
        .databases()
        .expect("the databases facet")
        .list_databases()
        .await
        .expect("list_databases")
        .into_iter()
        .map(|d| d.name)
        .collect();
    v.sort();
    v
}

/// How many users the engine lists (the strategy offers the users facet).
async fn user_count(strategy: &DynStrategy) -> usize {
    strategy
        .users()
        .expect("the users facet")
        .list_users()
        .await
        .expect("list_users")
        .len()
}

/// [`DatastoreStrategy::facets`] is what the accessors say.
pub fn facets_match_accessors(strategy: &DynStrategy) {
    let facets = strategy.facets();
    let accessors = [
        (Facet::Users, strategy.users().is_some()),
        (Facet::Databases, strategy.databases().is_some()),
        (Facet::Root, strategy.root().is_some()),
        (Facet::Configuration, strategy.configuration().is_some()),
        (Facet::Tls, strategy.tls().is_some()),
        (Facet::Logs, strategy.logs().is_some()),
        (Facet::Backup, strategy.backup().is_some()),
        (Facet::Cluster, strategy.cluster().is_some()),
    ];
    for (facet, offered) in accessors {
        assert_eq!(
            facets.contains(facet),
            offered,
            "{}: facets() says {facets} but the {facet} accessor answers {}",
            strategy.manager(),
            if offered { "Some" } else { "None" }
        );
    }
    // Replicas are seeded from backups: replication without backups cannot be served.
    if facets.contains(Facet::Replication) {
        assert!(
            facets.contains(Facet::Backup),
            "{}: offers replication without backups, which seed its replicas",
            strategy.manager()
        );
    }
}

/// A request for a facet the strategy lacks, dispatched as the guest agent does, gets upstream's answer: 422
/// for users, databases (and grants), root and configuration; 501 for TLS; an empty list and 404s for logs.
pub async fn missing_facets_answer_upstream_statuses(strategy: &DynStrategy) {
    let s = strategy.as_ref();
    let m = s.manager();
    let status = |r: Result<serde_json::Value>, what: &str| match r {
        Ok(v) => panic!("{m}: {what} without its facet answered {v}"),
        Err(e) => e.fault().status,
    };
    if !offers(strategy, Facet::Users) {
        let r = UsersRequest::ListUsers.serve_on(s).await;
        assert_eq!(status(r, "list_users"), 422);
    }
    if !offers(strategy, Facet::Databases) {
        let r = DatabasesRequest::CreateDatabase {
            databases: vec![db("conf_x")],
        }
        .serve_on(s)
        .await;
        assert_eq!(status(r, "create_databases"), 422);
        let grant = DatabasesRequest::GrantAccess {
            username: PREPARED_USER.into(),
            hostname: "%".into(),
            databases: vec!["conf_x".into()],
        };
        let e = grant
            .serve_on(s)
            .await
            .expect_err("grant without databases");
        assert_eq!(e.fault().status, 422, "{m}: {e}");
        assert!(e.to_string().contains("user access"), "{m}: {e}");
    }
    if !offers(strategy, Facet::Root) {
        let r = RootRequest::EnableRoot {
            root_password: None,
        }
        .serve_on(s)
        .await;
        assert_eq!(status(r, "enable_root"), 422);
    }
    if !offers(strategy, Facet::Configuration) {
        let r = ConfigurationRequest::ApplyOverrides {
            overrides: Map::new(),
        }
        .serve_on(s)
        .await;
        assert_eq!(status(r, "apply_overrides"), 422);
    }
    if !offers(strategy, Facet::Tls) {
        let r = TlsRequest::SslShow {
            include_certificate: false,
        }
        .serve_on(s)
        .await;
        assert_eq!(status(r, "ssl_show"), 501);
    }
    if !offers(strategy, Facet::Logs) {
        let ctx = GuestLogContext {
            instance_id: uuid::Uuid::nil(),
            store: None,
        };
        let list = LogsRequest::GuestLogList
            .serve_on(s, &ctx)
            .await
            .expect("a strategy without logs lists none");
        assert_eq!(list, serde_json::json!([]), "{m}");
        let show = LogsRequest::from(&LogActionRequest::new("general", LogAction::Show));
        assert_eq!(status(show.serve_on(s, &ctx).await, "a log action"), 404);
    }
}

/// Runs every check on one fresh strategy made by `fresh`, in order, leaving the engine running: the lifecycle,
/// then the part of each facet the strategy offers.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<DynStrategy>>,
{
    let strategy = fresh().await.expect("a fresh strategy");
    facets_match_accessors(&strategy);
    lifecycle::fresh_engine_is_not_running(&strategy).await;
    lifecycle::prepare_refuses_what_is_not_offered(&strategy).await;
    lifecycle::prepare_is_idempotent(&strategy).await;
    if offers(&strategy, Facet::Users) {
        users::run(&strategy).await;
    }
    if offers(&strategy, Facet::Databases) {
        databases::run(&strategy).await;
    }
    if offers(&strategy, Facet::Root) {
        root::run(&strategy).await;
    }
    if offers(&strategy, Facet::Configuration) {
        configuration::run(&strategy).await;
    }
    if offers(&strategy, Facet::Tls) {
        tls::run(&strategy).await;
    }
    if offers(&strategy, Facet::Logs) {
        logs::run(&strategy).await;
    }
    missing_facets_answer_upstream_statuses(&strategy).await;
    lifecycle::restart_keeps_data(&strategy).await;
    lifecycle::stop_reports_shutdown(&strategy).await;
    lifecycle::flavor_and_filesystem(&strategy).await;
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
    async fn simulated_strategies_pass_the_replication_suite() {
        for manager in [Manager::Mariadb, Manager::Postgresql, Manager::Redis] {
            let factory = SimulatedStrategyFactory::new()
                .with_backup_store(Arc::new(crate::memory::MemoryBackupStore::new()));
            let fresh = || {
                let mut spec = crate::testing::sample_server_spec(manager);
                spec.instance_id = uuid::Uuid::new_v4();
                let ctx = GuestSpec {
                    instance_id: spec.instance_id,
                    datastore_version: spec.datastore_version.clone(),
                    flavor: spec.flavor.clone(),
                    server_dir: "/x".into(),
                    volume_path: None,
                    bind_address: "127.0.0.1".into(),
                    port: 1,
                };
                factory.strategy(&ctx).expect("a strategy")
            };
            replication::run(fresh(), fresh()).await;
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

    /// A strategy whose `facets()` claims more than its accessors is caught.
    #[test]
    #[should_panic(expected = "facets() says")]
    fn a_lying_facets_override_is_caught() {
        struct Liar(SimulatedStrategy);
        #[async_trait::async_trait]
        impl DatastoreStrategy for Liar {
            fn manager(&self) -> Manager {
                self.0.manager()
            }
            async fn prepare(&self, req: &PrepareRequest) -> Result<()> {
                self.0.prepare(req).await
            }
            async fn start(&self) -> Result<()> {
                self.0.start().await
            }
            async fn stop(&self) -> Result<()> {
                self.0.stop().await
            }
            async fn status(&self) -> crate::ports::EngineStatus {
                self.0.status().await
            }
            async fn filesystem_stats(&self) -> Result<crate::ports::FsStats> {
                self.0.filesystem_stats().await
            }
            async fn apply_flavor(&self, memory_mb: u32) -> Result<()> {
                self.0.apply_flavor(memory_mb).await
            }
            async fn resize_fs(&self, size_gb: u32) -> Result<()> {
                self.0.resize_fs(size_gb).await
            }
            fn facets(&self) -> crate::model::FacetSet {
                crate::model::FacetSet::of(&[Facet::Users])
            }
        }
        let liar: DynStrategy = Arc::new(Liar(SimulatedStrategy::standalone(Manager::Redis)));
        facets_match_accessors(&liar);
    }
}
