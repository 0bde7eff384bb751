//! The replication facet on the wire (upstream `get_replication_snapshot`, `attach_replica`, `detach_replica`,
//! `make_read_only`, `enable_as_master`, `wait_for_txn`, `get_latest_txn_id`, under names of this facet). The
//! replication account's password travels inside the request, sealed with the rest of it on a sealed bus.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

use super::{to_value, unit, GuestClient, GuestRequest};
use crate::error::{Error, Result};
use crate::model::Facet;
use crate::ports::{
    not_supported, DatastoreStrategy, ReplicaPosition, ReplicationFacet, ReplicationSource,
};

/// Requests of the replication facet ([`ReplicationFacet`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum ReplicationRequest {
    /// The replication account and address of the engine as a source.
    SourceInfo,
    /// Follow a source.
    Attach {
        /// The source.
        source: ReplicationSource,
    },
    /// The engine's position.
    Position,
    /// Wait until the engine covers a position.
    WaitFor {
        /// The position.
        position: ReplicaPosition,
        /// How long to wait, in seconds.
        timeout_secs: u64,
    },
    /// Stop (or allow again) writes from every account but the guest's.
    SetReadOnly {
        /// Read only.
        read_only: bool,
    },
    /// Become a writable source.
    Promote,
    /// Become a standalone writable instance.
    Detach,
    /// Take no more writes, even frozen and resumed ([`DatastoreStrategy::fence`]); answers without connecting
    /// to the engine.
    Fence,
}

/// How long a guest waits for its engine's replication position.
const POSITION_TIMEOUT: Duration = Duration::from_secs(2);

impl ReplicationRequest {
    /// Runs the request on the facet.
    pub async fn serve(self, facet: &dyn ReplicationFacet) -> Result<Value> {
        match self {
            ReplicationRequest::SourceInfo => to_value(facet.source_info().await),
            ReplicationRequest::Attach { source } => unit(facet.attach(&source).await),
            // A frozen engine must not hold the guest (which serves one request at a time) past this: a fence
            // may come next.
            ReplicationRequest::Position => {
                match tokio::time::timeout(POSITION_TIMEOUT, facet.position()).await {
                    Ok(r) => to_value(r),
                    Err(_) => Err(Error::backend(
                        "guest",
                        format!(
                            "the engine did not answer with its position within {} s",
                            POSITION_TIMEOUT.as_secs()
                        ),
                        true,
                    )),
                }
            }
            ReplicationRequest::WaitFor {
                position,
                timeout_secs,
            } => unit(
                facet
                    .wait_for(&position, Duration::from_secs(timeout_secs))
                    .await,
            ),
            ReplicationRequest::SetReadOnly { read_only } => {
                unit(facet.set_read_only(read_only).await)
            }
            ReplicationRequest::Promote => unit(facet.promote().await),
            ReplicationRequest::Detach => unit(facet.detach().await),
            // Served by the strategy, before the facet: see `serve_on`.
            ReplicationRequest::Fence => {
                Err(crate::Error::bad_request("fence is served by the strategy"))
            }
        }
    }

    /// Runs the request on `strategy`'s replication facet; without one, upstream's 422.
    pub async fn serve_on(self, strategy: &dyn DatastoreStrategy) -> Result<Value> {
        if self == ReplicationRequest::Fence {
            return unit(strategy.fence().await);
        }
        match strategy.replication() {
            Some(f) => self.serve(f).await,
            None => Err(not_supported(
                strategy.manager(),
                Facet::Replication.as_str(),
            )),
        }
    }
}

impl GuestClient {
    /// The replication account and address of the instance as a source.
    pub async fn replication_source_info(&self) -> Result<ReplicationSource> {
        let req = GuestRequest::Replication(ReplicationRequest::SourceInfo);
        self.call(req, self.high()).await
    }
    /// Makes the instance follow `source`.
    pub async fn attach_replica(&self, source: ReplicationSource) -> Result<()> {
        let req = GuestRequest::Replication(ReplicationRequest::Attach { source });
        self.call_unit(req, self.high()).await
    }
    /// The instance's replication position.
    pub async fn replication_position(&self) -> Result<ReplicaPosition> {
        let req = GuestRequest::Replication(ReplicationRequest::Position);
        self.call(req, self.low()).await
    }
    /// Waits (at most `timeout`, and within the high call timeout) until the instance covers `position`.
    pub async fn wait_for_position(
        &self,
        position: ReplicaPosition,
        timeout: Duration,
    ) -> Result<()> {
        let req = GuestRequest::Replication(ReplicationRequest::WaitFor {
            position,
            timeout_secs: timeout.as_secs().max(1),
        });
        self.call_unit(req, self.high()).await
    }
    /// Stops (or allows again) writes from every account but the guest's.
    pub async fn set_read_only(&self, read_only: bool) -> Result<()> {
        let req = GuestRequest::Replication(ReplicationRequest::SetReadOnly { read_only });
        self.call_unit(req, self.high()).await
    }
    /// Makes the instance a writable source.
    pub async fn promote_replica(&self) -> Result<()> {
        let req = GuestRequest::Replication(ReplicationRequest::Promote);
        self.call_unit(req, self.high()).await
    }
    /// Fences the engine for a failover (it takes no more writes, see [`DatastoreStrategy::fence`]).
    pub async fn fence(&self) -> Result<()> {
        let req = GuestRequest::Replication(ReplicationRequest::Fence);
        self.call_unit(req, self.low()).await
    }
    /// Makes the instance standalone.
    pub async fn detach_replica(&self) -> Result<()> {
        let req = GuestRequest::Replication(ReplicationRequest::Detach);
        self.call_unit(req, self.high()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Secret;
    use async_trait::async_trait;
    use std::sync::Mutex;

    /// Records what it was asked.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    #[async_trait]
    impl ReplicationFacet for Recorder {
        async fn source_info(&self) -> Result<ReplicationSource> {
            Ok(ReplicationSource {
                host: "10.0.0.1".into(),
                port: 3306,
                user: "os_repl".into(),
                password: Secret::new("pw"),
            })
        }
        async fn attach(&self, source: &ReplicationSource) -> Result<()> {
            self.0
                .lock()
                .unwrap()
                .push(format!("attach {}:{}", source.host, source.port));
            Ok(())
        }
        async fn position(&self) -> Result<ReplicaPosition> {
            Ok(ReplicaPosition::Offset { offset: 7 })
        }
        async fn wait_for(&self, position: &ReplicaPosition, timeout: Duration) -> Result<()> {
            self.0
                .lock()
                .unwrap()
                .push(format!("wait {position:?} {}", timeout.as_secs()));
            Ok(())
        }
        async fn set_read_only(&self, read_only: bool) -> Result<()> {
            self.0
                .lock()
                .unwrap()
                .push(format!("read_only {read_only}"));
            Ok(())
        }
        async fn promote(&self) -> Result<()> {
            self.0.lock().unwrap().push("promote".into());
            Ok(())
        }
        async fn detach(&self) -> Result<()> {
            self.0.lock().unwrap().push("detach".into());
            Ok(())
        }
    }

    /// Every request survives the wire (JSON) and reaches the facet's method with its arguments.
    #[tokio::test]
    async fn requests_cross_the_wire_and_reach_the_facet() {
        let f = Recorder::default();
        let info = f.source_info().await.unwrap();
        let requests = [
            ReplicationRequest::SourceInfo,
            ReplicationRequest::Attach {
                source: info.clone(),
            },
            ReplicationRequest::Position,
            ReplicationRequest::WaitFor {
                position: ReplicaPosition::Gtid {
                    gtid: "0-1-5".into(),
                },
                timeout_secs: 9,
            },
            ReplicationRequest::SetReadOnly { read_only: true },
            ReplicationRequest::Promote,
            ReplicationRequest::Detach,
        ];
        let mut answers = Vec::new();
        for r in requests {
            let wire = serde_json::to_string(&GuestRequest::Replication(r)).unwrap();
            let GuestRequest::Replication(back) = serde_json::from_str(&wire).unwrap() else {
                panic!("not a replication request: {wire}");
            };
            answers.push(back.serve(&f).await.unwrap());
        }
        let got: ReplicationSource = serde_json::from_value(answers[0].clone()).unwrap();
        assert_eq!(got.host, "10.0.0.1");
        assert_eq!(
            got.password.expose(),
            "pw",
            "the password crosses (sealed on a sealed bus)"
        );
        assert_eq!(
            answers[2],
            serde_json::json!({"kind": "offset", "offset": 7})
        );
        assert_eq!(
            *f.0.lock().unwrap(),
            [
                "attach 10.0.0.1:3306",
                "wait Gtid { gtid: \"0-1-5\" } 9",
                "read_only true",
                "promote",
                "detach"
            ]
        );
    }
}
