//! [`ProcessLauncher`]: a [`GuestLauncher`] that runs one guest agent PROCESS (`trove-guestagent`) per instance,
//! the distributed deployment's counterpart of the in-process launcher.
//!
//! At launch the launcher
//! - keeps (or creates, on first launch) the guest's signing key in `<server_dir>/guest-agent.key` (mode 0600):
//!   it lives with the server record, so it survives reboots, resizes and control-plane restarts, and is destroyed
//!   with the server directory at delete. [`ServerDirKeys`] is how the conductor finds it;
//! - asks a [`GuestBusAccess`] for the guest's broker settings (shared credentials, or a user of its own);
//! - writes the guest's own file `<server_dir>/guest-agent.json` (mode 0600: spec, key, broker settings) and starts
//!   the agent program with `--guest-file <that file>` in a process group of its own, so a control-plane process
//!   that dies (even `kill -9`) leaves its guests running. Output goes to `<server_dir>/guest-agent.log`.
//!
//! The process id is recorded in `<run_dir>/<instance_id>.pid`, so a new task manager finds the running agents
//! again: `launch` of a guest whose agent runs is a no-op, `stop` ends it (SIGTERM, then SIGKILL after
//! `stop_timeout`) and revokes its broker access.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use uuid::Uuid;

use trove_core::conductor::GuestKeys;
use trove_core::model::Secret;
use trove_core::ports::{GuestLauncher, GuestSpec};
use trove_core::{Error, Result};

use super::{io_err, stop_pid, write_private, BACKEND};

/// Name of the guest's own file in its server directory.
pub const GUEST_FILE: &str = "guest-agent.json";
/// Name of the guest's signing-key file in its server directory.
pub const KEY_FILE: &str = "guest-agent.key";
const LOG_FILE: &str = "guest-agent.log";
/// Length of generated signing keys.
const KEY_LEN: usize = 48;

/// What a guest agent process is given (written by [`ProcessLauncher`], read by `trove-guestagent`).
#[derive(Clone, Serialize, Deserialize)]
pub struct GuestFile {
    /// The instance, its engine and where it lives.
    pub spec: GuestSpec,
    /// The key the guest signs its reports with.
    pub key: Secret,
    /// Broker settings of the guest's bus (shape defined by the bus adapter; may hold a password).
    pub bus: serde_json::Value,
}

impl std::fmt::Debug for GuestFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestFile")
            .field("instance_id", &self.spec.instance_id)
            .finish_non_exhaustive()
    }
}

impl GuestFile {
    /// Reads a guest file; errors name the path, never the content.
    pub fn read(path: &Path) -> Result<GuestFile> {
        let bytes = std::fs::read(path).map_err(|e| io_err("read", path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::bad_request(format!("Guest file {} is not valid: {e}", path.display()))
        })
    }
}

/// How guests reach the broker: the settings a guest's bus uses, granted at launch and revoked at stop.
#[async_trait]
pub trait GuestBusAccess: Send + Sync + 'static {
    /// Broker settings for the guest of `instance_id` (creating its credentials if the access is per guest).
    async fn grant(&self, instance_id: Uuid) -> Result<serde_json::Value>;
    /// Removes whatever [`GuestBusAccess::grant`] created for the guest (idempotent).
    async fn revoke(&self, instance_id: Uuid) -> Result<()>;
}

/// Every guest uses the same broker settings (the control plane's, as upstream does).
pub struct SharedBusAccess(pub serde_json::Value);

impl std::fmt::Debug for SharedBusAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedBusAccess(***)")
    }
}

#[async_trait]
impl GuestBusAccess for SharedBusAccess {
    async fn grant(&self, _instance_id: Uuid) -> Result<serde_json::Value> {
        Ok(self.0.clone())
    }
    async fn revoke(&self, _instance_id: Uuid) -> Result<()> {
        Ok(())
    }
}

/// Settings of [`ProcessLauncher`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessLauncherConfig {
    /// The guest agent program (`trove-guestagent`).
    pub program: PathBuf,
    /// Arguments given before `--guest-file PATH` (e.g. `--config FILE`).
    pub args: Vec<String>,
    /// Extra environment of the agent (it inherits the launcher's environment too).
    pub env: Vec<(String, String)>,
    /// Directory of the pid records (created 0700).
    pub run_dir: PathBuf,
    /// How long an agent gets to end after SIGTERM before it is killed.
    pub stop_timeout: Duration,
    /// An agent that exits within this time after its start is a failed launch (its log tail is reported).
    pub startup_grace: Duration,
}

impl ProcessLauncherConfig {
    /// Runs `program`, recording pids in `run_dir`.
    pub fn new(program: impl Into<PathBuf>, run_dir: impl Into<PathBuf>) -> ProcessLauncherConfig {
        ProcessLauncherConfig {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            run_dir: run_dir.into(),
            stop_timeout: Duration::from_secs(10),
            startup_grace: Duration::from_millis(300),
        }
    }
}

/// Starts and stops one guest agent process per instance (see the module docs).
pub struct ProcessLauncher {
    config: ProcessLauncherConfig,
    access: Arc<dyn GuestBusAccess>,
    lock: Mutex<()>,
}

impl std::fmt::Debug for ProcessLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessLauncher")
            .field("program", &self.config.program)
            .field("run_dir", &self.config.run_dir)
            .finish_non_exhaustive()
    }
}

/// Reads a key file; `None` when missing or empty.
fn read_key(path: &Path) -> Option<Secret> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| Secret::new(s))
}

/// The last lines of a log, for launch errors.
fn log_tail(path: &Path) -> String {
    let tail = trove_os::log_tail(path, 600);
    let lines: Vec<&str> = tail.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

impl ProcessLauncher {
    /// A launcher; the run directory is created (0700).
    pub fn new(
        config: ProcessLauncherConfig,
        access: Arc<dyn GuestBusAccess>,
    ) -> Result<ProcessLauncher> {
        std::fs::create_dir_all(&config.run_dir)
            .map_err(|e| io_err("create", &config.run_dir, e))?;
        std::fs::set_permissions(
            &config.run_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(|e| io_err("chmod", &config.run_dir, e))?;
        Ok(ProcessLauncher {
            config,
            access,
            lock: Mutex::new(()),
        })
    }

    fn pid_file(&self, instance_id: Uuid) -> PathBuf {
        self.config.run_dir.join(format!("{instance_id}.pid"))
    }

    /// The pid of the instance's agent, when it runs (checked against its command line, so a reused pid is not
    /// mistaken for it).
    pub fn running_pid(&self, instance_id: Uuid) -> Option<u32> {
        let pid = trove_os::read_pid(&self.pid_file(instance_id))?;
        (trove_os::pid_alive(pid) && trove_os::cmdline_contains(pid, &[instance_id.to_string()]))
            .then_some(pid)
    }

    /// The instance's signing key, created on first use.
    fn ensure_key(server_dir: &Path) -> Result<Secret> {
        let path = server_dir.join(KEY_FILE);
        if let Some(k) = read_key(&path) {
            return Ok(k);
        }
        let key = Secret::generate(KEY_LEN);
        write_private(&path, key.expose().as_bytes())?;
        Ok(key)
    }
}

impl ProcessLauncher {
    /// Relaunches every agent whose process ended although its server still exists (a crashed or killed agent):
    /// the supervision a task manager runs periodically. Returns the instances relaunched.
    pub async fn relaunch_dead(&self) -> Vec<Uuid> {
        let _guard = self.lock.lock().await;
        let mut relaunched = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.config.run_dir) else {
            return relaunched;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".pid"))
                .and_then(|n| Uuid::parse_str(n).ok())
            else {
                continue;
            };
            if self.running_pid(id).is_some() {
                continue;
            }
            let server_dir = std::fs::read_to_string(e.path())
                .ok()
                .and_then(|t| t.lines().nth(1).map(PathBuf::from));
            let guest_file = server_dir.map(|d| d.join(GUEST_FILE));
            match guest_file
                .filter(|f| f.exists())
                .map(|f| GuestFile::read(&f))
            {
                Some(Ok(g)) if g.spec.instance_id == id => {
                    tracing::warn!(instance = %id, "guest agent process is gone; relaunching it");
                    match self.launch_locked(&g.spec).await {
                        Ok(()) => relaunched.push(id),
                        Err(e) => {
                            tracing::warn!(instance = %id, error = %e, "guest agent relaunch failed")
                        }
                    }
                }
                // The server is gone (or its file unreadable): nothing to supervise any more.
                _ => {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        relaunched
    }

    async fn launch_locked(&self, spec: &GuestSpec) -> Result<()> {
        let id = spec.instance_id;
        if self.running_pid(id).is_some() {
            return Ok(());
        }
        let dir = spec.server_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
        let key = Self::ensure_key(&dir)?;
        let bus = self.access.grant(id).await?;
        let file = GuestFile {
            spec: spec.clone(),
            key,
            bus,
        };
        let guest_file = dir.join(GUEST_FILE);
        let bytes =
            serde_json::to_vec_pretty(&file).map_err(|e| Error::backend(BACKEND, e, false))?;
        write_private(&guest_file, &bytes)?;
        let log_path = dir.join(LOG_FILE);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|e| io_err("open", &log_path, e))?;
        let log2 = log.try_clone().map_err(|e| io_err("open", &log_path, e))?;
        let mut cmd = tokio::process::Command::new(&self.config.program);
        cmd.args(&self.config.args)
            .arg("--guest-file")
            .arg(&guest_file)
            .envs(
                self.config
                    .env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| {
            Error::backend(
                BACKEND,
                format!(
                    "cannot start the guest agent {}: {e}",
                    self.config.program.display()
                ),
                false,
            )
        })?;
        let pid = child
            .id()
            .ok_or_else(|| Error::backend(BACKEND, "the guest agent exited at once", false))?;
        std::fs::write(self.pid_file(id), format!("{pid}\n{}\n", dir.display()))
            .map_err(|e| io_err("write", &self.pid_file(id), e))?;
        // A broken agent (bad config, missing program) exits at once: report it here, with its last words.
        if let Ok(Ok(status)) = tokio::time::timeout(self.config.startup_grace, child.wait()).await
        {
            let _ = std::fs::remove_file(self.pid_file(id));
            return Err(Error::backend(
                BACKEND,
                format!(
                    "the guest agent of {id} exited at start ({status}): {}",
                    log_tail(&log_path)
                ),
                false,
            ));
        }
        tracing::info!(instance = %id, pid, "guest agent process started");
        // The child is reaped by the runtime when it ends; it runs on after this process ends.
        drop(child);
        Ok(())
    }
}

#[async_trait]
impl GuestLauncher for ProcessLauncher {
    async fn launch(&self, spec: &GuestSpec) -> Result<()> {
        let _guard = self.lock.lock().await;
        self.launch_locked(spec).await
    }

    async fn stop(&self, instance_id: Uuid) -> Result<()> {
        let _guard = self.lock.lock().await;
        if let Some(pid) = self.running_pid(instance_id) {
            if !stop_pid(pid, "TERM", self.config.stop_timeout).await {
                return Err(Error::backend(
                    BACKEND,
                    format!("the guest agent of {instance_id} (pid {pid}) does not end"),
                    true,
                ));
            }
        }
        let _ = std::fs::remove_file(self.pid_file(instance_id));
        self.access.revoke(instance_id).await
    }
}

/// Where the conductor finds guest keys: `<host root>/<instance_id>/guest-agent.key` under the local compute's
/// host roots (the key is kept with the server record). Found keys are cached for `ttl`.
pub struct ServerDirKeys {
    roots: Vec<PathBuf>,
    ttl: Duration,
    cache: std::sync::Mutex<HashMap<Uuid, (Secret, Instant)>>,
}

impl std::fmt::Debug for ServerDirKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerDirKeys")
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl ServerDirKeys {
    /// Keys under these host roots, cached for 30 s.
    pub fn new(roots: Vec<PathBuf>) -> ServerDirKeys {
        ServerDirKeys {
            roots,
            ttl: Duration::from_secs(30),
            cache: std::sync::Mutex::new(HashMap::new()),
        }
    }
    /// Another cache lifetime.
    pub fn with_ttl(mut self, ttl: Duration) -> ServerDirKeys {
        self.ttl = ttl;
        self
    }
}

impl GuestKeys for ServerDirKeys {
    fn key(&self, instance_id: Uuid) -> Option<Secret> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, at)) = cache.get(&instance_id) {
            if at.elapsed() < self.ttl {
                return Some(k.clone());
            }
        }
        let found = self
            .roots
            .iter()
            .find_map(|r| read_key(&r.join(instance_id.to_string()).join(KEY_FILE)));
        match &found {
            Some(k) => {
                cache.insert(instance_id, (k.clone(), Instant::now()));
            }
            None => {
                cache.remove(&instance_id);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_private_stable_and_found_by_the_conductor() {
        let dir = tempfile::tempdir().expect("tmp");
        let id = Uuid::new_v4();
        let server = dir.path().join(id.to_string());
        std::fs::create_dir_all(&server).expect("mkdir");
        let k1 = ProcessLauncher::ensure_key(&server).expect("key");
        let k2 = ProcessLauncher::ensure_key(&server).expect("key again");
        assert_eq!(k1, k2, "the key is kept across launches");
        assert_eq!(k1.expose().len(), KEY_LEN);
        let mode = std::fs::metadata(server.join(KEY_FILE))
            .expect("meta")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let keys = ServerDirKeys::new(vec![dir.path().to_path_buf()]).with_ttl(Duration::ZERO);
        assert_eq!(keys.key(id), Some(k1));
        assert_eq!(keys.key(Uuid::new_v4()), None);
        std::fs::remove_dir_all(&server).expect("rm");
        assert_eq!(keys.key(id), None, "a deleted server has no key");
    }

    #[test]
    fn guest_file_debug_hides_the_key() {
        let f = GuestFile {
            spec: GuestSpec {
                instance_id: Uuid::new_v4(),
                datastore_version: trove_core::model::DatastoreVersion {
                    id: Uuid::new_v4(),
                    datastore_id: Uuid::new_v4(),
                    name: "10.11".into(),
                    manager: trove_core::model::Manager::Mariadb,
                    image: String::new(),
                    packages: String::new(),
                    active: true,
                    version: "10.11".into(),
                    flavor_ids: Vec::new(),
                },
                flavor: trove_core::model::Flavor {
                    id: "1".into(),
                    name: "x".into(),
                    ram_mb: 1,
                    vcpus: 1,
                    disk_gb: 1,
                    ephemeral_gb: 0,
                },
                server_dir: "/x".into(),
                volume_path: None,
                bind_address: "127.0.0.1".into(),
                port: 1,
            },
            key: Secret::new("very-secret-key"),
            bus: serde_json::json!({"password": "pw"}),
        };
        assert!(!format!("{f:?}").contains("very-secret-key"));
    }
}
