//! The core's `DatastoreStrategy` conformance suite, run on every real engine.

mod common;

use common::Fixture;
use trove_core::model::Manager;
use trove_core::testing::strategy::{replication, run_all};

async fn conformance(manager: Manager) {
    let fx = Fixture::new(manager, 256);
    let strategy = fx.strategy.clone();
    run_all(|| async move { Ok(strategy) }).await;
    fx.strategy.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_passes_the_strategy_suite() {
    conformance(Manager::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_passes_the_strategy_suite() {
    conformance(Manager::Mysql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_passes_the_strategy_suite() {
    conformance(Manager::Postgresql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_passes_the_strategy_suite() {
    conformance(Manager::Redis).await;
}

/// The replication part of the suite on a source and a replica of `manager` sharing a backup store.
async fn replication_conformance(manager: Manager) {
    let store: trove_core::ports::DynBackupStore =
        std::sync::Arc::new(trove_core::memory::MemoryBackupStore::new());
    let (src, rep) = (
        Fixture::with_backups(manager, 256, store.clone()),
        Fixture::with_backups(manager, 256, store),
    );
    replication::run(src.strategy.clone(), rep.strategy.clone()).await;
    for fx in [src, rep] {
        fx.strategy.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_passes_the_replication_suite() {
    replication_conformance(Manager::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_passes_the_replication_suite() {
    replication_conformance(Manager::Postgresql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_passes_the_replication_suite() {
    replication_conformance(Manager::Redis).await;
}

/// The real strategies offer what the simulated one (the orchestration tests' engine) offers, and what the
/// API's temporary per-manager table says, for every manager this host can run.
#[test]
fn real_and_simulated_strategies_offer_the_same_facets() {
    use trove_core::memory::SimulatedStrategyFactory;
    use trove_core::model::Facet;
    use trove_core::ports::{FacetCatalog, StrategyFactory};
    let real = trove_guest::EngineStrategyFactory::default();
    let simulated = SimulatedStrategyFactory::new();
    let catalog = FacetCatalog::from_factory(&real);
    for m in Manager::ALL {
        let Some(offered) = real.facets(m) else {
            assert!(
                matches!(m, Manager::Mongodb | Manager::Cassandra),
                "{m}: the engine is installed on the test machines"
            );
            assert_eq!(catalog.get(m), None);
            continue;
        };
        assert_eq!(Some(offered), simulated.facets(m), "{m}");
        assert_eq!(catalog.get(m), Some(offered), "{m}");
    }
    assert!(catalog.offers(Manager::Postgresql, Facet::Logs));
    assert!(!catalog.offers(Manager::Redis, Facet::Databases));
    assert!(catalog.offers(Manager::Redis, Facet::Cluster));
    assert!(catalog.offers(Manager::Mariadb, Facet::Cluster));
    assert!(!catalog.offers(Manager::Postgresql, Facet::Cluster));
}
