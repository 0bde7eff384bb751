//! Instance TLS (upstream API 1.3): `GET` and `POST /instances/{id}/ssl`, both answered by the instance's guest.
//!
//! The action passes the usual action gate (422), is refused on a replica except `rollback` (400), and a change
//! the engine can only take on restart leaves the instance's service status at RESTART_REQUIRED until it is
//! restarted.

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{
    Facet, ServiceStatusRecord, SslActionBody, SslChange, SslChangeResult, SslRequest, SslView,
};
use crate::policy::rules;
use crate::ports::{ChangeSet, RequestContext, Write};
use crate::state::{Operation, ServerStatus, ServiceStatus};

use super::ApiService;

impl ApiService {
    /// `GET /instances/{id}/ssl[?include_certificate=true]`: the TLS state the guest keeps.
    pub async fn ssl_show(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        include_certificate: bool,
    ) -> Result<SslView> {
        let inst = self
            .authorized_instance(ctx, id, rules::INSTANCE_SHOW)
            .await?;
        let (v, _) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        self.require_facet(v.manager, Facet::Tls, "ssl")?;
        let (state, _) = self.state(&inst).await?;
        if state.server != Some(ServerStatus::Active) || !state.service.action_is_allowed() {
            return Err(Error::unprocessable(format!(
                "Instance {id} is not currently available for an action to be performed (instance status was {}).",
                crate::state::api_status(&state)
            )));
        }
        self.guest(id).ssl_show(include_certificate).await
    }

    /// `POST /instances/{id}/ssl`: enable (with a mode and optionally a certificate bundle), disable or roll back.
    pub async fn ssl_action(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        body: SslActionBody,
    ) -> Result<SslChangeResult> {
        let req = body.validate()?;
        let (inst, _, service) = self
            .instance_for(ctx, id, rules::INSTANCE_UPDATE, Operation::Restart)
            .await?;
        let (v, _) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        self.require_facet(v.manager, Facet::Tls, "ssl")?;
        if inst.replica_of.is_some() && req != SslRequest::Rollback {
            return Err(Error::bad_request(format!(
                "Instance {id} is a replica: SSL can only be changed on its replication source (rollback is \
                 allowed)."
            )));
        }
        let g = self.guest(id);
        let result = match req {
            SslRequest::Change(SslChange::Enable {
                mode,
                container_ref,
                password_ref,
                ..
            }) => {
                g.ssl_action(SslChange::Enable {
                    mode,
                    container_ref,
                    password_ref,
                    names: inst.addresses.iter().map(|a| a.address.clone()).collect(),
                })
                .await?
            }
            SslRequest::Change(change) => g.ssl_action(change).await?,
            SslRequest::Rollback => g.ssl_rollback().await?,
        };
        if result.restart_required {
            // Heartbeats leave RESTART_REQUIRED alone; a restart of the instance clears it.
            let record = ServiceStatusRecord {
                instance_id: id,
                status: ServiceStatus::RestartRequired,
                reason: Some("SSL settings change on restart".into()),
                volume: service.and_then(|s| s.volume),
                load: None,
                updated_at: self.clock.now(),
            };
            self.store
                .commit(ChangeSet::new().with(Write::ServiceStatus(record)))
                .await?;
        }
        Ok(result)
    }
}
