//! Backups (`/backups...`, `/instances/{id}/backups`): recording a backup and starting its workflow, listing,
//! showing and deleting them (incrementals with their parent).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiService, Page, PageRequest};
use crate::error::{Error, Result};
use crate::model::WorkflowParams;
use crate::model::{
    Backup, BackupFilter, BackupType, Datastore, DatastoreVersion, Facet, Resource,
};
use crate::policy::{rules, Target};
use crate::ports::{ChangeSet, RequestContext, Write};
use crate::state::{BackupState, Operation};
use crate::taskmanager::workflows::backup::DEFAULT_BACKUP_CONTAINER;
use crate::taskmanager::CreateParams;

/// A container (bucket) name: 1 to 63 letters, digits, `-`, `_` and `.`, starting with a letter or digit.
fn check_container(c: &str) -> Result<&str> {
    let ok = !c.is_empty()
        && c.len() <= 63
        && c.chars()
            .next()
            .is_some_and(|ch| ch.is_ascii_alphanumeric())
        && c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
    if ok {
        Ok(c)
    } else {
        Err(Error::bad_request(format!(
            "The container name '{}' is not valid: use 1 to 63 letters, digits, '-', '_' and '.', starting with a \
             letter or digit.",
            c.escape_default()
        )))
    }
}

/// A backup with its datastore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupView {
    /// Backup.
    pub backup: Backup,
    /// Datastore of the source.
    pub datastore: Option<Datastore>,
    /// Version of the source.
    pub datastore_version: Option<DatastoreVersion>,
}

/// `POST /backups` body, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateBackup {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Source instance (uuid; href already reduced).
    pub instance: Option<Uuid>,
    /// Parent backup, for incrementals.
    pub parent_id: Option<Uuid>,
    /// Incremental (parent defaults to the last completed backup).
    pub incremental: bool,
    /// Register an existing backup object instead of taking one.
    pub restore_from: Option<RestoreFrom>,
    /// Container to write to (upstream `swift_container`); `None`: the backup strategy's, else the default.
    pub container: Option<String>,
}

/// `restore_from` of a backup create body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestoreFrom {
    /// Where the object is.
    pub remote_location: String,
    /// Version of the datastore that wrote it.
    pub local_datastore_version_id: Uuid,
    /// Size in GB.
    pub size: f64,
}

/// `GET /backups` query, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupQuery {
    /// Only backups of this datastore (name or id).
    pub datastore: Option<String>,
    /// Only backups of this instance.
    pub instance_id: Option<Uuid>,
    /// Only this project's (admin).
    pub project_id: Option<String>,
    /// Every project's (admin).
    pub all_projects: bool,
}

/// Running backup states older than this no longer block deletion (upstream `running_backups_expires`).
const RUNNING_BACKUP_EXPIRY_DAYS: i64 = 3;

impl ApiService {
    pub(super) async fn load_backup(&self, ctx: &RequestContext, id: Uuid) -> Result<Backup> {
        match self.store.get_backup(id).await? {
            Some(b) if !b.deleted && (b.tenant_id == ctx.tenant_id) => Ok(b),
            _ => Err(Error::not_found("Backup", id)),
        }
    }

    async fn backup_view(&self, b: Backup) -> Result<BackupView> {
        let (v, ds) = match self.version_and_datastore(b.datastore_version_id).await {
            Ok((v, ds)) => (Some(v), Some(ds)),
            Err(Error::NotFound { .. }) => (None, None),
            Err(e) => return Err(e),
        };
        Ok(BackupView {
            backup: b,
            datastore: ds,
            datastore_version: v,
        })
    }

    /// `GET /instances/{id}/backups`.
    pub async fn instance_backups(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Vec<BackupView>> {
        self.authorized_instance(ctx, id, rules::INSTANCE_BACKUPS)
            .await?;
        let f = BackupFilter {
            tenant_id: Some(ctx.tenant_id.clone()),
            instance_id: Some(id),
            include_deleted: false,
        };
        let mut out = Vec::new();
        for b in self.store.list_backups(&f).await? {
            out.push(self.backup_view(b).await?);
        }
        Ok(out)
    }

    /// `GET /backups`.
    pub async fn list_backups(
        &self,
        ctx: &RequestContext,
        query: BackupQuery,
    ) -> Result<Vec<BackupView>> {
        let tenant = if query.all_projects || query.project_id.is_some() {
            self.authorize_on_tenant(ctx, rules::BACKUP_INDEX_ALL_PROJECTS)?;
            query.project_id.clone()
        } else {
            self.authorize_on_tenant(ctx, rules::BACKUP_INDEX)?;
            Some(ctx.tenant_id.clone())
        };
        let ds = match &query.datastore {
            Some(d) => Some(self.find_datastore(d).await?),
            None => None,
        };
        let f = BackupFilter {
            tenant_id: tenant,
            instance_id: query.instance_id,
            include_deleted: false,
        };
        let mut out = Vec::new();
        for b in self.store.list_backups(&f).await? {
            let v = self.backup_view(b).await?;
            if let Some(ds) = &ds {
                if v.datastore.as_ref().map(|d| d.id) != Some(ds.id) {
                    continue;
                }
            }
            out.push(v);
        }
        Ok(out)
    }

    /// `GET /backups`, one page: most recently updated first, by offset (upstream's backup paging: the marker
    /// is the index of the page's first backup).
    pub async fn list_backups_page(
        &self,
        ctx: &RequestContext,
        query: BackupQuery,
        page: &PageRequest,
    ) -> Result<Page<BackupView>> {
        let all = self.list_backups(ctx, query).await?;
        self.backups_page(all, page)
    }

    /// `GET /instances/{id}/backups`, one page, as [`ApiService::list_backups_page`] pages.
    pub async fn instance_backups_page(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<BackupView>> {
        let all = self.instance_backups(ctx, id).await?;
        self.backups_page(all, page)
    }

    fn backups_page(
        &self,
        mut all: Vec<BackupView>,
        page: &PageRequest,
    ) -> Result<Page<BackupView>> {
        all.sort_by_key(|v| std::cmp::Reverse(v.backup.updated));
        page.by_offset(self.config.page_size, all)
    }

    /// `POST /backups`: persists the backup (NEW) and a backup workflow, answers 202 with the view.
    pub async fn create_backup(
        &self,
        ctx: &RequestContext,
        req: CreateBackup,
    ) -> Result<BackupView> {
        self.authorize_on_tenant(ctx, rules::BACKUP_CREATE)?;
        if req.name.trim().is_empty() || req.name.chars().count() > 255 {
            return Err(Error::bad_request(
                "A backup needs a name of 1 to 255 characters.",
            ));
        }
        let now = self.clock.now();
        if let Some(r) = req.restore_from {
            // Registers an existing object: no work for a guest.
            let (v, _) = self
                .version_and_datastore(r.local_datastore_version_id)
                .await?;
            if r.remote_location.trim().is_empty() {
                return Err(Error::bad_request("restore_from needs a remote_location."));
            }
            let b = Backup {
                id: Uuid::new_v4(),
                tenant_id: ctx.tenant_id.clone(),
                instance_id: None,
                name: req.name,
                description: req.description,
                state: BackupState::Restored,
                size: Some(r.size),
                location: Some(r.remote_location),
                checksum: None,
                parent_id: None,
                backup_type: BackupType::Full,
                datastore_version_id: v.id,
                created: now,
                updated: now,
                deleted: false,
                bytes: None,
                position: None,
                fault: None,
                container: None,
                purged: false,
                schedule_id: None,
            };
            self.store
                .commit(
                    ChangeSet::new()
                        .with(Write::Backup(b.clone()))
                        .check_quota(ctx.tenant_id.clone(), &[Resource::Backups]),
                )
                .await?;
            return self.backup_view(b).await;
        }
        let iid = req
            .instance
            .ok_or_else(|| Error::bad_request("A backup needs an instance."))?;
        let inst = self.load_instance(ctx, iid).await?;
        let (v, _) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        self.require_facet(v.manager, Facet::Backup, "backups")?;
        self.gate(&inst, Operation::Backup).await?;
        let parent = self.backup_parent(ctx, &inst, v.manager, &req).await?;
        let container = match req.container.as_deref().map(str::trim) {
            Some("") => {
                return Err(Error::bad_request(
                    "swift_container must not be empty when given.",
                ))
            }
            Some(c) => Some(check_container(c)?.to_string()),
            None => self.strategy_container(&inst).await?,
        };
        let (b, wf) = crate::taskmanager::workflows::backup::plan(
            &inst,
            req.name,
            req.description,
            parent.as_ref(),
            container.unwrap_or_else(|| DEFAULT_BACKUP_CONTAINER.to_string()),
            None,
            now,
        )?;
        self.start_planned_workflow(
            inst,
            wf,
            vec![Write::Backup(b.clone())],
            &[Resource::Backups],
        )
        .await?;
        self.backup_view(b).await
    }

    /// The parent of a new backup: the one named (of the same instance, completed), or with `incremental` and
    /// none named the instance's latest completed backup (none yet: a full backup, as upstream).
    async fn backup_parent(
        &self,
        ctx: &RequestContext,
        inst: &crate::model::Instance,
        manager: crate::model::Manager,
        req: &CreateBackup,
    ) -> Result<Option<Backup>> {
        if (req.incremental || req.parent_id.is_some()) && !manager.incremental_backups() {
            return Err(Error::unprocessable(format!(
                "Incremental backups are not supported for datastore {manager}; take a full backup."
            )));
        }
        if let Some(pid) = req.parent_id {
            let p = self.load_backup(ctx, pid).await?;
            if p.instance_id != Some(inst.id) || p.datastore_version_id != inst.datastore_version_id
            {
                return Err(Error::bad_request(format!(
                    "Backup {pid} is a backup of another instance or datastore version; an incremental \
                     backup's parent must be a backup of the same instance."
                )));
            }
            if p.state != BackupState::Completed {
                return Err(Error::unprocessable(format!(
                    "Backup {pid} is {} and cannot be the parent of an incremental backup.",
                    p.state.as_str()
                )));
            }
            return Ok(Some(p));
        }
        if !req.incremental {
            return Ok(None);
        }
        let f = BackupFilter {
            tenant_id: Some(ctx.tenant_id.clone()),
            instance_id: Some(inst.id),
            include_deleted: false,
        };
        let all = self.store.list_backups(&f).await?;
        Ok(crate::taskmanager::workflows::backup::latest_completed(
            &all, inst,
        ))
    }

    /// The container of the instance's backup strategy, else of its tenant's.
    async fn strategy_container(&self, inst: &crate::model::Instance) -> Result<Option<String>> {
        let all = self
            .store
            .list_backup_strategies(&crate::model::BackupStrategyFilter {
                tenant_id: Some(inst.tenant_id.clone()),
                instance_id: None,
            })
            .await?;
        let own = all.iter().find(|s| s.instance_id == Some(inst.id));
        let tenant = all.iter().find(|s| s.instance_id.is_none());
        Ok(own.or(tenant).map(|s| s.container.clone()))
    }

    /// The open create workflow (its instance) restoring from one of `ids`, if any.
    async fn restoring_from(&self, ids: &[Uuid]) -> Result<Option<Uuid>> {
        for wf in self.store.list_open_workflows().await? {
            if wf.kind != CreateParams::KIND {
                continue;
            }
            if let Ok(p) = wf.params::<CreateParams>() {
                if p.restore_point.is_some_and(|r| ids.contains(&r)) {
                    return Ok(Some(wf.instance_id));
                }
            }
        }
        Ok(None)
    }

    /// `GET /backups/{id}`.
    pub async fn show_backup(&self, ctx: &RequestContext, id: Uuid) -> Result<BackupView> {
        let b = self.load_backup(ctx, id).await?;
        self.authorize(ctx, rules::BACKUP_SHOW, &Target::project(&b.tenant_id))?;
        self.backup_view(b).await
    }

    /// `DELETE /backups/{id}`.
    pub async fn delete_backup(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        let b = self.load_backup(ctx, id).await?;
        self.authorize(ctx, rules::BACKUP_DELETE, &Target::project(&b.tenant_id))?;
        let now = self.clock.now();
        if b.state.is_running()
            && now - b.updated < chrono::Duration::days(RUNNING_BACKUP_EXPIRY_DAYS)
        {
            return Err(Error::unprocessable(format!(
                "Backup {id} is still running and cannot be deleted."
            )));
        }
        // Children (incrementals) first, then the backup itself, in one commit.
        let all = self
            .store
            .list_backups(&BackupFilter {
                tenant_id: Some(b.tenant_id.clone()),
                ..Default::default()
            })
            .await?;
        let mut doomed = vec![b];
        let mut i = 0;
        while i < doomed.len() {
            let pid = doomed[i].id;
            for c in all.iter().filter(|c| c.parent_id == Some(pid)) {
                if !doomed.iter().any(|d| d.id == c.id) {
                    doomed.push(c.clone());
                }
            }
            i += 1;
        }
        // A restore reads the backup it starts from and every parent up the chain: refuse deleting any of them.
        let mut read_by: Vec<Uuid> = doomed.iter().map(|d| d.id).collect();
        read_by.extend(
            all.iter()
                .filter(|c| {
                    let mut p = c.parent_id;
                    let mut hops = 0;
                    while let (Some(pid), true) = (p, hops < 64) {
                        if doomed.iter().any(|d| d.id == pid) {
                            return true;
                        }
                        p = all.iter().find(|x| x.id == pid).and_then(|x| x.parent_id);
                        hops += 1;
                    }
                    false
                })
                .map(|c| c.id),
        );
        if let Some(iid) = self.restoring_from(&read_by).await? {
            return Err(Error::unprocessable(format!(
                "Backup {id} is being restored to instance {iid}; delete it once that instance is built."
            )));
        }
        let mut cs = ChangeSet::new();
        for mut d in doomed {
            d.deleted = true;
            d.updated = now;
            cs.push(Write::Backup(d));
        }
        self.store.commit(cs).await
    }
}
