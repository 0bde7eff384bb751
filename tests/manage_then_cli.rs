//! Issue 3's seed sequence end to end: `trove-manage` on a state directory, then the all-in-one server on the
//! same directory, then the real `openstack` client sees mysql with default version 5.6.

mod api_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use api_support::{engine_state_dir, AllInOne, OpenStackCli};

fn trove_manage() -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/trove-manage
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("examples")
        .join("trove-manage");
    assert!(
        bin.exists(),
        "{} is missing: cargo test and nextest build examples with the tests",
        bin.display()
    );
    bin
}

fn manage(state: &Path, args: &[&str]) {
    let out = Command::new(trove_manage())
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("TROVE_DATABASE_URL")
        .output()
        .expect("run trove-manage");
    assert!(
        out.status.success(),
        "trove-manage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
