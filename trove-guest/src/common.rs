//! What every engine strategy shares: configuration, the instance's directory layout, running engine
//! processes as an unprivileged user, pid files, liveness, secrets and usage.

use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trove_core::model::Secret;
use trove_core::ports::{EngineStatus, StrategyContext};
use trove_core::state::ServiceStatus;
use trove_core::{Error, Result};

pub(crate) const BACKEND: &str = "guest";

/// How the strategies run engines. Shared by every instance a factory builds strategies for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// The OS user engines run as: a user name from `/etc/passwd` or `uid:gid`. `None` = `nobody` when the control
    /// plane runs as root (PostgreSQL refuses to run as root), otherwise the current user.
    pub run_as: Option<String>,
    /// How long to wait for an engine to answer after start.
    pub ready_timeout: Duration,
    /// How long to wait for a clean shutdown before the process is killed.
    pub stop_timeout: Duration,
    /// How long a liveness probe (`status`) may take before the engine counts as not answering.
    pub probe_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            run_as: None,
            ready_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(3),
        }
    }
}

/// The OS identity an engine process runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// The effective uid of this process, read without `unsafe` from `/proc/self`.
pub fn current_uid() -> u32 {
    trove_os::current_uid()
}

fn current_gid() -> u32 {
    trove_os::current_gid()
}

impl RunAs {
    /// Resolves the configured user (see [`EngineConfig::run_as`]).
    pub fn resolve(spec: Option<&str>) -> Result<RunAs> {
        let spec = match spec {
            Some(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ if current_uid() == 0 => "nobody".to_string(),
            _ => {
                return Ok(RunAs {
                    uid: current_uid(),
                    gid: current_gid(),
                })
            }
        };
        if let Some((u, g)) = spec.split_once(':') {
            if let (Ok(uid), Ok(gid)) = (u.parse(), g.parse()) {
                return Ok(RunAs { uid, gid });
            }
        }
        let passwd = std::fs::read_to_string("/etc/passwd")
            .map_err(|e| Error::backend(BACKEND, format!("cannot read /etc/passwd: {e}"), false))?;
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[0] == spec {
                if let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) {
                    return Ok(RunAs { uid, gid });
                }
            }
        }
        Err(Error::bad_request(format!(
            "The engine user '{spec}' does not exist on this host."
        )))
    }

    /// Whether processes must switch identity (we are someone else).
    fn switch_needed(self) -> bool {
        current_uid() != self.uid || current_gid() != self.gid
    }

    /// Applies the identity to a command about to be spawned.
    pub(crate) fn apply(self, cmd: &mut Command) {
        if self.switch_needed() {
            cmd.uid(self.uid).gid(self.gid);
        }
    }

    /// Applies the identity to a tokio command about to be spawned.
    pub(crate) fn apply_tokio(self, cmd: &mut tokio::process::Command) {
        if self.switch_needed() {
            cmd.uid(self.uid).gid(self.gid);
        }
    }

    /// Makes `path` (not recursively) belong to this identity.
    pub(crate) fn own(self, path: &Path) -> Result<()> {
        if !self.switch_needed() {
            return Ok(());
        }
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(|e| io_err("chown", path, e))
    }

    /// Checks that the engine user can reach `path`: every existing directory above it must be searchable
    /// (`x`) by that user. The error names the user, the path and the directory in the way, so a prepare that
    /// cannot work says why (instead of the engine failing to start with the reason only in its own log).
    pub fn check_reachable(self, path: &Path) -> Result<()> {
        match self.first_unreachable(path) {
            None => Ok(()),
            Some((dir, mode, owner)) => Err(Error::backend(
                BACKEND,
                format!(
                    "the engine user {} cannot reach {}: directory {} (mode {mode:o}, owner uid {owner}) is not \
                     searchable by it; use a state directory the engine user can reach, or make that directory \
                     searchable (chmod o+x {})",
                    self.describe(),
                    path.display(),
                    dir.display(),
                    dir.display()
                ),
                false,
            )),
        }
    }

    /// The nearest existing directory above `path` that this identity cannot search, with its permission bits
    /// and owner; `None` when every one can be passed (or when this process is that identity).
    pub fn first_unreachable(self, path: &Path) -> Option<(PathBuf, u32, u32)> {
        if !self.switch_needed() {
            return None;
        }
        path.ancestors().skip(1).find_map(|dir| {
            let m = std::fs::metadata(dir).ok()?;
            let mode = m.permissions().mode();
            let searchable = if m.uid() == self.uid {
                mode & 0o100 != 0
            } else if m.gid() == self.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            (!searchable).then(|| (dir.to_path_buf(), mode & 0o7777, m.uid()))
        })
    }

    /// `name (uid N)` from `/etc/passwd`, or `uid N` when the uid has no name there.
    pub fn describe(self) -> String {
        let name = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|passwd| {
                passwd.lines().find_map(|line| {
                    let f: Vec<&str> = line.split(':').collect();
                    (f.len() >= 3 && f[2].parse() == Ok(self.uid)).then(|| f[0].to_string())
                })
            });
        match name {
            Some(n) => format!("{n} (uid {})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

pub(crate) fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::backend(BACKEND, format!("{what} {}: {e}", path.display()), false)
}

/// The file of the admin password under the guest directory.
const ADMIN_SECRET: &str = "os_admin.secret";

/// Paths of one instance.
///
/// - `<server_dir>/guest/` (control plane only, 0700): the admin secret and the recorded state.
/// - `<server_dir>/engine/` (engine user, 0700): rendered config, pid file, logs, socket.
/// - `<volume>/data/` (engine user, 0700): the engine's data directory. `<volume>` is the instance's volume
///   directory, or `<server_dir>/volume` when it has none.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub server_dir: PathBuf,
    pub guest_dir: PathBuf,
    pub engine_dir: PathBuf,
    pub volume_dir: PathBuf,
    pub data_dir: PathBuf,
}

impl Layout {
    pub fn new(ctx: &StrategyContext) -> Layout {
        let volume_dir = ctx
            .volume_path
            .clone()
            .unwrap_or_else(|| ctx.server_dir.join("volume"));
        Layout {
            server_dir: ctx.server_dir.clone(),
            guest_dir: ctx.server_dir.join("guest"),
            engine_dir: ctx.server_dir.join("engine"),
            data_dir: volume_dir.join("data"),
            volume_dir,
        }
    }

    /// Creates the directories with their owners and modes.
    pub fn create(&self, run_as: RunAs) -> Result<()> {
        for d in [&self.server_dir, &self.volume_dir] {
            std::fs::create_dir_all(d).map_err(|e| io_err("create", d, e))?;
            set_mode(d, 0o711)?;
        }
        std::fs::create_dir_all(&self.guest_dir)
            .map_err(|e| io_err("create", &self.guest_dir, e))?;
        set_mode(&self.guest_dir, 0o700)?;
        // Before anything is handed to the engine user: can it get there at all?
        run_as.check_reachable(&self.data_dir)?;
        run_as.check_reachable(&self.engine_dir)?;
        for d in [&self.engine_dir, &self.data_dir] {
            std::fs::create_dir_all(d).map_err(|e| io_err("create", d, e))?;
            set_mode(d, 0o700)?;
            run_as.own(d)?;
        }
        Ok(())
    }

    /// Where the guest keeps its secret `name` (0600, owner only).
    pub fn secret_file(&self, name: &str) -> PathBuf {
        self.guest_dir.join(name)
    }

    /// The guest's secret `name`, if one was stored.
    pub fn stored_secret(&self, name: &str) -> Result<Option<Secret>> {
        let p = self.secret_file(name);
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(Some(Secret::new(s.trim().to_string()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &p, e)),
        }
    }

    /// The guest's secret `name`, generated and stored on first use.
    pub fn ensure_secret(&self, name: &str) -> Result<Secret> {
        if let Some(s) = self.stored_secret(name)? {
            return Ok(s);
        }
        let secret = Secret::generate(32);
        write_private(&self.secret_file(name), secret.expose().as_bytes())?;
        Ok(secret)
    }

    /// The admin password, if one was generated.
    pub fn admin_secret(&self) -> Result<Option<Secret>> {
        self.stored_secret(ADMIN_SECRET)
    }

    /// The admin password; `backend`'s error when there is none (the instance was never prepared).
    pub fn required_admin_secret(&self, backend: &'static str) -> Result<Secret> {
        self.admin_secret()?.ok_or_else(|| {
            Error::backend(
                backend,
                "the instance has no admin account yet (not prepared)",
                false,
            )
        })
    }

    /// Empties the data directory (a half-initialised one from an interrupted attempt is started again from
    /// scratch).
    pub fn clear_data_dir(&self) {
        if let Ok(rd) = std::fs::read_dir(&self.data_dir) {
            for e in rd.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }

    /// Whether the data directory was initialised completely. Recorded on the volume beside the data (a rebuild
    /// makes the guest's own records again, the data and this record stay): `data.initializing` while an init
    /// runs, `data.initialized` once it ended. A directory with the first and not the second was half made by an
    /// interrupted init. Data from before these records existed is judged by `looks_initialized` (the engine's own
    /// files).
    pub fn data_initialized(&self, looks_initialized: bool) -> bool {
        if self.volume_dir.join("data.initialized").exists() {
            return true;
        }
        if self.volume_dir.join("data.initializing").exists() {
            return false;
        }
        looks_initialized
    }

    /// Runs `init` (which makes the data directory from scratch) between the records of
    /// [`Self::data_initialized`].
    pub async fn initialize_data<F, Fut>(&self, init: F) -> Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let (begun, done) = (
            self.volume_dir.join("data.initializing"),
            self.volume_dir.join("data.initialized"),
        );
        let _ = std::fs::remove_file(&done);
        write_private(&begun, b"")?;
        init().await?;
        write_private(&done, b"")?;
        let _ = std::fs::remove_file(&begun);
        Ok(())
    }

    /// The admin password, generated and stored (0600, owner only) on first use.
    pub fn ensure_admin_secret(&self) -> Result<Secret> {
        self.ensure_secret(ADMIN_SECRET)
    }

    /// Stores `secret` (0600, owner only) as the admin password, replacing the one kept (the engine's account must
    /// already have it).
    pub fn store_admin_secret(&self, secret: &Secret) -> Result<()> {
        write_private(&self.secret_file(ADMIN_SECRET), secret.expose().as_bytes())
    }

    fn state_path(&self) -> PathBuf {
        self.guest_dir.join("state.json")
    }

    /// The recorded guest state.
    pub fn state(&self) -> Result<GuestState> {
        match std::fs::read(self.state_path()) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::backend(
                    BACKEND,
                    format!("corrupt {}: {e}", self.state_path().display()),
                    false,
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(GuestState::default()),
            Err(e) => Err(io_err("read", &self.state_path(), e)),
        }
    }

    /// Changes and records the guest state.
    pub fn update_state(&self, f: impl FnOnce(&mut GuestState)) -> Result<GuestState> {
        let mut st = self.state()?;
        f(&mut st);
        let bytes =
            serde_json::to_vec_pretty(&st).map_err(|e| Error::backend(BACKEND, e, false))?;
        write_private(&self.state_path(), &bytes)?;
        Ok(st)
    }
}

/// What the guest records about its instance (in `<server_dir>/guest/state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct GuestState {
    /// Flavor memory the config was rendered for.
    pub memory_mb: u32,
    /// Volume limit in GB (0 = none recorded).
    pub volume_size_gb: u32,
    /// Whether prepare completed once (recorded after its last step).
    pub prepared: bool,
    /// Whether the engine should be running (a stop sets it false): tells SHUTDOWN from CRASHED.
    pub running: bool,
    /// Pid of the engine process last spawned.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Configuration overrides applied.
    #[serde(default)]
    pub overrides: serde_json::Map<String, serde_json::Value>,
    /// Whether only the guest may write (a replica, or a source fenced or handing over); rendered into the
    /// engine's configuration so a restart keeps it.
    #[serde(default)]
    pub read_only: bool,
    /// The source a replica follows (rendered into the engine's configuration; the password is kept apart).
    #[serde(default)]
    pub following: Option<Following>,
}

/// Whom a replica follows (its password is kept apart, in a secret file of the guest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Following {
    /// Source host.
    pub host: String,
    /// Source port.
    pub port: u16,
    /// Replication user.
    pub user: String,
}

impl Following {
    /// Whom a replica of `source` follows.
    pub fn of(source: &trove_core::ports::ReplicationSource) -> Following {
        Following {
            host: source.host.clone(),
            port: source.port,
            user: source.user.clone(),
        }
    }
}

/// Sets a file or directory's permission bits.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("chmod", path, e))
}

/// Writes a file atomically, readable by its owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    trove_os::write_private(path, bytes).map_err(|e| io_err("write", path, e))
}

/// Writes an engine file (config) owned by the engine user, private to it.
pub(crate) fn write_engine_file(path: &Path, contents: &str, run_as: RunAs) -> Result<()> {
    write_private(path, contents.as_bytes())?;
    run_as.own(path)
}

pub(crate) use trove_os::{log_tail, pid_alive, read_pid, tail};

/// Runs a command as the engine user to completion; a failure carries the command's output.
pub(crate) async fn run_as_user(
    program: &Path,
    args: &[&OsStr],
    run_as: RunAs,
    cwd: &Path,
) -> Result<()> {
    // A command of an earlier guest killed half way (its process died, the command did not) is ended first: it
    // would otherwise go on writing into what this run makes again.
    let pid_file = cwd.join("trove-command.pid");
    let program_name = program.display().to_string();
    if let Some(pid) = trove_os::read_pid(&pid_file) {
        if trove_os::cmdline_contains(pid, &[&program_name]) {
            tracing::warn!(pid, command = %program_name, "ending a command left running by an interrupted guest");
            let _ = trove_os::send_signal(pid, "KILL");
            trove_os::wait_gone(pid, trove_os::KILL_WAIT).await;
        }
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clean_env(&mut cmd, cwd);
    run_as.apply(&mut cmd);
    let name = program_name;
    let out = tokio::task::spawn_blocking(move || {
        let child = cmd.spawn()?;
        let _ = trove_os::write_private(&pid_file, format!("{}\n", child.id()).as_bytes());
        let out = child.wait_with_output();
        let _ = std::fs::remove_file(&pid_file);
        out
    })
    .await
    .map_err(|e| Error::backend(BACKEND, e, false))?
    .map_err(|e| Error::backend(BACKEND, format!("cannot run {name}: {e}"), false))?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stderr);
        let first: String = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(6)
            .collect::<Vec<_>>()
            .join(" | ");
        Err(Error::backend(
            BACKEND,
            format!("{name} failed ({}): {}", out.status, tail(&first, 800)),
            false,
        ))
    }
}

/// Engines get a minimal environment: nothing of the control plane's (which may hold credentials) leaks to them.
fn clean_env(cmd: &mut Command, home: &Path) {
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C.UTF-8")
        .env("HOME", home);
}

/// Spawns a long-running engine process detached in its own process group, as the engine user. A thread reaps it
/// when it exits, so a dead engine never lingers as a zombie of the control plane.
pub(crate) fn spawn_detached(
    program: &Path,
    args: &[&OsStr],
    run_as: RunAs,
    cwd: &Path,
    log: &Path,
) -> Result<u32> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(|e| io_err("open", log, e))?;
    run_as.own(log)?;
    let err_file = log_file.try_clone().map_err(|e| io_err("open", log, e))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file)
        .process_group(0);
    clean_env(&mut cmd, cwd);
    run_as.apply(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| {
        Error::backend(
            BACKEND,
            format!("cannot start {}: {e}", program.display()),
            false,
        )
    })?;
    let pid = child.id();
    std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || {
            let _ = child.wait();
        })
        .map_err(|e| Error::backend(BACKEND, e, false))?;
    Ok(pid)
}

/// Finds a program: in `dir` when given, else in `PATH` and the usual system directories.
pub(crate) fn find_program(
    names: &[&str],
    dir: Option<&Path>,
    extra_dirs: &[PathBuf],
) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = dir {
        dirs.push(d.to_path_buf());
    } else {
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        dirs.extend(extra_dirs.iter().cloned());
        dirs.extend(
            [
                "/usr/sbin",
                "/usr/bin",
                "/usr/local/sbin",
                "/usr/local/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        );
    }
    for name in names {
        for d in &dirs {
            let p = d.join(name);
            if std::fs::metadata(&p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
            {
                return Some(p);
            }
        }
    }
    None
}

/// The binary directory named by the datastore version's image (empty = autodetect).
pub(crate) fn image_dir(ctx: &StrategyContext) -> Option<PathBuf> {
    let image = ctx.datastore_version.image.trim();
    if image.is_empty() {
        None
    } else {
        Some(PathBuf::from(image))
    }
}

/// A unix socket path for the instance: inside `dir` when short enough, else in the temp dir (socket paths are
/// limited to 107 bytes).
pub(crate) fn socket_path(dir: &Path, file: &str, instance_id: uuid::Uuid) -> PathBuf {
    let p = dir.join(file);
    if p.as_os_str().len() < 100 {
        p
    } else {
        std::env::temp_dir().join(format!("trove-{}-{file}", instance_id.simple()))
    }
}

/// Builds a status.
pub(crate) fn status(status: ServiceStatus, reason: Option<String>) -> EngineStatus {
    EngineStatus { status, reason }
}

/// Status of an engine whose process is not running, from what was intended.
pub(crate) fn down_status(state: &GuestState, pid: Option<u32>, log: &Path) -> EngineStatus {
    if !state.prepared {
        return status(
            ServiceStatus::New,
            Some("the engine is not prepared yet".into()),
        );
    }
    if !state.running {
        return status(ServiceStatus::Shutdown, None);
    }
    let what = match pid {
        Some(pid) => format!("the engine process {pid} exited unexpectedly"),
        None => "the engine process is not running".to_string(),
    };
    let last = log_tail(log, 300);
    let reason = if last.is_empty() {
        what
    } else {
        format!("{what}; last log lines: {last}")
    };
    status(ServiceStatus::Crashed, Some(reason))
}

/// Rounds `fraction` of `memory_mb` down to whole MB, at least `min_mb`.
pub(crate) fn share_mb(memory_mb: u32, fraction: f64, min_mb: u64) -> u64 {
    ((f64::from(memory_mb) * fraction) as u64).max(min_mb)
}

/// Validates a configuration override name (letters, digits, `_`, `-`, `.`).
pub(crate) fn check_override_key(key: &str) -> Result<()> {
    if key.is_empty()
        || key.len() > 128
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(Error::bad_request(format!(
            "The configuration parameter name '{}' is not valid.",
            key.escape_default()
        )));
    }
    Ok(())
}

/// Renders an override value as config text (numbers, booleans and strings without line breaks or quotes).
pub(crate) fn override_value(key: &str, v: &serde_json::Value) -> Result<String> {
    let s = match v {
        serde_json::Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => {
            return Err(Error::bad_request(format!(
                "The value of configuration parameter '{key}' must be a scalar."
            )))
        }
    };
    if s.chars()
        .any(|c| c.is_control() || c == '\'' || c == '"' || c == '\\' || c == '#')
    {
        return Err(Error::bad_request(format!(
            "The value of configuration parameter '{key}' contains a character that is not allowed."
        )));
    }
    Ok(s)
}

/// Polls `probe` until it succeeds, the process dies or the deadline passes.
pub(crate) async fn wait_ready<F, Fut>(
    what: &str,
    timeout: Duration,
    mut pid: impl FnMut() -> Option<u32>,
    log: &Path,
    mut probe: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(5);
    let mut seen_pid = false;
    loop {
        let last_err = match probe().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match pid() {
            Some(p) if pid_alive(p) => seen_pid = true,
            Some(_) => {
                return Err(Error::backend(
                    BACKEND,
                    format!("{what} exited during start-up: {}", log_tail(log, 600)),
                    false,
                ))
            }
            None if seen_pid || start.elapsed() > Duration::from_secs(10) => {
                return Err(Error::backend(
                    BACKEND,
                    format!("{what} is not running after start: {}", log_tail(log, 600)),
                    false,
                ))
            }
            None => {}
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout {
                what: format!("{what} to answer ({last_err})"),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_refuse_injection() {
        assert!(check_override_key("max_connections").is_ok());
        assert!(check_override_key("a=b\nc").is_err());
        assert!(override_value("k", &serde_json::json!("x\ny")).is_err());
        assert!(override_value("k", &serde_json::json!("a'b")).is_err());
        assert_eq!(override_value("k", &serde_json::json!(5)).unwrap(), "5");
    }

    /// An init cut short is made again; a finished one, or data from before the records, is kept; the records
    /// live on the volume, so a rebuild (which makes the guest's own records again) keeps them.
    #[tokio::test]
    async fn data_init_records_tell_a_half_made_directory() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("vol");
        std::fs::create_dir_all(volume.join("data")).unwrap();
        let layout = Layout {
            server_dir: dir.path().join("server"),
            guest_dir: dir.path().join("server/guest"),
            engine_dir: dir.path().join("server/engine"),
            data_dir: volume.join("data"),
            volume_dir: volume.clone(),
        };
        // No records: the engine's own files decide (data made before the records existed).
        assert!(!layout.data_initialized(false));
        assert!(layout.data_initialized(true));
        // An init that dies half way leaves "initializing": made again even if the engine's files look complete.
        let died = layout
            .initialize_data(|| async { Err(Error::backend("test", "killed half way", false)) })
            .await;
        assert!(died.is_err());
        assert!(!layout.data_initialized(true));
        // A finished init is kept, whatever the engine's files look like.
        layout.initialize_data(|| async { Ok(()) }).await.unwrap();
        assert!(layout.data_initialized(false));
        assert!(!volume.join("data.initializing").exists());
        // The guest's own records going (a rebuild) change nothing.
        let _ = std::fs::remove_dir_all(&layout.guest_dir);
        assert!(layout.data_initialized(false));
    }

    #[test]
    fn run_as_resolves_names_and_numbers() {
        assert_eq!(
            RunAs::resolve(Some("12:34")).unwrap(),
            RunAs { uid: 12, gid: 34 }
        );
        assert_eq!(
            RunAs::resolve(Some("root")).unwrap(),
            RunAs { uid: 0, gid: 0 }
        );
        assert_eq!(
            RunAs::resolve(Some("no-such-user-x"))
                .unwrap_err()
                .fault()
                .status,
            400
        );
    }

    #[test]
    fn unreachable_paths_name_the_user_and_the_directory() {
        let top = tempfile::tempdir().unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let inner = top.path().join("state");
        std::fs::create_dir(&inner).unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).unwrap();
        let nobody = RunAs {
            uid: 65534,
            gid: 65534,
        };
        let target = inner.join("servers/x/engine");
        let msg = nobody.check_reachable(&target).unwrap_err().to_string();
        assert!(msg.contains("uid 65534"), "{msg}");
        assert!(msg.contains(&target.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("directory {} (mode 700", top.path().display())),
            "{msg}"
        );
        assert!(msg.contains("chmod o+x"), "{msg}");
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        nobody.check_reachable(&target).expect("a searchable path");
    }

    #[test]
    fn shares_have_floors() {
        assert_eq!(share_mb(1024, 0.5, 8), 512);
        assert_eq!(share_mb(4, 0.5, 8), 8);
    }
}
