//! Issue 16's differences from upstream Trove, each as a client written for upstream sees it: through the HTTP
//! API of the all-in-one process, with Keystone-style roles (the token-file authenticator: members and an admin
//! of their own projects), on the REAL engines.
//!
//! 1. An admin reaches a member's instance through the project-scoped routes (show, delete); a member of another
//!    project still gets 404.
//! 2. Root disable shows: `GET .../root` answers false afterwards, and root can no longer log in.
//! 3. PostgreSQL's root is a superuser named `root`, which logs in.
//! 4. Attach a group with a parameter that needs a restart, then restart at once: the restart is refused with
//!    upstream's 422 while the apply runs, shows REBOOT once taken, and ends HEALTHY with the value applied and
//!    no RESTART_REQUIRED.
//! 5. Every instance (MariaDB, PostgreSQL, Redis) answers on its own address (`ip`) with the engine's standard
//!    port, as the user created through the API, while the host's own servers on 127.0.0.1 keep running and do
//!    not know that user.

mod api_support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use api_support::{
    assert_own_address, engine_state_dir, engines_lock, http_endpoint, listening, logs_in,
    pid_listening_on, AllInOne, Engine, HttpClient, KillGuard, SqlConn, APP_DB, APP_PASSWORD,
    APP_USER,
};

/// How long any single wait may take (generous: the machine is shared and loaded).
const WAIT: Duration = Duration::from_secs(90);

const TOKENS: &str = "\
# token     project  user   roles
tok-member  p1       alice  member
tok-other   p2       carol  member
tok-admin   ops      boss   admin,member
";

fn healthy(i: &Value) -> bool {
    (i["status"] == "ACTIVE" || i["status"] == "HEALTHY") && i["operating_status"] == "HEALTHY"
}

/// Whether the app user logs in on `at` (its database for SQL, PING for Redis).
async fn app_reaches(k: Engine, at: SocketAddr) -> Result<(), String> {
    logs_in(k, at, APP_USER, APP_PASSWORD, APP_DB).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_clients_find_what_they_expect() {
    let lock = tokio::task::spawn_blocking(engines_lock)
        .await
        .expect("lock task");
    let files = tempfile::tempdir().expect("tempdir");
    let tokens = files.path().join("tokens");
    std::fs::write(&tokens, TOKENS).expect("token file");
    let state = engine_state_dir();
    let _guard = KillGuard(state.path().to_path_buf());
    let host_servers: Vec<(Engine, SocketAddr)> = [Engine::Mysql, Engine::Postgres, Engine::Redis]
        .into_iter()
        .map(|k| (k, SocketAddr::from(([127, 0, 0, 1], k.standard_port()))))
        .filter(|(_, host)| listening(*host))
        .collect();
    // What is checked against the host's own servers depends on which run here (on the project's machines: all
    // three); the instances' own addresses are checked either way.
    eprintln!("the host's own servers: {host_servers:?}");
    let tokens_arg = tokens.to_str().expect("utf-8 path").to_string();
    let server = tokio::task::spawn_blocking(move || {
        AllInOne::start_in(
            state,
            &["--auth", "token-file", "--token-file", &tokens_arg],
        )
    })
    .await
    .expect("start task");
    let member = HttpClient::new(format!("{}/v1.0/p1", server.base), "tok-member");
    let other = HttpClient::new(format!("{}/v1.0/p2", server.base), "tok-other");
    let admin = HttpClient::new(format!("{}/v1.0/ops", server.base), "tok-admin");

    // 5. One instance per engine, with the app user (and database) given at create, as a member.
    let mut instances = Vec::new();
    for ds in ["mariadb", "postgresql", "redis"] {
        let k = Engine::of(ds);
        let mut body = json!({"instance": {
            "name": format!("compat-{ds}"),
            "flavorRef": "6",
            "volume": {"size": 1},
            "datastore": {"type": ds},
            "users": [{"name": APP_USER, "password": APP_PASSWORD}],
        }});
        if k != Engine::Redis {
            body["instance"]["databases"] = json!([{ "name": APP_DB }]);
            body["instance"]["users"][0]["databases"] = json!([{ "name": APP_DB }]);
        }
        let (s, created) = member.send("POST", "/instances", Some(&body)).await;
        assert_eq!(s, 200, "create {ds}: {created}");
        let id = created["instance"]["id"].as_str().expect("id").to_string();
        instances.push((ds, k, id));
    }
    let mut endpoints = Vec::new();
    for (ds, k, id) in &instances {
        let inst = member
            .wait_instance_where(&format!("/instances/{id}"), "HEALTHY", WAIT, healthy)
            .await;
        let at = http_endpoint(&inst);
        assert_own_address(*k, at);
        app_reaches(*k, at)
            .await
            .unwrap_or_else(|e| panic!("{ds}: the API-created user on {at}: {e}"));
        endpoints.push(at);
    }
    for (k, host) in &host_servers {
        assert!(listening(*host), "the host's server on {host} stopped");
        let holder = pid_listening_on(*host);
        for at in &endpoints {
            assert_ne!(
                pid_listening_on(*at),
                holder,
                "{at} is served by the host's server on {host}"
            );
        }
        assert!(
            app_reaches(*k, *host).await.is_err(),
            "the host's server on {host} accepts the API-created user"
        );
    }

    // 1. Another project's member does not see the instances; the admin does, through its own project's routes.
    let (_, k_pg, pg) = &instances[1];
    assert_eq!(*k_pg, Engine::Postgres);
    let pg_at = endpoints[1];
    let (s, b) = other.send("GET", &format!("/instances/{pg}"), None).await;
    assert_eq!(s, 404, "a member of another project: {b}");
    let (s, b) = admin.send("GET", &format!("/instances/{pg}"), None).await;
    assert_eq!(s, 200, "the admin shows a member's instance: {b}");
    assert_eq!(b["instance"]["id"], pg.as_str());

    // 3. PostgreSQL root is a superuser named root, and it logs in.
    let (s, root) = member
        .send("POST", &format!("/instances/{pg}/root"), None)
        .await;
    assert_eq!(s, 200, "root enable: {root}");
    assert_eq!(root["user"]["name"], "root", "{root}");
    let root_pw = root["user"]["password"]
        .as_str()
        .expect("root password")
        .to_string();
    let mut c = SqlConn::connect(Engine::Postgres, pg_at, "root", &root_pw, "postgres")
        .await
        .unwrap_or_else(|e| panic!("root logs in on {pg_at}: {e}"));
    let superuser = c
        .fetch_text("SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user")
        .await
        .expect("rolsuper");
    assert_eq!(superuser, "true", "root is a superuser");
    c.close().await;
    let (s, b) = member
        .send("GET", &format!("/instances/{pg}/root"), None)
        .await;
    assert_eq!((s, &b["rootEnabled"]), (200, &json!(true)), "{b}");

    // 2. Root disable shows false, and root no longer logs in.
    let (s, b) = member
        .send("DELETE", &format!("/instances/{pg}/root"), None)
        .await;
    assert!(s == 204 || s == 200, "root disable: {s} {b}");
    let (s, b) = member
        .send("GET", &format!("/instances/{pg}/root"), None)
        .await;
    assert_eq!((s, &b["rootEnabled"]), (200, &json!(false)), "{b}");
    assert!(
        SqlConn::connect(Engine::Postgres, pg_at, "root", &root_pw, "postgres")
            .await
            .is_err(),
        "a disabled root still logs in"
    );

    // 4. Attach a group whose parameter needs a restart, then restart at once.
    let (s, g) = member
        .send(
            "POST",
            "/configurations",
            Some(&json!({"configuration": {
                "name": "compat-restart",
                "datastore": {"type": "postgresql"},
                "values": {"max_connections": 77},
            }})),
        )
        .await;
    assert_eq!(s, 200, "group create: {g}");
    let gid = g["configuration"]["id"].as_str().expect("group id");
    let (s, b) = member
        .send(
            "PUT",
            &format!("/instances/{pg}"),
            Some(&json!({"instance": {"configuration": gid}})),
        )
        .await;
    assert_eq!(s, 202, "attach: {b}");
    let mut refusals = 0;
    loop {
        let (s, b) = member
            .send(
                "POST",
                &format!("/instances/{pg}/action"),
                Some(&json!({"restart": {}})),
            )
            .await;
        if s == 202 {
            break;
        }
        assert_eq!(s, 422, "restart during the apply: {b}");
        refusals += 1;
        assert!(refusals < 1200, "the apply never ended: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("restart refused {refusals} time(s) while the apply ran");
    let (_, shown) = member.send("GET", &format!("/instances/{pg}"), None).await;
    assert_eq!(
        shown["instance"]["status"], "REBOOT",
        "the restart shows: {shown}"
    );
    let inst = member
        .wait_instance_where(
            &format!("/instances/{pg}"),
            "HEALTHY after attach + restart",
            WAIT,
            healthy,
        )
        .await;
    assert_ne!(inst["instance"]["status"], "RESTART_REQUIRED", "{inst}");
    let mut c = SqlConn::connect(Engine::Postgres, pg_at, APP_USER, APP_PASSWORD, APP_DB)
        .await
        .expect("app connects after the restart");
    assert_eq!(
        c.fetch_text("SHOW max_connections").await.expect("show"),
        "77",
        "the group's value runs"
    );
    c.close().await;

    // 1. The admin deletes the member's instances through its own project's routes.
    for (ds, _, id) in &instances {
        let (s, b) = admin
            .send("DELETE", &format!("/instances/{id}"), None)
            .await;
        assert_eq!(s, 202, "{ds}: the admin deletes it: {b}");
    }
    for (ds, _, id) in &instances {
        api_support::eventually(&format!("{ds} is deleted"), WAIT, || async {
            match member.send("GET", &format!("/instances/{id}"), None).await {
                (404, _) => Ok(()),
                (s, b) => Err(format!("{s} {}", b["instance"]["status"])),
            }
        })
        .await;
    }
    for at in &endpoints {
        api_support::eventually("the engine stops", WAIT, || async {
            if listening(*at) {
                Err(format!("{at} still answers"))
            } else {
                Ok(())
            }
        })
        .await;
    }
    let (_, state) = tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stop task");
    drop(state);
    drop(lock);
}
