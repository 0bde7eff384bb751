//! The instance view: an instance with its guest status, derived API status, datastore, configuration group
//! and replicas, built one at a time (show) or for many with a fixed number of store queries (lists).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

use super::{ApiService, Page, PageRequest};
use crate::error::{Error, Result};
use crate::model::{
    BackupFilter, Datastore, DatastoreVersion, Instance, Secret, ServiceStatusRecord,
};
use crate::state::{api_status, operating_status};

/// Everything the instance views show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// The stored instance.
    pub instance: Instance,
    /// Guest status (with heartbeat time and volume usage).
    pub service: Option<ServiceStatusRecord>,
    /// Derived API `status`.
    pub status: String,
    /// Derived `operating_status`.
    pub operating_status: String,
    /// Datastore.
    pub datastore: Datastore,
    /// Datastore version.
    pub datastore_version: DatastoreVersion,
    /// Attached configuration group (id, name).
    pub configuration: Option<(Uuid, String)>,
    /// Replicas of this instance.
    pub replicas: Vec<Uuid>,
    /// Root password, when root was enabled on create.
    pub password: Option<Secret>,
}

/// Instances per service-status query when building list views (the slices are fetched concurrently).
const STATUS_SLICE: usize = 250;

impl ApiService {
    /// The view of one instance from its already fetched parts (list and show share this).
    #[allow(clippy::too_many_arguments)]
    fn assemble_view(
        &self,
        inst: Instance,
        st: Option<ServiceStatusRecord>,
        backup_running: bool,
        datastore_version: DatastoreVersion,
        datastore: Datastore,
        configuration: Option<(Uuid, String)>,
        replicas: Vec<Uuid>,
    ) -> InstanceView {
        let st = self.effective_service(&inst, st);
        let state = Self::instance_state(&inst, st.as_ref(), backup_running);
        InstanceView {
            status: api_status(&state).to_string(),
            operating_status: operating_status(&state).to_string(),
            instance: inst,
            service: st,
            datastore,
            datastore_version,
            configuration,
            replicas,
            password: None,
        }
    }

    async fn configuration_ref(&self, id: Option<Uuid>) -> Result<Option<(Uuid, String)>> {
        Ok(match id {
            Some(c) => self
                .store
                .get_configuration(c)
                .await?
                .map(|c| (c.id, c.name)),
            None => None,
        })
    }

    /// The view of one instance: its guest status, running backups, replicas, datastore and configuration group
    /// are independent lookups, made concurrently.
    pub(super) async fn view(&self, inst: Instance) -> Result<InstanceView> {
        let (st, running, replicas, (datastore_version, datastore), configuration) =
            futures::future::try_join5(
                self.store.get_service_status(inst.id),
                self.backup_running(inst.id),
                self.store.list_replica_ids(&[inst.id]),
                self.cached_version_and_datastore(inst.datastore_version_id),
                self.configuration_ref(inst.configuration_id),
            )
            .await?;
        Ok(self.assemble_view(
            inst,
            st,
            running,
            datastore_version,
            datastore,
            configuration,
            replicas.into_iter().map(|(_, r)| r).collect(),
        ))
    }

    /// Views of many instances with a fixed number of store queries: one for the service statuses, one for
    /// the replicas, one backup listing per tenant, and one lookup per distinct datastore version and
    /// configuration group (not per instance).
    pub(super) async fn views(&self, instances: Vec<Instance>) -> Result<Vec<InstanceView>> {
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = instances.iter().map(|i| i.id).collect();
        // The batched lookups are independent: run them concurrently (a pooled store answers them on several
        // connections), the statuses in a few slices.
        let status_slices = futures::future::try_join_all(
            ids.chunks(STATUS_SLICE)
                .map(|slice| self.store.get_service_statuses(slice)),
        );
        let replica_pairs = self.store.list_replica_ids(&ids);
        // Instances with a running backup show BACKUP: one backup query per tenant in the list.
        let mut tenants: Vec<&str> = instances.iter().map(|i| i.tenant_id.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let backups = futures::future::try_join_all(tenants.into_iter().map(|t| {
            let f = BackupFilter {
                tenant_id: Some(t.to_string()),
                ..Default::default()
            };
            async move { self.store.list_backups(&f).await }
        }));
        let (status_slices, replica_pairs, backups) =
            futures::future::try_join3(status_slices, replica_pairs, backups).await?;
        let mut statuses: HashMap<Uuid, ServiceStatusRecord> = status_slices
            .into_iter()
            .flatten()
            .map(|s| (s.instance_id, s))
            .collect();
        let mut replicas: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for (source, replica) in replica_pairs {
            replicas.entry(source).or_default().push(replica);
        }
        let backing_up: std::collections::HashSet<Uuid> = backups
            .into_iter()
            .flatten()
            .filter(|b| b.state.is_running())
            .filter_map(|b| b.instance_id)
            .collect();
        let mut versions: HashMap<Uuid, (DatastoreVersion, Datastore)> = HashMap::new();
        let mut configurations: HashMap<Uuid, Option<(Uuid, String)>> = HashMap::new();
        for inst in &instances {
            if let std::collections::hash_map::Entry::Vacant(e) =
                versions.entry(inst.datastore_version_id)
            {
                e.insert(
                    self.cached_version_and_datastore(inst.datastore_version_id)
                        .await?,
                );
            }
            if let Some(c) = inst.configuration_id {
                if let std::collections::hash_map::Entry::Vacant(e) = configurations.entry(c) {
                    e.insert(self.configuration_ref(Some(c)).await?);
                }
            }
        }
        let mut out = Vec::with_capacity(instances.len());
        for inst in instances {
            let st = statuses.remove(&inst.id);
            let running = backing_up.contains(&inst.id);
            let (datastore_version, datastore) = versions
                .get(&inst.datastore_version_id)
                .cloned()
                .ok_or_else(|| Error::not_found("Datastore version", inst.datastore_version_id))?;
            let configuration = inst
                .configuration_id
                .and_then(|c| configurations.get(&c).cloned().flatten());
            let replicas = replicas.remove(&inst.id).unwrap_or_default();
            out.push(self.assemble_view(
                inst,
                st,
                running,
                datastore_version,
                datastore,
                configuration,
                replicas,
            ));
        }
        Ok(out)
    }

    /// One page of `instances`, newest first, paged by id (the marker is the id of the last instance of the
    /// previous page) before any view is built: views are built for that page only.
    pub(super) async fn views_page(
        &self,
        mut instances: Vec<Instance>,
        page: &PageRequest,
    ) -> Result<Page<InstanceView>> {
        instances.sort_by_key(|i| std::cmp::Reverse(i.created));
        let page = page.by_key(self.config.page_size, instances, |i| i.id.to_string())?;
        Ok(Page {
            items: self.views(page.items).await?,
            next: page.next,
        })
    }
}
