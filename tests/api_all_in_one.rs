//! The all-in-one server process: prints `listening on ADDR`, stops cleanly on SIGTERM, and keeps its data
//! (SQLite in the state directory) across a restart.

mod api_support;

use std::time::Duration;

use api_support::{
    get_json, kill_engines_under, post_json, wait_instance_blocking, wait_status, AllInOne,
};

fn ids(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .map(|a| a.iter().map(|x| x["id"].to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn data_survives_a_restart_and_sigterm_stops_cleanly() {
    let server = AllInOne::start(&[]);
    let body = r#"{"instance": {"name": "keep-me", "flavorRef": "1", "volume": {"size": 1}, "datastore": {"type": "mysql"}}}"#;
    let (status, created) = post_json(&format!("{}/v1.0/t1/instances", server.base), body);
    assert_eq!(status, 200, "{created}");
    let id = created["instance"]["id"].as_str().expect("id").to_string();
    wait_status(&server.base, "t1", &id, "ACTIVE", Duration::from_secs(60));

    let (_, flavors_before) = get_json(&format!("{}/v1.0/t1/flavors", server.base));
    let (_, ds_before) = get_json(&format!("{}/v1.0/t1/datastores", server.base));

    let (exit, state) = server.stop();
    assert!(exit.success(), "SIGTERM is a clean stop: {exit:?}");

    let again = AllInOne::start_in(state, &[]);
    let (s, shown) = get_json(&format!("{}/v1.0/t1/instances/{id}", again.base));
    assert_eq!(s, 200, "the instance survives the restart: {shown}");
    assert_eq!(shown["instance"]["name"], "keep-me");
    // The engine kept running and was re-adopted: its guest reports HEALTHY again.
    wait_instance_blocking(
        &again.base,
        "t1",
        &id,
        "ACTIVE and HEALTHY",
        Duration::from_secs(60),
        |_, i| i["status"] == "ACTIVE" && i["operating_status"] == "HEALTHY",
    );
    // The seeded catalogue is not duplicated by the second start.
    let (_, flavors) = get_json(&format!("{}/v1.0/t1/flavors", again.base));
    assert_eq!(
        ids(&flavors["flavors"]),
        ids(&flavors_before["flavors"]),
        "flavors unchanged by a restart"
    );
    let (_, ds) = get_json(&format!("{}/v1.0/t1/datastores", again.base));
    assert_eq!(
        ids(&ds["datastores"]),
        ids(&ds_before["datastores"]),
        "datastores unchanged by a restart"
    );
    assert!(
        ds["datastores"].as_array().is_some_and(|a| !a.is_empty()),
        "{ds}"
    );
}

#[test]
fn extra_hosts_take_instances_and_migrations() {
    let server = AllInOne::start(&["--host", "remote", "--noauth-admin"]);
    let base = &server.base;
    let body = r#"{"instance": {"name": "roamer", "flavorRef": "1", "volume": {"size": 1}, "datastore": {"type": "redis"}, "availability_zone": "remote"}}"#;
    let (s, created) = post_json(&format!("{base}/v1.0/t1/instances"), body);
    assert_eq!(s, 200, "{created}");
    let id = created["instance"]["id"].as_str().expect("id").to_string();
    wait_status(base, "t1", &id, "ACTIVE", Duration::from_secs(60));
    let host = || {
        let (_, shown) = get_json(&format!("{base}/v1.0/t1/mgmt/instances/{id}"));
        shown["instance"]["server"]["host"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(host(), "remote", "placed on the host named by --host");
    assert!(
        server.state.path().join("hosts/remote").join(&id).is_dir(),
        "the server lives under the extra host's root"
    );
    let (s, b) = post_json(
        &format!("{base}/v1.0/t1/mgmt/instances/{id}/action"),
        r#"{"migrate": {"host": "local"}}"#,
    );
    assert_eq!(s, 202, "migrate: {b}");
    wait_status(base, "t1", &id, "ACTIVE", Duration::from_secs(60));
    assert_eq!(host(), "local", "migrated");
    assert!(
        !server.state.path().join("hosts/remote").join(&id).exists(),
        "nothing left on the old host"
    );
    let (s, b) = post_json(
        &format!("{base}/v1.0/t1/mgmt/instances/{id}/action"),
        r#"{"migrate": {"host": "elsewhere"}}"#,
    );
    assert_eq!(s, 400, "unknown host: {b}");
    let (exit, state) = server.stop();
    // Engines outlive the server on purpose: this test's must go with its state directory.
    kill_engines_under(state.path());
    assert!(exit.success(), "{exit:?}");
}
