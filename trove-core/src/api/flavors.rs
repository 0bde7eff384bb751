//! Flavors (`/flavors`), and their management by admins (trove-manage and embedders).

use super::ApiService;
use crate::error::{Error, Result};
use crate::model::Flavor;
use crate::policy::rules;
use crate::ports::RequestContext;

impl ApiService {
    /// `GET /flavors`.
    pub async fn list_flavors(&self, ctx: &RequestContext) -> Result<Vec<Flavor>> {
        self.authorize_on_tenant(ctx, rules::FLAVOR_INDEX)?;
        Ok(self.catalog().await?.flavors().to_vec())
    }

    /// `GET /flavors/{id}`.
    pub async fn show_flavor(&self, ctx: &RequestContext, id: &str) -> Result<Flavor> {
        self.authorize_on_tenant(ctx, rules::FLAVOR_SHOW)?;
        self.catalog_having(|c| c.flavor(id).is_some())
            .await?
            .flavor(id)
            .cloned()
            .ok_or_else(|| Error::not_found("Flavor", id))
    }

    /// Creates or replaces a flavor (admin; trove-manage and embedders).
    pub async fn mgmt_put_flavor(&self, ctx: &RequestContext, flavor: Flavor) -> Result<Flavor> {
        self.authorize_on_tenant(ctx, rules::MGMT_FLAVOR_CREATE)?;
        if flavor.id.trim().is_empty() || flavor.ram_mb == 0 || flavor.vcpus == 0 {
            return Err(Error::bad_request(
                "A flavor needs an id, RAM and at least one vCPU.",
            ));
        }
        self.store.put_flavor(&flavor).await?;
        Ok(flavor)
    }

    /// Deletes a flavor (admin).
    pub async fn mgmt_delete_flavor(&self, ctx: &RequestContext, id: &str) -> Result<()> {
        self.authorize_on_tenant(ctx, rules::MGMT_FLAVOR_DELETE)?;
        self.store
            .get_flavor(id)
            .await?
            .ok_or_else(|| Error::not_found("Flavor", id))?;
        self.store.delete_flavor(id).await
    }
}
