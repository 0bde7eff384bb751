//! The catalog cache: datastores, their versions and flavors, the small tables every common read needs (the
//! datastore and flavor lists, and the datastore of every instance view), kept in memory so those reads make no
//! store query.
//!
//! # Validity
//! A copy is used while both hold:
//! - the store's [`InfraStore::catalog_generation`](crate::ports::InfraStore::catalog_generation) is the one
//!   read before the copy was loaded: every write of a datastore, version or flavor through this process's
//!   store (the API's mgmt operations, [`crate::manage::Manage`] on the same store, embedders) bumps it, so
//!   they are seen by the next read, exactly as without the cache;
//! - the copy is younger than [`CoreConfig::catalog_cache_ttl`](crate::CoreConfig::catalog_cache_ttl)
//!   (default 1 s): writes by another process (`trove-manage` on the same database, another API worker on
//!   PostgreSQL) are seen within that time.
//!
//! A lookup that misses the copy (an instance created by another process on a version this copy does not have
//! yet, a datastore named that another process just created) reloads it from the store first, so a stale copy
//! never answers a false 404. Paths that decide what is written (create, resize, the mgmt operations) read the
//! store directly.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use uuid::Uuid;

use super::ApiService;
use crate::error::{Error, Result};
use crate::model::{Datastore, DatastoreVersion, Flavor};

/// One consistent-enough copy of the catalog (loaded with three queries).
#[derive(Debug)]
pub(super) struct Catalog {
    /// Datastores, by name then id (the store's order).
    datastores: Vec<Datastore>,
    /// Every version, by name then id (the store's order).
    versions: Vec<DatastoreVersion>,
    /// Flavors, by id (the store's order).
    flavors: Vec<Flavor>,
}

impl Catalog {
    /// All datastores, in the store's order.
    pub(super) fn datastores(&self) -> &[Datastore] {
        &self.datastores
    }

    /// A datastore by id, else by name (as [`InfraStore::get_datastore`](crate::ports::InfraStore)).
    pub(super) fn datastore(&self, id_or_name: &str) -> Option<&Datastore> {
        Uuid::parse_str(id_or_name)
            .ok()
            .and_then(|id| self.datastores.iter().find(|d| d.id == id))
            .or_else(|| self.datastores.iter().find(|d| d.name == id_or_name))
    }

    /// A datastore by id.
    pub(super) fn datastore_by_id(&self, id: Uuid) -> Option<&Datastore> {
        self.datastores.iter().find(|d| d.id == id)
    }

    /// The versions of datastore `id`, in the store's order.
    pub(super) fn versions_of(&self, id: Uuid) -> impl Iterator<Item = &DatastoreVersion> {
        self.versions.iter().filter(move |v| v.datastore_id == id)
    }

    /// A version by id.
    pub(super) fn version(&self, id: Uuid) -> Option<&DatastoreVersion> {
        self.versions.iter().find(|v| v.id == id)
    }

    /// All flavors, in the store's order.
    pub(super) fn flavors(&self) -> &[Flavor] {
        &self.flavors
    }

    /// A flavor by id.
    pub(super) fn flavor(&self, id: &str) -> Option<&Flavor> {
        self.flavors.iter().find(|f| f.id == id)
    }
}

#[derive(Debug)]
struct Loaded {
    catalog: Arc<Catalog>,
    generation: u64,
    at: Instant,
}

/// The current copy, if any (see the module docs for when it is used).
#[derive(Debug, Default)]
pub(super) struct CatalogCache {
    slot: Mutex<Option<Loaded>>,
}

impl CatalogCache {
    fn get(&self, generation: u64, ttl: std::time::Duration) -> Option<Arc<Catalog>> {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .filter(|l| l.generation == generation && l.at.elapsed() < ttl)
            .map(|l| l.catalog.clone())
    }

    fn put(&self, loaded: Loaded) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        // Concurrent loads: keep the newest.
        if slot
            .as_ref()
            .is_none_or(|l| (l.generation, l.at) <= (loaded.generation, loaded.at))
        {
            *slot = Some(loaded);
        }
    }
}

impl ApiService {
    /// The catalog: the cached copy while it is valid, else freshly loaded from the store (and cached unless
    /// `catalog_cache_ttl` is 0).
    pub(super) async fn catalog(&self) -> Result<Arc<Catalog>> {
        // Read before loading: a write that lands during the load bumps it and so invalidates what is loaded.
        let generation = self.store.catalog_generation();
        let ttl = self.config.catalog_cache_ttl;
        if !ttl.is_zero() {
            if let Some(c) = self.catalog_cache.get(generation, ttl) {
                return Ok(c);
            }
        }
        self.load_catalog(generation).await
    }

    /// The catalog, reloaded from the store when the valid copy does not satisfy `has` (something another
    /// process wrote since the copy was loaded, or that does not exist: then the answer is the store's).
    pub(super) async fn catalog_having(
        &self,
        has: impl Fn(&Catalog) -> bool,
    ) -> Result<Arc<Catalog>> {
        let c = self.catalog().await?;
        if has(&c) || self.config.catalog_cache_ttl.is_zero() {
            return Ok(c);
        }
        self.load_catalog(self.store.catalog_generation()).await
    }

    async fn load_catalog(&self, generation: u64) -> Result<Arc<Catalog>> {
        let at = Instant::now();
        let (datastores, versions, flavors) = futures::future::try_join3(
            self.store.list_datastores(),
            self.store.list_datastore_versions(None),
            self.store.list_flavors(),
        )
        .await?;
        let catalog = Arc::new(Catalog {
            datastores,
            versions,
            flavors,
        });
        if !self.config.catalog_cache_ttl.is_zero() {
            self.catalog_cache.put(Loaded {
                catalog: catalog.clone(),
                generation,
                at,
            });
        }
        Ok(catalog)
    }

    /// A version and its datastore for a read (views, version shows), from the catalog; the same 404s as
    /// reading the store.
    pub(super) async fn cached_version_and_datastore(
        &self,
        version_id: Uuid,
    ) -> Result<(DatastoreVersion, Datastore)> {
        let catalog = self
            .catalog_having(|c| {
                c.version(version_id)
                    .is_some_and(|v| c.datastore_by_id(v.datastore_id).is_some())
            })
            .await?;
        let v = catalog
            .version(version_id)
            .ok_or_else(|| Error::not_found("Datastore version", version_id))?;
        let ds = catalog
            .datastore_by_id(v.datastore_id)
            .ok_or_else(|| Error::not_found("Datastore", v.datastore_id))?;
        Ok((v.clone(), ds.clone()))
    }

    /// The catalog and the datastore `id_or_name` in it, for a read (404 as reading the store).
    pub(super) async fn cached_datastore(
        &self,
        id_or_name: &str,
    ) -> Result<(Arc<Catalog>, Datastore)> {
        let catalog = self
            .catalog_having(|c| c.datastore(id_or_name).is_some())
            .await?;
        let ds = catalog
            .datastore(id_or_name)
            .cloned()
            .ok_or_else(|| Error::not_found("Datastore", id_or_name))?;
        Ok((catalog, ds))
    }
}
