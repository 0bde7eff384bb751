//! Local-process compute, directory volumes and filesystem backups: the embedded deployment's infrastructure.
//!
//! - [`LocalCompute`] ([`trove_core::ports::Compute`]): servers are directories on named host roots; engines run
//!   as local processes started by the guest agents, each on a loopback address of its own ([`AddressPool`])
//!   with the engine's standard port.
//! - [`DirBlockStorage`] ([`trove_core::ports::BlockStorage`]): volumes are directories with a recorded limit.
//! - [`FsBackupStore`] ([`trove_core::ports::BackupStore`]): backup objects are files with their SHA-256.

mod address_pool;
mod backup;
mod compute;
mod process_launcher;
mod volume;

pub use address_pool::AddressPool;
pub use backup::FsBackupStore;
pub use compute::{LocalCompute, LocalComputeConfig, LocalHost, DEFAULT_ADDRESS_POOL};
pub use process_launcher::{
    GuestBusAccess, GuestFile, ProcessLauncher, ProcessLauncherConfig, ServerDirKeys,
    SharedBusAccess, GUEST_FILE, KEY_FILE,
};
pub use volume::DirBlockStorage;

use std::path::Path;

use trove_core::{Error, Result};

const BACKEND: &str = "local";

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::backend(BACKEND, format!("{what} {}: {e}", path.display()), false)
}

/// Writes a file atomically (temp file, sync, rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    trove_os::write_atomic(path, bytes).map_err(|e| io_err("write", path, e))
}

/// Writes a file atomically, readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    trove_os::write_private(path, bytes).map_err(|e| io_err("write", path, e))
}

/// Stops a process with `signal`, killing it when it is not gone after `grace`; answers whether it is gone.
async fn stop_pid(pid: u32, signal: &str, grace: std::time::Duration) -> bool {
    match trove_os::terminate(pid, signal, grace).await {
        Ok(trove_os::Termination::Ended) => true,
        Ok(trove_os::Termination::Killed) => {
            tracing::warn!(pid, "process did not stop after SIG{signal}; killed it");
            true
        }
        Ok(trove_os::Termination::Survived) => false,
        Err(e) => {
            tracing::warn!(pid, error = %e, "cannot signal process");
            !trove_os::pid_alive(pid)
        }
    }
}
