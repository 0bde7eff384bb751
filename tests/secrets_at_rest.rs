//! Secrets never rest in clear, in the all-in-one (SQLite store, in-process bus) on the REAL engines: instances
//! made with users and a root password given as probe strings, users added and a password changed through the
//! API, PostgreSQL's generated root password, all under a log at debug level. After stopping everything, no
//! probe string is in any file of the state directory (store, its WAL, server directories, engine files) or in
//! the log; the instances still take those passwords, and a restart of the server still works.
//!
//! The distributed deployment's counterpart (PostgreSQL store, RabbitMQ node) is in `tests/distributed.rs`.

mod api_support;

use std::time::Duration;

use serde_json::{json, Value};

use api_support::{
    engine_state_dir, engines_lock, files_holding, http_endpoint, kill_engines_under, logs_in,
    probe, AllInOne, Engine, HttpClient, KillGuard,
};

const WAIT: Duration = Duration::from_secs(90);
const DB: &str = "shop";

fn healthy(i: &Value) -> bool {
    (i["status"] == "ACTIVE" || i["status"] == "HEALTHY") && i["operating_status"] == "HEALTHY"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_rests_in_clear_in_the_all_in_one() {
    let lock = tokio::task::spawn_blocking(engines_lock)
        .await
        .expect("lock task");
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("all-in-one.log");
    let state = engine_state_dir();
    let state_path = state.path().to_path_buf();
    let _guard = KillGuard(state_path.clone());
    let debug = [("RUST_LOG", "debug")];
    let log_arg = log.clone();
    let server =
        tokio::task::spawn_blocking(move || AllInOne::start_logged(state, &[], &debug, &log_arg))
            .await
            .expect("start task");
    let http = HttpClient::new(format!("{}/v1.0/t1", server.base), "t");
    let mut probes: Vec<String> = Vec::new();
    // (datastore, engine, id, endpoint) and the logins that must work: (instance index, user, password, db).
    let mut instances = Vec::new();
    let mut logins: Vec<(usize, String, String, String)> = Vec::new();

    // Instances with a user (and a database) given at create.
    for ds in ["mariadb", "postgresql", "redis"] {
        let k = Engine::of(ds);
        let pw = probe(&format!("create-{ds}"));
        let mut body = json!({"instance": {
            "name": format!("sealed-{ds}"),
            "flavorRef": "6",
            "volume": {"size": 1},
            "datastore": {"type": ds},
            "users": [{"name": "app", "password": pw}],
        }});
        if k != Engine::Redis {
            body["instance"]["databases"] = json!([{ "name": DB }]);
            body["instance"]["users"][0]["databases"] = json!([{ "name": DB }]);
        }
        let (s, created) = http.send("POST", "/instances", Some(&body)).await;
        assert_eq!(s, 200, "create {ds}: {created}");
        let id = created["instance"]["id"].as_str().expect("id").to_string();
        logins.push((instances.len(), "app".into(), pw.clone(), DB.into()));
        probes.push(pw);
        instances.push((ds, k, id));
    }
    let mut endpoints = Vec::new();
    for (ds, _, id) in &instances {
        let inst = http
            .wait_instance_where(
                &format!("/instances/{id}"),
                &format!("{ds} HEALTHY"),
                WAIT,
                healthy,
            )
            .await;
        endpoints.push(http_endpoint(&inst));
    }

    // A user added through the API on each instance.
    for (i, (ds, k, id)) in instances.iter().enumerate() {
        let pw = probe(&format!("user-{ds}"));
        let mut user = json!({"name": "u2", "password": pw});
        if *k != Engine::Redis {
            user["databases"] = json!([{ "name": DB }]);
        }
        let (s, b) = http
            .send(
                "POST",
                &format!("/instances/{id}/users"),
                Some(&json!({"users": [user]})),
            )
            .await;
        assert_eq!(s, 202, "{ds}: user create: {b}");
        logins.push((i, "u2".into(), pw.clone(), DB.into()));
        probes.push(pw);
    }
    // A password changed through the API (PostgreSQL's app user).
    let changed = probe("changed-postgresql");
    let (s, b) = http
        .send(
            "PUT",
            &format!("/instances/{}/users", instances[1].2),
            Some(&json!({"users": [{"name": "app", "password": changed}]})),
        )
        .await;
    assert_eq!(s, 202, "password change: {b}");
    logins.retain(|l| !(l.0 == 1 && l.1 == "app"));
    logins.push((1, "app".into(), changed.clone(), DB.into()));
    probes.push(changed);
    // Root: a password given (MariaDB), and one generated (PostgreSQL).
    let root_pw = probe("root-mariadb");
    let (s, b) = http
        .send(
            "POST",
            &format!("/instances/{}/root", instances[0].2),
            Some(&json!({ "password": root_pw })),
        )
        .await;
    assert_eq!(s, 200, "root enable with a password: {b}");
    logins.push((0, "root".into(), root_pw.clone(), DB.into()));
    probes.push(root_pw);
    let (s, b) = http
        .send("POST", &format!("/instances/{}/root", instances[1].2), None)
        .await;
    assert_eq!(s, 200, "root enable: {b}");
    let generated = b["user"]["password"]
        .as_str()
        .expect("password")
        .to_string();
    logins.push((1, "root".into(), generated.clone(), "postgres".into()));
    probes.push(generated);

    let check_logins = |when: &'static str| {
        let (logins, instances, endpoints) = (logins.clone(), instances.clone(), endpoints.clone());
        async move {
            for (i, user, pw, db) in &logins {
                let (ds, k, _) = &instances[*i];
                api_support::eventually(&format!("{ds}: {user} logs in {when}"), WAIT, || async {
                    logs_in(*k, endpoints[*i], user, pw, db).await
                })
                .await;
            }
        }
    };
    check_logins("before the stop").await;

    // Stop everything: the server, then the engines.
    let (status, state) = tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stop task");
    assert!(status.success(), "the server exited with {status}");
    kill_engines_under(&state_path);
    // The scan finds what is there (a planted probe), so an empty answer means something.
    let planted = logs.path().join("planted");
    std::fs::write(&planted, format!("xx{}yy", probes[0])).expect("plant");
    assert_eq!(
        files_holding(logs.path(), &probes).len(),
        1,
        "the scan misses a planted probe"
    );
    std::fs::remove_file(&planted).expect("unplant");
    let mut leaks = files_holding(&state_path, &probes);
    leaks.extend(files_holding(logs.path(), &probes));
    let log_text = std::fs::read_to_string(&log).expect("the log");
    assert!(
        log_text.contains("DEBUG"),
        "the log is not at debug level, so it proves nothing"
    );
    assert!(
        leaks.is_empty(),
        "secrets at rest in clear (file, probe): {leaks:#?}"
    );

    // The same state directory again: the engines are started again and every password still works.
    let log_arg = log.clone();
    let server =
        tokio::task::spawn_blocking(move || AllInOne::start_logged(state, &[], &debug, &log_arg))
            .await
            .expect("start task");
    let http = HttpClient::new(format!("{}/v1.0/t1", server.base), "t");
    for (ds, _, id) in &instances {
        http.wait_instance_where(
            &format!("/instances/{id}"),
            &format!("{ds} HEALTHY after the restart"),
            WAIT,
            healthy,
        )
        .await;
    }
    check_logins("after the restart").await;
    let (_, state) = tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stop task");
    let leaks = files_holding(&state_path, &probes);
    assert!(leaks.is_empty(), "after the restart: {leaks:#?}");
    drop(state);
    drop(lock);
}
