//! Typed RPC over the [`MessageBus`](crate::ports::MessageBus): the messages of the task manager, the conductor and the guest agents,
//! their envelope (version, sender, time, optional signature) and thin clients.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use std::sync::Arc;
use uuid::Uuid;

use crate::error::{Error, Fault, Result};
use crate::model::Secret;
use crate::ports::{DynBus, FsStats};
use crate::state::{BackupState, ServiceStatus};

mod guest;

pub use guest::{
    ConfigurationRequest, DatabasesRequest, GuestClient, GuestRequest, GuestTimeouts, LogsRequest,
    ReplicationRequest, RootRequest, TlsRequest, UsersRequest,
};

/// Version of the message formats below. Receivers accept messages of this version or older.
///
/// Version 2: guest requests are grouped per facet ([`GuestRequest::Users`], ...).
pub const PROTOCOL_VERSION: u32 = 2;
/// Topic of the task manager.
pub const TASKMANAGER_TOPIC: &str = "taskmanager";
/// Topic of the conductor.
pub const CONDUCTOR_TOPIC: &str = "trove-conductor";

/// Topic of an instance's guest agent.
pub fn guest_topic(instance_id: Uuid) -> String {
    format!("guestagent.{instance_id}")
}

/// What every message travels in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Protocol version of the sender.
    pub v: u32,
    /// Who sent it (`api`, `taskmanager`, `guest:<instance_id>`...).
    pub sender: String,
    /// When it was sent; receivers drop messages older than the last seen from the same sender.
    pub sent: DateTime<Utc>,
    /// The message.
    pub body: T,
    /// Hex HMAC-SHA256 over the canonical JSON of `[v, sender, sent, body]`, when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

fn mac_input<T: Serialize>(
    v: u32,
    sender: &str,
    sent: &DateTime<Utc>,
    body: &T,
) -> Result<Vec<u8>> {
    serde_json::to_vec(&(v, sender, sent, body))
        .map_err(|e| Error::bad_request(format!("unencodable message: {e}")))
}

impl<T: Serialize + DeserializeOwned> Envelope<T> {
    /// Wraps a message.
    pub fn new(sender: impl Into<String>, body: T) -> Envelope<T> {
        Envelope {
            v: PROTOCOL_VERSION,
            sender: sender.into(),
            sent: Utc::now(),
            body,
            sig: None,
        }
    }

    /// Signs the envelope with `key`.
    pub fn signed(mut self, key: &Secret) -> Result<Envelope<T>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes())
            .map_err(|_| Error::bad_request("invalid signing key"))?;
        mac.update(&mac_input(self.v, &self.sender, &self.sent, &self.body)?);
        self.sig = Some(hex::encode(mac.finalize().into_bytes()));
        Ok(self)
    }

    /// Checks the signature against `key` (constant time). Unsigned envelopes fail.
    pub fn verify(&self, key: &Secret) -> bool {
        let Some(sig) = self.sig.as_deref().and_then(|s| hex::decode(s).ok()) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()) else {
            return false;
        };
        let Ok(input) = mac_input(self.v, &self.sender, &self.sent, &self.body) else {
            return false;
        };
        mac.update(&input);
        mac.verify_slice(&sig).is_ok()
    }

    /// Encodes to bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| Error::bad_request(format!("unencodable message: {e}")))
    }

    /// Decodes from bytes; a newer protocol version is refused.
    pub fn decode(bytes: &[u8]) -> Result<Envelope<T>> {
        let env: Envelope<T> = serde_json::from_slice(bytes)
            .map_err(|e| Error::bad_request(format!("undecodable message: {e}")))?;
        if env.v > PROTOCOL_VERSION {
            return Err(Error::bad_request(format!(
                "message protocol version {} is newer than this service understands ({PROTOCOL_VERSION}); upgrade it",
                env.v
            )));
        }
        Ok(env)
    }
}

/// Casts to the task manager (upstream: every TM method is a cast).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum TaskManagerRequest {
    /// Run (or resume) a stored workflow.
    RunWorkflow {
        /// The workflow.
        workflow_id: Uuid,
    },
}

/// Casts to the conductor (guest reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum ConductorRequest {
    /// Periodic status of a guest.
    Heartbeat {
        /// Reporting instance.
        instance_id: Uuid,
        /// Service status.
        status: ServiceStatus,
        /// Why, when not healthy.
        reason: Option<String>,
        /// Volume usage.
        fs: Option<FsStats>,
        /// Load figures (engines that can be cluster members report them).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        load: Option<crate::model::LoadMetrics>,
    },
    /// Progress of a backup.
    UpdateBackup {
        /// Instance that runs it.
        instance_id: Uuid,
        /// Backup id.
        backup_id: Uuid,
        /// New state.
        state: BackupState,
        /// Size in GB.
        size: Option<f64>,
        /// Object checksum.
        checksum: Option<String>,
        /// Object location.
        location: Option<String>,
        /// Bytes written so far (progress), or in all once completed.
        #[serde(default)]
        bytes: Option<u64>,
        /// Where the backup ends in the engine's history (for the next incremental).
        #[serde(default)]
        position: Option<Value>,
        /// Why it failed.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Root was enabled on the guest.
    ReportRoot {
        /// Instance.
        instance_id: Uuid,
        /// Who.
        user: String,
    },
}

/// A reply: the result value, or an error with its upstream status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Success.
    Ok(Value),
    /// Failure.
    Err {
        /// Upstream HTTP status of the error.
        status: u16,
        /// Message.
        message: String,
    },
}

impl Reply {
    /// Encodes a handler result as a reply.
    pub fn from_result<T: Serialize>(r: Result<T>) -> Reply {
        match r {
            Ok(v) => match serde_json::to_value(v) {
                Ok(v) => Reply::Ok(v),
                Err(e) => Reply::Err {
                    status: 500,
                    message: e.to_string(),
                },
            },
            Err(e) => Reply::Err {
                status: e.fault().status,
                message: e.to_string(),
            },
        }
    }

    /// Turns a reply back into a result, keeping the remote error's status.
    pub fn into_result<T: DeserializeOwned>(self, instance_id: Uuid) -> Result<T> {
        match self {
            Reply::Ok(v) => serde_json::from_value(v).map_err(|e| Error::Guest {
                instance_id,
                message: format!("unexpected reply: {e}"),
            }),
            Reply::Err { status, message } => Err(error_from_status(status, message, instance_id)),
        }
    }
}

/// Rebuilds an error from a status and message that crossed the wire.
pub fn error_from_status(status: u16, message: String, instance_id: Uuid) -> Error {
    match Fault::for_status(status).status {
        400 => Error::BadRequest { message },
        401 => Error::Unauthorized { message },
        403 => Error::Forbidden { message },
        404 => Error::NotFound {
            what: "Resource",
            id: message,
        },
        409 => Error::Conflict { message },
        413 => Error::OverLimit {
            message,
            retry_after: None,
        },
        422 => Error::Unprocessable { message },
        501 => Error::NotImplemented { message },
        _ => Error::Guest {
            instance_id,
            message,
        },
    }
}

/// Client of the task manager.
#[derive(Clone)]
pub struct TaskManagerClient {
    bus: DynBus,
    sender: String,
}

impl TaskManagerClient {
    /// A client sending as `sender`.
    pub fn new(bus: DynBus, sender: impl Into<String>) -> TaskManagerClient {
        TaskManagerClient {
            bus,
            sender: sender.into(),
        }
    }
    /// Asks a task manager to run a workflow.
    pub async fn run_workflow(&self, workflow_id: Uuid) -> Result<()> {
        let body = Envelope::new(
            self.sender.clone(),
            TaskManagerRequest::RunWorkflow { workflow_id },
        )
        .encode()?;
        self.bus.cast(TASKMANAGER_TOPIC, body).await
    }
}

/// Client of the conductor, used by guests; signs every report when it has a key.
#[derive(Clone)]
pub struct ConductorClient {
    bus: DynBus,
    sender: String,
    key: Option<Arc<Secret>>,
}

impl ConductorClient {
    /// A client sending as `sender`, signing with `key` when given.
    pub fn new(bus: DynBus, sender: impl Into<String>, key: Option<Secret>) -> ConductorClient {
        ConductorClient {
            bus,
            sender: sender.into(),
            key: key.map(Arc::new),
        }
    }
    /// Sends a report.
    pub async fn send(&self, req: ConductorRequest) -> Result<()> {
        let mut env = Envelope::new(self.sender.clone(), req);
        if let Some(k) = &self.key {
            env = env.signed(k)?;
        }
        self.bus.cast(CONDUCTOR_TOPIC, env.encode()?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_the_sender_and_body() {
        let key = Secret::new("k1");
        let env = Envelope::new(
            "guest:a",
            ConductorRequest::ReportRoot {
                instance_id: Uuid::nil(),
                user: "root".into(),
            },
        )
        .signed(&key)
        .unwrap();
        assert!(env.verify(&key));
        assert!(!env.verify(&Secret::new("k2")));
        let mut forged = env.clone();
        forged.sender = "guest:b".into();
        assert!(!forged.verify(&key));
        let back: Envelope<ConductorRequest> = Envelope::decode(&env.encode().unwrap()).unwrap();
        assert!(back.verify(&key));
    }

    #[test]
    fn remote_errors_keep_their_status() {
        let r = Reply::from_result::<()>(Err(Error::unprocessable("nope")));
        let e = r.into_result::<()>(Uuid::nil()).unwrap_err();
        assert_eq!(e.fault().status, 422);
    }
}
