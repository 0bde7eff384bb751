//! The seed's literal legacy `trove` replica commands, with a real Keystone (installed from PyPI into a cached venv,
//! as `tests/api_keystone.rs` sets it up) in front of the all-in-one (`--auth keystone`, the database service and
//! its endpoints in Keystone's catalog): `trove create vm2 2 --size 3 --datastore mysql --replica_of vm1` (the legacy
//! client always sends a flavor and a size: accepted because they are the source's), `promote-to-replica-source`,
//! `eject-replica-source` (refused while the source's guest reports, as upstream; accepted once the source's host is
//! gone and its heartbeat expired, with automatic failover turned off for the deployment, `TROVE_CORE__AUTO_FAILOVER`:
//! otherwise a dead source is failed over on its own, see `tests/replication_cli.rs`) and `detach-replica` (of the
//! ejected source, when its host is back). The legacy commands run on
//! python-troveclient 5.0.0, the last release whose legacy shell can detach: 5.1 renamed `Instances.edit` to
//! `update` without changing the shell's `detach-replica` / `update --detach_replica_source`, which since fail in the
//! client before sending anything (against any server).

mod api_support;

use std::process::Command;
use std::time::{Duration, Instant};

use api_support::{venv, AllInOne, Keystone};
use serde_json::{json, Value};

const SETTLE: Duration = Duration::from_secs(180);

/// The legacy client: the last python-troveclient whose `trove detach-replica` works.
const LEGACY_CLIENT: &str = "python-troveclient==5.0.0";

/// Runs the legacy `trove <args>` as Keystone's admin; answers (exit code, stdout, stderr).
fn trove(k: &Keystone, args: &[&str]) -> (i32, String, String) {
    let venv = venv("trove-legacy", &[LEGACY_CLIENT]);
    let out = Command::new(venv.join("bin").join("trove"))
        .args(args)
        .env_remove("OS_CLOUD")
        .env("OS_AUTH_URL", &k.url)
        .env("OS_USERNAME", "admin")
        .env("OS_PASSWORD", &k.admin_password)
        .env("OS_PROJECT_NAME", "admin")
        .env("OS_USER_DOMAIN_NAME", "Default")
        .env("OS_PROJECT_DOMAIN_NAME", "Default")
        .env("OS_REGION_NAME", "RegionOne")
        .output()
        .expect("run trove");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn trove_ok(k: &Keystone, args: &[&str]) -> String {
    let (code, out, err) = trove(k, args);
    assert_eq!(code, 0, "trove {}:\n{out}\n{err}", args.join(" "));
    out
}

/// A field of `trove show NAME`'s table.
fn field(k: &Keystone, name: &str, key: &str) -> Option<String> {
    let out = trove_ok(k, &["show", name]);
    out.lines().find_map(|l| {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        (cells.len() >= 3 && cells[1] == key).then(|| cells[2].to_string())
    })
}

fn wait_active(k: &Keystone, name: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let status = field(k, name, "status");
        if status.as_deref() == Some("ACTIVE") {
            return;
        }
        assert_ne!(status.as_deref(), Some("ERROR"), "{name} failed");
        assert!(Instant::now() < deadline, "{name} not ACTIVE: {status:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Puts the database service and its endpoints (`BASE/v1.0/$(tenant_id)s`) into Keystone's catalog.
fn register(k: &Keystone, base: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let http = reqwest::Client::new();
        let login = json!({ "auth": {
            "identity": { "methods": ["password"], "password": { "user": {
                "name": "admin", "domain": { "name": "Default" }, "password": k.admin_password } } },
            "scope": { "project": { "name": "admin", "domain": { "name": "Default" } } }
        }});
        let r = http
            .post(format!("{}/auth/tokens", k.url))
            .json(&login)
            .send()
            .await
            .expect("login");
        let token = r
            .headers()
            .get("x-subject-token")
            .expect("token")
            .to_str()
            .expect("ascii")
            .to_string();
        let post = |path: &str, body: Value| {
            let (http, token, url) = (http.clone(), token.clone(), k.url.clone());
            let path = path.to_string();
            async move {
                let r = http
                    .post(format!("{url}{path}"))
                    .header("X-Auth-Token", token)
                    .json(&body)
                    .send()
                    .await
                    .expect("keystone call");
                assert!(r.status().is_success(), "POST {path}: {}", r.status());
                r.json::<Value>().await.expect("json")
            }
        };
        let svc = post(
            "/services",
            json!({"service": {"name": "trove", "type": "database", "enabled": true}}),
        )
        .await;
        let sid = svc["service"]["id"].as_str().expect("service id").to_string();
        for interface in ["public", "internal", "admin"] {
            post(
                "/endpoints",
                json!({"endpoint": {"service_id": sid, "interface": interface, "region_id": "RegionOne",
                    "url": format!("{base}/v1.0/$(tenant_id)s"), "enabled": true}}),
            )
            .await;
        }
    });
}

/// How long a silent guest's heartbeat counts as current in this test (upstream waits 90 s before an eject).
const HEARTBEAT_EXPIRY: &str = "8";

/// The all-in-one in front of Keystone on `port` (kept across restarts: it is in Keystone's catalog), with
/// automatic failover off (upstream's manual eject) and a short heartbeat expiry, and `hosts` besides `local`.
fn start_server(k: &Keystone, state: tempfile::TempDir, port: u16, hosts: &[&str]) -> AllInOne {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--listen",
        listen.as_str(),
        "--auth",
        "keystone",
        "--keystone-url",
        &k.url,
        "--keystone-user",
        "admin",
        "--keystone-project",
        "admin",
        "--keystone-password",
        &k.admin_password,
    ];
    for h in hosts {
        args.extend(["--host", h]);
    }
    AllInOne::start_env(
        state,
        &args,
        &[
            ("TROVE_CORE__AUTO_FAILOVER", "false"),
            ("TROVE_CORE__AGENT_HEARTBEAT_EXPIRY", HEARTBEAT_EXPIRY),
        ],
    )
}

#[test]
fn the_seeds_legacy_trove_replica_commands_work_with_a_real_keystone() {
    let k = Keystone::start();
    let port = api_support::free_port();
    let server = start_server(&k, api_support::engine_state_dir(), port, &["h2"]);
    register(&k, &server.base);

    trove_ok(
        &k,
        &["create", "vm1", "2", "--size", "3", "--datastore", "mysql"],
    );
    wait_active(&k, "vm1");
    let vm1 = field(&k, "vm1", "id").expect("vm1 id");
    // The seed's literal command (placed on host h2, which later goes away).
    trove_ok(
        &k,
        &[
            "create",
            "vm2",
            "2",
            "--size",
            "3",
            "--datastore",
            "mysql",
            "--replica_of",
            "vm1",
            "--availability_zone",
            "h2",
        ],
    );
    wait_active(&k, "vm2");
    let vm2 = field(&k, "vm2", "id").expect("vm2 id");
    assert_eq!(
        field(&k, "vm2", "replica_of").as_deref(),
        Some(vm1.as_str())
    );
    assert_eq!(field(&k, "vm1", "replicas").as_deref(), Some(vm2.as_str()));
    // A flavor that is not the source's is refused, naming both.
    let (code, _, err) = trove(
        &k,
        &[
            "create",
            "vm3",
            "1",
            "--size",
            "3",
            "--datastore",
            "mysql",
            "--replica_of",
            "vm1",
        ],
    );
    assert_ne!(code, 0, "a replica with another flavor was accepted");
    assert!(
        err.contains("flavorRef 1") && err.contains("flavor 2"),
        "{err}"
    );

    trove_ok(&k, &["promote-to-replica-source", "vm2"]);
    wait_active(&k, "vm2");
    wait_active(&k, "vm1");
    assert_eq!(
        field(&k, "vm1", "replica_of").as_deref(),
        Some(vm2.as_str())
    );
    assert_eq!(field(&k, "vm2", "replica_of"), None);

    // A source whose guest reports is not ejected (upstream's rule).
    let (code, _, err) = trove(&k, &["eject-replica-source", "vm2"]);
    assert_ne!(code, 0, "a live source was ejected");
    assert!(err.contains("current heartbeat"), "{err}");

    // The source's host is gone: the control plane comes back without h2, so vm2's guest never reports again.
    // Once its heartbeat expired, the eject is accepted and vm1 becomes the source.
    let (_, state) = server.stop();
    let server = start_server(&k, state, port, &[]);
    let deadline = Instant::now() + SETTLE;
    loop {
        let (code, _, err) = trove(&k, &["eject-replica-source", "vm2"]);
        if code == 0 {
            break;
        }
        assert!(err.contains("current heartbeat"), "{err}");
        assert!(Instant::now() < deadline, "vm2 was never ejected: {err}");
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_active(&k, "vm1");
    assert_eq!(field(&k, "vm1", "replica_of"), None, "vm1 is the source");
    // The old source is recorded as vm1's replica (to be detached or deleted when it is back).
    assert_eq!(
        field(&k, "vm2", "replica_of").as_deref(),
        Some(vm1.as_str())
    );

    // h2 is back: vm2's guest reports again; detach makes it stand alone.
    let (_, state) = server.stop();
    let _server = start_server(&k, state, port, &["h2"]);
    // The server reads ACTIVE at once; the guest's first report makes the instance HEALTHY again.
    let deadline = Instant::now() + SETTLE;
    while field(&k, "vm2", "operating_status").as_deref() != Some("HEALTHY") {
        assert!(
            Instant::now() < deadline,
            "vm2's guest does not report after h2 came back"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    trove_ok(&k, &["detach-replica", "vm2"]);
    wait_active(&k, "vm2");
    assert_eq!(field(&k, "vm2", "replica_of"), None);
    assert_eq!(field(&k, "vm1", "replicas"), None);

    for name in ["vm1", "vm2"] {
        trove_ok(&k, &["delete", name]);
    }
    let deadline = Instant::now() + SETTLE;
    while trove(&k, &["show", "vm2"]).0 == 0 || trove(&k, &["show", "vm1"]).0 == 0 {
        assert!(Instant::now() < deadline, "the instances are not deleted");
        std::thread::sleep(Duration::from_millis(500));
    }
}
