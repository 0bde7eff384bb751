//! The real `openstack` CLI (python-openstackclient + python-troveclient) against the all-in-one server:
//! every command exits 0 and prints the fields a user relies on.
//!
//! The server uses its embedded defaults (SQLite in a temporary state dir, noauth, in-process guests running the
//! REAL engines found on the machine): the `mysql` datastore is served by a MariaDB process the test can reach.

mod api_support;

use std::time::Duration;

use api_support::{wait_status, AllInOne, OpenStackCli};
use serde_json::Value;

const TENANT: &str = "cli-tenant";
const SETTLE: Duration = Duration::from_secs(60);

fn names(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r[key].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn openstack_cli_drives_the_all_in_one_server() {
    let server = AllInOne::start(&[]);
    let endpoint = format!("{}/v1.0/{TENANT}", server.base);
    let mut cli = OpenStackCli::start(&endpoint);

    // --- catalogue
    let ds = cli.ok(&["datastore", "list", "-f", "json"]).json();
    assert!(
        names(&ds, "Name").contains(&"mysql".to_string()),
        "datastore list: {ds}"
    );
    let vs = cli
        .ok(&["datastore", "version", "list", "mysql", "-f", "json"])
        .json();
    // The registered version is the installed engine's own (e.g. 10.11 for MariaDB serving `mysql`).
    let version = names(&vs, "Name")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("datastore version list is empty: {vs}"));
    let fl = cli.ok(&["database", "flavor", "list", "-f", "json"]).json();
    assert!(
        names(&fl, "Name").contains(&"m1.small".to_string()),
        "flavor list: {fl}"
    );

    // --- instance create / list / show
    let created = cli
        .ok(&[
            "database",
            "instance",
            "create",
            "db1",
            "--flavor",
            "1",
            "--size",
            "2",
            "--datastore",
            "mysql",
            "--datastore-version",
            &version,
            "-f",
            "json",
        ])
        .json();
    assert_eq!(
        created["name"], "db1",
        "create prints the instance: {created}"
    );
    let id = created["id"]
        .as_str()
        .expect("create prints an id")
        .to_string();
    let listed = cli
        .ok(&["database", "instance", "list", "-f", "json"])
        .json();
    assert!(
        names(&listed, "ID").contains(&id),
        "instance list: {listed}"
    );
    wait_status(&server.base, TENANT, &id, "ACTIVE", SETTLE);
    let shown = cli
        .ok(&["database", "instance", "show", "db1", "-f", "json"])
        .json();
    assert_eq!(
        shown["id"],
        Value::String(id.clone()),
        "show by name: {shown}"
    );
    assert_eq!(shown["status"], "ACTIVE");
    assert_eq!(shown["operating_status"], "HEALTHY");
    assert_eq!(shown["datastore"], "mysql");
    assert_eq!(shown["volume"], 2);

    // --- databases
    cli.ok(&["database", "db", "create", "db1", "mydb"]);
    cli.ok(&["database", "db", "create", "db1", "otherdb"]);
    let dbs = cli
        .ok(&["database", "db", "list", "db1", "-f", "json"])
        .json();
    assert!(
        names(&dbs, "Name").contains(&"mydb".to_string()),
        "db list: {dbs}"
    );

    // --- users
    cli.ok(&[
        "database",
        "user",
        "create",
        "db1",
        "bob",
        "b0b-secret",
        "--databases",
        "mydb",
    ]);
    let users = cli
        .ok(&["database", "user", "list", "db1", "-f", "json"])
        .json();
    assert!(
        names(&users, "Name").contains(&"bob".to_string()),
        "user list: {users}"
    );
    let bob = cli
        .ok(&["database", "user", "show", "db1", "bob", "-f", "json"])
        .json();
    assert_eq!(bob["name"], "bob", "user show: {bob}");
    assert_eq!(bob["host"], "%");
    cli.ok(&[
        "database", "user", "grant", "access", "db1", "bob", "otherdb",
    ]);
    let access = cli
        .ok(&[
            "database", "user", "show", "access", "db1", "bob", "-f", "json",
        ])
        .json();
    let granted = names(&access, "Name");
    assert!(
        granted.contains(&"mydb".to_string()) && granted.contains(&"otherdb".to_string()),
        "access: {access}"
    );
    cli.ok(&[
        "database", "user", "revoke", "access", "db1", "bob", "otherdb",
    ]);
    let access = cli
        .ok(&[
            "database", "user", "show", "access", "db1", "bob", "-f", "json",
        ])
        .json();
    assert!(
        !names(&access, "Name").contains(&"otherdb".to_string()),
        "revoked: {access}"
    );
    cli.ok(&["database", "user", "delete", "db1", "bob"]);
    let users = cli
        .ok(&["database", "user", "list", "db1", "-f", "json"])
        .json();
    assert!(
        !names(&users, "Name").contains(&"bob".to_string()),
        "user deleted: {users}"
    );
    cli.ok(&["database", "db", "delete", "db1", "otherdb"]);
    let dbs = cli
        .ok(&["database", "db", "list", "db1", "-f", "json"])
        .json();
    assert!(
        !names(&dbs, "Name").contains(&"otherdb".to_string()),
        "db deleted: {dbs}"
    );

    // --- root
    let root = cli
        .ok(&["database", "root", "enable", "db1", "-f", "json"])
        .json();
    assert_eq!(root["name"], "root", "root enable: {root}");
    assert!(
        root["password"].as_str().is_some_and(|p| !p.is_empty()),
        "root password: {root}"
    );
    let root = cli
        .ok(&["database", "root", "show", "db1", "-f", "json"])
        .json();
    assert_eq!(root["is_root_enabled"], true, "root show: {root}");
    // Disabled, root shows as not enabled again (upstream marks the history deleted).
    cli.ok(&["database", "root", "disable", "db1"]);
    let root = cli
        .ok(&["database", "root", "show", "db1", "-f", "json"])
        .json();
    assert_eq!(
        root["is_root_enabled"], false,
        "root show after disable: {root}"
    );

    // --- configuration groups
    let cfg = cli
        .ok(&[
            "database",
            "configuration",
            "create",
            "cfg1",
            r#"{"max_connections": 200}"#,
            "--datastore",
            "mysql",
            "--datastore-version",
            &version,
            "-f",
            "json",
        ])
        .json();
    assert_eq!(cfg["name"], "cfg1", "configuration create: {cfg}");
    let cfg_id = cfg["id"].as_str().expect("configuration id").to_string();
    let cfgs = cli
        .ok(&["database", "configuration", "list", "-f", "json"])
        .json();
    assert!(
        names(&cfgs, "ID").contains(&cfg_id),
        "configuration list: {cfgs}"
    );
    let shown = cli
        .ok(&["database", "configuration", "show", &cfg_id, "-f", "json"])
        .json();
    assert!(
        shown["values"].to_string().contains("200"),
        "configuration show: {shown}"
    );
    cli.ok(&["database", "configuration", "delete", &cfg_id]);
    let cfgs = cli
        .ok(&["database", "configuration", "list", "-f", "json"])
        .json();
    assert!(
        !names(&cfgs, "ID").contains(&cfg_id),
        "configuration deleted: {cfgs}"
    );

    // --- backups (the full walk with restores is tests/backups_cli.rs): create answers NEW, the backup completes.
    let bk = cli
        .ok(&[
            "database",
            "backup",
            "create",
            "bk1",
            "--instance",
            "db1",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(bk["status"], "NEW", "backup create: {bk}");
    let bk_id = bk["id"].as_str().expect("backup id").to_string();
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let shown = cli
            .ok(&["database", "backup", "show", &bk_id, "-f", "json"])
            .json();
        if shown["status"] == "COMPLETED" {
            break;
        }
        assert_ne!(shown["status"], "FAILED", "backup: {shown}");
        assert!(std::time::Instant::now() < deadline, "backup: {shown}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let bks = cli.ok(&["database", "backup", "list", "-f", "json"]).json();
    assert_eq!(names(&bks, "ID"), vec![bk_id.clone()], "backup list: {bks}");
    wait_status(&server.base, TENANT, &id, "ACTIVE", SETTLE);
    cli.ok(&["database", "backup", "delete", &bk_id]);
    // --- backup strategies: where this instance's backups go
    let st = cli
        .ok(&[
            "database",
            "backup",
            "strategy",
            "create",
            "--instance-id",
            &id,
            "--swift-container",
            "cli_backups",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(
        st["swift_container"], "cli_backups",
        "strategy create: {st}"
    );
    assert_eq!(
        st["instance_id"],
        Value::String(id.clone()),
        "strategy create: {st}"
    );
    let sts = cli
        .ok(&["database", "backup", "strategy", "list", "-f", "json"])
        .json();
    assert_eq!(
        names(&sts, "Swift Container"),
        vec!["cli_backups".to_string()],
        "strategy list: {sts}"
    );
    cli.ok(&[
        "database",
        "backup",
        "strategy",
        "delete",
        "--instance-id",
        &id,
    ]);
    let sts = cli
        .ok(&["database", "backup", "strategy", "list", "-f", "json"])
        .json();
    assert_eq!(sts, Value::Array(vec![]), "strategy deleted: {sts}");
    // --- guest logs (MariaDB's general log, published to the deployment's object store)
    let logs = cli
        .ok(&["database", "log", "list", "db1", "-f", "json"])
        .json();
    let log_names = names(&logs, "Name");
    assert!(
        log_names.contains(&"general".to_string()) && log_names.contains(&"slow_query".to_string()),
        "log list: {logs}"
    );
    let on = cli
        .ok(&[
            "database", "log", "set", "db1", "general", "--enable", "-f", "json",
        ])
        .json();
    assert_ne!(on["status"], "Disabled", "log enable: {on}");
    cli.ok(&["database", "db", "list", "db1"]);
    let published = cli
        .ok(&[
            "database",
            "log",
            "set",
            "db1",
            "general",
            "--publish",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(
        published["container"], "database_logs",
        "log publish: {published}"
    );
    assert!(
        published["published"]
            .as_str()
            .and_then(|p| p.parse::<u64>().ok())
            > Some(0),
        "something was published: {published}"
    );
    let shown = cli
        .ok(&["database", "log", "show", "db1", "general", "-f", "json"])
        .json();
    assert_eq!(shown["name"], "general", "log show: {shown}");
    let off = cli
        .ok(&[
            "database",
            "log",
            "set",
            "db1",
            "general",
            "--discard",
            "--disable",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(
        (&off["status"], &off["published"]),
        (&Value::from("Disabled"), &Value::from("0")),
        "log discard + disable: {off}"
    );
    wait_status(&server.base, TENANT, &id, "ACTIVE", SETTLE);

    // --- actions
    cli.ok(&["database", "instance", "restart", "db1"]);
    wait_status(&server.base, TENANT, &id, "ACTIVE", SETTLE);
    cli.ok(&["database", "instance", "resize", "volume", "db1", "3"]);
    wait_status(&server.base, TENANT, &id, "ACTIVE", SETTLE);
    cli.ok(&["database", "instance", "resize", "flavor", "db1", "2"]);
    wait_status(&server.base, TENANT, &id, "ACTIVE", SETTLE);
    let shown = cli
        .ok(&["database", "instance", "show", "db1", "-f", "json"])
        .json();
    assert_eq!(shown["volume"], 3, "volume resized: {shown}");
    assert_eq!(shown["flavor"], "2", "flavor resized: {shown}");

    // --- errors reach the user as "message (HTTP N)"
    let missing = cli.run(&["database", "instance", "show", "no-such-instance"]);
    assert_ne!(missing.code, 0, "showing a missing instance fails");

    // --- delete
    cli.ok(&["database", "instance", "delete", "db1"]);
    wait_status(&server.base, TENANT, &id, "GONE", SETTLE);
    let listed = cli
        .ok(&["database", "instance", "list", "-f", "json"])
        .json();
    assert!(
        !names(&listed, "ID").contains(&id),
        "deleted instance still listed: {listed}"
    );
}
