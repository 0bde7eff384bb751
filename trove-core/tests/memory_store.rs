//! The in-memory store passes the InfraStore conformance suite.
#![cfg(feature = "testing")]

use std::sync::Arc;

use trove_core::memory::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_conformance_suite() {
    trove_core::testing::store::run_all(Arc::new(MemoryStore::new())).await;
}
