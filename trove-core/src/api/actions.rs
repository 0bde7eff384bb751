//! Instance actions (`POST /instances/{id}/action`): restart, resize (flavor, volume), reset status, promote
//! to replica source, eject replica source. Each passes the action gate and starts its workflow.

use uuid::Uuid;

use super::ApiService;
use crate::error::{Error, Result};
use crate::model::ServiceStatusRecord;
use crate::model::{BackupFilter, Facet, Flavor, Instance, Resource};
use crate::policy::rules;
use crate::ports::{ChangeSet, Expect, RequestContext, Write};
use crate::state::{
    heartbeat_expired, BackupState, Operation, ServerStatus, ServiceStatus, TaskStatus,
};
use crate::taskmanager::{ResizeFlavorParams, ResizeVolumeParams, RestartParams};

impl ApiService {
    /// The guest status a restart starts from (RESTARTING), replacing whatever was recorded.
    pub(super) fn restarting(&self, id: Uuid) -> Write {
        Write::ServiceStatus(ServiceStatusRecord {
            instance_id: id,
            status: ServiceStatus::Restarting,
            reason: None,
            volume: None,
            load: None,
            updated_at: self.clock.now(),
        })
    }

    /// `{"restart": {}}`.
    pub async fn restart_instance(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        let (inst, _, _) = self
            .instance_for(ctx, id, rules::INSTANCE_RESTART, Operation::Restart)
            .await?;
        let status = self.restarting(id);
        self.start_workflow(
            inst,
            &RestartParams {},
            TaskStatus::Rebooting,
            vec![status],
            None,
        )
        .await?;
        Ok(())
    }

    /// `{"resize": {"flavorRef": ...}}` (href already reduced to the id).
    pub async fn resize_flavor(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        flavor_ref: &str,
    ) -> Result<()> {
        let (mut inst, _, _) = self
            .instance_for(
                ctx,
                id,
                rules::INSTANCE_RESIZE_FLAVOR,
                Operation::ResizeFlavor,
            )
            .await?;
        let new = self.store.get_flavor(flavor_ref).await?.ok_or_else(|| {
            Error::bad_request(format!("Flavor {flavor_ref} could not be found."))
        })?;
        if new.id == inst.flavor_id {
            return Err(Error::bad_request(
                "The new flavor must differ from the current one.",
            ));
        }
        let (v, _) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        if !v.flavor_ids.is_empty() && !v.flavor_ids.contains(&new.id) {
            return Err(Error::not_found(
                "Flavor for datastore version",
                format!("{} ({})", new.id, v.name),
            ));
        }
        let old = self
            .store
            .get_flavor(&inst.flavor_id)
            .await?
            .unwrap_or_else(|| Flavor {
                id: inst.flavor_id.clone(),
                name: inst.flavor_id.clone(),
                ram_mb: inst.ram_mb,
                vcpus: 1,
                disk_gb: 0,
                ephemeral_gb: 0,
            });
        let params = ResizeFlavorParams {
            old_flavor: old,
            new_flavor: new.clone(),
        };
        // The RAM is reserved now (quota), and given back if the resize fails.
        inst.ram_mb = new.ram_mb;
        self.start_workflow(
            inst,
            &params,
            TaskStatus::Resizing,
            vec![],
            Some(&[Resource::Ram]),
        )
        .await?;
        Ok(())
    }

    /// `{"resize": {"volume": {"size": N}}}`.
    pub async fn resize_volume(&self, ctx: &RequestContext, id: Uuid, size_gb: u32) -> Result<()> {
        let (mut inst, _, _) = self
            .instance_for(
                ctx,
                id,
                rules::INSTANCE_RESIZE_VOLUME,
                Operation::ResizeVolume,
            )
            .await?;
        let current = inst
            .volume_size
            .ok_or_else(|| Error::bad_request(format!("Instance {id} has no volume.")))?;
        if size_gb <= current {
            return Err(Error::bad_request(format!(
                "The new volume size {size_gb} GB must be larger than the current size {current} GB."
            )));
        }
        if size_gb > self.config.max_accepted_volume_size {
            return Err(Error::OverLimit {
                message: format!(
                    "Volume size {size_gb} GB exceeds the maximum volume size of {} GB.",
                    self.config.max_accepted_volume_size
                ),
                retry_after: None,
            });
        }
        let params = ResizeVolumeParams {
            old_size: current,
            new_size: size_gb,
        };
        inst.volume_size = Some(size_gb);
        self.start_workflow(
            inst,
            &params,
            TaskStatus::Resizing,
            vec![],
            Some(&[Resource::Volumes]),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn reset_common(
        &self,
        inst: Instance,
        service: Option<ServiceStatus>,
    ) -> Result<()> {
        // A task manager may move the open workflow (or the instance) on between the read and the commit: read
        // again and retry, so a reset never fails for a race with the work it ends.
        let mut inst = inst;
        let mut attempt = 0;
        loop {
            match self.reset_once(inst.clone(), service).await {
                Err(Error::Conflict { .. }) if attempt < 5 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                    inst = self
                        .store
                        .get_instance(inst.id)
                        .await?
                        .ok_or_else(|| Error::not_found("Instance", inst.id))?;
                }
                r => return r,
            }
        }
    }

    async fn reset_once(&self, inst: Instance, service: Option<ServiceStatus>) -> Result<()> {
        let now = self.clock.now();
        let open = self.open_workflows_of(inst.id).await?;
        let mut cs = ChangeSet::new();
        for w in open {
            cs.push(self.close_workflow(w));
        }
        if let Some(s) = service {
            cs.push(Write::ServiceStatus(ServiceStatusRecord {
                instance_id: inst.id,
                status: s,
                reason: Some("status reset".into()),
                volume: None,
                load: None,
                updated_at: now,
            }));
            let f = BackupFilter {
                instance_id: Some(inst.id),
                ..Default::default()
            };
            for mut b in self.store.list_backups(&f).await? {
                if b.state.is_running() {
                    b.state = BackupState::Failed;
                    b.fault = Some("the instance's status was reset while the backup ran".into());
                    b.updated = now;
                    cs.push(Write::Backup(b));
                }
            }
        }
        let expect = Expect::Version(inst.version);
        let mut inst = inst;
        inst.task = TaskStatus::None;
        if inst.server_status == ServerStatus::Build {
            // The build will not finish: without this the instance would read BUILD, which refuses delete.
            inst.server_status = ServerStatus::Error;
        }
        inst.updated = now;
        cs.push(Write::Instance {
            instance: inst,
            expect,
        });
        self.store.commit(cs).await
    }

    /// `{"reset_status": {}}`: task NONE, service UNKNOWN, running backups FAILED, open workflows closed.
    pub async fn reset_status(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        let inst = self
            .authorized_instance(ctx, id, rules::INSTANCE_RESET_STATUS)
            .await?;
        self.reset_common(inst, Some(ServiceStatus::Unknown)).await
    }

    /// A member of a replication set that a promote or eject moves: it must be idle (no task, no backup, no
    /// open workflow); answers it with its task set to `busy`, to commit with the workflow.
    async fn lock_member(&self, id: Uuid, busy: TaskStatus) -> Result<Write> {
        let mut m = self
            .store
            .get_instance(id)
            .await?
            .ok_or_else(|| Error::not_found("Instance", id))?;
        let (state, _) = self.state(&m).await?;
        if !matches!(state.task, TaskStatus::None | TaskStatus::RestartRequired) {
            return Err(Error::unprocessable(format!(
                "Instance {id} of the replication set is not currently available for an action to be performed \
                 (task status was {}).",
                state.task.name()
            )));
        }
        if state.backup_running {
            return Err(Error::unprocessable(format!(
                "Instance {id} of the replication set is not currently available for an action to be performed \
                 (instance status was BACKUP)."
            )));
        }
        if let Some(w) = self.open_workflows_of(id).await?.first() {
            return Err(Error::unprocessable(format!(
                "Instance {id} of the replication set is not currently available for an action to be performed \
                 (its '{}' workflow is still running); try again when it has finished.",
                w.kind
            )));
        }
        let expect = Expect::Version(m.version);
        m.task = busy;
        m.updated = self.clock.now();
        Ok(Write::Instance {
            instance: m,
            expect,
        })
    }

    /// `{"promote_to_replica_source": {}}`: switchover to replica `id` (the old source turns read only, `id`
    /// applies everything it acknowledged, then takes writes; the old source and the siblings follow it).
    pub async fn promote_to_replica_source(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        let (inst, _, _) = self
            .instance_for(ctx, id, rules::INSTANCE_PROMOTE, Operation::Promote)
            .await?;
        let Some(source_id) = inst.replica_of else {
            return Err(Error::bad_request(format!(
                "Instance {id} is not a replica."
            )));
        };
        let (v, _) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        self.require_facet(v.manager, Facet::Replication, "replication")?;
        let source = self
            .store
            .get_instance(source_id)
            .await?
            .ok_or_else(|| Error::not_found("Instance", source_id))?;
        // The old source must answer: it is made read only first (a dead source is ejected instead).
        self.gate(&source, Operation::Promote).await.map_err(|e| {
            Error::unprocessable(format!(
                "The replica source {source_id} cannot take part in a switchover ({e}); if it is gone, eject it \
                 instead."
            ))
        })?;
        let siblings: Vec<Uuid> = self
            .replicas_of(source_id)
            .await?
            .into_iter()
            .map(|r| r.id)
            .filter(|r| *r != id)
            .collect();
        let mut extra = vec![self.lock_member(source_id, TaskStatus::Promoting).await?];
        for s in &siblings {
            extra.push(self.lock_member(*s, TaskStatus::Promoting).await?);
        }
        let params = crate::taskmanager::PromoteParams {
            old_source: source_id,
            siblings,
        };
        self.start_workflow(inst, &params, TaskStatus::Promoting, extra, None)
            .await?;
        Ok(())
    }

    /// `{"eject_replica_source": {}}`: source `id` is gone (its heartbeat expired); its most advanced replica
    /// becomes the source and the others follow it.
    pub async fn eject_replica_source(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        let inst = self
            .authorized_instance(ctx, id, rules::INSTANCE_EJECT)
            .await?;
        let replicas = self.replicas_of(id).await?;
        if replicas.is_empty() {
            return Err(Error::bad_request(format!(
                "Instance {id} is not a replica source."
            )));
        }
        let st = self.store.get_service_status(id).await?;
        if let Some(st) = st {
            if !heartbeat_expired(
                st.updated_at,
                self.clock.now(),
                self.config.agent_heartbeat_expiry,
            ) {
                return Err(Error::bad_request(format!(
                    "Replica source {id} cannot be ejected as it has a current heartbeat."
                )));
            }
        }
        let (v, _) = self
            .version_and_datastore(inst.datastore_version_id)
            .await?;
        self.require_facet(v.manager, Facet::Replication, "replication")?;
        if !matches!(inst.task, TaskStatus::None | TaskStatus::RestartRequired) {
            return Err(Error::unprocessable(format!(
                "Instance {id} is not currently available for an action to be performed (task status was {}).",
                inst.task.name()
            )));
        }
        if let Some(w) = self.open_workflows_of(id).await?.first() {
            return Err(Error::unprocessable(format!(
                "Instance {id} is not currently available for an action to be performed (its '{}' workflow is \
                 still running); try again when it has finished.",
                w.kind
            )));
        }
        let mut extra = Vec::new();
        for r in &replicas {
            extra.push(self.lock_member(r.id, TaskStatus::Ejecting).await?);
        }
        let params = crate::taskmanager::EjectParams {
            replicas: replicas.iter().map(|r| r.id).collect(),
            automatic: None,
        };
        self.start_workflow(inst, &params, TaskStatus::Ejecting, extra, None)
            .await?;
        Ok(())
    }

    /// `GET /instances/{id}/events` (extension): what happened to the instance's replication set (switchovers,
    /// ejects, automatic failovers: when, why, old and new source, positions), oldest first.
    pub async fn list_instance_events(
        &self,
        ctx: &RequestContext,
        id: Uuid,
    ) -> Result<Vec<crate::model::Event>> {
        let inst = self
            .authorized_instance(ctx, id, rules::INSTANCE_SHOW)
            .await?;
        self.store
            .list_events(&crate::model::EventFilter {
                tenant_id: Some(inst.tenant_id),
                instance_id: Some(id),
            })
            .await
    }
}
