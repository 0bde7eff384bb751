//! Pure state machines: task, service (guest), server and backup states, the derived API status, and the
//! action gate (upstream facts §2). Every predicate is an exhaustive match.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

macro_rules! task_statuses {
    ($( $variant:ident = ($code:expr, $name:expr, $action:ident, $error:expr, $desc:expr) ),* $(,)?) => {
        /// What the task manager is doing with an instance (upstream `InstanceTasks`, §2.2).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum TaskStatus {
            $( #[doc = $desc] $variant, )*
        }

        impl TaskStatus {
            /// Every task status.
            pub const ALL: &'static [TaskStatus] = &[$(TaskStatus::$variant,)*];
            /// Upstream numeric code.
            pub fn code(self) -> u16 { match self { $(TaskStatus::$variant => $code,)* } }
            /// Upstream name.
            pub fn name(self) -> &'static str { match self { $(TaskStatus::$variant => $name,)* } }
            /// The action this task belongs to.
            pub fn action(self) -> TaskAction { match self { $(TaskStatus::$variant => TaskAction::$action,)* } }
            /// Whether this is an error task (API status ERROR).
            pub fn is_error(self) -> bool { match self { $(TaskStatus::$variant => $error,)* } }
            /// Upstream description.
            pub fn description(self) -> &'static str { match self { $(TaskStatus::$variant => $desc,)* } }
            /// Looks a task up by its upstream name.
            pub fn from_name(name: &str) -> Option<TaskStatus> {
                TaskStatus::ALL.iter().copied().find(|t| t.name() == name)
            }
        }
    };
}

task_statuses! {
    None = (0x01, "NONE", None, false, "No tasks for the instance."),
    Deleting = (0x02, "DELETING", Deleting, false, "Deleting the instance."),
    Rebooting = (0x03, "REBOOTING", Rebooting, false, "Rebooting the instance."),
    Resizing = (0x04, "RESIZING", Resizing, false, "Resizing the instance."),
    Building = (0x05, "BUILDING", Building, false, "The instance is building."),
    Migrating = (0x06, "MIGRATING", Migrating, false, "Migrating the instance."),
    RestartRequired = (0x07, "RESTART_REQUIRED", RestartRequired, false, "Instance requires a restart."),
    Promoting = (0x08, "PROMOTING", Promoting, false, "Promoting the instance to replica source."),
    Ejecting = (0x09, "EJECTING", Ejecting, false, "Ejecting the replica source."),
    Logging = (0x0a, "LOGGING", Logging, false, "Transferring guest logs."),
    Detaching = (0x0b, "DETACHING", Detaching, false, "Detaching the instance from replica source."),
    Updating = (0x0c, "UPDATING", Updating, false, "Updating the instance."),
    Rebuilding = (0x0d, "REBUILDING", Rebuilding, false, "Rebuilding the instance (mgmt rebuild; not in the reference table, named after upstream's rebuild)."),
    Upgrading = (0x59, "UPGRADING", Upgrading, false, "Upgrading the instance."),
    BuildingErrorDns = (0x50, "BUILDING_ERROR_DNS", Building, true, "Build error: DNS."),
    BuildingErrorServer = (0x51, "BUILDING_ERROR_SERVER", Building, true, "Build error: Server."),
    BuildingErrorVolume = (0x52, "BUILDING_ERROR_VOLUME", Building, true, "Build error: Volume."),
    BuildingErrorSecGroup = (0x53, "BUILDING_ERROR_SEC_GROUP", Building, true, "Build error: Secgroup or rule."),
    BuildingErrorReplica = (0x54, "BUILDING_ERROR_REPLICA", Building, true, "Build error: Replica."),
    PromotionError = (0x55, "PROMOTION_ERROR", Promoting, true, "Replica Source Promotion Error."),
    EjectionError = (0x56, "EJECTION_ERROR", Ejecting, true, "Replica Source Ejection Error."),
    GrowingError = (0x57, "GROWING_ERROR", Growing, true, "Growing Cluster Error."),
    ShrinkingError = (0x58, "SHRINKING_ERROR", Shrinking, true, "Shrinking Cluster Error."),
    UpgradingError = (0x5a, "UPGRADING_ERROR", Upgrading, true, "Upgrading Cluster Error."),
    BuildingErrorTimeoutGa = (0x5b, "BUILDING_ERROR_TIMEOUT_GA", Error, true, "Build error: Guest Agent timeout."),
    BuildingErrorPort = (0x5c, "BUILDING_ERROR_PORT", Building, true, "Build error: Port."),
    UpdatingErrorAccess = (0x5d, "UPDATING_ERROR_ACCESS", Updating, true, "Update error: Access."),
    BuildingErrorRebuild = (0x5e, "BUILDING_ERROR_REBUILD", Rebuilding, true, "Build error: Rebuild instance."),
}

/// The action a task belongs to (upstream `InstanceTask.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum TaskAction {
    None,
    Deleting,
    Rebooting,
    Resizing,
    Building,
    Migrating,
    RestartRequired,
    Promoting,
    Ejecting,
    Logging,
    Detaching,
    Updating,
    Upgrading,
    Rebuilding,
    Growing,
    Shrinking,
    Error,
}

macro_rules! service_statuses {
    ($( $variant:ident = ($code:expr, $desc:expr, $api:expr) ),* $(,)?) => {
        /// The guest's view of its datastore (upstream `ServiceStatuses`, §2.3).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum ServiceStatus {
            $( #[doc = $desc] $variant, )*
        }

        impl ServiceStatus {
            /// Every service status.
            pub const ALL: &'static [ServiceStatus] = &[$(ServiceStatus::$variant,)*];
            /// Upstream numeric code (UPGRADING and RESTARTING share 0x22 upstream).
            pub fn code(self) -> u16 { match self { $(ServiceStatus::$variant => $code,)* } }
            /// Upstream description, which is what guests report.
            pub fn description(self) -> &'static str { match self { $(ServiceStatus::$variant => $desc,)* } }
            /// The status shown by the API (`operating_status`).
            pub fn api_status(self) -> &'static str { match self { $(ServiceStatus::$variant => $api,)* } }
            /// Maps a reported description back to a status.
            pub fn from_description(desc: &str) -> Option<ServiceStatus> {
                ServiceStatus::ALL.iter().copied().find(|s| s.description() == desc)
            }
        }
    };
}

service_statuses! {
    Running = (0x01, "running", "ACTIVE"),
    Blocked = (0x02, "blocked", "BLOCKED"),
    Paused = (0x03, "paused", "SHUTDOWN"),
    Shutdown = (0x04, "shutdown", "SHUTDOWN"),
    Deleted = (0x05, "deleted", "DELETED"),
    Crashed = (0x06, "crashed", "SHUTDOWN"),
    Failed = (0x08, "failed to spawn", "FAILED"),
    Building = (0x09, "building", "BUILD"),
    Promoting = (0x10, "promoting replica", "PROMOTE"),
    Ejecting = (0x11, "ejecting replica source", "EJECT"),
    Logging = (0x12, "transferring guest logs", "LOGGING"),
    Unknown = (0x16, "unknown", "ERROR"),
    New = (0x17, "new", "NEW"),
    FailedTimeoutGuestagent = (0x18, "guestagent error", "ERROR"),
    InstanceReady = (0x19, "instance ready", "BUILD"),
    RestartRequired = (0x20, "restart required", "RESTART_REQUIRED"),
    Healthy = (0x21, "healthy", "HEALTHY"),
    Upgrading = (0x22, "upgrading", "UPGRADING"),
    Restarting = (0x22, "restarting", "RESTARTING"),
}

impl ServiceStatus {
    /// Whether actions may run against the instance (upstream `action_is_allowed`).
    pub fn action_is_allowed(self) -> bool {
        match self {
            ServiceStatus::Running
            | ServiceStatus::Shutdown
            | ServiceStatus::Crashed
            | ServiceStatus::Blocked
            | ServiceStatus::Healthy
            | ServiceStatus::RestartRequired => true,
            ServiceStatus::Paused
            | ServiceStatus::Deleted
            | ServiceStatus::Failed
            | ServiceStatus::Building
            | ServiceStatus::Promoting
            | ServiceStatus::Ejecting
            | ServiceStatus::Logging
            | ServiceStatus::Unknown
            | ServiceStatus::New
            | ServiceStatus::FailedTimeoutGuestagent
            | ServiceStatus::InstanceReady
            | ServiceStatus::Upgrading
            | ServiceStatus::Restarting => false,
        }
    }

    /// Whether the datastore is up, which gates users, databases and root (upstream `is_datastore_running`).
    pub fn is_datastore_running(self) -> bool {
        match self {
            ServiceStatus::Running | ServiceStatus::Healthy => true,
            ServiceStatus::Blocked
            | ServiceStatus::Paused
            | ServiceStatus::Shutdown
            | ServiceStatus::Deleted
            | ServiceStatus::Crashed
            | ServiceStatus::Failed
            | ServiceStatus::Building
            | ServiceStatus::Promoting
            | ServiceStatus::Ejecting
            | ServiceStatus::Logging
            | ServiceStatus::Unknown
            | ServiceStatus::New
            | ServiceStatus::FailedTimeoutGuestagent
            | ServiceStatus::InstanceReady
            | ServiceStatus::RestartRequired
            | ServiceStatus::Upgrading
            | ServiceStatus::Restarting => false,
        }
    }

    /// Whether a build waiting on this status is done successfully (upstream `wait_for_instance`).
    pub fn is_build_success(self) -> bool {
        matches!(
            self,
            ServiceStatus::Running | ServiceStatus::InstanceReady | ServiceStatus::Healthy
        )
    }

    /// Whether a build waiting on this status should keep waiting.
    pub fn is_build_pending(self) -> bool {
        matches!(
            self,
            ServiceStatus::New
                | ServiceStatus::Building
                | ServiceStatus::Unknown
                | ServiceStatus::Deleted
        )
    }
}

/// Status of the compute server (Nova's view in upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerStatus {
    /// Being created.
    Build,
    /// Running.
    Active,
    /// Rebooting.
    Reboot,
    /// Resizing.
    Resize,
    /// Resized, waiting for confirmation.
    VerifyResize,
    /// Stopped.
    Shutdown,
    /// Failed.
    Error,
    /// Gone.
    Deleted,
}

impl ServerStatus {
    /// Upstream spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Build => "BUILD",
            ServerStatus::Active => "ACTIVE",
            ServerStatus::Reboot => "REBOOT",
            ServerStatus::Resize => "RESIZE",
            ServerStatus::VerifyResize => "VERIFY_RESIZE",
            ServerStatus::Shutdown => "SHUTDOWN",
            ServerStatus::Error => "ERROR",
            ServerStatus::Deleted => "DELETED",
        }
    }
}

/// Status of a backup (§2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BackupState {
    /// Requested.
    New,
    /// Running on the guest.
    Building,
    /// Legacy streaming state.
    Saving,
    /// Done.
    Completed,
    /// Failed.
    Failed,
    /// Imported from an existing object.
    Restored,
    /// Deleting the object failed.
    DeleteFailed,
}

impl BackupState {
    /// Whether the backup is still running (blocks instance actions, shows status BACKUP).
    pub fn is_running(self) -> bool {
        match self {
            BackupState::New | BackupState::Building | BackupState::Saving => true,
            BackupState::Completed
            | BackupState::Failed
            | BackupState::Restored
            | BackupState::DeleteFailed => false,
        }
    }

    /// Whether the backup can be restored from.
    pub fn is_restorable(self) -> bool {
        match self {
            BackupState::Completed | BackupState::Restored => true,
            BackupState::New
            | BackupState::Building
            | BackupState::Saving
            | BackupState::Failed
            | BackupState::DeleteFailed => false,
        }
    }

    /// Upstream spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupState::New => "NEW",
            BackupState::Building => "BUILDING",
            BackupState::Saving => "SAVING",
            BackupState::Completed => "COMPLETED",
            BackupState::Failed => "FAILED",
            BackupState::Restored => "RESTORED",
            BackupState::DeleteFailed => "DELETE_FAILED",
        }
    }
}

/// Everything the status derivation and the action gate look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceState {
    /// Task.
    pub task: TaskStatus,
    /// Server status (`None`: the server is gone).
    pub server: Option<ServerStatus>,
    /// Guest status.
    pub service: ServiceStatus,
    /// A backup of the instance is running.
    pub backup_running: bool,
}

/// The API `status` of an instance, exactly as upstream derives it at HEAD (§2.1).
pub fn api_status(s: &InstanceState) -> &'static str {
    if s.task.is_error() {
        return "ERROR";
    }
    // While building, upstream forces the server status to BUILD without asking compute.
    let server = if s.task == TaskStatus::Building {
        Some(ServerStatus::Build)
    } else {
        s.server
    };
    match s.task.action() {
        TaskAction::Building => {
            return if server == Some(ServerStatus::Error) {
                "ERROR"
            } else {
                "BUILD"
            };
        }
        TaskAction::Rebooting => return "REBOOT",
        TaskAction::Resizing => return "RESIZE",
        TaskAction::Upgrading => return "UPGRADE",
        // Upstream shows what Nova reports during a cold migration (RESIZE, then VERIFY_RESIZE read as RESIZE).
        TaskAction::Migrating => return "RESIZE",
        // Upstream defines no API status of its own for a rebuild: it reads as the server being built again.
        TaskAction::Rebuilding => return "BUILD",
        TaskAction::RestartRequired => return "RESTART_REQUIRED",
        TaskAction::Promoting => return "PROMOTE",
        TaskAction::Ejecting => return "EJECT",
        TaskAction::Detaching => return "DETACH",
        TaskAction::Deleting => {
            return match server {
                Some(ServerStatus::Active)
                | Some(ServerStatus::Shutdown)
                | Some(ServerStatus::Deleted)
                | None => "SHUTDOWN",
                Some(_) => "ERROR",
            };
        }
        TaskAction::None
        | TaskAction::Logging
        | TaskAction::Updating
        | TaskAction::Growing
        | TaskAction::Shrinking
        | TaskAction::Error => {}
    }
    if s.backup_running {
        return "BACKUP";
    }
    match server {
        // A server compute no longer knows reads as SHUTDOWN (Nova 404).
        None => "SHUTDOWN",
        Some(ServerStatus::VerifyResize) => "RESIZE",
        Some(ServerStatus::Deleted) => "UNKNOWN",
        Some(other) => other.as_str(),
    }
}

/// The API `operating_status`: empty unless the task is NONE and the server is ACTIVE.
pub fn operating_status(s: &InstanceState) -> &'static str {
    if s.task == TaskStatus::None && s.server == Some(ServerStatus::Active) {
        s.service.api_status()
    } else {
        ""
    }
}

/// Whether a heartbeat stored at `updated_at` is stale at `now` (upstream `agent_heartbeat_expiry`).
pub fn heartbeat_expired(
    updated_at: DateTime<Utc>,
    now: DateTime<Utc>,
    expiry: std::time::Duration,
) -> bool {
    let expiry = Duration::from_std(expiry).unwrap_or(Duration::MAX);
    now.signed_duration_since(updated_at) >= expiry
}

/// Operations the gate knows about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Restart the engine.
    Restart,
    /// Resize the flavor.
    ResizeFlavor,
    /// Grow the volume.
    ResizeVolume,
    /// Take a backup.
    Backup,
    /// Create a replica of this instance.
    CreateReplica,
    /// Promote this replica.
    Promote,
    /// Detach this replica.
    Detach,
    /// Attach or detach a configuration group.
    AssignConfiguration,
    /// Users, databases and root.
    ManageData,
    /// Delete.
    Delete,
    /// Move to another datastore version (same gate as restart; upstream checks nothing, we refuse to upgrade
    /// an instance that is busy or down).
    Upgrade,
    /// Move the server to another host (mgmt; upstream `validate_can_perform_action`).
    Migrate,
    /// Rebuild the server from an image (mgmt): a repair tool, so only a running task refuses it; a broken guest
    /// or an error task does not.
    Rebuild,
}

fn not_available(id: impl std::fmt::Display, what: &str, status: &str) -> Error {
    Error::unprocessable(format!(
        "Instance {id} is not currently available for an action to be performed ({what} status was {status})."
    ))
}

/// The action gate (upstream `validate_can_perform_action`, `load_and_verify`, the delete rule, §2.4).
pub fn check_operation(id: impl std::fmt::Display, op: Operation, s: &InstanceState) -> Result<()> {
    match op {
        Operation::Restart
        | Operation::ResizeFlavor
        | Operation::ResizeVolume
        | Operation::Backup
        | Operation::CreateReplica
        | Operation::Promote
        | Operation::Detach
        | Operation::Upgrade
        | Operation::Migrate => {
            if s.server != Some(ServerStatus::Active) {
                let shown = s.server.map_or("SHUTDOWN", ServerStatus::as_str);
                return Err(not_available(id, "instance", shown));
            }
            if !matches!(s.task, TaskStatus::None | TaskStatus::RestartRequired) {
                return Err(not_available(id, "task", s.task.name()));
            }
            if !s.service.action_is_allowed() {
                return Err(not_available(id, "instance", s.service.api_status()));
            }
            if s.backup_running {
                return Err(not_available(id, "instance", "BACKUP"));
            }
            // A backup reads the running engine.
            if op == Operation::Backup
                && !(s.service.is_datastore_running()
                    || s.service == ServiceStatus::RestartRequired)
            {
                return Err(Error::unprocessable(format!(
                    "Instance {id} cannot be backed up: its datastore is not running (status is {}); start it first.",
                    s.service.api_status()
                )));
            }
            Ok(())
        }
        Operation::AssignConfiguration => {
            if s.server != Some(ServerStatus::Active) || s.task != TaskStatus::None {
                return Err(Error::bad_request(format!(
                    "The operation you have requested cannot be executed because the instance status is currently: {}",
                    api_status(s)
                )));
            }
            Ok(())
        }
        Operation::ManageData => {
            // RESTART_REQUIRED: the engine runs and only waits to pick up a change at its next start (upstream keeps
            // the service HEALTHY then and users, databases and root stay manageable).
            if !(s.service.is_datastore_running() || s.service == ServiceStatus::RestartRequired) {
                return Err(Error::unprocessable(format!(
                    "Instance {id} is not ready (status is {}).",
                    s.service.api_status()
                )));
            }
            Ok(())
        }
        Operation::Rebuild => {
            if s.server.is_none() {
                return Err(not_available(id, "instance", "SHUTDOWN"));
            }
            if !(matches!(s.task, TaskStatus::None | TaskStatus::RestartRequired)
                || s.task.is_error())
            {
                return Err(not_available(id, "task", s.task.name()));
            }
            if s.backup_running {
                return Err(not_available(id, "instance", "BACKUP"));
            }
            Ok(())
        }
        Operation::Delete => {
            if api_status(s) == "BUILD" {
                return Err(not_available(id, "instance", "BUILD"));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(task: TaskStatus, server: Option<ServerStatus>, service: ServiceStatus) -> InstanceState {
        InstanceState {
            task,
            server,
            service,
            backup_running: false,
        }
    }

    #[test]
    fn derivation_follows_upstream() {
        let healthy = st(
            TaskStatus::None,
            Some(ServerStatus::Active),
            ServiceStatus::Healthy,
        );
        assert_eq!(api_status(&healthy), "ACTIVE");
        assert_eq!(operating_status(&healthy), "HEALTHY");
        let building = st(
            TaskStatus::Building,
            Some(ServerStatus::Active),
            ServiceStatus::New,
        );
        assert_eq!(api_status(&building), "BUILD");
        assert_eq!(operating_status(&building), "");
        assert_eq!(
            api_status(&st(
                TaskStatus::BuildingErrorTimeoutGa,
                None,
                ServiceStatus::New
            )),
            "ERROR"
        );
        assert_eq!(
            api_status(&st(
                TaskStatus::Rebooting,
                Some(ServerStatus::Active),
                ServiceStatus::Restarting
            )),
            "REBOOT"
        );
        assert_eq!(
            api_status(&st(
                TaskStatus::Deleting,
                Some(ServerStatus::Error),
                ServiceStatus::Healthy
            )),
            "ERROR"
        );
        let mut b = healthy;
        b.backup_running = true;
        assert_eq!(api_status(&b), "BACKUP");
        assert_eq!(
            ServiceStatus::from_description("healthy"),
            Some(ServiceStatus::Healthy)
        );
        assert_eq!(
            TaskStatus::from_name("BUILDING_ERROR_TIMEOUT_GA"),
            Some(TaskStatus::BuildingErrorTimeoutGa)
        );
    }

    #[test]
    fn restart_refused_while_building_and_delete_refused_in_build() {
        let building = st(
            TaskStatus::Building,
            Some(ServerStatus::Active),
            ServiceStatus::New,
        );
        assert_eq!(
            check_operation("i", Operation::Restart, &building)
                .unwrap_err()
                .fault()
                .status,
            422
        );
        assert_eq!(
            check_operation("i", Operation::Delete, &building)
                .unwrap_err()
                .fault()
                .status,
            422
        );
        let failed = st(
            TaskStatus::BuildingErrorTimeoutGa,
            Some(ServerStatus::Active),
            ServiceStatus::FailedTimeoutGuestagent,
        );
        assert!(check_operation("i", Operation::Delete, &failed).is_ok());
    }

    /// A member can always get rid of an instance that failed: delete is accepted in every error task, whatever
    /// the server and the guest report (no admin reset_status needed first).
    #[test]
    fn delete_is_accepted_in_every_error_task() {
        let servers = [
            None,
            Some(ServerStatus::Active),
            Some(ServerStatus::Error),
            Some(ServerStatus::Build),
            Some(ServerStatus::Shutdown),
        ];
        let errors: Vec<TaskStatus> = TaskStatus::ALL
            .iter()
            .copied()
            .filter(|t| t.is_error())
            .collect();
        assert!(errors.len() >= 10, "error tasks: {errors:?}");
        for task in errors {
            for server in servers {
                for service in ServiceStatus::ALL.iter().copied() {
                    let s = st(task, server, service);
                    assert!(
                        check_operation("i", Operation::Delete, &s).is_ok(),
                        "delete refused in {task:?} / {server:?} / {service:?} (shown as {})",
                        api_status(&s)
                    );
                }
            }
        }
    }

    #[test]
    fn maintenance_statuses_and_gates() {
        let active = |task| st(task, Some(ServerStatus::Active), ServiceStatus::Healthy);
        assert_eq!(api_status(&active(TaskStatus::Upgrading)), "UPGRADE");
        assert_eq!(api_status(&active(TaskStatus::Migrating)), "RESIZE");
        assert_eq!(api_status(&active(TaskStatus::Rebuilding)), "BUILD");
        assert_eq!(api_status(&active(TaskStatus::UpgradingError)), "ERROR");
        assert_eq!(
            api_status(&active(TaskStatus::BuildingErrorRebuild)),
            "ERROR"
        );
        for op in [Operation::Upgrade, Operation::Migrate, Operation::Rebuild] {
            assert!(check_operation("i", op, &active(TaskStatus::None)).is_ok());
            let busy = check_operation("i", op, &active(TaskStatus::Upgrading)).unwrap_err();
            assert_eq!(busy.fault().status, 422, "{op:?} while upgrading");
        }
        // Rebuild repairs: an error task or a dead guest does not refuse it; upgrade and migrate need a healthy one.
        let broken = st(
            TaskStatus::BuildingErrorRebuild,
            Some(ServerStatus::Active),
            ServiceStatus::FailedTimeoutGuestagent,
        );
        assert!(check_operation("i", Operation::Rebuild, &broken).is_ok());
        assert!(check_operation("i", Operation::Upgrade, &broken).is_err());
        assert!(check_operation("i", Operation::Migrate, &broken).is_err());
        let no_server = st(TaskStatus::None, None, ServiceStatus::Shutdown);
        assert!(check_operation("i", Operation::Rebuild, &no_server).is_err());
    }

    #[test]
    fn data_operations_need_a_running_datastore() {
        let shut = st(
            TaskStatus::None,
            Some(ServerStatus::Active),
            ServiceStatus::Shutdown,
        );
        assert_eq!(
            check_operation("i", Operation::ManageData, &shut)
                .unwrap_err()
                .fault()
                .status,
            422
        );
        let ok = st(
            TaskStatus::None,
            Some(ServerStatus::Active),
            ServiceStatus::Healthy,
        );
        assert!(check_operation("i", Operation::ManageData, &ok).is_ok());
        let pending = st(
            TaskStatus::None,
            Some(ServerStatus::Active),
            ServiceStatus::RestartRequired,
        );
        assert!(
            check_operation("i", Operation::ManageData, &pending).is_ok(),
            "users and databases stay manageable while a restart is pending"
        );
    }
}
