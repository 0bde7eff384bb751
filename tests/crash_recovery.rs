//! Crash recovery beyond the generic crash harness (`trove-core/tests/crash_harness.rs`, which crashes every
//! workflow before each of its journal writes): a crashed build that the user resets and deletes leaks nothing,
//! and a task manager running in the background resumes work left by a crashed one once its lease expired. Crashes
//! are injected with the `CrashingStore` layer (the worker dies instead of performing its N-th journal write).

mod api_support;

use std::sync::Arc;
use std::time::Duration;

use trove::core::api::{CreateInstance, DatastoreVersionSpec};
use trove::core::memory::ManualClock;
use trove::core::model::{Flavor, QuotaUsage, WorkflowParams};
use trove::core::ports::{BlockStorage, Compute, DynStore, InfraStore, RequestContext};
use trove::core::state::{ServiceStatus, TaskStatus};
use trove::core::taskmanager::{CreateParams, TaskManager, TaskManagerConfig};
use trove::core::testing::crash::CrashingStore;
use trove::InMemoryParts;
use uuid::Uuid;

use api_support::{mem_config as config, t1 as tenant, World};

/// API and conductor only (task managers are driven by hand), postgresql 16 and flavor 1.
async fn world() -> World {
    World::start(config(), &[]).await
}

fn tm(w: &World, worker: &str) -> TaskManager {
    tm_on(w, worker, w.parts.store.clone())
}

fn tm_on(w: &World, worker: &str, store: DynStore) -> TaskManager {
    TaskManager::new(
        store,
        w.parts.bus.clone(),
        w.parts.compute.clone(),
        w.parts.block_storage.clone(),
        w.parts.clock.clone(),
        config(),
        TaskManagerConfig {
            worker_id: worker.into(),
            poll_interval: Duration::from_millis(5),
            ..TaskManagerConfig::default()
        },
    )
}

async fn create(w: &World) -> (Uuid, Uuid) {
    let v = w
        .api
        .create_instance(
            &tenant(),
            CreateInstance {
                name: "db".into(),
                flavor_ref: Some("1".into()),
                volume_size: Some(2),
                datastore: Some("postgresql".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let open = w.parts.store.list_open_workflows().await.unwrap();
    let wf = open
        .iter()
        .find(|x| x.instance_id == v.instance.id)
        .unwrap();
    assert_eq!(wf.kind, CreateParams::KIND);
    (v.instance.id, wf.id)
}

async fn assert_live(w: &World, id: Uuid, n: usize) {
    let inst = w.parts.store.get_instance(id).await.unwrap().unwrap();
    assert_eq!(
        inst.task,
        TaskStatus::None,
        "crash point {n}: {:?}",
        inst.fault
    );
    assert!(!inst.deleted);
    let view = w.api.show_instance(&tenant(), id).await.unwrap();
    assert_eq!(view.status, "ACTIVE", "crash point {n}");
    assert_eq!(
        w.parts.compute.servers().len(),
        1,
        "crash point {n}: servers leaked"
    );
    let server = w.parts.compute.get_server(id).await.unwrap().unwrap();
    assert_eq!(
        inst.server_id.as_deref(),
        Some(server.id.as_str()),
        "crash point {n}"
    );
    let vol = w.parts.block_storage.get_volume(id).await.unwrap().unwrap();
    assert_eq!(
        inst.volume_id.as_deref(),
        Some(vol.id.as_str()),
        "crash point {n}"
    );
    assert_eq!(vol.size_gb, 2);
    assert_eq!(
        w.parts.launcher.running().await,
        vec![id],
        "crash point {n}: guests"
    );
    assert!(w.parts.engines.engine(id).is_prepared());
    assert_eq!(
        w.parts.store.quota_usage("t1").await.unwrap(),
        QuotaUsage {
            instances: 1,
            ram: 512,
            volumes: 2,
            backups: 0
        },
        "crash point {n}"
    );
    assert_eq!(
        w.parts
            .store
            .get_service_status(id)
            .await
            .unwrap()
            .unwrap()
            .status,
        ServiceStatus::Healthy
    );
}

async fn assert_gone(w: &World, id: Uuid, n: usize) {
    let inst = w.parts.store.get_instance(id).await.unwrap().unwrap();
    assert!(inst.deleted, "crash point {n}: not marked deleted");
    assert_eq!(
        w.api
            .show_instance(&tenant(), id)
            .await
            .unwrap_err()
            .fault()
            .status,
        404
    );
    assert!(
        w.parts.compute.servers().is_empty(),
        "crash point {n}: server leaked"
    );
    assert!(
        w.parts
            .block_storage
            .get_volume(id)
            .await
            .unwrap()
            .is_none(),
        "crash point {n}: volume leaked"
    );
    assert!(
        w.parts.launcher.running().await.is_empty(),
        "crash point {n}: guest leaked"
    );
    assert_eq!(
        w.parts.store.quota_usage("t1").await.unwrap(),
        QuotaUsage::default(),
        "crash point {n}: quota"
    );
    assert!(w
        .parts
        .store
        .list_open_workflows()
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_build_can_be_reset_and_deleted_without_leaks() {
    for n in [2, 4, 6] {
        let w = world().await;
        let (id, wf) = create(&w).await;
        let dying = CrashingStore::new(w.parts.store.clone(), n);
        let first = tm_on(&w, "dead", dying.clone());
        first.run_workflow(wf).await.unwrap();
        assert!(dying.crashed());
        // The user gives up on the build: an admin's reset_status (upstream `instance:reset_status` is
        // `rule:admin`) clears the instance whatever its state, then the user deletes it.
        w.api
            .reset_status(&RequestContext::admin("t1"), id)
            .await
            .unwrap();
        let v = w.api.show_instance(&tenant(), id).await.unwrap();
        assert_eq!(v.instance.task, TaskStatus::None);
        assert!(!w
            .parts
            .store
            .get_workflow(wf)
            .await
            .unwrap()
            .unwrap()
            .state
            .is_open());
        w.api.delete_instance(&tenant(), id).await.unwrap();
        let del = w.parts.store.list_open_workflows().await.unwrap();
        assert_eq!(del.len(), 1);
        // The dead worker's (closed) create cannot be resumed, and the delete finishes.
        let second = tm(&w, "live");
        assert!(!second.run_workflow(wf).await.unwrap());
        assert!(second.run_workflow(del[0].id).await.unwrap());
        assert_gone(&w, id, n).await;
        w.cp.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_task_manager_resumes_work_left_by_a_crashed_one() {
    let clock = Arc::new(ManualClock::new());
    let parts = InMemoryParts::new(config(), clock.clone());
    // The first node's task manager dies before its 5th journal write (its store layer stops answering).
    let first = parts
        .builder()
        .without_health_monitor()
        .without_taskmanager()
        .start()
        .await
        .unwrap();
    let dying = CrashingStore::new(parts.store.clone(), 5);
    let doomed = TaskManager::new(
        dying.clone(),
        parts.bus.clone(),
        parts.compute.clone(),
        parts.block_storage.clone(),
        parts.clock.clone(),
        config(),
        TaskManagerConfig {
            worker_id: "doomed".into(),
            scan_interval: Duration::from_millis(20),
            poll_interval: Duration::from_millis(5),
        },
    );
    let (stop_doomed, rx) = tokio::sync::watch::channel(false);
    let doomed_task = tokio::spawn(async move { doomed.run(rx).await });
    let w = World {
        parts: parts.clone(),
        clock: clock.clone(),
        api: first.api(),
        cp: first,
        ticker: clock.ticking(api_support::TICK),
    };
    let api = w.api.clone();
    api.mgmt_create_datastore_version(
        &RequestContext::admin("admin"),
        DatastoreVersionSpec {
            datastore_name: "postgresql".into(),
            name: "16".into(),
            manager: "postgresql".into(),
            active: true,
            default: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    api.mgmt_put_flavor(
        &RequestContext::admin("admin"),
        Flavor {
            id: "1".into(),
            name: "small".into(),
            ram_mb: 512,
            vcpus: 1,
            disk_gb: 5,
            ephemeral_gb: 0,
        },
    )
    .await
    .unwrap();
    let (id, _) = create(&w).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !dying.crashed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first task manager never crashed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        w.api.show_instance(&tenant(), id).await.unwrap().status,
        "BUILD"
    );
    // A second control plane node (task manager only) on the same store and bus.
    let healthy = TaskManagerConfig {
        worker_id: "survivor".into(),
        scan_interval: Duration::from_millis(20),
        poll_interval: Duration::from_millis(5),
    };
    let second = parts
        .builder()
        .without_conductor()
        .without_health_monitor()
        .taskmanager_config(healthy)
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        w.api.show_instance(&tenant(), id).await.unwrap().status,
        "BUILD",
        "lease ignored"
    );
    clock.advance(config().workflow_lease + Duration::from_secs(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // The survivor waits for the guest on the clock: let time pass.
        clock.advance(Duration::from_millis(5));
        let v = w.api.show_instance(&tenant(), id).await.unwrap();
        if v.status == "ACTIVE" && v.instance.task == TaskStatus::None {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not resumed: {} {:?}",
            v.status,
            v.instance.fault
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_live(&w, id, 5).await;
    let _ = stop_doomed.send(true);
    let _ = doomed_task.await;
    second.shutdown().await;
    w.cp.shutdown().await;
}
