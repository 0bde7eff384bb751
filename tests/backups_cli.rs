//! Backups and restore through the real `openstack` CLI against the all-in-one server on real engines (MariaDB
//! serving `mysql` and `mariadb`, PostgreSQL, Redis): write data, full backup COMPLETED, write twice more (a moment
//! between the two writes noted), incremental COMPLETED with the full as parent (Redis takes full backups only and
//! refuses `--incremental`), write more, restore the latest backup to a new instance (exactly its data, the
//! source's user logs in), a point-in-time restore to the noted moment (the first of the two writes, not the
//! second; the extension `restorePoint.restore_time` over HTTP, the CLI has no option for it), list, list by
//! instance, delete of the full removes its incremental too.

mod api_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use api_support::{
    app_execute, app_i64, get_json, http_endpoint, logs_in, post_json, redis_connect, wait_status,
    AllInOne, Engine, OpenStackCli, APP_DB, APP_PASSWORD, APP_USER,
};
use serde_json::Value;

const TENANT: &str = "backup-tenant";
const SETTLE: Duration = Duration::from_secs(120);

/// Polls `openstack database backup show` until the backup's status is `want` (panics on FAILED or after a
/// while); answers the last view.
fn wait_backup(cli: &mut OpenStackCli, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + SETTLE;
    loop {
        let v = cli
            .ok(&["database", "backup", "show", id, "-f", "json"])
            .json();
        if v["status"] == want {
            return v;
        }
        assert_ne!(v["status"], "FAILED", "backup {id} failed: {v}");
        assert!(Instant::now() < deadline, "backup {id} not {want}: {v}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn instance_view(base: &str, id: &str) -> Value {
    let (s, v) = get_json(&format!("{base}/v1.0/{TENANT}/instances/{id}"));
    assert_eq!(s, 200, "{v}");
    v["instance"].clone()
}

/// Writes item `n` as the application user: a row of `items`, or a Redis key `item:<n>`.
async fn write(engine: Engine, at: SocketAddr, n: i64) {
    match engine {
        Engine::Redis => {
            let mut c = redis_connect(at, APP_USER, APP_PASSWORD)
                .await
                .expect("the user connects");
            let () = redis::cmd("SET")
                .arg(format!("item:{n}"))
                .arg(n)
                .query_async(&mut c)
                .await
                .expect("SET");
        }
        _ => {
            if n == 1 {
                app_execute(engine, at, &["CREATE TABLE items (n BIGINT PRIMARY KEY)"]).await;
            }
            app_execute(engine, at, &[&format!("INSERT INTO items VALUES ({n})")]).await;
        }
    }
}

/// How many items the instance holds, as the application user sees them.
async fn count(engine: Engine, at: SocketAddr) -> i64 {
    match engine {
        Engine::Redis => {
            let mut c = redis_connect(at, APP_USER, APP_PASSWORD)
                .await
                .expect("the user connects");
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("item:*")
                .query_async(&mut c)
                .await
                .expect("KEYS");
            keys.len() as i64
        }
        _ => app_i64(engine, at, "SELECT COUNT(*) FROM items")
            .await
            .unwrap_or_default(),
    }
}

fn create(cli: &mut OpenStackCli, ds: &str, version: &str, name: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "database",
        "instance",
        "create",
        name,
        "--flavor",
        "1",
        "--size",
        "2",
        "--datastore",
        ds,
        "--datastore-version",
        version,
        "-f",
        "json",
    ];
    args.extend(extra);
    cli.ok(&args).json()["id"]
        .as_str()
        .expect("an id")
        .to_string()
}

fn walk(server: &AllInOne, cli: &mut OpenStackCli, rt: &tokio::runtime::Runtime, ds: &str) {
    walk_with(server, cli, rt, ds, &|| usize::MAX);
}

/// [`walk`], checking after the backups that `objects()` (the new objects in the store; `usize::MAX`: not
/// checked) counts one per backup.
fn walk_with(
    server: &AllInOne,
    cli: &mut OpenStackCli,
    rt: &tokio::runtime::Runtime,
    ds: &str,
    objects: &dyn Fn() -> usize,
) {
    let engine = Engine::of(ds);
    let incremental = ds != "redis";
    let point_in_time = ds != "redis";
    let version = cli
        .ok(&["datastore", "version", "list", ds, "-f", "json"])
        .json()[0]["Name"]
        .as_str()
        .expect("a version")
        .to_string();
    let user_arg = format!("{APP_USER}:{APP_PASSWORD}");
    let mut extra = vec!["--users", user_arg.as_str()];
    if engine != Engine::Redis {
        extra.extend(["--databases", APP_DB]);
    }
    let src = create(cli, ds, &version, &format!("src-{ds}"), &extra);
    wait_status(&server.base, TENANT, &src, "ACTIVE", SETTLE);
    let at = http_endpoint(&instance_view(&server.base, &src));
    rt.block_on(write(engine, at, 1));
    rt.block_on(write(engine, at, 2));

    // Full backup.
    let full = cli
        .ok(&[
            "database",
            "backup",
            "create",
            &format!("full-{ds}"),
            "--instance",
            &src,
            "-f",
            "json",
        ])
        .json();
    let full_id = full["id"].as_str().expect("backup id").to_string();
    assert_eq!(full["status"], "NEW", "{full}");
    let full = wait_backup(cli, &full_id, "COMPLETED");
    assert!(full["size"].as_f64().is_some_and(|s| s > 0.0), "{full}");
    assert!(
        full["locationRef"].as_str().is_some_and(|l| !l.is_empty()),
        "{full}"
    );
    wait_status(&server.base, TENANT, &src, "ACTIVE", SETTLE);

    // Two writes with a moment between them (binary log times are whole seconds: a second either side), then an
    // incremental on top of the full backup (Redis refuses one).
    rt.block_on(write(engine, at, 3));
    std::thread::sleep(Duration::from_millis(1100));
    let between = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(1100));
    rt.block_on(write(engine, at, 4));
    let inc_name = format!("inc-{ds}");
    let inc_args = [
        "database",
        "backup",
        "create",
        &inc_name,
        "--instance",
        &src,
        "--incremental",
        "-f",
        "json",
    ];
    let (inc_id, expected) = if incremental {
        let inc = cli.ok(&inc_args).json();
        let inc_id = inc["id"].as_str().expect("backup id").to_string();
        let inc = wait_backup(cli, &inc_id, "COMPLETED");
        assert_eq!(inc["parent_id"].as_str(), Some(full_id.as_str()), "{inc}");
        wait_status(&server.base, TENANT, &src, "ACTIVE", SETTLE);
        (Some(inc_id), 4)
    } else {
        let out = cli.run(&inc_args);
        assert_ne!(out.code, 0, "{ds} refuses an incremental backup");
        assert!(
            out.stderr.contains("Incremental backups are not supported"),
            "{ds}: {}",
            out.stderr
        );
        (None, 2)
    };
    rt.block_on(write(engine, at, 5));

    let n = objects();
    if n != usize::MAX {
        // MariaDB's incremental carries its binary log archive as a second object.
        let per_incremental = if matches!(ds, "mysql" | "mariadb") {
            2
        } else {
            1
        };
        assert_eq!(
            n,
            1 + per_incremental * usize::from(inc_id.is_some()),
            "{ds}: the objects of the backups in the store"
        );
    }

    // Lists.
    let all = cli.ok(&["database", "backup", "list", "-f", "json"]).json();
    let ids: Vec<&str> = all
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|b| b["ID"].as_str())
        .collect();
    assert!(ids.contains(&full_id.as_str()), "{all}");
    if let Some(inc_id) = &inc_id {
        assert!(ids.contains(&inc_id.as_str()), "{all}");
    }
    let of_src = cli
        .ok(&[
            "database",
            "backup",
            "list",
            "--instance-id",
            &src,
            "-f",
            "json",
        ])
        .json();
    assert_eq!(
        of_src.as_array().map(Vec::len),
        Some(1 + usize::from(inc_id.is_some())),
        "{of_src}"
    );

    // Restore the latest backup to a new instance: exactly its items, not the later one; the source's user logs
    // in there.
    let latest = inc_id.clone().unwrap_or_else(|| full_id.clone());
    let copy = create(
        cli,
        ds,
        &version,
        &format!("copy-{ds}"),
        &["--backup", &latest],
    );
    wait_status(&server.base, TENANT, &copy, "ACTIVE", SETTLE);
    let copy_at = http_endpoint(&instance_view(&server.base, &copy));
    assert_ne!(copy_at, at, "the copy has an address of its own");
    assert_eq!(
        rt.block_on(count(engine, copy_at)),
        expected,
        "{ds}: items on the copy"
    );
    rt.block_on(logs_in(engine, copy_at, APP_USER, APP_PASSWORD, APP_DB))
        .unwrap_or_else(|e| panic!("{ds}: the source's user logs in on the copy: {e}"));
    assert_eq!(
        rt.block_on(count(engine, at)),
        5,
        "{ds}: items on the source"
    );

    // Point in time: the incremental's chain stopped at the moment between writes 3 and 4.
    let mut pit = None;
    if let (true, Some(inc_id)) = (point_in_time, &inc_id) {
        let body = serde_json::json!({"instance": {
            "name": format!("pit-{ds}"), "flavorRef": "1", "volume": {"size": 2},
            "datastore": {"type": ds, "version": version},
            "restorePoint": {"backupRef": inc_id, "restore_time": between.to_rfc3339()},
        }});
        let (s, v) = post_json(
            &format!("{}/v1.0/{TENANT}/instances", server.base),
            &body.to_string(),
        );
        assert_eq!(s, 200, "{ds}: point-in-time restore: {v}");
        let id = v["instance"]["id"].as_str().expect("an id").to_string();
        wait_status(&server.base, TENANT, &id, "ACTIVE", SETTLE);
        let pit_at = http_endpoint(&instance_view(&server.base, &id));
        assert_eq!(
            rt.block_on(count(engine, pit_at)),
            3,
            "{ds}: the point-in-time copy holds the write before the moment and not the one after"
        );
        // A moment before the full backup ended is refused, naming the window.
        let early = serde_json::json!({"instance": {
            "name": format!("early-{ds}"), "flavorRef": "1", "volume": {"size": 2},
            "datastore": {"type": ds, "version": version},
            "restorePoint": {"backupRef": inc_id, "restore_time": "2001-01-01T00:00:00Z"},
        }});
        let (s, v) = post_json(
            &format!("{}/v1.0/{TENANT}/instances", server.base),
            &early.to_string(),
        );
        assert_eq!(s, 400, "{v}");
        assert!(v.to_string().contains("outside what backup"), "{v}");
        pit = Some(id);
    }

    // Deleting the full backup deletes its incremental too.
    cli.ok(&["database", "backup", "delete", &full_id]);
    for id in std::iter::once(&full_id).chain(inc_id.iter()) {
        let out = cli.run(&["database", "backup", "show", id]);
        assert_ne!(
            out.code, 0,
            "backup {id} is still shown after its parent's delete"
        );
    }
    if let Some(pit) = &pit {
        cli.ok(&["database", "instance", "delete", pit]);
        wait_status(&server.base, TENANT, pit, "GONE", SETTLE);
    }
    cli.ok(&["database", "instance", "delete", &copy]);
    cli.ok(&["database", "instance", "delete", &src]);
    wait_status(&server.base, TENANT, &copy, "GONE", SETTLE);
    wait_status(&server.base, TENANT, &src, "GONE", SETTLE);
}

/// What `tests/support/swift.sh start DIR` printed (the private Swift `tests/run.sh` starts; started here when it
/// does not run yet): `url`, `auth_url`, `user`, `key`, `access_key`, `secret_key`, `region`.
fn swift() -> std::collections::HashMap<String, String> {
    let dir = std::env::var_os("TROVE_SWIFT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("swift"));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/swift.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .arg(&dir)
        .output()
        .expect("run swift.sh");
    assert!(
        out.status.success(),
        "Swift could not be started: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The keys of the objects under `database_backups/` in the remote store.
fn remote_objects(
    rt: &tokio::runtime::Runtime,
    store: &trove::core::ports::DynBackupStore,
) -> Vec<String> {
    rt.block_on(store.list("database_backups/"))
        .expect("list the store")
        .into_iter()
        .map(|o| o.key)
        .collect()
}

/// The same walk (MariaDB and PostgreSQL: full, incremental, restore, point-in-time restore, delete) with the
/// all-in-one keeping its backups in a real Swift, through the Swift API and through its S3 API; the objects are in
/// the store while the backups live and gone after their delete.
#[test]
fn backups_in_swift_and_through_its_s3_api() {
    use trove::backends::objstore::{S3BackupStore, S3Config, SwiftBackupStore, SwiftConfig};
    use trove::core::model::Secret;
    let e = swift();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for kind in ["swift", "s3"] {
        let (args, env, store): (
            Vec<String>,
            Vec<(&str, String)>,
            trove::core::ports::DynBackupStore,
        ) = if kind == "swift" {
            (
                vec![
                    "--backup-store".into(),
                    "swift".into(),
                    "--swift-auth-url".into(),
                    e["auth_url"].clone(),
                    "--swift-user".into(),
                    e["user"].clone(),
                ],
                vec![("TROVE_SWIFT_KEY", e["key"].clone())],
                std::sync::Arc::new(
                    SwiftBackupStore::new(SwiftConfig {
                        auth_url: e["auth_url"].clone(),
                        user: e["user"].clone(),
                        key: Secret::new(e["key"].clone()),
                        ..SwiftConfig::default()
                    })
                    .expect("swift store"),
                ),
            )
        } else {
            (
                vec![
                    "--backup-store".into(),
                    "s3".into(),
                    "--s3-endpoint".into(),
                    e["url"].clone(),
                    "--s3-region".into(),
                    e["region"].clone(),
                    "--s3-access-key".into(),
                    e["access_key"].clone(),
                ],
                vec![("TROVE_S3_SECRET_KEY", e["secret_key"].clone())],
                std::sync::Arc::new(
                    S3BackupStore::new(S3Config {
                        endpoint: e["url"].clone(),
                        region: e["region"].clone(),
                        access_key: e["access_key"].clone(),
                        secret_key: Secret::new(e["secret_key"].clone()),
                        ..S3Config::default()
                    })
                    .expect("s3 store"),
                ),
            )
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let server = AllInOne::start_env(api_support::engine_state_dir(), &args, &env);
        let mut cli = OpenStackCli::start(&format!("{}/v1.0/{TENANT}", server.base));
        // MariaDB (its incremental carries the binary log as a second object) and PostgreSQL (WAL).
        for ds in ["mariadb", "postgresql"] {
            let before = remote_objects(&rt, &store);
            let t = Instant::now();
            walk_with(&server, &mut cli, &rt, ds, &|| {
                let now = remote_objects(&rt, &store);
                now.into_iter().filter(|k| !before.contains(k)).count()
            });
            println!(
                "{kind}: {ds} backup walk in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            // The purge removes the deleted backups' objects from the store.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let left: Vec<String> = remote_objects(&rt, &store)
                    .into_iter()
                    .filter(|k| !before.contains(k))
                    .collect();
                if left.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{kind}: objects left after their backups were deleted: {left:?}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// A store that cannot be reached: the backup ends FAILED with a fault naming the endpoint, the instance is
/// ACTIVE again and takes the next action.
#[test]
fn a_backup_to_an_unreachable_store_fails_and_says_so() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{closed}/auth/v1.0");
    let key = api_support::probe("swift-key");
    let server = AllInOne::start_env(
        api_support::engine_state_dir(),
        &[
            "--backup-store",
            "swift",
            "--swift-auth-url",
            &url,
            "--swift-user",
            "t:u",
        ],
        &[("TROVE_SWIFT_KEY", key.as_str())],
    );
    let mut cli = OpenStackCli::start(&format!("{}/v1.0/{TENANT}", server.base));
    let version = cli
        .ok(&["datastore", "version", "list", "mariadb", "-f", "json"])
        .json()[0]["Name"]
        .as_str()
        .expect("a version")
        .to_string();
    let id = create(&mut cli, "mariadb", &version, "unreachable", &[]);
    wait_status(&server.base, TENANT, &id, "ACTIVE", SETTLE);
    let b = cli
        .ok(&[
            "database",
            "backup",
            "create",
            "b",
            "--instance",
            &id,
            "-f",
            "json",
        ])
        .json();
    let bid = b["id"].as_str().expect("backup id").to_string();
    let deadline = Instant::now() + SETTLE;
    let (s, failed) = loop {
        let (s, v) = get_json(&format!("{}/v1.0/{TENANT}/backups/{bid}", server.base));
        if v["backup"]["status"] == "FAILED" {
            break (s, v);
        }
        assert_ne!(v["backup"]["status"], "COMPLETED", "{v}");
        assert!(Instant::now() < deadline, "backup not FAILED: {v}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(s, 200);
    let fault = failed["backup"]["fault"].as_str().unwrap_or_default();
    assert!(
        fault.contains(&format!("127.0.0.1:{closed}")),
        "the fault names the store: {failed}"
    );
    assert!(!failed.to_string().contains(&key), "{failed}");
    wait_status(&server.base, TENANT, &id, "ACTIVE", SETTLE);
    cli.ok(&["database", "instance", "restart", &id]);
    // The store's key rests nowhere under the state directory (store, logs, engine files).
    let found = api_support::files_holding(server.state.path(), std::slice::from_ref(&key));
    assert!(found.is_empty(), "the Swift key rests in {found:?}");
}

#[test]
fn backups_through_the_openstack_cli_on_real_engines() {
    let server = AllInOne::start(&[]);
    let endpoint = format!("{}/v1.0/{TENANT}", server.base);
    let mut cli = OpenStackCli::start(&endpoint);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for ds in ["mysql", "mariadb", "postgresql", "redis"] {
        let t = Instant::now();
        walk(&server, &mut cli, &rt, ds);
        println!("{ds}: backup walk in {:.1} s", t.elapsed().as_secs_f64());
    }
    // The objects of the deleted backups are purged from the store (the task manager's purge).
    let objects = server.state.path().join("backups/database_backups");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<_> = std::fs::read_dir(&objects)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backup objects left after their backups were deleted: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
