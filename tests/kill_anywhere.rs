//! Kill -9 anywhere: the all-in-one process dies (SIGKILL, no clean-up of any kind) at a deterministic point of a
//! workflow on a real engine, is started again on the same state directory, and the instance must converge: to
//! ACTIVE with what was asked for (or gone, for a delete) within a bound, with nothing leaked (no engine process,
//! no file or directory named after a deleted instance).
//!
//! Kill points are environment variables of the killed process (see `trove_os::crash`):
//! `TROVE_CRASH_BEFORE_JOURNAL_WRITE=N` dies instead of the N-th journal write of the task manager (between and
//! inside workflow steps), `TROVE_CRASH_POINT=prepare:after_init` (and the other `prepare:*` points) dies inside
//! the guest's prepare on the real engine.
//!
//! CI runs a representative subset (create, delete and resize flavor on MariaDB, PostgreSQL and Redis, two kill
//! points each). The full sweep, every kill point of those workflows on every engine, is
//! `TROVE_KILL_SWEEP=full cargo nextest run --all-features --test kill_anywhere --no-capture`; it prints one line
//! per case and a summary (cases, all converged, the longest convergence). `TROVE_KILL_ONLY=<text>` runs only
//! the cases whose description contains the text (e.g. `TROVE_KILL_ONLY='Create on redis'`).

mod api_support;

use std::path::Path;
use std::time::{Duration, Instant};

use api_support::{
    blocking, engine_state_dir, engines_lock, engines_under, get_json, try_blocking, AllInOne,
    KillGuard,
};
use serde_json::{json, Value};

const JOURNAL: &str = "TROVE_CRASH_BEFORE_JOURNAL_WRITE";
const POINT: &str = "TROVE_CRASH_POINT";
/// The bound on convergence after the restart (the operation's own duration on 2 loaded cores plus the time a
/// guest takes to show it waits to be prepared).
const CONVERGE: Duration = Duration::from_secs(90);
const TENANT: &str = "t1";
const USER: (&str, &str) = ("app", "app-Pw-1x");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Delete,
    ResizeFlavor,
}

/// One case: an operation on an engine, and where the process dies.
#[derive(Debug, Clone)]
struct Case {
    ds: &'static str,
    op: Op,
    kill: (&'static str, String),
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} on {} killed at {}={}",
            self.op, self.ds, self.kill.0, self.kill.1
        )
    }
}

const ENGINES: [&str; 3] = ["mariadb", "postgresql", "redis"];

/// Kill points of each operation: journal writes (2 per step: before and after its side effect) and the guest's
/// prepare points. `full`: every one; otherwise two per operation.
fn kill_points(op: Op, full: bool) -> Vec<(&'static str, String)> {
    let journal = |n: u32| (JOURNAL, n.to_string());
    let point = |p: &str| (POINT, format!("prepare:{p}"));
    match (op, full) {
        (Op::Create, false) => vec![point("after_init"), journal(6)],
        // volume, server, prepare, wait (2 lines each), then the guest's own points.
        (Op::Create, true) => (1..=8)
            .map(journal)
            .chain(
                [
                    "after_init",
                    "after_start",
                    "after_bootstrap",
                    "after_seed",
                    "after_prepared",
                ]
                .map(point),
            )
            .collect(),
        (Op::Delete, false) => vec![journal(3), journal(6)],
        // stop_db, delete_server, delete_volume, delete_topic.
        (Op::Delete, true) => (1..=8).map(journal).collect(),
        (Op::ResizeFlavor, false) => vec![journal(2), journal(4)],
        // resize_server, apply_flavor, wait_healthy.
        (Op::ResizeFlavor, true) => (1..=6).map(journal).collect(),
    }
}

fn cases() -> Vec<Case> {
    let full = std::env::var("TROVE_KILL_SWEEP").is_ok_and(|v| v == "full");
    let mut out = Vec::new();
    for op in [Op::Create, Op::Delete, Op::ResizeFlavor] {
        for ds in ENGINES {
            for kill in kill_points(op, full) {
                out.push(Case { ds, op, kill });
            }
        }
    }
    // `TROVE_KILL_ONLY=<text>`: only the cases whose description contains it (to rerun one).
    match std::env::var("TROVE_KILL_ONLY") {
        Ok(only) if !only.is_empty() => out.retain(|c| c.to_string().contains(&only)),
        _ => {}
    }
    out
}

fn url(server: &AllInOne, path: &str) -> String {
    format!("{}/v1.0/{TENANT}{path}", server.base)
}

fn create_body(ds: &str, name: &str, flavor: &str) -> String {
    let mut body = json!({"instance": {
        "name": name,
        "flavorRef": flavor,
        "volume": {"size": 1},
        "datastore": {"type": ds},
        "users": [{"name": USER.0, "password": USER.1}],
    }});
    if ds != "redis" {
        body["instance"]["databases"] = json!([{ "name": "shop" }]);
        body["instance"]["users"][0]["databases"] = json!([{ "name": "shop" }]);
    }
    body.to_string()
}

fn healthy(i: &Value) -> bool {
    i["status"] == "ACTIVE" && i["operating_status"] == "HEALTHY"
}

/// Polls instance `id` until `done` holds for (status code, view); panics after `within` or when it shows an
/// error (a case converges to its expected end, not to an error).
fn wait_for(
    server: &AllInOne,
    id: &str,
    what: &str,
    within: Duration,
    done: impl Fn(u16, &Value) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        let (s, body) = get_json(&url(server, &format!("/instances/{id}")));
        if done(s, &body["instance"]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "instance {id} not {what} within {within:?}: {s} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create(server: &AllInOne, ds: &str, name: &str) -> Option<String> {
    // No answer: the process died before it answered.
    let (s, created) = try_blocking(
        "POST",
        &url(server, "/instances"),
        Some(&create_body(ds, name, "6")),
    )?;
    assert_eq!(s, 200, "create {ds}: {created}");
    created["instance"]["id"].as_str().map(str::to_string)
}

/// The id of the only instance named `name` (after a restart, when the create's answer was lost).
fn find(server: &AllInOne, name: &str) -> Option<String> {
    let (s, list) = get_json(&url(server, "/instances"));
    assert_eq!(s, 200, "{list}");
    list["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["name"] == name)
        .and_then(|i| i["id"].as_str().map(str::to_string))
}

/// Files or directories under `dir` whose name contains `id`.
fn named_after(dir: &Path, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().contains(id) {
                out.push(p.display().to_string());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out
}

/// Deletes `id` and checks nothing of it is left: no engine process under the state directory, nothing named
/// after it.
fn delete_and_check_clean(server: &AllInOne, id: &str, case: &Case) {
    let (s, body) = blocking("DELETE", &url(server, &format!("/instances/{id}")), None);
    assert!(s == 202 || s == 404, "{case}: delete answered {s} {body}");
    wait_for(server, id, "deleted", CONVERGE, |s, _| s == 404);
    assert_gone(server, id, case);
}

fn assert_gone(server: &AllInOne, id: &str, case: &Case) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut engines = engines_under(server.state.path());
        engines.retain(|pid| *pid != server.pid());
        let left = named_after(server.state.path(), &id.replace('-', ""))
            .into_iter()
            .chain(named_after(server.state.path(), id))
            .collect::<Vec<_>>();
        if engines.is_empty() && left.is_empty() {
            return;
        }
        let described: Vec<String> = engines
            .iter()
            .map(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                format!(
                    "{pid}: {}",
                    String::from_utf8_lossy(&cmd).replace('\0', " ")
                )
            })
            .collect();
        assert!(
            Instant::now() < deadline,
            "{case}: left behind after delete: engine processes {described:?}, paths {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Checks the user given at create exists on the engine (the guest's seed ran to its end).
fn assert_user(server: &AllInOne, id: &str, case: &Case) {
    let (s, users) = get_json(&url(server, &format!("/instances/{id}/users")));
    assert_eq!(s, 200, "{case}: list users: {users}");
    assert!(
        users["users"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u["name"] == USER.0)),
        "{case}: the user given at create is missing: {users}"
    );
}

/// Waits for the killed process to die at its kill point; answers the state directory.
fn died(server: AllInOne, case: &Case) -> tempfile::TempDir {
    match server.wait_exit(Duration::from_secs(120)) {
        Ok((status, state)) => {
            assert!(
                !status.success(),
                "{case}: the process exited cleanly: {status}"
            );
            state
        }
        Err(_) => panic!("{case}: the kill point was never reached"),
    }
}

/// Runs one case; answers the time from the restart to convergence.
fn run(case: &Case) -> Duration {
    let state = engine_state_dir();
    let _guard = KillGuard(state.path().to_path_buf());
    let kill = [(case.kill.0, case.kill.1.as_str())];
    let name = format!("k-{}", case.ds);
    let (state, id) = match case.op {
        Op::Create => {
            let server = AllInOne::start_env(state, &[], &kill);
            let id = create(&server, case.ds, &name);
            (died(server, case), id)
        }
        Op::Delete | Op::ResizeFlavor => {
            let server = AllInOne::start_in(state, &[]);
            let id = create(&server, case.ds, &name).expect("create answered");
            wait_for(&server, &id, "ACTIVE", CONVERGE, |_, i| healthy(i));
            let (_, state) = server.stop();
            let server = AllInOne::start_env(state, &[], &kill);
            let answer = match case.op {
                Op::Delete => {
                    try_blocking("DELETE", &url(&server, &format!("/instances/{id}")), None)
                }
                _ => try_blocking(
                    "POST",
                    &url(&server, &format!("/instances/{id}/action")),
                    Some(r#"{"resize": {"flavorRef": "1"}}"#),
                ),
            };
            // No answer: the process died before it answered (the request may or may not have been taken).
            if let Some((s, body)) = answer {
                assert_eq!(s, 202, "{case}: {body}");
            }
            (died(server, case), Some(id))
        }
    };
    let restarted = Instant::now();
    let server = AllInOne::start_in(state, &[]);
    let id = id.or_else(|| find(&server, &name));
    let took = match (case.op, id) {
        // The create was never acknowledged and left nothing: a valid end.
        (Op::Create, None) => restarted.elapsed(),
        (Op::Create, Some(id)) => {
            wait_for(&server, &id, "ACTIVE", CONVERGE, |_, i| healthy(i));
            let took = restarted.elapsed();
            assert_user(&server, &id, case);
            delete_and_check_clean(&server, &id, case);
            took
        }
        (Op::Delete, Some(id)) => {
            wait_for(&server, &id, "deleted", CONVERGE, |s, _| s == 404);
            let took = restarted.elapsed();
            assert_gone(&server, &id, case);
            took
        }
        (Op::ResizeFlavor, Some(id)) => {
            wait_for(&server, &id, "resized and ACTIVE", CONVERGE, |_, i| {
                healthy(i) && i["flavor"]["id"] == "1"
            });
            let took = restarted.elapsed();
            assert_user(&server, &id, case);
            delete_and_check_clean(&server, &id, case);
            took
        }
        (op, None) => panic!("{case}: {op:?} lost its instance"),
    };
    let _ = server.stop();
    took
}

#[test]
fn every_kill_point_converges_after_a_restart() {
    let _lock = engines_lock();
    let all = cases();
    let started = Instant::now();
    let mut longest = (Duration::ZERO, String::new());
    for case in &all {
        let took = run(case);
        eprintln!("converged in {took:>6.2?}: {case}");
        if took > longest.0 {
            longest = (took, case.to_string());
        }
    }
    eprintln!(
        "kill sweep: {} cases, all converged, longest {:.2?} ({}), whole sweep {:.0?}",
        all.len(),
        longest.0,
        longest.1,
        started.elapsed()
    );
}
