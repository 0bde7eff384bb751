//! Issue 3's seed sequence end to end: `trove-manage` on a state directory, then the all-in-one server on the
//! same directory, then the real `openstack` client sees mysql with default version 5.6.

mod api_support;

use api_support::{engine_state_dir, trove_manage_ok, AllInOne, OpenStackCli};

/// Runs `trove-manage` on `state`; it must succeed.
fn manage(state: &std::path::Path, args: &[&str]) {
    trove_manage_ok(state, args);
}

#[test]
fn seed_sequence_shows_up_in_the_openstack_client() {
    let state = engine_state_dir();
    manage(state.path(), &["datastore_update", "mysql", ""]);
    manage(
        state.path(),
        &[
            "datastore_version_update",
            "mysql",
            "5.6",
            "mysql",
            "IMAGE",
            "",
            "1",
        ],
    );
    manage(state.path(), &["datastore_update", "mysql", "5.6"]);

    let server = AllInOne::start_in(state, &[]);
    let mut cli = OpenStackCli::start(&format!("{}/v1.0/ops", server.base));
    let list = cli.ok(&["datastore", "list", "-f", "json"]).json();
    let mysql = list
        .as_array()
        .and_then(|a| a.iter().find(|d| d["Name"] == "mysql"))
        .unwrap_or_else(|| panic!("mysql is listed: {list}"))
        .clone();
    let versions = cli
        .ok(&["datastore", "version", "list", "mysql", "-f", "json"])
        .json();
    let names: Vec<&str> = versions
        .as_array()
        .map(|a| a.iter().filter_map(|v| v["Name"].as_str()).collect())
        .unwrap_or_default();
    // The operator's datastore is kept as it was: the detected engine did not replace or extend it.
    assert_eq!(names, vec!["5.6"], "version list: {versions}");
    let shown = cli.ok(&["datastore", "show", "mysql", "-f", "json"]).json();
    assert_eq!(
        shown["default_version"], "5.6",
        "datastore show: {shown} (listed as {mysql})"
    );
}
