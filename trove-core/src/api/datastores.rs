//! Datastores and their versions (`/datastores...`, `/mgmt/datastore-versions...`), and how a request's
//! datastore and version are resolved.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use std::sync::Arc;

use super::catalog::Catalog;
use super::ApiService;
use crate::error::{Error, Result};
use crate::model::{Datastore, DatastoreVersion, Flavor, Manager};
use crate::policy::rules;
use crate::ports::RequestContext;

/// A datastore with its versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatastoreView {
    /// Datastore.
    pub datastore: Datastore,
    /// Its versions (active ones for non-admins).
    pub versions: Vec<DatastoreVersion>,
}

/// `POST /mgmt/datastore-versions` body, decoded (also used by trove-manage).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatastoreVersionSpec {
    /// Datastore name (created if missing).
    pub datastore_name: String,
    /// Version name.
    pub name: String,
    /// Manager.
    pub manager: String,
    /// Image.
    pub image: String,
    /// Packages.
    pub packages: String,
    /// Active.
    pub active: bool,
    /// Version number (defaults to the name).
    pub version: Option<String>,
    /// Make it the datastore's default.
    pub default: bool,
}

/// A version together with its datastore (version views need both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionView {
    /// Version.
    pub version: DatastoreVersion,
    /// Its datastore.
    pub datastore: Datastore,
    /// Whether it is the datastore's default version.
    pub is_default: bool,
}

/// `PATCH /mgmt/datastore-versions/{id}` body, decoded: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatastoreVersionPatch {
    /// New manager.
    pub manager: Option<String>,
    /// New packages.
    pub packages: Option<String>,
    /// New image.
    pub image: Option<String>,
    /// New active flag.
    pub active: Option<bool>,
    /// Make it the datastore's default.
    pub default: Option<bool>,
    /// New name.
    pub name: Option<String>,
}

/// `ds` with its versions from `catalog` (active ones only for non-admins).
fn datastore_view(ctx: &RequestContext, catalog: &Catalog, ds: Datastore) -> DatastoreView {
    DatastoreView {
        versions: catalog
            .versions_of(ds.id)
            .filter(|v| v.active || ctx.is_admin())
            .cloned()
            .collect(),
        datastore: ds,
    }
}

impl ApiService {
    pub(super) async fn version_and_datastore(
        &self,
        version_id: Uuid,
    ) -> Result<(DatastoreVersion, Datastore)> {
        let v = self
            .store
            .get_datastore_version(version_id)
            .await?
            .ok_or_else(|| Error::not_found("Datastore version", version_id))?;
        let ds = self
            .store
            .get_datastore(&v.datastore_id.to_string())
            .await?
            .ok_or_else(|| Error::not_found("Datastore", v.datastore_id))?;
        Ok((v, ds))
    }

    pub(super) async fn find_datastore(&self, id_or_name: &str) -> Result<Datastore> {
        self.store
            .get_datastore(id_or_name)
            .await?
            .ok_or_else(|| Error::not_found("Datastore", id_or_name))
    }

    pub(super) async fn find_version(
        &self,
        ctx: &RequestContext,
        ds: &Datastore,
        id_or_name: &str,
    ) -> Result<DatastoreVersion> {
        let versions = self.store.list_datastore_versions(Some(ds.id)).await?;
        versions
            .into_iter()
            .filter(|v| v.active || ctx.is_admin())
            .find(|v| v.id.to_string() == id_or_name || v.name == id_or_name)
            .ok_or_else(|| Error::not_found("Datastore version", id_or_name))
    }

    pub(super) async fn version_view(
        &self,
        v: DatastoreVersion,
        ds: Option<Datastore>,
    ) -> Result<VersionView> {
        let datastore = match ds {
            Some(d) => d,
            None => self.version_and_datastore(v.id).await?.1,
        };
        Ok(VersionView {
            is_default: datastore.default_version_id == Some(v.id),
            version: v,
            datastore,
        })
    }

    /// Resolves the datastore and version of a create request (upstream `get_datastore_version`).
    pub(super) async fn resolve_version(
        &self,
        ctx: &RequestContext,
        datastore: Option<&str>,
        version: Option<&str>,
        version_number: Option<&str>,
    ) -> Result<(Datastore, DatastoreVersion)> {
        let ds_name = match datastore.or(self.config.default_datastore.as_deref()) {
            Some(d) => d,
            None => {
                return Err(Error::not_found(
                    "Default datastore",
                    "(none configured; name a datastore)",
                ));
            }
        };
        let ds = self.find_datastore(ds_name).await?;
        let v = match (version, version_number) {
            (Some(v), Some(num)) => {
                let all = self.store.list_datastore_versions(Some(ds.id)).await?;
                all.into_iter()
                    .find(|x| (x.name == v || x.id.to_string() == v) && x.version == num)
                    .ok_or_else(|| Error::not_found("Datastore version", format!("{v} ({num})")))?
            }
            (Some(v), None) => {
                let all = self.store.list_datastore_versions(Some(ds.id)).await?;
                let mut matching: Vec<_> = all
                    .into_iter()
                    .filter(|x| x.name == v || x.id.to_string() == v)
                    .collect();
                if matching.len() > 1 {
                    return Err(Error::bad_request(format!(
                        "Datastore version '{v}' is ambiguous; give datastore_version_number as well."
                    )));
                }
                matching
                    .pop()
                    .ok_or_else(|| Error::not_found("Datastore version", v))?
            }
            (None, _) => {
                let id = ds.default_version_id.ok_or_else(|| {
                    Error::not_found("Default datastore version of", ds.name.clone())
                })?;
                self.store
                    .get_datastore_version(id)
                    .await?
                    .ok_or_else(|| Error::not_found("Datastore version", id))?
            }
        };
        if !v.active && !ctx.is_admin() {
            return Err(Error::bad_request(format!(
                "Datastore version '{}' is not active.",
                v.name
            )));
        }
        if !v.active {
            return Err(Error::bad_request(format!(
                "Datastore version '{}' is not active.",
                v.name
            )));
        }
        Ok((ds, v))
    }

    /// `GET /datastores`: datastores with their (active, for non-admins) versions.
    pub async fn list_datastores(&self, ctx: &RequestContext) -> Result<Vec<DatastoreView>> {
        self.authorize_on_tenant(ctx, rules::DATASTORE_INDEX)?;
        let catalog = self.catalog().await?;
        Ok(catalog
            .datastores()
            .iter()
            .map(|ds| datastore_view(ctx, &catalog, ds.clone()))
            .collect())
    }

    /// `GET /datastores/{id_or_name}`.
    pub async fn show_datastore(
        &self,
        ctx: &RequestContext,
        id_or_name: &str,
    ) -> Result<DatastoreView> {
        self.authorize_on_tenant(ctx, rules::DATASTORE_SHOW)?;
        let (catalog, ds) = self.cached_datastore(id_or_name).await?;
        Ok(datastore_view(ctx, &catalog, ds))
    }

    /// The datastore `datastore` (id or name) and its version `version` (id or name; active ones only for
    /// non-admins) for a read, from the catalog.
    async fn cached_version(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
    ) -> Result<(Arc<Catalog>, Datastore, DatastoreVersion)> {
        let visible = |v: &DatastoreVersion| {
            (v.active || ctx.is_admin()) && (v.id.to_string() == version || v.name == version)
        };
        let catalog = self
            .catalog_having(|c| {
                c.datastore(datastore)
                    .is_some_and(|ds| c.versions_of(ds.id).any(visible))
            })
            .await?;
        let ds = catalog
            .datastore(datastore)
            .cloned()
            .ok_or_else(|| Error::not_found("Datastore", datastore))?;
        let v = catalog
            .versions_of(ds.id)
            .find(|v| visible(v))
            .cloned()
            .ok_or_else(|| Error::not_found("Datastore version", version))?;
        Ok((catalog, ds, v))
    }

    /// `DELETE /datastores/{id}` (admin; refused while versions are in use).
    pub async fn delete_datastore(&self, ctx: &RequestContext, id_or_name: &str) -> Result<()> {
        self.authorize_on_tenant(ctx, rules::DATASTORE_DELETE)?;
        let ds = self.find_datastore(id_or_name).await?;
        let versions: Vec<Uuid> = self
            .store
            .list_datastore_versions(Some(ds.id))
            .await?
            .into_iter()
            .map(|v| v.id)
            .collect();
        let all = self.all_instances().await?;
        if all
            .iter()
            .any(|i| versions.contains(&i.datastore_version_id))
        {
            return Err(Error::bad_request(format!(
                "Datastore {} has versions in use by instances.",
                ds.name
            )));
        }
        self.store.delete_datastore(ds.id).await
    }

    /// `GET /datastores/{ds}/versions`.
    pub async fn list_datastore_versions(
        &self,
        ctx: &RequestContext,
        datastore: &str,
    ) -> Result<Vec<VersionView>> {
        self.authorize_on_tenant(ctx, rules::DATASTORE_VERSION_INDEX)?;
        let (catalog, ds) = self.cached_datastore(datastore).await?;
        Ok(catalog
            .versions_of(ds.id)
            .filter(|v| v.active || ctx.is_admin())
            .map(|v| VersionView {
                is_default: ds.default_version_id == Some(v.id),
                version: v.clone(),
                datastore: ds.clone(),
            })
            .collect())
    }

    /// `GET /datastores/{ds}/versions/{id_or_name}`.
    pub async fn show_datastore_version(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
    ) -> Result<VersionView> {
        self.authorize_on_tenant(ctx, rules::DATASTORE_VERSION_SHOW)?;
        let (_, ds, v) = self.cached_version(ctx, datastore, version).await?;
        self.version_view(v, Some(ds)).await
    }

    /// `GET /datastores/versions/{uuid}`.
    pub async fn show_datastore_version_by_id(
        &self,
        ctx: &RequestContext,
        version_id: Uuid,
    ) -> Result<VersionView> {
        self.authorize_on_tenant(ctx, rules::DATASTORE_VERSION_SHOW_BY_UUID)?;
        let (v, ds) = self.cached_version_and_datastore(version_id).await?;
        if !v.active && !ctx.is_admin() {
            return Err(Error::not_found("Datastore version", version_id));
        }
        self.version_view(v, Some(ds)).await
    }

    /// `GET /datastores/{ds}/versions/{version}/flavors`: flavors allowed for the version.
    pub async fn list_version_flavors(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
    ) -> Result<Vec<Flavor>> {
        self.authorize_on_tenant(ctx, rules::DATASTORE_FLAVORS)?;
        let (catalog, _, v) = self.cached_version(ctx, datastore, version).await?;
        Ok(catalog
            .flavors()
            .iter()
            .filter(|f| v.flavor_ids.is_empty() || v.flavor_ids.contains(&f.id))
            .cloned()
            .collect())
    }

    /// `GET /datastores/{ds}/versions/{version}/volume-types` (none are configured: an empty list).
    pub async fn list_version_volume_types(
        &self,
        ctx: &RequestContext,
        datastore: &str,
        version: &str,
    ) -> Result<Vec<String>> {
        self.authorize_on_tenant(ctx, rules::DATASTORE_VOLUME_TYPES)?;
        self.cached_version(ctx, datastore, version).await?;
        Ok(Vec::new())
    }

    /// `GET /mgmt/datastore-versions` (admin).
    pub async fn mgmt_list_datastore_versions(
        &self,
        ctx: &RequestContext,
    ) -> Result<Vec<VersionView>> {
        self.authorize_on_tenant(ctx, rules::MGMT_DATASTORE_VERSION_INDEX)?;
        let mut out = Vec::new();
        for v in self.store.list_datastore_versions(None).await? {
            out.push(self.version_view(v, None).await?);
        }
        Ok(out)
    }

    /// `POST /mgmt/datastore-versions` (admin): creates the datastore when missing.
    pub async fn mgmt_create_datastore_version(
        &self,
        ctx: &RequestContext,
        spec: DatastoreVersionSpec,
    ) -> Result<VersionView> {
        self.authorize_on_tenant(ctx, rules::MGMT_DATASTORE_VERSION_CREATE)?;
        let manager = Manager::parse(&spec.manager)?;
        if spec.datastore_name.trim().is_empty() || spec.name.trim().is_empty() {
            return Err(Error::bad_request(
                "A datastore version needs a datastore name and a version name.",
            ));
        }
        let mut ds = match self.store.get_datastore(&spec.datastore_name).await? {
            Some(ds) => ds,
            None => {
                let ds = Datastore {
                    id: Uuid::new_v4(),
                    name: spec.datastore_name.clone(),
                    default_version_id: None,
                };
                self.store.put_datastore(&ds).await?;
                ds
            }
        };
        let number = spec.version.clone().unwrap_or_else(|| spec.name.clone());
        let existing = self.store.list_datastore_versions(Some(ds.id)).await?;
        if existing
            .iter()
            .any(|v| v.name == spec.name && v.version == number)
        {
            return Err(Error::conflict(format!(
                "Datastore version {} ({number}) of {} already exists.",
                spec.name, ds.name
            )));
        }
        let v = DatastoreVersion {
            id: Uuid::new_v4(),
            datastore_id: ds.id,
            name: spec.name,
            manager,
            image: spec.image,
            packages: spec.packages,
            active: spec.active,
            version: number,
            flavor_ids: Vec::new(),
        };
        self.store.put_datastore_version(&v).await?;
        if spec.default || ds.default_version_id.is_none() {
            ds.default_version_id = Some(v.id);
            self.store.put_datastore(&ds).await?;
        }
        self.version_view(v, Some(ds)).await
    }

    /// `GET /mgmt/datastore-versions/{id}` (admin).
    pub async fn mgmt_show_datastore_version(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<VersionView> {
        self.authorize_on_tenant(ctx, rules::MGMT_DATASTORE_VERSION_SHOW)?;
        let (v, ds) = self.version_and_datastore(id).await?;
        self.version_view(v, Some(ds)).await
    }

    /// `PATCH /mgmt/datastore-versions/{id}` (admin).
    pub async fn mgmt_update_datastore_version(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        patch: DatastoreVersionPatch,
    ) -> Result<VersionView> {
        self.authorize_on_tenant(ctx, rules::MGMT_DATASTORE_VERSION_UPDATE)?;
        let (mut v, mut ds) = self.version_and_datastore(id).await?;
        if let Some(m) = &patch.manager {
            v.manager = Manager::parse(m)?;
        }
        if let Some(p) = patch.packages {
            v.packages = p;
        }
        if let Some(i) = patch.image {
            v.image = i;
        }
        if let Some(a) = patch.active {
            v.active = a;
        }
        if let Some(n) = patch.name {
            if n.trim().is_empty() {
                return Err(Error::bad_request(
                    "A datastore version name must not be empty.",
                ));
            }
            v.name = n;
        }
        self.store.put_datastore_version(&v).await?;
        match patch.default {
            Some(true) => {
                ds.default_version_id = Some(v.id);
                self.store.put_datastore(&ds).await?;
            }
            Some(false) if ds.default_version_id == Some(v.id) => {
                ds.default_version_id = None;
                self.store.put_datastore(&ds).await?;
            }
            _ => {}
        }
        self.version_view(v, Some(ds)).await
    }

    /// `DELETE /mgmt/datastore-versions/{id}` (admin; refused while instances use it).
    pub async fn mgmt_delete_datastore_version(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<()> {
        self.authorize_on_tenant(ctx, rules::MGMT_DATASTORE_VERSION_DELETE)?;
        let (v, mut ds) = self.version_and_datastore(id).await?;
        let all = self.all_instances().await?;
        if all.iter().any(|i| i.datastore_version_id == v.id) {
            return Err(Error::bad_request(format!(
                "Datastore version {} is in use by instances.",
                v.name
            )));
        }
        self.store.delete_datastore_version(v.id).await?;
        if ds.default_version_id == Some(v.id) {
            ds.default_version_id = None;
            self.store.put_datastore(&ds).await?;
        }
        Ok(())
    }
}
