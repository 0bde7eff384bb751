use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use uuid::Uuid;

use crate::error::{Error, Result};

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

/// What a workflow does, by name (`create`, `delete`, `backup`...): the key under which the task manager's
/// registry finds its implementation. The engine that runs workflows knows no kind by name; each workflow's
/// parameter type declares its own ([`WorkflowParams::KIND`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkflowKind(Cow<'static, str>);

impl WorkflowKind {
    /// A kind named `name` (snake_case by convention; it is stored in the journal).
    pub const fn new(name: &'static str) -> WorkflowKind {
        WorkflowKind(Cow::Borrowed(name))
    }

    /// The kind's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for WorkflowKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for WorkflowKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The typed parameters of one workflow kind.
///
/// A workflow's parameters are stored in its record as `{"v": VERSION, "params": {...}}`, so a newer task manager
/// can still read what an older API journaled: [`WorkflowParams::upgrade`] turns an older version's JSON into this
/// one's. (Records written before versioning hold the bare parameters; they read as version 1.)
pub trait WorkflowParams: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind these parameters belong to.
    const KIND: WorkflowKind;
    /// The current version of the parameters' JSON.
    const VERSION: u32 = 1;

    /// Turns parameters journaled at version `from` (older than [`Self::VERSION`]) into the current JSON. By
    /// default no older version is known.
    fn upgrade(from: u32, value: Value) -> Result<Value> {
        let _ = value;
        Err(Error::bad_request(format!(
            "workflow parameters of {} at version {from} cannot be read by this version ({})",
            Self::KIND,
            Self::VERSION
        )))
    }

    /// Forgets secrets the workflow no longer needs (called when the workflow ends, whatever the outcome). By
    /// default there are none.
    fn scrub(&mut self) {}
}

impl Workflow {
    /// A new pending workflow of `P`'s kind for `instance_id`.
    pub fn new<P: WorkflowParams>(
        instance_id: Uuid,
        params: &P,
        now: DateTime<Utc>,
    ) -> Result<Workflow> {
        Ok(Workflow {
            id: Uuid::new_v4(),
            kind: P::KIND,
            instance_id,
            params: encode_params(params)?,
            state: WorkflowState::Pending,
            owner: None,
            lease_until: None,
            attempts: 0,
            created: now,
            updated: now,
            version: 0,
        })
    }

    /// The typed parameters (upgraded from an older version when needed).
    pub fn params<P: WorkflowParams>(&self) -> Result<P> {
        if self.kind != P::KIND {
            return Err(Error::bad_request(format!(
                "workflow {} is a {} workflow, not {}",
                self.id,
                self.kind,
                P::KIND
            )));
        }
        let (v, body) = match (&self.params.get("v"), &self.params.get("params")) {
            (Some(Value::Number(v)), Some(body))
                if self.params.as_object().map(|o| o.len()) == Some(2) =>
            {
                (v.as_u64().unwrap_or(0) as u32, (*body).clone())
            }
            // Written before parameters were versioned.
            _ => (1, self.params.clone()),
        };
        let body = match v.cmp(&P::VERSION) {
            std::cmp::Ordering::Equal => body,
            std::cmp::Ordering::Less => P::upgrade(v, body)?,
            std::cmp::Ordering::Greater => {
                return Err(Error::bad_request(format!(
                    "workflow {} has {} parameters of version {v}, newer than this task manager reads ({}); \
                     upgrade it",
                    self.id,
                    P::KIND,
                    P::VERSION
                )))
            }
        };
        serde_json::from_value(body).map_err(|e| {
            Error::bad_request(format!(
                "workflow {} has unreadable {} parameters: {e}",
                self.id,
                P::KIND
            ))
        })
    }

    /// Replaces the parameters (same kind).
    pub fn set_params<P: WorkflowParams>(&mut self, params: &P) -> Result<()> {
        self.params = encode_params(params)?;
        Ok(())
    }
}

fn encode_params<P: WorkflowParams>(params: &P) -> Result<Value> {
    let body = serde_json::to_value(params)
        .map_err(|e| Error::bad_request(format!("unencodable {} parameters: {e}", P::KIND)))?;
    Ok(serde_json::json!({ "v": P::VERSION, "params": body }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct P2 {
        name: String,
        size: u32,
    }

    impl WorkflowParams for P2 {
        const KIND: WorkflowKind = WorkflowKind::new("test_p");
        const VERSION: u32 = 2;
        fn upgrade(from: u32, mut value: Value) -> Result<Value> {
            assert_eq!(from, 1);
            value["size"] = json!(1);
            Ok(value)
        }
    }

    #[test]
    fn params_are_versioned_and_upgraded() {
        let now = Utc::now();
        let p = P2 {
            name: "a".into(),
            size: 3,
        };
        let wf = Workflow::new(Uuid::new_v4(), &p, now).unwrap();
        assert_eq!(wf.kind.as_str(), "test_p");
        assert_eq!(
            wf.params,
            json!({ "v": 2, "params": { "name": "a", "size": 3 } })
        );
        assert_eq!(wf.params::<P2>().unwrap(), p);
        // A record written before versioning (bare parameters) reads as version 1 and is upgraded.
        let legacy = Workflow {
            params: json!({ "name": "b" }),
            ..wf.clone()
        };
        assert_eq!(
            legacy.params::<P2>().unwrap(),
            P2 {
                name: "b".into(),
                size: 1
            }
        );
        // A newer version than this code knows is refused with a message saying so.
        let newer = Workflow {
            params: json!({ "v": 3, "params": { "name": "c", "size": 1 } }),
            ..wf.clone()
        };
        assert!(newer
            .params::<P2>()
            .unwrap_err()
            .to_string()
            .contains("newer"));
        // Kinds are checked.
        let other = Workflow {
            kind: WorkflowKind::new("other"),
            ..wf
        };
        assert!(other.params::<P2>().is_err());
        assert_eq!(
            serde_json::to_value(WorkflowKind::new("create")).unwrap(),
            json!("create")
        );
    }
}
