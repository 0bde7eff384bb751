//! Local-process compute, directory volumes and filesystem backups: the embedded deployment's infrastructure.
//!
//! - [`LocalCompute`] ([`trove_core::ports::Compute`]): servers are directories on named host roots; engines run
//!   as local processes started by the guest agents, each on its own port.
//! - [`DirBlockStorage`] ([`trove_core::ports::BlockStorage`]): volumes are directories with a recorded limit.
//! - [`FsBackupStore`] ([`trove_core::ports::BackupStore`]): backup objects are files with their SHA-256.

mod backup;
mod compute;
mod process_launcher;
mod volume;

pub use backup::FsBackupStore;
pub use compute::{LocalCompute, LocalComputeConfig, LocalHost};
pub use process_launcher::{
    GuestBusAccess, GuestFile, ProcessLauncher, ProcessLauncherConfig, ServerDirKeys,
    SharedBusAccess, GUEST_FILE, KEY_FILE,
};
pub use volume::DirBlockStorage;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use trove_core::{Error, Result};

const BACKEND: &str = "local";

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::backend(BACKEND, format!("{what} {}: {e}", path.display()), false)
}

/// Writes a file atomically (temp file, sync, rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io_err("write", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err("rename", path, e))
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` runs (and is not a zombie).
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .map(|i| {
                !matches!(
                    stat[i + 1..].trim_start().chars().next(),
                    Some('Z' | 'X') | None
                )
            })
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Sends a signal with the `kill` command (no `unsafe`).
fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let start = Instant::now();
    while pid_alive(pid) {
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}
