use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A durable unit of task-manager work: what to do, for which instance, and how far it got.
///
/// The API inserts it in the same transaction as the state change that asked for it; a task manager claims it
/// (with a lease), runs its steps, journaling each one before and after the side effect, and finishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    /// Workflow id.
    pub id: Uuid,
    /// What it does.
    pub kind: WorkflowKind,
    /// Instance it works on.
    pub instance_id: Uuid,
    /// Parameters (kind specific).
    pub params: Value,
    /// Progress.
    pub state: WorkflowState,
    /// Worker holding the lease.
    pub owner: Option<String>,
    /// Until when the lease holds; another worker may claim it afterwards.
    pub lease_until: Option<DateTime<Utc>>,
    /// Attempts so far (claims).
    pub attempts: u32,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Last update.
    pub updated: DateTime<Utc>,
    /// Optimistic-concurrency version; the store bumps it on every write.
    pub version: u64,
}

/// Kinds of workflows the task manager runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowKind {
    /// Provision an instance.
    Create,
    /// Tear an instance down.
    Delete,
    /// Tear down without asking the guest.
    ForceDelete,
    /// Restart the engine.
    Restart,
    /// Reboot the server (mgmt).
    Reboot,
    /// Move to another flavor.
    ResizeFlavor,
    /// Grow the volume.
    ResizeVolume,
    /// Take a backup.
    Backup,
    /// Delete a backup.
    DeleteBackup,
    /// Apply a configuration group.
    ApplyConfiguration,
    /// Promote a replica.
    Promote,
    /// Eject a dead source.
    Eject,
    /// Detach a replica.
    Detach,
    /// Move to another version of the same datastore.
    Upgrade,
    /// Move the server to another host (mgmt).
    Migrate,
    /// Rebuild the server from an image, keeping data and configuration (mgmt).
    Rebuild,
}

/// Where a workflow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowState {
    /// Waiting to be (re)claimed.
    Pending,
    /// Being run by its owner.
    Running,
    /// Undoing completed steps after a failure.
    RollingBack,
    /// Finished.
    Done,
    /// Finished with an error (the instance shows the error task).
    Failed,
}

impl WorkflowState {
    /// Whether the workflow still has work to do.
    pub fn is_open(self) -> bool {
        match self {
            WorkflowState::Pending | WorkflowState::Running | WorkflowState::RollingBack => true,
            WorkflowState::Done | WorkflowState::Failed => false,
        }
    }
}

/// One journal line: a step started or completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Workflow id.
    pub workflow_id: Uuid,
    /// Step name.
    pub step: String,
    /// Started or completed.
    pub phase: JournalPhase,
    /// Step output worth keeping (ids of created resources...).
    pub data: Value,
    /// When.
    pub at: DateTime<Utc>,
}

/// Journal phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalPhase {
    /// The side effect is about to happen.
    Started,
    /// The side effect happened.
    Completed,
    /// The side effect was undone.
    Compensated,
}
