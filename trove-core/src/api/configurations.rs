//! Configuration groups (`/configurations...`): named sets of parameter values of one datastore version,
//! checked against the version's rules and applied to the instances that use them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{ApiService, Page, PageRequest};
use crate::error::{Error, Result};
use crate::model::{Configuration, Datastore, DatastoreVersion, InstanceFilter};
use crate::policy::{rules, Target};
use crate::ports::{ChangeSet, Expect, RequestContext, Write};
use crate::taskmanager::ApplyConfigurationParams;

/// A configuration group with its usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigurationView {
    /// Group.
    pub configuration: Configuration,
    /// Datastore.
    pub datastore: Datastore,
    /// Version.
    pub datastore_version: DatastoreVersion,
    /// Instances using it.
    pub instance_count: usize,
}

/// `POST /configurations` body, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateConfiguration {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Parameter values.
    pub values: Map<String, Value>,
    /// Datastore name or id (default datastore when absent).
    pub datastore: Option<String>,
    /// Version name or id (the datastore's default when absent).
    pub datastore_version: Option<String>,
    /// Version number.
    pub datastore_version_number: Option<String>,
}

/// `PUT /configurations/{id}` body, decoded: replaces all values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfiguration {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// The complete new values.
    pub values: Map<String, Value>,
}

impl ApiService {
    pub(super) async fn load_configuration(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Configuration> {
        match self.store.get_configuration(id).await? {
            Some(c) if !c.deleted && c.tenant_id == ctx.tenant_id => Ok(c),
            _ => Err(Error::not_found("Configuration group", id)),
        }
    }

    /// The caller's configuration group `id` (404 otherwise) once the policy `rule` allows the caller to act on
    /// it (403 otherwise).
    async fn authorized_configuration(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        rule: &str,
    ) -> Result<Configuration> {
        let c = self.load_configuration(ctx, id).await?;
        self.authorize(ctx, rule, &Target::project(&c.tenant_id))?;
        Ok(c)
    }

    async fn configuration_view(&self, c: Configuration) -> Result<ConfigurationView> {
        let (datastore_version, datastore) =
            self.version_and_datastore(c.datastore_version_id).await?;
        let instance_count = self.instances_using(c.id).await?.len();
        Ok(ConfigurationView {
            configuration: c,
            datastore,
            datastore_version,
            instance_count,
        })
    }

    /// Checks values against the version's rules (upstream `_validate_configuration`, failures 422); answers the
    /// values keyed by lower-cased name.
    async fn validate_values(
        &self,
        version_id: Uuid,
        values: Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let rules = self.store.list_config_params(version_id).await?;
        if rules.is_empty() {
            return Err(Error::unprocessable(
                "Configuration groups are not supported for this datastore version.",
            ));
        }
        let mut out = Map::new();
        for (k, v) in values {
            let key = k.to_lowercase();
            let rule = rules
                .iter()
                .find(|r| r.name.to_lowercase() == key)
                .ok_or_else(|| {
                    Error::unprocessable(format!(
                        "The configuration parameter {k} is not supported."
                    ))
                })?;
            rule.check(&v)?;
            out.insert(key, v);
        }
        Ok(out)
    }

    /// `GET /configurations`.
    pub async fn list_configurations(
        &self,
        ctx: &RequestContext,
    ) -> Result<Vec<ConfigurationView>> {
        self.authorize_on_tenant(ctx, rules::CONFIGURATION_INDEX)?;
        let mut out = Vec::new();
        for c in self.store.list_configurations(&ctx.tenant_id).await? {
            out.push(self.configuration_view(c).await?);
        }
        Ok(out)
    }

    /// `GET /configurations`, one page, by id (the marker is the id of the last group of the previous page).
    pub async fn list_configurations_page(
        &self,
        ctx: &RequestContext,
        page: &PageRequest,
    ) -> Result<Page<ConfigurationView>> {
        let all = self.list_configurations(ctx).await?;
        page.by_key(self.config.page_size, all, |v| {
            v.configuration.id.to_string()
        })
    }

    /// `GET /configurations/{id}`.
    pub async fn show_configuration(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<ConfigurationView> {
        let c = self
            .authorized_configuration(ctx, id, rules::CONFIGURATION_SHOW)
            .await?;
        self.configuration_view(c).await
    }

    /// `POST /configurations`.
    pub async fn create_configuration(
        &self,
        ctx: &RequestContext,
        req: CreateConfiguration,
    ) -> Result<ConfigurationView> {
        self.authorize_on_tenant(ctx, rules::CONFIGURATION_CREATE)?;
        if req.name.trim().is_empty() || req.name.chars().count() > 255 {
            return Err(Error::bad_request(
                "A configuration group needs a name of 1 to 255 characters.",
            ));
        }
        let (_, v) = self
            .resolve_version(
                ctx,
                req.datastore.as_deref(),
                req.datastore_version.as_deref(),
                req.datastore_version_number.as_deref(),
            )
            .await?;
        let values = self.validate_values(v.id, req.values).await?;
        let now = self.clock.now();
        let c = Configuration {
            id: Uuid::new_v4(),
            tenant_id: ctx.tenant_id.clone(),
            name: req.name,
            description: req.description,
            datastore_version_id: v.id,
            values,
            created: now,
            updated: now,
            deleted: false,
        };
        self.store
            .commit(ChangeSet::new().with(Write::Configuration(c.clone())))
            .await?;
        self.configuration_view(c).await
    }

    async fn reapply(&self, c: Configuration) -> Result<()> {
        let users = self.instances_using(c.id).await?;
        let mut cs = ChangeSet::new().with(Write::Configuration(c.clone()));
        let mut ids = Vec::new();
        for i in &users {
            let wf = self.new_workflow(
                i.id,
                &ApplyConfigurationParams {
                    configuration_id: Some(c.id),
                },
            )?;
            ids.push(wf.id);
            cs.push(Write::Workflow {
                workflow: wf,
                expect: Expect::Absent,
            });
        }
        self.store.commit(cs).await?;
        for id in ids {
            self.cast(id).await;
        }
        Ok(())
    }

    /// `PUT /configurations/{id}`: replaces the values (and name/description), re-applies to its instances.
    pub async fn update_configuration(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        req: UpdateConfiguration,
    ) -> Result<()> {
        let mut c = self
            .authorized_configuration(ctx, id, rules::CONFIGURATION_UPDATE)
            .await?;
        if let Some(n) = req.name {
            if n.trim().is_empty() || n.chars().count() > 255 {
                return Err(Error::bad_request(
                    "A configuration group needs a name of 1 to 255 characters.",
                ));
            }
            c.name = n;
        }
        if req.description.is_some() {
            c.description = req.description;
        }
        c.values = self
            .validate_values(c.datastore_version_id, req.values)
            .await?;
        c.updated = self.clock.now();
        self.reapply(c).await
    }

    /// `PATCH /configurations/{id}`: merges values, re-applies to its instances.
    pub async fn patch_configuration(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        values: Map<String, Value>,
    ) -> Result<()> {
        let mut c = self
            .authorized_configuration(ctx, id, rules::CONFIGURATION_EDIT)
            .await?;
        let values = self.validate_values(c.datastore_version_id, values).await?;
        for (k, v) in values {
            c.values.insert(k, v);
        }
        c.updated = self.clock.now();
        self.reapply(c).await
    }

    /// `DELETE /configurations/{id}`: 400 while instances use it.
    pub async fn delete_configuration(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        let mut c = self
            .authorized_configuration(ctx, id, rules::CONFIGURATION_DELETE)
            .await?;
        let users = self.instances_using(id).await?;
        if !users.is_empty() {
            return Err(Error::bad_request(format!(
                "Configuration group {id} is still attached to {} instance(s).",
                users.len()
            )));
        }
        c.deleted = true;
        c.updated = self.clock.now();
        self.store
            .commit(ChangeSet::new().with(Write::Configuration(c)))
            .await
    }

    /// `GET /configurations/{id}/instances`: (id, name) of the instances using it.
    pub async fn configuration_instances(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Vec<(Uuid, String)>> {
        self.authorized_configuration(ctx, id, rules::CONFIGURATION_INSTANCES)
            .await?;
        Ok(self
            .store
            .list_instances(&InstanceFilter {
                tenant_id: Some(ctx.tenant_id.clone()),
                configuration_id: Some(id),
                include_clustered: true,
                ..Default::default()
            })
            .await?
            .into_iter()
            .map(|i| (i.id, i.name))
            .collect())
    }

    /// `GET /configurations/{id}/instances`, one page, by instance id.
    pub async fn configuration_instances_page(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<(Uuid, String)>> {
        let all = self.configuration_instances(ctx, id).await?;
        page.by_key(self.config.page_size, all, |(i, _)| i.to_string())
    }
}
