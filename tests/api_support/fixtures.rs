//! In-memory fixtures: contexts, the catalogue, and the hand-driven control plane on a manual clock that the
//! crash and workflow tests build on. The cross-crate basics come from `trove_core::testing::fixtures`.

use std::sync::Arc;
use std::time::Duration;

use trove::core::api::{ApiService, CreateInstance};
use trove::core::memory::{ManualClock, MemoryCompute, Ticker};
use trove::core::model::{Manager, WorkflowKind, WorkflowParams};
use trove::core::ports::{InfraStore, RequestContext};
use trove::core::state::ServiceStatus;
use trove::core::taskmanager::CreateParams;
use trove::core::taskmanager::TaskManager;
use trove::core::CoreConfig;
use trove::{ControlPlane, InMemoryParts};
use uuid::Uuid;

pub use trove_core::testing::fixtures::{
    add_flavors, add_versions, admin, flavor, tenant, version,
};

/// Project `t1`, where most tests keep their instances.
pub fn t1() -> RequestContext {
    tenant("t1")
}

/// Flavor 1, `m1.tiny`: 512 MB, a 1 GB disk.
pub fn tiny_flavor() -> trove::core::model::Flavor {
    flavor("1", "m1.tiny", 512, 1)
}

/// The catalogue of the HTTP tests: flavor [`tiny_flavor`] and mysql 5.7 (default).
pub async fn seed_tiny_mysql(api: &ApiService) {
    add_flavors(api, [tiny_flavor()]).await;
    add_versions(api, [version("mysql", "5.7", true)]).await;
}

/// Loads the shipped validation rules of `manager` for `datastore` `version` (as `trove-manage` does).
pub async fn load_rules(parts: &InMemoryParts, datastore: &str, version: &str, manager: Manager) {
    trove::core::manage::Manage::new(parts.store.clone())
        .db_load_datastore_config_parameters(
            datastore,
            version,
            trove::core::manage::default_validation_rules(manager).expect("shipped rules"),
            None,
            |_, _| {},
        )
        .await
        .unwrap_or_else(|e| panic!("rules of {datastore} {version}: {e}"));
}

/// The configuration of the hand-driven control plane: quick reports (50 ms) and short guest calls (2 s / 5 s).
pub fn mem_config() -> CoreConfig {
    CoreConfig {
        report_interval: Duration::from_millis(50),
        agent_call_low_timeout: Duration::from_secs(2),
        agent_call_high_timeout: Duration::from_secs(5),
        ..CoreConfig::default()
    }
}

/// How far a [`World`]'s clock moves per millisecond of real time.
pub const TICK: Duration = Duration::from_millis(1);

/// An in-memory control plane (simulated engines) with the API and the conductor but no task manager and no
/// health monitor (workers are driven by hand), on a manual clock that moves with real time ([`TICK`] per ms), so
/// that a report sent after a step started is newer than the step and heartbeat batches are written; leases and
/// deadlines are moved by hand (`clock.advance`).
pub struct World {
    /// The ports.
    pub parts: InMemoryParts,
    /// The clock of every part.
    pub clock: Arc<ManualClock>,
    /// The running control plane.
    pub cp: ControlPlane,
    /// Its API service.
    pub api: Arc<ApiService>,
    /// Moves `clock` along (until dropped).
    pub ticker: Ticker,
}

impl World {
    /// Starts it with `config` on `hosts` (none: one default host), with flavor 1 `small` (512 MB, 5 GB) and
    /// postgresql 16 (default).
    pub async fn start(config: CoreConfig, hosts: &[&str]) -> World {
        let clock = Arc::new(ManualClock::new());
        let mut parts = InMemoryParts::new(config, clock.clone());
        if !hosts.is_empty() {
            parts.compute = Arc::new(MemoryCompute::with_hosts(
                hosts.iter().map(|h| h.to_string()).collect(),
                parts.launcher.clone(),
            ));
        }
        let cp = parts
            .builder()
            .without_taskmanager()
            .without_health_monitor()
            .start()
            .await
            .expect("control plane");
        let api = cp.api();
        add_versions(&api, [version("postgresql", "16", true)]).await;
        add_flavors(&api, [flavor("1", "small", 512, 5)]).await;
        World {
            ticker: clock.ticking(TICK),
            parts,
            clock,
            cp,
            api,
        }
    }

    /// Stops the control plane and every guest.
    pub async fn end(self) {
        drop(self.ticker);
        self.cp.shutdown().await;
        self.parts.launcher.shutdown_all().await;
    }
}

/// The open workflows of `kind` on instance `id`.
pub async fn open_workflows(w: &World, id: Uuid, kind: &WorkflowKind) -> Vec<Uuid> {
    w.parts
        .store
        .list_open_workflows()
        .await
        .expect("open workflows")
        .iter()
        .filter(|x| x.instance_id == id && &x.kind == kind)
        .map(|x| x.id)
        .collect()
}

/// The one open workflow of `kind` on instance `id` (panics when there is none or more than one).
pub async fn open_workflow(w: &World, id: Uuid, kind: &WorkflowKind) -> Uuid {
    let open = open_workflows(w, id, kind).await;
    assert_eq!(
        open.len(),
        1,
        "one open {kind:?} workflow expected: {open:?}"
    );
    open[0]
}

/// The stored service status of instance `id`.
pub async fn service_status(w: &World, id: Uuid) -> ServiceStatus {
    w.parts
        .store
        .get_service_status(id)
        .await
        .expect("service status")
        .expect("a service status row")
        .status
}

/// Creates PostgreSQL instance `name` (flavor 1, 2 GB) as `t1`, lets `builder` run its create workflow, and
/// checks it ACTIVE and HEALTHY.
pub async fn built(w: &World, name: &str, builder: &TaskManager) -> Uuid {
    let v = w
        .api
        .create_instance(
            &t1(),
            CreateInstance {
                name: name.into(),
                flavor_ref: Some("1".into()),
                volume_size: Some(2),
                datastore: Some("postgresql".into()),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    let id = v.instance.id;
    let wf = open_workflow(w, id, &CreateParams::KIND).await;
    assert!(builder.run_workflow(wf).await.expect("the create runs"));
    let v = w.api.show_instance(&t1(), id).await.expect("show");
    assert_eq!(
        (v.status.as_str(), v.operating_status.as_str()),
        ("ACTIVE", "HEALTHY")
    );
    id
}
