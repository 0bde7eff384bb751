use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::state::BackupState;

/// A backup of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    /// Backup id.
    pub id: Uuid,
    /// Owning tenant.
    pub tenant_id: String,
    /// Source instance.
    pub instance_id: Option<Uuid>,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// State (§2.6).
    pub state: BackupState,
    /// Size in GB.
    pub size: Option<f64>,
    /// Where the backup object lives.
    pub location: Option<String>,
    /// Checksum of the object.
    pub checksum: Option<String>,
    /// Parent, for incremental backups.
    pub parent_id: Option<Uuid>,
    /// Full or incremental.
    pub backup_type: BackupType,
    /// Datastore version of the source.
    pub datastore_version_id: Uuid,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Last update.
    pub updated: DateTime<Utc>,
    /// Whether it was deleted.
    pub deleted: bool,
    /// Bytes written so far while it runs; its object's size in bytes once completed.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Where the backup ends in the engine's history (engine-specific; an incremental starts from it).
    #[serde(default)]
    pub position: Option<serde_json::Value>,
    /// Why it failed, when it did.
    #[serde(default)]
    pub fault: Option<String>,
    /// The container its object is in (upstream `swift_container`, or the backup strategy's).
    #[serde(default)]
    pub container: Option<String>,
    /// Whether the objects of this (deleted or failed) backup were removed from the store.
    #[serde(default)]
    pub purged: bool,
    /// The schedule that took it, if one did (its retention applies to it).
    #[serde(default)]
    pub schedule_id: Option<Uuid>,
}

impl Backup {
    /// The moment the engine's archive reached when this backup ended (the `time` its guest recorded in
    /// [`position`](Backup::position)); `None` for a backup taken before point-in-time restore existed.
    pub fn archived_at(&self) -> Option<DateTime<Utc>> {
        let t = self.position.as_ref()?.get("time")?.as_str()?;
        DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// The moments a point-in-time restore from `chain` (its full backup first, each incremental after its parent) may
/// stop at: from the end of the full backup to the end of the last incremental. The archive an incremental carries
/// (PostgreSQL's WAL, MariaDB's binary logs since its parent) is what a restore replays to the moment, so a chain
/// without an incremental covers no window (`None`), nor does one whose backups recorded no archive times.
pub fn restore_window(chain: &[Backup]) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    match chain {
        [full, .., last] => Some((full.archived_at()?, last.archived_at()?)),
        _ => None,
    }
}

/// Full or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    /// A full copy.
    Full,
    /// Changes since the parent.
    Incremental,
}

/// Which backups to list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupFilter {
    /// Only this tenant's (`None`: all).
    pub tenant_id: Option<String>,
    /// Only this instance's.
    pub instance_id: Option<Uuid>,
    /// Include deleted rows.
    pub include_deleted: bool,
}

impl BackupFilter {
    /// Whether `b` passes the filter.
    pub fn matches(&self, b: &Backup) -> bool {
        (self.include_deleted || !b.deleted)
            && self.tenant_id.as_ref().is_none_or(|t| *t == b.tenant_id)
            && self.instance_id.is_none_or(|i| Some(i) == b.instance_id)
    }
}

/// Where a tenant's backups go by default (upstream `backup_strategy`): for one instance, or for every instance of
/// the tenant (`instance_id: None`). One strategy per (tenant, instance); creating another replaces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupStrategy {
    /// Owning tenant (upstream `project_id`).
    pub tenant_id: String,
    /// The instance it applies to; `None`: every instance of the tenant without a strategy of its own.
    pub instance_id: Option<Uuid>,
    /// Container the backups are written to.
    pub container: String,
    /// Creation time.
    pub created: DateTime<Utc>,
}

/// Which backup strategies to list or delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStrategyFilter {
    /// Only this tenant's (`None`: all).
    pub tenant_id: Option<String>,
    /// Only the strategy of this instance (`None`: any).
    pub instance_id: Option<Uuid>,
}

impl BackupStrategyFilter {
    /// Whether `s` passes the filter.
    pub fn matches(&self, s: &BackupStrategy) -> bool {
        self.tenant_id.as_ref().is_none_or(|t| *t == s.tenant_id)
            && self.instance_id.is_none_or(|i| Some(i) == s.instance_id)
    }
}

/// When a backup schedule runs: every `interval` seconds, or at the times of a cron expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleTimes {
    /// Every this many seconds (at least 60).
    Interval(u64),
    /// A five-field cron expression (minute hour day-of-month month day-of-week; `*`, lists, ranges, steps),
    /// in UTC.
    Cron(String),
}

/// Scheduled backups of an instance with retention, run by the task manager (beyond upstream, which needs
/// Mistral).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupSchedule {
    /// Schedule id.
    pub id: Uuid,
    /// Owning tenant.
    pub tenant_id: String,
    /// The instance backed up.
    pub instance_id: Uuid,
    /// Name (the backups it takes are named after it).
    pub name: String,
    /// When it runs.
    pub times: ScheduleTimes,
    /// Take incrementals on the latest completed backup (a full one when there is none).
    pub incremental: bool,
    /// Keep at most this many of its backups (the newest).
    pub keep_last: Option<u32>,
    /// Keep its backups for this many days.
    pub keep_days: Option<u32>,
    /// The next run.
    pub next_run: DateTime<Utc>,
    /// The last run.
    pub last_run: Option<DateTime<Utc>>,
    /// The backup the last run started.
    pub last_backup_id: Option<Uuid>,
    /// Why the last run took no backup, when it did not.
    pub last_error: Option<String>,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Optimistic-concurrency version; the store bumps it on every write (a run is claimed by moving
    /// `next_run` at the version read, so with several task managers each run happens once).
    #[serde(default)]
    pub version: u64,
}
