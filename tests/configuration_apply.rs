//! Configuration groups brought into effect on the engines (workflow `ApplyConfiguration`).
//!
//! - On REAL engines (MariaDB, PostgreSQL, Redis) through the embedded deployment: attaching a group whose
//!   parameter can change live leaves the instance HEALTHY and the engine (asked as a client) runs the new value at
//!   once; updating the group's values re-applies them; a parameter that only takes effect at start shows
//!   RESTART_REQUIRED (`operating_status`) and the engine keeps its old value until a `restart`, after which it
//!   runs the new one and the instance is HEALTHY again; a detach brings the engine back to its defaults. Bad
//!   requests (a busy instance, a group of another datastore version, a second group, a detach without a group)
//!   get their faults. One engine test runs at a time (the cross-process lock of `tests/engines_api.rs`).
//! - On the in-memory control plane (simulated engines): attach, restart-needing attach and detach each survive a
//!   crash of the task manager at every journaled step; a group update re-applies to every instance using it; a
//!   guest that does not answer leaves a fault and the task at NONE.

mod api_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use uuid::Uuid;

use trove::core::api::{
    ApiService, CreateConfiguration, CreateInstance, InstanceView, UpdateConfiguration,
    UpdateInstance,
};
use trove::core::model::{Manager, WorkflowParams, WorkflowState};
use trove::core::ports::{DynStore, InfraStore, RequestContext};
use trove::core::state::{ServiceStatus, TaskStatus};
use trove::core::taskmanager::{
    ApplyConfigurationParams, RebootParams, TaskManager, TaskManagerConfig,
};
use trove::core::testing::crash::CrashingStore;
use trove::core::CoreConfig;

use api_support::{
    add_versions, app_i64, endpoint, engine_instance, eventually, idle_healthy, load_rules,
    open_workflow, open_workflows, redis_setting, service_status, step, t1, version,
    wait_engine_view as wait_view, Engine, EngineEnv, World, ENGINE_WAIT,
};

fn status_of(e: &trove::core::Error) -> u16 {
    e.fault().status
}

fn values(v: Value) -> Map<String, Value> {
    v.as_object().expect("an object").clone()
}

fn attach(cid: Uuid) -> UpdateInstance {
    UpdateInstance {
        configuration: Some(Some(cid)),
        ..Default::default()
    }
}

fn detach() -> UpdateInstance {
    UpdateInstance {
        configuration: Some(None),
        ..Default::default()
    }
}

async fn new_group(api: &ApiService, ds: &str, name: &str, v: Value) -> Uuid {
    api.create_configuration(
        &t1(),
        CreateConfiguration {
            name: name.into(),
            description: None,
            values: values(v),
            datastore: Some(ds.into()),
            datastore_version: None,
            datastore_version_number: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("create configuration {name}: {e}"))
    .configuration
    .id
}

async fn set_group(api: &ApiService, cid: Uuid, v: Value) {
    api.update_configuration(
        &t1(),
        cid,
        UpdateConfiguration {
            name: None,
            description: None,
            values: values(v),
        },
    )
    .await
    .expect("update configuration");
}

// ================================================================== real engines

/// The engine's own value of setting `name`, asked as a client (SQL: as `app`; Redis: `CONFIG GET` as the
/// guest's admin account, whose secret the server directory under `state` holds).
async fn setting(k: Engine, at: SocketAddr, state: &Path, id: Uuid, name: &str) -> i64 {
    assert!(name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    let q = match k {
        Engine::Mysql => format!("SELECT CAST(@@GLOBAL.{name} AS SIGNED)"),
        Engine::Postgres => {
            format!("SELECT setting::bigint FROM pg_settings WHERE name = '{name}'")
        }
        Engine::Redis => return redis_setting(at, state, id, name).await,
    };
    app_i64(k, at, &q)
        .await
        .unwrap_or_else(|| panic!("{q}: no row"))
}

/// What one engine's test sets.
struct Plan {
    ds: &'static str,
    kind: Engine,
    /// A parameter the engine changes live, and two values for it.
    dynamic: (&'static str, i64, i64),
    /// A second parameter, its value in the group, the engine's value for it and whether the engine takes it
    /// live (otherwise only at restart).
    second: (&'static str, Value, i64, bool),
    /// The datastore of a group that does not fit the instance.
    other_ds: &'static str,
}

fn assert_view(v: &InstanceView, want: &str, what: &str) {
    assert_eq!(
        (v.instance.task, v.operating_status.as_str()),
        (TaskStatus::None, want),
        "{what}: status {} service {:?} fault {:?}",
        v.status,
        v.service,
        v.instance.fault
    );
    assert!(
        v.instance.fault.is_none(),
        "{what}: fault {:?}",
        v.instance.fault
    );
}

async fn configuration_on_real_engine(p: Plan) {
    let ds = p.ds;
    let k = p.kind;
    let waited = Instant::now();
    let env = EngineEnv::start().await;
    eprintln!(
        "[{ds}] engine lock + embedded start: {:.2?}",
        waited.elapsed()
    );
    let api = env.api.clone();
    let state = env.state.path().to_path_buf();
    assert!(
        env.detected(ds),
        "engine for {ds} not detected on this machine"
    );
    let mut t = Instant::now();
    let created = api
        .create_instance(
            &t1(),
            CreateInstance {
                ..engine_instance(&format!("{ds}-conf"), ds, true)
            },
        )
        .await
        .expect("create");
    let id = created.instance.id;
    let v = wait_view(&api, id, "HEALTHY after create", idle_healthy).await;
    let at = endpoint(&v.instance);
    step(&mut t, "create to HEALTHY", ds);
    let (dyn_key, v1, v2) = p.dynamic;
    let (second_key, second_json, second_value, second_live) = p.second;
    let get = |name: &'static str| {
        let state = state.clone();
        async move { setting(k, at, &state, id, name).await }
    };
    let dyn_default = get(dyn_key).await;
    let second_default = get(second_key).await;
    assert!(
        dyn_default != v1 && dyn_default != v2 && second_default != second_value,
        "the test's values must differ from the defaults ({dyn_default}, {second_default})"
    );

    // ---- bad requests: nothing to detach, a group of another datastore.
    let e = api
        .update_instance(&t1(), id, detach())
        .await
        .expect_err("nothing to detach");
    assert_eq!(status_of(&e), 400, "{e}");
    let other = new_group(&api, p.other_ds, "other", json!({})).await;
    let e = api
        .update_instance(&t1(), id, attach(other))
        .await
        .expect_err("a group of another datastore version");
    assert_eq!(status_of(&e), 400, "{e}");

    // ---- attach a live parameter: HEALTHY, the engine runs it at once.
    let g = new_group(&api, ds, "live", json!({ dyn_key: v1 })).await;
    api.update_instance(&t1(), id, attach(g))
        .await
        .expect("attach");
    let v = env.settle(id, "attach", ENGINE_WAIT).await;
    assert_view(&v, "HEALTHY", "attach of a live parameter");
    assert_eq!(v.configuration.as_ref().map(|c| c.0), Some(g));
    assert_eq!(get(dyn_key).await, v1, "{dyn_key} applied live on attach");
    step(&mut t, "attach (live)", ds);
    let g2 = new_group(&api, ds, "second", json!({})).await;
    let e = api
        .update_instance(&t1(), id, attach(g2))
        .await
        .expect_err("a second group");
    assert_eq!(status_of(&e), 400, "{e}");

    // ---- the group's values change: re-applied live.
    set_group(&api, g, json!({ dyn_key: v2 })).await;
    let v = env.settle(id, "update", ENGINE_WAIT).await;
    assert_view(&v, "HEALTHY", "update of a live parameter");
    assert_eq!(
        get(dyn_key).await,
        v2,
        "{dyn_key} re-applied live on update"
    );
    step(&mut t, "group update (live)", ds);

    // ---- a second parameter (restart-only where the engine has one).
    set_group(&api, g, json!({ dyn_key: v2, second_key: second_json })).await;
    let v = env
        .settle(id, "update with a second parameter", ENGINE_WAIT)
        .await;
    if second_live {
        assert_view(&v, "HEALTHY", "update with a live second parameter");
        assert_eq!(
            get(second_key).await,
            second_value,
            "{second_key} applied live"
        );
    } else {
        assert_view(
            &v,
            "RESTART_REQUIRED",
            "update with a restart-only parameter",
        );
        assert_eq!(
            v.status, "ACTIVE",
            "the server runs; the service status says what waits"
        );
        // Heartbeats come and go: the status stays.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let v = api.show_instance(&t1(), id).await.expect("show");
        assert_eq!(v.operating_status, "RESTART_REQUIRED", "{:?}", v.service);
        // The engine runs meanwhile: its users stay manageable (upstream keeps the service HEALTHY then).
        api.list_users(&t1(), id)
            .await
            .expect("users are listed while a restart is pending");
        assert_eq!(
            get(second_key).await,
            second_default,
            "{second_key} waits for the restart"
        );
        assert_eq!(get(dyn_key).await, v2);
    }
    step(&mut t, "group update (second parameter)", ds);

    // ---- restart: a busy instance refuses a group change; afterwards everything runs, HEALTHY.
    api.restart_instance(&t1(), id).await.expect("restart");
    let e = api
        .update_instance(&t1(), id, detach())
        .await
        .expect_err("a busy instance");
    assert_eq!(status_of(&e), 400, "{e}");
    let v = wait_view(&api, id, "HEALTHY after restart", idle_healthy).await;
    assert_view(&v, "HEALTHY", "after restart");
    assert_eq!(
        get(second_key).await,
        second_value,
        "{second_key} after the restart"
    );
    assert_eq!(get(dyn_key).await, v2, "{dyn_key} after the restart");
    step(&mut t, "restart", ds);

    // ---- detach: the live parameter is back to its default at once; the other one after a restart.
    api.update_instance(&t1(), id, detach())
        .await
        .expect("detach");
    let v = env.settle(id, "detach", ENGINE_WAIT).await;
    assert_eq!(v.configuration, None);
    assert_eq!(
        get(dyn_key).await,
        dyn_default,
        "{dyn_key} back to its default on detach"
    );
    assert_view(
        &v,
        "RESTART_REQUIRED",
        "detach of a parameter reset only at start",
    );
    assert_eq!(
        get(second_key).await,
        second_value,
        "{second_key} waits for the restart"
    );
    api.restart_instance(&t1(), id).await.expect("restart");
    let v = wait_view(&api, id, "HEALTHY after the second restart", idle_healthy).await;
    assert_view(&v, "HEALTHY", "after the second restart");
    assert_eq!(
        get(second_key).await,
        second_default,
        "{second_key} back to its default"
    );
    assert_eq!(get(dyn_key).await, dyn_default);
    step(&mut t, "detach + restart", ds);

    // ---- attach (with a parameter that needs a restart), then restart at once: operations on the instance are
    // ordered, so the restart is refused with upstream's 422 while the apply runs and taken after it; it shows
    // REBOOT, and ends HEALTHY with the group's values and no RESTART_REQUIRED left.
    api.update_instance(&t1(), id, attach(g))
        .await
        .expect("attach again");
    let mut refusals = 0;
    loop {
        match api.restart_instance(&t1(), id).await {
            Ok(()) => break,
            Err(e) => {
                assert_eq!(status_of(&e), 422, "{e}");
                // Refused while the apply runs, or (the same 422) because the apply's commit moved the instance
                // between the gate and the restart's commit.
                assert!(
                    e.to_string().contains("apply_configuration")
                        || e.to_string()
                            .contains("changed while the request was handled"),
                    "{e}"
                );
                refusals += 1;
                assert!(refusals < 600, "the apply never ended: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let v = api.show_instance(&t1(), id).await.expect("show");
    assert_eq!(v.status, "REBOOT", "the restart shows on its way");
    let v = wait_view(&api, id, "HEALTHY after attach + restart", idle_healthy).await;
    assert_view(&v, "HEALTHY", "after attach + restart");
    assert_eq!(
        get(second_key).await,
        second_value,
        "{second_key} after attach + restart"
    );
    assert_eq!(get(dyn_key).await, v2, "{dyn_key} after attach + restart");
    eprintln!("[{ds}] restart refused {refusals} time(s) while the apply ran");
    step(&mut t, "attach + restart at once", ds);

    api.delete_instance(&t1(), id).await.expect("delete");
    eventually("the delete finishes", ENGINE_WAIT, || async {
        match api.show_instance(&t1(), id).await {
            Ok(v) => Err(v.status),
            Err(_) => Ok(()),
        }
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_configuration_groups_apply() {
    configuration_on_real_engine(Plan {
        ds: "mariadb",
        kind: Engine::Mysql,
        dynamic: ("max_connections", 77, 88),
        second: ("performance_schema", json!(true), 1, false),
        other_ds: "postgresql",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgresql_configuration_groups_apply() {
    configuration_on_real_engine(Plan {
        ds: "postgresql",
        kind: Engine::Postgres,
        dynamic: ("work_mem", 8192, 16384),
        second: ("max_connections", json!(77), 77, false),
        other_ds: "mariadb",
    })
    .await;
}

/// Redis has no restart-only parameter in the shipped rules: `maxclients` changes live, but its default (which
/// the server derives from its file limit at start) is unknown to the guest, so removing it waits for a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_configuration_groups_apply() {
    configuration_on_real_engine(Plan {
        ds: "redis",
        kind: Engine::Redis,
        dynamic: ("timeout", 300, 120),
        second: ("maxclients", json!(500), 500, true),
        other_ds: "mariadb",
    })
    .await;
}

// ================================================================== in-memory control plane

/// The shared hand-driven configuration, with shorter guest calls (3 s).
fn mem_config() -> CoreConfig {
    CoreConfig {
        agent_call_high_timeout: Duration::from_secs(3),
        ..api_support::mem_config()
    }
}

/// An in-memory control plane without a task manager (workers are driven by hand), PostgreSQL "16" and Redis
/// "7" with their shipped parameter rules.
async fn world() -> World {
    let w = World::start(mem_config(), &[]).await;
    add_versions(&w.api, [version("redis", "7", true)]).await;
    load_rules(&w.parts, "postgresql", "16", Manager::Postgresql).await;
    load_rules(&w.parts, "redis", "7", Manager::Redis).await;
    w
}

fn tm(w: &World, worker: &str) -> TaskManager {
    tm_on(w, worker, w.parts.store.clone())
}

/// A worker on `store` (a crash-injecting layer, say).
fn tm_on(w: &World, worker: &str, store: DynStore) -> TaskManager {
    TaskManager::new(
        store,
        w.parts.bus.clone(),
        w.parts.compute.clone(),
        w.parts.block_storage.clone(),
        w.parts.clock.clone(),
        mem_config(),
        TaskManagerConfig {
            worker_id: worker.into(),
            poll_interval: Duration::from_millis(5),
            ..TaskManagerConfig::default()
        },
    )
}

/// A built, healthy PostgreSQL instance.
async fn built(w: &World, name: &str) -> Uuid {
    api_support::built(w, name, &tm(w, "builder")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_update_reapplies_to_every_instance() {
    let w = world().await;
    let a = built(&w, "a").await;
    let b = built(&w, "b").await;
    let g = new_group(&w.api, "postgresql", "g", json!({ "work_mem": 8192 })).await;
    for id in [a, b] {
        w.api.update_instance(&t1(), id, attach(g)).await.unwrap();
    }
    assert_eq!(tm(&w, "tm").run_pending().await.unwrap(), 2);
    set_group(
        &w.api,
        g,
        json!({ "work_mem": 16384, "statement_timeout": 5000 }),
    )
    .await;
    for id in [a, b] {
        open_workflow(&w, id, &ApplyConfigurationParams::KIND).await;
    }
    assert_eq!(tm(&w, "tm").run_pending().await.unwrap(), 2);
    for id in [a, b] {
        assert_eq!(
            w.parts.engines.engine(id).overrides(),
            values(json!({ "work_mem": 16384, "statement_timeout": 5000 }))
        );
        let v = w.api.show_instance(&t1(), id).await.unwrap();
        assert_eq!(
            (v.instance.task, v.operating_status.as_str()),
            (TaskStatus::None, "HEALTHY")
        );
        assert!(open_workflows(&w, id, &ApplyConfigurationParams::KIND)
            .await
            .is_empty());
    }
    // Bad requests: another datastore's group, a second group, a busy instance.
    let r = new_group(&w.api, "redis", "r", json!({ "timeout": 10 })).await;
    let c = built(&w, "c").await;
    let e = w
        .api
        .update_instance(&t1(), c, attach(r))
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 400, "{e}");
    let e = w
        .api
        .update_instance(&t1(), a, attach(g))
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 400, "{e}");
    w.api.restart_instance(&t1(), c).await.unwrap();
    let e = w
        .api
        .update_instance(&t1(), c, attach(g))
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 400, "{e}");
    w.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_does_not_answer_leaves_a_fault_and_task_none() {
    let w = world().await;
    let id = built(&w, "db").await;
    let g = new_group(&w.api, "postgresql", "g", json!({ "work_mem": 8192 })).await;
    w.api.update_instance(&t1(), id, attach(g)).await.unwrap();
    w.parts.launcher.shutdown_all().await;
    let wf = open_workflow(&w, id, &ApplyConfigurationParams::KIND).await;
    assert!(tm(&w, "tm").run_workflow(wf).await.unwrap());
    let after = w.parts.store.get_workflow(wf).await.unwrap().unwrap();
    assert_eq!(after.state, WorkflowState::Failed);
    let inst = w.parts.store.get_instance(id).await.unwrap().unwrap();
    assert_eq!(inst.task, TaskStatus::None);
    let fault = inst.fault.expect("a fault");
    assert_eq!(
        fault.message,
        "The configuration group could not be applied."
    );
    assert!(!fault.details.is_empty());
    assert!(w.parts.engines.engine(id).overrides().is_empty());
    w.end().await;
}

/// An attach whose worker died after it loaded the group, then a detach: operations on one instance are ordered,
/// so the detach is refused (422) while the attach is open; once the attach resumed and ended, the detach is taken
/// and the engine ends with the instance's current (empty) set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_applies_end_with_the_current_group() {
    let w = world().await;
    let id = built(&w, "db").await;
    let g = new_group(&w.api, "postgresql", "g", json!({ "work_mem": 8192 })).await;
    w.api.update_instance(&t1(), id, attach(g)).await.unwrap();
    let attach_wf = open_workflow(&w, id, &ApplyConfigurationParams::KIND).await;
    // Journal writes: load Started (1), load Completed (2), apply Started (3): dies before the guest call.
    let dying = CrashingStore::new(w.parts.store.clone(), 3);
    let first = tm_on(&w, "tm-a", dying.clone());
    first.run_workflow(attach_wf).await.unwrap();
    assert!(dying.crashed());
    assert!(w.parts.engines.engine(id).overrides().is_empty());
    let refused = w
        .api
        .update_instance(&t1(), id, detach())
        .await
        .expect_err("a detach while the attach is open");
    assert_eq!(refused.fault().status, 422, "{refused}");
    w.clock
        .advance(mem_config().workflow_lease + Duration::from_secs(1));
    assert!(tm(&w, "tm-c").run_workflow(attach_wf).await.unwrap());
    assert_eq!(
        w.parts.engines.engine(id).overrides().get("work_mem"),
        Some(&json!(8192))
    );
    w.api.update_instance(&t1(), id, detach()).await.unwrap();
    let open = open_workflows(&w, id, &ApplyConfigurationParams::KIND).await;
    let detach_wf = *open.iter().find(|x| **x != attach_wf).expect("the detach");
    assert!(tm(&w, "tm-b").run_workflow(detach_wf).await.unwrap());
    assert_eq!(
        w.parts
            .store
            .get_workflow(attach_wf)
            .await
            .unwrap()
            .unwrap()
            .state,
        WorkflowState::Done
    );
    assert!(
        w.parts.engines.engine(id).overrides().is_empty(),
        "the detach left the group: {:?}",
        w.parts.engines.engine(id).overrides()
    );
    let v = w.api.show_instance(&t1(), id).await.unwrap();
    assert_eq!(v.configuration, None);
    assert_view(&v, "HEALTHY", "after overlapping applies");
    w.end().await;
}

/// A mgmt reboot of an instance waiting for a restart ends HEALTHY, RESTART_REQUIRED cleared (like the `restart`
/// action), instead of waiting for reports that a sticky status hid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mgmt_reboot_clears_restart_required() {
    let w = world().await;
    let id = built(&w, "db").await;
    let g = new_group(&w.api, "postgresql", "g", json!({ "shared_buffers": 4096 })).await;
    w.api.update_instance(&t1(), id, attach(g)).await.unwrap();
    assert_eq!(tm(&w, "tm").run_pending().await.unwrap(), 1);
    assert_eq!(service_status(&w, id).await, ServiceStatus::RestartRequired);
    w.api
        .mgmt_instance_action(
            &RequestContext::admin("t1"),
            id,
            trove::core::api::MgmtAction::Reboot,
        )
        .await
        .unwrap();
    let wf = open_workflow(&w, id, &RebootParams::KIND).await;
    assert!(tm(&w, "tm").run_workflow(wf).await.unwrap());
    let v = w.api.show_instance(&t1(), id).await.unwrap();
    assert_view(&v, "HEALTHY", "after a mgmt reboot");
    w.end().await;
}
