//! Guest logs (upstream `guest_log`): the engine logs a guest exposes, their status, and how their published
//! parts are named in the object store. Plain data and pure rules; the bookkeeping that talks to the store is in
//! [`crate::guest_log`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Manager;
use crate::error::{Error, Result};

/// Container published logs go to (upstream `database_log_container`).
pub const DEFAULT_LOG_CONTAINER: &str = "database_logs";

/// Who a log belongs to (upstream `LogType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogType {
    /// A system log: always on, can only be published.
    Sys,
    /// A user log: off until enabled.
    User,
}

impl LogType {
    /// Upstream spelling (`SYS`, `USER`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogType::Sys => "SYS",
            LogType::User => "USER",
        }
    }
}

/// Status of a guest log (upstream `LogStatus`).
///
/// Computed from whether the log is on, the size of the log and how much of it was published
/// (see [`log_status`]); never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LogStatus {
    /// A user log that is off.
    Disabled,
    /// On, and nothing written yet (or nothing since everything was discarded and the log is empty).
    Enabled,
    /// The log cannot be read on this guest.
    Unavailable,
    /// On, with bytes waiting and nothing published.
    Ready,
    /// Everything written so far is published.
    Published,
    /// Some of it is published, more is waiting.
    Partial,
    /// The log file shrank below what was published (it was rotated); the next publish starts afresh.
    Rotated,
    /// The engine must restart for the last enable/disable to take effect.
    #[serde(rename = "Restart_Required")]
    RestartRequired,
    /// The engine restarted after a change that needed it.
    #[serde(rename = "Restart_Completed")]
    RestartCompleted,
}

impl LogStatus {
    /// Upstream spelling (`Disabled`, ..., `Restart_Required`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Disabled => "Disabled",
            LogStatus::Enabled => "Enabled",
            LogStatus::Unavailable => "Unavailable",
            LogStatus::Ready => "Ready",
            LogStatus::Published => "Published",
            LogStatus::Partial => "Partial",
            LogStatus::Rotated => "Rotated",
            LogStatus::RestartRequired => "Restart_Required",
            LogStatus::RestartCompleted => "Restart_Completed",
        }
    }
}

/// The status of a log from its facts (upstream `GuestLog._update_details`):
/// off → `Disabled` (a system log is never off); shrunk below the published size → `Rotated`;
/// more written than published → `Partial` (something published) or `Ready`; all published → `Published`
/// (something published) or `Enabled`.
pub fn log_status(log_type: LogType, enabled: bool, size: u64, published: u64) -> LogStatus {
    if log_type == LogType::User && !enabled {
        return LogStatus::Disabled;
    }
    if size < published {
        LogStatus::Rotated
    } else if size > published {
        if published > 0 {
            LogStatus::Partial
        } else {
            LogStatus::Ready
        }
    } else if published > 0 {
        LogStatus::Published
    } else {
        LogStatus::Enabled
    }
}

/// A log as the guest reports it (the `guest_log_list` / `guest_log_action` reply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestLog {
    /// Log name (`general`, `slow_query`).
    pub name: String,
    /// Type.
    pub log_type: LogType,
    /// Status.
    pub status: LogStatus,
    /// Bytes published.
    pub published: u64,
    /// Bytes written and not yet published.
    pub pending: u64,
    /// Container of the published parts, when something is published.
    pub container: Option<String>,
    /// Object-name prefix of the published parts, when something is published.
    pub prefix: Option<String>,
    /// Object name of the log's metafile.
    pub metafile: String,
}

/// A log as the REST API shows it: every field a string, `"None"` for what is absent (upstream view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogView {
    /// Log name.
    pub name: String,
    /// `USER` or `SYS`.
    #[serde(rename = "type")]
    pub log_type: String,
    /// Status (`Disabled`, `Enabled`, `Ready`, `Published`, `Partial`, ...).
    pub status: String,
    /// Bytes published, as a decimal string.
    pub published: String,
    /// Bytes pending, as a decimal string.
    pub pending: String,
    /// Container, or `"None"`.
    pub container: String,
    /// Object-name prefix, or `"None"`.
    pub prefix: String,
    /// Metafile object name.
    pub metafile: String,
}

impl GuestLog {
    /// The REST view.
    pub fn view(&self) -> LogView {
        LogView {
            name: self.name.clone(),
            log_type: self.log_type.as_str().to_string(),
            status: self.status.as_str().to_string(),
            published: self.published.to_string(),
            pending: self.pending.to_string(),
            container: self.container.clone().unwrap_or_else(|| "None".into()),
            prefix: self.prefix.clone().unwrap_or_else(|| "None".into()),
            metafile: self.metafile.clone(),
        }
    }
}

/// The logs a manager exposes to users (upstream `guest_log_exposed_logs`): `general` and `slow_query` for the
/// MySQL family, `general` for PostgreSQL, none for the others. All are user logs.
pub fn exposed_logs(manager: Manager) -> &'static [&'static str] {
    match manager {
        Manager::Mysql | Manager::Mariadb => &["general", "slow_query"],
        Manager::Postgresql => &["general"],
        Manager::Redis | Manager::Mongodb | Manager::Cassandra => &[],
    }
}

/// The type of an exposed log of `manager`, or 404 for a log it does not define.
pub fn exposed_log_type(manager: Manager, name: &str) -> Result<LogType> {
    if exposed_logs(manager).contains(&name) {
        Ok(LogType::User)
    } else {
        Err(Error::not_found("Log", name.escape_default()))
    }
}

/// Object-name prefix of a log's published parts: `<instance_id>/<manager>-<log>/`.
pub fn log_prefix(instance_id: Uuid, manager: Manager, name: &str) -> String {
    format!("{instance_id}/{}-{name}/", manager.as_str())
}

/// Object name of a log's metafile: `<instance_id>/<manager>-<log>_metafile`.
pub fn log_metafile(instance_id: Uuid, manager: Manager, name: &str) -> String {
    format!("{instance_id}/{}-{name}_metafile", manager.as_str())
}

/// What to do with a log (exactly one thing per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogAction {
    /// Only show it.
    Show,
    /// Turn it on.
    Enable,
    /// Turn it off.
    Disable,
    /// Copy what was written since the last publish to the object store (turns a user log on if it is off).
    Publish,
    /// Delete every published part.
    Discard,
}

/// `POST /instances/{id}/log`, decoded: the log and the flags that were set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogActionRequest {
    /// Log name.
    pub name: String,
    /// `enable` was set.
    pub enable: bool,
    /// `disable` was set.
    pub disable: bool,
    /// `publish` was set.
    pub publish: bool,
    /// `discard` was set.
    pub discard: bool,
}

impl LogActionRequest {
    /// A request for one action on `name`.
    pub fn new(name: impl Into<String>, action: LogAction) -> LogActionRequest {
        let mut r = LogActionRequest {
            name: name.into(),
            ..Default::default()
        };
        match action {
            LogAction::Show => {}
            LogAction::Enable => r.enable = true,
            LogAction::Disable => r.disable = true,
            LogAction::Publish => r.publish = true,
            LogAction::Discard => r.discard = true,
        }
        r
    }

    /// The actions asked for, in the order they run: `enable` or `disable`, then `discard`, then `publish` (what
    /// the client's `log set --discard --publish` means: drop what was published, then publish afresh). No flag
    /// is `[Show]`; `enable` together with `disable` is a 400.
    pub fn actions(&self) -> Result<Vec<LogAction>> {
        if self.enable && self.disable {
            return Err(Error::bad_request(format!(
                "Log '{}' cannot be enabled and disabled at once.",
                self.name.escape_default()
            )));
        }
        let set: Vec<LogAction> = [
            (self.enable, LogAction::Enable),
            (self.disable, LogAction::Disable),
            (self.discard, LogAction::Discard),
            (self.publish, LogAction::Publish),
        ]
        .into_iter()
        .filter_map(|(on, a)| on.then_some(a))
        .collect();
        Ok(if set.is_empty() {
            vec![LogAction::Show]
        } else {
            set
        })
    }
}

/// What a guest remembers about one log between requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogState {
    /// The log is on.
    pub enabled: bool,
    /// Bytes of the log published so far (its offset where the next publish starts).
    pub published: u64,
    /// Sequence number of the next published part.
    pub next_part: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_upstream_rules() {
        use LogStatus::*;
        let u = LogType::User;
        assert_eq!(log_status(u, false, 100, 0), Disabled);
        assert_eq!(log_status(u, false, 0, 0), Disabled);
        assert_eq!(log_status(u, true, 0, 0), Enabled);
        assert_eq!(log_status(u, true, 10, 0), Ready);
        assert_eq!(log_status(u, true, 10, 10), Published);
        assert_eq!(log_status(u, true, 20, 10), Partial);
        assert_eq!(log_status(u, true, 5, 10), Rotated);
        // A system log is never off.
        assert_eq!(log_status(LogType::Sys, false, 10, 0), Ready);
    }

    #[test]
    fn actions_run_in_the_upstream_order() {
        use LogAction::*;
        let mut r = LogActionRequest::new("general", Show);
        assert_eq!(r.actions().unwrap(), [Show]);
        r.publish = true;
        r.discard = true;
        r.enable = true;
        assert_eq!(r.actions().unwrap(), [Enable, Discard, Publish]);
        r.disable = true;
        assert_eq!(r.actions().unwrap_err().fault().status, 400);
    }

    #[test]
    fn views_are_strings_with_none_for_absent_parts() {
        let id = Uuid::nil();
        let log = GuestLog {
            name: "general".into(),
            log_type: LogType::User,
            status: LogStatus::RestartRequired,
            published: 0,
            pending: 12,
            container: None,
            prefix: None,
            metafile: log_metafile(id, Manager::Mysql, "general"),
        };
        let v = serde_json::to_value(log.view()).unwrap();
        assert_eq!(v["type"], "USER");
        assert_eq!(v["status"], "Restart_Required");
        assert_eq!(v["pending"], "12");
        assert_eq!(v["container"], "None");
        assert_eq!(
            v["metafile"],
            "00000000-0000-0000-0000-000000000000/mysql-general_metafile"
        );
        assert_eq!(
            log_prefix(id, Manager::Postgresql, "general"),
            "00000000-0000-0000-0000-000000000000/postgresql-general/"
        );
    }

    #[test]
    fn exposed_logs_per_manager() {
        assert_eq!(exposed_logs(Manager::Mariadb), &["general", "slow_query"]);
        assert_eq!(exposed_logs(Manager::Postgresql), &["general"]);
        assert!(exposed_logs(Manager::Redis).is_empty());
        assert_eq!(
            exposed_log_type(Manager::Postgresql, "slow_query")
                .unwrap_err()
                .fault()
                .status,
            404
        );
    }
}
