//! The rule names the API enforces and their defaults: upstream Trove's rules with upstream's default check
//! strings, plus rules of our own (origin [`Origin::TroveRs`]) for the routes upstream guards without a policy
//! rule (the mgmt routes, which upstream limits to admins; the guest-log action, which upstream only limits to
//! the instance's project).
//!
//! Upstream rules for what this service does not offer (modules) are listed too, so that a policy file
//! written for upstream Trove loads unchanged.

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Defined by upstream Trove, with upstream's default.
    Upstream,
    /// Defined here, for a route upstream guards without a policy rule.
    TroveRs,
}

/// One rule and its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleDefault {
    /// The rule's name, as a policy file names it.
    pub name: &'static str,
    /// The default check string.
    pub check: &'static str,
    /// The routes (below `/v1.0/{tenant}`) it guards; empty for base rules and for what is not offered.
    pub routes: &'static [&'static str],
    /// Where the rule comes from.
    pub origin: Origin,
}

macro_rules! rule_names {
    ($($(#[$doc:meta])* $konst:ident = $name:literal;)*) => {
        $($(#[$doc])* pub const $konst: &str = $name;)*
        /// Every rule name the API enforces (each has a default in [`DEFAULTS`]).
        pub const ENFORCED: &[&str] = &[$($konst),*];
    };
}

rule_names! {
    /// Base rule: whether the caller is an admin (upstream `context_is_admin`).
    CONTEXT_IS_ADMIN = "context_is_admin";
    /// `POST /instances`.
    INSTANCE_CREATE = "instance:create";
    /// `DELETE /instances/{id}`.
    INSTANCE_DELETE = "instance:delete";
    /// `POST /instances/{id}/action {"reset_status": {"force_delete": ...}}`.
    INSTANCE_FORCE_DELETE = "instance:force_delete";
    /// `GET /instances`.
    INSTANCE_INDEX = "instance:index";
    /// `GET /instances/detail`.
    INSTANCE_DETAIL = "instance:detail";
    /// `GET /instances/{id}`, `GET /instances/{id}/ssl`.
    INSTANCE_SHOW = "instance:show";
    /// `PUT`/`PATCH /instances/{id}`, `POST /instances/{id}/ssl`; `POST /instances` with a configuration.
    INSTANCE_UPDATE = "instance:update";
    /// `POST /instances/{id}/action {"restart": {}}`.
    INSTANCE_RESTART = "instance:restart";
    /// `POST /instances/{id}/action {"resize": {"volume": ...}}`.
    INSTANCE_RESIZE_VOLUME = "instance:resize_volume";
    /// `POST /instances/{id}/action {"resize": {"flavorRef": ...}}`.
    INSTANCE_RESIZE_FLAVOR = "instance:resize_flavor";
    /// `POST /instances/{id}/action {"reset_status": {}}`.
    INSTANCE_RESET_STATUS = "instance:reset_status";
    /// `POST /instances/{id}/action {"promote_to_replica_source": {}}`.
    INSTANCE_PROMOTE = "instance:promote_to_replica_source";
    /// `POST /instances/{id}/action {"eject_replica_source": {}}`.
    INSTANCE_EJECT = "instance:eject_replica_source";
    /// `GET /instances/{id}/configuration`.
    INSTANCE_CONFIGURATION = "instance:configuration";
    /// `GET /instances/{id}/log`.
    INSTANCE_GUEST_LOG_LIST = "instance:guest_log_list";
    /// `POST /instances/{id}/log` (ours: upstream has no rule for it).
    INSTANCE_GUEST_LOG_ACTION = "instance:guest_log_action";
    /// `GET /instances/{id}/backups`.
    INSTANCE_BACKUPS = "instance:backups";
    /// `POST /instances/{id}/root`.
    ROOT_CREATE = "instance:extension:root:create";
    /// `DELETE /instances/{id}/root`.
    ROOT_DELETE = "instance:extension:root:delete";
    /// `GET /instances/{id}/root`.
    ROOT_INDEX = "instance:extension:root:index";
    /// `POST /instances/{id}/users`; `POST /instances` with users.
    USER_CREATE = "instance:extension:user:create";
    /// `DELETE /instances/{id}/users/{user}`.
    USER_DELETE = "instance:extension:user:delete";
    /// `GET /instances/{id}/users`.
    USER_INDEX = "instance:extension:user:index";
    /// `GET /instances/{id}/users/{user}`.
    USER_SHOW = "instance:extension:user:show";
    /// `PUT /instances/{id}/users/{user}`.
    USER_UPDATE = "instance:extension:user:update";
    /// `PUT /instances/{id}/users`.
    USER_UPDATE_ALL = "instance:extension:user:update_all";
    /// `PUT /instances/{id}/users/{user}/databases`.
    USER_ACCESS_UPDATE = "instance:extension:user_access:update";
    /// `DELETE /instances/{id}/users/{user}/databases/{db}`.
    USER_ACCESS_DELETE = "instance:extension:user_access:delete";
    /// `GET /instances/{id}/users/{user}/databases`.
    USER_ACCESS_INDEX = "instance:extension:user_access:index";
    /// `POST /instances/{id}/databases`; `POST /instances` with databases.
    DATABASE_CREATE = "instance:extension:database:create";
    /// `DELETE /instances/{id}/databases/{db}`.
    DATABASE_DELETE = "instance:extension:database:delete";
    /// `GET /instances/{id}/databases`.
    DATABASE_INDEX = "instance:extension:database:index";
    /// `POST /clusters`.
    CLUSTER_CREATE = "cluster:create";
    /// `DELETE /clusters/{id}`.
    CLUSTER_DELETE = "cluster:delete";
    /// `POST /clusters/{id} {"reset-status": {"force_delete": true}}` (the client's force delete, with DELETE).
    CLUSTER_FORCE_DELETE = "cluster:force_delete";
    /// `GET /clusters`.
    CLUSTER_INDEX = "cluster:index";
    /// `GET /clusters/{id}`.
    CLUSTER_SHOW = "cluster:show";
    /// `GET /clusters/{id}/instances/{instance_id}`.
    CLUSTER_SHOW_INSTANCE = "cluster:show_instance";
    /// `POST /clusters/{id}` (grow, shrink, upgrade, ...), the scaling policy routes.
    CLUSTER_ACTION = "cluster:action";
    /// `POST /clusters/{id} {"reset-status": {}}`.
    CLUSTER_RESET_STATUS = "cluster:reset-status";
    /// `POST /clusters/{id}/root`.
    CLUSTER_ROOT_CREATE = "cluster:extension:root:create";
    /// `GET /clusters/{id}/root`.
    CLUSTER_ROOT_INDEX = "cluster:extension:root:index";
    /// `POST /backups`.
    BACKUP_CREATE = "backup:create";
    /// `DELETE /backups/{id}`.
    BACKUP_DELETE = "backup:delete";
    /// `GET /backups`.
    BACKUP_INDEX = "backup:index";
    /// `GET /backups?all_projects` or `?project_id=`.
    BACKUP_INDEX_ALL_PROJECTS = "backup:index:all_projects";
    /// `GET /backups/{id}`.
    BACKUP_SHOW = "backup:show";
    /// `POST /backup_strategies`.
    BACKUP_STRATEGY_CREATE = "backup_strategy:create";
    /// `GET /backup_strategies`.
    BACKUP_STRATEGY_INDEX = "backup_strategy:index";
    /// `DELETE /backup_strategies`.
    BACKUP_STRATEGY_DELETE = "backup_strategy:delete";
    /// `POST /configurations`.
    CONFIGURATION_CREATE = "configuration:create";
    /// `DELETE /configurations/{id}`.
    CONFIGURATION_DELETE = "configuration:delete";
    /// `GET /configurations`.
    CONFIGURATION_INDEX = "configuration:index";
    /// `GET /configurations/{id}`.
    CONFIGURATION_SHOW = "configuration:show";
    /// `GET /configurations/{id}/instances`.
    CONFIGURATION_INSTANCES = "configuration:instances";
    /// `PUT /configurations/{id}`.
    CONFIGURATION_UPDATE = "configuration:update";
    /// `PATCH /configurations/{id}`.
    CONFIGURATION_EDIT = "configuration:edit";
    /// `GET /datastores/{ds}/versions/{v}/parameters`.
    PARAMETER_INDEX = "configuration-parameter:index";
    /// `GET /datastores/{ds}/versions/{v}/parameters/{name}`.
    PARAMETER_SHOW = "configuration-parameter:show";
    /// `GET /datastores/versions/{id}/parameters`.
    PARAMETER_INDEX_BY_VERSION = "configuration-parameter:index_by_version";
    /// `GET /datastores/versions/{id}/parameters/{name}`.
    PARAMETER_SHOW_BY_VERSION = "configuration-parameter:show_by_version";
    /// `GET /datastores`.
    DATASTORE_INDEX = "datastore:index";
    /// `GET /datastores/{ds}`.
    DATASTORE_SHOW = "datastore:show";
    /// `DELETE /datastores/{ds}`.
    DATASTORE_DELETE = "datastore:delete";
    /// `GET /datastores/{ds}/versions/{v}`.
    DATASTORE_VERSION_SHOW = "datastore:version_show";
    /// `GET /datastores/versions/{id}`.
    DATASTORE_VERSION_SHOW_BY_UUID = "datastore:version_show_by_uuid";
    /// `GET /datastores/{ds}/versions`.
    DATASTORE_VERSION_INDEX = "datastore:version_index";
    /// `GET /datastores/{ds}/versions/{v}/flavors`.
    DATASTORE_FLAVORS = "datastore:list_associated_flavors";
    /// `GET /datastores/{ds}/versions/{v}/volume-types`.
    DATASTORE_VOLUME_TYPES = "datastore:list_associated_volume_types";
    /// `GET /flavors`.
    FLAVOR_INDEX = "flavor:index";
    /// `GET /flavors/{id}`.
    FLAVOR_SHOW = "flavor:show";
    /// `GET /limits`.
    LIMITS_INDEX = "limits:index";
    /// `GET /mgmt/quotas/{project}` (ours; the target is the project asked for).
    MGMT_QUOTA_SHOW = "mgmt:quota:show";
    /// `PUT /mgmt/quotas/{project}` (ours).
    MGMT_QUOTA_UPDATE = "mgmt:quota:update";
    /// `GET /mgmt/instances` (ours).
    MGMT_INSTANCE_INDEX = "mgmt:instance:index";
    /// `GET /mgmt/instances/{id}` (ours).
    MGMT_INSTANCE_SHOW = "mgmt:instance:show";
    /// `POST /mgmt/instances/{id}/action {"stop": {}}` (ours).
    MGMT_INSTANCE_STOP = "mgmt:instance:stop";
    /// `POST /mgmt/instances/{id}/action {"reboot": {}}` (ours).
    MGMT_INSTANCE_REBOOT = "mgmt:instance:reboot";
    /// `POST /mgmt/instances/{id}/action {"reset-task-status": {}}` (ours).
    MGMT_INSTANCE_RESET_TASK_STATUS = "mgmt:instance:reset_task_status";
    /// `POST /mgmt/instances/{id}/action {"migrate": {...}}` (ours).
    MGMT_INSTANCE_MIGRATE = "mgmt:instance:migrate";
    /// `POST /mgmt/instances/{id}/action {"rebuild": {...}}` (ours).
    MGMT_INSTANCE_REBUILD = "mgmt:instance:rebuild";
    /// `GET /mgmt/instances/{id}/rpc_ping` (ours).
    MGMT_INSTANCE_RPC_PING = "mgmt:instance:rpc_ping";
    /// `GET /mgmt/instances/{id}/root` (ours).
    MGMT_INSTANCE_ROOT = "mgmt:instance:root";
    /// `GET /mgmt/datastore-versions` (ours).
    MGMT_DATASTORE_VERSION_INDEX = "mgmt:datastore_version:index";
    /// `POST /mgmt/datastore-versions` (ours).
    MGMT_DATASTORE_VERSION_CREATE = "mgmt:datastore_version:create";
    /// `GET /mgmt/datastore-versions/{id}` (ours).
    MGMT_DATASTORE_VERSION_SHOW = "mgmt:datastore_version:show";
    /// `PATCH /mgmt/datastore-versions/{id}` (ours).
    MGMT_DATASTORE_VERSION_UPDATE = "mgmt:datastore_version:update";
    /// `DELETE /mgmt/datastore-versions/{id}` (ours).
    MGMT_DATASTORE_VERSION_DELETE = "mgmt:datastore_version:delete";
    /// `GET /mgmt/datastores/versions/{id}/parameters` (ours).
    MGMT_PARAMETER_INDEX = "mgmt:configuration-parameter:index";
    /// `POST /mgmt/datastores/versions/{id}/parameters` (ours).
    MGMT_PARAMETER_CREATE = "mgmt:configuration-parameter:create";
    /// `GET /mgmt/datastores/versions/{id}/parameters/{name}` (ours).
    MGMT_PARAMETER_SHOW = "mgmt:configuration-parameter:show";
    /// `PUT /mgmt/datastores/versions/{id}/parameters/{name}` (ours).
    MGMT_PARAMETER_UPDATE = "mgmt:configuration-parameter:update";
    /// `DELETE /mgmt/datastores/versions/{id}/parameters/{name}` (ours).
    MGMT_PARAMETER_DELETE = "mgmt:configuration-parameter:delete";
    /// Creating or replacing a flavor through `ApiService` (ours; embedders, no route).
    MGMT_FLAVOR_CREATE = "mgmt:flavor:create";
    /// Deleting a flavor through `ApiService` (ours; embedders, no route).
    MGMT_FLAVOR_DELETE = "mgmt:flavor:delete";
}

const ADMIN: &str = "rule:admin";
const OWNER: &str = "rule:admin_or_owner";
const ANYONE: &str = "";

const fn up(
    name: &'static str,
    check: &'static str,
    routes: &'static [&'static str],
) -> RuleDefault {
    RuleDefault {
        name,
        check,
        routes,
        origin: Origin::Upstream,
    }
}

const fn ours(
    name: &'static str,
    check: &'static str,
    routes: &'static [&'static str],
) -> RuleDefault {
    RuleDefault {
        name,
        check,
        routes,
        origin: Origin::TroveRs,
    }
}

/// Every rule with its default check string, in upstream's order, ours after upstream's.
pub const DEFAULTS: &[RuleDefault] = &[
    // base
    up(CONTEXT_IS_ADMIN, "role:admin", &[]),
    up("admin", "role:admin or is_admin:True", &[]),
    up("admin_or_owner", "rule:admin or project_id:%(tenant)s", &[]),
    up("default", "rule:admin_or_owner", &[]),
    // instances
    up(INSTANCE_CREATE, OWNER, &["POST /instances"]),
    up(INSTANCE_DELETE, OWNER, &["DELETE /instances/{id}"]),
    up(
        INSTANCE_FORCE_DELETE,
        OWNER,
        &["POST /instances/{id}/action reset_status with force_delete"],
    ),
    up(INSTANCE_INDEX, OWNER, &["GET /instances"]),
    up(INSTANCE_DETAIL, OWNER, &["GET /instances/detail"]),
    up(
        INSTANCE_SHOW,
        OWNER,
        &[
            "GET /instances/{id}",
            "GET /instances/{id}/ssl",
            "GET /instances/{id}/events",
        ],
    ),
    up(
        INSTANCE_UPDATE,
        OWNER,
        &[
            "PUT /instances/{id}",
            "PATCH /instances/{id}",
            "POST /instances/{id}/ssl",
            "POST /instances (with a configuration)",
        ],
    ),
    up("instance:edit", OWNER, &[]),
    up(
        INSTANCE_RESTART,
        OWNER,
        &["POST /instances/{id}/action restart"],
    ),
    up(
        INSTANCE_RESIZE_VOLUME,
        OWNER,
        &["POST /instances/{id}/action resize volume"],
    ),
    up(
        INSTANCE_RESIZE_FLAVOR,
        OWNER,
        &["POST /instances/{id}/action resize flavorRef"],
    ),
    up(
        INSTANCE_RESET_STATUS,
        ADMIN,
        &["POST /instances/{id}/action reset_status"],
    ),
    up(
        INSTANCE_PROMOTE,
        OWNER,
        &["POST /instances/{id}/action promote_to_replica_source"],
    ),
    up(
        INSTANCE_EJECT,
        OWNER,
        &["POST /instances/{id}/action eject_replica_source"],
    ),
    up(
        INSTANCE_CONFIGURATION,
        OWNER,
        &["GET /instances/{id}/configuration"],
    ),
    up(INSTANCE_GUEST_LOG_LIST, OWNER, &["GET /instances/{id}/log"]),
    up(INSTANCE_BACKUPS, OWNER, &["GET /instances/{id}/backups"]),
    up("instance:module_list", OWNER, &[]),
    up("instance:module_apply", OWNER, &[]),
    up("instance:module_remove", OWNER, &[]),
    // root
    up(ROOT_CREATE, OWNER, &["POST /instances/{id}/root"]),
    up(ROOT_DELETE, OWNER, &["DELETE /instances/{id}/root"]),
    up(ROOT_INDEX, OWNER, &["GET /instances/{id}/root"]),
    up(CLUSTER_ROOT_CREATE, OWNER, &["POST /clusters/{id}/root"]),
    up("cluster:extension:root:delete", OWNER, &[]),
    up(CLUSTER_ROOT_INDEX, OWNER, &["GET /clusters/{id}/root"]),
    // users
    up(
        USER_CREATE,
        OWNER,
        &["POST /instances/{id}/users", "POST /instances (with users)"],
    ),
    up(USER_DELETE, OWNER, &["DELETE /instances/{id}/users/{user}"]),
    up(USER_INDEX, OWNER, &["GET /instances/{id}/users"]),
    up(USER_SHOW, OWNER, &["GET /instances/{id}/users/{user}"]),
    up(USER_UPDATE, OWNER, &["PUT /instances/{id}/users/{user}"]),
    up(USER_UPDATE_ALL, OWNER, &["PUT /instances/{id}/users"]),
    // user access
    up(
        USER_ACCESS_UPDATE,
        OWNER,
        &["PUT /instances/{id}/users/{user}/databases"],
    ),
    up(
        USER_ACCESS_DELETE,
        OWNER,
        &["DELETE /instances/{id}/users/{user}/databases/{db}"],
    ),
    up(
        USER_ACCESS_INDEX,
        OWNER,
        &["GET /instances/{id}/users/{user}/databases"],
    ),
    // databases
    up(
        DATABASE_CREATE,
        OWNER,
        &[
            "POST /instances/{id}/databases",
            "POST /instances (with databases)",
        ],
    ),
    up(
        DATABASE_DELETE,
        OWNER,
        &["DELETE /instances/{id}/databases/{db}"],
    ),
    up(DATABASE_INDEX, OWNER, &["GET /instances/{id}/databases"]),
    up("instance:extension:database:show", OWNER, &[]),
    // clusters
    up(CLUSTER_CREATE, OWNER, &["POST /clusters"]),
    up(CLUSTER_DELETE, OWNER, &["DELETE /clusters/{id}"]),
    up(CLUSTER_FORCE_DELETE, OWNER, &["POST /clusters/{id}"]),
    up(CLUSTER_INDEX, OWNER, &["GET /clusters"]),
    up(
        CLUSTER_SHOW,
        OWNER,
        &["GET /clusters/{id}", "GET /clusters/{id}/events"],
    ),
    up(
        CLUSTER_SHOW_INSTANCE,
        OWNER,
        &["GET /clusters/{id}/instances/{instance_id}"],
    ),
    up(
        CLUSTER_ACTION,
        OWNER,
        &[
            "POST /clusters/{id}",
            "PUT /clusters/{id}/scaling_policy",
            "DELETE /clusters/{id}/scaling_policy",
        ],
    ),
    up(CLUSTER_RESET_STATUS, ADMIN, &["POST /clusters/{id}"]),
    // backups
    up(BACKUP_CREATE, OWNER, &["POST /backups"]),
    up(BACKUP_DELETE, OWNER, &["DELETE /backups/{id}"]),
    up(BACKUP_INDEX, OWNER, &["GET /backups"]),
    up(
        BACKUP_INDEX_ALL_PROJECTS,
        "role:admin",
        &["GET /backups?all_projects", "GET /backups?project_id="],
    ),
    up(BACKUP_SHOW, OWNER, &["GET /backups/{id}"]),
    up(BACKUP_STRATEGY_CREATE, OWNER, &["POST /backup_strategies"]),
    up(BACKUP_STRATEGY_INDEX, OWNER, &["GET /backup_strategies"]),
    up(
        BACKUP_STRATEGY_DELETE,
        OWNER,
        &["DELETE /backup_strategies"],
    ),
    // configuration groups
    up(CONFIGURATION_CREATE, OWNER, &["POST /configurations"]),
    up(
        CONFIGURATION_DELETE,
        OWNER,
        &["DELETE /configurations/{id}"],
    ),
    up(CONFIGURATION_INDEX, OWNER, &["GET /configurations"]),
    up(CONFIGURATION_SHOW, OWNER, &["GET /configurations/{id}"]),
    up(
        CONFIGURATION_INSTANCES,
        OWNER,
        &["GET /configurations/{id}/instances"],
    ),
    up(CONFIGURATION_UPDATE, OWNER, &["PUT /configurations/{id}"]),
    up(CONFIGURATION_EDIT, OWNER, &["PATCH /configurations/{id}"]),
    // configuration parameters
    up(
        PARAMETER_INDEX,
        OWNER,
        &["GET /datastores/{ds}/versions/{v}/parameters"],
    ),
    up(
        PARAMETER_SHOW,
        OWNER,
        &["GET /datastores/{ds}/versions/{v}/parameters/{name}"],
    ),
    up(
        PARAMETER_INDEX_BY_VERSION,
        OWNER,
        &["GET /datastores/versions/{id}/parameters"],
    ),
    up(
        PARAMETER_SHOW_BY_VERSION,
        OWNER,
        &["GET /datastores/versions/{id}/parameters/{name}"],
    ),
    // datastores
    up(DATASTORE_INDEX, ANYONE, &["GET /datastores"]),
    up(DATASTORE_SHOW, ANYONE, &["GET /datastores/{ds}"]),
    up(DATASTORE_DELETE, ADMIN, &["DELETE /datastores/{ds}"]),
    up(
        DATASTORE_VERSION_SHOW,
        ANYONE,
        &["GET /datastores/{ds}/versions/{v}"],
    ),
    up(
        DATASTORE_VERSION_SHOW_BY_UUID,
        ANYONE,
        &["GET /datastores/versions/{id}"],
    ),
    up(
        DATASTORE_VERSION_INDEX,
        ANYONE,
        &["GET /datastores/{ds}/versions"],
    ),
    up(
        DATASTORE_FLAVORS,
        ANYONE,
        &["GET /datastores/{ds}/versions/{v}/flavors"],
    ),
    up(
        DATASTORE_VOLUME_TYPES,
        ANYONE,
        &["GET /datastores/{ds}/versions/{v}/volume-types"],
    ),
    // flavors, limits
    up(FLAVOR_INDEX, ANYONE, &["GET /flavors"]),
    up(FLAVOR_SHOW, ANYONE, &["GET /flavors/{id}"]),
    up(LIMITS_INDEX, OWNER, &["GET /limits"]),
    // modules (not offered)
    up("module:create", OWNER, &[]),
    up("module:delete", OWNER, &[]),
    up("module:index", OWNER, &[]),
    up("module:show", OWNER, &[]),
    up("module:instances", OWNER, &[]),
    up("module:update", OWNER, &[]),
    up("module:reapply", OWNER, &[]),
    // ours: routes upstream guards without a policy rule
    ours(
        INSTANCE_GUEST_LOG_ACTION,
        OWNER,
        &["POST /instances/{id}/log"],
    ),
    ours(MGMT_QUOTA_SHOW, OWNER, &["GET /mgmt/quotas/{project}"]),
    ours(MGMT_QUOTA_UPDATE, ADMIN, &["PUT /mgmt/quotas/{project}"]),
    ours(MGMT_INSTANCE_INDEX, ADMIN, &["GET /mgmt/instances"]),
    ours(MGMT_INSTANCE_SHOW, ADMIN, &["GET /mgmt/instances/{id}"]),
    ours(
        MGMT_INSTANCE_STOP,
        ADMIN,
        &["POST /mgmt/instances/{id}/action stop"],
    ),
    ours(
        MGMT_INSTANCE_REBOOT,
        ADMIN,
        &["POST /mgmt/instances/{id}/action reboot"],
    ),
    ours(
        MGMT_INSTANCE_RESET_TASK_STATUS,
        ADMIN,
        &["POST /mgmt/instances/{id}/action reset-task-status"],
    ),
    ours(
        MGMT_INSTANCE_MIGRATE,
        ADMIN,
        &["POST /mgmt/instances/{id}/action migrate"],
    ),
    ours(
        MGMT_INSTANCE_REBUILD,
        ADMIN,
        &["POST /mgmt/instances/{id}/action rebuild"],
    ),
    ours(
        MGMT_INSTANCE_RPC_PING,
        ADMIN,
        &["GET /mgmt/instances/{id}/rpc_ping"],
    ),
    ours(
        MGMT_INSTANCE_ROOT,
        ADMIN,
        &["GET /mgmt/instances/{id}/root"],
    ),
    ours(
        MGMT_DATASTORE_VERSION_INDEX,
        ADMIN,
        &["GET /mgmt/datastore-versions"],
    ),
    ours(
        MGMT_DATASTORE_VERSION_CREATE,
        ADMIN,
        &["POST /mgmt/datastore-versions"],
    ),
    ours(
        MGMT_DATASTORE_VERSION_SHOW,
        ADMIN,
        &["GET /mgmt/datastore-versions/{id}"],
    ),
    ours(
        MGMT_DATASTORE_VERSION_UPDATE,
        ADMIN,
        &["PATCH /mgmt/datastore-versions/{id}"],
    ),
    ours(
        MGMT_DATASTORE_VERSION_DELETE,
        ADMIN,
        &["DELETE /mgmt/datastore-versions/{id}"],
    ),
    ours(
        MGMT_PARAMETER_INDEX,
        ADMIN,
        &["GET /mgmt/datastores/versions/{id}/parameters"],
    ),
    ours(
        MGMT_PARAMETER_CREATE,
        ADMIN,
        &["POST /mgmt/datastores/versions/{id}/parameters"],
    ),
    ours(
        MGMT_PARAMETER_SHOW,
        ADMIN,
        &["GET /mgmt/datastores/versions/{id}/parameters/{name}"],
    ),
    ours(
        MGMT_PARAMETER_UPDATE,
        ADMIN,
        &["PUT /mgmt/datastores/versions/{id}/parameters/{name}"],
    ),
    ours(
        MGMT_PARAMETER_DELETE,
        ADMIN,
        &["DELETE /mgmt/datastores/versions/{id}/parameters/{name}"],
    ),
    ours(MGMT_FLAVOR_CREATE, ADMIN, &[]),
    ours(MGMT_FLAVOR_DELETE, ADMIN, &[]),
];
