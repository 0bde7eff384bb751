//! `trove-manage` (examples/trove-manage.rs) as a binary: the upstream seed sequence on a fresh state directory,
//! re-runs, exit statuses, and the result as the store (and so the API) sees it.
//!
//! The example is built by `cargo test` / `cargo nextest run` together with this test (examples are always built
//! with the tests); `TROVE_MANAGE_BIN` may point at another build.

mod api_support;

use trove::backends::sql::{self, StoreLocation};

use api_support::{trove_manage as manage, trove_manage_ok as ok};

#[tokio::test]
async fn seed_sequence_through_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    // Twice: re-running the sequence is harmless.
    for _ in 0..2 {
        ok(&state, &["datastore_update", "mysql", ""]);
        ok(
            &state,
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
        let out = ok(&state, &["datastore_update", "mysql", "5.6"]);
        assert!(out.contains("mysql"), "{out}");
    }
    assert!(ok(&state, &["db_sync"]).contains("schema version"));

    let store = sql::open(&StoreLocation::StateDir(state.clone()))
        .await
        .expect("open the state dir");
    let ds = store
        .get_datastore("mysql")
        .await
        .expect("get")
        .expect("mysql exists");
    let versions = store
        .list_datastore_versions(Some(ds.id))
        .await
        .expect("versions");
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(
        ds.default_version_id,
        Some(versions[0].id),
        "default version is 5.6"
    );
    assert_eq!(
        (
            versions[0].name.as_str(),
            versions[0].image.as_str(),
            versions[0].active
        ),
        ("5.6", "IMAGE", true)
    );
    drop(store);

    // Bad arguments: a message and status 2.
    for args in [
        &[
            "datastore_version_update",
            "mysql",
            "5.6",
            "mysql",
            "IMAGE",
            "",
            "maybe",
        ][..],
        &[
            "datastore_version_update",
            "mysql",
            "5.6",
            "nosuchmanager",
            "IMAGE",
            "",
            "1",
        ][..],
        &["datastore_version_update", "mysql", "5.6"][..],
        &["no_such_command"][..],
        &["flavor", "create", "1", "small", "lots", "1", "5"][..],
    ] {
        let out = manage(&state, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?} explains itself");
    }
    // A missing datastore is a failure (1), not a usage error.
    let out = manage(&state, &["datastore_update", "nosuch", "1.0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not be found"));

    // Flavors and quotas.
    ok(
        &state,
        &["flavor", "create", "7", "m1.small", "2048", "2", "10"],
    );
    assert!(ok(&state, &["flavor", "list"]).contains("m1.small"));
    ok(
        &state,
        &["datastore_version_flavor_add", "mysql", "5.6", "7"],
    );
    ok(
        &state,
        &["quota", "update", "demo", "--instances", "3", "--ram", "-1"],
    );
    let q = ok(&state, &["quota", "show", "demo"]);
    assert!(q.contains("instances") && q.contains("unlimited"), "{q}");

    // Validation rules from a file.
    let rules = dir.path().join("validation-rules.json");
    std::fs::write(
        &rules,
        r#"{"configuration-parameters": [
            {"name": "max_connections", "restart_required": false, "min": 1, "max": 100000, "type": "integer"},
            {"name": "innodb_buffer_pool_size", "restart_required": true, "min": 5242880,
             "max": 18446744073709551615, "type": "integer"},
            {"name": "performance_schema", "restart_required": true, "type": "boolean"}]}"#,
    )
    .expect("write rules");
    let rules_path = rules.to_string_lossy().into_owned();
    let out = ok(
        &state,
        &[
            "db_load_datastore_config_parameters",
            "mysql",
            "5.6",
            &rules_path,
        ],
    );
    assert!(out.contains("Loaded 3"), "{out}");
    ok(
        &state,
        &[
            "db_load_datastore_config_parameters",
            "mysql",
            "5.6",
            &rules_path,
            "--version",
            "5.6",
        ],
    );
    let store = sql::open(&StoreLocation::StateDir(state))
        .await
        .expect("open");
    assert_eq!(
        store
            .list_config_params(versions[0].id)
            .await
            .expect("rules")
            .len(),
        3
    );
}
