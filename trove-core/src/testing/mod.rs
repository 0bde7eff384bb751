//! Conformance suites, one per port. Every implementation (in-memory ones included) runs its suite from its own
//! tests; a backend is done when it passes, not when it compiles.
//!
//! Each module offers one `pub async fn` per clause of the port's contract and a `run_all` that runs them all.
//! Checks fail by panicking with a message that names the broken clause, as test assertions do.

pub mod auth;
pub mod bus;
pub mod clock;
pub mod compute;
pub mod crash;
pub mod fixtures;
pub mod storage;
pub mod store;
pub mod strategy;

use uuid::Uuid;

use crate::model::{DatastoreVersion, Flavor, Manager};
use crate::ports::ServerSpec;

/// A small flavor for tests.
pub fn sample_flavor() -> Flavor {
    Flavor {
        id: "1".into(),
        name: "conformance.small".into(),
        ram_mb: 512,
        vcpus: 1,
        disk_gb: 1,
        ephemeral_gb: 0,
    }
}

/// A datastore version of `manager` for tests (image empty: autodetect).
pub fn sample_version(manager: Manager) -> DatastoreVersion {
    DatastoreVersion {
        id: Uuid::new_v4(),
        datastore_id: Uuid::new_v4(),
        name: "test".into(),
        manager,
        image: String::new(),
        packages: String::new(),
        active: true,
        version: "test".into(),
        flavor_ids: vec![],
    }
}

/// A server spec for a fresh instance.
pub fn sample_server_spec(manager: Manager) -> ServerSpec {
    let instance_id = Uuid::new_v4();
    ServerSpec {
        instance_id,
        name: format!("conformance-{instance_id}"),
        flavor: sample_flavor(),
        datastore_version: sample_version(manager),
        volume_path: None,
        group: None,
        availability_zone: None,
    }
}
