//! Databases of an instance (`/instances/{id}/databases...`), answered by the instance's guest.

use uuid::Uuid;

use super::{ApiService, Page, PageRequest};
use crate::error::{Error, Result};
use crate::model::{validate_database_name, DatabaseSpec, Facet};
use crate::policy::rules;
use crate::ports::RequestContext;

impl ApiService {
    /// `GET /instances/{id}/databases`.
    pub async fn list_databases(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Vec<DatabaseSpec>> {
        self.manage_data_instance(
            ctx,
            id,
            rules::DATABASE_INDEX,
            Facet::Databases,
            "databases",
        )
        .await?;
        self.guest(id).list_databases().await
    }

    /// `GET /instances/{id}/databases`, one page, by name (the marker names the last database of the previous
    /// page).
    pub async fn list_databases_page(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<DatabaseSpec>> {
        let dbs = self.list_databases(ctx, id).await?;
        page.by_key(self.config.page_size, dbs, |d| d.name.clone())
    }

    /// `POST /instances/{id}/databases`.
    pub async fn create_databases(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        dbs: Vec<DatabaseSpec>,
    ) -> Result<()> {
        let (_, m) = self
            .manage_data_instance(
                ctx,
                id,
                rules::DATABASE_CREATE,
                Facet::Databases,
                "databases",
            )
            .await?;
        if dbs.is_empty() {
            return Err(Error::bad_request("No databases given."));
        }
        for d in &dbs {
            validate_database_name(m, &d.name)?;
        }
        self.guest(id).create_databases(dbs).await
    }

    /// `DELETE /instances/{id}/databases/{name}`.
    pub async fn delete_database(&self, ctx: &RequestContext, id: Uuid, name: &str) -> Result<()> {
        let (_, m) = self
            .manage_data_instance(
                ctx,
                id,
                rules::DATABASE_DELETE,
                Facet::Databases,
                "databases",
            )
            .await?;
        validate_database_name(m, name)?;
        self.guest(id).delete_database(name).await
    }
}
