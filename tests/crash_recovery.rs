//! Crash recovery: the task manager is stopped between every pair of journaled steps of create and of delete
//! (each crash point in turn, by crash injection: the worker dies instead of performing its N-th journal write,
//! i.e. before a step starts or after its side effect but before it was journaled). A new task manager on the
//! same store takes the workflow over once the dead worker's lease expired, and the work finishes with nothing
//! leaked: exactly the resources of a live instance, or none after a delete, and quota usage to match.

mod api_support;

use std::sync::Arc;
use std::time::Duration;

use trove::core::api::{CreateInstance, DatastoreVersionSpec};
use trove::core::memory::ManualClock;
use trove::core::model::{Flavor, QuotaUsage, WorkflowKind, WorkflowState};
use trove::core::ports::{BlockStorage, Compute, InfraStore, RequestContext};
use trove::core::state::{ServiceStatus, TaskStatus};
use trove::core::taskmanager::{TaskManager, TaskManagerConfig};
use trove::InMemoryParts;
use uuid::Uuid;

use api_support::{mem_config as config, t1 as tenant, World};

/// API and conductor only (task managers are driven by hand), postgresql 16 and flavor 1.
async fn world() -> World {
    World::start(config(), &[]).await
}

fn tm(w: &World, worker: &str, crash: Option<usize>) -> TaskManager {
    TaskManager::new(
        w.parts.store.clone(),
        w.parts.bus.clone(),
        w.parts.compute.clone(),
        w.parts.block_storage.clone(),
        w.parts.clock.clone(),
        config(),
        TaskManagerConfig {
            worker_id: worker.into(),
            poll_interval: Duration::from_millis(5),
            crash_before_journal_write: crash,
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
    assert_eq!(wf.kind, WorkflowKind::Create);
    (v.instance.id, wf.id)
}

/// Runs `wf` on a worker that crashes before journal write `n`; answers whether it crashed. Then a second worker
/// must wait for the lease and finish the workflow.
async fn crash_then_resume(w: &World, wf: Uuid, n: usize) -> bool {
    let first = tm(w, &format!("tm-a-{n}"), Some(n));
    assert!(first.run_workflow(wf).await.unwrap());
    let crashed = first.crashed();
    let state = w.parts.store.get_workflow(wf).await.unwrap().unwrap().state;
    if !crashed {
        assert_eq!(state, WorkflowState::Done, "an uncrashed run must finish");
        return false;
    }
    assert!(
        state.is_open(),
        "a crashed run must leave the workflow open"
    );
    let second = tm(w, &format!("tm-b-{n}"), None);
    // The dead worker's lease still holds: nobody else may take the workflow yet.
    assert!(
        !second.run_workflow(wf).await.unwrap(),
        "claimed a workflow under another worker's live lease"
    );
    w.clock
        .advance(config().workflow_lease + Duration::from_secs(1));
    assert!(
        second.run_workflow(wf).await.unwrap(),
        "could not take the workflow over after the lease expired"
    );
    let after = w.parts.store.get_workflow(wf).await.unwrap().unwrap();
    assert_eq!(
        after.state,
        WorkflowState::Done,
        "resumed workflow did not finish (crash point {n})"
    );
    assert!(after.attempts >= 2);
    true
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
async fn create_survives_a_crash_at_every_step() {
    let mut crash_points = 0;
    for n in 1..=60 {
        let w = world().await;
        let (id, wf) = create(&w).await;
        let crashed = crash_then_resume(&w, wf, n).await;
        assert_live(&w, id, n).await;
        w.cp.shutdown().await;
        w.parts.launcher.shutdown_all().await;
        if !crashed {
            break;
        }
        crash_points += 1;
    }
    eprintln!("create: {crash_points} crash points");
    // volume, server, prepare, wait_healthy: Started + Completed each.
    assert!(
        crash_points >= 8,
        "only {crash_points} crash points exercised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_survives_a_crash_at_every_step() {
    let mut crash_points = 0;
    for n in 1..=60 {
        let w = world().await;
        let (id, wf) = create(&w).await;
        assert!(tm(&w, "builder", None).run_workflow(wf).await.unwrap());
        assert_live(&w, id, 0).await;
        w.api.delete_instance(&tenant(), id).await.unwrap();
        let open = w.parts.store.list_open_workflows().await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].kind, WorkflowKind::Delete);
        // While the delete is pending the quota is still held by the instance.
        assert_eq!(w.parts.store.quota_usage("t1").await.unwrap().instances, 1);
        let crashed = crash_then_resume(&w, open[0].id, n).await;
        assert_gone(&w, id, n).await;
        w.cp.shutdown().await;
        if !crashed {
            break;
        }
        crash_points += 1;
    }
    eprintln!("delete: {crash_points} crash points");
    // stop_db, delete_server, delete_volume, delete_topic (2 each) and mark_deleted.
    assert!(
        crash_points >= 9,
        "only {crash_points} crash points exercised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_build_can_be_reset_and_deleted_without_leaks() {
    for n in [2, 4, 6] {
        let w = world().await;
        let (id, wf) = create(&w).await;
        let first = tm(&w, "dead", Some(n));
        first.run_workflow(wf).await.unwrap();
        assert!(first.crashed());
        // The user gives up on the build: reset_status clears the instance whatever its state, then delete.
        w.api.reset_status(&tenant(), id).await.unwrap();
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
        let second = tm(&w, "live", None);
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
    let crashing = TaskManagerConfig {
        worker_id: "doomed".into(),
        scan_interval: Duration::from_millis(20),
        poll_interval: Duration::from_millis(5),
        crash_before_journal_write: Some(5),
    };
    let first = parts
        .builder()
        .without_health_monitor()
        .taskmanager_config(crashing)
        .start()
        .await
        .unwrap();
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
    let tm = w.cp.taskmanager().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !tm.crashed() {
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
        crash_before_journal_write: None,
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
    second.shutdown().await;
    w.cp.shutdown().await;
}
