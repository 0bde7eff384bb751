//! Conformance suite of [`InfraStore`]: one `check_*` function per clause of its Contract, and [`run_all`].
//!
//! Every check works on its own tenant, names and ids (random per call), so the suite can run against a store that
//! already holds data, and checks may run one after another on the same store. A check panics (with a message saying
//! which clause failed) when the store breaks the contract.
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! async fn my_store_conforms() {
//!     trove_core::testing::store::run_all(Arc::new(MyStore::open().await)).await;
//! }
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::error::Error;
use crate::model::{
    Access, Backup, BackupFilter, BackupStrategy, BackupStrategyFilter, BackupType, ConfigParam,
    Configuration, Datastore, DatastoreVersion, Flavor, Instance, InstanceFilter, JournalEntry,
    JournalPhase, Manager, ParamType, QuotaLimits, QuotaUsage, Resource, RootHistory,
    ServiceStatusRecord, VolumeUsage, Workflow, WorkflowKind, WorkflowState,
};
use crate::ports::{ChangeSet, Expect, InfraStore, Write};
use crate::state::{BackupState, ServerStatus, ServiceStatus, TaskStatus};

/// Row builders used by the suite, public so that other tests can build valid rows quickly.
pub mod fixtures {
    use super::*;

    /// A fixed, whole-second point in time `secs` after an arbitrary epoch, so ordering checks are exact.
    pub fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0)
            .single()
            .unwrap_or_else(Utc::now)
    }

    /// A unique tenant id.
    pub fn tenant() -> String {
        format!("tenant-{}", Uuid::new_v4().simple())
    }

    /// A building instance of `tenant` with `ram_mb` and a `volume_size` GB volume, created at `created`.
    pub fn instance(
        tenant: &str,
        ram_mb: u32,
        volume_size: Option<u32>,
        created: DateTime<Utc>,
    ) -> Instance {
        Instance {
            id: Uuid::new_v4(),
            name: "db-1".into(),
            tenant_id: tenant.into(),
            datastore_version_id: Uuid::new_v4(),
            flavor_id: "7".into(),
            ram_mb,
            volume_size,
            volume_type: None,
            task: TaskStatus::Building,
            server_status: ServerStatus::Build,
            server_id: None,
            volume_id: None,
            host: None,
            addresses: vec![],
            port: None,
            configuration_id: None,
            replica_of: None,
            locality: None,
            region: "RegionOne".into(),
            availability_zone: None,
            access: Access::default(),
            fault: None,
            cluster_id: None,
            auto_failover: None,
            created,
            updated: created,
            deleted: false,
            deleted_at: None,
            version: 0,
        }
    }

    /// A pending workflow of `kind` for `instance_id`, created at `created`.
    pub fn workflow(kind: WorkflowKind, instance_id: Uuid, created: DateTime<Utc>) -> Workflow {
        Workflow {
            id: Uuid::new_v4(),
            kind,
            instance_id,
            params: json!({"flavor": "7", "nested": {"list": [1, 2, 3]}}),
            state: WorkflowState::Pending,
            owner: None,
            lease_until: None,
            attempts: 0,
            created,
            updated: created,
            version: 0,
        }
    }

    /// A completed full backup of `tenant`, updated at `updated`.
    pub fn backup(tenant: &str, instance_id: Option<Uuid>, updated: DateTime<Utc>) -> Backup {
        Backup {
            id: Uuid::new_v4(),
            tenant_id: tenant.into(),
            instance_id,
            name: "nightly".into(),
            description: Some("a backup".into()),
            state: BackupState::Completed,
            size: Some(0.25),
            location: Some("file:///backups/x.xbstream".into()),
            checksum: Some("abc123".into()),
            parent_id: None,
            backup_type: BackupType::Full,
            datastore_version_id: Uuid::new_v4(),
            created: updated,
            updated,
            deleted: false,
            bytes: None,
            position: None,
            fault: None,
            container: None,
            purged: false,
            schedule_id: None,
        }
    }

    /// A configuration group of `tenant`, created at `created`.
    pub fn configuration(tenant: &str, created: DateTime<Utc>) -> Configuration {
        let mut values = serde_json::Map::new();
        values.insert("max_connections".into(), json!(200));
        Configuration {
            id: Uuid::new_v4(),
            tenant_id: tenant.into(),
            name: "cfg".into(),
            description: None,
            datastore_version_id: Uuid::new_v4(),
            values,
            created,
            updated: created,
            deleted: false,
        }
    }

    /// A service status of `instance_id` reported at `at`.
    pub fn status(
        instance_id: Uuid,
        status: ServiceStatus,
        at: DateTime<Utc>,
    ) -> ServiceStatusRecord {
        ServiceStatusRecord {
            instance_id,
            status,
            reason: None,
            volume: Some(VolumeUsage {
                used_bytes: 1024,
                total_bytes: 1 << 30,
            }),
            load: None,
            updated_at: at,
        }
    }

    /// A datastore with a unique name starting with `prefix`.
    pub fn datastore(prefix: &str) -> Datastore {
        Datastore {
            id: Uuid::new_v4(),
            name: format!("{prefix}-{}", Uuid::new_v4().simple()),
            default_version_id: None,
        }
    }

    /// An active version `name` of `datastore_id`.
    pub fn version(datastore_id: Uuid, name: &str) -> DatastoreVersion {
        DatastoreVersion {
            id: Uuid::new_v4(),
            datastore_id,
            name: name.into(),
            manager: Manager::Mysql,
            image: "/usr/sbin".into(),
            packages: "mariadb-server".into(),
            active: true,
            version: name.into(),
            flavor_ids: vec![],
        }
    }

    /// A flavor with id `id`.
    pub fn flavor(id: &str) -> Flavor {
        Flavor {
            id: id.into(),
            name: format!("m.{id}"),
            ram_mb: 512,
            vcpus: 1,
            disk_gb: 5,
            ephemeral_gb: 0,
        }
    }
}

use fixtures::*;

fn insert(i: &Instance) -> Write {
    Write::Instance {
        instance: i.clone(),
        expect: Expect::Absent,
    }
}

fn insert_wf(w: &Workflow) -> Write {
    Write::Workflow {
        workflow: w.clone(),
        expect: Expect::Absent,
    }
}

async fn must_commit(store: &dyn InfraStore, change: ChangeSet, what: &str) {
    if let Err(e) = store.commit(change).await {
        panic!("{what}: commit failed: {e}");
    }
}

fn ids<T>(rows: &[T], id: impl Fn(&T) -> Uuid) -> Vec<Uuid> {
    rows.iter().map(id).collect()
}

/// Datastores and versions: CRUD, lookup by id or name, name order, unique names, delete cascades to versions.
pub async fn check_datastores(store: &dyn InfraStore) {
    let prefix = format!("ds{}", Uuid::new_v4().simple());
    let mut b = Datastore {
        name: format!("{prefix}-b"),
        ..datastore("x")
    };
    let a = Datastore {
        name: format!("{prefix}-a"),
        ..datastore("x")
    };
    store.put_datastore(&b).await.expect("put datastore b");
    store.put_datastore(&a).await.expect("put datastore a");
    assert_eq!(
        store
            .get_datastore(&b.id.to_string())
            .await
            .expect("get by id"),
        Some(b.clone()),
        "get by id"
    );
    assert_eq!(
        store.get_datastore(&a.name).await.expect("get by name"),
        Some(a.clone()),
        "get by name"
    );
    assert_eq!(
        store
            .get_datastore(&format!("{prefix}-zzz"))
            .await
            .expect("get missing"),
        None,
        "missing name"
    );
    let listed: Vec<_> = store
        .list_datastores()
        .await
        .expect("list")
        .into_iter()
        .filter(|d| d.name.starts_with(&prefix))
        .collect();
    assert_eq!(
        listed,
        vec![a.clone(), b.clone()],
        "datastores are listed by name"
    );

    // Unique names: another id with the same name is a conflict, and changes nothing.
    let dup = Datastore {
        id: Uuid::new_v4(),
        name: a.name.clone(),
        default_version_id: None,
    };
    let err = store
        .put_datastore(&dup)
        .await
        .expect_err("a duplicate datastore name must be refused");
    assert!(
        matches!(err, Error::Conflict { .. }),
        "duplicate datastore name: expected Conflict, got {err:?}"
    );
    assert_eq!(
        store.get_datastore(&a.name).await.expect("get"),
        Some(a.clone()),
        "duplicate changed nothing"
    );

    // Versions.
    let v2 = version(b.id, "5.7");
    let v1 = version(b.id, "10.11");
    let other = version(a.id, "5.7");
    for v in [&v2, &v1, &other] {
        store.put_datastore_version(v).await.expect("put version");
    }
    assert_eq!(
        store
            .get_datastore_version(v1.id)
            .await
            .expect("get version"),
        Some(v1.clone()),
        "get version"
    );
    assert_eq!(
        store
            .list_datastore_versions(Some(b.id))
            .await
            .expect("list versions"),
        vec![v1.clone(), v2.clone()],
        "versions of one datastore, by name"
    );
    let all = store
        .list_datastore_versions(None)
        .await
        .expect("list all versions");
    for v in [&v1, &v2, &other] {
        assert!(all.contains(v), "list of all versions misses {}", v.id);
    }
    let names: Vec<_> = all.iter().map(|v| v.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "all versions are listed by name");
    let dup = DatastoreVersion {
        id: Uuid::new_v4(),
        ..v2.clone()
    };
    let err = store
        .put_datastore_version(&dup)
        .await
        .expect_err("duplicate version name must be refused");
    assert!(
        matches!(err, Error::Conflict { .. }),
        "duplicate version name: expected Conflict, got {err:?}"
    );
    assert_eq!(
        store.get_datastore_version(dup.id).await.expect("get"),
        None,
        "duplicate version not stored"
    );

    // Updates by id.
    let mut v2b = v2.clone();
    v2b.active = false;
    v2b.image = "/opt/mariadb/bin".into();
    v2b.flavor_ids = vec!["7".into(), "8".into()];
    store
        .put_datastore_version(&v2b)
        .await
        .expect("update version");
    assert_eq!(
        store.get_datastore_version(v2.id).await.expect("get"),
        Some(v2b.clone()),
        "version updated"
    );
    b.default_version_id = Some(v2.id);
    store.put_datastore(&b).await.expect("update datastore");
    assert_eq!(
        store.get_datastore(&b.name).await.expect("get"),
        Some(b.clone()),
        "default version stored"
    );

    store
        .delete_datastore_version(v1.id)
        .await
        .expect("delete version");
    assert_eq!(
        store.get_datastore_version(v1.id).await.expect("get"),
        None,
        "version deleted"
    );
    store
        .delete_datastore(b.id)
        .await
        .expect("delete datastore");
    assert_eq!(
        store.get_datastore(&b.name).await.expect("get"),
        None,
        "datastore deleted"
    );
    assert_eq!(
        store.get_datastore_version(v2.id).await.expect("get"),
        None,
        "versions deleted with datastore"
    );
    assert_eq!(
        store.get_datastore_version(other.id).await.expect("get"),
        Some(other.clone()),
        "other kept"
    );
    store
        .delete_datastore(a.id)
        .await
        .expect("delete datastore a");
}

/// Every write of a datastore, version or flavor changes [`InfraStore::catalog_generation`] (catalog caches rely
/// on it); reads and other writes may leave it alone.
pub async fn check_catalog_generation(store: &dyn InfraStore) {
    let p = format!("g{}", Uuid::new_v4().simple());
    let mut last = store.catalog_generation();
    let mut changed = |what: &str, store: &dyn InfraStore| {
        let now = store.catalog_generation();
        assert_ne!(now, last, "{what} must change the catalog generation");
        last = now;
    };
    let ds = datastore(&p);
    store.put_datastore(&ds).await.expect("put datastore");
    changed("put_datastore", store);
    let v = version(ds.id, "1.0");
    store.put_datastore_version(&v).await.expect("put version");
    changed("put_datastore_version", store);
    store
        .delete_datastore_version(v.id)
        .await
        .expect("delete version");
    changed("delete_datastore_version", store);
    store
        .delete_datastore(ds.id)
        .await
        .expect("delete datastore");
    changed("delete_datastore", store);
    let f = flavor(&format!("{p}-1"));
    store.put_flavor(&f).await.expect("put flavor");
    changed("put_flavor", store);
    store.delete_flavor(&f.id).await.expect("delete flavor");
    changed("delete_flavor", store);
    // A refused write may have changed nothing, but must not leave a cache believing an old copy either way.
    let dup = Datastore {
        id: Uuid::new_v4(),
        ..datastore(&p)
    };
    store.put_datastore(&dup).await.expect("put datastore");
    changed("put_datastore", store);
    let clash = Datastore {
        id: Uuid::new_v4(),
        ..dup.clone()
    };
    assert!(store.put_datastore(&clash).await.is_err(), "duplicate name");
    changed("a refused put_datastore", store);
    store
        .delete_datastore(dup.id)
        .await
        .expect("delete datastore");
}

/// Flavors: upsert, list by id, idempotent delete.
pub async fn check_flavors(store: &dyn InfraStore) {
    let p = format!("f{}", Uuid::new_v4().simple());
    let (f2, f1) = (flavor(&format!("{p}-2")), flavor(&format!("{p}-1")));
    store.put_flavor(&f2).await.expect("put flavor");
    store.put_flavor(&f1).await.expect("put flavor");
    let mine: Vec<_> = store
        .list_flavors()
        .await
        .expect("list")
        .into_iter()
        .filter(|f| f.id.starts_with(&p))
        .collect();
    assert_eq!(
        mine,
        vec![f1.clone(), f2.clone()],
        "flavors are listed by id"
    );
    let f1b = Flavor {
        ram_mb: 2048,
        vcpus: 2,
        ..f1.clone()
    };
    store.put_flavor(&f1b).await.expect("update flavor");
    assert_eq!(
        store.get_flavor(&f1.id).await.expect("get"),
        Some(f1b),
        "flavor updated"
    );
    store.delete_flavor(&f1.id).await.expect("delete");
    store
        .delete_flavor(&f1.id)
        .await
        .expect("deleting a missing flavor is harmless");
    assert_eq!(
        store.get_flavor(&f1.id).await.expect("get"),
        None,
        "flavor deleted"
    );
    store.delete_flavor(&f2.id).await.expect("delete");
}

/// Configuration parameter rules: upsert by name, listed by name, delete says whether it existed.
pub async fn check_config_params(store: &dyn InfraStore) {
    let ds = datastore("cp");
    store.put_datastore(&ds).await.expect("put datastore");
    let v = version(ds.id, "1");
    store.put_datastore_version(&v).await.expect("put version");
    let rule = |name: &str, t: ParamType| ConfigParam {
        datastore_version_id: v.id,
        name: name.into(),
        restart_required: false,
        data_type: t,
        min: Some(0.into()),
        max: Some(65535.into()),
    };
    let b = rule("wait_timeout", ParamType::Integer);
    let a = rule("autocommit", ParamType::Boolean);
    store
        .put_config_params(&[b.clone(), a.clone()])
        .await
        .expect("put rules");
    let b2 = ConfigParam {
        restart_required: true,
        max: None,
        ..b.clone()
    };
    store
        .put_config_params(std::slice::from_ref(&b2))
        .await
        .expect("upsert rule");
    assert_eq!(
        store.list_config_params(v.id).await.expect("list"),
        vec![a.clone(), b2],
        "rules by name, upserted"
    );
    assert!(
        store
            .delete_config_param(v.id, "autocommit")
            .await
            .expect("delete"),
        "delete reports existing"
    );
    assert!(
        !store
            .delete_config_param(v.id, "autocommit")
            .await
            .expect("delete"),
        "delete reports missing"
    );
    assert_eq!(
        store.list_config_params(v.id).await.expect("list").len(),
        1,
        "one rule left"
    );
    store
        .delete_datastore(ds.id)
        .await
        .expect("delete datastore");
}

/// Configuration groups: written by commits, `get` includes deleted ones, `list` is the tenant's live ones,
/// newest first.
pub async fn check_configurations(store: &dyn InfraStore) {
    let t = tenant();
    let old = configuration(&t, at(10));
    let new = configuration(&t, at(20));
    let gone = Configuration {
        deleted: true,
        ..configuration(&t, at(30))
    };
    let foreign = configuration(&tenant(), at(40));
    let mut cs = ChangeSet::new();
    for c in [&old, &new, &gone, &foreign] {
        cs.push(Write::Configuration(c.clone()));
    }
    must_commit(store, cs, "configurations").await;
    assert_eq!(
        store.get_configuration(gone.id).await.expect("get"),
        Some(gone.clone()),
        "deleted ones readable"
    );
    assert_eq!(
        store.list_configurations(&t).await.expect("list"),
        vec![new.clone(), old.clone()],
        "live, newest first"
    );
    let renamed = Configuration {
        name: "renamed".into(),
        ..old.clone()
    };
    must_commit(
        store,
        ChangeSet::new().with(Write::Configuration(renamed.clone())),
        "update configuration",
    )
    .await;
    assert_eq!(
        store.get_configuration(old.id).await.expect("get"),
        Some(renamed),
        "configuration upserted"
    );
}

/// Instances: versioning rule of [`Write::Instance`], filters and ordering of `list_instances`.
pub async fn check_instances(store: &dyn InfraStore) {
    let t = tenant();
    let a = instance(&t, 512, Some(1), at(100));
    must_commit(store, ChangeSet::new().with(insert(&a)), "insert").await;
    let got = store
        .get_instance(a.id)
        .await
        .expect("get")
        .expect("inserted instance readable");
    assert_eq!(got, a, "instance round-trips exactly");
    assert_eq!(got.version, 0, "an insert stores version 0");

    let mut upd = got.clone();
    upd.task = TaskStatus::None;
    upd.server_status = ServerStatus::Active;
    upd.addresses = vec![crate::model::Address {
        address: "127.0.0.1".into(),
        kind: "private".into(),
    }];
    upd.port = Some(40001);
    must_commit(
        store,
        ChangeSet::new().with(Write::Instance {
            instance: upd.clone(),
            expect: Expect::Version(0),
        }),
        "update",
    )
    .await;
    let got = store.get_instance(a.id).await.expect("get").expect("row");
    assert_eq!(got.version, 1, "an update at version 0 stores version 1");
    assert_eq!(
        Instance {
            version: 0,
            ..got.clone()
        },
        Instance {
            version: 0,
            ..upd.clone()
        },
        "update stored"
    );
    must_commit(
        store,
        ChangeSet::new().with(Write::Instance {
            instance: got.clone(),
            expect: Expect::Any,
        }),
        "any",
    )
    .await;
    assert_eq!(
        store
            .get_instance(a.id)
            .await
            .expect("get")
            .expect("row")
            .version,
        2,
        "Any bumps the version"
    );
    let fresh = instance(&t, 512, None, at(50));
    must_commit(
        store,
        ChangeSet::new().with(Write::Instance {
            instance: fresh.clone(),
            expect: Expect::Any,
        }),
        "any",
    )
    .await;
    assert_eq!(
        store
            .get_instance(fresh.id)
            .await
            .expect("get")
            .expect("row")
            .version,
        0,
        "Any inserts at 0"
    );
    assert_eq!(
        store
            .get_instance(Uuid::new_v4())
            .await
            .expect("get missing"),
        None,
        "missing instance"
    );

    // Filters and ordering: created descending, then id.
    let src = a.id;
    let cfg = Uuid::new_v4();
    let same1 = Instance {
        replica_of: Some(src),
        ..instance(&t, 256, Some(2), at(200))
    };
    let same2 = Instance {
        configuration_id: Some(cfg),
        ..instance(&t, 256, Some(2), at(200))
    };
    let deleted = Instance {
        deleted: true,
        deleted_at: Some(at(301)),
        ..instance(&t, 256, Some(2), at(300))
    };
    let clustered = Instance {
        cluster_id: Some(Uuid::new_v4()),
        ..instance(&t, 256, Some(2), at(150))
    };
    let foreign = instance(&tenant(), 256, Some(2), at(400));
    let mut cs = ChangeSet::new();
    for i in [&same1, &same2, &deleted, &clustered, &foreign] {
        cs.push(insert(i));
    }
    must_commit(store, cs, "insert several").await;
    let (lo, hi) = if same1.id < same2.id {
        (same1.id, same2.id)
    } else {
        (same2.id, same1.id)
    };

    let live = store
        .list_instances(&InstanceFilter::tenant(&t))
        .await
        .expect("list");
    assert_eq!(
        ids(&live, |i| i.id),
        vec![lo, hi, clustered.id, a.id, fresh.id],
        "tenant list: created desc, id"
    );
    let mut f = InstanceFilter::tenant(&t);
    f.include_deleted = true;
    let all = store.list_instances(&f).await.expect("list");
    assert_eq!(
        ids(&all, |i| i.id),
        vec![deleted.id, lo, hi, clustered.id, a.id, fresh.id],
        "with deleted"
    );
    f.include_clustered = false;
    f.include_deleted = false;
    let unclustered = store.list_instances(&f).await.expect("list");
    assert_eq!(
        ids(&unclustered, |i| i.id),
        vec![lo, hi, a.id, fresh.id],
        "without cluster members"
    );
    let replicas = InstanceFilter {
        replica_of: Some(src),
        ..InstanceFilter::tenant(&t)
    };
    assert_eq!(
        ids(&store.list_instances(&replicas).await.expect("list"), |i| i
            .id),
        vec![same1.id],
        "replica_of"
    );
    let by_cfg = InstanceFilter {
        configuration_id: Some(cfg),
        ..InstanceFilter::tenant(&t)
    };
    assert_eq!(
        ids(&store.list_instances(&by_cfg).await.expect("list"), |i| i
            .id),
        vec![same2.id],
        "configuration"
    );
    let everyone = store
        .list_instances(&InstanceFilter {
            include_clustered: true,
            ..Default::default()
        })
        .await;
    let everyone = everyone.expect("list all tenants");
    assert!(
        everyone.iter().any(|i| i.id == foreign.id) && everyone.iter().any(|i| i.id == a.id),
        "all tenants"
    );
    let key = |i: &Instance| (std::cmp::Reverse(i.created), i.id);
    assert!(
        everyone.windows(2).all(|w| key(&w[0]) <= key(&w[1])),
        "all tenants: created desc, then id"
    );
}

/// A failed [`Expect`] is a conflict and leaves nothing of the change set written.
pub async fn check_expect_conflict_writes_nothing(store: &dyn InfraStore) {
    let t = tenant();
    let existing = instance(&t, 512, Some(1), at(1));
    let wf = workflow(WorkflowKind::new("create"), existing.id, at(1));
    must_commit(
        store,
        ChangeSet::new()
            .with(insert(&existing))
            .with(insert_wf(&wf)),
        "setup",
    )
    .await;

    for (label, bad) in [
        ("instance Absent over an existing row", insert(&existing)),
        (
            "instance at a wrong version",
            Write::Instance {
                instance: existing.clone(),
                expect: Expect::Version(5),
            },
        ),
        (
            "missing instance at a version",
            Write::Instance {
                instance: instance(&t, 1, None, at(1)),
                expect: Expect::Version(0),
            },
        ),
        ("workflow Absent over an existing row", insert_wf(&wf)),
        (
            "workflow at a wrong version",
            Write::Workflow {
                workflow: wf.clone(),
                expect: Expect::Version(9),
            },
        ),
    ] {
        let newcomer = instance(&t, 512, Some(1), at(2));
        let new_wf = workflow(WorkflowKind::new("delete"), newcomer.id, at(2));
        let bk = backup(&t, Some(newcomer.id), at(2));
        let cfg = configuration(&t, at(2));
        let mut changed = existing.clone();
        changed.name = "changed".into();
        let cs = ChangeSet::new()
            .with(insert(&newcomer))
            .with(insert_wf(&new_wf))
            .with(Write::Instance {
                instance: changed,
                expect: Expect::Any,
            })
            .with(Write::ServiceStatus(status(
                newcomer.id,
                ServiceStatus::Running,
                at(2),
            )))
            .with(Write::Backup(bk.clone()))
            .with(Write::Configuration(cfg.clone()))
            .with(Write::RootHistory(RootHistory {
                instance_id: newcomer.id,
                user: "root".into(),
                created: at(2),
            }))
            .with(bad);
        match store.commit(cs).await {
            Err(Error::Conflict { .. }) => {}
            other => panic!("{label}: expected Conflict, got {other:?}"),
        }
        assert_eq!(
            store.get_instance(newcomer.id).await.expect("get"),
            None,
            "{label}: instance written"
        );
        assert_eq!(
            store.get_workflow(new_wf.id).await.expect("get"),
            None,
            "{label}: workflow written"
        );
        assert_eq!(
            store.get_instance(existing.id).await.expect("get"),
            Some(existing.clone()),
            "{label}: update kept"
        );
        assert_eq!(
            store.get_service_status(newcomer.id).await.expect("get"),
            None,
            "{label}: status written"
        );
        assert_eq!(
            store.get_backup(bk.id).await.expect("get"),
            None,
            "{label}: backup written"
        );
        assert_eq!(
            store.get_configuration(cfg.id).await.expect("get"),
            None,
            "{label}: configuration written"
        );
        assert_eq!(
            store.get_root_history(newcomer.id).await.expect("get"),
            None,
            "{label}: root history written"
        );
    }
    assert_eq!(
        store.get_workflow(wf.id).await.expect("get"),
        Some(wf),
        "workflow untouched"
    );
}

/// A failed quota check is [`Error::QuotaExceeded`] naming exactly the resources over their limits, and leaves
/// nothing written; only the resources asked for are checked; tenants without limits get the defaults.
pub async fn check_quota_exceeded_writes_nothing(store: &dyn InfraStore) {
    let t = tenant();
    assert_eq!(
        store.get_quota_limits(&t).await.expect("limits"),
        QuotaLimits::default(),
        "default limits"
    );
    let limits = QuotaLimits {
        instances: 2,
        ram: 1024,
        volumes: 3,
        backups: 1,
    };
    store
        .set_quota_limits(&t, &limits)
        .await
        .expect("set limits");
    assert_eq!(
        store.get_quota_limits(&t).await.expect("limits"),
        limits,
        "limits stored"
    );

    let first = instance(&t, 512, Some(2), at(1));
    must_commit(
        store,
        ChangeSet::new()
            .with(insert(&first))
            .check_quota(&t, &Resource::ALL),
        "within limits",
    )
    .await;

    // Over ram (512 + 600) and volumes (2 + 2), not over instances (2 of 2).
    let second = instance(&t, 600, Some(2), at(2));
    let bk = backup(&t, None, at(2));
    let cs = ChangeSet::new()
        .with(insert(&second))
        .with(Write::Backup(bk.clone()))
        .with(Write::ServiceStatus(status(
            second.id,
            ServiceStatus::New,
            at(2),
        )))
        .check_quota(&t, &Resource::ALL);
    match store.commit(cs).await {
        Err(Error::QuotaExceeded { resources }) => {
            let got: BTreeSet<_> = resources.into_iter().collect();
            let want: BTreeSet<_> = ["ram".to_string(), "volumes".to_string()]
                .into_iter()
                .collect();
            assert_eq!(
                got, want,
                "QuotaExceeded names exactly the resources over their limits"
            );
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    assert_eq!(
        store.get_instance(second.id).await.expect("get"),
        None,
        "quota failure wrote the instance"
    );
    assert_eq!(
        store.get_backup(bk.id).await.expect("get"),
        None,
        "quota failure wrote the backup"
    );
    assert_eq!(
        store.get_service_status(second.id).await.expect("get"),
        None,
        "quota failure wrote the status"
    );
    let usage = store.quota_usage(&t).await.expect("usage");
    assert_eq!(
        usage,
        QuotaUsage {
            instances: 1,
            ram: 512,
            volumes: 2,
            backups: 0
        },
        "usage unchanged"
    );

    // Only the listed resources are checked.
    let third = instance(&t, 4096, Some(1), at(3));
    must_commit(
        store,
        ChangeSet::new()
            .with(insert(&third))
            .check_quota(&t, &[Resource::Instances]),
        "unchecked ram",
    )
    .await;
    // Exactly at the limit passes; one more fails.
    let fourth = instance(&t, 1, None, at(4));
    match store
        .commit(
            ChangeSet::new()
                .with(insert(&fourth))
                .check_quota(&t, &[Resource::Instances]),
        )
        .await
    {
        Err(Error::QuotaExceeded { resources }) => {
            assert_eq!(resources, vec!["instances".to_string()])
        }
        other => {
            panic!("a third instance over a limit of 2: expected QuotaExceeded, got {other:?}")
        }
    }
    // Unlimited (-1) never fails.
    store
        .set_quota_limits(
            &t,
            &QuotaLimits {
                instances: -1,
                ..limits
            },
        )
        .await
        .expect("set");
    must_commit(
        store,
        ChangeSet::new()
            .with(insert(&fourth))
            .check_quota(&t, &[Resource::Instances]),
        "unlimited",
    )
    .await;
}

/// Usage is derived from live rows: not-deleted instances (count, ram, volume) and not-deleted backups of the
/// tenant, and follows every commit (deleting a row frees its share).
pub async fn check_derived_usage(store: &dyn InfraStore) {
    let t = tenant();
    assert_eq!(
        store.quota_usage(&t).await.expect("usage"),
        QuotaUsage::default(),
        "a new tenant uses nothing"
    );
    let a = instance(&t, 512, Some(5), at(1));
    let b = instance(&t, 1024, None, at(2));
    let dead = Instance {
        deleted: true,
        ..instance(&t, 4096, Some(10), at(3))
    };
    let other = instance(&tenant(), 4096, Some(10), at(3));
    let b1 = backup(&t, Some(a.id), at(1));
    let b2 = Backup {
        deleted: true,
        ..backup(&t, Some(a.id), at(2))
    };
    let b3 = backup(&other.tenant_id, Some(other.id), at(3));
    let mut cs = ChangeSet::new();
    for i in [&a, &b, &dead, &other] {
        cs.push(insert(i));
    }
    for bk in [&b1, &b2, &b3] {
        cs.push(Write::Backup(bk.clone()));
    }
    must_commit(store, cs, "rows").await;
    assert_eq!(
        store.quota_usage(&t).await.expect("usage"),
        QuotaUsage {
            instances: 2,
            ram: 1536,
            volumes: 5,
            backups: 1
        },
        "usage counts live rows of the tenant only"
    );
    let mut a_gone = store.get_instance(a.id).await.expect("get").expect("row");
    a_gone.deleted = true;
    a_gone.deleted_at = Some(at(9));
    must_commit(
        store,
        ChangeSet::new().with(Write::Instance {
            instance: a_gone,
            expect: Expect::Version(0),
        }),
        "del",
    )
    .await;
    must_commit(
        store,
        ChangeSet::new().with(Write::Backup(Backup {
            deleted: true,
            ..b1
        })),
        "delete backup",
    )
    .await;
    assert_eq!(
        store.quota_usage(&t).await.expect("usage"),
        QuotaUsage {
            instances: 1,
            ram: 1024,
            volumes: 0,
            backups: 0
        },
        "deleting rows frees their usage"
    );
}

/// Concurrent commits checking the same tenant's quota are serialised: with a limit of `LIMIT` instances and many
/// concurrent inserts, exactly `LIMIT` succeed and the rest fail with `QuotaExceeded`.
pub async fn check_concurrent_quota(store: Arc<dyn InfraStore>) {
    const LIMIT: i64 = 3;
    const TRIES: usize = 24;
    let t = tenant();
    store
        .set_quota_limits(
            &t,
            &QuotaLimits {
                instances: LIMIT,
                ..QuotaLimits::default()
            },
        )
        .await
        .expect("set");
    let barrier = Arc::new(tokio::sync::Barrier::new(TRIES));
    let mut tasks = Vec::new();
    for n in 0..TRIES {
        let (store, t, barrier) = (store.clone(), t.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let i = instance(&t, 128, Some(1), at(n as i64));
            barrier.wait().await;
            store
                .commit(
                    ChangeSet::new()
                        .with(insert(&i))
                        .check_quota(&t, &[Resource::Instances]),
                )
                .await
        }));
    }
    let (mut ok, mut over) = (0, 0);
    for task in tasks {
        match task.await.expect("commit task panicked") {
            Ok(()) => ok += 1,
            Err(Error::QuotaExceeded { .. }) => over += 1,
            Err(e) => panic!("concurrent quota commit failed with an unexpected error: {e}"),
        }
    }
    assert_eq!(
        ok, LIMIT,
        "exactly the limit's worth of concurrent commits may pass (got {ok}, {over} refused)"
    );
    assert_eq!(
        store.quota_usage(&t).await.expect("usage").instances,
        LIMIT,
        "usage equals the limit"
    );
}

/// Workflows: versioned writes, open ones listed oldest first, claims exclusive (also under concurrency),
/// renewals, lease expiry, closed and missing workflows unclaimable.
pub async fn check_workflow_claims(store: Arc<dyn InfraStore>) {
    let s: &dyn InfraStore = store.as_ref();
    let base = Utc::now() + Duration::days(3650); // later than any other open workflow a shared store may hold
    let w2 = workflow(
        WorkflowKind::new("create"),
        Uuid::new_v4(),
        base + Duration::seconds(2),
    );
    let w1 = workflow(
        WorkflowKind::new("delete"),
        Uuid::new_v4(),
        base + Duration::seconds(1),
    );
    let done = Workflow {
        state: WorkflowState::Done,
        ..workflow(WorkflowKind::new("restart"), Uuid::new_v4(), base)
    };
    let failed = Workflow {
        state: WorkflowState::Failed,
        ..workflow(WorkflowKind::new("restart"), Uuid::new_v4(), base)
    };
    let rolling = Workflow {
        state: WorkflowState::RollingBack,
        ..workflow(
            WorkflowKind::new("create"),
            Uuid::new_v4(),
            base + Duration::seconds(3),
        )
    };
    let mut cs = ChangeSet::new();
    for w in [&w2, &w1, &done, &failed, &rolling] {
        cs.push(insert_wf(w));
    }
    must_commit(s, cs, "workflows").await;
    assert_eq!(
        s.get_workflow(w1.id).await.expect("get"),
        Some(w1.clone()),
        "workflow round-trips exactly"
    );
    let mine = [w1.id, w2.id, rolling.id, done.id, failed.id];
    let open: Vec<_> = s
        .list_open_workflows()
        .await
        .expect("open")
        .into_iter()
        .filter(|w| mine.contains(&w.id))
        .collect();
    assert_eq!(
        ids(&open, |w| w.id),
        vec![w1.id, w2.id, rolling.id],
        "open workflows, oldest first"
    );

    let now = Utc::now();
    let lease = now + Duration::seconds(30);
    assert_eq!(
        s.claim_workflow(done.id, "a", now, lease)
            .await
            .expect("claim"),
        None,
        "done is unclaimable"
    );
    assert_eq!(
        s.claim_workflow(failed.id, "a", now, lease)
            .await
            .expect("claim"),
        None,
        "failed is unclaimable"
    );
    assert_eq!(
        s.claim_workflow(Uuid::new_v4(), "a", now, lease)
            .await
            .expect("claim"),
        None,
        "missing"
    );

    let got = s
        .claim_workflow(w1.id, "a", now, lease)
        .await
        .expect("claim")
        .expect("unowned is claimable");
    assert_eq!(got.owner.as_deref(), Some("a"), "claim sets the owner");
    assert_eq!(got.lease_until, Some(lease), "claim sets the lease");
    assert_eq!(
        (got.attempts, got.version, got.state),
        (1, 1, WorkflowState::Pending),
        "claim counts, bumps, keeps state"
    );
    assert_eq!(
        s.get_workflow(w1.id).await.expect("get"),
        Some(got.clone()),
        "claim is stored"
    );
    assert_eq!(
        s.claim_workflow(w1.id, "b", now, lease)
            .await
            .expect("claim"),
        None,
        "held lease excludes others"
    );
    let renewed = s
        .claim_workflow(
            w1.id,
            "a",
            now + Duration::seconds(10),
            lease + Duration::seconds(10),
        )
        .await
        .expect("claim")
        .expect("the owner may renew");
    assert_eq!(
        (renewed.attempts, renewed.version),
        (1, 2),
        "a renewal is not a new attempt"
    );
    let later = lease + Duration::seconds(10);
    assert_eq!(
        s.claim_workflow(w1.id, "b", later - Duration::seconds(1), later)
            .await
            .expect("claim"),
        None,
        "lease still held"
    );
    let taken = s
        .claim_workflow(w1.id, "b", later, later + Duration::seconds(30))
        .await
        .expect("claim")
        .expect("an expired lease may be taken over");
    assert_eq!(
        (taken.owner.as_deref(), taken.attempts),
        (Some("b"), 2),
        "takeover counts an attempt"
    );

    // Finishing via a versioned write closes it.
    let mut fin = taken.clone();
    fin.state = WorkflowState::Done;
    fin.owner = None;
    let stale = Write::Workflow {
        workflow: fin.clone(),
        expect: Expect::Version(got.version),
    };
    assert!(
        matches!(
            s.commit(ChangeSet::new().with(stale)).await,
            Err(Error::Conflict { .. })
        ),
        "stale workflow write"
    );
    must_commit(
        s,
        ChangeSet::new().with(Write::Workflow {
            workflow: fin,
            expect: Expect::Version(taken.version),
        }),
        "finish",
    )
    .await;
    assert_eq!(
        s.claim_workflow(w1.id, "a", later, later)
            .await
            .expect("claim"),
        None,
        "a finished workflow"
    );

    // Concurrent claims: exactly one of many workers wins.
    const WORKERS: usize = 16;
    let barrier = Arc::new(tokio::sync::Barrier::new(WORKERS));
    let mut tasks = Vec::new();
    for n in 0..WORKERS {
        let (store, barrier, id) = (store.clone(), barrier.clone(), w2.id);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .claim_workflow(id, &format!("worker-{n}"), now, lease)
                .await
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        if let Some(w) = task
            .await
            .expect("claim task panicked")
            .expect("claim failed")
        {
            winners.push(w.owner.unwrap_or_default());
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent claim wins, got {winners:?}"
    );
    let stored = s.get_workflow(w2.id).await.expect("get").expect("row");
    assert_eq!(
        stored.owner.as_deref(),
        Some(winners[0].as_str()),
        "the winner is the stored owner"
    );
    assert_eq!(stored.attempts, 1, "one attempt recorded");
}

/// The journal returns a workflow's entries in append order (even with equal timestamps), per workflow.
pub async fn check_journal(store: &dyn InfraStore) {
    let (w1, w2) = (Uuid::new_v4(), Uuid::new_v4());
    let same_time = at(5);
    let mut expected = Vec::new();
    for n in 0..40 {
        let e = JournalEntry {
            workflow_id: if n % 3 == 0 { w2 } else { w1 },
            step: format!("step-{}", 40 - n),
            phase: if n % 2 == 0 {
                JournalPhase::Started
            } else {
                JournalPhase::Completed
            },
            data: json!({"n": n, "server_id": "srv-1"}),
            at: if n % 5 == 0 { at(1) } else { same_time },
        };
        store.append_journal(&e).await.expect("append");
        expected.push(e);
    }
    let want1: Vec<_> = expected
        .iter()
        .filter(|e| e.workflow_id == w1)
        .cloned()
        .collect();
    let want2: Vec<_> = expected
        .iter()
        .filter(|e| e.workflow_id == w2)
        .cloned()
        .collect();
    assert_eq!(
        store.journal(w1).await.expect("journal"),
        want1,
        "journal of w1 in append order"
    );
    assert_eq!(
        store.journal(w2).await.expect("journal"),
        want2,
        "journal of w2 in append order"
    );
    assert!(
        store
            .journal(Uuid::new_v4())
            .await
            .expect("journal")
            .is_empty(),
        "empty journal"
    );
}

/// Service statuses: batched upsert (large batches, duplicates overwrite), single and many reads, commit writes.
pub async fn check_service_statuses(store: &dyn InfraStore) {
    let ids: Vec<Uuid> = (0..1500).map(|_| Uuid::new_v4()).collect();
    let batch: Vec<_> = ids
        .iter()
        .map(|id| status(*id, ServiceStatus::Running, at(1)))
        .collect();
    store
        .put_service_statuses(&batch)
        .await
        .expect("batched upsert");
    store
        .put_service_statuses(&[])
        .await
        .expect("an empty batch is fine");
    let mut second: Vec<_> = ids[..700]
        .iter()
        .map(|id| status(*id, ServiceStatus::Shutdown, at(2)))
        .collect();
    second[0].reason = Some("engine exited with status 1".into());
    second[1].volume = None;
    store
        .put_service_statuses(&second)
        .await
        .expect("batched upsert over existing rows");
    assert_eq!(
        store.get_service_status(ids[0]).await.expect("get"),
        Some(second[0].clone()),
        "upsert overwrote"
    );
    assert_eq!(
        store.get_service_status(ids[1000]).await.expect("get"),
        Some(batch[1000].clone()),
        "untouched"
    );
    let missing = Uuid::new_v4();
    let wanted = [ids[1], missing, ids[900]];
    let mut got = store.get_service_statuses(&wanted).await.expect("get many");
    got.sort_by_key(|s| s.instance_id);
    let mut want = vec![second[1].clone(), batch[900].clone()];
    want.sort_by_key(|s| s.instance_id);
    assert_eq!(got, want, "get_service_statuses returns the existing ones");
    assert_eq!(
        store
            .get_service_statuses(&ids)
            .await
            .expect("get many")
            .len(),
        ids.len(),
        "all found"
    );
    assert!(
        store
            .get_service_statuses(&[])
            .await
            .expect("get none")
            .is_empty(),
        "no ids, no rows"
    );
    let via_commit = status(missing, ServiceStatus::Building, at(3));
    must_commit(
        store,
        ChangeSet::new().with(Write::ServiceStatus(via_commit.clone())),
        "status commit",
    )
    .await;
    assert_eq!(
        store.get_service_status(missing).await.expect("get"),
        Some(via_commit),
        "commit upserts statuses"
    );
}

/// Sticky statuses: a heartbeat batch never replaces a stored RESTART_REQUIRED or DELETED (in the same statement as
/// its other rows), while a commit's [`Write::ServiceStatus`] does.
pub async fn check_sticky_statuses(store: &dyn InfraStore) {
    let (restart, deleted, plain) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut cs = ChangeSet::new();
    for (id, st) in [
        (restart, ServiceStatus::RestartRequired),
        (deleted, ServiceStatus::Deleted),
        (plain, ServiceStatus::Healthy),
    ] {
        cs.push(Write::ServiceStatus(status(id, st, at(1))));
    }
    must_commit(store, cs, "statuses").await;
    let beat: Vec<_> = [restart, deleted, plain]
        .iter()
        .map(|id| status(*id, ServiceStatus::Shutdown, at(2)))
        .collect();
    store.put_service_statuses(&beat).await.expect("heartbeats");
    let now = |id| async move {
        store
            .get_service_status(id)
            .await
            .expect("get")
            .map(|s| (s.status, s.updated_at))
    };
    assert_eq!(
        now(restart).await,
        Some((ServiceStatus::RestartRequired, at(1))),
        "a heartbeat leaves RESTART_REQUIRED alone"
    );
    assert_eq!(
        now(deleted).await,
        Some((ServiceStatus::Deleted, at(1))),
        "a heartbeat leaves DELETED alone"
    );
    assert_eq!(
        now(plain).await,
        Some((ServiceStatus::Shutdown, at(2))),
        "a heartbeat in the same batch replaces an ordinary status"
    );
    must_commit(
        store,
        ChangeSet::new().with(Write::ServiceStatus(status(
            restart,
            ServiceStatus::Healthy,
            at(3),
        ))),
        "a restart clears RESTART_REQUIRED",
    )
    .await;
    store
        .put_service_statuses(&[status(restart, ServiceStatus::Running, at(4))])
        .await
        .expect("heartbeat");
    assert_eq!(
        now(restart).await,
        Some((ServiceStatus::Running, at(4))),
        "heartbeats resume once a commit cleared the sticky status"
    );
}

/// Backups: upsert by commit, `get` includes deleted ones, filters, newest update first.
pub async fn check_backups(store: &dyn InfraStore) {
    let t = tenant();
    let inst = Uuid::new_v4();
    let b1 = backup(&t, Some(inst), at(10));
    let b2 = Backup {
        parent_id: Some(b1.id),
        backup_type: BackupType::Incremental,
        ..backup(&t, Some(inst), at(20))
    };
    let b3 = backup(&t, None, at(15));
    let gone = Backup {
        deleted: true,
        ..backup(&t, Some(inst), at(30))
    };
    let foreign = backup(&tenant(), Some(inst), at(40));
    let mut cs = ChangeSet::new();
    for b in [&b1, &b2, &b3, &gone, &foreign] {
        cs.push(Write::Backup(b.clone()));
    }
    must_commit(store, cs, "backups").await;
    assert_eq!(
        store.get_backup(gone.id).await.expect("get"),
        Some(gone.clone()),
        "deleted backups readable"
    );
    let f = BackupFilter {
        tenant_id: Some(t.clone()),
        ..Default::default()
    };
    assert_eq!(
        ids(&store.list_backups(&f).await.expect("list"), |b| b.id),
        vec![b2.id, b3.id, b1.id],
        "updated desc"
    );
    let f = BackupFilter {
        tenant_id: Some(t.clone()),
        instance_id: Some(inst),
        include_deleted: true,
    };
    assert_eq!(
        ids(&store.list_backups(&f).await.expect("list"), |b| b.id),
        vec![gone.id, b2.id, b1.id],
        "by instance"
    );
    let f = BackupFilter {
        instance_id: Some(inst),
        ..Default::default()
    };
    assert_eq!(
        ids(&store.list_backups(&f).await.expect("list"), |b| b.id),
        vec![foreign.id, b2.id, b1.id],
        "all tenants"
    );
    let b1b = Backup {
        state: BackupState::DeleteFailed,
        updated: at(50),
        ..b1.clone()
    };
    must_commit(
        store,
        ChangeSet::new().with(Write::Backup(b1b.clone())),
        "update backup",
    )
    .await;
    assert_eq!(
        store.get_backup(b1.id).await.expect("get"),
        Some(b1b),
        "backup upserted"
    );
}

/// Root history: inserted by commit, the first record kept, removed by [`Write::DeleteRootHistory`].
pub async fn check_root_history(store: &dyn InfraStore) {
    let id = Uuid::new_v4();
    assert_eq!(
        store.get_root_history(id).await.expect("get"),
        None,
        "no history yet"
    );
    let first = RootHistory {
        instance_id: id,
        user: "admin".into(),
        created: at(1),
    };
    must_commit(
        store,
        ChangeSet::new().with(Write::RootHistory(first.clone())),
        "root",
    )
    .await;
    let again = RootHistory {
        instance_id: id,
        user: "other".into(),
        created: at(2),
    };
    must_commit(
        store,
        ChangeSet::new().with(Write::RootHistory(again)),
        "root again",
    )
    .await;
    assert_eq!(
        store.get_root_history(id).await.expect("get"),
        Some(first),
        "the first record is kept"
    );
    must_commit(
        store,
        ChangeSet::new().with(Write::DeleteRootHistory(id)),
        "delete root",
    )
    .await;
    assert_eq!(
        store.get_root_history(id).await.expect("get"),
        None,
        "history removed"
    );
    must_commit(
        store,
        ChangeSet::new().with(Write::DeleteRootHistory(id)),
        "delete again is harmless",
    )
    .await;
}

/// Backup schedules: inserted once, updated only at the version read (a run is claimed once), listed per
/// instance, deleted.
pub async fn check_backup_schedules(store: &dyn InfraStore) {
    let (i1, i2) = (Uuid::new_v4(), Uuid::new_v4());
    let schedule = |instance: Uuid, name: &str| crate::model::BackupSchedule {
        id: Uuid::new_v4(),
        tenant_id: tenant(),
        instance_id: instance,
        name: name.into(),
        times: crate::model::ScheduleTimes::Cron("30 2 * * *".into()),
        incremental: true,
        keep_last: Some(3),
        keep_days: None,
        next_run: at(10),
        last_run: None,
        last_backup_id: None,
        last_error: None,
        created: at(1),
        version: 0,
    };
    let (a, b) = (schedule(i1, "a"), schedule(i2, "b"));
    for s in [&a, &b] {
        store
            .commit(ChangeSet::new().with(Write::BackupSchedule {
                schedule: s.clone(),
                expect: Expect::Absent,
            }))
            .await
            .expect("insert a schedule");
    }
    let again = store
        .commit(ChangeSet::new().with(Write::BackupSchedule {
            schedule: a.clone(),
            expect: Expect::Absent,
        }))
        .await;
    assert!(
        matches!(again, Err(crate::Error::Conflict { .. })),
        "{again:?}"
    );
    let mine = store.list_backup_schedules(Some(i1)).await.expect("list");
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].name, "a");
    assert_eq!(mine[0].times, a.times);
    let read = mine[0].clone();
    // Two claims of the same run at the version read: one wins.
    let mut first = read.clone();
    first.next_run = at(20);
    let mut second = read.clone();
    second.next_run = at(30);
    let won = store
        .commit(ChangeSet::new().with(Write::BackupSchedule {
            schedule: first,
            expect: Expect::Version(read.version),
        }))
        .await;
    assert!(won.is_ok(), "{won:?}");
    let lost = store
        .commit(ChangeSet::new().with(Write::BackupSchedule {
            schedule: second,
            expect: Expect::Version(read.version),
        }))
        .await;
    assert!(
        matches!(lost, Err(crate::Error::Conflict { .. })),
        "{lost:?}"
    );
    let now = store.list_backup_schedules(Some(i1)).await.expect("list");
    assert_eq!(now[0].next_run, at(20));
    assert_eq!(now[0].version, read.version + 1);
    let all = store.list_backup_schedules(None).await.expect("list all");
    assert!(all.iter().any(|s| s.id == a.id) && all.iter().any(|s| s.id == b.id));
    store
        .commit(ChangeSet::new().with(Write::DeleteBackupSchedule(a.id)))
        .await
        .expect("delete");
    assert!(store
        .list_backup_schedules(Some(i1))
        .await
        .expect("list")
        .is_empty());
    store
        .commit(ChangeSet::new().with(Write::DeleteBackupSchedule(a.id)))
        .await
        .expect("deleting a missing schedule succeeds");
    store
        .commit(ChangeSet::new().with(Write::DeleteBackupSchedule(b.id)))
        .await
        .expect("delete");
}

/// Backup strategies: one per (tenant, instance) replaced by a new write, filters, order (tenant, then the
/// tenant-wide strategy before instance ones), exact deletes, and a failed commit leaves them alone.
pub async fn check_backup_strategies(store: &dyn InfraStore) {
    let t = tenant();
    let other = tenant();
    let (i1, i2) = (Uuid::new_v4(), Uuid::new_v4());
    let strategy = |tenant: &str, instance: Option<Uuid>, container: &str| BackupStrategy {
        tenant_id: tenant.to_string(),
        instance_id: instance,
        container: container.into(),
        created: at(5),
    };
    async fn mine(
        store: &dyn InfraStore,
        tenant: String,
        instance: Option<Uuid>,
    ) -> Vec<BackupStrategy> {
        store
            .list_backup_strategies(&BackupStrategyFilter {
                tenant_id: Some(tenant),
                instance_id: instance,
            })
            .await
            .expect("list strategies")
    }
    assert!(mine(store, t.clone(), None).await.is_empty(), "none yet");
    let wide = strategy(&t, None, "tenant-wide");
    let s1 = strategy(&t, Some(i1), "one");
    let s2 = strategy(&t, Some(i2), "two");
    let foreign = strategy(&other, Some(i1), "foreign");
    let mut cs = ChangeSet::new();
    for s in [&s2, &foreign, &s1, &wide] {
        cs.push(Write::BackupStrategy(s.clone()));
    }
    must_commit(store, cs, "strategies").await;
    let mut by_instance = vec![s1.clone(), s2.clone()];
    by_instance.sort_by_key(|s| s.instance_id.map(|i| i.to_string()));
    let mut want = vec![wide.clone()];
    want.extend(by_instance);
    assert_eq!(
        mine(store, t.clone(), None).await,
        want,
        "a tenant's strategies, the tenant-wide one first, then by instance id"
    );
    assert_eq!(
        mine(store, t.clone(), Some(i1)).await,
        vec![s1.clone()],
        "by instance"
    );
    let everyone = store
        .list_backup_strategies(&BackupStrategyFilter {
            tenant_id: None,
            instance_id: Some(i1),
        })
        .await
        .expect("list");
    assert!(
        everyone.contains(&s1) && everyone.contains(&foreign),
        "no tenant filter lists every tenant's: {everyone:?}"
    );
    let replaced = strategy(&t, Some(i1), "one-b");
    must_commit(
        store,
        ChangeSet::new().with(Write::BackupStrategy(replaced.clone())),
        "replace",
    )
    .await;
    assert_eq!(
        mine(store, t.clone(), Some(i1)).await,
        vec![replaced.clone()],
        "a second strategy for the same instance replaces the first"
    );
    // A failed commit writes none of its strategy changes.
    let clash = instance(&t, 512, None, at(1));
    must_commit(store, ChangeSet::new().with(insert(&clash)), "instance").await;
    let failed = store
        .commit(
            ChangeSet::new()
                .with(Write::BackupStrategy(strategy(&t, Some(i2), "lost")))
                .with(Write::DeleteBackupStrategy {
                    tenant_id: t.clone(),
                    instance_id: None,
                })
                .with(insert(&clash)),
        )
        .await;
    assert!(
        matches!(failed, Err(Error::Conflict { .. })),
        "duplicate insert conflicts: {failed:?}"
    );
    assert_eq!(
        mine(store, t.clone(), Some(i2)).await,
        vec![s2.clone()],
        "failed commit kept the old strategy"
    );
    assert_eq!(
        mine(store, t.clone(), None).await.first(),
        Some(&wide),
        "failed commit kept the tenant-wide strategy"
    );
    // Deletes are exact: the tenant-wide one does not take instance ones with it.
    must_commit(
        store,
        ChangeSet::new().with(Write::DeleteBackupStrategy {
            tenant_id: t.clone(),
            instance_id: None,
        }),
        "delete tenant-wide",
    )
    .await;
    assert_eq!(
        mine(store, t.clone(), None).await.len(),
        2,
        "instance strategies stay"
    );
    for instance in [Some(i1), Some(i2), Some(i2)] {
        must_commit(
            store,
            ChangeSet::new().with(Write::DeleteBackupStrategy {
                tenant_id: t.clone(),
                instance_id: instance,
            }),
            "delete (again is harmless)",
        )
        .await;
    }
    assert!(mine(store, t.clone(), None).await.is_empty(), "all gone");
    assert_eq!(
        mine(store, other.clone(), None).await,
        vec![foreign],
        "another tenant's strategy untouched"
    );
}

/// How a call ended, for comparing two stores (errors by kind; quota errors with their sorted resources).
fn outcome<T>(r: &crate::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(Error::QuotaExceeded { resources }) => {
            let mut r = resources.clone();
            r.sort();
            format!("quota {r:?}")
        }
        Err(Error::Conflict { .. }) => "conflict".into(),
        Err(Error::NotFound { .. }) => "not found".into(),
        Err(e) => format!("error: {e}"),
    }
}

/// Differential check: a pseudo-random sequence of `steps` operations (seeded by `seed`) is applied to `store` and
/// to a fresh [`crate::memory::MemoryStore`] (the reference); every call must end the same way and every read
/// must return the same rows. Covers version rules, quota checks, deletes, backups, claims with competing workers
/// and expiring leases, journals and heartbeat batches with duplicates.
pub async fn check_matches_reference(store: &dyn InfraStore, seed: u64, steps: usize) {
    use rand::{Rng, SeedableRng};
    let reference = crate::memory::MemoryStore::new();
    let r: &dyn InfraStore = &reference;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let t = tenant();
    let mut instances: Vec<Uuid> = Vec::new();
    let mut backups: Vec<Uuid> = Vec::new();
    let mut workflows: Vec<Uuid> = Vec::new();
    let workers = ["w1", "w2", "w3"];
    macro_rules! both {
        ($step:expr, $what:expr, |$s:ident| $call:expr) => {{
            let got = {
                let $s = store;
                $call.await
            };
            let want = {
                let $s = r;
                $call.await
            };
            assert_eq!(
                outcome(&got),
                outcome(&want),
                "seed {seed} step {}: {} ended differently",
                $step,
                $what
            );
            (got, want)
        }};
    }
    for step in 0..steps {
        match rng.gen_range(0..10) {
            0 | 1 => {
                let mut i = instance(&t, rng.gen_range(0..3000), None, at(rng.gen_range(0..5)));
                i.volume_size = if rng.gen_bool(0.8) {
                    Some(rng.gen_range(0..15))
                } else {
                    None
                };
                if !instances.is_empty() && rng.gen_bool(0.3) {
                    i.replica_of = Some(instances[rng.gen_range(0..instances.len())]);
                }
                if rng.gen_bool(0.2) {
                    i.cluster_id = Some(Uuid::new_v4());
                }
                let expect = if rng.gen_bool(0.8) {
                    Expect::Absent
                } else {
                    Expect::Any
                };
                instances.push(i.id);
                let mut cs = ChangeSet::new().with(Write::Instance {
                    instance: i,
                    expect,
                });
                if rng.gen_bool(0.7) {
                    cs = cs.check_quota(&t, &Resource::ALL);
                }
                let _ = both!(step, "insert instance", |s| s.commit(cs.clone()));
            }
            2 | 3 if !instances.is_empty() => {
                let id = instances[rng.gen_range(0..instances.len())];
                let (cur, _) = both!(step, "get instance", |s| s.get_instance(id));
                let Some(mut i) = cur.unwrap_or_default() else {
                    continue;
                };
                let expect = match rng.gen_range(0..4) {
                    0 => Expect::Any,
                    1 => Expect::Version(i.version + 1),
                    2 => Expect::Absent,
                    _ => Expect::Version(i.version),
                };
                match rng.gen_range(0..3) {
                    0 => {
                        i.deleted = true;
                        i.deleted_at = Some(at(99));
                    }
                    1 => i.ram_mb = rng.gen_range(0..3000),
                    _ => i.volume_size = Some(rng.gen_range(0..15)),
                }
                let mut cs = ChangeSet::new().with(Write::Instance {
                    instance: i,
                    expect,
                });
                if rng.gen_bool(0.5) {
                    cs = cs.check_quota(&t, &Resource::ALL);
                }
                let _ = both!(step, "update instance", |s| s.commit(cs.clone()));
            }
            4 => {
                let mut b = backup(&t, instances.first().copied(), at(rng.gen_range(0..5)));
                if !backups.is_empty() && rng.gen_bool(0.3) {
                    b.id = backups[rng.gen_range(0..backups.len())];
                    b.deleted = rng.gen_bool(0.5);
                } else {
                    backups.push(b.id);
                }
                let mut cs = ChangeSet::new().with(Write::Backup(b));
                if rng.gen_bool(0.5) {
                    cs = cs.check_quota(&t, &[Resource::Backups]);
                }
                let _ = both!(step, "backup", |s| s.commit(cs.clone()));
            }
            5 => {
                let limits = QuotaLimits {
                    instances: rng.gen_range(-1..8),
                    ram: rng.gen_range(-1..9000),
                    volumes: rng.gen_range(-1..60),
                    backups: rng.gen_range(-1..5),
                };
                let _ = both!(step, "set limits", |s| s.set_quota_limits(&t, &limits));
            }
            6 => {
                let w = workflow(
                    WorkflowKind::new("create"),
                    Uuid::new_v4(),
                    at(rng.gen_range(0..5)),
                );
                workflows.push(w.id);
                let _ = both!(step, "insert workflow", |s| s
                    .commit(ChangeSet::new().with(insert_wf(&w))));
            }
            7 if !workflows.is_empty() => {
                let id = workflows[rng.gen_range(0..workflows.len())];
                let worker = workers[rng.gen_range(0..workers.len())];
                let now = at(rng.gen_range(0..100));
                let until = now + Duration::seconds(rng.gen_range(0..30));
                if rng.gen_bool(0.8) {
                    let _ = both!(step, "claim", |s| s.claim_workflow(id, worker, now, until));
                } else {
                    let (cur, _) = both!(step, "get workflow", |s| s.get_workflow(id));
                    let Some(mut w) = cur.unwrap_or_default() else {
                        continue;
                    };
                    let v = w.version;
                    w.state = [
                        WorkflowState::Running,
                        WorkflowState::Done,
                        WorkflowState::Failed,
                    ][rng.gen_range(0..3)];
                    let expect = if rng.gen_bool(0.8) {
                        Expect::Version(v)
                    } else {
                        Expect::Version(v + 1)
                    };
                    let cs = ChangeSet::new().with(Write::Workflow {
                        workflow: w,
                        expect,
                    });
                    let _ = both!(step, "write workflow", |s| s.commit(cs.clone()));
                }
            }
            8 if !workflows.is_empty() => {
                let e = JournalEntry {
                    workflow_id: workflows[rng.gen_range(0..workflows.len())],
                    step: format!("s{step}"),
                    phase: JournalPhase::Started,
                    data: json!({"step": step}),
                    at: at(rng.gen_range(0..3)),
                };
                let _ = both!(step, "journal", |s| s.append_journal(&e));
            }
            _ if !instances.is_empty() => {
                let n = rng.gen_range(1..20);
                let batch: Vec<_> = (0..n)
                    .map(|k| {
                        let id = instances[rng.gen_range(0..instances.len())];
                        status(
                            id,
                            ServiceStatus::ALL[rng.gen_range(0..ServiceStatus::ALL.len())],
                            at(k),
                        )
                    })
                    .collect();
                let _ = both!(step, "heartbeats", |s| s.put_service_statuses(&batch));
            }
            _ => continue,
        }
    }
    // Every read agrees.
    for include_deleted in [false, true] {
        for include_clustered in [false, true] {
            let f = InstanceFilter {
                tenant_id: Some(t.clone()),
                include_deleted,
                include_clustered,
                ..Default::default()
            };
            let (got, want) = both!(steps, "list instances", |s| s.list_instances(&f));
            assert_eq!(got.ok(), want.ok(), "seed {seed}: list_instances({f:?})");
        }
    }
    for id in &instances {
        let (got, want) = both!(steps, "get instance", |s| s.get_instance(*id));
        assert_eq!(got.ok(), want.ok(), "seed {seed}: instance {id}");
        let f = InstanceFilter {
            replica_of: Some(*id),
            ..InstanceFilter::tenant(&t)
        };
        let (got, want) = both!(steps, "list replicas", |s| s.list_instances(&f));
        assert_eq!(got.ok(), want.ok(), "seed {seed}: replicas of {id}");
    }
    let (got, want) = both!(steps, "usage", |s| s.quota_usage(&t));
    assert_eq!(got.ok(), want.ok(), "seed {seed}: usage");
    let (got, want) = both!(steps, "limits", |s| s.get_quota_limits(&t));
    assert_eq!(got.ok(), want.ok(), "seed {seed}: limits");
    let bf = BackupFilter {
        tenant_id: Some(t.clone()),
        include_deleted: true,
        ..Default::default()
    };
    let (got, want) = both!(steps, "list backups", |s| s.list_backups(&bf));
    assert_eq!(got.ok(), want.ok(), "seed {seed}: backups");
    let (got, want) = both!(steps, "statuses", |s| s.get_service_statuses(&instances));
    let (mut got, mut want) = (got.unwrap_or_default(), want.unwrap_or_default());
    got.sort_by_key(|x| x.instance_id);
    want.sort_by_key(|x| x.instance_id);
    assert_eq!(got, want, "seed {seed}: statuses");
    for id in &workflows {
        let (got, want) = both!(steps, "get workflow", |s| s.get_workflow(*id));
        assert_eq!(got.ok(), want.ok(), "seed {seed}: workflow {id}");
        let (got, want) = both!(steps, "journal", |s| s.journal(*id));
        assert_eq!(got.ok(), want.ok(), "seed {seed}: journal of {id}");
    }
    let (got, want) = both!(steps, "open workflows", |s| s.list_open_workflows());
    let mine = |v: crate::Result<Vec<Workflow>>| -> Vec<Workflow> {
        v.unwrap_or_default()
            .into_iter()
            .filter(|w| workflows.contains(&w.id))
            .collect()
    };
    assert_eq!(mine(got), mine(want), "seed {seed}: open workflows");
}

/// Events: recorded in a commit (again with the same id: replaced, not doubled), listed oldest first, by project
/// and by the instances they concern; a failed commit records none.
pub async fn check_events(store: &dyn InfraStore) {
    use crate::model::{Event, EventFilter};
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (t1_name, t2_name) = (fixtures::tenant(), fixtures::tenant());
    let event = |tenant: &str, instances: Vec<Uuid>, secs: i64, message: &str| Event {
        id: Uuid::new_v4(),
        tenant_id: tenant.into(),
        kind: "failover".into(),
        instances,
        at: fixtures::at(secs),
        ok: true,
        message: message.into(),
        details: serde_json::json!({"positions": [1, 2]}),
    };
    let later = event(&t1_name, vec![a, b], 10, "later");
    let earlier = event(&t1_name, vec![b, c], 5, "earlier");
    let other = event(&t2_name, vec![a], 1, "other project");
    must_commit(
        store,
        ChangeSet::new()
            .with(Write::Event(later.clone()))
            .with(Write::Event(earlier.clone()))
            .with(Write::Event(other.clone())),
        "record events",
    )
    .await;
    let mut again = later.clone();
    again.message = "later, recorded twice".into();
    must_commit(
        store,
        ChangeSet::new().with(Write::Event(again.clone())),
        "record again",
    )
    .await;
    let of = |tenant: Option<&str>, instance: Option<Uuid>| EventFilter {
        tenant_id: tenant.map(str::to_string),
        instance_id: instance,
    };
    let t1 = store.list_events(&of(Some(&t1_name), None)).await.unwrap();
    assert_eq!(
        t1,
        vec![earlier.clone(), again.clone()],
        "oldest first, replaced"
    );
    assert_eq!(
        store
            .list_events(&of(Some(&t1_name), Some(a)))
            .await
            .unwrap(),
        vec![again]
    );
    assert_eq!(
        store
            .list_events(&of(Some(&t1_name), Some(c)))
            .await
            .unwrap(),
        vec![earlier]
    );
    assert_eq!(
        store.list_events(&of(None, Some(a))).await.unwrap().len(),
        2
    );
    // A commit that fails records nothing.
    let lost = event(&t1_name, vec![c], 20, "lost");
    let failed = store
        .commit(
            ChangeSet::new()
                .with(Write::Event(lost))
                .with(Write::Instance {
                    instance: fixtures::instance(&t1_name, 512, None, fixtures::at(0)),
                    expect: Expect::Version(3),
                }),
        )
        .await;
    assert!(
        failed.is_err(),
        "a write at a version of a missing row fails"
    );
    assert_eq!(
        store
            .list_events(&of(Some(&t1_name), Some(c)))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Clusters: insert, versioned update (a stale version is a conflict that writes nothing), listings per project
/// without deleted ones, and members found by cluster id (only with it or `include_clustered`).
pub async fn check_clusters(store: &dyn InfraStore) {
    let t = tenant();
    let cluster = |name: &str, created: i64| crate::model::Cluster {
        id: Uuid::new_v4(),
        tenant_id: t.clone(),
        name: name.into(),
        datastore_version_id: Uuid::new_v4(),
        task: crate::model::ClusterTask::Building,
        locality: None,
        configuration_id: None,
        extended_properties: Default::default(),
        secret: "sealed".into(),
        root: None,
        scaling: None,
        last_scaled: None,
        replicas: Default::default(),
        fault: None,
        deleted: false,
        created: at(created),
        updated: at(created),
        version: 0,
    };
    let (a, b) = (cluster("a", 1), cluster("b", 2));
    for c in [&a, &b] {
        must_commit(
            store,
            ChangeSet::new().with(Write::Cluster {
                cluster: c.clone(),
                expect: Expect::Absent,
            }),
            "insert a cluster",
        )
        .await;
    }
    let again = store
        .commit(ChangeSet::new().with(Write::Cluster {
            cluster: a.clone(),
            expect: Expect::Absent,
        }))
        .await;
    assert_eq!(again.expect_err("a second insert").fault().status, 409);
    let got = store.get_cluster(a.id).await.expect("get").expect("stored");
    assert_eq!((got.name.as_str(), got.version), ("a", 0));
    let mut next = got.clone();
    next.task = crate::model::ClusterTask::None;
    must_commit(
        store,
        ChangeSet::new().with(Write::Cluster {
            cluster: next.clone(),
            expect: Expect::Version(0),
        }),
        "update a cluster at its version",
    )
    .await;
    let stale = store
        .commit(ChangeSet::new().with(Write::Cluster {
            cluster: next.clone(),
            expect: Expect::Version(0),
        }))
        .await;
    assert!(stale.is_err(), "a stale version was accepted");
    let got = store.get_cluster(a.id).await.expect("get").expect("stored");
    assert_eq!(
        (got.task, got.version),
        (crate::model::ClusterTask::None, 1)
    );
    let listed: Vec<Uuid> = store
        .list_clusters(Some(&t))
        .await
        .expect("list")
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, vec![a.id, b.id], "oldest first");
    let mut gone = store.get_cluster(b.id).await.expect("get").expect("b");
    gone.deleted = true;
    must_commit(
        store,
        ChangeSet::new().with(Write::Cluster {
            cluster: gone,
            expect: Expect::Version(0),
        }),
        "delete a cluster",
    )
    .await;
    let listed = store.list_clusters(Some(&t)).await.expect("list");
    assert_eq!(listed.len(), 1, "a deleted cluster is not listed");
    assert!(store
        .list_clusters(None)
        .await
        .expect("all")
        .iter()
        .any(|c| c.id == a.id));
    assert!(
        store.get_cluster(b.id).await.expect("get").is_some(),
        "kept"
    );

    // Members.
    let mut member = instance(&t, 512, Some(1), at(3));
    member.cluster_id = Some(a.id);
    let loner = instance(&t, 512, Some(1), at(4));
    for i in [&member, &loner] {
        must_commit(
            store,
            ChangeSet::new().with(Write::Instance {
                instance: i.clone(),
                expect: Expect::Absent,
            }),
            "insert an instance",
        )
        .await;
    }
    let ids = |v: Vec<Instance>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
    let of_cluster = InstanceFilter {
        tenant_id: Some(t.clone()),
        cluster_id: Some(a.id),
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_instances(&of_cluster).await.expect("members")),
        vec![member.id]
    );
    let plain = InstanceFilter {
        tenant_id: Some(t.clone()),
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_instances(&plain).await.expect("plain")),
        vec![loner.id]
    );
    let other = InstanceFilter {
        cluster_id: Some(b.id),
        ..of_cluster
    };
    assert!(store.list_instances(&other).await.expect("none").is_empty());
}

/// Runs every check against `store` (which may already hold data). Call it from a multi-threaded tokio runtime.
pub async fn run_all(store: Arc<dyn InfraStore>) {
    let s = store.as_ref();
    check_datastores(s).await;
    check_flavors(s).await;
    check_catalog_generation(s).await;
    check_config_params(s).await;
    check_configurations(s).await;
    check_instances(s).await;
    check_expect_conflict_writes_nothing(s).await;
    check_quota_exceeded_writes_nothing(s).await;
    check_derived_usage(s).await;
    check_concurrent_quota(store.clone()).await;
    check_workflow_claims(store.clone()).await;
    check_journal(s).await;
    check_service_statuses(s).await;
    check_sticky_statuses(s).await;
    check_backups(s).await;
    check_root_history(s).await;
    check_backup_strategies(s).await;
    check_backup_schedules(s).await;
    check_events(s).await;
    check_clusters(s).await;
    for seed in 0..4 {
        check_matches_reference(s, seed, 250).await;
    }
}
