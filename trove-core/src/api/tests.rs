//! Unit tests of the API service over the in-memory ports and a running task manager and conductor.

use super::*;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

use crate::conductor::Conductor;
use crate::config::CoreConfig;
use crate::error::Result;
use crate::guest_agent::InProcessLauncher;
use crate::memory::{
    ManualClock, MemoryBlockStorage, MemoryBus, MemoryCompute, MemoryStore,
    SimulatedStrategyFactory,
};
use crate::model::{
    DatabaseSpec, Flavor, ParamType, Secret, ServiceStatusRecord, UserSpec, UserUpdate,
};
use crate::ports::InfraStore;
use crate::ports::RequestContext;
use crate::state::{BackupState, ServiceStatus, TaskStatus};
use crate::taskmanager::{TaskManager, TaskManagerConfig};
use serde_json::json;
use std::time::Duration;
use tokio::sync::watch;

struct World {
    api: ApiService,
    store: Arc<MemoryStore>,
    engines: Arc<SimulatedStrategyFactory>,
    backups: Arc<crate::memory::MemoryBackupStore>,
    stop: watch::Sender<bool>,
    _time: crate::memory::Ticker,
}

async fn world() -> World {
    build_world(false).await
}

/// A world whose strategies back up into a memory store (and a `redis` datastore besides).
async fn world_with_backups() -> World {
    build_world(true).await
}

async fn build_world(with_backups: bool) -> World {
    build_world_with(with_backups, |_| {}).await
}

async fn build_world_with(with_backups: bool, tune: impl FnOnce(&mut CoreConfig)) -> World {
    let mut config = CoreConfig {
        report_interval: Duration::from_secs(5),
        agent_call_low_timeout: Duration::from_secs(2),
        agent_call_high_timeout: Duration::from_secs(2),
        ..CoreConfig::default()
    };
    tune(&mut config);
    let store = Arc::new(MemoryStore::new());
    let bus = Arc::new(MemoryBus::new());
    let clock = Arc::new(ManualClock::new());
    let backups = Arc::new(crate::memory::MemoryBackupStore::new());
    let engines = Arc::new(if with_backups {
        SimulatedStrategyFactory::new().with_backup_store(backups.clone())
    } else {
        SimulatedStrategyFactory::new()
    });
    let launcher = Arc::new(InProcessLauncher::new(
        bus.clone(),
        clock.clone(),
        engines.clone(),
        config.report_interval,
    ));
    let compute = Arc::new(MemoryCompute::new(launcher));
    let (stop, rx) = watch::channel(false);
    let conductor = Conductor::new(store.clone(), bus.clone(), clock.clone(), None);
    let rx2 = rx.clone();
    tokio::spawn(async move { conductor.run(rx2).await });
    let tm = TaskManager::new(
        store.clone(),
        bus.clone(),
        compute,
        Arc::new(MemoryBlockStorage::new()),
        clock.clone(),
        config.clone(),
        TaskManagerConfig {
            poll_interval: Duration::from_millis(2),
            ..TaskManagerConfig::default()
        },
    );
    let tm = if with_backups {
        tm.with_backup_store(backups.clone())
    } else {
        tm
    };
    tokio::spawn(async move { tm.run(rx).await });
    // The task manager waits for guests on the clock: let time pass (1 ms per ms).
    let time = clock.ticking(Duration::from_millis(1));
    let mut api = ApiService::new(store.clone(), bus, clock, config);
    if with_backups {
        api = api.with_facets(crate::ports::FacetCatalog::from_factory(engines.as_ref()));
    }
    let admin = RequestContext::admin("admin");
    let mut stores = vec![("mysql", "mysql"), ("mongodb", "mongodb")];
    if with_backups {
        stores.push(("redis", "redis"));
        stores.push(("postgresql", "postgresql"));
    }
    for (ds, manager) in stores {
        api.mgmt_create_datastore_version(
            &admin,
            DatastoreVersionSpec {
                datastore_name: ds.into(),
                name: "1".into(),
                manager: manager.into(),
                active: true,
                default: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    api.mgmt_put_flavor(
        &admin,
        Flavor {
            id: "1".into(),
            name: "s".into(),
            ram_mb: 256,
            vcpus: 1,
            disk_gb: 1,
            ephemeral_gb: 0,
        },
    )
    .await
    .unwrap();
    World {
        api,
        store,
        engines,
        backups,
        stop,
        _time: time,
    }
}

fn t1() -> RequestContext {
    RequestContext::tenant("t1")
}

async fn active(w: &World, ds: &str) -> Uuid {
    let v = w
        .api
        .create_instance(
            &t1(),
            CreateInstance {
                name: "x".into(),
                flavor_ref: Some("1".into()),
                volume_size: Some(1),
                datastore: Some(ds.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait(w, v.instance.id, |v| {
        v.status == "ACTIVE" && v.instance.task == TaskStatus::None
    })
    .await;
    v.instance.id
}

async fn wait(w: &World, id: Uuid, pred: impl Fn(&InstanceView) -> bool) -> InstanceView {
    // Health reports come on the world's ticking clock: on a loaded machine a crash is seen after several
    // seconds, so the budget is generous (it ends as soon as the condition holds).
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while std::time::Instant::now() < deadline {
        let v = w.api.show_instance(&t1(), id).await.unwrap();
        if pred(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "condition never met: {:?}",
        w.api.show_instance(&t1(), id).await.unwrap()
    );
}

/// Waits until no workflow is open (the task manager runs in the background).
async fn no_open_workflows(w: &World) {
    for _ in 0..2000 {
        if w.store.list_open_workflows().await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("workflows stay open");
}

fn status<T: std::fmt::Debug>(r: Result<T>) -> u16 {
    r.unwrap_err().fault().status
}

fn backup_req(name: &str, id: Uuid) -> CreateBackup {
    CreateBackup {
        name: name.into(),
        instance: Some(id),
        ..Default::default()
    }
}

/// Waits until backup `id` ended (COMPLETED or FAILED) and its workflow closed.
async fn backup_ended(w: &World, id: Uuid) -> crate::model::Backup {
    no_open_workflows(w).await;
    let b = w.api.show_backup(&t1(), id).await.unwrap().backup;
    assert!(!b.state.is_running(), "{b:?}");
    b
}

/// A backup, an incremental on it and restores, through the API on simulated engines; and every bad request the
/// issue names, answered with upstream's status before anything is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_restore_and_their_refusals() {
    let w = world_with_backups().await;
    let api = &w.api;
    let t = t1();
    let id = active(&w, "mysql").await;
    api.create_databases(
        &t,
        id,
        vec![DatabaseSpec {
            name: "one".into(),
            character_set: None,
            collate: None,
        }],
    )
    .await
    .unwrap();

    // --incremental with no completed backup yet takes a full one.
    let full = api
        .create_backup(
            &t,
            CreateBackup {
                incremental: true,
                ..backup_req("full", id)
            },
        )
        .await
        .unwrap()
        .backup;
    assert_eq!(full.state, BackupState::New);
    assert_eq!(full.backup_type, crate::model::BackupType::Full);
    assert_eq!(full.parent_id, None);
    // While it runs, a second backup and other actions get 422.
    let running = api.show_instance(&t, id).await.unwrap();
    if running.status == "BACKUP" {
        assert_eq!(
            status(api.create_backup(&t, backup_req("again", id)).await),
            422
        );
        assert_eq!(status(api.restart_instance(&t, id).await), 422);
    }
    let full = backup_ended(&w, full.id).await;
    assert_eq!(full.state, BackupState::Completed, "{:?}", full.fault);
    assert!(full.location.is_some() && full.checksum.is_some() && full.bytes.is_some());
    assert_eq!(api.show_instance(&t, id).await.unwrap().status, "ACTIVE");

    api.create_databases(
        &t,
        id,
        vec![DatabaseSpec {
            name: "two".into(),
            character_set: None,
            collate: None,
        }],
    )
    .await
    .unwrap();
    let inc = api
        .create_backup(
            &t,
            CreateBackup {
                incremental: true,
                ..backup_req("inc", id)
            },
        )
        .await
        .unwrap()
        .backup;
    assert_eq!(inc.parent_id, Some(full.id));
    assert_eq!(inc.backup_type, crate::model::BackupType::Incremental);
    let inc = backup_ended(&w, inc.id).await;
    assert_eq!(inc.state, BackupState::Completed, "{:?}", inc.fault);

    // Restore the incremental: the databases at its time.
    let restore = |name: &str, b: Uuid, ds: &str, size: u32| CreateInstance {
        name: name.into(),
        flavor_ref: Some("1".into()),
        volume_size: Some(size),
        datastore: Some(ds.into()),
        restore_point: Some(b),
        ..Default::default()
    };
    let copy = api
        .create_instance(&t, restore("copy", inc.id, "mysql", 1))
        .await
        .unwrap()
        .instance
        .id;
    wait(&w, copy, |v| {
        v.status == "ACTIVE" && v.instance.task == TaskStatus::None
    })
    .await;
    assert_eq!(w.engines.engine(copy).databases(), vec!["one", "two"]);

    // Refusals.
    let usage = api.limits(&t).await.unwrap().usage;
    let unknown = Uuid::new_v4();
    assert_eq!(
        status(
            api.create_backup(
                &t,
                CreateBackup {
                    parent_id: Some(unknown),
                    ..backup_req("x", id)
                }
            )
            .await
        ),
        404
    );
    let other = active(&w, "mysql").await;
    assert_eq!(
        status(
            api.create_backup(
                &t,
                CreateBackup {
                    parent_id: Some(full.id),
                    ..backup_req("x", other)
                }
            )
            .await
        ),
        400,
        "a parent of another instance"
    );
    assert_eq!(
        status(
            api.create_backup(
                &t,
                CreateBackup {
                    container: Some("bad/name".into()),
                    ..backup_req("x", id)
                }
            )
            .await
        ),
        400
    );
    assert_eq!(status(api.create_backup(&t, backup_req("", id)).await), 400);
    // A volume smaller than the backup, another datastore.
    let mut big = w.store.get_backup(full.id).await.unwrap().unwrap();
    big.size = Some(3.5);
    w.store
        .commit(crate::ports::ChangeSet::new().with(crate::ports::Write::Backup(big)))
        .await
        .unwrap();
    let e = api
        .create_instance(&t, restore("small", full.id, "mysql", 1))
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400);
    assert!(
        e.to_string().contains("3.500 GB") && e.to_string().contains("1 GB"),
        "{e}"
    );
    assert_eq!(
        status(
            api.create_instance(&t, restore("other", inc.id, "redis", 5))
                .await
        ),
        400
    );
    // Redis takes full backups only.
    let r = active(&w, "redis").await;
    assert_eq!(
        status(
            api.create_backup(
                &t,
                CreateBackup {
                    incremental: true,
                    ..backup_req("x", r)
                }
            )
            .await
        ),
        422
    );
    assert_eq!(
        status(
            api.create_backup_schedule(
                &t,
                r,
                crate::api::CreateBackupSchedule {
                    name: "inc".into(),
                    times: crate::model::ScheduleTimes::Interval(3600),
                    incremental: true,
                    keep_last: None,
                    keep_days: None,
                }
            )
            .await
        ),
        422,
        "an incremental schedule on Redis"
    );
    // An instance that is not running.
    w.engines.engine(other).crash("test");
    wait(&w, other, |v| v.operating_status != "HEALTHY").await;
    assert_eq!(
        status(api.create_backup(&t, backup_req("x", other)).await),
        422
    );
    let after = api.limits(&t).await.unwrap().usage;
    assert_eq!(
        after.backups, usage.backups,
        "a refused backup recorded something"
    );

    // Deleting the full backup deletes its incremental; their objects are purged.
    api.delete_backup(&t, full.id).await.unwrap();
    assert_eq!(status(api.show_backup(&t, inc.id).await), 404);
    for _ in 0..2000 {
        if w.backups.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(w.backups.is_empty(), "objects of deleted backups are left");
    let _ = w.stop.send(true);
}

/// `restorePoint.restore_time`: offered where the engine replays its archive, inside the window the chain covers
/// (from the end of its full backup to the end of the backup restored), refused with 400 naming that window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_in_time_restores_are_checked_against_the_window() {
    let w = world_with_backups().await;
    let api = &w.api;
    let t = t1();
    let pg = active(&w, "postgresql").await;
    let full = api
        .create_backup(&t, backup_req("full", pg))
        .await
        .unwrap()
        .backup;
    let full = backup_ended(&w, full.id).await;
    let inc = api
        .create_backup(
            &t,
            CreateBackup {
                parent_id: Some(full.id),
                ..backup_req("inc", pg)
            },
        )
        .await
        .unwrap()
        .backup;
    let inc = backup_ended(&w, inc.id).await;
    assert_eq!(inc.state, BackupState::Completed, "{:?}", inc.fault);
    let (from, to) = crate::model::restore_window(&[full.clone(), inc.clone()]).expect("a window");
    assert!(from < to);
    let at = |b: Uuid, ds: &str, time: chrono::DateTime<chrono::Utc>| CreateInstance {
        name: "pit".into(),
        flavor_ref: Some("1".into()),
        volume_size: Some(1),
        datastore: Some(ds.into()),
        restore_point: Some(b),
        restore_time: Some(time),
        ..Default::default()
    };
    let before = from - chrono::Duration::seconds(1);
    let e = api
        .create_instance(&t, at(inc.id, "postgresql", before))
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400);
    let window = (
        from.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    );
    assert!(
        e.to_string().contains(&window.0) && e.to_string().contains(&window.1),
        "the fault names the window: {e}"
    );
    let e = api
        .create_instance(&t, at(full.id, "postgresql", from))
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400);
    assert!(e.to_string().contains("incremental"), "{e}");
    let e = api
        .create_instance(
            &t,
            CreateInstance {
                restore_point: None,
                ..at(inc.id, "postgresql", from)
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400);
    // Redis replays no archive.
    let r = active(&w, "redis").await;
    let rb = api
        .create_backup(&t, backup_req("r", r))
        .await
        .unwrap()
        .backup;
    let rb = backup_ended(&w, rb.id).await;
    let e = api
        .create_instance(&t, at(rb.id, "redis", rb.created))
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400);
    assert!(e.to_string().contains("not offered"), "{e}");
    // Inside the window: accepted and built (the real engines' tests check where the restore stops).
    let mid = from + (to - from) / 2;
    let v = api
        .create_instance(&t, at(inc.id, "postgresql", mid))
        .await
        .unwrap();
    wait(&w, v.instance.id, |v| {
        v.status == "ACTIVE" && v.instance.task == TaskStatus::None
    })
    .await;
    let _ = w.stop.send(true);
}

/// A backup whose store fails ends FAILED with a fault that says so, and leaves no object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_store_fails_ends_failed_and_leaves_nothing() {
    let w = world_with_backups().await;
    let id = active(&w, "mysql").await;
    w.backups.fail_next_put(1);
    let b = w
        .api
        .create_backup(&t1(), backup_req("b", id))
        .await
        .unwrap()
        .backup;
    let b = backup_ended(&w, b.id).await;
    assert_eq!(b.state, BackupState::Failed);
    assert!(
        b.fault
            .as_deref()
            .is_some_and(|f| f.contains("injected") || f.contains("store")),
        "{:?}",
        b.fault
    );
    assert!(w.backups.is_empty());
    assert_eq!(
        w.api.show_instance(&t1(), id).await.unwrap().status,
        "ACTIVE"
    );
    // The next one works.
    let b = w
        .api
        .create_backup(&t1(), backup_req("b2", id))
        .await
        .unwrap()
        .backup;
    assert_eq!(backup_ended(&w, b.id).await.state, BackupState::Completed);
    let _ = w.stop.send(true);
}

/// As upstream, an admin reaches any project's instance through the project-scoped routes (show, users, reset
/// status, delete); a member of another project still gets 404 for all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reaches_another_projects_instance_and_a_member_does_not() {
    let w = world().await;
    let id = active(&w, "mysql").await;
    let stranger = RequestContext::tenant("t2");
    assert_eq!(status(w.api.show_instance(&stranger, id).await), 404);
    assert_eq!(status(w.api.list_users(&stranger, id).await), 404);
    assert_eq!(status(w.api.delete_instance(&stranger, id).await), 404);
    let admin = RequestContext::admin("ops");
    let shown = w.api.show_instance(&admin, id).await.unwrap();
    assert_eq!(shown.instance.tenant_id, "t1");
    w.api.list_users(&admin, id).await.unwrap();
    w.api.delete_instance(&admin, id).await.unwrap();
    for _ in 0..2000 {
        match w.api.show_instance(&t1(), id).await {
            Err(e) if e.fault().status == 404 => return,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the admin's delete did not remove the member's instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_users_and_root() {
    let w = world().await;
    let id = active(&w, "mysql").await;
    let t = t1();
    let api = &w.api;
    let db = |n: &str| DatabaseSpec {
        name: n.into(),
        character_set: None,
        collate: None,
    };
    api.create_databases(&t, id, vec![db("d1"), db("d2")])
        .await
        .unwrap();
    assert_eq!(
        status(api.create_databases(&t, id, vec![db("x`; drop")]).await),
        400
    );
    let names: Vec<_> = api
        .list_databases(&t, id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert!(names.contains(&"d1".to_string()) && names.contains(&"d2".to_string()));
    api.delete_database(&t, id, "d2").await.unwrap();
    assert!(!api
        .list_databases(&t, id)
        .await
        .unwrap()
        .iter()
        .any(|d| d.name == "d2"));
    assert_eq!(
        status(api.list_databases(&RequestContext::tenant("t2"), id).await),
        404
    );

    let user = |n: &str, h: Option<&str>| UserSpec {
        name: n.into(),
        password: Secret::new("pw-1"),
        host: h.map(str::to_string),
        databases: vec!["d1".into()],
    };
    api.create_users(&t, id, vec![user("u1", None), user("u2", Some("10.0.%"))])
        .await
        .unwrap();
    assert_eq!(
        status(api.create_users(&t, id, vec![user("bad name", None)]).await),
        400
    );
    assert_eq!(
        status(
            api.create_users(&t, id, vec![user("u3", Some("a'b"))])
                .await
        ),
        400
    );
    let users = api.list_users(&t, id).await.unwrap();
    assert!(users.iter().any(|u| u.name == "u2" && u.host == "10.0.%"));
    let u2 = api
        .show_user(&t, id, &UserRef::parse("u2@10.0.%"))
        .await
        .unwrap();
    assert_eq!(u2.databases, vec!["d1".to_string()]);
    assert_eq!(
        status(api.show_user(&t, id, &UserRef::parse("u2")).await),
        404
    );
    let u1 = UserRef::parse("u1");
    api.grant_user_access(&t, id, &u1, vec!["d1".into()])
        .await
        .unwrap();
    assert_eq!(
        api.list_user_access(&t, id, &u1).await.unwrap(),
        vec!["d1".to_string()]
    );
    api.revoke_user_access(&t, id, &u1, "d1").await.unwrap();
    assert!(api.list_user_access(&t, id, &u1).await.unwrap().is_empty());
    let mut change = user("u1", None);
    change.password = Secret::new("new-pw");
    api.change_passwords(&t, id, vec![change]).await.unwrap();
    assert_eq!(
        w.engines.engine(id).password("u1", "%").unwrap().expose(),
        "new-pw"
    );
    assert_eq!(
        status(
            api.change_passwords(&t, id, vec![user("ghost", None)])
                .await
        ),
        404
    );
    let upd = UserUpdate {
        name: Some("u1b".into()),
        ..Default::default()
    };
    api.update_user(&t, id, &u1, upd).await.unwrap();
    assert!(api.show_user(&t, id, &UserRef::parse("u1b")).await.is_ok());
    assert_eq!(
        status(
            api.update_user(&t, id, &UserRef::parse("u1b"), UserUpdate::default())
                .await
        ),
        400
    );
    api.delete_user(&t, id, &UserRef::parse("u1b"))
        .await
        .unwrap();
    assert_eq!(
        status(api.delete_user(&t, id, &UserRef::parse("u1b")).await),
        404
    );

    assert!(!api.root_show(&t, id).await.unwrap());
    assert_eq!(status(api.root_disable(&t, id).await), 404);
    let creds = api.root_enable(&t, id, None).await.unwrap();
    assert_eq!(creds.name, "root");
    assert!(!creds.password.is_empty());
    assert!(w.engines.engine(id).root_enabled());
    assert!(api.root_show(&t, id).await.unwrap());
    assert!(api
        .mgmt_root_history(&RequestContext::admin("a"), id)
        .await
        .unwrap()
        .is_some());
    assert_eq!(status(api.mgmt_root_history(&t, id).await), 403);
    // Disabled: root shows false again, as upstream; a second disable finds nothing.
    api.root_disable(&t, id).await.unwrap();
    assert!(!w.engines.engine(id).root_enabled());
    assert!(!api.root_show(&t, id).await.unwrap());
    assert_eq!(status(api.root_disable(&t, id).await), 404);
    api.root_enable(&t, id, None).await.unwrap();
    assert!(api.root_show(&t, id).await.unwrap());

    // An unsupported datastore answers 422; a stopped datastore too.
    let mongo = active(&w, "mongodb").await;
    assert_eq!(status(api.list_users(&t, mongo).await), 422);
    w.engines.engine(id).stop();
    w.store
        .put_service_statuses(&[ServiceStatusRecord {
            instance_id: id,
            status: ServiceStatus::Shutdown,
            reason: None,
            volume: None,
            load: None,
            updated_at: w.api.clock.now(),
        }])
        .await
        .unwrap();
    assert_eq!(status(api.list_databases(&t, id).await), 422);
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configurations_backups_quotas_and_mgmt() {
    let w = world().await;
    let api = &w.api;
    let t = t1();
    let admin = RequestContext::admin("admin");
    let id = active(&w, "mysql").await;
    let vid = api
        .show_instance(&t, id)
        .await
        .unwrap()
        .datastore_version
        .id;

    // Parameters (mgmt) and both public route forms.
    let spec = |n: &str| ConfigParamSpec {
        name: n.into(),
        data_type: ParamType::Integer,
        restart_required: false,
        min: Some(1.into()),
        max: Some(100.into()),
    };
    assert_eq!(
        status(
            api.mgmt_create_parameter(&t, vid, spec("max_connections"))
                .await
        ),
        403
    );
    api.mgmt_create_parameter(&admin, vid, spec("max_connections"))
        .await
        .unwrap();
    assert_eq!(
        status(
            api.mgmt_create_parameter(&admin, vid, spec("max_connections"))
                .await
        ),
        409
    );
    assert_eq!(
        api.list_parameters(&t, "mysql", "1").await.unwrap().len(),
        1
    );
    assert_eq!(
        api.show_parameter_by_version(&t, vid, "max_connections")
            .await
            .unwrap()
            .name,
        "max_connections"
    );
    assert_eq!(
        status(api.show_parameter(&t, "mysql", "1", "nope").await),
        404
    );

    // Configuration groups.
    let mut values = Map::new();
    values.insert("max_connections".into(), json!(50));
    let req = |values: Map<String, Value>| CreateConfiguration {
        name: "c".into(),
        values,
        datastore: Some("mysql".into()),
        ..Default::default()
    };
    let c = api
        .create_configuration(&t, req(values.clone()))
        .await
        .unwrap();
    let mut bad = Map::new();
    bad.insert("max_connections".into(), json!(500));
    assert_eq!(status(api.create_configuration(&t, req(bad)).await), 422);
    let mut unknown = Map::new();
    unknown.insert("nope".into(), json!(1));
    assert_eq!(
        status(api.create_configuration(&t, req(unknown)).await),
        422
    );
    assert_eq!(
        status(
            api.show_configuration(&RequestContext::tenant("t2"), c.configuration.id)
                .await
        ),
        404
    );
    let cid = c.configuration.id;
    api.update_instance(
        &t,
        id,
        UpdateInstance {
            configuration: Some(Some(cid)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        api.configuration_instances(&t, cid).await.unwrap(),
        vec![(id, "x".to_string())]
    );
    assert_eq!(status(api.delete_configuration(&t, cid).await), 400);
    // The task manager applies the group on the engine (`max_connections` changes live: no restart).
    let v = wait(&w, id, |_| w.engines.engine(id).overrides() == values).await;
    assert!(v.instance.fault.is_none(), "{:?}", v.instance.fault);
    // Operations on the instance are ordered: the next one waits until the apply's workflow ended.
    no_open_workflows(&w).await;
    assert_eq!(v.instance.task, TaskStatus::None);
    assert_eq!(api.instance_configuration(&t, id).await.unwrap(), values);
    api.patch_configuration(&t, cid, values.clone())
        .await
        .unwrap();
    no_open_workflows(&w).await;
    api.update_instance(&t, id, UpdateInstance::default())
        .await
        .unwrap();
    assert!(api
        .show_instance(&t, id)
        .await
        .unwrap()
        .instance
        .configuration_id
        .is_none());
    api.delete_configuration(&t, cid).await.unwrap();
    assert!(api.list_configurations(&t).await.unwrap().is_empty());

    // Backups: no strategy offers the backup facet yet, so a backup of an instance is refused at once (upstream's
    // 501 for a manager without a backup strategy) and nothing is recorded. An existing object can be registered.
    assert_eq!(
        status(
            api.create_backup(
                &t,
                CreateBackup {
                    name: "b".into(),
                    instance: Some(id),
                    ..Default::default()
                },
            )
            .await
        ),
        501
    );
    assert_eq!(api.limits(&t).await.unwrap().usage.backups, 0);
    assert!(api.instance_backups(&t, id).await.unwrap().is_empty());
    let version = w
        .store
        .get_instance(id)
        .await
        .unwrap()
        .unwrap()
        .datastore_version_id;
    let b = api
        .create_backup(
            &t,
            CreateBackup {
                name: "b".into(),
                restore_from: Some(crate::api::RestoreFrom {
                    remote_location: "http://swift.example/v1/AUTH_t/c/b.xbstream".into(),
                    local_datastore_version_id: version,
                    size: 0.1,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(b.backup.state, BackupState::Restored);
    assert_eq!(api.limits(&t).await.unwrap().usage.backups, 1);
    assert_eq!(
        status(
            api.show_backup(&RequestContext::tenant("t2"), b.backup.id)
                .await
        ),
        404
    );
    assert_eq!(
        status(
            api.list_backups(
                &t,
                BackupQuery {
                    all_projects: true,
                    ..Default::default()
                }
            )
            .await
        ),
        403
    );
    api.delete_backup(&t, b.backup.id).await.unwrap();
    assert!(api
        .list_backups(&t, BackupQuery::default())
        .await
        .unwrap()
        .is_empty());

    // Quotas.
    assert_eq!(status(api.show_quota(&t, "t2").await), 403);
    assert_eq!(
        api.show_quota(&admin, "t1").await.unwrap().usage.instances,
        1
    );
    let bad: BTreeMap<String, i64> = [("instances".to_string(), -2)].into_iter().collect();
    assert_eq!(status(api.update_quota(&admin, "t1", bad).await), 400);

    // Replication: promote and eject validate first (a non-replica, a source without replicas: 400); no strategy
    // offers the replication facet yet, so a replica is refused at once (upstream's 400 for a manager without a
    // replication strategy) and nothing is recorded.
    no_open_workflows(&w).await;
    assert_eq!(status(api.promote_to_replica_source(&t, id).await), 400);
    assert_eq!(status(api.eject_replica_source(&t, id).await), 400);
    let before = api.limits(&t).await.unwrap().usage.instances;
    let refused = api
        .create_instance(
            &t,
            CreateInstance {
                name: "r".into(),
                replica_of: Some(id),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(refused.fault().status, 400);
    assert!(
        refused.to_string().contains("Replication is not supported"),
        "{refused}"
    );
    assert_eq!(api.limits(&t).await.unwrap().usage.instances, before);
    let mut with_flavor = CreateInstance {
        name: "r2".into(),
        replica_of: Some(id),
        ..Default::default()
    };
    with_flavor.flavor_ref = Some("1".into());
    assert_eq!(status(api.create_instance(&t, with_flavor).await), 400);

    // Mgmt.
    assert_eq!(
        status(api.mgmt_instance_action(&t, id, MgmtAction::Reboot).await),
        403
    );
    api.mgmt_rpc_ping(&admin, id).await.unwrap();
    assert_eq!(
        api.mgmt_list_instances(&admin, MgmtInstanceQuery::default())
            .await
            .unwrap()
            .len(),
        1
    );
    api.mgmt_instance_action(&admin, id, MgmtAction::Reboot)
        .await
        .unwrap();
    wait(&w, id, |v| {
        v.instance.task == TaskStatus::None && v.status == "ACTIVE"
    })
    .await;
    api.mgmt_instance_action(&admin, id, MgmtAction::ResetTaskStatus)
        .await
        .unwrap();
    assert_eq!(
        status(api.mgmt_delete_datastore_version(&admin, vid).await),
        400
    );
    assert_eq!(status(api.mgmt_list_datastore_versions(&t).await), 403);
    assert_eq!(api.list_datastores(&t).await.unwrap().len(), 2);
    assert_eq!(
        api.list_version_flavors(&t, "mysql", "1")
            .await
            .unwrap()
            .len(),
        1
    );
    let _ = w.stop.send(true);
}

#[test]
fn user_refs_parse_name_and_host() {
    assert_eq!(
        UserRef::parse("bob"),
        UserRef {
            name: "bob".into(),
            host: "%".into()
        }
    );
    assert_eq!(
        UserRef::parse("bob@10.%"),
        UserRef {
            name: "bob".into(),
            host: "10.%".into()
        }
    );
    assert_eq!(
        UserRef::parse("a@b@c"),
        UserRef {
            name: "a@b".into(),
            host: "c".into()
        }
    );
    assert_eq!(
        UserRef::parse("bob@"),
        UserRef {
            name: "bob".into(),
            host: "%".into()
        }
    );
}

/// Automatic failover with a bound on the loss: a replica cut off from its source while the source takes writes
/// is too far behind when the source dies; the failover waits and the source's fault says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_failover_waits_while_the_best_replica_would_lose_too_much() {
    let w = build_world_with(true, |c| c.failover_max_loss = Duration::from_secs(1)).await;
    let (api, t) = (&w.api, t1());
    let src = active(&w, "mysql").await;
    let r1 = api
        .create_instance(
            &t,
            CreateInstance {
                name: "r1".into(),
                replica_of: Some(src),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .instance
        .id;
    wait(&w, r1, |v| {
        v.status == "ACTIVE" && v.instance.task == TaskStatus::None
    })
    .await;
    // The replica's link is cut; the source takes writes across several samples (one per report interval).
    w.engines.engine(r1).cut_off(true);
    for i in 0..3 {
        api.create_databases(
            &t,
            src,
            vec![DatabaseSpec {
                name: format!("d{i}"),
                character_set: None,
                collate: None,
            }],
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    w.engines.engine(src).crash("frozen by the test");
    let v = wait(&w, src, |v| {
        v.instance
            .fault
            .as_ref()
            .is_some_and(|f| f.message.starts_with("Automatic failover is held"))
    })
    .await;
    let fault = v.instance.fault.unwrap().message;
    assert!(
        fault.contains(&r1.to_string()) && fault.contains("failover_max_loss 1.0 s"),
        "{fault}"
    );
    // Nothing moved: the replica still follows the dead source, and no failover was recorded.
    let r = api.show_instance(&t, r1).await.unwrap();
    assert_eq!(r.instance.replica_of, Some(src));
    assert_eq!(r.instance.task, TaskStatus::None);
    assert!(api.list_instance_events(&t, src).await.unwrap().is_empty());
    assert_eq!(w.engines.engine(r1).following(), Some(src));
}

/// Replicas on simulated engines through the API: create (seeded from a backup of the source, which is deleted
/// afterwards), the views, data reaching the replica, the refusals upstream gives (and the legacy client's
/// flavor and size accepted when they are the source's), switchover, detach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_switchover_detach_and_their_refusals() {
    let w = world_with_backups().await;
    let (api, t) = (&w.api, t1());
    let src = active(&w, "mysql").await;
    let db = |name: &str| DatabaseSpec {
        name: name.into(),
        character_set: None,
        collate: None,
    };
    api.create_databases(&t, src, vec![db("before")])
        .await
        .unwrap();
    let replica = |name: &str| CreateInstance {
        name: name.into(),
        replica_of: Some(src),
        ..Default::default()
    };

    // Refusals, with nothing recorded.
    let before = api.limits(&t).await.unwrap().usage.instances;
    let mut r = replica("bad");
    r.replica_count = Some(4);
    assert_eq!(status(api.create_instance(&t, r).await), 400);
    let mut r = replica("bad");
    r.flavor_ref = Some("2".into());
    let e = api.create_instance(&t, r).await.unwrap_err();
    assert_eq!(e.fault().status, 400);
    assert!(
        e.to_string().contains("flavor 1") && e.to_string().contains("flavorRef 2"),
        "{e}"
    );
    let mut r = replica("bad");
    r.volume_size = Some(0);
    let e = api.create_instance(&t, r).await.unwrap_err();
    assert!(
        e.to_string().contains("0 GB") && e.to_string().contains("1 GB"),
        "{e}"
    );
    let mut r = replica("bad");
    r.datastore = Some("redis".into());
    assert_eq!(status(api.create_instance(&t, r).await), 400);
    let mut r = replica("bad");
    r.users = vec![UserSpec {
        name: "u".into(),
        password: Secret::new("p"),
        host: None,
        databases: vec![],
    }];
    assert_eq!(status(api.create_instance(&t, r).await), 400);
    assert_eq!(api.limits(&t).await.unwrap().usage.instances, before);
    assert_eq!(status(api.promote_to_replica_source(&t, src).await), 400);
    assert_eq!(status(api.eject_replica_source(&t, src).await), 400);

    // The legacy client's literal create: the source's flavor, size and datastore are accepted.
    let mut r = replica("r1");
    r.flavor_ref = Some("1".into());
    r.volume_size = Some(1);
    r.datastore = Some("mysql".into());
    let r1 = api.create_instance(&t, r).await.unwrap().instance.id;
    let r1v = wait(&w, r1, |v| {
        v.status == "ACTIVE" && v.instance.task == TaskStatus::None
    })
    .await;
    assert_eq!(r1v.instance.replica_of, Some(src));
    no_open_workflows(&w).await;
    let srcv = api.show_instance(&t, src).await.unwrap();
    assert_eq!(srcv.replicas, vec![r1]);
    // The seed backup is gone from the listing once the replica follows.
    assert!(api
        .list_backups(&t, BackupQuery::default())
        .await
        .unwrap()
        .is_empty());
    // Data made on the source reaches the replica; the replica's own users and databases are refused.
    api.create_databases(&t, src, vec![db("after")])
        .await
        .unwrap();
    w.engines.sync(r1);
    assert_eq!(w.engines.engine(r1).databases(), vec!["after", "before"]);
    assert!(w.engines.engine(r1).is_read_only());
    let e = api
        .create_databases(&t, r1, vec![db("x")])
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400);
    assert!(e.to_string().contains("is a replica of"), "{e}");
    assert_eq!(api.list_databases(&t, r1).await.unwrap().len(), 2);
    // A replica of a replica, deleting a source with replicas, ejecting a source with a current heartbeat.
    let e = api
        .create_instance(
            &t,
            CreateInstance {
                name: "rr".into(),
                replica_of: Some(r1),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("replica of replica"), "{e}");
    assert_eq!(status(api.delete_instance(&t, src).await), 403);
    let e = api.eject_replica_source(&t, src).await.unwrap_err();
    assert!(e.to_string().contains("current heartbeat"), "{e}");

    // A second replica, then a switchover to the first: the old source and the sibling follow it.
    let r2 = api
        .create_instance(&t, replica("r2"))
        .await
        .unwrap()
        .instance
        .id;
    wait(&w, r2, |v| {
        v.status == "ACTIVE" && v.instance.task == TaskStatus::None
    })
    .await;
    no_open_workflows(&w).await;
    api.promote_to_replica_source(&t, r1).await.unwrap();
    no_open_workflows(&w).await;
    let r1v = api.show_instance(&t, r1).await.unwrap();
    assert_eq!(r1v.instance.replica_of, None, "{:?}", r1v.instance.fault);
    let mut reps = r1v.replicas.clone();
    reps.sort();
    let mut want = vec![src, r2];
    want.sort();
    assert_eq!(reps, want);
    for m in [src, r2] {
        let v = api.show_instance(&t, m).await.unwrap();
        assert_eq!(
            (v.instance.replica_of, v.instance.task),
            (Some(r1), TaskStatus::None)
        );
        assert_eq!(w.engines.engine(m).following(), Some(r1));
    }
    assert!(!w.engines.engine(r1).is_read_only());
    api.create_databases(&t, r1, vec![db("on_new_source")])
        .await
        .unwrap();
    w.engines.sync(src);
    assert!(w
        .engines
        .engine(src)
        .databases()
        .contains(&"on_new_source".to_string()));

    // Detach: the old source stands alone and takes writes.
    api.update_instance(
        &t,
        src,
        UpdateInstance {
            replica_of: Some(None),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    no_open_workflows(&w).await;
    let v = api.show_instance(&t, src).await.unwrap();
    assert_eq!((v.instance.replica_of, v.status.as_str()), (None, "ACTIVE"));
    api.create_databases(&t, src, vec![db("standalone")])
        .await
        .unwrap();
    assert_eq!(api.show_instance(&t, r1).await.unwrap().replicas, vec![r2]);
    // The switchover is recorded.
    let events = api.list_instance_events(&t, r1).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].kind.as_str(), events[0].ok),
        ("switchover", true)
    );
    assert_eq!(events[0].instances[..2], [src, r1]);

    // Automatic failover: off for this source, its crashed engine is left alone; on again, the replica takes over.
    api.update_instance(
        &t,
        r1,
        UpdateInstance {
            auto_failover: Some(Some(false)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    w.engines.engine(r1).crash("frozen by the test");
    tokio::time::sleep(CoreConfig::default().failover_grace + Duration::from_secs(2)).await;
    assert_eq!(
        api.show_instance(&t, r2).await.unwrap().instance.replica_of,
        Some(r1)
    );
    api.update_instance(
        &t,
        r1,
        UpdateInstance {
            auto_failover: Some(None),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let v = wait(&w, r2, |v| {
        v.instance.replica_of.is_none() && v.instance.task == TaskStatus::None
    })
    .await;
    assert_eq!(v.replicas, vec![r1]);
    no_open_workflows(&w).await;
    let events = api.list_instance_events(&t, r2).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.ok),
        ("failover", true),
        "{last:?}"
    );
    assert!(
        last.message.contains("crashed") || last.message.contains("reported"),
        "{last:?}"
    );
    // The fenced old source came back read only, following the new source.
    assert_eq!(w.engines.engine(r1).following(), Some(r2));
    assert!(w.engines.engine(r1).is_read_only());
    assert!(!w.engines.engine(r2).is_read_only());

    // Detaching a non-replica is refused.
    assert_eq!(
        status(
            api.update_instance(
                &t,
                src,
                UpdateInstance {
                    replica_of: Some(None),
                    ..Default::default()
                }
            )
            .await
        ),
        400
    );
    let _ = w.stop.send(true);
}

// ------------------------------------------------------------------------------------------------ clusters

fn cluster_members(n: usize, flavor: &str) -> Vec<ClusterMemberRequest> {
    vec![
        ClusterMemberRequest {
            flavor_ref: Some(flavor.into()),
            volume_size: Some(1),
            ..Default::default()
        };
        n
    ]
}

fn new_cluster(ds: &str, n: usize) -> CreateCluster {
    CreateCluster {
        name: "c1".into(),
        datastore: ds.into(),
        datastore_version: "1".into(),
        instances: cluster_members(n, "1"),
        ..Default::default()
    }
}

/// Waits until the cluster's task is NONE; answers its view.
async fn cluster_settled(w: &World, id: Uuid) -> ClusterView {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let v = w.api.show_cluster(&t1(), id).await.unwrap();
        if v.cluster.task == crate::model::ClusterTask::None {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster stays {:?}",
            v.cluster.task
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn slots(w: &World, v: &ClusterView) -> Vec<u32> {
    v.members
        .iter()
        .map(|m| w.engines.engine(m.instance.id).cluster_slots())
        .collect()
}

/// A Redis cluster through the API on simulated engines: built with its slots spread, its members hidden from
/// instance lists unless asked for and refused instance-level changes, grown and shrunk with the slots following,
/// and deleted with every member; bad requests get upstream's 4xx and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_built_grown_shrunk_and_deleted() {
    let w = world_with_backups().await;
    let (api, t) = (&w.api, t1());
    let v = api
        .create_cluster(&t, new_cluster("redis", 3))
        .await
        .unwrap();
    assert_eq!(v.cluster.task, crate::model::ClusterTask::Building);
    assert_eq!(v.members.len(), 3);
    let id = v.cluster.id;
    // Another action while it builds: upstream's 422.
    let busy = api
        .cluster_action(&t, id, ClusterAction::Grow(cluster_members(1, "1")))
        .await
        .unwrap_err();
    assert_eq!(busy.fault().status, 422, "{busy}");
    let v = cluster_settled(&w, id).await;
    assert!(v.cluster.fault.is_none(), "{:?}", v.cluster.fault);
    assert_eq!(slots(&w, &v), vec![5462, 5461, 5461]);
    for m in &v.members {
        assert_eq!(m.status, "ACTIVE");
        assert_eq!(w.engines.engine(m.instance.id).cluster_id(), Some(id));
    }
    // Members are listed only with include_clustered; instance-level changes are refused.
    assert!(api.list_instances(&t, false).await.unwrap().is_empty());
    assert_eq!(api.list_instances(&t, true).await.unwrap().len(), 3);
    let m0 = v.members[0].instance.id;
    let e = api.delete_instance(&t, m0).await.unwrap_err();
    assert_eq!(e.fault().status, 501, "{e}");
    let shown = api.show_cluster_instance(&t, id, m0).await.unwrap();
    assert_eq!(shown.instance.id, m0);

    // Grow: the new member gets its share.
    let v = api
        .cluster_action(&t, id, ClusterAction::Grow(cluster_members(1, "1")))
        .await
        .unwrap();
    assert_eq!(v.cluster.task, crate::model::ClusterTask::GrowingCluster);
    let v = cluster_settled(&w, id).await;
    assert!(v.cluster.fault.is_none(), "{:?}", v.cluster.fault);
    assert_eq!(v.members.len(), 4);
    assert_eq!(slots(&w, &v), vec![4096; 4]);
    let events = api.list_cluster_events(&t, id).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "cluster_grow" && e.ok));

    // Bad shrinks change nothing.
    let stranger = Uuid::new_v4();
    let e = api
        .cluster_action(&t, id, ClusterAction::Shrink(vec![stranger]))
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400, "{e}");
    let two: Vec<Uuid> = v.members[2..].iter().map(|m| m.instance.id).collect();
    let e = api
        .cluster_action(&t, id, ClusterAction::Shrink(two))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("at least 3"), "{e}");

    // Shrink the newest member: its slots move to the others before it is deleted.
    let leaving = v.members[3].instance.id;
    api.cluster_action(&t, id, ClusterAction::Shrink(vec![leaving]))
        .await
        .unwrap();
    let v = cluster_settled(&w, id).await;
    assert!(v.cluster.fault.is_none(), "{:?}", v.cluster.fault);
    assert_eq!(v.members.len(), 3);
    assert_eq!(slots(&w, &v), vec![5462, 5461, 5461]);
    let gone = w.store.get_instance(leaving).await.unwrap().unwrap();
    assert!(gone.deleted);

    // Delete: every member, then the cluster.
    api.delete_cluster(&t, id).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while api.show_cluster(&t, id).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster is not deleted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(api.list_instances(&t, true).await.unwrap().is_empty());
    assert!(api.list_clusters(&t).await.unwrap().is_empty());
    no_open_workflows(&w).await;
}

/// The rolling cluster actions on simulated engines: an upgrade moves every member (each rebuilt by its own
/// upgrade workflow) and then the cluster to the new version; a restart restarts every member's engine once; a
/// configuration group attached to the cluster reaches every member's engine and leaves it on detach. Bad
/// requests get their 4xx and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_upgraded_restarted_and_configured_one_member_at_a_time() {
    let w = world_with_backups().await;
    let (api, t) = (&w.api, t1());
    let admin = RequestContext::admin("admin");
    let v2 = api
        .mgmt_create_datastore_version(
            &admin,
            DatastoreVersionSpec {
                datastore_name: "mysql".into(),
                name: "2".into(),
                manager: "mysql".into(),
                active: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .version;
    let id = api
        .create_cluster(&t, new_cluster("mysql", 3))
        .await
        .unwrap()
        .cluster
        .id;
    let v = cluster_settled(&w, id).await;
    assert!(v.cluster.fault.is_none(), "{:?}", v.cluster.fault);
    let members: Vec<Uuid> = v.members.iter().map(|m| m.instance.id).collect();

    // Bad upgrades: unknown version (404), the current one, another datastore's (400).
    for (version, want) in [("nope", 404), ("1", 400)] {
        let e = api
            .cluster_action(&t, id, ClusterAction::Upgrade(version.into()))
            .await
            .unwrap_err();
        assert_eq!(e.fault().status, want, "{version}: {e}");
    }
    let redis_v1 = api
        .list_datastore_versions(&t, "redis")
        .await
        .unwrap()
        .remove(0)
        .version;
    let e = api
        .cluster_action(&t, id, ClusterAction::Upgrade(redis_v1.id.to_string()))
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400, "{e}");
    assert!(
        e.to_string().contains("belongs to datastore 'redis'"),
        "{e}"
    );
    let e = api
        .cluster_action(&t, id, ClusterAction::AddShard)
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 501, "{e}");

    // Upgrade: UPGRADING_CLUSTER, a second action meanwhile is a 422, then every member and the cluster on "2".
    let v = api
        .cluster_action(&t, id, ClusterAction::Upgrade("2".into()))
        .await
        .unwrap();
    assert_eq!(v.cluster.task, crate::model::ClusterTask::UpgradingCluster);
    let busy = api
        .cluster_action(&t, id, ClusterAction::Restart)
        .await
        .unwrap_err();
    assert_eq!(busy.fault().status, 422, "{busy}");
    let v = cluster_settled(&w, id).await;
    assert!(v.cluster.fault.is_none(), "{:?}", v.cluster.fault);
    assert_eq!(v.datastore_version.name, "2");
    for m in &v.members {
        assert_eq!(m.instance.datastore_version_id, v2.id);
        assert_eq!(m.status, "ACTIVE");
        assert_eq!(w.engines.engine(m.instance.id).cluster_id(), Some(id));
    }
    let events = api.list_cluster_events(&t, id).await.unwrap();
    let up = events
        .iter()
        .find(|e| e.kind == "cluster_upgrade")
        .expect("an upgrade event");
    assert!(up.ok && up.instances.len() == 3, "{up:?}");
    // One member at a time: each member's upgrade workflow started after the one before ended.
    let rolling = up.id;
    let plan = w
        .store
        .journal(rolling)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.step == "plan" && e.phase == crate::model::JournalPhase::Completed)
        .expect("the plan is journaled");
    let children: Vec<(Uuid, Uuid)> = serde_json::from_value(plan.data).unwrap();
    let mut ended_before = None;
    for (member, child) in children {
        let wf = w.store.get_workflow(child).await.unwrap().unwrap();
        assert_eq!((wf.instance_id, wf.kind.as_str()), (member, "upgrade"));
        assert_eq!(wf.state, crate::model::WorkflowState::Done);
        if let Some(end) = ended_before {
            assert!(
                wf.created >= end,
                "a member's upgrade started before the previous one ended"
            );
        }
        ended_before = Some(wf.updated);
    }
    // Asked again, the same version is refused: the cluster runs it.
    let e = api
        .cluster_action(&t, id, ClusterAction::Upgrade("2".into()))
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400, "{e}");

    // Restart: each member's engine starts once more.
    let starts: Vec<u32> = members
        .iter()
        .map(|m| w.engines.engine(*m).starts())
        .collect();
    api.cluster_action(&t, id, ClusterAction::Restart)
        .await
        .unwrap();
    let v = cluster_settled(&w, id).await;
    assert!(v.cluster.fault.is_none(), "{:?}", v.cluster.fault);
    let after: Vec<u32> = members
        .iter()
        .map(|m| w.engines.engine(*m).starts())
        .collect();
    for (b, a) in starts.iter().zip(&after) {
        assert_eq!(
            *a,
            b + 1,
            "every member restarted once: {starts:?} -> {after:?}"
        );
    }

    // Configuration: detaching none and a group of another version are refused; an attach reaches every member.
    let e = api
        .cluster_action(&t, id, ClusterAction::ConfigurationDetach)
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400, "{e}");
    let rules = crate::manage::default_validation_rules(crate::model::Manager::Mysql).unwrap();
    let v1 = api
        .list_datastore_versions(&t, "mysql")
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.version.name == "1")
        .unwrap()
        .version;
    for v in [v1.id, v2.id] {
        w.store
            .put_config_params(&crate::manage::parse_validation_rules(rules, v).unwrap())
            .await
            .unwrap();
    }
    let group = |version: &str| CreateConfiguration {
        name: format!("g{version}"),
        values: [("max_connections".to_string(), json!(60))]
            .into_iter()
            .collect(),
        datastore: Some("mysql".into()),
        datastore_version: Some(version.into()),
        ..Default::default()
    };
    let old_group = api.create_configuration(&t, group("1")).await.unwrap();
    let e = api
        .cluster_action(
            &t,
            id,
            ClusterAction::ConfigurationAttach(old_group.configuration.id),
        )
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400, "{e}");
    let g = api.create_configuration(&t, group("2")).await.unwrap();
    // A member left on another version (an upgrade that stopped part way): no group until the upgrade is done.
    let mut odd = w.store.get_instance(members[1]).await.unwrap().unwrap();
    let (expect, back) = (odd.version, odd.datastore_version_id);
    odd.datastore_version_id = v1.id;
    w.store
        .commit(
            crate::ports::ChangeSet::new().with(crate::ports::Write::Instance {
                instance: odd.clone(),
                expect: crate::ports::Expect::Version(expect),
            }),
        )
        .await
        .unwrap();
    let e = api
        .cluster_action(
            &t,
            id,
            ClusterAction::ConfigurationAttach(g.configuration.id),
        )
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 422, "{e}");
    assert!(e.to_string().contains("upgrade the cluster again"), "{e}");
    let mut odd = w.store.get_instance(members[1]).await.unwrap().unwrap();
    let expect = odd.version;
    odd.datastore_version_id = back;
    w.store
        .commit(
            crate::ports::ChangeSet::new().with(crate::ports::Write::Instance {
                instance: odd,
                expect: crate::ports::Expect::Version(expect),
            }),
        )
        .await
        .unwrap();
    let v = api
        .cluster_action(
            &t,
            id,
            ClusterAction::ConfigurationAttach(g.configuration.id),
        )
        .await
        .unwrap();
    assert_eq!(v.cluster.task, crate::model::ClusterTask::UpdatingCluster);
    let v = cluster_settled(&w, id).await;
    assert!(v.cluster.fault.is_none(), "{:?}", v.cluster.fault);
    assert_eq!(v.cluster.configuration_id, Some(g.configuration.id));
    for m in &members {
        assert_eq!(
            w.engines.engine(*m).overrides().get("max_connections"),
            Some(&json!(60)),
            "member {m}"
        );
        let inst = w.store.get_instance(*m).await.unwrap().unwrap();
        assert_eq!(inst.configuration_id, Some(g.configuration.id));
    }
    let e = api
        .cluster_action(
            &t,
            id,
            ClusterAction::ConfigurationAttach(g.configuration.id),
        )
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400, "{e}");
    api.cluster_action(&t, id, ClusterAction::ConfigurationDetach)
        .await
        .unwrap();
    let v = cluster_settled(&w, id).await;
    assert!(v.cluster.fault.is_none(), "{:?}", v.cluster.fault);
    assert_eq!(v.cluster.configuration_id, None);
    for m in &members {
        assert!(
            w.engines
                .engine(*m)
                .overrides()
                .get("max_connections")
                .is_none(),
            "member {m} keeps the detached group's value"
        );
    }
    no_open_workflows(&w).await;
    let _ = w.stop.send(true);
}

/// Redis replicas per shard on simulated engines: members of type `replica` join after the primaries, each
/// serving the primary with the fewest replicas; they own no slots; a primary leaves only with its replicas, and
/// the bounds count primaries. Other engines and unknown types are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_keeps_replicas_per_shard() {
    let w = world_with_backups().await;
    let (api, t) = (&w.api, t1());
    let replica = || ClusterMemberRequest {
        flavor_ref: Some("1".into()),
        volume_size: Some(1),
        kind: Some("replica".into()),
        ..Default::default()
    };
    // Refused: replicas on Galera, an unknown type, too few primaries.
    let mut galera = new_cluster("mysql", 3);
    galera.instances.push(replica());
    let e = api.create_cluster(&t, galera).await.unwrap_err();
    assert_eq!(e.fault().status, 400, "{e}");
    let mut bogus = new_cluster("redis", 3);
    bogus.instances[0].kind = Some("arbiter".into());
    let e = api.create_cluster(&t, bogus).await.unwrap_err();
    assert_eq!(e.fault().status, 400, "{e}");
    let mut few = new_cluster("redis", 2);
    few.instances.extend([replica(), replica()]);
    let e = api.create_cluster(&t, few).await.unwrap_err();
    assert!(e.to_string().contains("at least 3"), "{e}");
    assert!(api.list_clusters(&t).await.unwrap().is_empty());

    // Three primaries and two replicas, asked for in mixed order.
    let mut req = new_cluster("redis", 3);
    req.instances.insert(0, replica());
    req.instances.push(replica());
    let id = api.create_cluster(&t, req).await.unwrap().cluster.id;
    let v = cluster_settled(&w, id).await;
    assert!(v.cluster.fault.is_none(), "{:?}", v.cluster.fault);
    let ids: Vec<Uuid> = v.members.iter().map(|m| m.instance.id).collect();
    assert_eq!(ids.len(), 5);
    let expected: std::collections::BTreeMap<Uuid, Uuid> =
        [(ids[3], ids[0]), (ids[4], ids[1])].into_iter().collect();
    assert_eq!(
        v.cluster.replicas, expected,
        "replicas join last, one per primary"
    );
    assert_eq!(slots(&w, &v), vec![5462, 5461, 5461, 0, 0]);
    // A user made through one member is made on every member (a cluster client is redirected to any of them),
    // and so is its removal.
    let alice = UserSpec {
        name: "alice".into(),
        password: crate::model::Secret::new("Alice-pw-0123"),
        host: None,
        databases: vec![],
    };
    api.create_users(&t, ids[1], vec![alice]).await.unwrap();
    for m in &ids {
        let names: Vec<String> = api
            .list_users(&t, *m)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert!(
            names.contains(&"alice".to_string()),
            "member {m}: {names:?}"
        );
    }
    // Grow by a primary and a replica: the replica serves the primary that had none.
    let mut more = cluster_members(1, "1");
    more.insert(0, replica());
    api.cluster_action(&t, id, ClusterAction::Grow(more))
        .await
        .unwrap();
    let v = cluster_settled(&w, id).await;
    assert!(v.cluster.fault.is_none(), "{:?}", v.cluster.fault);
    let ids: Vec<Uuid> = v.members.iter().map(|m| m.instance.id).collect();
    assert_eq!(ids.len(), 7);
    assert_eq!(v.cluster.replicas.get(&ids[6]), Some(&ids[2]));
    assert_eq!(v.cluster.replicas.len(), 3, "{:?}", v.cluster.replicas);
    assert_eq!(slots(&w, &v), vec![4096, 4096, 4096, 0, 0, 4096, 0]);
    // The grown members got the cluster's users; a removal reaches them too.
    for m in &ids[5..] {
        let users = api.list_users(&t, *m).await.unwrap();
        assert!(
            users.iter().any(|u| u.name == "alice"),
            "new member {m}: {users:?}"
        );
    }
    api.delete_user(&t, ids[6], &UserRef::parse("alice"))
        .await
        .unwrap();
    for m in &ids {
        let users = api.list_users(&t, *m).await.unwrap();
        assert!(
            users.iter().all(|u| u.name != "alice"),
            "member {m}: {users:?}"
        );
    }

    // A primary leaves only with its replica; then the three primaries left share the slots.
    let e = api
        .cluster_action(&t, id, ClusterAction::Shrink(vec![ids[0]]))
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400, "{e}");
    assert!(e.to_string().contains("replica"), "{e}");
    api.cluster_action(&t, id, ClusterAction::Shrink(vec![ids[0], ids[3]]))
        .await
        .unwrap();
    let v = cluster_settled(&w, id).await;
    assert!(v.cluster.fault.is_none(), "{:?}", v.cluster.fault);
    let left: Vec<Uuid> = v.members.iter().map(|m| m.instance.id).collect();
    assert_eq!(left, vec![ids[1], ids[2], ids[4], ids[5], ids[6]]);
    let expected: std::collections::BTreeMap<Uuid, Uuid> =
        [(ids[4], ids[1]), (ids[6], ids[2])].into_iter().collect();
    assert_eq!(v.cluster.replicas, expected);
    assert_eq!(slots(&w, &v), vec![5462, 5461, 0, 5461, 0]);
    // Three primaries are the least: one more may not leave, whatever the replicas.
    let e = api
        .cluster_action(&t, id, ClusterAction::Shrink(vec![ids[5]]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("at least 3"), "{e}");
    let _ = w.stop.send(true);
}

/// Clusters that cannot be made are refused at once with upstream's 4xx, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cluster_requests_are_refused_and_store_nothing() {
    let w = world_with_backups().await;
    let (api, t) = (&w.api, t1());
    api.mgmt_put_flavor(
        &RequestContext::admin("admin"),
        Flavor {
            id: "2".into(),
            name: "m".into(),
            ram_mb: 512,
            vcpus: 1,
            disk_gb: 1,
            ephemeral_gb: 0,
        },
    )
    .await
    .unwrap();
    let e = api
        .create_cluster(&t, new_cluster("postgresql", 3))
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400);
    assert!(e.to_string().contains("replica"), "{e}");
    let e = api
        .create_cluster(&t, new_cluster("redis", 2))
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400);
    assert!(e.to_string().contains("at least 3"), "{e}");
    let mut mixed = new_cluster("mysql", 3);
    mixed.instances[1].flavor_ref = Some("2".into());
    let e = api.create_cluster(&t, mixed).await.unwrap_err();
    assert_eq!(e.fault().status, 400);
    assert!(e.to_string().contains("same flavor"), "{e}");
    let e = api
        .create_cluster(&t, new_cluster("mongodb", 3))
        .await
        .unwrap_err();
    assert_eq!(e.fault().status, 400, "{e}");
    let e = api.show_cluster(&t, Uuid::new_v4()).await.unwrap_err();
    assert_eq!(e.fault().status, 404);
    assert!(api.list_clusters(&t).await.unwrap().is_empty());
    assert!(api.list_instances(&t, true).await.unwrap().is_empty());
}

/// Every member of cluster `id` reports `ops` operations per second from now on.
async fn set_load(w: &World, id: Uuid, ops: f64) {
    let v = w.api.show_cluster(&t1(), id).await.unwrap();
    for m in &v.members {
        w.engines
            .engine(m.instance.id)
            .set_load(crate::model::LoadMetrics {
                ops_per_sec: Some(ops),
                ..Default::default()
            });
    }
}

/// Load-driven scaling on simulated engines: members report their load with their heartbeats; a breach that
/// lasts grows the cluster by one (never beyond max), a lull shrinks it back (never below min), each decision is a
/// `scaling` event, and a policy that cannot hold is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaling_policy_grows_under_load_and_shrinks_after() {
    let w = build_world_with(true, |c| c.report_interval = Duration::from_millis(200)).await;
    let (api, t) = (&w.api, t1());
    let id = api
        .create_cluster(&t, new_cluster("redis", 3))
        .await
        .unwrap()
        .cluster
        .id;
    cluster_settled(&w, id).await;
    let policy = crate::model::ScalingPolicy {
        min_members: 3,
        max_members: 4,
        metric: crate::model::ScalingMetric::OpsPerSec,
        grow_above: 1000.0,
        shrink_below: 100.0,
        breach_secs: 1,
        cooldown_secs: 1,
        step: 1,
    };
    let bad = crate::model::ScalingPolicy {
        min_members: 2,
        ..policy.clone()
    };
    let e = api.set_scaling_policy(&t, id, Some(bad)).await.unwrap_err();
    assert_eq!(e.fault().status, 400, "{e}");
    // A load inside the band first: nothing happens.
    set_load(&w, id, 500.0).await;
    let v = api.set_scaling_policy(&t, id, Some(policy)).await.unwrap();
    assert!(v.cluster.scaling.is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(api.show_cluster(&t, id).await.unwrap().members.len(), 3);

    // Under load: one grow, to max and no further.
    set_load(&w, id, 5000.0).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let v = api.show_cluster(&t, id).await.unwrap();
        if v.members.len() == 4 && v.cluster.task == crate::model::ClusterTask::None {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no grow: {:?}",
            v.cluster.task
        );
        // New members report the same load.
        set_load(&w, id, 5000.0).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = cluster_settled(&w, id).await;
    assert_eq!(v.members.len(), 4, "grew beyond max");
    assert_eq!(slots(&w, &v), vec![4096; 4]);

    // The load stops: one shrink, to min and no further.
    set_load(&w, id, 10.0).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let v = api.show_cluster(&t, id).await.unwrap();
        if v.members.len() == 3 && v.cluster.task == crate::model::ClusterTask::None {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no shrink: {:?}",
            v.cluster.task
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = cluster_settled(&w, id).await;
    assert_eq!(v.members.len(), 3, "shrank below min");
    let events = api.list_cluster_events(&t, id).await.unwrap();
    let decisions: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "scaling")
        .map(|e| e.details["action"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(decisions, vec!["grow", "shrink"], "{events:?}");
    let grow = events.iter().find(|e| e.kind == "scaling").unwrap();
    assert!(grow.details["average"].as_f64().unwrap() > 1000.0);
    assert_eq!(grow.details["values"].as_array().unwrap().len(), 3);
    assert!(events
        .iter()
        .any(|e| e.kind == "cluster_grow" && e.details["reason"].is_string()));
}
