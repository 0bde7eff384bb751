//! Create an instance: `volume` → `server` (compute launches the guest) → `prepare` → `wait_healthy` → task NONE.
//!
//! Failures leave the instance in an upstream error task (BUILDING_ERROR_VOLUME, BUILDING_ERROR_SERVER,
//! BUILDING_ERROR_TIMEOUT_GA) with a fault saying what failed; the user deletes it, which frees what was made.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::fail;
use crate::model::{
    DatabaseSpec, DatastoreVersion, Flavor, Locality, Secret, UserSpec, WorkflowKind,
    WorkflowParams,
};
use crate::ports::{PrepareRequest, RestoreSpec, Server, ServerSpec};
use crate::seal::Sealer;
use crate::state::{ServerStatus, TaskStatus};
use crate::taskmanager::{Failure, StepContext, StepResult, WaitHealthy, WorkflowDef};

/// Parameters of the create workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateParams {
    /// Flavor of the server.
    pub flavor: Flavor,
    /// Version to run.
    pub datastore_version: DatastoreVersion,
    /// Initial databases.
    #[serde(default)]
    pub databases: Vec<DatabaseSpec>,
    /// Initial users. Their passwords never rest here in clear: [`CreateParams::seal_secrets`] moves them into
    /// `sealed` before the parameters are stored.
    #[serde(default)]
    pub users: Vec<UserSpec>,
    /// Root password to set on create (sealed like the users' passwords).
    #[serde(default)]
    pub root_password: Option<Secret>,
    /// The users' passwords and the root password, sealed with the deployment's key for this instance
    /// ([`crate::seal`]); removed when the workflow ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// Configuration overrides to render.
    #[serde(default)]
    pub overrides: Map<String, Value>,
    /// Placement group (source id) and policy.
    #[serde(default)]
    pub group: Option<(Uuid, Locality)>,
    /// Whether secrets were scrubbed.
    #[serde(default)]
    pub scrubbed: bool,
    /// Source to replicate from: the replica is seeded from a backup of it, then follows it.
    #[serde(default)]
    pub replica_of: Option<Uuid>,
    /// The backup record (NEW, of the source) that seeds the replica; made by the API with the replica.
    #[serde(default)]
    pub seed_backup: Option<Uuid>,
    /// Backup to restore from: the guest makes the data from it (and its parents, for an incremental).
    #[serde(default)]
    pub restore_point: Option<Uuid>,
    /// Stop the restore at this moment (point-in-time restore; checked against the chain's window by the API).
    #[serde(default)]
    pub restore_time: Option<chrono::DateTime<chrono::Utc>>,
}

impl WorkflowParams for CreateParams {
    const KIND: WorkflowKind = WorkflowKind::new("create");

    fn scrub(&mut self) {
        for u in &mut self.users {
            u.password = Secret::new("");
        }
        self.root_password = None;
        self.sealed = None;
        self.scrubbed = true;
    }
}

/// What [`CreateParams::seal_secrets`] seals.
#[derive(Serialize, Deserialize)]
struct CreateSecrets {
    passwords: Vec<Secret>,
    root_password: Option<Secret>,
}

fn secrets_context(instance_id: Uuid) -> String {
    format!("create workflow of instance {instance_id}")
}

impl CreateParams {
    /// Moves the users' passwords and the root password into `sealed`, sealed with `sealer` for `instance_id`
    /// (call before the parameters are stored).
    pub fn seal_secrets(&mut self, sealer: &Sealer, instance_id: Uuid) -> crate::Result<()> {
        let secrets = CreateSecrets {
            passwords: self
                .users
                .iter_mut()
                .map(|u| std::mem::take(&mut u.password))
                .collect(),
            root_password: self.root_password.take(),
        };
        self.sealed = Some(sealer.seal_json(&secrets, &secrets_context(instance_id))?);
        Ok(())
    }

    /// The users with their passwords and the root password, opened from `sealed` (as they are when nothing was
    /// sealed).
    pub fn open_secrets(
        &self,
        sealer: &Sealer,
        instance_id: Uuid,
    ) -> crate::Result<(Vec<UserSpec>, Option<Secret>)> {
        let Some(sealed) = &self.sealed else {
            return Ok((self.users.clone(), self.root_password.clone()));
        };
        let s: CreateSecrets = sealer.open_json(sealed, &secrets_context(instance_id))?;
        let users = self
            .users
            .iter()
            .cloned()
            .zip(s.passwords)
            .map(|(mut u, pw)| {
                u.password = pw;
                u
            })
            .collect();
        Ok((users, s.root_password))
    }
}

/// The create workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Create;

/// The chain of backups a restore from `backup_id` applies, its full backup first.
async fn restore_chain(
    cx: &StepContext<'_>,
    backup_id: Uuid,
    restore_time: Option<chrono::DateTime<chrono::Utc>>,
) -> StepResult<RestoreSpec> {
    let mut chain = Vec::new();
    let mut next = Some(backup_id);
    while let Some(id) = next {
        let b = cx
            .store()
            .get_backup(id)
            .await
            .map_err(super::super::context::abort_on_store)?
            .filter(|b| !b.deleted && b.state.is_restorable())
            .ok_or_else(|| {
                Failure::with_details(
                    format!("Backup {id} to restore from is gone or not completed."),
                    format!("restore chain of {backup_id} broken at {id}"),
                )
            })?;
        let piece = super::backup::piece_of(&b).ok_or_else(|| {
            Failure::with_details(
                format!("Backup {id} has no complete object to restore from."),
                format!("backup {id} has no location, checksum or size"),
            )
        })?;
        next = b.parent_id;
        chain.push(piece);
        if chain.len() > 1000 {
            return Err(Failure::with_details(
                "The backup chain to restore is too long or loops.",
                format!("chain of {backup_id}"),
            )
            .into());
        }
    }
    chain.reverse();
    Ok(RestoreSpec {
        chain,
        restore_time,
        replica: false,
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct VolumeMade {
    volume_id: String,
    path: std::path::PathBuf,
}

#[async_trait]
impl WorkflowDef for Create {
    type Params = CreateParams;

    fn error_task(&self) -> Option<TaskStatus> {
        Some(TaskStatus::BuildingErrorServer)
    }

    async fn run(&self, cx: &mut StepContext<'_>, p: &CreateParams) -> StepResult<()> {
        let instance_id = cx.instance_id();
        let restore = match (p.replica_of, p.seed_backup, p.restore_point) {
            (Some(source), Some(seed), _) => {
                Some(super::replication::seed(cx, source, seed).await?)
            }
            (Some(source), None, _) => {
                return Err(Failure::with_details(
                    "The replica has no backup to be seeded from; create it again.",
                    format!("replica of {source} without a seed backup"),
                )
                .task(TaskStatus::BuildingErrorReplica)
                .into());
            }
            (None, _, Some(bid)) => Some(restore_chain(cx, bid, p.restore_time).await?),
            (None, _, None) => None,
        };
        let inst = cx.instance().await?;

        // 1. volume
        let volume_path = match (cx.config().volume_support, inst.volume_size) {
            (true, Some(size)) => {
                let storage = cx.storage();
                let vtype = inst.volume_type.clone();
                let made: VolumeMade = cx
                    .step("volume", |_| async move {
                        let v = storage
                            .create_volume(instance_id, size, vtype.as_deref())
                            .await
                            .map_err(|e| {
                                Failure::new("The volume could not be created.", &e)
                                    .task(TaskStatus::BuildingErrorVolume)
                            })?;
                        Ok(VolumeMade {
                            volume_id: v.id,
                            path: v.path,
                        })
                    })
                    .await?;
                if inst.volume_id.as_deref() != Some(made.volume_id.as_str()) {
                    let vid = made.volume_id.clone();
                    cx.update(|i, _| i.volume_id = Some(vid.clone())).await?;
                }
                Some(made.path)
            }
            _ => None,
        };

        // 2. server (compute launches the guest)
        let spec = ServerSpec {
            instance_id,
            name: inst.name.clone(),
            flavor: p.flavor.clone(),
            datastore_version: p.datastore_version.clone(),
            volume_path,
            group: p.group,
            availability_zone: inst.availability_zone.clone(),
        };
        let compute = cx.compute();
        let spec_again = spec.clone();
        let server: Server = cx
            .step("server", |_| async move {
                compute
                    .create_server(&spec)
                    .await
                    .map_err(|e| fail("The server could not be created.", &e))
            })
            .await?;
        if cx.instance().await?.server_id.as_ref() != Some(&server.id) {
            cx.update(|i, _| {
                i.server_id = Some(server.id.clone());
                i.host = Some(server.host.clone());
                i.addresses = server.addresses.clone();
                i.port = server.port;
                i.server_status = server.status;
            })
            .await?;
        }

        // 3. prepare (a cast: the guest may not serve its topic yet; the message waits for it), then 4. wait for
        // the guest's HEALTHY report. A prepare lost with a crashed process, or cut short by one, is asked for
        // again when the guest reports that it waits to be prepared; so the secrets stay in the parameters until
        // the workflow ends (it scrubs them then, whether it succeeds or fails).
        let guest = cx.guest();
        // The secrets are opened only here, in memory, for the guest (the bus seals them for it).
        let opened = p.open_secrets(cx.sealer(), instance_id);
        let unopenable = opened.as_ref().err().map(|e| e.to_string());
        let (users, root_password) = opened.unwrap_or_default();
        let req = PrepareRequest {
            memory_mb: p.flavor.ram_mb,
            volume_size_gb: inst.volume_size,
            databases: p.databases.clone(),
            users,
            root_password,
            overrides: p.overrides.clone(),
            restore,
        };
        let scrubbed = p.scrubbed;
        let compute = cx.compute();
        let timeout = cx.config().usage_timeout;
        cx.guest_work(
            "wait_healthy",
            WaitHealthy::after("prepare", timeout).timeout_task(TaskStatus::BuildingErrorTimeoutGa),
            || {
                let (compute, spec, guest, req, unopenable) = (
                    compute.clone(),
                    spec_again.clone(),
                    guest.clone(),
                    req.clone(),
                    unopenable.clone(),
                );
                async move {
                    // Make sure the guest runs: after a restart of the whole process the server step is done but
                    // its guest may be gone; create_server is idempotent and (re)launches the guest.
                    compute
                        .create_server(&spec)
                        .await
                        .map_err(|e| fail("The server could not be found or started again.", &e))?;
                    if scrubbed {
                        return Err(Failure::with_details(
                            "The build cannot be resumed: its secrets were already discarded.",
                            "prepare must be re-sent but the workflow's passwords were scrubbed",
                        )
                        .into());
                    }
                    if let Some(why) = unopenable {
                        return Err(Failure::with_details(
                            "The build cannot be resumed: its secrets cannot be opened with this deployment's keys.",
                            why,
                        )
                        .into());
                    }
                    guest
                        .prepare(req)
                        .await
                        .map_err(|e| fail("The guest could not be asked to prepare.", &e))
                }
            },
        )
        .await?;

        // 5. a replica follows its source; its seed backup goes
        let mut seed_gone = None;
        if let Some(source) = p.replica_of {
            super::replication::attach(cx, source).await?;
            if let Some(seed) = p.seed_backup {
                seed_gone = super::replication::drop_seed(cx, seed).await?;
            }
        }

        // 6. done
        cx.finish(|i, extra| {
            i.task = TaskStatus::None;
            i.server_status = ServerStatus::Active;
            i.fault = None;
            extra.extend(seed_gone.clone());
        })
        .await?;
        Ok(())
    }

    /// A replica's seed backup is deleted (its object purged); the rest stays for the user's delete.
    async fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        p: &CreateParams,
        failure: Failure,
    ) -> StepResult<Failure> {
        if let Some(seed) = p.seed_backup {
            if let Some(w) = super::replication::drop_seed(cx, seed).await? {
                cx.update(|_, extra| extra.push(w.clone())).await?;
            }
        }
        Ok(failure)
    }

    #[cfg(feature = "testing")]
    fn crash_scenarios(&self) -> Vec<crate::testing::crash::Scenario> {
        use crate::testing::crash::Scenario;
        vec![
            Scenario::new("create", |w| {
                Box::pin(async move { w.create_instance("db").await })
            })
            .check(|w, id| Box::pin(async move { w.expect_active(id).await })),
            Scenario::new("create from a backup", |w| {
                Box::pin(async move {
                    let src = w.active_instance("src").await?;
                    w.add_database(src, "before_backup").await?;
                    w.take_backup(src).await?;
                    w.settle().await?;
                    w.create_restored("copy", src).await
                })
            })
            .check(|w, id| {
                Box::pin(async move {
                    w.expect_active(id).await?;
                    w.expect_restored(id).await
                })
            }),
            // A replica: seeded from a backup of its source taken through the source's guest, then attached.
            Scenario::new("create a replica", |w| {
                Box::pin(async move {
                    let source = w.replica_source("src").await?;
                    w.create_replicas(source, 1).await
                })
            })
            .check(|w, id| {
                Box::pin(async move {
                    w.expect_active(id).await?;
                    w.expect_one_source(id).await?;
                    // The seed backup is deleted; the purge removes its object.
                    w.settle().await
                })
            }),
            // The prepare request is lost (it died with a crashed process): the guest keeps reporting that it
            // waits to be prepared, and the workflow asks again.
            Scenario::new("create whose prepare request the guest never gets", |w| {
                Box::pin(async move {
                    let id = w.create_instance("db").await?;
                    w.bus.drop_next_on(&crate::rpc::guest_topic(id), 1);
                    Ok(id)
                })
            })
            .check(|w, id| Box::pin(async move { w.expect_active(id).await })),
            // The guest fails to prepare (once): the build fails with the guest's reason, unless a crash made a
            // resumed worker ask again.
            Scenario::new("create whose guest fails to prepare", |w| {
                Box::pin(async move {
                    let id = w.create_instance("db").await?;
                    w.engines.engine(id).fail_next_prepare();
                    Ok(id)
                })
            })
            .ends_either_way()
            .check(|w, id| {
                Box::pin(async move {
                    let inst = w.instance(id).await?;
                    if inst.task == TaskStatus::None {
                        return w.expect_active(id).await;
                    }
                    w.expect(
                        inst.task == TaskStatus::BuildingErrorServer,
                        &format!(
                            "a failed prepare shows BUILDING_ERROR_SERVER, not {:?}",
                            inst.task
                        ),
                    )?;
                    w.expect(
                        inst.fault
                            .is_some_and(|f| f.message.contains("failed to start")),
                        "the fault does not carry the guest's reason",
                    )
                })
            }),
        ]
    }
}
