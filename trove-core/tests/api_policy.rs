//! Authorization of every `ApiService` operation by its policy rule, walking the rule table:
//!
//! - every enforced rule is checked by at least one operation, and each operation checks the rule it is listed
//!   with (closing that rule with `!` refuses even an admin, with upstream's message naming the rule);
//! - under upstream's defaults, every admin-only rule refuses a project member (403) and lets an admin of the
//!   project through the policy (the admin may still meet a 4xx for the resource's state, never a 403);
//! - the owner rules keep tenant isolation exactly as strict as before: another project's member gets 404.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Map;
use uuid::Uuid;

use trove_core::api::{
    ApiService, BackupQuery, BackupStrategyQuery, ClusterAction, ClusterMemberRequest,
    ConfigParamSpec, CreateBackup, CreateBackupStrategy, CreateCluster, CreateConfiguration,
    CreateInstance, DatastoreVersionPatch, DatastoreVersionSpec, MgmtAction, MgmtInstanceQuery,
    PageRequest, UpdateConfiguration, UpdateInstance, UserRef,
};
use trove_core::memory::{MemoryBus, MemoryStore};
use trove_core::model::{
    Backup, BackupType, DatabaseSpec, Flavor, LogAction, LogActionRequest, ParamType, Secret,
    SslActionBody, UserSpec, UserUpdate,
};
use trove_core::policy::{rules, Entry, Policy, Target};
use trove_core::ports::{ChangeSet, InfraStore, RequestContext, SystemClock, Write};
use trove_core::state::BackupState;
use trove_core::{CoreConfig, Error, Result};

/// What an operation is done on, in the world it runs in.
#[derive(Debug, Clone, Copy)]
struct Ids {
    instance: Uuid,
    configuration: Uuid,
    backup: Uuid,
    version: Uuid,
    cluster: Uuid,
}

/// Whether the operation acts on one resource of a project (so another project's member must get 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Owned,
    Other,
}

type Run = Box<
    dyn Fn(Arc<ApiService>, RequestContext, Ids) -> Pin<Box<dyn Future<Output = Result<()>> + Send>>
        + Send
        + Sync,
>;

struct Op {
    name: &'static str,
    rule: &'static str,
    scope: Scope,
    run: Run,
}

macro_rules! op {
    ($name:literal, $rule:expr, $scope:expr, |$api:ident, $ctx:ident, $ids:ident| $body:expr) => {
        Op {
            name: $name,
            rule: $rule,
            scope: $scope,
            run: Box::new(
                move |$api: Arc<ApiService>, $ctx: RequestContext, $ids: Ids| {
                    Box::pin(async move {
                        let _ = &$ids;
                        $body.await.map(drop)
                    })
                },
            ),
        }
    };
}

fn user() -> UserRef {
    UserRef {
        name: "alice".into(),
        host: "%".into(),
    }
}

fn user_spec() -> UserSpec {
    UserSpec {
        name: "alice".into(),
        password: Secret::new("pw-alice-1"),
        host: None,
        databases: vec![],
    }
}

fn db(name: &str) -> DatabaseSpec {
    DatabaseSpec {
        name: name.into(),
        character_set: None,
        collate: None,
    }
}

fn new_instance() -> CreateInstance {
    CreateInstance {
        name: "made".into(),
        flavor_ref: Some("1".into()),
        volume_size: Some(1),
        datastore: Some("mysql".into()),
        ..Default::default()
    }
}

fn new_cluster() -> CreateCluster {
    CreateCluster {
        name: "c1".into(),
        datastore: "mysql".into(),
        datastore_version: "5.7".into(),
        instances: vec![
            ClusterMemberRequest {
                flavor_ref: Some("1".into()),
                volume_size: Some(1),
                ..Default::default()
            };
            3
        ],
        ..Default::default()
    }
}

fn param() -> ConfigParamSpec {
    ConfigParamSpec {
        name: "max_connections".into(),
        data_type: ParamType::Integer,
        restart_required: false,
        min: None,
        max: None,
    }
}

fn flavor(id: &str) -> Flavor {
    Flavor {
        id: id.into(),
        name: format!("f{id}"),
        ram_mb: 256,
        vcpus: 1,
        disk_gb: 1,
        ephemeral_gb: 0,
    }
}

/// Every operation of the API with the rule it is checked under.
fn operations() -> Vec<Op> {
    use Scope::{Other, Owned};
    let page = || PageRequest::new(20, None);
    vec![
        // instances
        op!(
            "create instance",
            rules::INSTANCE_CREATE,
            Other,
            |a, c, i| a.create_instance(&c, new_instance())
        ),
        op!(
            "create instance with a configuration",
            rules::INSTANCE_UPDATE,
            Other,
            |a, c, i| a.create_instance(
                &c,
                CreateInstance {
                    configuration: Some(i.configuration),
                    ..new_instance()
                }
            )
        ),
        op!(
            "create instance with users",
            rules::USER_CREATE,
            Other,
            |a, c, i| a.create_instance(
                &c,
                CreateInstance {
                    users: vec![user_spec()],
                    ..new_instance()
                }
            )
        ),
        op!(
            "create instance with databases",
            rules::DATABASE_CREATE,
            Other,
            |a, c, i| a.create_instance(
                &c,
                CreateInstance {
                    databases: vec![db("shop")],
                    ..new_instance()
                }
            )
        ),
        op!("list instances", rules::INSTANCE_INDEX, Other, |a, c, i| a
            .list_instances(&c, false)),
        op!(
            "list instances, a page",
            rules::INSTANCE_INDEX,
            Other,
            |a, c, i| a.list_instances_page(&c, false, &page())
        ),
        op!(
            "list instances detailed",
            rules::INSTANCE_DETAIL,
            Other,
            |a, c, i| a.list_instances_detail_page(&c, false, &page())
        ),
        op!("show instance", rules::INSTANCE_SHOW, Owned, |a, c, i| a
            .show_instance(&c, i.instance)),
        op!(
            "update instance",
            rules::INSTANCE_UPDATE,
            Owned,
            |a, c, i| a.update_instance(
                &c,
                i.instance,
                UpdateInstance {
                    name: Some("renamed".into()),
                    ..Default::default()
                }
            )
        ),
        op!(
            "delete instance",
            rules::INSTANCE_DELETE,
            Owned,
            |a, c, i| a.delete_instance(&c, i.instance)
        ),
        op!(
            "force delete instance",
            rules::INSTANCE_FORCE_DELETE,
            Owned,
            |a, c, i| a.force_delete_instance(&c, i.instance)
        ),
        op!(
            "instance configuration",
            rules::INSTANCE_CONFIGURATION,
            Owned,
            |a, c, i| a.instance_configuration(&c, i.instance)
        ),
        // actions
        op!("restart", rules::INSTANCE_RESTART, Owned, |a, c, i| a
            .restart_instance(&c, i.instance)),
        op!(
            "resize flavor",
            rules::INSTANCE_RESIZE_FLAVOR,
            Owned,
            |a, c, i| a.resize_flavor(&c, i.instance, "2")
        ),
        op!(
            "resize volume",
            rules::INSTANCE_RESIZE_VOLUME,
            Owned,
            |a, c, i| a.resize_volume(&c, i.instance, 2)
        ),
        op!(
            "reset status",
            rules::INSTANCE_RESET_STATUS,
            Owned,
            |a, c, i| a.reset_status(&c, i.instance)
        ),
        op!("promote", rules::INSTANCE_PROMOTE, Owned, |a, c, i| a
            .promote_to_replica_source(&c, i.instance)),
        op!("eject", rules::INSTANCE_EJECT, Owned, |a, c, i| a
            .eject_replica_source(&c, i.instance)),
        // guest logs, ssl
        op!(
            "list logs",
            rules::INSTANCE_GUEST_LOG_LIST,
            Owned,
            |a, c, i| a.list_guest_logs(&c, i.instance)
        ),
        op!(
            "log action",
            rules::INSTANCE_GUEST_LOG_ACTION,
            Owned,
            |a, c, i| a.guest_log_action(
                &c,
                i.instance,
                LogActionRequest::new("general", LogAction::Show)
            )
        ),
        op!("ssl show", rules::INSTANCE_SHOW, Owned, |a, c, i| a
            .ssl_show(&c, i.instance, false)),
        op!("ssl action", rules::INSTANCE_UPDATE, Owned, |a, c, i| a
            .ssl_action(
                &c,
                i.instance,
                SslActionBody {
                    disable: Some(true),
                    ..Default::default()
                }
            )),
        // root
        op!("root show", rules::ROOT_INDEX, Owned, |a, c, i| a
            .root_show(&c, i.instance)),
        op!("root enable", rules::ROOT_CREATE, Owned, |a, c, i| a
            .root_enable(&c, i.instance, None)),
        op!("root disable", rules::ROOT_DELETE, Owned, |a, c, i| a
            .root_disable(&c, i.instance)),
        // users
        op!("list users", rules::USER_INDEX, Owned, |a, c, i| a
            .list_users(&c, i.instance)),
        op!("list users, a page", rules::USER_INDEX, Owned, |a, c, i| a
            .list_users_page(&c, i.instance, &page())),
        op!("create users", rules::USER_CREATE, Owned, |a, c, i| a
            .create_users(&c, i.instance, vec![user_spec()])),
        op!("show user", rules::USER_SHOW, Owned, |a, c, i| a.show_user(
            &c,
            i.instance,
            &user()
        )),
        op!("update user", rules::USER_UPDATE, Owned, |a, c, i| a
            .update_user(
                &c,
                i.instance,
                &user(),
                UserUpdate {
                    password: Some(Secret::new("pw-new-2")),
                    ..Default::default()
                }
            )),
        op!("delete user", rules::USER_DELETE, Owned, |a, c, i| a
            .delete_user(&c, i.instance, &user())),
        op!(
            "change passwords",
            rules::USER_UPDATE_ALL,
            Owned,
            |a, c, i| a.change_passwords(&c, i.instance, vec![user_spec()])
        ),
        op!(
            "list user access",
            rules::USER_ACCESS_INDEX,
            Owned,
            |a, c, i| a.list_user_access(&c, i.instance, &user())
        ),
        op!(
            "grant user access",
            rules::USER_ACCESS_UPDATE,
            Owned,
            |a, c, i| a.grant_user_access(&c, i.instance, &user(), vec!["shop".into()])
        ),
        op!(
            "revoke user access",
            rules::USER_ACCESS_DELETE,
            Owned,
            |a, c, i| a.revoke_user_access(&c, i.instance, &user(), "shop")
        ),
        // databases
        op!("list databases", rules::DATABASE_INDEX, Owned, |a, c, i| a
            .list_databases(&c, i.instance)),
        op!(
            "create databases",
            rules::DATABASE_CREATE,
            Owned,
            |a, c, i| a.create_databases(&c, i.instance, vec![db("shop")])
        ),
        op!(
            "delete database",
            rules::DATABASE_DELETE,
            Owned,
            |a, c, i| a.delete_database(&c, i.instance, "shop")
        ),
        // clusters
        op!("create cluster", rules::CLUSTER_CREATE, Other, |a, c, i| a
            .create_cluster(&c, new_cluster())),
        op!("list clusters", rules::CLUSTER_INDEX, Other, |a, c, i| a
            .list_clusters(&c)),
        op!("show cluster", rules::CLUSTER_SHOW, Owned, |a, c, i| a
            .show_cluster(&c, i.cluster)),
        op!(
            "show a cluster member",
            rules::CLUSTER_SHOW_INSTANCE,
            Owned,
            |a, c, i| a.show_cluster_instance(&c, i.cluster, i.instance)
        ),
        op!(
            "enable cluster root",
            rules::CLUSTER_ROOT_CREATE,
            Owned,
            |a, c, i| a.cluster_root_enable(&c, i.cluster, None)
        ),
        op!(
            "show cluster root",
            rules::CLUSTER_ROOT_INDEX,
            Owned,
            |a, c, i| a.cluster_root_show(&c, i.cluster)
        ),
        op!("delete cluster", rules::CLUSTER_DELETE, Owned, |a, c, i| a
            .delete_cluster(&c, i.cluster)),
        op!("shrink cluster", rules::CLUSTER_ACTION, Owned, |a, c, i| a
            .cluster_action(
                &c,
                i.cluster,
                ClusterAction::Shrink(vec![i.instance])
            )),
        op!(
            "reset cluster status",
            rules::CLUSTER_RESET_STATUS,
            Owned,
            |a, c, i| a.cluster_action(
                &c,
                i.cluster,
                ClusterAction::ResetStatus {
                    force_delete: false
                }
            )
        ),
        op!(
            "force delete cluster",
            rules::CLUSTER_FORCE_DELETE,
            Owned,
            |a, c, i| a.cluster_action(
                &c,
                i.cluster,
                ClusterAction::ResetStatus { force_delete: true }
            )
        ),
        // backups
        op!(
            "instance backups",
            rules::INSTANCE_BACKUPS,
            Owned,
            |a, c, i| a.instance_backups(&c, i.instance)
        ),
        op!("list backups", rules::BACKUP_INDEX, Other, |a, c, i| a
            .list_backups(&c, BackupQuery::default())),
        op!(
            "list every project's backups",
            rules::BACKUP_INDEX_ALL_PROJECTS,
            Other,
            |a, c, i| a.list_backups(
                &c,
                BackupQuery {
                    all_projects: true,
                    ..Default::default()
                }
            )
        ),
        op!(
            "list another project's backups",
            rules::BACKUP_INDEX_ALL_PROJECTS,
            Other,
            |a, c, i| a.list_backups(
                &c,
                BackupQuery {
                    project_id: Some("p9".into()),
                    ..Default::default()
                }
            )
        ),
        op!("create backup", rules::BACKUP_CREATE, Other, |a, c, i| a
            .create_backup(
                &c,
                CreateBackup {
                    name: "b".into(),
                    instance: Some(i.instance),
                    ..Default::default()
                }
            )),
        op!("show backup", rules::BACKUP_SHOW, Owned, |a, c, i| a
            .show_backup(&c, i.backup)),
        op!("delete backup", rules::BACKUP_DELETE, Owned, |a, c, i| a
            .delete_backup(&c, i.backup)),
        op!(
            "create backup strategy",
            rules::BACKUP_STRATEGY_CREATE,
            Other,
            |a, c, i| a.create_backup_strategy(
                &c,
                CreateBackupStrategy {
                    instance_id: None,
                    container: "c1".into()
                }
            )
        ),
        op!(
            "list backup strategies",
            rules::BACKUP_STRATEGY_INDEX,
            Other,
            |a, c, i| a.list_backup_strategies(&c, BackupStrategyQuery::default())
        ),
        op!(
            "delete backup strategy",
            rules::BACKUP_STRATEGY_DELETE,
            Other,
            |a, c, i| a.delete_backup_strategy(&c, BackupStrategyQuery::default())
        ),
        // configuration groups
        op!(
            "list configurations",
            rules::CONFIGURATION_INDEX,
            Other,
            |a, c, i| a.list_configurations(&c)
        ),
        op!(
            "create configuration",
            rules::CONFIGURATION_CREATE,
            Other,
            |a, c, i| a.create_configuration(
                &c,
                CreateConfiguration {
                    name: "g2".into(),
                    datastore: Some("mysql".into()),
                    ..Default::default()
                }
            )
        ),
        op!(
            "show configuration",
            rules::CONFIGURATION_SHOW,
            Owned,
            |a, c, i| a.show_configuration(&c, i.configuration)
        ),
        op!(
            "update configuration",
            rules::CONFIGURATION_UPDATE,
            Owned,
            |a, c, i| a.update_configuration(
                &c,
                i.configuration,
                UpdateConfiguration {
                    name: Some("g3".into()),
                    ..Default::default()
                }
            )
        ),
        op!(
            "patch configuration",
            rules::CONFIGURATION_EDIT,
            Owned,
            |a, c, i| a.patch_configuration(&c, i.configuration, Map::new())
        ),
        op!(
            "delete configuration",
            rules::CONFIGURATION_DELETE,
            Owned,
            |a, c, i| a.delete_configuration(&c, i.configuration)
        ),
        op!(
            "configuration instances",
            rules::CONFIGURATION_INSTANCES,
            Owned,
            |a, c, i| a.configuration_instances(&c, i.configuration)
        ),
        // datastores, parameters, flavors, limits
        op!(
            "list datastores",
            rules::DATASTORE_INDEX,
            Other,
            |a, c, i| a.list_datastores(&c)
        ),
        op!("show datastore", rules::DATASTORE_SHOW, Other, |a, c, i| a
            .show_datastore(&c, "mysql")),
        op!(
            "delete datastore",
            rules::DATASTORE_DELETE,
            Other,
            |a, c, i| a.delete_datastore(&c, "mysql")
        ),
        op!(
            "list versions",
            rules::DATASTORE_VERSION_INDEX,
            Other,
            |a, c, i| a.list_datastore_versions(&c, "mysql")
        ),
        op!(
            "show version",
            rules::DATASTORE_VERSION_SHOW,
            Other,
            |a, c, i| a.show_datastore_version(&c, "mysql", "5.7")
        ),
        op!(
            "show version by id",
            rules::DATASTORE_VERSION_SHOW_BY_UUID,
            Other,
            |a, c, i| a.show_datastore_version_by_id(&c, i.version)
        ),
        op!(
            "version flavors",
            rules::DATASTORE_FLAVORS,
            Other,
            |a, c, i| a.list_version_flavors(&c, "mysql", "5.7")
        ),
        op!(
            "version volume types",
            rules::DATASTORE_VOLUME_TYPES,
            Other,
            |a, c, i| a.list_version_volume_types(&c, "mysql", "5.7")
        ),
        op!(
            "list parameters",
            rules::PARAMETER_INDEX,
            Other,
            |a, c, i| a.list_parameters(&c, "mysql", "5.7")
        ),
        op!("show parameter", rules::PARAMETER_SHOW, Other, |a, c, i| a
            .show_parameter(&c, "mysql", "5.7", "max_connections")),
        op!(
            "list parameters by version",
            rules::PARAMETER_INDEX_BY_VERSION,
            Other,
            |a, c, i| a.list_parameters_by_version(&c, i.version)
        ),
        op!(
            "show parameter by version",
            rules::PARAMETER_SHOW_BY_VERSION,
            Other,
            |a, c, i| a.show_parameter_by_version(&c, i.version, "max_connections")
        ),
        op!("list flavors", rules::FLAVOR_INDEX, Other, |a, c, i| a
            .list_flavors(&c)),
        op!("show flavor", rules::FLAVOR_SHOW, Other, |a, c, i| a
            .show_flavor(&c, "1")),
        op!("limits", rules::LIMITS_INDEX, Other, |a, c, i| a.limits(&c)),
        // mgmt
        op!(
            "show own quota",
            rules::MGMT_QUOTA_SHOW,
            Other,
            |a, c, i| a.show_quota(&c, "p1")
        ),
        op!(
            "update quota",
            rules::MGMT_QUOTA_UPDATE,
            Other,
            |a, c, i| a.update_quota(&c, "p1", BTreeMap::from([("instances".to_string(), 9)]))
        ),
        op!(
            "mgmt list instances",
            rules::MGMT_INSTANCE_INDEX,
            Other,
            |a, c, i| a.mgmt_list_instances(&c, MgmtInstanceQuery::default())
        ),
        op!(
            "mgmt list instances, a page",
            rules::MGMT_INSTANCE_INDEX,
            Other,
            |a, c, i| a.mgmt_list_instances_page(&c, MgmtInstanceQuery::default(), &page())
        ),
        op!(
            "mgmt show instance",
            rules::MGMT_INSTANCE_SHOW,
            Other,
            |a, c, i| a.mgmt_show_instance(&c, i.instance)
        ),
        op!("mgmt stop", rules::MGMT_INSTANCE_STOP, Other, |a, c, i| a
            .mgmt_instance_action(&c, i.instance, MgmtAction::Stop)),
        op!(
            "mgmt reboot",
            rules::MGMT_INSTANCE_REBOOT,
            Other,
            |a, c, i| a.mgmt_instance_action(&c, i.instance, MgmtAction::Reboot)
        ),
        op!(
            "mgmt reset task status",
            rules::MGMT_INSTANCE_RESET_TASK_STATUS,
            Other,
            |a, c, i| a.mgmt_instance_action(&c, i.instance, MgmtAction::ResetTaskStatus)
        ),
        op!(
            "mgmt migrate",
            rules::MGMT_INSTANCE_MIGRATE,
            Other,
            |a, c, i| a.mgmt_instance_action(&c, i.instance, MgmtAction::Migrate { host: None })
        ),
        op!(
            "mgmt rebuild",
            rules::MGMT_INSTANCE_REBUILD,
            Other,
            |a, c, i| a.mgmt_instance_action(
                &c,
                i.instance,
                MgmtAction::Rebuild {
                    image_id: "img".into()
                }
            )
        ),
        op!(
            "mgmt rpc ping",
            rules::MGMT_INSTANCE_RPC_PING,
            Other,
            |a, c, i| a.mgmt_rpc_ping(&c, i.instance)
        ),
        op!(
            "mgmt root history",
            rules::MGMT_INSTANCE_ROOT,
            Other,
            |a, c, i| a.mgmt_root_history(&c, i.instance)
        ),
        op!(
            "mgmt list versions",
            rules::MGMT_DATASTORE_VERSION_INDEX,
            Other,
            |a, c, i| a.mgmt_list_datastore_versions(&c)
        ),
        op!(
            "mgmt create version",
            rules::MGMT_DATASTORE_VERSION_CREATE,
            Other,
            |a, c, i| a.mgmt_create_datastore_version(
                &c,
                DatastoreVersionSpec {
                    datastore_name: "mysql".into(),
                    name: "8.0".into(),
                    manager: "mysql".into(),
                    active: true,
                    ..Default::default()
                }
            )
        ),
        op!(
            "mgmt show version",
            rules::MGMT_DATASTORE_VERSION_SHOW,
            Other,
            |a, c, i| a.mgmt_show_datastore_version(&c, i.version)
        ),
        op!(
            "mgmt update version",
            rules::MGMT_DATASTORE_VERSION_UPDATE,
            Other,
            |a, c, i| a.mgmt_update_datastore_version(
                &c,
                i.version,
                DatastoreVersionPatch {
                    packages: Some("p".into()),
                    ..Default::default()
                }
            )
        ),
        op!(
            "mgmt delete version",
            rules::MGMT_DATASTORE_VERSION_DELETE,
            Other,
            |a, c, i| a.mgmt_delete_datastore_version(&c, i.version)
        ),
        op!(
            "mgmt list parameters",
            rules::MGMT_PARAMETER_INDEX,
            Other,
            |a, c, i| a.mgmt_list_parameters(&c, i.version)
        ),
        op!(
            "mgmt create parameter",
            rules::MGMT_PARAMETER_CREATE,
            Other,
            |a, c, i| a.mgmt_create_parameter(
                &c,
                i.version,
                ConfigParamSpec {
                    name: "wait_timeout".into(),
                    ..param()
                }
            )
        ),
        op!(
            "mgmt show parameter",
            rules::MGMT_PARAMETER_SHOW,
            Other,
            |a, c, i| a.mgmt_show_parameter(&c, i.version, "max_connections")
        ),
        op!(
            "mgmt update parameter",
            rules::MGMT_PARAMETER_UPDATE,
            Other,
            |a, c, i| a.mgmt_update_parameter(&c, i.version, "max_connections", param())
        ),
        op!(
            "mgmt delete parameter",
            rules::MGMT_PARAMETER_DELETE,
            Other,
            |a, c, i| a.mgmt_delete_parameter(&c, i.version, "max_connections")
        ),
        op!("put flavor", rules::MGMT_FLAVOR_CREATE, Other, |a, c, i| a
            .mgmt_put_flavor(&c, flavor("7"))),
        op!(
            "delete flavor",
            rules::MGMT_FLAVOR_DELETE,
            Other,
            |a, c, i| a.mgmt_delete_flavor(&c, "2")
        ),
    ]
}

fn member(project: &str) -> RequestContext {
    RequestContext {
        tenant_id: project.into(),
        user_id: format!("{project}-user"),
        roles: vec!["member".into()],
    }
}

fn admin_of(project: &str) -> RequestContext {
    RequestContext {
        tenant_id: project.into(),
        user_id: format!("{project}-admin"),
        roles: vec!["admin".into()],
    }
}

/// A fresh in-memory world: mysql 5.7 (with one parameter), flavors 1 and 2, and in project p1 an instance
/// (BUILD: nothing runs its workflow), a configuration group and a completed backup. Answers the services over
/// the same store under `policy`, and the ids.
async fn world(policies: &[Arc<Policy>]) -> (Vec<Arc<ApiService>>, Ids) {
    let config = CoreConfig {
        agent_call_low_timeout: Duration::from_millis(50),
        agent_call_high_timeout: Duration::from_millis(50),
        ..CoreConfig::default()
    };
    let store = Arc::new(MemoryStore::new());
    let bus = Arc::new(MemoryBus::new());
    let api = |p: &Arc<Policy>| {
        Arc::new(
            ApiService::new(
                store.clone(),
                bus.clone(),
                Arc::new(SystemClock),
                config.clone(),
            )
            .with_policy(p.clone()),
        )
    };
    let setup = api(&Arc::new(Policy::default()));
    let root = admin_of("ops");
    let v = setup
        .mgmt_create_datastore_version(
            &root,
            DatastoreVersionSpec {
                datastore_name: "mysql".into(),
                name: "5.7".into(),
                manager: "mysql".into(),
                active: true,
                default: true,
                ..Default::default()
            },
        )
        .await
        .expect("version");
    setup
        .mgmt_create_parameter(&root, v.version.id, param())
        .await
        .expect("parameter");
    for id in ["1", "2"] {
        setup
            .mgmt_put_flavor(&root, flavor(id))
            .await
            .expect("flavor");
    }
    let p1 = member("p1");
    let inst = setup
        .create_instance(&p1, new_instance())
        .await
        .expect("instance");
    let cfg = setup
        .create_configuration(
            &p1,
            CreateConfiguration {
                name: "g1".into(),
                datastore: Some("mysql".into()),
                ..Default::default()
            },
        )
        .await
        .expect("configuration");
    let now = Utc::now();
    let backup = Backup {
        id: Uuid::new_v4(),
        tenant_id: "p1".into(),
        instance_id: Some(inst.instance.id),
        name: "b1".into(),
        description: None,
        state: BackupState::Completed,
        size: Some(0.1),
        location: Some("database_backups/b1".into()),
        checksum: None,
        parent_id: None,
        backup_type: BackupType::Full,
        datastore_version_id: v.version.id,
        created: now,
        updated: now,
        deleted: false,
        bytes: None,
        position: None,
        fault: None,
        container: None,
        purged: false,
        schedule_id: None,
    };
    store
        .commit(ChangeSet::new().with(Write::Backup(backup.clone())))
        .await
        .expect("backup");
    let cluster = trove_core::model::Cluster {
        id: Uuid::new_v4(),
        tenant_id: "p1".into(),
        name: "c1".into(),
        datastore_version_id: v.version.id,
        task: trove_core::model::ClusterTask::None,
        locality: None,
        configuration_id: None,
        extended_properties: Map::new(),
        secret: String::new(),
        root: None,
        scaling: None,
        last_scaled: None,
        replicas: Default::default(),
        fault: None,
        deleted: false,
        created: now,
        updated: now,
        version: 0,
    };
    store
        .commit(ChangeSet::new().with(Write::Cluster {
            cluster: cluster.clone(),
            expect: trove_core::ports::Expect::Absent,
        }))
        .await
        .expect("cluster");
    let ids = Ids {
        instance: inst.instance.id,
        configuration: cfg.configuration.id,
        backup: backup.id,
        version: v.version.id,
        cluster: cluster.id,
    };
    (policies.iter().map(api).collect(), ids)
}

fn is_policy_refusal(r: &Result<()>, rule: &str) -> bool {
    matches!(r, Err(Error::Forbidden { message })
        if message == &format!("Policy doesn't allow {rule} to be performed."))
}

/// The rules the defaults refuse to a member on their own project and allow an admin.
fn admin_only() -> BTreeSet<&'static str> {
    let p = Policy::default();
    rules::ENFORCED
        .iter()
        .copied()
        .filter(|r| {
            !p.allows(r, &member("p1"), &Target::project("p1"))
                && p.allows(r, &admin_of("p1"), &Target::project("p1"))
        })
        .collect()
}

#[test]
fn the_rule_table_and_the_operations_cover_each_other() {
    let ops = operations();
    for rule in rules::ENFORCED {
        if *rule == rules::CONTEXT_IS_ADMIN {
            continue; // judged through is_admin, below
        }
        assert!(
            ops.iter().any(|o| o.rule == *rule),
            "no operation exercises {rule}"
        );
    }
    for d in rules::DEFAULTS.iter().filter(|d| !d.routes.is_empty()) {
        assert!(
            rules::ENFORCED.contains(&d.name),
            "{} guards routes {:?} but nothing enforces it",
            d.name,
            d.routes
        );
    }
    // Upstream's admin-only defaults, and ours for the mgmt routes.
    let want: BTreeSet<&str> = [
        rules::INSTANCE_RESET_STATUS,
        rules::BACKUP_INDEX_ALL_PROJECTS,
        rules::DATASTORE_DELETE,
        rules::MGMT_QUOTA_UPDATE,
        rules::MGMT_INSTANCE_INDEX,
        rules::MGMT_INSTANCE_SHOW,
        rules::MGMT_INSTANCE_STOP,
        rules::MGMT_INSTANCE_REBOOT,
        rules::MGMT_INSTANCE_RESET_TASK_STATUS,
        rules::MGMT_INSTANCE_MIGRATE,
        rules::MGMT_INSTANCE_REBUILD,
        rules::MGMT_INSTANCE_RPC_PING,
        rules::MGMT_INSTANCE_ROOT,
        rules::MGMT_DATASTORE_VERSION_INDEX,
        rules::MGMT_DATASTORE_VERSION_CREATE,
        rules::MGMT_DATASTORE_VERSION_SHOW,
        rules::MGMT_DATASTORE_VERSION_UPDATE,
        rules::MGMT_DATASTORE_VERSION_DELETE,
        rules::MGMT_PARAMETER_INDEX,
        rules::MGMT_PARAMETER_CREATE,
        rules::MGMT_PARAMETER_SHOW,
        rules::MGMT_PARAMETER_UPDATE,
        rules::MGMT_PARAMETER_DELETE,
        rules::MGMT_FLAVOR_CREATE,
        rules::MGMT_FLAVOR_DELETE,
        rules::CLUSTER_RESET_STATUS,
        rules::CONTEXT_IS_ADMIN,
    ]
    .into_iter()
    .collect();
    assert_eq!(admin_only(), want);
}

#[tokio::test]
async fn each_operation_checks_its_rule() {
    for op in operations() {
        // Closed with "!": even an admin of the project is refused, by this rule.
        let closed = Arc::new(
            Policy::with_overrides(vec![Entry {
                name: op.rule.into(),
                check: "!".into(),
                line: 1,
            }])
            .expect("policy"),
        );
        let (apis, ids) = world(&[closed]).await;
        let r = (op.run)(apis[0].clone(), admin_of("p1"), ids).await;
        assert!(
            is_policy_refusal(&r, op.rule),
            "{} with {} closed: {r:?}",
            op.name,
            op.rule
        );
    }
}

#[tokio::test]
async fn admin_only_rules_refuse_members_and_let_admins_through() {
    let admin_only = admin_only();
    let mut seen = BTreeSet::new();
    for op in operations()
        .into_iter()
        .filter(|o| admin_only.contains(o.rule))
    {
        seen.insert(op.rule);
        let (apis, ids) = world(&[Arc::new(Policy::default())]).await;
        let r = (op.run)(apis[0].clone(), member("p1"), ids).await;
        assert!(
            is_policy_refusal(&r, op.rule),
            "{} by a member: {r:?}",
            op.name
        );
        let r = (op.run)(apis[0].clone(), admin_of("p1"), ids).await;
        assert!(
            !matches!(r, Err(Error::Forbidden { .. })),
            "{} by an admin: {r:?}",
            op.name
        );
    }
    let mut want = admin_only;
    want.remove(rules::CONTEXT_IS_ADMIN);
    assert_eq!(seen, want, "every admin-only rule was exercised");
}

#[tokio::test]
async fn owner_rules_let_members_through_and_hide_other_projects() {
    let admin_only = admin_only();
    for op in operations()
        .into_iter()
        .filter(|o| !admin_only.contains(o.rule))
    {
        let (apis, ids) = world(&[Arc::new(Policy::default())]).await;
        let r = (op.run)(apis[0].clone(), member("p1"), ids).await;
        assert!(
            !matches!(r, Err(Error::Forbidden { .. })),
            "{} by the owner's member: {r:?}",
            op.name
        );
        if op.scope == Scope::Owned {
            let r = (op.run)(apis[0].clone(), member("p2"), ids).await;
            assert!(
                matches!(r, Err(Error::NotFound { .. })),
                "{} by another project's member must be 404: {r:?}",
                op.name
            );
            // An admin of another project reaches the instance, as upstream (which skips the project check for
            // admins when it loads an instance); other projects' backups, configuration groups and clusters stay
            // hidden.
            let r = (op.run)(apis[0].clone(), admin_of("p2"), ids).await;
            if op.rule.starts_with("instance:") {
                assert!(
                    !matches!(r, Err(Error::NotFound { .. } | Error::Forbidden { .. })),
                    "{} by another project's admin: {r:?}",
                    op.name
                );
            } else {
                assert!(
                    matches!(r, Err(Error::NotFound { .. })),
                    "{} by another project's admin: {r:?}",
                    op.name
                );
            }
        }
    }
}

#[tokio::test]
async fn reset_status_is_for_admins_unless_the_operator_opens_it() {
    let opened = Arc::new(
        Policy::from_policy_file("\"instance:reset_status\": \"rule:admin_or_owner\"\n")
            .expect("policy"),
    );
    let (apis, ids) = world(&[Arc::new(Policy::default()), opened]).await;
    let (upstream, opened) = (&apis[0], &apis[1]);
    let e = upstream
        .reset_status(&member("p1"), ids.instance)
        .await
        .expect_err("a member may not reset");
    assert_eq!(e.fault().status, 403);
    assert_eq!(
        e.to_string(),
        "Policy doesn't allow instance:reset_status to be performed."
    );
    upstream
        .reset_status(&admin_of("p1"), ids.instance)
        .await
        .expect("an admin may");
    opened
        .reset_status(&member("p1"), ids.instance)
        .await
        .expect("opened to members");
    // Opened to owners, still not to another project (404 as before).
    let e = opened
        .reset_status(&member("p2"), ids.instance)
        .await
        .expect_err("other project");
    assert_eq!(e.fault().status, 404);
    // force_delete is upstream's own rule (admin_or_owner): a member may still force-delete.
    upstream
        .force_delete_instance(&member("p1"), ids.instance)
        .await
        .expect("force delete by the owner");
}
