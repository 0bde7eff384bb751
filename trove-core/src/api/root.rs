//! The engine's superuser (`/instances/{id}/root`) and its history (`/mgmt/instances/{id}/root`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ApiService;
use crate::error::{Error, Result};
use crate::model::{validate_password, Facet, RootHistory, Secret};
use crate::policy::rules;
use crate::ports::{ChangeSet, RequestContext, Write};

/// The answer of `POST /instances/{id}/root`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootCredentials {
    /// Always `root`, as upstream (on PostgreSQL too: a superuser of that name).
    pub name: String,
    /// Password.
    pub password: Secret,
}

impl ApiService {
    /// `GET /instances/{id}/root`: whether root is enabled (a root history record, removed by a disable).
    pub async fn root_show(&self, ctx: &RequestContext, id: Uuid) -> Result<bool> {
        self.manage_data_instance(ctx, id, rules::ROOT_INDEX, Facet::Root, "root")
            .await?;
        Ok(self.store.get_root_history(id).await?.is_some())
    }

    /// `POST /instances/{id}/root`: enables root (generated password when none given), records the history.
    pub async fn root_enable(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        password: Option<Secret>,
    ) -> Result<RootCredentials> {
        self.manage_data_instance(ctx, id, rules::ROOT_CREATE, Facet::Root, "root")
            .await?;
        if let Some(p) = &password {
            validate_password(p)?;
        }
        let password = self.guest(id).enable_root(password).await?;
        self.store
            .commit(ChangeSet::new().with(Write::RootHistory(RootHistory {
                instance_id: id,
                user: ctx.user_id.clone(),
                created: self.clock.now(),
            })))
            .await?;
        Ok(RootCredentials {
            name: "root".into(),
            password,
        })
    }

    /// `DELETE /instances/{id}/root`: disables root; `GET` answers false afterwards. 404 when root is not enabled.
    pub async fn root_disable(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        self.manage_data_instance(ctx, id, rules::ROOT_DELETE, Facet::Root, "root")
            .await?;
        if self.store.get_root_history(id).await?.is_none() {
            return Err(Error::not_found("Root history of instance", id));
        }
        self.guest(id).disable_root().await?;
        // As upstream: root shows as not enabled once disabled (the history record goes with it).
        self.store
            .commit(ChangeSet::new().with(Write::DeleteRootHistory(id)))
            .await
    }

    /// `GET /mgmt/instances/{id}/root` (admin): the root history record.
    pub async fn mgmt_root_history(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Option<RootHistory>> {
        self.authorize_on_tenant(ctx, rules::MGMT_INSTANCE_ROOT)?;
        self.store
            .get_instance(id)
            .await?
            .ok_or_else(|| Error::not_found("Instance", id))?;
        self.store.get_root_history(id).await
    }
}
