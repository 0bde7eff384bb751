//! One base for every process engine: [`ProcessStrategy`] implements the lifecycle (prepare, start, stop,
//! status, restart, flavor, volume) and the configuration, TLS and log facets once, over an [`Engine`] that
//! supplies only what differs: binaries, config rendering, the spawn command, readiness and health probes, the
//! admin bootstrap, the stop signal, and the users / databases / root facets it offers.

use async_trait::async_trait;
use serde_json::{Map, Value};
use std::ffi::OsString;
use std::path::PathBuf;
use trove_os::crash_point;

use trove_core::guest_log::GuestLogContext;
use trove_core::model::{
    validate_password, Facet, GuestLog, LogActionRequest, Manager, SslChange, SslChangeResult,
    SslView,
};
use trove_core::ports::{
    not_supported, BackupFacet, BackupJob, BackupOutcome, BackupProgress, ClusterFacet,
    ConfigurationFacet, DatabasesFacet, DatastoreStrategy, DynBackupStore, EngineStatus, FsStats,
    LogsFacet, PrepareRequest, ReplicationFacet, RestoreSpec, RootFacet, TlsFacet, UsersFacet,
};
use trove_core::state::ServiceStatus;
use trove_core::{Error, Result};

use crate::backup::EngineBackup;
use crate::base::Base;
use crate::common::{
    check_override_key, down_status, read_pid, spawn_detached, status, wait_ready,
};
use crate::logs::EngineLogs;
use crate::overrides::Configurable;
use crate::tls::TlsEngine;

/// How to start an engine's server process.
#[derive(Debug, Clone)]
pub(crate) struct Spawn {
    /// The server binary.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Where its standard output and error go.
    pub output: PathBuf,
}

/// What differs between engines. Configuration rendering and live changes come from [`Configurable`], TLS hooks
/// from [`TlsEngine`].
#[async_trait]
pub(crate) trait Engine: Configurable + TlsEngine + Send + Sync + 'static {
    /// The server process's name, for messages (`mariadbd`).
    const PROCESS: &'static str;
    /// The signal that shuts the server down cleanly.
    const STOP_SIGNAL: &'static str = "TERM";

    /// Instance-wide facts.
    fn base(&self) -> &Base;
    /// The pid file the server writes.
    fn pid_file(&self) -> PathBuf;
    /// The server's log (its last lines explain a crash).
    fn log_file(&self) -> PathBuf;
    /// What the server's command line contains (tells our engine from a process that reused its pid).
    fn idents(&self) -> Vec<String>;

    /// Initialises the data directory when it is not (the first prepare, or one interrupted before).
    async fn init(&self) -> Result<()> {
        Ok(())
    }
    /// Readies what the server needs beside its rendered configuration (sockets, account files) and says how to
    /// start it.
    fn spawn(&self) -> Result<Spawn>;
    /// Whether the server answers at all (start-up readiness).
    async fn answers(&self) -> Result<()>;
    /// Whether the server answers its admin (the health probe of `status`).
    async fn probe(&self) -> Result<()> {
        self.answers().await
    }
    /// After the server first answers in `prepare`: the admin account, first-time settings.
    async fn bootstrap(&self) -> Result<()> {
        Ok(())
    }
    /// Creates the databases and users of a prepare request, leaving existing ones as they are (a repeated
    /// prepare sets their passwords and grants again).
    async fn seed(&self, req: &PrepareRequest) -> Result<()>;

    /// The users facet, when the engine has users.
    fn users(&self) -> Option<&dyn UsersFacet> {
        None
    }
    /// The databases facet, when the engine has databases.
    fn databases(&self) -> Option<&dyn DatabasesFacet> {
        None
    }
    /// The root facet, when the engine has a superuser.
    fn root(&self) -> Option<&dyn RootFacet> {
        None
    }
    /// The engine's guest logs, when it exposes some.
    fn guest_logs(&self) -> Option<EngineLogs> {
        None
    }
    /// The engine's backup tool, when it has one.
    fn backup_tool(&self) -> Option<&dyn EngineBackup> {
        None
    }
    /// The replication facet, when the engine replicates.
    fn replication(&self) -> Option<&dyn ReplicationFacet> {
        None
    }
    /// The cluster facet, when the engine can be a member of a cluster.
    fn cluster(&self) -> Option<&dyn ClusterFacet> {
        None
    }

    /// The running server's pid (from its pid file or the recorded spawn, checked against its command line).
    fn running_pid(&self) -> Option<u32> {
        self.base().engine_pid(&self.pid_file(), &self.idents())
    }
}

/// A [`DatastoreStrategy`] for an engine run as a local process.
pub(crate) struct ProcessStrategy<E> {
    engine: E,
    backups: Option<DynBackupStore>,
}

impl<E: Engine> std::fmt::Debug for ProcessStrategy<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let base = self.engine.base();
        f.debug_struct("ProcessStrategy")
            .field("manager", &base.manager)
            .field("instance_id", &base.ctx.instance_id)
            .field("port", &base.ctx.port)
            .finish()
    }
}

impl<E: Engine> ProcessStrategy<E> {
    /// A strategy over `engine`, backing up into `backups` when given.
    pub fn new(engine: E, backups: Option<DynBackupStore>) -> ProcessStrategy<E> {
        ProcessStrategy { engine, backups }
    }

    /// The engine's backup tool and the store, when both exist.
    fn backup_parts(&self) -> Option<(&dyn EngineBackup, &DynBackupStore)> {
        Some((self.engine.backup_tool()?, self.backups.as_ref()?))
    }

    /// Makes the data directory from a backup chain, once: a restore cut short is started again from an empty
    /// directory (the records of [`Layout::data_initialized`](crate::common::Layout::data_initialized)).
    async fn restore(&self, spec: &RestoreSpec) -> Result<()> {
        let base = self.base();
        let (tool, store) = self
            .backup_parts()
            .ok_or_else(|| not_supported(base.manager, Facet::Backup.as_str()))?;
        if base.layout.data_initialized(false) {
            return Ok(());
        }
        if spec.chain.is_empty() {
            return Err(Error::bad_request("A restore needs at least one backup."));
        }
        base.layout
            .initialize_data(|| async {
                base.layout.clear_data_dir();
                tool.restore(store, spec).await
            })
            .await
    }

    fn base(&self) -> &Base {
        self.engine.base()
    }

    /// Refuses a prepare request before anything is touched: invalid names, and databases or users the engine
    /// does not offer (422).
    fn check_prepare(&self, req: &PrepareRequest) -> Result<()> {
        let manager = self.base().manager;
        if !req.databases.is_empty() && self.engine.databases().is_none() {
            return Err(not_supported(manager, Facet::Databases.as_str()));
        }
        if !req.users.is_empty() && self.engine.users().is_none() {
            return Err(not_supported(manager, Facet::Users.as_str()));
        }
        if req.root_password.is_some() && self.engine.root().is_none() {
            return Err(not_supported(manager, Facet::Root.as_str()));
        }
        self.base().validate_databases(&req.databases)?;
        self.base().validate_users(&req.users)?;
        for k in req.overrides.keys() {
            check_override_key(k)?;
        }
        if let Some(p) = &req.root_password {
            validate_password(p)?;
        }
        Ok(())
    }

    /// Starts the server unless it runs, and waits until it answers.
    async fn start_engine(&self) -> Result<()> {
        start_engine(&self.engine).await
    }
}

/// Starts `e`'s server unless it runs, and waits until it answers (for facets that restart their engine).
pub(crate) async fn start_engine<E: Engine>(e: &E) -> Result<()> {
    let base = e.base();
    base.layout.update_state(|s| s.running = true)?;
    let pid = match e.running_pid() {
        Some(pid) => pid,
        None => {
            let _ = std::fs::remove_file(e.pid_file());
            e.render_config()?;
            let spawn = e.spawn()?;
            let args: Vec<&std::ffi::OsStr> = spawn.args.iter().map(OsString::as_os_str).collect();
            spawn_detached(
                &spawn.program,
                &args,
                base.run_as,
                &base.layout.engine_dir,
                &spawn.output,
            )?
        }
    };
    base.record_pid(pid)?;
    wait_ready(
        E::PROCESS,
        base.cfg.ready_timeout,
        || Some(pid),
        &e.log_file(),
        || e.answers(),
    )
    .await
}

/// Stops `e`'s server (its stop signal, waiting until it is gone), for facets that restart their engine.
pub(crate) async fn stop_engine<E: Engine>(e: &E) -> Result<()> {
    e.base()
        .stop_process(&e.pid_file(), &e.idents(), E::STOP_SIGNAL)
        .await
}

#[async_trait]
impl<E: Engine> DatastoreStrategy for ProcessStrategy<E> {
    fn manager(&self) -> Manager {
        self.base().manager
    }

    async fn prepare(&self, req: &PrepareRequest) -> Result<()> {
        self.check_prepare(req)?;
        let (e, base) = (&self.engine, self.base());
        base.layout.create(base.run_as)?;
        base.layout.update_state(|s| {
            s.memory_mb = req.memory_mb;
            if let Some(gb) = req.volume_size_gb {
                s.volume_size_gb = gb;
            }
            if !req.overrides.is_empty() {
                s.overrides = req.overrides.clone();
            }
        })?;
        // Every step below is idempotent, and `prepared` is recorded only after the last one: a prepare cut short
        // (the guest killed at any point) is finished by the next one. The kill points name the moments between
        // the steps for the whole-process crash tests.
        let t = std::time::Instant::now();
        match &req.restore {
            Some(spec) => self.restore(spec).await?,
            None => e.init().await?,
        }
        crash_point("prepare:after_init");
        let initialised = t.elapsed();
        self.start_engine().await?;
        tracing::info!(
            instance = %base.ctx.instance_id,
            restored = req.restore.is_some(),
            init_ms = initialised.as_millis() as u64,
            started_ms = t.elapsed().as_millis() as u64,
            "engine initialised and answering"
        );
        crash_point("prepare:after_start");
        e.bootstrap().await?;
        crash_point("prepare:after_bootstrap");
        e.seed(req).await?;
        if let (Some(p), Some(root)) = (&req.root_password, e.root()) {
            root.enable_root(Some(p.clone())).await?;
        }
        crash_point("prepare:after_seed");
        base.layout.update_state(|s| s.prepared = true)?;
        crash_point("prepare:after_prepared");
        Ok(())
    }

    async fn start(&self) -> Result<()> {
        self.start_engine().await
    }

    async fn stop(&self) -> Result<()> {
        let e = &self.engine;
        self.base()
            .stop_process(&e.pid_file(), &e.idents(), E::STOP_SIGNAL)
            .await
    }

    /// Kills the engine at once (a frozen engine cannot stop cleanly; SIGKILL ends a stopped process too) and keeps
    /// it read only, so that a restart by anyone brings it up taking no writes.
    async fn fence(&self) -> Result<()> {
        let e = &self.engine;
        self.base().layout.update_state(|s| s.read_only = true)?;
        e.render_config()?;
        self.base()
            .stop_process(&e.pid_file(), &e.idents(), "KILL")
            .await
    }

    async fn status(&self) -> EngineStatus {
        let (e, base) = (&self.engine, self.base());
        let st = match base.layout.state() {
            Ok(s) => s,
            Err(err) => return status(ServiceStatus::Unknown, Some(err.to_string())),
        };
        match e.running_pid() {
            Some(_) if !st.prepared => status(ServiceStatus::Building, None),
            Some(_) => match tokio::time::timeout(base.cfg.probe_timeout, e.probe()).await {
                Ok(Ok(())) => status(ServiceStatus::Healthy, None),
                Ok(Err(err)) => status(
                    ServiceStatus::Blocked,
                    Some(format!("the engine runs but does not answer: {err}")),
                ),
                Err(_) => status(
                    ServiceStatus::Blocked,
                    Some("the engine runs but does not answer in time".into()),
                ),
            },
            None => down_status(&st, read_pid(&e.pid_file()).or(st.pid), &e.log_file()),
        }
    }

    async fn filesystem_stats(&self) -> Result<FsStats> {
        self.base().fs_stats().await
    }

    async fn apply_flavor(&self, memory_mb: u32) -> Result<()> {
        let st = self
            .base()
            .layout
            .update_state(|s| s.memory_mb = memory_mb)?;
        self.engine.render_config()?;
        if st.running {
            self.stop().await?;
            self.start().await?;
        }
        Ok(())
    }

    async fn resize_fs(&self, size_gb: u32) -> Result<()> {
        self.base().record_volume_size(size_gb)
    }

    fn users(&self) -> Option<&dyn UsersFacet> {
        self.engine.users()
    }

    fn databases(&self) -> Option<&dyn DatabasesFacet> {
        self.engine.databases()
    }

    fn root(&self) -> Option<&dyn RootFacet> {
        self.engine.root()
    }

    fn configuration(&self) -> Option<&dyn ConfigurationFacet> {
        Some(self)
    }

    fn tls(&self) -> Option<&dyn TlsFacet> {
        Some(self)
    }

    fn logs(&self) -> Option<&dyn LogsFacet> {
        self.engine.guest_logs().map(|_| self as &dyn LogsFacet)
    }

    fn backup(&self) -> Option<&dyn BackupFacet> {
        self.backup_parts().map(|_| self as &dyn BackupFacet)
    }

    /// Replicas are seeded from backups: offered with them.
    fn replication(&self) -> Option<&dyn ReplicationFacet> {
        self.backup_parts().and(self.engine.replication())
    }

    fn cluster(&self) -> Option<&dyn ClusterFacet> {
        self.engine.cluster()
    }
}

#[async_trait]
impl<E: Engine> BackupFacet for ProcessStrategy<E> {
    fn incremental(&self) -> bool {
        self.engine.backup_tool().is_some_and(|t| t.incremental())
    }

    async fn backup(&self, job: &BackupJob, progress: &BackupProgress) -> Result<BackupOutcome> {
        let base = self.base();
        let (tool, store) = self
            .backup_parts()
            .ok_or_else(|| not_supported(base.manager, Facet::Backup.as_str()))?;
        if job.parent.is_some() && !tool.incremental() {
            return Err(Error::unprocessable(format!(
                "Incremental backups are not supported for datastore {}.",
                base.manager
            )));
        }
        if self.engine.running_pid().is_none() {
            return Err(Error::unprocessable(format!(
                "The {} engine is not running; start the instance, then take the backup.",
                E::PROCESS
            )));
        }
        let r = tool.backup(store, job, progress).await;
        crash_point("backup:after_put");
        if r.is_err() {
            // A put that failed leaves nothing; an object of an earlier attempt under the same key goes too.
            let _ = store.delete(&job.key).await;
        }
        r
    }
}

#[async_trait]
impl<E: Engine> ConfigurationFacet for ProcessStrategy<E> {
    /// See [`crate::overrides`]: stored and rendered first, then the changed parameters applied live where the
    /// engine can.
    async fn apply_overrides(&self, overrides: &Map<String, Value>) -> Result<bool> {
        let changed = crate::overrides::begin(self.base(), overrides)?;
        self.engine.render_config()?;
        let restart_keys = if changed.is_empty() {
            Vec::new()
        } else {
            self.engine.apply_changes(changed).await?
        };
        crate::overrides::finish(self.base(), restart_keys)
    }
}

#[async_trait]
impl<E: Engine> TlsFacet for ProcessStrategy<E> {
    async fn ssl_show(&self, include_certificate: bool) -> Result<SslView> {
        crate::tls::show(self.base(), include_certificate)
    }

    async fn ssl_action(&self, change: &SslChange) -> Result<SslChangeResult> {
        crate::tls::action(&self.engine, change).await
    }

    async fn ssl_rollback(&self) -> Result<SslChangeResult> {
        crate::tls::rollback(&self.engine).await
    }
}

impl<E: Engine> ProcessStrategy<E> {
    fn engine_logs(&self) -> Result<EngineLogs> {
        self.engine.guest_logs().ok_or_else(|| {
            Error::not_found(
                "Log",
                format!("any log of datastore {}", self.base().manager),
            )
        })
    }
}

#[async_trait]
impl<E: Engine> LogsFacet for ProcessStrategy<E> {
    async fn guest_log_list(&self, ctx: &GuestLogContext) -> Result<Vec<GuestLog>> {
        trove_core::guest_log::list_logs(&self.engine_logs()?, ctx).await
    }

    async fn guest_log_action(
        &self,
        ctx: &GuestLogContext,
        req: &LogActionRequest,
    ) -> Result<GuestLog> {
        trove_core::guest_log::log_action(&self.engine_logs()?, ctx, req).await
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use trove_core::model::Manager;
    use trove_core::ports::{PrepareRequest, StrategyContext, StrategyFactory};
    use trove_core::state::ServiceStatus;

    use crate::{EngineConfig, EngineStrategyFactory};

    /// A state directory below a directory only its owner can enter (what `mktemp -d` makes): prepare fails,
    /// and its error (what the guest reports as the instance's fault) names the user and the directory.
    #[tokio::test]
    async fn prepare_names_the_directory_the_engine_user_cannot_reach() {
        let top = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let state = top.path().join("state");
        let ctx = StrategyContext {
            instance_id: uuid::Uuid::new_v4(),
            datastore_version: trove_core::testing::sample_version(Manager::Redis),
            flavor: trove_core::testing::sample_flavor(),
            server_dir: state.join("servers/one"),
            volume_path: Some(state.join("volumes/one/fs")),
            bind_address: "127.0.0.1".into(),
            port: 1,
        };
        let factory = EngineStrategyFactory::new(EngineConfig {
            run_as: Some("65534:65534".into()),
            ..EngineConfig::default()
        });
        let s = factory
            .strategy(&ctx)
            .expect("redis-server is installed on the test machines");
        let req = PrepareRequest {
            memory_mb: 256,
            volume_size_gb: Some(1),
            databases: vec![],
            users: vec![],
            root_password: None,
            overrides: Default::default(),
            restore: None,
        };
        let e = s.prepare(&req).await.expect_err("an unreachable data dir");
        let msg = e.to_string();
        assert!(msg.contains("uid 65534"), "{msg}");
        assert!(
            msg.contains(&format!("directory {} ", top.path().display())),
            "{msg}"
        );
        assert!(
            msg.contains(&ctx.volume_path.as_ref().unwrap().display().to_string()),
            "{msg}"
        );
        assert_ne!(s.status().await.status, ServiceStatus::Healthy);
    }
}
