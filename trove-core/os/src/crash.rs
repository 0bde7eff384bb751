//! Deterministic kill points for whole-process crash tests.
//!
//! A crash test starts a real process (the all-in-one, a task manager, a guest agent) with one of these
//! environment variables set; the process then dies by `SIGKILL` at exactly that point, as if the machine had lost
//! power there. Without the variables the hooks cost one cached environment lookup.
//!
//! - [`CRASH_POINT_ENV`] (`TROVE_CRASH_POINT=prepare:after_init`): die when the code passes [`crash_point`] with
//!   that name. Names are `<operation>:<moment>`; the guest's are listed in its prepare.
//! - [`CRASH_AT_JOURNAL_WRITE_ENV`] (`TROVE_CRASH_BEFORE_JOURNAL_WRITE=3`): die instead of performing the N-th
//!   journal write of a workflow (1-based), i.e. between two steps of the task manager.
//! - [`CRASH_ONCE_ENV`] (`TROVE_CRASH_ONCE=/tmp/x.mark`): die at the point only when the file does not exist yet
//!   (it is created just before), for processes relaunched with the same environment.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Names the kill point ([`crash_point`]) at which the process dies.
pub const CRASH_POINT_ENV: &str = "TROVE_CRASH_POINT";
/// Which journal write (1-based) the process dies before ([`crash_before_journal_write`]).
pub const CRASH_AT_JOURNAL_WRITE_ENV: &str = "TROVE_CRASH_BEFORE_JOURNAL_WRITE";

fn env_once(cell: &'static OnceLock<Option<String>>, name: &str) -> Option<&'static str> {
    cell.get_or_init(|| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// With [`CRASH_ONCE_ENV`] naming a file: whether that file is absent (it is created then). A process that is
/// relaunched with the same environment (a guest agent its supervisor restarts) so dies at its kill point once.
pub const CRASH_ONCE_ENV: &str = "TROVE_CRASH_ONCE";

fn first_time() -> bool {
    match std::env::var_os(CRASH_ONCE_ENV) {
        None => true,
        Some(path) => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .is_ok(),
    }
}

/// Dies now, by `SIGKILL` sent to this very process (nothing is flushed, no destructor runs).
pub fn die_now(why: &str) -> ! {
    eprintln!(
        "trove: injected crash ({why}): killing process {}",
        std::process::id()
    );
    let _ = crate::send_signal(std::process::id(), "KILL");
    // `kill` could not run: abort is the next most abrupt end.
    std::process::abort()
}

/// Dies when [`CRASH_POINT_ENV`] names `point`.
pub fn crash_point(point: &str) {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    if env_once(&POINT, CRASH_POINT_ENV) == Some(point) && first_time() {
        die_now(point);
    }
}

/// Counts a journal write about to happen and dies instead when it is the one [`CRASH_AT_JOURNAL_WRITE_ENV`]
/// names.
pub fn crash_before_journal_write() {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let Some(at) = env_once(&AT, CRASH_AT_JOURNAL_WRITE_ENV).and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    if WRITES.fetch_add(1, Ordering::SeqCst) + 1 == at && first_time() {
        die_now(&format!("before journal write {at}"));
    }
}
