//! Requests to a guest agent and their client: the lifecycle calls, and one nested request enum per facet
//! (in this directory, each with the facet's typed client methods and its `serve`, which runs it on the
//! strategy).
//!
//! A request for a facet the strategy lacks answers upstream's status: 422 "Operation not supported for
//! datastore X: `<facet>`." for users, databases, root and configuration; 501 for TLS; for logs the list is empty
//! and an action on any name is a 404 ("Log" not found), as for an engine that exposes none.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

use super::{guest_topic, Envelope, Reply};
use crate::error::{Error, Result};
use crate::ports::{BackupJob, DynBus, FsStats, PrepareRequest};
use crate::seal::{guest_reply_context, guest_request_context, Sealer};

mod cluster;
mod configuration;
mod databases;
mod logs;
mod replication;
mod root;
mod tls;
mod users;

pub use cluster::ClusterRequest;
pub use configuration::ConfigurationRequest;
pub use databases::DatabasesRequest;
pub use logs::LogsRequest;
pub use replication::ReplicationRequest;
pub use root::RootRequest;
pub use tls::TlsRequest;
pub use users::UsersRequest;

/// Requests to a guest agent (upstream guest API, §3.1): the lifecycle, then one group per facet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum GuestRequest {
    /// Bring the engine up for the first time.
    Prepare(PrepareRequest),
    /// Bring the engine up again on its existing data after the server was rebuilt (or switched to another
    /// datastore version): render its configuration from the flavor and the attached overrides and start it
    /// (upstream `rebuild(ds_version, config_contents, config_overrides)`). Databases and users are left alone.
    Rebuild(PrepareRequest),
    /// Restart the engine.
    Restart,
    /// Start the engine.
    StartDb,
    /// Stop the engine.
    StopDb,
    /// Volume usage.
    GetFilesystemStats,
    /// Does the guest answer?
    RpcPing,
    /// Re-render config for a new flavor and restart (upstream `start_db_with_conf_changes`).
    ApplyFlavor {
        /// Memory of the new flavor, MB.
        memory_mb: u32,
    },
    /// The volume grew.
    ResizeFs {
        /// New size, GB.
        size_gb: u32,
    },
    /// The users facet.
    Users(UsersRequest),
    /// The databases facet.
    Databases(DatabasesRequest),
    /// The root facet.
    Root(RootRequest),
    /// The configuration facet.
    Configuration(ConfigurationRequest),
    /// The TLS facet.
    Tls(TlsRequest),
    /// The guest-logs facet.
    Logs(LogsRequest),
    /// The replication facet.
    Replication(ReplicationRequest),
    /// The cluster facet.
    Cluster(ClusterRequest),
    /// Take a backup (a cast: the guest works in the background and reports progress and the outcome to the
    /// conductor with [`ConductorRequest::UpdateBackup`](crate::rpc::ConductorRequest::UpdateBackup); asked again
    /// for a backup it is already taking, it carries on).
    Backup(BackupJob),
}

/// A handler's unit result as a reply value.
fn unit(r: Result<()>) -> Result<Value> {
    r.map(|()| Value::Null)
}

/// A handler's result as a reply value.
fn to_value<T: Serialize>(r: Result<T>) -> Result<Value> {
    r.and_then(|v| serde_json::to_value(v).map_err(|e| Error::backend("guest", e, false)))
}

/// Call timeouts towards guests (upstream `agent_call_low_timeout` / `agent_call_high_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestTimeouts {
    /// Quick calls (lists, pings).
    pub low: Duration,
    /// Slow calls (prepare, restart, root).
    pub high: Duration,
}

impl Default for GuestTimeouts {
    fn default() -> Self {
        GuestTimeouts {
            low: Duration::from_secs(15),
            high: Duration::from_secs(180),
        }
    }
}

/// Client of one instance's guest agent: the lifecycle calls here, each facet's calls in its module.
#[derive(Clone)]
pub struct GuestClient {
    bus: DynBus,
    instance_id: Uuid,
    sender: String,
    timeouts: GuestTimeouts,
    seal: Option<Sealer>,
}

impl std::fmt::Debug for GuestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestClient")
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

impl GuestClient {
    /// A client for `instance_id`'s guest.
    pub fn new(
        bus: DynBus,
        instance_id: Uuid,
        sender: impl Into<String>,
        timeouts: GuestTimeouts,
    ) -> GuestClient {
        GuestClient {
            bus,
            instance_id,
            sender: sender.into(),
            timeouts,
            seal: None,
        }
    }

    /// Seals requests (and opens sealed replies) with `seal`, the guest's own sealer: only that guest can read
    /// what is sent to it (passwords included), and what it answers.
    pub fn sealed(mut self, seal: Option<Sealer>) -> GuestClient {
        self.seal = seal;
        self
    }

    fn request_bytes(&self, req: GuestRequest) -> Result<Vec<u8>> {
        let body = Envelope::new(self.sender.clone(), req).encode()?;
        Ok(match &self.seal {
            Some(s) => s
                .seal(&body, &guest_request_context(self.instance_id))
                .into_bytes(),
            None => body,
        })
    }

    /// Sends a request and waits for its reply.
    pub async fn call<T: DeserializeOwned>(
        &self,
        req: GuestRequest,
        timeout: Duration,
    ) -> Result<T> {
        let body = self.request_bytes(req)?;
        let mut reply = self
            .bus
            .call(&guest_topic(self.instance_id), body, timeout)
            .await?;
        if Sealer::is_sealed(&reply) {
            let seal = self.seal.as_ref().ok_or_else(|| Error::Guest {
                instance_id: self.instance_id,
                message: "the guest sealed its reply but this client has no key for it".into(),
            })?;
            let text = String::from_utf8_lossy(&reply).into_owned();
            reply = seal.open(&text, &guest_reply_context(self.instance_id))?;
        }
        let reply: Reply = serde_json::from_slice(&reply).map_err(|e| Error::Guest {
            instance_id: self.instance_id,
            message: format!("undecodable reply: {e}"),
        })?;
        reply.into_result(self.instance_id)
    }

    /// Sends a request without waiting.
    pub async fn cast(&self, req: GuestRequest) -> Result<()> {
        let body = self.request_bytes(req)?;
        self.bus.cast(&guest_topic(self.instance_id), body).await
    }

    /// The low (quick) timeout.
    pub fn low(&self) -> Duration {
        self.timeouts.low
    }
    /// The high (slow) timeout.
    pub fn high(&self) -> Duration {
        self.timeouts.high
    }

    async fn call_unit(&self, req: GuestRequest, timeout: Duration) -> Result<()> {
        self.call::<Value>(req, timeout).await.map(|_| ())
    }

    /// Asks the guest to prepare a fresh engine (a cast: the guest may not serve its topic yet).
    pub async fn prepare(&self, req: PrepareRequest) -> Result<()> {
        self.cast(GuestRequest::Prepare(req)).await
    }
    /// Asks the guest to bring the engine up again on its existing data (a cast, like prepare).
    pub async fn rebuild(&self, req: PrepareRequest) -> Result<()> {
        self.cast(GuestRequest::Rebuild(req)).await
    }
    /// Asks the guest to take a backup (a cast; the guest reports to the conductor).
    pub async fn backup(&self, job: BackupJob) -> Result<()> {
        self.cast(GuestRequest::Backup(job)).await
    }
    /// Restarts the engine.
    pub async fn restart(&self) -> Result<()> {
        self.call_unit(GuestRequest::Restart, self.high()).await
    }
    /// Starts the engine.
    pub async fn start_db(&self) -> Result<()> {
        self.call_unit(GuestRequest::StartDb, self.high()).await
    }
    /// Stops the engine, waiting at most `timeout` for the guest's answer.
    pub async fn stop_db(&self, timeout: Duration) -> Result<()> {
        self.call_unit(GuestRequest::StopDb, timeout).await
    }
    /// Checks that the guest answers.
    pub async fn ping(&self) -> Result<()> {
        self.call_unit(GuestRequest::RpcPing, self.low()).await
    }
    /// Volume usage.
    pub async fn filesystem_stats(&self) -> Result<FsStats> {
        self.call(GuestRequest::GetFilesystemStats, self.low())
            .await
    }
    /// Re-renders the engine's memory settings for a flavor of `memory_mb` and restarts it.
    pub async fn apply_flavor(&self, memory_mb: u32) -> Result<()> {
        self.call_unit(GuestRequest::ApplyFlavor { memory_mb }, self.high())
            .await
    }
    /// The volume grew to `size_gb`.
    pub async fn resize_fs(&self, size_gb: u32) -> Result<()> {
        self.call_unit(GuestRequest::ResizeFs { size_gb }, self.high())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::SimulatedStrategy;
    use crate::model::{LogActionRequest, Manager, SslChange, SslMode};
    use crate::ports::DatastoreStrategy;

    fn status(r: Result<Value>) -> u16 {
        r.expect_err("refused").fault().status
    }

    #[test]
    fn facet_requests_nest_on_the_wire() {
        let req = GuestRequest::Users(UsersRequest::DeleteUser {
            username: "bob".into(),
            hostname: "%".into(),
        });
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"method": "users", "args": {"method": "delete_user",
                "args": {"username": "bob", "hostname": "%"}}})
        );
        assert_eq!(serde_json::from_value::<GuestRequest>(json).unwrap(), req);
        let flat = serde_json::json!({"method": "delete_user", "args": {"username": "bob", "hostname": "%"}});
        assert!(
            serde_json::from_value::<GuestRequest>(flat).is_err(),
            "the version 1 flat form is not a version 2 request"
        );
    }

    /// Mongodb's simulated strategy offers no facet: each group answers its upstream status.
    #[tokio::test]
    async fn missing_facets_answer_upstream_statuses() {
        let s = SimulatedStrategy::standalone(Manager::Mongodb);
        let s: &dyn DatastoreStrategy = &s;
        assert!(s.facets().is_empty());
        let e = UsersRequest::ListUsers.serve_on(s).await.unwrap_err();
        assert_eq!(e.fault().status, 422);
        assert_eq!(
            e.to_string(),
            "Operation not supported for datastore mongodb: users."
        );
        assert_eq!(
            status(DatabasesRequest::ListDatabases.serve_on(s).await),
            422
        );
        let grant = DatabasesRequest::GrantAccess {
            username: "u".into(),
            hostname: "%".into(),
            databases: vec!["d".into()],
        };
        let e = grant.serve_on(s).await.unwrap_err();
        assert!(e.to_string().ends_with(": user access."), "{e}");
        assert_eq!(status(RootRequest::DisableRoot.serve_on(s).await), 422);
        let apply = ConfigurationRequest::ApplyOverrides {
            overrides: Default::default(),
        };
        assert_eq!(status(apply.serve_on(s).await), 422);
        let enable = TlsRequest::SslAction {
            change: SslChange::Enable {
                mode: SslMode::Basic,
                container_ref: None,
                password_ref: None,
                names: vec![],
            },
        };
        assert_eq!(status(enable.serve_on(s).await), 501);
        let ctx = crate::guest_log::GuestLogContext {
            instance_id: Uuid::nil(),
            store: None,
        };
        let list = LogsRequest::GuestLogList.serve_on(s, &ctx).await.unwrap();
        assert_eq!(list, serde_json::json!([]));
        let action = LogsRequest::from(&LogActionRequest::new(
            "general",
            crate::model::LogAction::Enable,
        ));
        assert_eq!(status(action.serve_on(s, &ctx).await), 404);
    }
}
