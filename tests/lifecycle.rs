//! Instance lifecycle through the `ControlPlane` on in-memory backends: create → ACTIVE → restart → resize
//! volume → resize flavor → delete, checking status, quota usage and store contents after each step; plus the
//! refusals on the way (gate, tenant isolation, admin, quota) and a build that times out.

mod api_support;

use std::sync::Arc;
use std::time::Duration;

use trove::core::api::{ApiService, CreateInstance};
use trove::core::memory::{ManualClock, NoopLauncher};
use trove::core::model::{
    JournalPhase, QuotaUsage, Secret, UserSpec, WorkflowParams, WorkflowState,
};
use trove::core::ports::{BlockStorage, Clock, Compute, InfraStore, RequestContext};
use trove::core::rpc::guest_topic;
use trove::core::state::{ServiceStatus, TaskStatus};
use trove::core::taskmanager::{CreateParams, TaskManager, TaskManagerConfig};
use trove::core::CoreConfig;
use trove::InMemoryParts;
use uuid::Uuid;

use api_support::{add_flavors, add_versions, eventually, flavor, version, wait_view, TICK};

fn config() -> CoreConfig {
    CoreConfig {
        report_interval: Duration::from_millis(100),
        health_sweep_interval: Duration::from_millis(100),
        ..CoreConfig::default()
    }
}

/// mysql 8.0 (default) and flavors 1 (1 GB) and 2 (2 GB).
async fn seed(api: &ApiService) {
    add_versions(api, [version("mysql", "8.0", true)]).await;
    add_flavors(
        api,
        [flavor("1", "f1", 1024, 5), flavor("2", "f2", 2048, 5)],
    )
    .await;
}

fn create_req(name: &str) -> CreateInstance {
    CreateInstance {
        name: name.into(),
        flavor_ref: Some("1".into()),
        volume_size: Some(1),
        datastore: Some("mysql".into()),
        ..Default::default()
    }
}

/// Waits until the instance is `want` with no task running.
async fn wait_status(
    api: &ApiService,
    ctx: &RequestContext,
    id: Uuid,
    want: &str,
) -> trove::core::api::InstanceView {
    wait_view(api, ctx, id, want, Duration::from_secs(20), |v| {
        v.status == want && v.instance.task == TaskStatus::None
    })
    .await
}

/// The status of the fault a refused create answers.
async fn refused(api: &ApiService, t: &RequestContext, req: CreateInstance) -> u16 {
    api.create_instance(t, req)
        .await
        .unwrap_err()
        .fault()
        .status
}

async fn usage(parts: &InMemoryParts, tenant: &str) -> QuotaUsage {
    parts.store.quota_usage(tenant).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_restart_resize_delete() {
    let parts = InMemoryParts::new(config(), Arc::new(trove::core::ports::SystemClock));
    let cp = parts.builder().start().await.unwrap();
    let api = cp.api();
    seed(&api).await;
    let t = RequestContext::tenant("t1");

    // ---- create
    let mut req = create_req("db1");
    req.users = vec![UserSpec {
        name: "app".into(),
        password: Secret::new("s3cret-pw"),
        host: None,
        databases: vec!["appdb".into()],
    }];
    req.databases = vec![trove::core::model::DatabaseSpec {
        name: "appdb".into(),
        character_set: None,
        collate: None,
    }];
    let v = api.create_instance(&t, req).await.unwrap();
    assert_eq!(v.status, "BUILD");
    assert_eq!(v.operating_status, "");
    let id = v.instance.id;
    assert_eq!(
        usage(&parts, "t1").await,
        QuotaUsage {
            instances: 1,
            ram: 1024,
            volumes: 1,
            backups: 0
        }
    );
    // Delete is refused while building.
    let e = api.delete_instance(&t, id).await.unwrap_err();
    assert_eq!(e.fault().status, 422, "{e}");

    let v = wait_status(&api, &t, id, "ACTIVE").await;
    assert_eq!(v.operating_status, "HEALTHY");
    let inst = parts.store.get_instance(id).await.unwrap().unwrap();
    assert_eq!(inst.task, TaskStatus::None);
    assert!(inst.server_id.is_some() && inst.volume_id.is_some() && !inst.addresses.is_empty());
    assert!(parts.compute.get_server(id).await.unwrap().is_some());
    assert_eq!(
        parts
            .block_storage
            .get_volume(id)
            .await
            .unwrap()
            .unwrap()
            .size_gb,
        1
    );
    let engine = parts.engines.engine(id);
    assert!(engine.is_prepared() && engine.is_running());
    assert!(engine.databases().contains(&"appdb".to_string()));
    assert!(engine.users().iter().any(|(n, _)| n == "app"));
    assert_eq!(
        parts
            .store
            .get_service_status(id)
            .await
            .unwrap()
            .unwrap()
            .status,
        ServiceStatus::Healthy
    );
    assert_eq!(
        usage(&parts, "t1").await,
        QuotaUsage {
            instances: 1,
            ram: 1024,
            volumes: 1,
            backups: 0
        }
    );
    assert!(parts.store.list_open_workflows().await.unwrap().is_empty());

    // Tenant isolation and admin checks.
    let other = RequestContext::tenant("t2");
    assert_eq!(
        api.show_instance(&other, id)
            .await
            .unwrap_err()
            .fault()
            .status,
        404
    );
    assert_eq!(
        api.delete_instance(&other, id)
            .await
            .unwrap_err()
            .fault()
            .status,
        404
    );
    assert!(api.list_instances(&other, true).await.unwrap().is_empty());
    assert_eq!(
        api.mgmt_list_instances(&t, Default::default())
            .await
            .unwrap_err()
            .fault()
            .status,
        403
    );
    assert_eq!(
        api.mgmt_list_instances(&RequestContext::admin("x"), Default::default())
            .await
            .unwrap()
            .len(),
        1
    );

    // ---- restart
    let starts = engine.starts();
    api.restart_instance(&t, id).await.unwrap();
    let shown = api.show_instance(&t, id).await.unwrap();
    assert!(
        shown.status == "REBOOT" || shown.status == "ACTIVE",
        "{}",
        shown.status
    );
    wait_status(&api, &t, id, "ACTIVE").await;
    assert!(engine.starts() > starts, "the engine was not restarted");
    assert_eq!(
        usage(&parts, "t1").await,
        QuotaUsage {
            instances: 1,
            ram: 1024,
            volumes: 1,
            backups: 0
        }
    );

    // ---- resize volume
    assert_eq!(
        api.resize_volume(&t, id, 1)
            .await
            .unwrap_err()
            .fault()
            .status,
        400
    );
    assert_eq!(
        api.resize_volume(&t, id, 11)
            .await
            .unwrap_err()
            .fault()
            .status,
        413
    );
    api.resize_volume(&t, id, 2).await.unwrap();
    let v = wait_status(&api, &t, id, "ACTIVE").await;
    assert_eq!(v.instance.volume_size, Some(2));
    assert_eq!(
        parts
            .block_storage
            .get_volume(id)
            .await
            .unwrap()
            .unwrap()
            .size_gb,
        2
    );
    assert_eq!(
        usage(&parts, "t1").await,
        QuotaUsage {
            instances: 1,
            ram: 1024,
            volumes: 2,
            backups: 0
        }
    );

    // ---- resize flavor
    assert_eq!(
        api.resize_flavor(&t, id, "1")
            .await
            .unwrap_err()
            .fault()
            .status,
        400
    );
    assert_eq!(
        api.resize_flavor(&t, id, "nope")
            .await
            .unwrap_err()
            .fault()
            .status,
        400
    );
    api.resize_flavor(&t, id, "2").await.unwrap();
    let v = wait_status(&api, &t, id, "ACTIVE").await;
    assert_eq!(v.instance.flavor_id, "2");
    assert_eq!(v.instance.ram_mb, 2048);
    assert_eq!(engine.memory_mb(), 2048);
    assert_eq!(parts.compute.spec(id).unwrap().flavor.id, "2");
    assert_eq!(
        usage(&parts, "t1").await,
        QuotaUsage {
            instances: 1,
            ram: 2048,
            volumes: 2,
            backups: 0
        }
    );

    // ---- delete
    api.delete_instance(&t, id).await.unwrap();
    eventually("the delete finishes", Duration::from_secs(20), || async {
        match api.show_instance(&t, id).await {
            Err(e) if e.fault().status == 404 => Ok(()),
            Ok(v) => {
                assert!(
                    matches!(v.status.as_str(), "SHUTDOWN" | "ACTIVE"),
                    "{}",
                    v.status
                );
                Err(v.status)
            }
            Err(e) => panic!("{e}"),
        }
    })
    .await;
    let inst = parts.store.get_instance(id).await.unwrap().unwrap();
    assert!(inst.deleted && inst.deleted_at.is_some());
    assert!(parts.compute.get_server(id).await.unwrap().is_none());
    assert!(parts.block_storage.get_volume(id).await.unwrap().is_none());
    assert_eq!(usage(&parts, "t1").await, QuotaUsage::default());
    assert_eq!(
        parts
            .store
            .get_service_status(id)
            .await
            .unwrap()
            .unwrap()
            .status,
        ServiceStatus::Deleted
    );
    assert!(parts.launcher.running().await.is_empty());
    assert!(!parts.bus.topics().contains(&guest_topic(id)));
    assert!(parts.store.list_open_workflows().await.unwrap().is_empty());
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_scrubbed_and_steps_journaled() {
    let parts = InMemoryParts::new(config(), Arc::new(trove::core::ports::SystemClock));
    // Run without a task manager first, so the workflow can be read before one takes it.
    let cp = parts.builder().without_taskmanager().start().await.unwrap();
    let api = cp.api();
    seed(&api).await;
    let t = RequestContext::tenant("t1");
    let mut req = create_req("db1");
    req.users = vec![UserSpec {
        name: "app".into(),
        password: Secret::new("pw-123456"),
        host: None,
        databases: vec![],
    }];
    let id = api.create_instance(&t, req).await.unwrap().instance.id;
    let open = parts.store.list_open_workflows().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (&open[0].kind, open[0].instance_id),
        (&CreateParams::KIND, id)
    );
    let wf_id = open[0].id;
    let tm = TaskManager::new(
        parts.store.clone(),
        parts.bus.clone(),
        parts.compute.clone(),
        parts.block_storage.clone(),
        parts.clock.clone(),
        config(),
        TaskManagerConfig::default(),
    );
    assert!(tm.run_workflow(wf_id).await.unwrap());
    wait_status(&api, &t, id, "ACTIVE").await;
    let wf = parts.store.get_workflow(wf_id).await.unwrap().unwrap();
    assert_eq!(wf.state, WorkflowState::Done);
    let text = serde_json::to_string(&wf.params).unwrap();
    assert!(
        !text.contains("pw-123456"),
        "password left in workflow params: {text}"
    );
    let journal = parts.store.journal(wf.id).await.unwrap();
    for step in ["volume", "server", "prepare", "wait_healthy"] {
        let started = journal
            .iter()
            .position(|e| e.step == step && e.phase == JournalPhase::Started);
        let done = journal
            .iter()
            .position(|e| e.step == step && e.phase == JournalPhase::Completed);
        assert!(
            matches!((started, done), (Some(s), Some(d)) if s < d),
            "step {step} not journaled: {journal:?}"
        );
    }
    let server = journal
        .iter()
        .find(|e| e.step == "server" && e.phase == JournalPhase::Completed)
        .unwrap();
    assert!(
        server.data.get("id").is_some(),
        "server id not journaled: {}",
        server.data
    );
    let volume = journal
        .iter()
        .find(|e| e.step == "volume" && e.phase == JournalPhase::Completed)
        .unwrap();
    assert!(volume.data.get("volume_id").is_some());
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_and_validation_refusals() {
    let parts = InMemoryParts::new(config(), Arc::new(trove::core::ports::SystemClock));
    let cp = parts.builder().start().await.unwrap();
    let api = cp.api();
    seed(&api).await;
    let t = RequestContext::tenant("t1");
    let admin = RequestContext::admin("admin");
    let mut big = create_req("big");
    big.volume_size = Some(11);
    assert_eq!(refused(&api, &t, big).await, 413);
    let mut none = create_req("novol");
    none.volume_size = None;
    assert_eq!(refused(&api, &t, none).await, 400);
    let mut bad = create_req("bad");
    bad.databases = vec![trove::core::model::DatabaseSpec {
        name: "x;drop".into(),
        character_set: None,
        collate: None,
    }];
    assert_eq!(refused(&api, &t, bad).await, 400);
    let mut noflavor = create_req("nf");
    noflavor.flavor_ref = Some("99".into());
    assert_eq!(refused(&api, &t, noflavor).await, 400);
    let mut nods = create_req("nd");
    nods.datastore = Some("nosuch".into());
    assert_eq!(refused(&api, &t, nods).await, 404);
    assert_eq!(refused(&api, &t, create_req("  ")).await, 400);

    // Quota: one instance allowed.
    let limits = [("instances".to_string(), 1i64)].into_iter().collect();
    assert_eq!(
        api.update_quota(&t, "t1", limits)
            .await
            .unwrap_err()
            .fault()
            .status,
        403
    );
    let limits = [("instances".to_string(), 1i64)].into_iter().collect();
    api.update_quota(&admin, "t1", limits).await.unwrap();
    let bad_limits = [("nonsense".to_string(), 1i64)].into_iter().collect();
    assert_eq!(
        api.update_quota(&admin, "t1", bad_limits)
            .await
            .unwrap_err()
            .fault()
            .status,
        404
    );
    let id = api
        .create_instance(&t, create_req("one"))
        .await
        .unwrap()
        .instance
        .id;
    let e = api
        .create_instance(&t, create_req("two"))
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 413, "{e}");
    // Nothing of the refused create was stored.
    assert_eq!(
        parts
            .store
            .list_instances(&Default::default())
            .await
            .unwrap()
            .len(),
        1
    );
    let q = api.show_quota(&t, "t1").await.unwrap();
    assert_eq!(q.usage.instances, 1);
    assert_eq!(q.limits.instances, 1);
    wait_status(&api, &t, id, "ACTIVE").await;
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_never_reports_ends_in_timeout_error_and_can_be_deleted() {
    let clock = Arc::new(ManualClock::new());
    let cfg = CoreConfig {
        agent_call_low_timeout: Duration::from_millis(300),
        ..config()
    };
    let mut parts = InMemoryParts::new(cfg, clock.clone());
    // No guest is ever launched.
    parts.compute = Arc::new(trove::core::memory::MemoryCompute::new(Arc::new(
        NoopLauncher,
    )));
    let cp = parts.builder().start().await.unwrap();
    let api = cp.api();
    seed(&api).await;
    let t = RequestContext::tenant("t1");
    let id = api
        .create_instance(&t, create_req("lost"))
        .await
        .unwrap()
        .instance
        .id;
    // Once the workflow waits for the guest (its deadline counts from there), move past the build deadline.
    let open = parts.store.list_open_workflows().await.unwrap();
    let wf = open
        .iter()
        .find(|w| w.instance_id == id)
        .expect("the create workflow")
        .id;
    eventually(
        "the workflow waits for the guest",
        Duration::from_secs(10),
        || async {
            let journal = parts.store.journal(wf).await.unwrap();
            if journal
                .iter()
                .any(|e| e.step == "wait_healthy" && e.phase == JournalPhase::Started)
            {
                Ok(())
            } else {
                Err(format!("journal {journal:?}"))
            }
        },
    )
    .await;
    clock.advance(config().usage_timeout + Duration::from_secs(1));
    let v = eventually("the build times out", Duration::from_secs(10), || async {
        let v = api.show_instance(&t, id).await.unwrap();
        if v.status == "ERROR" {
            Ok(v)
        } else {
            Err(format!("{} ({:?})", v.status, v.instance.task))
        }
    })
    .await;
    assert_eq!(v.instance.task, TaskStatus::BuildingErrorTimeoutGa);
    assert!(v.instance.fault.is_some());
    assert_eq!(
        parts
            .store
            .get_service_status(id)
            .await
            .unwrap()
            .unwrap()
            .status,
        ServiceStatus::FailedTimeoutGuestagent
    );
    // An errored build can be deleted, and everything is given back.
    api.delete_instance(&t, id).await.unwrap();
    eventually("the delete finishes", Duration::from_secs(20), || async {
        match api.show_instance(&t, id).await {
            Ok(v) => Err(v.status),
            Err(_) => Ok(()),
        }
    })
    .await;
    assert!(parts.compute.get_server(id).await.unwrap().is_none());
    assert!(parts.block_storage.get_volume(id).await.unwrap().is_none());
    assert_eq!(usage(&parts, "t1").await, QuotaUsage::default());
    let _ = parts.bus.topics();
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_guest_is_recorded_as_failed_and_a_later_heartbeat_restores_it() {
    use trove::core::conductor::guest_sender;
    use trove::core::ports::GuestLauncher;
    use trove::core::rpc::{ConductorClient, ConductorRequest};

    let clock = Arc::new(ManualClock::new());
    // Time passes (reports are sent and batched, the monitor sweeps, the build waits for the guest); the heartbeat
    // expiry is passed by hand.
    let _ticker = clock.ticking(TICK);
    let parts = InMemoryParts::new(config(), clock.clone());
    let cp = parts.builder().start().await.unwrap();
    let api = cp.api();
    seed(&api).await;
    let t = RequestContext::tenant("t1");
    let id = api
        .create_instance(&t, create_req("quiet"))
        .await
        .unwrap()
        .instance
        .id;
    let v = wait_status(&api, &t, id, "ACTIVE").await;
    assert_eq!(v.operating_status, "HEALTHY");
    // The guest goes silent; once its last heartbeat is older than the expiry, the next sweep records it. (A
    // heartbeat sent just before the stop may still land after a move: then the expiry is passed again.)
    parts.launcher.stop(id).await.unwrap();
    eventually(
        "the sweep records the silent guest",
        Duration::from_secs(10),
        || async {
            let st = parts.store.get_service_status(id).await.unwrap().unwrap();
            if st.status == ServiceStatus::FailedTimeoutGuestagent {
                return Ok(());
            }
            if clock.now() - st.updated_at
                < chrono::Duration::from_std(config().agent_heartbeat_expiry).unwrap()
            {
                clock.advance(config().agent_heartbeat_expiry + config().health_sweep_interval);
            }
            Err(format!("{st:?}"))
        },
    )
    .await;
    let v = api.show_instance(&t, id).await.unwrap();
    assert_eq!(v.operating_status, "ERROR");
    // Actions needing a live guest are refused now.
    assert_eq!(
        api.restart_instance(&t, id)
            .await
            .unwrap_err()
            .fault()
            .status,
        422
    );
    // A heartbeat (as the guest would send it) restores the status.
    let guest = ConductorClient::new(parts.bus.clone(), guest_sender(id), None);
    guest
        .send(ConductorRequest::Heartbeat {
            instance_id: id,
            status: ServiceStatus::Healthy,
            reason: None,
            fs: None,
            load: None,
        })
        .await
        .unwrap();
    eventually(
        "the heartbeat restores the guest",
        Duration::from_secs(10),
        || async {
            let v = api.show_instance(&t, id).await.unwrap();
            if v.operating_status == "HEALTHY" {
                Ok(())
            } else {
                Err(v.operating_status)
            }
        },
    )
    .await;
    cp.shutdown().await;
}
