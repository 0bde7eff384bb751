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
//! points each; a backup on MariaDB killed inside the guest's backup and at a journal write, and a restore killed
//! after the guest unpacked the backup; a replica's create on MariaDB and a switchover on PostgreSQL, at a journal
//! write each). The full sweep (create, delete, resize flavor, resize volume, restart, upgrade, mgmt migrate, mgmt
//! rebuild, backup, restore, point-in-time restore, create replica and promote on every engine; every
//! journal write of each, found by moving the kill point on until the operation ends before reaching it, plus the
//! guest's prepare, backup and restore points) is
//! `TROVE_KILL_SWEEP=full cargo test --all-features --test kill_anywhere -- --nocapture` (cargo test: it runs longer
//! than nextest's timeout); it prints one line
//! per case and a summary (cases, all converged, the longest convergence). `TROVE_KILL_ONLY=<text>` runs only
//! the cases whose description contains the text (e.g. `TROVE_KILL_ONLY='Create on redis'`).

mod api_support;

use std::time::{Duration, Instant};

use api_support::{
    blocking, engine_state_dir, engines_lock, engines_under, get_json, named_after, try_blocking,
    AllInOne, KillGuard,
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
    ResizeVolume,
    Restart,
    Upgrade,
    Migrate,
    Rebuild,
    /// Take a full backup (the instance must end ACTIVE, the backup COMPLETED or FAILED, no orphan object).
    Backup,
    /// Create an instance from a backup (it must end ACTIVE with the backup's user and database).
    Restore,
    /// Create an instance from an incremental stopped at a moment between it and its parent (point-in-time
    /// restore: MariaDB replays the binary log on a private server, PostgreSQL its WAL in the single-user run).
    PitRestore,
    /// Create a replica of the instance (it must end ACTIVE, following the source; no seed backup left).
    CreateReplica,
    /// Promote the instance's replica (switchover: it must end the source, the old source following it).
    Promote,
}

impl Op {
    /// Whether the case watches an instance other than the one it made first (which it keeps as a companion).
    fn watches_another(self) -> bool {
        matches!(
            self,
            Op::Restore | Op::PitRestore | Op::CreateReplica | Op::Promote
        )
    }
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
/// The engines whose backups the all-in-one takes.
const BACKUP_ENGINES: [&str; 3] = ["mariadb", "postgresql", "redis"];
/// The guest's kill points inside a backup: every engine's after the object is written, MariaDB's also before.
fn backup_points(ds: &str) -> Vec<&'static str> {
    match ds {
        "mariadb" => vec!["backup:before_put", "backup:after_put"],
        _ => vec!["backup:after_put"],
    }
}
/// The guest's kill points inside a restore besides prepare's (MariaDB's unpack and prepare, PostgreSQL's unpack).
fn restore_points(ds: &str) -> Vec<&'static str> {
    match ds {
        "mariadb" => vec!["restore:after_unpack", "restore:after_prepare"],
        "postgresql" => vec!["restore:after_unpack"],
        _ => vec![],
    }
}
/// The guest's kill points inside a point-in-time restore besides prepare's.
fn pit_restore_points(ds: &str) -> Vec<&'static str> {
    match ds {
        "mariadb" => vec!["restore:after_unpack", "restore:during_replay"],
        "postgresql" => vec!["restore:after_unpack"],
        _ => vec![],
    }
}
/// The engines with point-in-time restore.
const PIT_ENGINES: [&str; 2] = ["mariadb", "postgresql"];
/// The guest's kill points inside prepare (create only).
const PREPARE_POINTS: [&str; 5] = [
    "after_init",
    "after_start",
    "after_bootstrap",
    "after_seed",
    "after_prepared",
];
/// Journal writes tried at most per operation in the full sweep (the sweep of an operation ends at the first
/// write the operation finishes before).
const MAX_JOURNAL_WRITES: u32 = 16;

fn full_sweep() -> bool {
    std::env::var("TROVE_KILL_SWEEP").is_ok_and(|v| v == "full")
}

fn journal(n: u32) -> (&'static str, String) {
    (JOURNAL, n.to_string())
}

/// The CI subset: two kill points per operation (journal writes count 2 per step: before and after its side
/// effect).
fn ci_cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (op, kill) in [
        (Op::Backup, (POINT, "backup:before_put".to_string())),
        (Op::Backup, journal(2)),
        (Op::Restore, (POINT, "restore:after_unpack".to_string())),
        (Op::PitRestore, (POINT, "restore:during_replay".to_string())),
    ] {
        out.push(Case {
            ds: "mariadb",
            op,
            kill,
        });
    }
    // Replication: a replica's create killed inside its seed (the source's guest stored the seed backup, the
    // process died before reporting it); a switchover killed at a journal write inside it.
    for (ds, op, kill) in [
        (
            "mariadb",
            Op::CreateReplica,
            (POINT, "backup:after_put".to_string()),
        ),
        ("postgresql", Op::Promote, journal(8)),
    ] {
        out.push(Case { ds, op, kill });
    }
    for (op, kills) in [
        // prepare's guest point, and the prepare step's "completed" line (the cast sent, its answer lost).
        (
            Op::Create,
            vec![(POINT, "prepare:after_init".to_string()), journal(6)],
        ),
        // stop_db, delete_server, delete_volume, delete_topic: inside delete_server, inside delete_volume.
        (Op::Delete, vec![journal(3), journal(6)]),
        // resize_server, apply_flavor, wait_healthy: after the server resize, before the guest's.
        (Op::ResizeFlavor, vec![journal(2), journal(4)]),
    ] {
        for ds in ENGINES {
            for kill in &kills {
                out.push(Case {
                    ds,
                    op,
                    kill: kill.clone(),
                });
            }
        }
    }
    out
}

/// `TROVE_KILL_ONLY=<text>`: only the cases whose description contains it (to rerun one).
fn selected(c: &Case) -> bool {
    match std::env::var("TROVE_KILL_ONLY") {
        Ok(only) if !only.is_empty() => c.to_string().contains(&only),
        _ => true,
    }
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

/// The image (binary directory) and manager of the default version of `ds` (mgmt view).
fn version_of(server: &AllInOne, ds: &str) -> (String, String) {
    let (s, list) = get_json(&url(server, "/mgmt/datastore-versions"));
    assert_eq!(s, 200, "{list}");
    let v = list["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["datastore_name"] == ds && v["default"] == true)
        .unwrap_or_else(|| panic!("no default version of {ds} in {list}"));
    (
        v["image"].as_str().unwrap_or_default().to_string(),
        v["datastore_manager"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Sends the request of `op` on `id`; `None` when the server died before it answered.
fn ask(server: &AllInOne, op: Op, ds: &str, id: &str) -> Option<(u16, Value)> {
    let action = |body: &str| {
        try_blocking(
            "POST",
            &url(server, &format!("/instances/{id}/action")),
            Some(body),
        )
    };
    let mgmt = |body: String| {
        try_blocking(
            "POST",
            &url(server, &format!("/mgmt/instances/{id}/action")),
            Some(&body),
        )
    };
    match op {
        Op::Create => unreachable!("create is asked by `create`"),
        Op::CreateReplica => try_blocking(
            "POST",
            &url(server, "/instances"),
            Some(&json!({"instance": {"name": REPLICA, "replica_of": id}}).to_string()),
        ),
        Op::Promote => {
            let replica = find(server, REPLICA).expect("prepare_for made the replica");
            try_blocking(
                "POST",
                &url(server, &format!("/instances/{replica}/action")),
                Some(r#"{"promote_to_replica_source": {}}"#),
            )
            .map(|(s, _)| (s, json!({"instance": {"id": replica}})))
        }
        Op::Delete => try_blocking("DELETE", &url(server, &format!("/instances/{id}")), None),
        Op::ResizeFlavor => action(r#"{"resize": {"flavorRef": "1"}}"#),
        Op::ResizeVolume => action(r#"{"resize": {"volume": {"size": 2}}}"#),
        Op::Restart => action(r#"{"restart": {}}"#),
        Op::Upgrade => try_blocking(
            "PATCH",
            &url(server, &format!("/instances/{id}")),
            Some(&json!({"instance": {"datastore_version": UPGRADE_TO}}).to_string()),
        ),
        Op::Migrate => mgmt(json!({"migrate": {"host": "remote"}}).to_string()),
        // A Glance-style image id: the local compute records it and rebuilds on the version's binaries.
        Op::Rebuild => mgmt(
            json!({"rebuild": {"image_id": "3e50414a-8532-4646-982c-a66fe8f0411b"}}).to_string(),
        ),
        Op::Backup => try_blocking(
            "POST",
            &url(server, "/backups"),
            Some(&json!({"backup": {"name": "kb", "instance": id}}).to_string()),
        ),
        Op::Restore => {
            let backup = completed_backup(server, id).expect("prepare_for took a backup");
            let body = json!({"instance": {
                "name": RESTORED, "flavorRef": "6", "volume": {"size": 1},
                "datastore": {"type": ds}, "restorePoint": {"backupRef": backup},
            }});
            try_blocking("POST", &url(server, "/instances"), Some(&body.to_string()))
        }
        Op::PitRestore => {
            // A second after the full backup was recorded COMPLETED (the view has whole seconds): after its end,
            // before the incremental began (prepare_for waited longer than that).
            let (full, inc) = full_and_incremental(server, id).expect("prepare_for took both");
            let (_, view) = get_json(&url(server, &format!("/backups/{full}")));
            let updated = view["backup"]["updated"].as_str().expect("updated");
            let at = chrono::NaiveDateTime::parse_from_str(
                updated.trim_end_matches('Z'),
                "%Y-%m-%dT%H:%M:%S",
            )
            .expect("an upstream time")
                + chrono::Duration::seconds(1);
            let at = at.and_utc().to_rfc3339();
            let body = json!({"instance": {
                "name": RESTORED, "flavorRef": "6", "volume": {"size": 1},
                "datastore": {"type": ds},
                "restorePoint": {"backupRef": inc, "restore_time": at},
            }});
            try_blocking("POST", &url(server, "/instances"), Some(&body.to_string()))
        }
    }
}

/// The name of the instance a restore case creates.
const RESTORED: &str = "k-restored";
/// The name of the replica a replication case makes.
const REPLICA: &str = "k-replica";

/// The backups of instance `id` (id, status).
fn backups_of(server: &AllInOne, id: &str) -> Vec<(String, String)> {
    let (s, list) = get_json(&url(server, &format!("/instances/{id}/backups")));
    assert_eq!(s, 200, "{list}");
    list["backups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                b["id"].as_str().unwrap_or_default().to_string(),
                b["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The full backup of `id` and the incremental on it, once both completed.
fn full_and_incremental(server: &AllInOne, id: &str) -> Option<(String, String)> {
    let done: Vec<String> = backups_of(server, id)
        .into_iter()
        .filter(|(_, st)| st == "COMPLETED")
        .map(|(b, _)| b)
        .collect();
    if done.len() < 2 {
        return None;
    }
    let mut full = None;
    let mut inc = None;
    for b in done {
        let (_, v) = get_json(&url(server, &format!("/backups/{b}")));
        if v["backup"]["parent_id"].is_string() {
            inc = Some(b);
        } else {
            full = Some(b);
        }
    }
    Some((full?, inc?))
}

fn completed_backup(server: &AllInOne, id: &str) -> Option<String> {
    backups_of(server, id)
        .into_iter()
        .find(|(_, st)| st == "COMPLETED")
        .map(|(b, _)| b)
}

/// Every backup of `id` ended (COMPLETED or FAILED, none stuck), and the store holds an object for each
/// completed one and nothing else (objects of failed attempts are purged).
fn assert_backups_settled(server: &AllInOne, id: &str, case: &Case) {
    let all = backups_of(server, id);
    for (b, st) in &all {
        assert!(
            st == "COMPLETED" || st == "FAILED",
            "{case}: backup {b} is {st}"
        );
    }
    let dir = server.state.path().join("backups/database_backups");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let objects: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| n.ends_with(".obj"))
                    .collect()
            })
            .unwrap_or_default();
        let stray: Vec<&String> = objects
            .iter()
            .filter(|o| {
                !all.iter()
                    .any(|(b, st)| st == "COMPLETED" && o.starts_with(b.as_str()))
            })
            .collect();
        let missing: Vec<&String> = all
            .iter()
            .filter(|(b, st)| {
                st == "COMPLETED" && !objects.iter().any(|o| o.starts_with(b.as_str()))
            })
            .map(|(b, _)| b)
            .collect();
        assert!(
            missing.is_empty(),
            "{case}: completed backups without an object: {missing:?}"
        );
        if stray.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{case}: objects of no completed backup are left: {stray:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The second version record an upgrade goes to (the same binaries under another name).
const UPGRADE_TO: &str = "kill-upgrade";

/// What must hold before `op` is asked (the server runs without a kill point).
fn prepare_for(server: &AllInOne, op: Op, ds: &str, id: &str) {
    if matches!(op, Op::Restore | Op::PitRestore) {
        let (s, b) = blocking(
            "POST",
            &url(server, "/backups"),
            Some(&json!({"backup": {"name": "source", "instance": id}}).to_string()),
        );
        assert_eq!(s, 202, "backup for the restore: {b}");
        let deadline = Instant::now() + CONVERGE;
        while completed_backup(server, id).is_none() {
            assert!(
                Instant::now() < deadline,
                "no completed backup of {id}: {:?}",
                backups_of(server, id)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        wait_for(server, id, "ACTIVE after its backup", CONVERGE, |_, i| {
            healthy(i)
        });
    }
    if op == Op::PitRestore {
        // The moment restored to (a second after the full backup's record) must fall before the incremental.
        std::thread::sleep(Duration::from_millis(2100));
        let (s, b) = blocking(
            "POST",
            &url(server, "/backups"),
            Some(
                &json!({"backup": {"name": "source-inc", "instance": id, "incremental": true}})
                    .to_string(),
            ),
        );
        assert_eq!(s, 202, "incremental for the restore: {b}");
        let deadline = Instant::now() + CONVERGE;
        while full_and_incremental(server, id).is_none() {
            assert!(
                Instant::now() < deadline,
                "no completed incremental of {id}: {:?}",
                backups_of(server, id)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        wait_for(
            server,
            id,
            "ACTIVE after its incremental",
            CONVERGE,
            |_, i| healthy(i),
        );
    }
    if op == Op::Promote {
        let (s, b) = blocking(
            "POST",
            &url(server, "/instances"),
            Some(&json!({"instance": {"name": REPLICA, "replica_of": id}}).to_string()),
        );
        assert_eq!(s, 200, "replica for the promote: {b}");
        let replica = b["instance"]["id"].as_str().expect("an id").to_string();
        wait_for(server, &replica, "a following replica", CONVERGE, |_, i| {
            healthy(i) && i["replica_of"]["id"] == id
        });
    }
    if op == Op::Upgrade {
        let (image, manager) = version_of(server, ds);
        let body = json!({"version": {
            "name": UPGRADE_TO, "datastore_name": ds, "datastore_manager": manager,
            "image": image, "active": true,
        }});
        let (s, b) = blocking(
            "POST",
            &url(server, "/mgmt/datastore-versions"),
            Some(&body.to_string()),
        );
        assert!(s == 200 || s == 202, "add version {UPGRADE_TO}: {s} {b}");
    }
}

/// Whether `op` reached its end, from the instance's status code and view (read after the request was accepted:
/// the API marks the instance busy before it answers, so a healthy view means the workflow ended).
fn ended(op: Op, s: u16, i: &Value) -> bool {
    match op {
        Op::Delete => s == 404,
        Op::ResizeFlavor => healthy(i) && i["flavor"]["id"] == "1",
        Op::ResizeVolume => healthy(i) && i["volume"]["size"] == 2,
        Op::Upgrade => healthy(i) && i["datastore"]["version"] == UPGRADE_TO,
        Op::CreateReplica => healthy(i) && i["replica_of"]["id"].is_string(),
        Op::Promote => {
            healthy(i) && i.get("replica_of").is_none() && i["replicas"][0]["id"].is_string()
        }
        Op::Create
        | Op::Restart
        | Op::Migrate
        | Op::Rebuild
        | Op::Backup
        | Op::Restore
        | Op::PitRestore => healthy(i),
    }
}

/// Deletes `id` and checks nothing of it is left: no engine process under the state directory, nothing named
/// after it.
fn delete_and_check_clean(server: &AllInOne, id: &str, case: &Case) {
    let (s, body) = blocking("DELETE", &url(server, &format!("/instances/{id}")), None);
    assert!(s == 202 || s == 404, "{case}: delete answered {s} {body}");
    wait_for(server, id, "deleted", CONVERGE, |s, _| s == 404);
    assert_gone(server, id, case);
}

/// Deletes `id` and waits until it answers 404 (what it leaves is checked after the case's last delete).
fn delete_only(server: &AllInOne, id: &str, case: &Case) {
    let (s, body) = blocking("DELETE", &url(server, &format!("/instances/{id}")), None);
    assert!(s == 202 || s == 404, "{case}: delete answered {s} {body}");
    wait_for(server, id, "deleted", CONVERGE, |s, _| s == 404);
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

/// How a killed run ended.
enum Killed {
    /// The process died at its kill point: its state directory.
    Died(tempfile::TempDir),
    /// The operation ended before the kill point (beyond the operation's last journal write).
    NotReached(AllInOne),
}

/// Waits for the process to die at its kill point, or for `op` on `id` to end without it.
fn killed(server: AllInOne, op: Op, id: Option<&str>, case: &Case) -> Killed {
    let deadline = Instant::now() + CONVERGE;
    let mut server = server;
    loop {
        server = match server.wait_exit(Duration::from_millis(300)) {
            Ok((status, state)) => {
                assert!(
                    !status.success(),
                    "{case}: the process exited cleanly: {status}"
                );
                return Killed::Died(state);
            }
            Err(server) => server,
        };
        if let Some(id) = id {
            if let Some((s, body)) =
                try_blocking("GET", &url(&server, &format!("/instances/{id}")), None)
            {
                if ended(op, s, &body["instance"]) {
                    return Killed::NotReached(server);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{case}: neither the kill point nor the end of the operation within {CONVERGE:?}"
        );
    }
}

/// The server's arguments in this test: every caller is an admin (mgmt migrate and rebuild), and a second local
/// host to migrate to.
const ARGS: [&str; 3] = ["--noauth-admin", "--host", "remote"];

/// Runs one case; answers the time from the restart to convergence, or `None` when the operation ended before
/// the kill point.
fn run(case: &Case) -> Option<Duration> {
    let state = engine_state_dir();
    let _guard = KillGuard(state.path().to_path_buf());
    let kill = [(case.kill.0, case.kill.1.as_str())];
    let name = format!("k-{}", case.ds);
    let (op, ds) = (case.op, case.ds);
    let mut source: Option<String> = None;
    let (outcome, id) = if op == Op::Create {
        let server = AllInOne::start_env(state, &ARGS, &kill);
        let id = create(&server, ds, &name);
        (killed(server, op, id.as_deref(), case), id)
    } else {
        let server = AllInOne::start_in(state, &ARGS);
        let id = create(&server, ds, &name).expect("create answered");
        wait_for(&server, &id, "ACTIVE", CONVERGE, |_, i| healthy(i));
        prepare_for(&server, op, ds, &id);
        let (_, state) = server.stop();
        let server = AllInOne::start_env(state, &ARGS, &kill);
        // No answer: the process died before it answered (the request may or may not have been taken).
        let answer = ask(&server, op, ds, &id);
        if let Some((s, body)) = &answer {
            assert!(*s == 202 || *s == 200, "{case}: {s} {body}");
        }
        if op.watches_another() {
            // The case watches the new instance (the promoted replica); the first one is deleted at the end.
            source = Some(id);
            let new = answer.and_then(|(_, b)| b["instance"]["id"].as_str().map(str::to_string));
            (killed(server, op, new.as_deref(), case), new)
        } else {
            (killed(server, op, Some(&id), case), Some(id))
        }
    };
    let state = match outcome {
        Killed::Died(state) => state,
        Killed::NotReached(server) => {
            // Clean up on a server without the kill point (the killed one would die in the delete's journal).
            let (_, state) = server.stop();
            let server = AllInOne::start_in(state, &ARGS);
            clean_up(&server, op, source.as_deref(), id.as_deref(), case);
            let _ = server.stop();
            return None;
        }
    };
    let restarted = Instant::now();
    let server = AllInOne::start_in(state, &ARGS);
    let made = match op {
        Op::Restore | Op::PitRestore => RESTORED,
        Op::CreateReplica | Op::Promote => REPLICA,
        _ => &name,
    };
    let id = id.or_else(|| find(&server, made));
    let Some(id) = id else {
        // The create was never acknowledged and left nothing: a valid end, said so in the output.
        assert!(
            matches!(
                op,
                Op::Create | Op::Restore | Op::PitRestore | Op::CreateReplica
            ),
            "{case}: the instance was lost"
        );
        clean_up(&server, op, source.as_deref(), None, case);
        eprintln!("{case}: the create was never answered and left no instance");
        let _ = server.stop();
        return Some(restarted.elapsed());
    };
    wait_for(&server, &id, "converged", CONVERGE, |s, i| ended(op, s, i));
    let took = restarted.elapsed();
    if op == Op::Backup {
        assert_backups_settled(&server, &id, case);
    }
    if matches!(op, Op::CreateReplica | Op::Promote) {
        // The seed backup is gone once the replica follows.
        let src = source.as_deref().expect("the first instance");
        let seeds: Vec<_> = [src, id.as_str()]
            .iter()
            .flat_map(|i| backups_of(&server, i))
            .collect();
        assert!(seeds.is_empty(), "{case}: seed backups left: {seeds:?}");
    }
    if op == Op::Delete {
        assert_gone(&server, &id, case);
    } else {
        // A restored instance has the user of its backup's source (none was given at its create); a replica's
        // users are its source's.
        assert_user(&server, &id, case);
        clean_up(&server, op, source.as_deref(), Some(&id), case);
    }
    let _ = server.stop();
    Some(took)
}

/// Deletes what a case made, in the order its relations allow, and checks nothing is left: a restore's source
/// and a promoted case's old source (now a replica) first, a replica before its source.
fn clean_up(server: &AllInOne, op: Op, first: Option<&str>, watched: Option<&str>, case: &Case) {
    let order: Vec<&str> = if op == Op::CreateReplica {
        watched.into_iter().chain(first).collect()
    } else {
        first.into_iter().chain(watched).collect()
    };
    for (n, id) in order.iter().enumerate() {
        if n + 1 == order.len() {
            delete_and_check_clean(server, id, case);
        } else {
            delete_only(server, id, case);
        }
    }
}

struct Tally {
    cases: usize,
    longest: (Duration, String),
}

impl Tally {
    fn record(&mut self, case: &Case, took: Duration) {
        eprintln!("converged in {took:>6.2?}: {case}");
        self.cases += 1;
        if took > self.longest.0 {
            self.longest = (took, case.to_string());
        }
    }
}

#[test]
fn every_kill_point_converges_after_a_restart() {
    let _lock = engines_lock();
    let started = Instant::now();
    let mut tally = Tally {
        cases: 0,
        longest: (Duration::ZERO, String::new()),
    };
    if full_sweep() {
        for op in [
            Op::Create,
            Op::Delete,
            Op::ResizeFlavor,
            Op::ResizeVolume,
            Op::Restart,
            Op::Upgrade,
            Op::Migrate,
            Op::Rebuild,
            Op::Backup,
            Op::Restore,
            Op::PitRestore,
            Op::CreateReplica,
            Op::Promote,
        ] {
            for ds in ENGINES {
                if matches!(op, Op::Backup | Op::Restore) && !BACKUP_ENGINES.contains(&ds) {
                    continue;
                }
                if op == Op::PitRestore && !PIT_ENGINES.contains(&ds) {
                    continue;
                }
                let guest_points: Vec<String> = match op {
                    Op::Create => PREPARE_POINTS
                        .iter()
                        .map(|p| format!("prepare:{p}"))
                        .collect(),
                    Op::Backup => backup_points(ds).iter().map(|p| p.to_string()).collect(),
                    Op::Restore => restore_points(ds)
                        .iter()
                        .map(|p| p.to_string())
                        .chain(PREPARE_POINTS.iter().map(|p| format!("prepare:{p}")))
                        .collect(),
                    Op::PitRestore => pit_restore_points(ds)
                        .iter()
                        .map(|p| p.to_string())
                        .collect(),
                    _ => Vec::new(),
                };
                let points = guest_points.into_iter().map(|p| (POINT, p));
                for kill in points {
                    let case = Case { ds, op, kill };
                    if selected(&case) {
                        let took = run(&case).unwrap_or_else(|| panic!("{case}: not reached"));
                        tally.record(&case, took);
                    }
                }
                for n in 1..=MAX_JOURNAL_WRITES {
                    let case = Case {
                        ds,
                        op,
                        kill: journal(n),
                    };
                    if !selected(&case) {
                        continue;
                    }
                    match run(&case) {
                        Some(took) => tally.record(&case, took),
                        None => {
                            eprintln!("{op:?} on {ds}: ends before journal write {n}");
                            break;
                        }
                    }
                }
            }
        }
    } else {
        for case in ci_cases().into_iter().filter(selected) {
            let took =
                run(&case).unwrap_or_else(|| panic!("{case}: the kill point was never reached"));
            tally.record(&case, took);
        }
    }
    eprintln!(
        "kill sweep: {} cases, all converged, longest {:.2?} ({}), whole sweep {:.0?}",
        tally.cases,
        tally.longest.0,
        tally.longest.1,
        started.elapsed()
    );
}
