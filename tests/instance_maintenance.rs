//! Datastore-version upgrade, mgmt migrate and mgmt rebuild.
//!
//! - On REAL engines (MariaDB, PostgreSQL) through the embedded deployment with two local hosts (`local` and
//!   `remote`): data written before survives an upgrade to a second version record of the datastore (UPGRADE,
//!   then HEALTHY on the new version), a migration to the other host (the mgmt view names the new host, the engine
//!   runs from the new host's directory with a new pid, the old directory is gone) and a rebuild (the engine's
//!   generated files are made again, the attached configuration group still applies). Bad requests get their
//!   faults. One engine test runs at a time (the cross-process lock `tests/engines_api.rs` uses).
//! - On the in-memory control plane: a failed upgrade rolls back to the old version, and the three upstream sample
//!   requests get their statuses over HTTP. (Crashes at every journal write of these workflows are the generic
//!   crash harness's: `trove-core/tests/crash_harness.rs`.)

mod api_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use uuid::Uuid;

use trove::core::api::{
    ApiService, CreateConfiguration, CreateInstance, DatastoreVersionSpec, MgmtAction,
    UpdateInstance,
};
use trove::core::memory::NoAuth;
use trove::core::model::{
    LogAction, LogActionRequest, SslActionBody, SslStatus, WorkflowParams, WorkflowState,
};
use trove::core::ports::{Compute, InfraStore, RequestContext};
use trove::core::state::TaskStatus;
use trove::core::taskmanager::{MigrateParams, TaskManager, TaskManagerConfig, UpgradeParams};
use trove::http::HttpConfig;

use api_support::{
    add_versions, alive, app_execute, app_i64, endpoint, engine_instance, engines_under,
    eventually, idle_healthy, mem_config, open_workflow, pid_listening_on, redis_connect,
    redis_setting, step, t1, version, wait_engine_view as wait_view, Engine, EngineEnv, HttpClient,
    World, APP_PASSWORD, APP_USER, ENGINE_WAIT,
};

fn admin() -> RequestContext {
    RequestContext::admin("t1")
}

fn status_of(e: &trove::core::Error) -> u16 {
    e.fault().status
}

// ================================================================== real engines

/// Where the engine writes its output: a log in its engine dir inside the server directory (its working
/// directory is the data directory on the volume, which does not move).
fn output_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/fd/1")).expect("engine stdout")
}

/// Adds `v` to the data (SQL: a row of table `t` in `shop`; Redis: `INCRBY k`), as the user `app`.
async fn add_row(k: Engine, at: SocketAddr, v: i64) {
    if k == Engine::Redis {
        let mut c = app_redis(at).await;
        let _: i64 = redis::cmd("INCRBY")
            .arg("k")
            .arg(v)
            .query_async(&mut c)
            .await
            .expect("INCRBY");
        return;
    }
    app_execute(
        k,
        at,
        &[
            "CREATE TABLE IF NOT EXISTS t (v INT)",
            &format!("INSERT INTO t VALUES ({v})"),
        ],
    )
    .await;
}

async fn app_redis(at: SocketAddr) -> redis::aio::MultiplexedConnection {
    redis_connect(at, APP_USER, APP_PASSWORD)
        .await
        .expect("app connects to redis")
}

/// The sum of what was added, read as the user `app`.
async fn row_sum(k: Engine, at: SocketAddr) -> i64 {
    let q = match k {
        Engine::Mysql => "SELECT CAST(SUM(v) AS SIGNED) FROM t",
        Engine::Postgres => "SELECT SUM(v)::bigint FROM t",
        Engine::Redis => {
            return redis::cmd("GET")
                .arg("k")
                .query_async(&mut app_redis(at).await)
                .await
                .expect("GET k");
        }
    };
    app_i64(k, at, q).await.expect("a sum")
}

/// Whether MariaDB's general log is on (1) or off (0).
async fn general_log(at: SocketAddr) -> i64 {
    app_i64(Engine::Mysql, at, "SELECT CAST(@@general_log AS SIGNED)")
        .await
        .expect("general_log")
}

/// Whether PostgreSQL has TLS on (1) or off (0).
async fn pg_ssl(at: SocketAddr) -> i64 {
    app_i64(
        Engine::Postgres,
        at,
        "SELECT CASE WHEN current_setting('ssl') = 'on' THEN 1 ELSE 0 END::bigint",
    )
    .await
    .expect("ssl setting")
}

/// The server record (`server.json`) in server directory `dir`.
fn server_record(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("server.json")).expect("server record"))
        .expect("server record json")
}

/// The configuration parameter the test's group sets.
fn conf_key(k: Engine) -> &'static str {
    match k {
        Engine::Mysql | Engine::Postgres => "max_connections",
        Engine::Redis => "maxclients",
    }
}

/// The engine's own value of [`conf_key`] (Redis: `CONFIG GET` as the guest's admin account, whose secret the
/// server directory under `state` holds).
async fn max_connections(k: Engine, at: SocketAddr, state: &Path, id: Uuid) -> i64 {
    let q = match k {
        Engine::Mysql => "SELECT CAST(@@max_connections AS SIGNED)",
        Engine::Postgres => "SELECT current_setting('max_connections')::bigint",
        Engine::Redis => return redis_setting(at, state, id, "maxclients").await,
    };
    app_i64(k, at, q).await.expect("max_connections")
}

async fn maintenance_on_real_engine(ds: &str, k: Engine) {
    let waited = Instant::now();
    let env = EngineEnv::start_with(|o| o.extra_hosts = vec!["remote".into()]).await;
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

    // ---- a configuration group, an instance with it, a database, a user and a row.
    let mut values = Map::new();
    values.insert(conf_key(k).into(), json!(77));
    let conf = api
        .create_configuration(
            &t1(),
            CreateConfiguration {
                name: "maint".into(),
                description: None,
                values,
                datastore: Some(ds.into()),
                datastore_version: None,
                datastore_version_number: None,
            },
        )
        .await
        .expect("create configuration");
    let created = api
        .create_instance(
            &t1(),
            CreateInstance {
                configuration: Some(conf.configuration.id),
                ..engine_instance(&format!("{ds}-maint"), ds, true)
            },
        )
        .await
        .expect("create");
    let id = created.instance.id;
    let v = wait_view(&api, id, "HEALTHY after create", idle_healthy).await;
    step(&mut t, "create to HEALTHY", ds);
    let at = endpoint(&v.instance);
    let old_version = v.datastore_version.clone();
    add_row(k, at, 1).await;
    assert_eq!(row_sum(k, at).await, 1);
    assert_eq!(
        max_connections(k, at, &state, id).await,
        77,
        "the group applies"
    );
    assert_eq!(
        api.mgmt_show_instance(&admin(), id)
            .await
            .expect("mgmt show")
            .instance
            .host
            .as_deref(),
        Some("local")
    );

    // ---- a second (and an inactive third) version record of the same datastore, on the same engine binaries.
    let target = api
        .mgmt_create_datastore_version(
            &admin(),
            DatastoreVersionSpec {
                datastore_name: ds.into(),
                name: "upgrade-target".into(),
                manager: old_version.manager.as_str().into(),
                image: old_version.image.clone(),
                active: true,
                version: Some(old_version.version.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("second version")
        .version;
    let inactive = api
        .mgmt_create_datastore_version(
            &admin(),
            DatastoreVersionSpec {
                datastore_name: ds.into(),
                name: "retired".into(),
                manager: old_version.manager.as_str().into(),
                image: old_version.image.clone(),
                active: false,
                version: Some(old_version.version.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("inactive version")
        .version;
    let other_ds = if ds == "postgresql" {
        "mariadb"
    } else {
        "postgresql"
    };
    let other_version = api
        .list_datastore_versions(&t1(), other_ds)
        .await
        .expect("other datastore's versions")
        .into_iter()
        .next()
        .expect("a version of the other datastore")
        .version;

    // ---- bad requests get their faults and change nothing.
    let upgrade = |v: String| UpdateInstance {
        datastore_version: Some(v),
        ..Default::default()
    };
    let bad = [
        ("no-such-version".to_string(), 404),
        (other_version.id.to_string(), 400),
        (inactive.name.clone(), 400),
        (old_version.id.to_string(), 400),
    ];
    for (version, want) in bad {
        let e = api
            .update_instance(&t1(), id, upgrade(version.clone()))
            .await
            .expect_err("a bad upgrade is refused");
        assert_eq!(status_of(&e), want, "upgrade to {version}: {e}");
    }
    let e = api
        .mgmt_instance_action(&t1(), id, MgmtAction::Migrate { host: None })
        .await
        .expect_err("migrate needs the admin role");
    assert_eq!(status_of(&e), 403, "{e}");
    let e = api
        .mgmt_instance_action(
            &t1(),
            id,
            MgmtAction::Rebuild {
                image_id: Uuid::new_v4().to_string(),
            },
        )
        .await
        .expect_err("rebuild needs the admin role");
    assert_eq!(status_of(&e), 403, "{e}");
    for (host, want) in [("compute-001", 400), ("local", 400)] {
        let e = api
            .mgmt_instance_action(
                &admin(),
                id,
                MgmtAction::Migrate {
                    host: Some(host.into()),
                },
            )
            .await
            .expect_err("a bad host is refused");
        assert_eq!(status_of(&e), want, "migrate to {host}: {e}");
    }
    let e = api
        .mgmt_instance_action(
            &admin(),
            id,
            MgmtAction::Rebuild {
                image_id: "not-a-uuid".into(),
            },
        )
        .await
        .expect_err("a bad image id is refused");
    assert_eq!(status_of(&e), 400, "{e}");
    let v = api.show_instance(&t1(), id).await.expect("show");
    assert!(idle_healthy(&v), "bad requests changed the instance: {v:?}");
    assert_eq!(v.datastore_version.id, old_version.id);
    step(&mut t, "bad requests", ds);

    // ---- an upgrade to a version whose binaries are missing fails and rolls back: the old version runs again
    // with the data, the instance shows UPGRADING_ERROR with a fault naming both versions.
    let broken = api
        .mgmt_create_datastore_version(
            &admin(),
            DatastoreVersionSpec {
                datastore_name: ds.into(),
                name: "broken".into(),
                manager: old_version.manager.as_str().into(),
                image: "/nonexistent/trove-maintenance-test/bin".into(),
                active: true,
                version: Some(old_version.version.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("broken version")
        .version;
    api.update_instance(&t1(), id, upgrade(broken.name.clone()))
        .await
        .expect("the broken upgrade is accepted (the API cannot know)");
    let failed = wait_view(&api, id, "the failed upgrade ends", |v| {
        v.instance.task != TaskStatus::Upgrading
    })
    .await;
    step(&mut t, "failed upgrade + rollback", ds);
    assert_eq!(
        failed.instance.task,
        TaskStatus::UpgradingError,
        "{failed:?}"
    );
    assert_eq!(failed.status, "ERROR");
    assert_eq!(
        failed.datastore_version.id, old_version.id,
        "the instance is back on the old version"
    );
    let fault = failed.instance.fault.clone().expect("a fault");
    assert!(
        fault.message.contains("'broken'") && fault.message.contains("runs again"),
        "{}",
        fault.message
    );
    assert_eq!(row_sum(k, at).await, 1, "data survives the failed upgrade");
    let record = server_record(&state.join("servers").join(id.to_string()));
    assert_eq!(
        record["datastore_version"]["id"],
        json!(old_version.id),
        "the server runs the old version again"
    );
    // upstream `instance:reset_status` is `rule:admin`
    api.reset_status(&admin(), id).await.expect("reset status");
    wait_view(&api, id, "HEALTHY after reset", idle_healthy).await;

    // ---- upgrade: UPGRADE, then HEALTHY on the new version with the data; the engine was relaunched.
    let pid_before = pid_listening_on(at).expect("engine pid");
    api.update_instance(&t1(), id, upgrade(target.name.clone()))
        .await
        .expect("upgrade accepted");
    let during = api.show_instance(&t1(), id).await.expect("show");
    assert_eq!(during.status, "UPGRADE", "{during:?}");
    assert_eq!(during.instance.task, TaskStatus::Upgrading);
    let e = api
        .update_instance(&t1(), id, upgrade(old_version.name.clone()))
        .await
        .expect_err("a second upgrade while upgrading");
    assert_eq!(status_of(&e), 422, "{e}");
    let v = wait_view(&api, id, "HEALTHY after upgrade", idle_healthy).await;
    step(&mut t, "upgrade (PATCH to HEALTHY)", ds);
    assert_eq!(v.datastore_version.id, target.id, "the new version shows");
    assert_eq!(v.datastore_version.name, "upgrade-target");
    let record = server_record(&state.join("servers").join(id.to_string()));
    assert_eq!(
        record["datastore_version"]["id"],
        json!(target.id),
        "the guest was relaunched for the new version"
    );
    assert_eq!(
        v.instance.fault,
        Some(fault.clone()),
        "a successful upgrade records no new fault (the rolled-back one stays, as upstream keeps faults)"
    );
    assert_eq!(row_sum(k, at).await, 1, "data survives the upgrade");
    let pid_upgraded = pid_listening_on(at).expect("engine pid after upgrade");
    assert_ne!(pid_upgraded, pid_before, "the engine was started again");
    assert_eq!(
        max_connections(k, at, &state, id).await,
        77,
        "the group still applies"
    );
    add_row(k, at, 2).await;

    // ---- migrate to the other host: the server directory and the engine move; data intact.
    let local_dir = state.join("servers").join(id.to_string());
    let remote_dir = state.join("hosts").join("remote").join(id.to_string());
    assert!(local_dir.is_dir() && !remote_dir.exists());
    assert!(
        output_of(pid_upgraded).starts_with(&local_dir),
        "{}",
        output_of(pid_upgraded).display()
    );
    api.mgmt_instance_action(
        &admin(),
        id,
        MgmtAction::Migrate {
            host: Some("remote".into()),
        },
    )
    .await
    .expect("migrate accepted");
    let during = api.show_instance(&t1(), id).await.expect("show");
    assert_eq!(
        (during.status.as_str(), during.instance.task),
        ("RESIZE", TaskStatus::Migrating),
        "{during:?}"
    );
    let v = wait_view(&api, id, "HEALTHY after migrate", idle_healthy).await;
    step(&mut t, "migrate to the other host", ds);
    let shown = api
        .mgmt_show_instance(&admin(), id)
        .await
        .expect("mgmt show");
    assert_eq!(
        shown.instance.host.as_deref(),
        Some("remote"),
        "host changed"
    );
    assert_eq!(
        endpoint(&v.instance),
        at,
        "the engine keeps its address and port"
    );
    assert!(!local_dir.exists(), "the old server directory is gone");
    assert!(remote_dir.join("server.json").is_file());
    let pid_migrated = pid_listening_on(at).expect("engine pid after migrate");
    assert_ne!(pid_migrated, pid_upgraded, "the engine was started again");
    assert!(
        output_of(pid_migrated).starts_with(&remote_dir),
        "the engine runs from the new host: {}",
        output_of(pid_migrated).display()
    );
    assert!(!alive(pid_upgraded), "the old engine process is gone");
    assert_eq!(row_sum(k, at).await, 3, "data survives the migration");

    // ---- rebuild: the generated files are made again; data and configuration survive (PostgreSQL: TLS too,
    // enabled here; its engine reloads it live).
    if k == Engine::Postgres {
        let r = api
            .ssl_action(
                &t1(),
                id,
                SslActionBody {
                    enable: Some(true),
                    mode: Some("basic".into()),
                    ..Default::default()
                },
            )
            .await
            .expect("enable TLS");
        assert_eq!(r.status, SslStatus::On);
        wait_view(&api, id, "HEALTHY with TLS", idle_healthy).await;
        assert_eq!(pg_ssl(at).await, 1, "the engine serves TLS");
        step(&mut t, "enable TLS", ds);
    }
    // MariaDB: the general log, turned on through the API, stays on.
    if k == Engine::Mysql {
        api.guest_log_action(
            &t1(),
            id,
            LogActionRequest::new("general", LogAction::Enable),
        )
        .await
        .expect("enable the general log");
        assert_eq!(general_log(at).await, 1, "the general log is on");
    }
    let engine_dir = remote_dir.join("engine");
    let marker = engine_dir.join("left-by-the-test");
    std::fs::write(&marker, b"generated state").expect("marker");
    api.mgmt_instance_action(
        &admin(),
        id,
        MgmtAction::Rebuild {
            image_id: "3e50414a-8532-4646-982c-a66fe8f0411b".into(),
        },
    )
    .await
    .expect("rebuild accepted");
    let during = api.show_instance(&t1(), id).await.expect("show");
    assert_eq!(
        (during.status.as_str(), during.instance.task),
        ("BUILD", TaskStatus::Rebuilding),
        "{during:?}"
    );
    let v = wait_view(&api, id, "HEALTHY after rebuild", idle_healthy).await;
    step(&mut t, "rebuild", ds);
    assert!(
        !marker.exists(),
        "the rebuild made the engine's files again"
    );
    let record = server_record(&remote_dir);
    assert_eq!(
        record["image_id"], "3e50414a-8532-4646-982c-a66fe8f0411b",
        "the image is recorded"
    );
    assert_eq!(
        v.configuration.as_ref().map(|c| c.0),
        Some(conf.configuration.id),
        "the group stays attached"
    );
    assert_eq!(
        max_connections(k, at, &state, id).await,
        77,
        "the group applies after the rebuild"
    );
    assert_eq!(row_sum(k, at).await, 3, "data survives the rebuild");
    if k == Engine::Mysql {
        assert_eq!(
            general_log(at).await,
            1,
            "the general log is still on after the rebuild"
        );
    }
    if k == Engine::Postgres {
        let shown = api.ssl_show(&t1(), id, false).await.expect("ssl show");
        assert_eq!(shown.status, SslStatus::On, "TLS stays on: {shown:?}");
        assert_eq!(pg_ssl(at).await, 1, "the rebuilt engine serves TLS");
    }
    assert_eq!(v.datastore_version.id, target.id);

    // ---- migrate without a host: the only other host is `local`.
    api.mgmt_instance_action(&admin(), id, MgmtAction::Migrate { host: None })
        .await
        .expect("migrate back accepted");
    wait_view(&api, id, "HEALTHY after migrating back", idle_healthy).await;
    step(&mut t, "migrate back (host picked)", ds);
    let shown = api
        .mgmt_show_instance(&admin(), id)
        .await
        .expect("mgmt show");
    assert_eq!(shown.instance.host.as_deref(), Some("local"));
    assert!(local_dir.join("server.json").is_file() && !remote_dir.exists());
    assert_eq!(row_sum(k, at).await, 3);

    api.delete_instance(&t1(), id).await.expect("delete");
    eventually("the delete finishes", ENGINE_WAIT, || async {
        match api.show_instance(&t1(), id).await {
            Ok(v) => Err(v.status),
            Err(_) => Ok(()),
        }
    })
    .await;
    assert!(
        engines_under(&state).is_empty(),
        "engines left after delete"
    );
    assert_eq!(
        pid_listening_on(at),
        None,
        "the engine's address and port are free after delete"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_upgrade_migrate_rebuild_keep_data() {
    maintenance_on_real_engine("mariadb", Engine::Mysql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgresql_upgrade_migrate_rebuild_keep_data() {
    maintenance_on_real_engine("postgresql", Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_upgrade_migrate_rebuild_keep_data() {
    maintenance_on_real_engine("redis", Engine::Redis).await;
}

// ================================================================== in-memory control plane

/// An in-memory control plane without a task manager (workers are driven by hand) on `hosts`, and PostgreSQL
/// versions "16" (default), "17" and "sample_datastore_version", and Redis "7".
async fn world(hosts: &[&str]) -> World {
    let w = World::start(mem_config(), hosts).await;
    add_versions(
        &w.api,
        [
            version("postgresql", "17", false),
            version("postgresql", "sample_datastore_version", false),
            version("redis", "7", true),
        ],
    )
    .await;
    w
}

fn tm(w: &World, worker: &str) -> TaskManager {
    TaskManager::new(
        w.parts.store.clone(),
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
async fn built(w: &World) -> Uuid {
    api_support::built(w, "db", &tm(w, "builder")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_rolls_back_to_the_old_version() {
    let w = world(&["h1"]).await;
    let id = built(&w).await;
    let old = w
        .api
        .show_instance(&t1(), id)
        .await
        .unwrap()
        .datastore_version;
    w.api
        .update_instance(
            &t1(),
            id,
            UpdateInstance {
                datastore_version: Some("17".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // The engine refuses to come up on the new version once.
    w.parts.engines.engine(id).fail_next_prepare();
    let wf = open_workflow(&w, id, &UpgradeParams::KIND).await;
    assert!(tm(&w, "tm").run_workflow(wf).await.unwrap());
    assert_eq!(
        w.parts.store.get_workflow(wf).await.unwrap().unwrap().state,
        WorkflowState::Failed
    );
    let v = w.api.show_instance(&t1(), id).await.unwrap();
    assert_eq!(v.instance.task, TaskStatus::UpgradingError);
    assert_eq!(v.status, "ERROR", "never stuck in UPGRADE");
    assert_eq!(
        v.datastore_version.id, old.id,
        "rolled back to the old version"
    );
    let fault = v.instance.fault.expect("a fault");
    assert!(
        fault
            .message
            .contains("rolled back to datastore version '16'"),
        "{}",
        fault.message
    );
    assert!(fault.message.contains("'17'"), "{}", fault.message);
    assert_eq!(
        w.parts.compute.spec(id).unwrap().datastore_version.id,
        old.id,
        "the server runs the old version again"
    );
    assert!(
        w.parts.engines.engine(id).is_running(),
        "the engine runs again"
    );
    // reset_status (an admin's: upstream `instance:reset_status` is `rule:admin`) clears the error; the instance
    // is usable and can be upgraded again.
    w.api.reset_status(&admin(), id).await.unwrap();
    w.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_maintenance_requests_get_their_faults() {
    let w = world(&["h1"]).await;
    let id = built(&w).await;
    let up = |v: &str| UpdateInstance {
        datastore_version: Some(v.into()),
        ..Default::default()
    };
    for (v, want) in [("nope", 404), ("7", 400), ("16", 400), ("", 400)] {
        let e = w.api.update_instance(&t1(), id, up(v)).await.unwrap_err();
        assert_eq!(status_of(&e), want, "upgrade to '{v}': {e}");
    }
    let e = w
        .api
        .update_instance(
            &t1(),
            id,
            UpdateInstance {
                name: Some("x".into()),
                datastore_version: Some("17".into()),
                configuration: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 400, "two attributes besides name: {e}");
    let e = w
        .api
        .mgmt_instance_action(&t1(), id, MgmtAction::Migrate { host: None })
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 403);
    let e = w
        .api
        .mgmt_instance_action(&admin(), id, MgmtAction::Migrate { host: None })
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 400, "{e}");
    assert!(e.to_string().contains("no other host"), "{e}");
    let e = w
        .api
        .mgmt_instance_action(
            &admin(),
            Uuid::new_v4(),
            MgmtAction::Rebuild {
                image_id: Uuid::new_v4().to_string(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 404);
    // Busy: an upgrade refuses the other two (422).
    w.api.update_instance(&t1(), id, up("17")).await.unwrap();
    let e = w
        .api
        .mgmt_instance_action(
            &admin(),
            id,
            MgmtAction::Rebuild {
                image_id: Uuid::new_v4().to_string(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 422, "{e}");
    assert!(w.parts.store.get_instance(id).await.unwrap().unwrap().task == TaskStatus::Upgrading);
    assert_eq!(
        w.parts.compute.hosts().await.unwrap(),
        vec!["h1".to_string()]
    );
    w.end().await;
}

/// An API without access to compute (the distributed `trove-api` role) accepts a migration to a host it cannot
/// check; the task manager refuses it before stopping anything: task NONE again, a fault naming the host, the
/// engine never stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_to_an_unknown_host_fails_before_the_engine_stops() {
    let w = world(&["h1", "h2"]).await;
    let id = built(&w).await;
    let api = ApiService::new(
        w.parts.store.clone(),
        w.parts.bus.clone(),
        w.parts.clock.clone(),
        mem_config(),
    );
    api.mgmt_instance_action(
        &admin(),
        id,
        MgmtAction::Migrate {
            host: Some("nowhere".into()),
        },
    )
    .await
    .expect("accepted: this API cannot see the hosts");
    let starts = w.parts.engines.engine(id).starts();
    let wf = open_workflow(&w, id, &MigrateParams::KIND).await;
    assert!(tm(&w, "tm").run_workflow(wf).await.unwrap());
    assert_eq!(
        w.parts.store.get_workflow(wf).await.unwrap().unwrap().state,
        WorkflowState::Failed
    );
    let v = w.api.show_instance(&t1(), id).await.unwrap();
    assert_eq!(v.instance.task, TaskStatus::None);
    assert_eq!(v.instance.host.as_deref(), Some("h1"));
    let fault = v.instance.fault.expect("a fault");
    assert!(fault.details.contains("'nowhere'"), "{fault:?}");
    let engine = w.parts.engines.engine(id);
    assert!(engine.is_running(), "the engine was not stopped");
    assert_eq!(
        engine.starts(),
        starts,
        "the engine was not restarted either"
    );
    w.end().await;
}

/// The three upstream samples over HTTP, on an in-memory control plane with one host (`localhost`, the plain
/// in-memory deployment) and on one whose hosts include the sample's `compute-001`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_samples_over_http() {
    let samples = api_support::reference_dir().join("trove-api-samples");
    let read = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(samples.join(name)).expect("sample")).expect("json")
    };
    let upgrade = read("instance-patch-upgrade-datastore-version-request.json");
    let migrate = read("instance-mgmt-action-migrate-request.json");
    let rebuild = read("instance-mgmt-action-rebuild-instance-request.json");
    for hosts in [&["localhost"][..], &["localhost", "h2", "compute-001"][..]] {
        let w = world(hosts).await;
        let base = api_support::serve_in_process(
            w.api.clone(),
            Arc::new(NoAuth::admin()),
            HttpConfig::default(),
        )
        .await;
        let http = HttpClient::new(format!("{base}/v1.0/t1/"), "");
        let mut got = Vec::new();
        for (method, path, body) in [
            ("PATCH", "instances/{id}", &upgrade),
            ("POST", "mgmt/instances/{id}/action", &migrate),
            ("POST", "mgmt/instances/{id}/action", &rebuild),
        ] {
            // A fresh healthy instance per sample, so one sample's task does not refuse the next.
            let id = built(&w).await;
            let (status, answer) = http
                .send(method, &path.replace("{id}", &id.to_string()), Some(body))
                .await;
            eprintln!("hosts {hosts:?}: {method} {path} -> {status} {answer}");
            got.push(status);
        }
        if hosts.len() == 1 {
            assert_eq!(got, vec![202, 400, 202], "one host: compute-001 is unknown");
            // Malformed bodies: 400 before anything is looked at.
            let id = built(&w).await;
            for body in [
                json!({ "migrate": { "host": 5 } }),
                json!({ "rebuild": {} }),
                json!({ "rebuild": { "image_id": "not-a-uuid" } }),
            ] {
                let (status, _) = http
                    .send("POST", &format!("mgmt/instances/{id}/action"), Some(&body))
                    .await;
                assert_eq!(status, 400, "{body}");
            }
            let (status, _) = http
                .send(
                    "PATCH",
                    &format!("instances/{id}"),
                    Some(&json!({ "instance": { "datastore_version": "nope" } })),
                )
                .await;
            assert_eq!(status, 404, "unknown version");
        } else {
            assert_eq!(got, vec![202, 202, 202]);
        }
        w.end().await;
    }
}
