//! Backups and restore through the real `openstack` CLI against the all-in-one server on real engines (MariaDB
//! serving `mysql` and `mariadb`): write data, full backup COMPLETED, write more, incremental COMPLETED with the
//! full as parent, write more, restore the incremental to a new instance (exactly the data of the incremental,
//! the source's user logs in), list, list by instance, delete of the full removes its incremental too.

mod api_support;

use std::time::{Duration, Instant};

use api_support::{
    app_execute, app_i64, get_json, http_endpoint, logs_in, wait_status, AllInOne, Engine,
    OpenStackCli, APP_DB, APP_PASSWORD, APP_USER,
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

fn walk(server: &AllInOne, cli: &mut OpenStackCli, rt: &tokio::runtime::Runtime, ds: &str) {
    let engine = Engine::of(ds);
    let version = cli
        .ok(&["datastore", "version", "list", ds, "-f", "json"])
        .json()[0]["Name"]
        .as_str()
        .expect("a version")
        .to_string();
    let user_arg = format!("{APP_USER}:{APP_PASSWORD}");
    let src = cli
        .ok(&[
            "database",
            "instance",
            "create",
            &format!("src-{ds}"),
            "--flavor",
            "1",
            "--size",
            "2",
            "--datastore",
            ds,
            "--datastore-version",
            &version,
            "--databases",
            APP_DB,
            "--users",
            &user_arg,
            "-f",
            "json",
        ])
        .json()["id"]
        .as_str()
        .expect("an id")
        .to_string();
    wait_status(&server.base, TENANT, &src, "ACTIVE", SETTLE);
    let at = http_endpoint(&instance_view(&server.base, &src));
    rt.block_on(app_execute(
        engine,
        at,
        &[
            "CREATE TABLE items (n BIGINT PRIMARY KEY)",
            "INSERT INTO items VALUES (1), (2)",
        ],
    ));

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

    // Incremental on top of it.
    rt.block_on(app_execute(engine, at, &["INSERT INTO items VALUES (3)"]));
    let inc = cli
        .ok(&[
            "database",
            "backup",
            "create",
            &format!("inc-{ds}"),
            "--instance",
            &src,
            "--incremental",
            "-f",
            "json",
        ])
        .json();
    let inc_id = inc["id"].as_str().expect("backup id").to_string();
    let inc = wait_backup(cli, &inc_id, "COMPLETED");
    assert_eq!(inc["parent_id"].as_str(), Some(full_id.as_str()), "{inc}");
    wait_status(&server.base, TENANT, &src, "ACTIVE", SETTLE);
    rt.block_on(app_execute(engine, at, &["INSERT INTO items VALUES (4)"]));

    // Lists.
    let all = cli.ok(&["database", "backup", "list", "-f", "json"]).json();
    let ids: Vec<&str> = all
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|b| b["ID"].as_str())
        .collect();
    assert!(
        ids.contains(&full_id.as_str()) && ids.contains(&inc_id.as_str()),
        "{all}"
    );
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
    assert_eq!(of_src.as_array().map(Vec::len), Some(2), "{of_src}");

    // Restore the incremental to a new instance: rows 1-3, not 4; the source's user logs in.
    let copy = cli
        .ok(&[
            "database",
            "instance",
            "create",
            &format!("copy-{ds}"),
            "--flavor",
            "1",
            "--size",
            "2",
            "--datastore",
            ds,
            "--datastore-version",
            &version,
            "--backup",
            &inc_id,
            "-f",
            "json",
        ])
        .json()["id"]
        .as_str()
        .expect("an id")
        .to_string();
    wait_status(&server.base, TENANT, &copy, "ACTIVE", SETTLE);
    let copy_at = http_endpoint(&instance_view(&server.base, &copy));
    assert_ne!(copy_at, at, "the copy has an address of its own");
    assert_eq!(
        rt.block_on(app_i64(engine, copy_at, "SELECT COUNT(*) FROM items")),
        Some(3)
    );
    assert_eq!(
        rt.block_on(app_i64(engine, copy_at, "SELECT MAX(n) FROM items")),
        Some(3)
    );
    rt.block_on(logs_in(engine, copy_at, APP_USER, APP_PASSWORD, APP_DB))
        .unwrap_or_else(|e| panic!("the source's user logs in on the copy: {e}"));
    assert_eq!(
        rt.block_on(app_i64(engine, at, "SELECT COUNT(*) FROM items")),
        Some(4)
    );

    // Deleting the full backup deletes its incremental too.
    cli.ok(&["database", "backup", "delete", &full_id]);
    for id in [&full_id, &inc_id] {
        let out = cli.run(&["database", "backup", "show", id]);
        assert_ne!(
            out.code, 0,
            "backup {id} is still shown after its parent's delete"
        );
    }
    cli.ok(&["database", "instance", "delete", &copy]);
    cli.ok(&["database", "instance", "delete", &src]);
    wait_status(&server.base, TENANT, &copy, "GONE", SETTLE);
    wait_status(&server.base, TENANT, &src, "GONE", SETTLE);
}

#[test]
fn backups_through_the_openstack_cli_on_real_engines() {
    let server = AllInOne::start(&[]);
    let endpoint = format!("{}/v1.0/{TENANT}", server.base);
    let mut cli = OpenStackCli::start(&endpoint);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for ds in ["mysql", "mariadb"] {
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
