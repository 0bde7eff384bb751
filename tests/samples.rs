//! Walks every upstream API sample (`../shared/reference/trove-api-samples`): each request sample is accepted by
//! its route, and each response sample's fields are all present in our answer with the same JSON type.
//!
//! The server is the real router over an in-memory control plane with simulated guests.

mod api_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use trove::control_plane::InMemoryParts;
use trove::http::HttpConfig;
use trove_core::api::{ConfigParamSpec, CreateConfiguration, CreateInstance, DatastoreVersionSpec};
use trove_core::config::CoreConfig;
use trove_core::memory::{MemoryCompute, NoAuth};
use trove_core::model::{DatabaseSpec, ParamType};
use trove_core::ports::RequestContext;
use trove_core::ports::SystemClock;

use api_support::{add_flavors, flavor, serve_in_process, HttpClient};

const T: &str = "samples";

/// The API of project [`T`].
struct Server(HttpClient);

struct Answer {
    status: u16,
    body: Value,
}

impl Server {
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let (status, body) = self.0.send(method, path, body).await;
        Answer { status, body }
    }

    async fn get(&self, path: &str) -> Value {
        self.0.get_ok(path).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let a = self.call("POST", path, Some(&body)).await;
        assert!(
            (200..300).contains(&a.status),
            "POST {path}: {} {}",
            a.status,
            a.body
        );
        a.body
    }

    async fn wait_instance(&self, id: &str, want: &str) {
        self.0
            .wait_instance(
                &format!("/instances/{id}"),
                &[want],
                Duration::from_secs(30),
            )
            .await;
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn exempt(path: &str, exemptions: &[&str]) -> bool {
    // Array indices do not count: `backups[3].size` matches the exemption `backups.size`.
    let mut plain = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            c if !in_index => plain.push(c),
            _ => {}
        }
    }
    let path = plain.as_str();
    exemptions.iter().any(|e| match e.strip_suffix(".*") {
        Some(prefix) => path.starts_with(&format!("{prefix}.")),
        None => path == *e,
    })
}

/// Every field of `sample` must be in `ours` with the same JSON type (a `null` in the sample matches anything;
/// array elements must have the fields common to all sample elements).
fn conforms(
    path: &str,
    sample: &Value,
    ours: &Value,
    exemptions: &[&str],
    errors: &mut Vec<String>,
) {
    if sample.is_null() || exempt(path, exemptions) {
        return;
    }
    if kind(sample) != kind(ours) {
        errors.push(format!(
            "{path}: sample is {}, ours is {} ({ours})",
            kind(sample),
            kind(ours)
        ));
        return;
    }
    match (sample, ours) {
        (Value::Object(s), Value::Object(o)) => {
            for (k, sv) in s {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match o.get(k) {
                    Some(ov) => conforms(&p, sv, ov, exemptions, errors),
                    None if sv.is_null() || exempt(&p, exemptions) => {}
                    None => errors.push(format!("{p}: missing")),
                }
            }
        }
        (Value::Array(s), Value::Array(o)) if !s.is_empty() => {
            // The fields every sample element has.
            let mut model = s[0].clone();
            if let Value::Object(m) = &mut model {
                let common: BTreeSet<String> = s
                    .iter()
                    .filter_map(Value::as_object)
                    .map(|e| e.keys().cloned().collect::<BTreeSet<_>>())
                    .reduce(|a, b| a.intersection(&b).cloned().collect())
                    .unwrap_or_default();
                m.retain(|k, _| common.contains(k));
            }
            for (i, e) in o.iter().enumerate() {
                conforms(&format!("{path}[{i}]"), &model, e, exemptions, errors);
            }
        }
        _ => {}
    }
}

/// Replaces the sample's ids with ours.
fn substitute(v: &Value, ids: &BTreeMap<&str, String>) -> Value {
    let mut text = v.to_string();
    for (from, to) in ids {
        text = text.replace(from, to);
    }
    serde_json::from_str(&text).expect("still JSON")
}

/// How a request sample is expected to be answered.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    /// 2xx.
    Success,
    /// Refused for a reason of state (e.g. promoting a non-replica), never for its shape.
    StateRefusal,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_sample_is_served() {
    let dir = api_support::reference_dir().join("trove-api-samples");
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{} must exist (shared/ beside the repository): {e}",
                dir.display()
            )
        })
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert!(
        files.len() >= 80,
        "expected the 89 upstream samples, found {}",
        files.len()
    );
    let sample = |name: &str| -> Value {
        let text =
            std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    };

    // --- control plane, catalogue
    // Two hosts, named like the migrate sample's, so that migrate has somewhere to go.
    let parts = InMemoryParts::new(CoreConfig::default(), Arc::new(SystemClock));
    let compute = Arc::new(MemoryCompute::with_hosts(
        vec!["compute-001".into(), "compute-002".into()],
        parts.launcher.clone(),
    ));
    let cp = parts
        .builder()
        .compute(compute)
        .start()
        .await
        .expect("control plane");
    let api = cp.api();
    let admin = RequestContext::admin(T);
    add_flavors(
        &api,
        [
            flavor("1", "m1.tiny", 512, 10),
            flavor("2", "m1.small", 2048, 10),
            flavor("6", "m1.medium", 4096, 10),
        ],
    )
    .await;
    let mut version_ids = Vec::new();
    for (name, number, default) in [
        ("5.7", "5.7", true),
        ("mysql-5.7", "5.7.29", false),
        // the upgrade sample's target
        ("sample_datastore_version", "5.7.30", false),
    ] {
        let v = api
            .mgmt_create_datastore_version(
                &admin,
                DatastoreVersionSpec {
                    datastore_name: "mysql".into(),
                    name: name.into(),
                    manager: "mysql".into(),
                    image: String::new(),
                    packages: String::new(),
                    active: true,
                    version: Some(number.into()),
                    default,
                },
            )
            .await
            .expect("version");
        for (p, min, max) in [
            ("connect_timeout", 2, 31_536_000),
            ("max_connections", 1, 100_000),
            ("wait_timeout", 1, 31_536_000),
        ] {
            let spec = ConfigParamSpec {
                name: p.into(),
                data_type: ParamType::Integer,
                restart_required: false,
                min: Some(min.into()),
                max: Some(max.into()),
            };
            api.mgmt_create_parameter(&admin, v.version.id, spec)
                .await
                .expect("parameter");
        }
        version_ids.push(v.version.id);
    }
    let base = serve_in_process(
        api.clone(),
        Arc::new(NoAuth::admin()),
        HttpConfig::default(),
    )
    .await;
    let s = Server(HttpClient::new(format!("{base}/v1.0/{T}"), "any"));

    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut errors: Vec<String> = Vec::new();

    // Sends a request sample and checks the outcome class.
    macro_rules! request {
        ($file:expr, $method:expr, $path:expr, $expect:expr, $ids:expr) => {{
            let body = substitute(&sample($file), $ids);
            let path: String = $path;
            let a = s.call($method, &path, Some(&body)).await;
            seen.insert($file.to_string());
            let msg = a
                .body
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|f| f["message"].as_str())
                .unwrap_or("")
                .to_string();
            let shape_error = msg.starts_with("Validation error")
                || msg.starts_with("Malformed")
                || a.status == 413
                || a.status == 415
                || a.status >= 500;
            let ok = match $expect {
                Expect::Success => (200..300).contains(&a.status),
                Expect::StateRefusal => {
                    (200..300).contains(&a.status)
                        || (!shape_error && (400..500).contains(&a.status))
                }
            };
            if !ok {
                errors.push(format!(
                    "{} ({} {}): expected {:?}, got {} {}",
                    $file, $method, path, $expect, a.status, a.body
                ));
            }
            a
        }};
    }
    macro_rules! response {
        ($file:expr, $ours:expr, $exempt:expr) => {{
            let ours: Value = $ours;
            let mut errs = Vec::new();
            conforms("", &sample($file), &ours, $exempt, &mut errs);
            errors.extend(errs.into_iter().map(|e| format!("{}: {e}", $file)));
            seen.insert($file.to_string());
        }};
    }
    let no_ids: BTreeMap<&str, String> = BTreeMap::new();

    // --- instances
    let a = request!(
        "instance-create-request.json",
        "POST",
        "/instances".to_string(),
        Expect::Success,
        &no_ids
    );
    response!("instance-create-response.json", a.body.clone(), &[]);
    let inst = a.body["instance"]["id"]
        .as_str()
        .expect("instance id")
        .to_string();
    s.wait_instance(&inst, "ACTIVE").await;
    let other = api
        .create_instance(
            &RequestContext::tenant(T),
            CreateInstance {
                name: "other".into(),
                flavor_ref: Some("1".into()),
                volume_size: Some(1),
                datastore: Some("mysql".into()),
                datastore_version: Some("5.7".into()),
                ..Default::default()
            },
        )
        .await
        .expect("second instance");
    let other = other.instance.id.to_string();
    s.wait_instance(&other, "ACTIVE").await;
    let mut ids: BTreeMap<&str, String> = BTreeMap::new();
    ids.insert("44b277eb-39be-4921-be31-3d61b43651d7", inst.clone()); // backup sample's instance
    ids.insert("0602db72-c63d-11ea-b87c-00224d6b7bc1", inst.clone()); // backup strategy sample's instance

    // --- databases, users, root
    api.create_databases(
        &RequestContext::tenant(T),
        inst.parse().expect("uuid"),
        vec![DatabaseSpec {
            name: "test".into(),
            character_set: None,
            collate: None,
        }],
    )
    .await
    .expect("db test");
    request!(
        "databases-create-request.json",
        "POST",
        format!("/instances/{inst}/databases"),
        Expect::Success,
        &no_ids
    );
    request!(
        "user-create-request.json",
        "POST",
        format!("/instances/{inst}/users"),
        Expect::Success,
        &no_ids
    );
    request!(
        "user-grant-databases-access-request.json",
        "PUT",
        format!("/instances/{inst}/users/dbuser1/databases"),
        Expect::Success,
        &no_ids
    );
    let a = request!(
        "user-root-enable-request.json",
        "POST",
        format!("/instances/{inst}/root"),
        Expect::Success,
        &no_ids
    );
    response!("user-enable-root-response.json", a.body.clone(), &[]);

    // --- configurations
    let a = request!(
        "config-group-create-request.json",
        "POST",
        "/configurations".to_string(),
        Expect::Success,
        &no_ids
    );
    response!("config-group-create-response.json", a.body.clone(), &[]);
    let cfg = a.body["configuration"]["id"]
        .as_str()
        .expect("configuration id")
        .to_string();
    request!(
        "config-group-patch-request.json",
        "PATCH",
        format!("/configurations/{cfg}"),
        Expect::Success,
        &no_ids
    );
    request!(
        "config-group-put-request.json",
        "PUT",
        format!("/configurations/{cfg}"),
        Expect::Success,
        &no_ids
    );
    let attachable = api
        .create_configuration(
            &RequestContext::tenant(T),
            CreateConfiguration {
                name: "attachable".into(),
                values: json!({"max_connections": 300})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                datastore: Some("mysql".into()),
                datastore_version: Some("5.7".into()),
                ..Default::default()
            },
        )
        .await
        .expect("configuration on 5.7");
    ids.insert(
        "2aa51628-5c42-4086-8682-137caffd2ba6",
        attachable.configuration.id.to_string(),
    );
    request!(
        "instance-put-attach-config-group-request.json",
        "PUT",
        format!("/instances/{inst}"),
        Expect::Success,
        &ids
    );
    response!(
        "config-group-list-instances-response.json",
        s.get(&format!(
            "/configurations/{}/instances",
            attachable.configuration.id
        ))
        .await,
        &[]
    );
    response!(
        "config-group-show-response.json",
        s.get(&format!("/configurations/{cfg}")).await,
        &[]
    );
    response!(
        "config-groups-list-response.json",
        s.get("/configurations").await,
        &[]
    );
    response!(
        "instance-configuration-list-response.json",
        s.get(&format!("/instances/{inst}/configuration")).await,
        // The rendered keys are the engine's own; only the shape is upstream's.
        &["instance.configuration.*"]
    );

    // --- backups
    // The backup is taken (the instance shows BACKUP until it completes). The view shapes are checked on a backup
    // registered from an existing object (`restore_from`).
    request!(
        "backup-create-request.json",
        "POST",
        "/backups".to_string(),
        Expect::Success,
        &ids
    );
    s.wait_instance(&inst, "ACTIVE").await;
    let registered = s
        .post(
            "/backups",
            json!({"backup": {
                "name": "snapshot",
                "description": "My Backup",
                "instance": inst,
                "restore_from": {
                    "remote_location": "http://swift.example/v1/AUTH_t/database_backups/b.xbstream.gz.enc",
                    "local_datastore_version_id": version_ids[0],
                    "size": 0.2,
                },
            }}),
        )
        .await;
    // A registered backup comes from no instance of ours: `instance_id` is null (upstream registers it the same
    // way); every other field is upstream's.
    response!(
        "backup-create-response.json",
        registered.clone(),
        &["backup.instance_id"]
    );
    let backup = registered["backup"]["id"]
        .as_str()
        .expect("backup id")
        .to_string();
    let shown = s.get(&format!("/backups/{backup}")).await;
    response!("backup-get-response.json", shown, &["backup.instance_id"]);
    let pending_list: &[&str] = &["backups.instance_id"];
    response!(
        "backup-list-response.json",
        s.get("/backups").await,
        pending_list
    );
    response!(
        "instance-backup-list-response.json",
        s.get(&format!("/instances/{inst}/backups")).await,
        pending_list
    );
    let a = request!(
        "backup-strategy-create-request.json",
        "POST",
        "/backup_strategies".to_string(),
        Expect::Success,
        &ids
    );
    assert_eq!(
        a.status, 202,
        "backup strategy create answers 202: {}",
        a.body
    );
    response!("backup-strategy-create-response.json", a.body.clone(), &[]);
    let listed = s.get("/backup_strategies").await;
    assert_eq!(
        listed["backup_strategies"][0]["swift_container"], "my_trove_backups",
        "the created strategy is listed: {listed}"
    );
    response!("backup-strategy-list-response.json", listed, &[]);

    // --- datastores, versions, parameters
    let v57 = version_ids[0];
    response!(
        "datastore-list-response.json",
        s.get("/datastores").await,
        &[]
    );
    response!(
        "datastore-show-response.json",
        s.get("/datastores/mysql").await,
        &[]
    );
    response!(
        "datastore-version-list-response.json",
        s.get("/datastores/mysql/versions").await,
        &[]
    );
    response!(
        "datastore-version-show-response.json",
        s.get(&format!("/datastores/versions/{v57}")).await,
        &[]
    );
    response!(
        "datastore-version-parameter-list-response.json",
        s.get(&format!("/datastores/versions/{v57}/parameters"))
            .await,
        &[]
    );
    response!(
        "datastore-version-parameter-show-response.json",
        s.get(&format!(
            "/datastores/versions/{v57}/parameters/wait_timeout"
        ))
        .await,
        &[]
    );
    let a = request!(
        "datastore-version-create-request.json",
        "POST",
        "/mgmt/datastore-versions".to_string(),
        Expect::Success,
        &no_ids
    );
    let new_version = a.body["version"]["id"]
        .as_str()
        .expect("new version id")
        .to_string();
    request!(
        "datastore-version-mgmt-patch-request.json",
        "PATCH",
        format!("/mgmt/datastore-versions/{new_version}"),
        Expect::Success,
        &no_ids
    );
    response!(
        "datastore-version-mgmt-list-response.json",
        s.get("/mgmt/datastore-versions").await,
        &[]
    );
    response!(
        "datastore-version-mgmt-show-response.json",
        s.get(&format!("/mgmt/datastore-versions/{new_version}"))
            .await,
        &[]
    );
    let a = request!(
        "datastore-version-parameter-create-request.json",
        "POST",
        format!("/mgmt/datastores/versions/{new_version}/parameters"),
        Expect::Success,
        &no_ids
    );
    response!(
        "datastore-version-parameter-create-response.json",
        a.body.clone(),
        &[]
    );
    let a = request!(
        "datastore-version-parameter-update-request.json",
        "PUT",
        format!("/mgmt/datastores/versions/{new_version}/parameters/connect_timeout"),
        Expect::Success,
        &no_ids
    );
    response!(
        "datastore-version-parameter-update-response.json",
        a.body.clone(),
        &[]
    );

    // --- reads of the rich state
    response!(
        "instance-show-response.json",
        s.get(&format!("/instances/{inst}")).await,
        &[]
    );
    response!(
        "instance-list-response.json",
        s.get("/instances").await,
        &[]
    );
    response!(
        "instance-list-detail-response.json",
        s.get("/instances/detail").await,
        &[]
    );
    response!(
        "instance-mgmt-show-response.json",
        s.get(&format!("/mgmt/instances/{inst}")).await,
        // Nova's management network and its per-port details do not exist with local compute.
        &["instance.server.addresses.trove-mgmt"]
    );
    response!(
        "instance-mgmt-list-response.json",
        s.get("/mgmt/instances").await,
        &["instances.server.addresses.trove-mgmt"]
    );
    response!(
        "databases-list-response.json",
        s.get(&format!("/instances/{inst}/databases")).await,
        &[]
    );
    response!(
        "user-list-response.json",
        s.get(&format!("/instances/{inst}/users")).await,
        &[]
    );
    response!(
        "user-show-response.json",
        s.get(&format!("/instances/{inst}/users/dbuser1")).await,
        &[]
    );
    response!(
        "user-check-root-response.json",
        s.get(&format!("/instances/{inst}/root")).await,
        &[]
    );
    response!(
        "user-show-root-history-response.json",
        s.get(&format!("/mgmt/instances/{inst}/root")).await,
        &[]
    );
    response!("limit-show-response.json", s.get("/limits").await, &[]);
    request!(
        "quota-update.json",
        "PUT",
        format!("/mgmt/quotas/{T}"),
        Expect::Success,
        &no_ids
    );
    response!(
        "quota-show-response.json",
        s.get(&format!("/mgmt/quotas/{T}")).await,
        &[]
    );
    let versions = s.0.get_ok(&format!("{base}/")).await;
    response!("versions-response.json", versions, &[]);

    // --- updates of users and the instance
    request!(
        "user-put-request.json",
        "PUT",
        format!("/instances/{inst}/users/dbuser3"),
        Expect::Success,
        &no_ids
    );
    request!(
        "users-put-request.json",
        "PUT",
        format!("/instances/{inst}/users"),
        Expect::Success,
        &no_ids
    );
    request!(
        "instance-put-detach-config-group-request.json",
        "PUT",
        format!("/instances/{inst}"),
        Expect::Success,
        &no_ids
    );
    request!(
        "instance-put-detach-config-group-request-2.json",
        "PUT",
        format!("/instances/{inst}"),
        Expect::StateRefusal,
        &no_ids
    );
    request!(
        "instance-patch-update-name-request.json",
        "PATCH",
        format!("/instances/{inst}"),
        Expect::Success,
        &no_ids
    );
    request!(
        "instance-update-access-request.json",
        "PUT",
        format!("/instances/{other}"),
        Expect::StateRefusal,
        &no_ids
    );
    request!(
        "instance-patch-detach-replica-request.json",
        "PATCH",
        format!("/instances/{other}"),
        Expect::StateRefusal,
        &no_ids
    );
    let a = request!(
        "instance-patch-upgrade-datastore-version-request.json",
        "PATCH",
        format!("/instances/{other}"),
        Expect::Success,
        &no_ids
    );
    assert_eq!(a.status, 202, "upgrade: {}", a.body);
    s.wait_instance(&other, "ACTIVE").await;
    let shown = s.get(&format!("/instances/{other}")).await;
    assert_eq!(
        shown["instance"]["datastore"]["version"], "sample_datastore_version",
        "upgraded: {shown}"
    );

    // --- actions on the second instance
    s.wait_instance(&other, "ACTIVE").await;
    request!(
        "instance-action-restart-request.json",
        "POST",
        format!("/instances/{other}/action"),
        Expect::Success,
        &no_ids
    );
    s.wait_instance(&other, "ACTIVE").await;
    request!(
        "instance-action-resize-request.json",
        "POST",
        format!("/instances/{other}/action"),
        Expect::Success,
        &no_ids
    );
    s.wait_instance(&other, "ACTIVE").await;
    request!(
        "instance-action-resize-volume-request.json",
        "POST",
        format!("/instances/{other}/action"),
        Expect::Success,
        &no_ids
    );
    s.wait_instance(&other, "ACTIVE").await;
    // mgmt migrate (to the host the instance is not on) and rebuild, while it is ACTIVE
    let host_of = |v: &Value| {
        v["instance"]["server"]["host"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let before = host_of(&s.get(&format!("/mgmt/instances/{other}")).await);
    let target = if before == "compute-001" {
        "compute-002"
    } else {
        "compute-001"
    };
    let migrate_ids = BTreeMap::from([("compute-001", target.to_string())]);
    let a = request!(
        "instance-mgmt-action-migrate-request.json",
        "POST",
        format!("/mgmt/instances/{other}/action"),
        Expect::Success,
        &migrate_ids
    );
    assert_eq!(a.status, 202, "migrate: {}", a.body);
    s.wait_instance(&other, "ACTIVE").await;
    let after = host_of(&s.get(&format!("/mgmt/instances/{other}")).await);
    assert_eq!(after, target, "migrated from {before}");
    let a = request!(
        "instance-mgmt-action-rebuild-instance-request.json",
        "POST",
        format!("/mgmt/instances/{other}/action"),
        Expect::Success,
        &no_ids
    );
    assert_eq!(a.status, 202, "rebuild: {}", a.body);
    s.wait_instance(&other, "ACTIVE").await;
    request!(
        "instance-action-promote-replica-request.json",
        "POST",
        format!("/instances/{other}/action"),
        Expect::StateRefusal,
        &no_ids
    );
    request!(
        "instance-action-eject-replica-request.json",
        "POST",
        format!("/instances/{other}/action"),
        Expect::StateRefusal,
        &no_ids
    );
    request!(
        "instance-mgmt-action-reboot-request.json",
        "POST",
        format!("/mgmt/instances/{other}/action"),
        Expect::StateRefusal,
        &no_ids
    );
    request!(
        "instance-mgmt-action-stop-request.json",
        "POST",
        format!("/mgmt/instances/{other}/action"),
        Expect::StateRefusal,
        &no_ids
    );
    request!(
        "instance-mgmt-action-reset-task-status-request.json",
        "POST",
        format!("/mgmt/instances/{other}/action"),
        Expect::Success,
        &no_ids
    );
    request!(
        "instance-action-reset-status-request.json",
        "POST",
        format!("/instances/{other}/action"),
        Expect::Success,
        &no_ids
    );
    // --- guest logs: enable, publish, show, discard, disable the general log of the first instance
    let logs = s.get(&format!("/instances/{inst}/log")).await;
    let names: Vec<&str> = logs["logs"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(names.contains(&"general"), "mysql exposes general: {logs}");
    response!("instance-log-list-response.json", logs, &[]);
    for (req, resp, status) in [
        (
            "instance-log-enable-request.json",
            "instance-log-enable-response.json",
            "Enabled",
        ),
        (
            "instance-log-publish-request.json",
            "instance-log-publish-response.json",
            "Published",
        ),
        (
            "instance-log-show-request.json",
            "instance-log-show-response.json",
            "Published",
        ),
        (
            "instance-log-discard-request.json",
            "instance-log-discard-response.json",
            "Ready",
        ),
        (
            "instance-log-disable-request.json",
            "instance-log-disable-response.json",
            "Disabled",
        ),
    ] {
        let a = request!(
            req,
            "POST",
            format!("/instances/{inst}/log"),
            Expect::Success,
            &no_ids
        );
        assert_eq!(a.body["log"]["name"], "general", "{req}: {}", a.body);
        if req == "instance-log-enable-request.json" {
            // Something for the general log to hold.
            s.get(&format!("/instances/{inst}/databases")).await;
        }
        // After a discard nothing is published; the simulated engine may or may not have written more since.
        let got = a.body["log"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let fine = got == status || (status == "Ready" && got == "Enabled");
        if !fine {
            errors.push(format!(
                "{req}: log status {got}, expected {status}: {}",
                a.body
            ));
        }
        response!(resp, a.body.clone(), &[]);
    }

    // --- SSL. The samples name Barbican secrets; this deployment has no secret store and says so (400), and
    // accepts the same request with file:// references (the simulated guest reads no files, the real ones do:
    // tests/instance_ssl.rs).
    let a = s
        .call(
            "POST",
            &format!("/instances/{inst}/ssl"),
            Some(&sample("instance-ssl-action-request.json")),
        )
        .await;
    assert_eq!(a.status, 400, "Barbican reference: {}", a.body);
    assert!(
        a.body.to_string().contains("file://"),
        "the refusal says what to give instead: {}",
        a.body
    );
    let pem_dir = tempfile::tempdir().expect("tempdir");
    let bundle = pem_dir.path().join("bundle.pem");
    let pass = pem_dir.path().join("pass.txt");
    std::fs::write(&bundle, "not read by the simulated guest\n").expect("bundle");
    std::fs::write(&pass, "pw\n").expect("pass");
    let ssl_ids = BTreeMap::from([
        (
            "https://barbican.example.kz/v1/secrets/2b4edf0-586b-49c4-a183-716a66d86f4e1",
            format!("file://{}", bundle.display()),
        ),
        (
            "https://barbican.example.kz/v1/secrets/3927c462-60eb-4f1f-b64c-5a6835778371",
            format!("file://{}", pass.display()),
        ),
    ]);
    for (req, resp, on) in [
        (
            "instance-ssl-action-request.json",
            "instance-ssl-action-response.json",
            "on",
        ),
        (
            "instance-ssl-action-request-disable.json",
            "instance-ssl-action-response-disable.json",
            "off",
        ),
        (
            "instance-ssl-action-request-rollback.json",
            "instance-ssl-action-response-rollback.json",
            "on",
        ),
    ] {
        let a = request!(
            req,
            "POST",
            format!("/instances/{inst}/ssl"),
            Expect::Success,
            &ssl_ids
        );
        assert_eq!(a.body["ssl"]["status"], on, "{req}: {}", a.body);
        response!(resp, a.body.clone(), &[]);
    }
    response!(
        "instance-ssl-show-response.json",
        s.get(&format!("/instances/{inst}/ssl")).await,
        &[]
    );

    let unvisited: Vec<&String> = files.iter().filter(|f| !seen.contains(*f)).collect();
    assert!(
        unvisited.is_empty(),
        "samples not covered by this test: {unvisited:?}"
    );
    eprintln!("{} samples walked", files.len());
    assert!(
        errors.is_empty(),
        "{} sample mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
    cp.shutdown().await;
}
