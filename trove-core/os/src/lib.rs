//! Operating-system helpers shared by the trove-rs adapters that run local processes (`trove-guest` for engines,
//! `trove-backends` for guest agents and servers), so each exists once: process ids and liveness, signals,
//! waiting for a process to end, disk usage, atomic and private (0600) file writes, and log tails.
//!
//! Linux only, without `unsafe`: process facts come from `/proc`, signals are sent with the `kill` command.
//! Errors are plain [`std::io::Error`]s; callers add the path and turn them into their own error type.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let pid_file = dir.path().join("engine.pid");
//! trove_os::write_private(&pid_file, format!("{}\n", std::process::id()).as_bytes()).unwrap();
//! let pid = trove_os::read_pid(&pid_file).unwrap();
//! assert!(trove_os::pid_alive(pid));
//! ```
#![forbid(unsafe_code)]

pub mod crash;
pub use crash::{crash_before_journal_write, crash_point};

use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`terminate`] waits for a process to go after `SIGKILL`.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// The effective uid of this process (from `/proc/self`); `u32::MAX` when it cannot be read.
pub fn current_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// The effective gid of this process (from `/proc/self`); `u32::MAX` when it cannot be read.
pub fn current_gid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.gid())
        .unwrap_or(u32::MAX)
}

/// The first line of a pid file as a pid; `None` when the file is missing or holds no number.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Whether process `pid` exists and is neither a zombie nor dead.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain ')'.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(
                stat[i + 1..].trim_start().chars().next(),
                Some('Z' | 'X') | None
            ),
            None => false,
        },
        Err(_) => false,
    }
}

/// The command line of `pid`, arguments separated by spaces; `None` when the process is gone.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// Whether the command line of `pid` contains one of `needles` (tells a process from another that reused its
/// pid).
pub fn cmdline_contains<S: AsRef<str>>(pid: u32, needles: &[S]) -> bool {
    cmdline(pid).is_some_and(|text| needles.iter().any(|n| text.contains(n.as_ref())))
}

/// Sends `signal` (a name such as `TERM`, `INT`, `KILL`) to `pid` with the `kill` command. A process that is
/// already gone counts as signalled.
pub fn send_signal(pid: u32, signal: &str) -> io::Result<()> {
    let out = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run kill: {e}")))?;
    if out.status.success() || !pid_alive(pid) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "kill -s {signal} {pid} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Waits until `pid` is gone; answers whether it went within `timeout`.
pub async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let start = Instant::now();
    while pid_alive(pid) {
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// How a process ended under [`terminate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// It went after its stop signal (or was gone already).
    Ended,
    /// It did not go within the grace period and was killed.
    Killed,
    /// It is still there [`KILL_WAIT`] after `SIGKILL`.
    Survived,
}

/// Stops `pid`: sends `signal` (its clean-shutdown signal), waits `grace`, then `SIGKILL`s it and waits
/// [`KILL_WAIT`].
pub async fn terminate(pid: u32, signal: &str, grace: Duration) -> io::Result<Termination> {
    send_signal(pid, signal)?;
    if wait_gone(pid, grace).await {
        return Ok(Termination::Ended);
    }
    send_signal(pid, "KILL")?;
    Ok(if wait_gone(pid, KILL_WAIT).await {
        Termination::Killed
    } else {
        Termination::Survived
    })
}

/// Bytes allocated under `path` (blocks, not apparent sizes; a hard-linked file counted once; links not
/// followed).
pub fn dir_usage(path: &Path) -> u64 {
    fn walk(p: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            return 0;
        }
        let mut total = meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    total += walk(&e.path(), seen);
                }
            }
        }
        total
    }
    walk(path, &mut std::collections::HashSet::new())
}

/// Writes `bytes` through `<path with extension tmp>`: created afresh with `mode`, synced, renamed over `path`.
fn write_through_tmp(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    // A leftover of an interrupted write could carry other permissions: it is replaced, not reused.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Writes a file atomically (a reader sees the old or the new content, never a part), readable as the umask
/// allows.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_through_tmp(path, bytes, 0o666)
}

/// Writes a file atomically, readable and writable by its owner only (mode 0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_through_tmp(path, bytes, 0o600)
}

/// The last `max` bytes of `text` (trimmed), cut on a character boundary.
pub fn tail(text: &str, max: usize) -> &str {
    let text = text.trim();
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The last `max` bytes of a log file (for crash and launch reasons); empty when it cannot be read.
pub fn log_tail(path: &Path, max: usize) -> String {
    std::fs::read(path)
        .map(|b| tail(&String::from_utf8_lossy(&b), max).to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tail_keeps_char_boundaries() {
        assert_eq!(tail("héllo", 3), "llo");
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail(" ab \n", 10), "ab");
    }

    #[test]
    fn own_process_is_alive_and_bogus_is_not() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(u32::MAX - 1));
        let exe = std::env::args().next().unwrap_or_default();
        assert!(cmdline_contains(std::process::id(), &[exe]));
        assert!(!cmdline_contains(
            std::process::id(),
            &["--no-such-argument"]
        ));
        assert!(!cmdline_contains(u32::MAX - 1, &["x"]));
    }

    #[test]
    fn private_writes_are_0600_and_replace_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret.key");
        // A leftover temp file readable by everyone is not reused.
        std::fs::write(p.with_extension("tmp"), b"old").unwrap();
        std::fs::set_permissions(
            p.with_extension("tmp"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        write_private(&p, b"s3cret").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"s3cret");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!p.with_extension("tmp").exists());
        write_atomic(&p, b"next").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"next");
    }

    #[test]
    fn pid_files_and_usage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        std::fs::write(&p, "1234\nextra\n").unwrap();
        assert_eq!(read_pid(&p), Some(1234));
        std::fs::write(&p, "nope").unwrap();
        assert_eq!(read_pid(&p), None);
        assert_eq!(read_pid(&dir.path().join("missing")), None);
        let big = dir.path().join("big");
        std::fs::write(&big, vec![7u8; 64 * 1024]).unwrap();
        std::fs::hard_link(&big, dir.path().join("link")).unwrap();
        let used = dir_usage(dir.path());
        assert!(
            (64 * 1024..2 * 64 * 1024).contains(&used),
            "a hard link is counted once: {used}"
        );
        std::fs::write(dir.path().join("log"), "a\nlast line\n").unwrap();
        assert_eq!(log_tail(&dir.path().join("log"), 9), "last line");
    }

    #[tokio::test]
    async fn terminate_ends_a_process() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let reaper = std::thread::spawn(move || child.wait());
        let how = terminate(pid, "TERM", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(how, Termination::Ended);
        assert!(!pid_alive(pid));
        reaper.join().unwrap().unwrap();
        // Gone already: nothing to do.
        assert_eq!(
            terminate(pid, "TERM", Duration::from_millis(10))
                .await
                .unwrap(),
            Termination::Ended
        );
    }
}
