//! Configuration parameters: the rules of a datastore version (`/datastores/.../parameters`), and their
//! management by admins (`/mgmt/datastores/versions/{id}/parameters`).

use serde::{Deserialize, Serialize};
use serde_json::Number;
use uuid::Uuid;

use super::ApiService;
use crate::error::{Error, Result};
use crate::model::{ConfigParam, ParamType};
use crate::policy::rules;
use crate::ports::RequestContext;

/// `POST/PUT /mgmt/datastores/versions/{id}/parameters[/{name}]` body, decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigParamSpec {
    /// Parameter name (ignored on PUT, where the URL names it).
    pub name: String,
    /// Value type.
    pub data_type: ParamType,
    /// Whether changing it needs a restart.
    pub restart_required: bool,
    /// Lower bound.
    pub min: Option<Number>,
    /// Upper bound.
    pub max: Option<Number>,
}

impl ApiService {
    async fn params_of(&self, version_id: Uuid) -> Result<Vec<ConfigParam>> {
        self.store.list_config_params(version_id).await
    }

    async fn param_of(&self, version_id: Uuid, name: &str) -> Result<ConfigParam> {
        self.params_of(version_id)
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::not_found("Configuration parameter", name))
    }

    /// `GET /datastores/{ds}/versions/{ver}/parameters`.
    pub async fn list_parameters(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
    ) -> Result<Vec<ConfigParam>> {
        self.authorize_on_tenant(ctx, rules::PARAMETER_INDEX)?;
        let ds = self.find_datastore(datastore).await?;
        let v = self.find_version(ctx, &ds, version).await?;
        self.params_of(v.id).await
    }

    /// `GET /datastores/{ds}/versions/{ver}/parameters/{name}`.
    pub async fn show_parameter(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
        name: &str,
    ) -> Result<ConfigParam> {
        self.authorize_on_tenant(ctx, rules::PARAMETER_SHOW)?;
        let ds = self.find_datastore(datastore).await?;
        let v = self.find_version(ctx, &ds, version).await?;
        self.param_of(v.id, name).await
    }

    /// `GET /datastores/versions/{uuid}/parameters`.
    pub async fn list_parameters_by_version(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
    ) -> Result<Vec<ConfigParam>> {
        self.authorize_on_tenant(ctx, rules::PARAMETER_INDEX_BY_VERSION)?;
        self.show_datastore_version_by_id(ctx, version_id).await?;
        self.params_of(version_id).await
    }

    /// `GET /datastores/versions/{uuid}/parameters/{name}`.
    pub async fn show_parameter_by_version(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
        name: &str,
    ) -> Result<ConfigParam> {
        self.authorize_on_tenant(ctx, rules::PARAMETER_SHOW_BY_VERSION)?;
        self.show_datastore_version_by_id(ctx, version_id).await?;
        self.param_of(version_id, name).await
    }

    /// `GET /mgmt/datastores/versions/{id}/parameters` (admin).
    pub async fn mgmt_list_parameters(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
    ) -> Result<Vec<ConfigParam>> {
        self.authorize_on_tenant(ctx, rules::MGMT_PARAMETER_INDEX)?;
        self.version_and_datastore(version_id).await?;
        self.params_of(version_id).await
    }

    /// `GET /mgmt/datastores/versions/{id}/parameters/{name}` (admin).
    pub async fn mgmt_show_parameter(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
        name: &str,
    ) -> Result<ConfigParam> {
        self.authorize_on_tenant(ctx, rules::MGMT_PARAMETER_SHOW)?;
        self.version_and_datastore(version_id).await?;
        self.param_of(version_id, name).await
    }

    fn param_from(version_id: Uuid, name: &str, spec: ConfigParamSpec) -> Result<ConfigParam> {
        if name.trim().is_empty() || name.len() > 128 {
            return Err(Error::bad_request(
                "A configuration parameter needs a name of 1 to 128 characters.",
            ));
        }
        if let (Some(min), Some(max)) = (
            spec.min.as_ref().and_then(Number::as_f64),
            spec.max.as_ref().and_then(Number::as_f64),
        ) {
            if min > max {
                return Err(Error::bad_request("min must not be larger than max."));
            }
        }
        Ok(ConfigParam {
            datastore_version_id: version_id,
            name: name.into(),
            restart_required: spec.restart_required,
            data_type: spec.data_type,
            min: spec.min,
            max: spec.max,
        })
    }

    /// `POST /mgmt/datastores/versions/{id}/parameters` (admin; 409 if it exists).
    pub async fn mgmt_create_parameter(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
        spec: ConfigParamSpec,
    ) -> Result<ConfigParam> {
        self.authorize_on_tenant(ctx, rules::MGMT_PARAMETER_CREATE)?;
        self.version_and_datastore(version_id).await?;
        let name = spec.name.clone();
        if self
            .params_of(version_id)
            .await?
            .iter()
            .any(|p| p.name == name)
        {
            return Err(Error::conflict(format!(
                "Configuration parameter {name} already exists."
            )));
        }
        let p = Self::param_from(version_id, &name, spec)?;
        self.store
            .put_config_params(std::slice::from_ref(&p))
            .await?;
        Ok(p)
    }

    /// `PUT /mgmt/datastores/versions/{id}/parameters/{name}` (admin; 404 if missing).
    pub async fn mgmt_update_parameter(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
        name: &str,
        spec: ConfigParamSpec,
    ) -> Result<ConfigParam> {
        self.authorize_on_tenant(ctx, rules::MGMT_PARAMETER_UPDATE)?;
        self.version_and_datastore(version_id).await?;
        self.param_of(version_id, name).await?;
        let p = Self::param_from(version_id, name, spec)?;
        self.store
            .put_config_params(std::slice::from_ref(&p))
            .await?;
        Ok(p)
    }

    /// `DELETE /mgmt/datastores/versions/{id}/parameters/{name}` (admin).
    pub async fn mgmt_delete_parameter(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
        name: &str,
    ) -> Result<()> {
        self.authorize_on_tenant(ctx, rules::MGMT_PARAMETER_DELETE)?;
        self.version_and_datastore(version_id).await?;
        if self.store.delete_config_param(version_id, name).await? {
            Ok(())
        } else {
            Err(Error::not_found("Configuration parameter", name))
        }
    }
}
