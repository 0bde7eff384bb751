//! Issue 5's "Done when" lines through the API on the REAL engines (MariaDB for `mysql` and `mariadb`,
//! PostgreSQL, Redis), with the embedded deployment (`trove::embedded::Embedded`: SQLite store in a state
//! directory, in-process bus, local-process compute, in-process guest agents) or the all-in-one binary where a
//! restart of the server is the point.
//!
//! Per engine, one test drives the whole life of an instance: create → ACTIVE/HEALTHY; a database and a user;
//! the engine's own client library connects AS THAT USER at the address and port the view shows, writes and
//! reads; grant / revoke take effect (Redis: databases and grants are 422, deleting the user takes its access
//! away); `kill -9` of the engine shows as SHUTDOWN (crashed) within seconds and the supervisor brings it back to
//! HEALTHY with the data; restart keeps the data; resize volume shows the new size; resize flavor changes the
//! memory setting the engine reports; delete removes the process, the port and the files.
//!
//! Addresses: every instance gets a loopback address of its own from the local compute's default pool and its
//! engine listens there on the standard port; the tests connect where the view says. They still take a
//! cross-process file lock and run one at a time (real engines on a small machine).

mod api_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use trove::core::api::{ApiService, InstanceView, UserRef};
use trove::core::model::{DatabaseSpec, Secret, UserSpec};
use trove::core::state::ServiceStatus;

use api_support::{
    alive, assert_own_address, endpoint, engine_instance, engine_state_dir, engines_lock,
    engines_under, eventually, http_endpoint, idle_healthy, listening, pid_listening_on,
    redis_connect, step, t1, wait_engine_gone, Engine, EngineEnv, HttpClient, KillGuard, SqlConn,
};

/// How long any single wait may take (generous: the machine is shared and loaded).
const WAIT: Duration = Duration::from_secs(60);

/// Polls the instance (as `t1`) until `pred` holds (the shared helper with this file's tenant).
async fn wait_view(
    api: &ApiService,
    id: Uuid,
    what: &str,
    within: Duration,
    pred: impl Fn(&InstanceView) -> bool,
) -> InstanceView {
    api_support::wait_view(api, &t1(), id, what, within, pred).await
}

fn healthy(v: &InstanceView) -> bool {
    v.status == "HEALTHY" || (v.status == "ACTIVE" && v.operating_status == "HEALTHY")
}

// ------------------------------------------------------------------ clients

/// Connects as `user` to `db`, panicking when refused.
async fn sql(k: Engine, at: SocketAddr, user: &str, pw: &str, db: &str) -> SqlConn {
    SqlConn::connect(k, at, user, pw, db)
        .await
        .unwrap_or_else(|e| panic!("{user} connects to {db}: {e}"))
}

/// Writes a first row (SQL: table `t` in `db`; Redis: key `k`).
async fn write_row(k: Engine, at: SocketAddr, user: &str, pw: &str, db: &str, value: i32) {
    if k == Engine::Redis {
        let mut c = redis_connect(at, user, pw)
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"));
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg(value)
            .query_async(&mut c)
            .await
            .expect("SET");
        return;
    }
    let mut c = sql(k, at, user, pw, db).await;
    for s in [
        "CREATE TABLE IF NOT EXISTS t (v INT)".to_string(),
        format!("INSERT INTO t VALUES ({value})"),
    ] {
        c.execute(&s).await.unwrap_or_else(|e| panic!("{e}"));
    }
    c.close().await;
}

/// Reads the row back (SQL: the sum of `t.v`; Redis: `k`).
async fn read_row(k: Engine, at: SocketAddr, user: &str, pw: &str, db: &str) -> i64 {
    let q = match k {
        Engine::Mysql => "SELECT CAST(SUM(v) AS SIGNED) FROM t",
        Engine::Postgres => "SELECT SUM(v)::bigint FROM t",
        Engine::Redis => {
            let mut c = redis_connect(at, user, pw)
                .await
                .unwrap_or_else(|e| panic!("{user} connects: {e}"));
            return redis::cmd("GET")
                .arg("k")
                .query_async(&mut c)
                .await
                .expect("GET");
        }
    };
    let mut c = sql(k, at, user, pw, db).await;
    let v = c
        .fetch_i64(q)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("a row");
    c.close().await;
    v
}

/// Whether `user` can connect to `db` and read/write a table there (`Err` carries the engine's refusal).
async fn sql_access(
    k: Engine,
    at: SocketAddr,
    user: &str,
    pw: &str,
    db: &str,
) -> Result<(), String> {
    assert!(k != Engine::Redis, "Redis has no databases");
    let mut c = SqlConn::connect(k, at, user, pw, db).await?;
    c.execute("CREATE TABLE IF NOT EXISTS probe (v INT)")
        .await?;
    c.execute("SELECT COUNT(*) FROM probe").await?;
    c.close().await;
    Ok(())
}

/// The memory setting the engine itself reports, in MB: `innodb_buffer_pool_size`, `shared_buffers`,
/// `maxmemory`.
async fn memory_setting_mb(k: Engine, at: SocketAddr, user: &str, pw: &str, db: &str) -> u64 {
    let bytes = match k {
        Engine::Mysql => {
            let mut c = sql(k, at, user, pw, db).await;
            let v = c
                .fetch_i64("SELECT CAST(@@innodb_buffer_pool_size AS SIGNED)")
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .expect("innodb_buffer_pool_size");
            c.close().await;
            v
        }
        Engine::Postgres => {
            let mut c = sql(k, at, user, pw, db).await;
            // shared_buffers in pages of block_size bytes, whatever unit SHOW would print.
            let v = c
                .fetch_i64(
                    "SELECT (SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers') \
                     * (SELECT setting::bigint FROM pg_settings WHERE name = 'block_size')",
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .expect("shared_buffers");
            c.close().await;
            v
        }
        Engine::Redis => {
            let mut c = redis_connect(at, user, pw).await.expect("connect");
            let info: String = redis::cmd("INFO")
                .arg("memory")
                .query_async(&mut c)
                .await
                .expect("INFO memory");
            info.lines()
                .find_map(|l| l.strip_prefix("maxmemory:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no maxmemory in INFO memory: {info}"))
        }
    };
    u64::try_from(bytes).expect("a size") / (1024 * 1024)
}

// ------------------------------------------------------------------ the lifecycle test

async fn lifecycle(ds: &str) {
    let k = Engine::of(ds);
    let env = EngineEnv::start().await;
    let all = Instant::now();
    let mut t = Instant::now();
    let api = env.api.clone();
    assert!(
        env.detected(ds),
        "engine for {ds} not detected on this machine: {:?}",
        env.embedded().detection.missing
    );

    // ---- create → ACTIVE (HEALTHY)
    let created = api
        .create_instance(&t1(), engine_instance(&format!("{ds}-1"), ds, false))
        .await
        .expect("create");
    let id = created.instance.id;
    let v = wait_view(&api, id, "ACTIVE after create", WAIT, |v| {
        v.status == "HEALTHY" || (v.status == "ACTIVE" && idle_healthy(v))
    })
    .await;
    step(&mut t, "POST /instances to ACTIVE/HEALTHY", ds);
    assert_eq!(v.operating_status, "HEALTHY", "{v:?}");
    let at = endpoint(&v.instance);
    assert_own_address(k, at);
    assert!(
        listening(at),
        "nothing listens on {at}, which the view shows"
    );
    let engine_pid = pid_listening_on(at).expect("a process listens on the instance's port");
    let server_dir = env.state.path().join("servers").join(id.to_string());
    let volume_dir = env.state.path().join("volumes").join(id.to_string());
    assert!(server_dir.is_dir(), "{} missing", server_dir.display());
    assert!(volume_dir.is_dir(), "{} missing", volume_dir.display());

    // ---- a database and a user through the API; the user connects, writes and reads.
    let (user, pw, db) = ("app", "app-Pw-1x", "shop");
    if k == Engine::Redis {
        let e = api
            .create_databases(
                &t1(),
                id,
                vec![DatabaseSpec {
                    name: "shop".into(),
                    character_set: None,
                    collate: None,
                }],
            )
            .await
            .expect_err("Redis has no databases");
        assert_eq!(e.fault().status, 422, "{e}");
    } else {
        api.create_databases(
            &t1(),
            id,
            vec![
                DatabaseSpec {
                    name: db.into(),
                    character_set: None,
                    collate: None,
                },
                DatabaseSpec {
                    name: "other".into(),
                    character_set: None,
                    collate: None,
                },
            ],
        )
        .await
        .expect("create databases");
        let names: Vec<String> = api
            .list_databases(&t1(), id)
            .await
            .expect("list databases")
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert!(
            names.contains(&db.to_string()) && names.contains(&"other".to_string()),
            "{names:?}"
        );
    }
    api.create_users(
        &t1(),
        id,
        vec![UserSpec {
            name: user.into(),
            password: Secret::new(pw),
            host: None,
            databases: if k == Engine::Redis {
                vec![]
            } else {
                vec![db.into()]
            },
        }],
    )
    .await
    .expect("create user");
    let users = api.list_users(&t1(), id).await.expect("list users");
    let uref = users
        .iter()
        .find(|u| u.name == user)
        .map(|u| UserRef {
            name: u.name.clone(),
            host: u.host.clone(),
        })
        .unwrap_or_else(|| panic!("user {user} not listed: {users:?}"));
    write_row(k, at, user, pw, db, 42).await;
    assert_eq!(read_row(k, at, user, pw, db).await, 42);
    step(&mut t, "database + user + connect/write/read", ds);

    // ---- grant / revoke take effect.
    if k == Engine::Redis {
        let e = api
            .grant_user_access(&t1(), id, &uref, vec!["shop".into()])
            .await
            .expect_err("Redis has no databases to grant");
        assert_eq!(e.fault().status, 422, "{e}");
    } else {
        assert!(
            sql_access(k, at, user, pw, "other").await.is_err(),
            "{user} reaches 'other' before any grant"
        );
        api.grant_user_access(&t1(), id, &uref, vec!["other".into()])
            .await
            .expect("grant");
        let access = api
            .list_user_access(&t1(), id, &uref)
            .await
            .expect("list access");
        assert!(access.contains(&"other".to_string()), "{access:?}");
        sql_access(k, at, user, pw, "other")
            .await
            .unwrap_or_else(|e| panic!("{user} cannot use 'other' after the grant: {e}"));
        api.revoke_user_access(&t1(), id, &uref, "other")
            .await
            .expect("revoke");
        let refused = sql_access(k, at, user, pw, "other").await;
        assert!(
            refused.is_err(),
            "{user} still uses 'other' after the revoke"
        );
        eprintln!(
            "[{ds}] after revoke the engine says: {}",
            refused.unwrap_err()
        );
        // The other grant is untouched.
        assert_eq!(read_row(k, at, user, pw, db).await, 42);
    }
    step(&mut t, "grant/revoke", ds);

    // ---- root, as upstream: named `root` on every engine (PostgreSQL too), it logs in; disabled, it cannot, and
    // root shows as not enabled again.
    if k != Engine::Redis {
        let creds = api.root_enable(&t1(), id, None).await.expect("root enable");
        assert_eq!(creds.name, "root", "{ds}: upstream's root user name");
        let root_pw = creds.password.expose().to_string();
        sql_access(k, at, "root", &root_pw, db)
            .await
            .unwrap_or_else(|e| panic!("{ds}: root cannot log in: {e}"));
        assert!(api.root_show(&t1(), id).await.expect("root show"));
        api.root_disable(&t1(), id).await.expect("root disable");
        assert!(
            !api.root_show(&t1(), id).await.expect("root show"),
            "{ds}: root still shows as enabled after the disable"
        );
        assert!(
            sql_access(k, at, "root", &root_pw, db).await.is_err(),
            "{ds}: root still logs in after the disable"
        );
        step(&mut t, "root enable/disable", ds);
    }

    // ---- kill -9 of the engine: SHUTDOWN (crashed) in the API within seconds, then back to HEALTHY.
    if k == Engine::Redis {
        // Let the append-only file reach the disk (fsync every second).
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let killed_at = Instant::now();
    let st = std::process::Command::new("kill")
        .args(["-9", &engine_pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(st.success(), "kill -9 {engine_pid} failed");
    let down = wait_view(
        &api,
        id,
        "SHUTDOWN after kill -9",
        Duration::from_secs(15),
        |v| v.operating_status == "SHUTDOWN" || v.status == "SHUTDOWN",
    )
    .await;
    let shown_down = killed_at.elapsed();
    assert_eq!(
        down.service.as_ref().map(|s| s.status),
        Some(ServiceStatus::Crashed),
        "the guest reports the engine crashed: {:?}",
        down.service
    );
    eprintln!(
        "[{ds}] kill -9 → SHUTDOWN in the API after {shown_down:.2?} (reason {:?})",
        down.service.as_ref().and_then(|s| s.reason.clone())
    );
    // The deployment's own supervisor restarts the crashed engine after the report grace.
    wait_view(
        &api,
        id,
        "HEALTHY after the supervisor restarts the engine",
        WAIT,
        |v| idle_healthy(v) && healthy(v),
    )
    .await;
    eprintln!(
        "[{ds}] kill -9 → HEALTHY again after {:.2?}",
        killed_at.elapsed()
    );
    assert!(!alive(engine_pid), "the killed engine still runs");
    let engine_pid = pid_listening_on(at).expect("the restarted engine listens on the same port");
    assert_eq!(
        read_row(k, at, user, pw, db).await,
        42,
        "data lost by the crash"
    );
    step(&mut t, "kill -9 → SHUTDOWN → HEALTHY", ds);

    // ---- restart keeps the data.
    api.restart_instance(&t1(), id).await.expect("restart");
    wait_view(&api, id, "HEALTHY after restart", WAIT, |v| {
        idle_healthy(v) && healthy(v)
    })
    .await;
    let after_restart = pid_listening_on(at).expect("the engine listens after restart");
    assert_ne!(
        after_restart, engine_pid,
        "restart did not restart the engine"
    );
    assert!(!alive(engine_pid), "the old engine process still runs");
    write_row(k, at, user, pw, db, 1).await;
    let expect_after = if k == Engine::Redis { 1 } else { 43 };
    assert_eq!(read_row(k, at, user, pw, db).await, expect_after);
    step(&mut t, "restart", ds);

    // ---- resize volume: the view shows the new size.
    api.resize_volume(&t1(), id, 2)
        .await
        .expect("resize volume");
    let v = wait_view(&api, id, "volume resized", WAIT, |v| {
        v.instance.volume_size == Some(2) && idle_healthy(v)
    })
    .await;
    // The guest reports usage against the new limit.
    wait_view(&api, id, "volume usage against 2 GB", WAIT, |v| {
        v.service
            .as_ref()
            .and_then(|s| s.volume)
            .is_some_and(|u| u.total_bytes == 2 * 1024 * 1024 * 1024)
    })
    .await;
    assert_eq!(v.instance.volume_size, Some(2));
    step(&mut t, "resize volume 1 → 2 GB", ds);

    // ---- resize flavor: the engine's memory setting follows the flavor's RAM.
    let before = memory_setting_mb(k, at, user, pw, db).await;
    let (fraction_num, fraction_den) = if k == Engine::Postgres {
        (1, 4)
    } else {
        (1, 2)
    };
    assert_eq!(
        before,
        256 * fraction_num / fraction_den,
        "memory setting for 256 MB RAM"
    );
    api.resize_flavor(&t1(), id, "1")
        .await
        .expect("resize flavor");
    wait_view(&api, id, "flavor resized", WAIT, |v| {
        v.instance.flavor_id == "1" && idle_healthy(v)
    })
    .await;
    let after = memory_setting_mb(k, at, user, pw, db).await;
    assert_eq!(
        after,
        512 * fraction_num / fraction_den,
        "memory setting for 512 MB RAM (was {before} MB)"
    );
    assert_eq!(read_row(k, at, user, pw, db).await, expect_after);
    eprintln!("[{ds}] memory setting {before} MB → {after} MB");
    step(&mut t, "resize flavor 256 → 512 MB", ds);

    // ---- a revoked user: for Redis, deleting the user takes its access away.
    if k == Engine::Redis {
        api.delete_user(&t1(), id, &uref)
            .await
            .expect("delete user");
        let e = redis_connect(at, user, pw).await;
        assert!(e.is_err(), "the deleted user still authenticates");
        step(&mut t, "delete user → no access", ds);
    }

    // ---- delete removes the process, the port and the files.
    let pid = pid_listening_on(at).expect("engine pid before delete");
    api.delete_instance(&t1(), id).await.expect("delete");
    eventually("the instance is deleted", WAIT, || async {
        match api.show_instance(&t1(), id).await {
            Ok(v) => Err(v.status),
            Err(_) => Ok(()),
        }
    })
    .await;
    wait_engine_gone(pid, at, Duration::from_secs(15)).await;
    let mut left = engines_under(&server_dir);
    left.extend(engines_under(&volume_dir));
    assert!(
        left.is_empty(),
        "processes left under the server dir: {left:?}"
    );
    assert!(!server_dir.exists(), "server directory left after delete");
    assert!(!volume_dir.exists(), "volume directory left after delete");
    step(&mut t, "delete", ds);
    eprintln!("[{ds}] whole lifecycle: {:.2?}", all.elapsed());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_lifecycle_through_the_api() {
    lifecycle("mysql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_lifecycle_through_the_api() {
    lifecycle("mariadb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_lifecycle_through_the_api() {
    lifecycle("postgresql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lifecycle_through_the_api() {
    lifecycle("redis").await;
}

// ------------------------------------------------------------------ restart of the all-in-one server

fn http_healthy(i: &serde_json::Value) -> bool {
    (i["status"] == "ACTIVE" || i["status"] == "HEALTHY") && i["operating_status"] == "HEALTHY"
}

/// `service_status_updated` as a UTC time (second resolution).
fn service_updated(i: &serde_json::Value) -> chrono::NaiveDateTime {
    let s = i["service_status_updated"]
        .as_str()
        .unwrap_or_else(|| panic!("no service_status_updated in {i}"));
    chrono::NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("service_status_updated {s:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_restart_keeps_instances_and_data() {
    let lock = tokio::task::spawn_blocking(engines_lock)
        .await
        .expect("lock task");
    let state = engine_state_dir();
    let _guard = KillGuard(state.path().to_path_buf());
    let server = tokio::task::spawn_blocking(move || api_support::AllInOne::start_in(state, &[]))
        .await
        .expect("start task");
    let all = Instant::now();
    let http = HttpClient::new(format!("{}/v1.0/t1", server.base), "t");
    let (user, pw, db) = ("app", "app-Pw-1x", "shop");
    let host_servers: Vec<(Engine, SocketAddr)> = [Engine::Mysql, Engine::Postgres, Engine::Redis]
        .into_iter()
        .map(|k| (k, SocketAddr::from(([127, 0, 0, 1], k.standard_port()))))
        .filter(|(_, host)| listening(*host))
        .collect();
    eprintln!("the host's own servers: {host_servers:?}");

    // One instance per engine, with its database and user given at create; a row written as the user.
    let mut instances = Vec::new();
    for (i, ds) in ["mariadb", "postgresql", "redis"].into_iter().enumerate() {
        let k = Engine::of(ds);
        let mut body = serde_json::json!({"instance": {
            "name": format!("keep-{ds}"),
            "flavorRef": "6",
            "volume": {"size": 1},
            "datastore": {"type": ds},
            "users": [{"name": user, "password": pw}],
        }});
        if k != Engine::Redis {
            body["instance"]["databases"] = serde_json::json!([{ "name": db }]);
            body["instance"]["users"][0]["databases"] = serde_json::json!([{ "name": db }]);
        }
        let (s, created) = http.send("POST", "/instances", Some(&body)).await;
        assert_eq!(s, 200, "create {ds}: {created}");
        let id = created["instance"]["id"]
            .as_str()
            .expect("instance id")
            .to_string();
        let inst = http
            .wait_instance_where(
                &format!("/instances/{id}"),
                "ACTIVE after create",
                WAIT,
                http_healthy,
            )
            .await;
        // The engine answers on the instance's own address (`ip`) with its standard port, as on a VM.
        let at = http_endpoint(&inst);
        assert_own_address(k, at);
        let value = 7 + i as i32;
        write_row(k, at, user, pw, db, value).await;
        if k == Engine::Redis {
            // Let the append-only file reach the disk (fsync every second).
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let pid = pid_listening_on(at).expect("engine pid");
        instances.push((ds, id, at, pid, i64::from(value)));
    }
    eprintln!("three instances with data: {:.2?}", all.elapsed());
    // The host's own servers on 127.0.0.1's standard ports (running before the test) are untouched: still there,
    // not the instances' engines, and they do not know the user created through the API.
    for (k, host) in &host_servers {
        assert!(listening(*host), "the host's server on {host} stopped");
        let holder = pid_listening_on(*host);
        assert!(
            instances.iter().all(|i| holder != Some(i.3)),
            "an instance's engine listens on {host}"
        );
        let refused = match k {
            Engine::Redis => redis_connect(*host, user, pw).await.is_err(),
            _ => sql_access(*k, *host, user, pw, db).await.is_err(),
        };
        assert!(
            refused,
            "the host's server on {host} accepts the API-created user"
        );
    }

    // SIGTERM: the server stops cleanly; the engines keep running (they are re-adopted at the next start).
    let (status, state) = tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stop task");
    assert!(status.success(), "the server exited with {status}");
    for (ds, _, at, pid, _) in &instances {
        assert!(alive(*pid), "{ds}: the engine stopped with the server");
        assert!(listening(*at), "{ds}: at {at} closed with the server");
    }

    // The same state directory again.
    let t = Instant::now();
    let server = tokio::task::spawn_blocking(move || api_support::AllInOne::start_in(state, &[]))
        .await
        .expect("start task");
    let http = HttpClient::new(format!("{}/v1.0/t1", server.base), "t");
    let restarted_at = chrono::Utc::now().naive_utc();
    eprintln!("server restarted: {:.2?}", t.elapsed());
    let (s, list) = http.send("GET", "/instances", None).await;
    assert_eq!(s, 200, "{list}");
    let mut listed: Vec<String> = list["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    listed.sort();
    let mut ours: Vec<String> = instances.iter().map(|i| i.1.clone()).collect();
    ours.sort();
    assert_eq!(listed, ours, "no instance lost or duplicated");
    for (ds, id, at, pid, value) in &instances {
        let k = Engine::of(ds);
        // Heartbeats resume: a status report newer than the restart, and HEALTHY.
        let inst = http
            .wait_instance_where(
                &format!("/instances/{id}"),
                "heartbeat after the restart",
                WAIT,
                |i| http_healthy(i) && service_updated(i) > restarted_at,
            )
            .await;
        assert_eq!(http_endpoint(&inst), *at, "{ds}: address or port changed");
        assert_eq!(
            pid_listening_on(*at),
            Some(*pid),
            "{ds}: the running engine was not re-adopted"
        );
        assert_eq!(
            read_row(k, *at, user, pw, db).await,
            *value,
            "{ds}: data lost across the restart"
        );
        // The relaunched guest agent answers calls.
        let (s, users) = http
            .send("GET", &format!("/instances/{id}/users"), None)
            .await;
        assert_eq!(s, 200, "{ds}: list users after the restart: {users}");
        assert!(
            users["users"]
                .as_array()
                .is_some_and(|u| u.iter().any(|u| u["name"] == user)),
            "{ds}: {users}"
        );
    }
    eprintln!("restart verified: {:.2?}", t.elapsed());

    // Clean up through the API: delete removes the engines.
    for (ds, id, at, pid, _) in &instances {
        let (s, body) = http.send("DELETE", &format!("/instances/{id}"), None).await;
        assert_eq!(s, 202, "{ds}: delete: {body}");
        wait_engine_gone(*pid, *at, WAIT).await;
    }
    let (_, state) = tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stop task");
    eprintln!("whole restart test: {:.2?}", all.elapsed());
    drop(state);
    drop(lock);
}
