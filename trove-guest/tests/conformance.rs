//! The core's `DatastoreStrategy` conformance suite, run on every real engine.

mod common;

use common::Fixture;
use trove_core::model::Manager;
use trove_core::testing::strategy::run_all;

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
