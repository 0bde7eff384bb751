//! The HTTP layer over a real (in-memory) control plane: tenant isolation, admin checks, bad input answered
//! with upstream faults (never a 500), rate limiting, pagination, version documents and the OpenAPI document.

mod api_support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use trove::control_plane::ControlPlane;
use trove::http::{HttpConfig, RateLimits};

use api_support::{alpha_beta_ops_tokens, seed_tiny_mysql, serve_in_process, HttpClient};

/// An in-memory control plane with flavor 1 and mysql 5.7, served over HTTP with the tokens `tok-a` (alpha),
/// `tok-b` (beta) and `tok-ops` (admin).
async fn setup(config: HttpConfig) -> (ControlPlane, HttpClient) {
    let cp = ControlPlane::in_memory().await.expect("control plane");
    let api = cp.api();
    seed_tiny_mysql(&api).await;
    let base = serve_in_process(api, Arc::new(alpha_beta_ops_tokens()), config).await;
    (cp, HttpClient::new(base, ""))
}

const CREATE: &str = r#"{"instance": {"name": "db1", "flavorRef": "1", "volume": {"size": 1}, "datastore": {"type": "mysql", "version": "5.7"}}}"#;

async fn wait_active(c: &HttpClient, tenant: &str, token: &str, id: &str) {
    HttpClient::new(c.base.clone(), token)
        .wait_instance(
            &format!("/v1.0/{tenant}/instances/{id}"),
            &["ACTIVE"],
            Duration::from_secs(30),
        )
        .await;
}

/// As upstream, an admin (token-file roles: `tok-ops` is admin of project ops) reaches a member's instance through
/// the project-scoped routes of the admin's own project: show, reset status, delete. A member of another project
/// still gets 404 for the same routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_acts_on_a_members_instance() {
    let (cp, c) = setup(HttpConfig::default()).await;
    let (s, b, _) = c
        .request("POST", "/v1.0/alpha/instances", "tok-a", Some(CREATE))
        .await;
    assert_eq!(s, 200, "create: {b}");
    let id = b["instance"]["id"].as_str().expect("id").to_string();
    wait_active(&c, "alpha", "tok-a", &id).await;
    let (s, b, _) = c
        .request("GET", &format!("/v1.0/beta/instances/{id}"), "tok-b", None)
        .await;
    assert_eq!(s, 404, "a member of another project: {b}");

    let (s, shown, _) = c
        .request("GET", &format!("/v1.0/ops/instances/{id}"), "tok-ops", None)
        .await;
    assert_eq!(s, 200, "the admin shows it: {shown}");
    assert_eq!(shown["instance"]["id"], id.as_str());
    let (s, b, _) = c
        .request(
            "POST",
            &format!("/v1.0/ops/instances/{id}/action"),
            "tok-ops",
            Some(r#"{"reset_status": {}}"#),
        )
        .await;
    assert_eq!(s, 202, "the admin resets its status: {b}");
    let (s, b, _) = c
        .request(
            "DELETE",
            &format!("/v1.0/ops/instances/{id}"),
            "tok-ops",
            None,
        )
        .await;
    assert_eq!(s, 202, "the admin deletes it: {b}");
    let start = std::time::Instant::now();
    loop {
        let (s, b, _) = c
            .request("GET", &format!("/v1.0/alpha/instances/{id}"), "tok-a", None)
            .await;
        if s == 404 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the member still sees the deleted instance: {s} {b}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_see_each_other() {
    let (cp, c) = setup(HttpConfig::default()).await;
    let (s, b, _) = c
        .request("POST", "/v1.0/alpha/instances", "tok-a", Some(CREATE))
        .await;
    assert_eq!(s, 200, "create: {b}");
    let id = b["instance"]["id"].as_str().expect("id").to_string();
    wait_active(&c, "alpha", "tok-a", &id).await;

    // beta cannot see, change or delete alpha's instance: 404, as if it did not exist
    let (s, list, _) = c
        .request("GET", "/v1.0/beta/instances", "tok-b", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(list["instances"], json!([]), "beta lists nothing: {list}");
    for (m, path, body) in [
        ("GET", format!("/v1.0/beta/instances/{id}"), None),
        ("DELETE", format!("/v1.0/beta/instances/{id}"), None),
        (
            "POST",
            format!("/v1.0/beta/instances/{id}/action"),
            Some(r#"{"restart": {}}"#),
        ),
        ("GET", format!("/v1.0/beta/instances/{id}/databases"), None),
        ("POST", format!("/v1.0/beta/instances/{id}/root"), None),
    ] {
        let (s, b, _) = c.request(m, &path, "tok-b", body).await;
        assert_eq!(s, 404, "{m} {path} by beta: {b}");
        assert_eq!(b["itemNotFound"]["code"], 404, "fault shape: {b}");
    }
    // beta's token on alpha's URL: 403
    let (s, b, _) = c
        .request("GET", &format!("/v1.0/alpha/instances/{id}"), "tok-b", None)
        .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["forbidden"]["code"], 403);
    // no token / bad token: 401
    let (s, b, _) = c.request("GET", "/v1.0/alpha/instances", "", None).await;
    assert_eq!(s, 401, "{b}");
    let (s, _, _) = c
        .request("GET", "/v1.0/alpha/instances", "nope", None)
        .await;
    assert_eq!(s, 401);
    // mgmt needs admin; the owner may read its own quota
    let (s, b, _) = c
        .request("GET", "/v1.0/alpha/mgmt/instances", "tok-a", None)
        .await;
    assert_eq!(s, 403, "{b}");
    let (s, b, _) = c
        .request("GET", "/v1.0/alpha/mgmt/quotas/alpha", "tok-a", None)
        .await;
    assert_eq!(s, 200, "own quota: {b}");
    let (s, _, _) = c
        .request(
            "PUT",
            "/v1.0/alpha/mgmt/quotas/alpha",
            "tok-a",
            Some(r#"{"quotas": {"instances": 99}}"#),
        )
        .await;
    assert_eq!(s, 403);
    let (s, b, _) = c
        .request("GET", "/v1.0/ops/mgmt/instances", "tok-ops", None)
        .await;
    assert_eq!(s, 200, "admin mgmt: {b}");
    let ids: Vec<&str> = b["instances"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert!(
        ids.contains(&id.as_str()),
        "the admin sees every tenant's instances: {b}"
    );
    // the owner still has it
    let (s, b, _) = c
        .request("GET", &format!("/v1.0/alpha/instances/{id}"), "tok-a", None)
        .await;
    assert_eq!(s, 200, "{b}");
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_fault_never_a_500() {
    let (cp, c) = setup(HttpConfig {
        max_body_bytes: 4096,
        ..HttpConfig::default()
    })
    .await;
    let big = format!(r#"{{"instance": {{"name": "{}"}}}}"#, "x".repeat(10_000));
    let cases: Vec<(&str, String, Option<String>, u16)> = vec![
        ("POST", "/v1.0/alpha/instances".into(), Some("{not json".into()), 400),
        ("POST", "/v1.0/alpha/instances".into(), Some("[]".into()), 400),
        ("POST", "/v1.0/alpha/instances".into(), Some("".into()), 400),
        ("POST", "/v1.0/alpha/instances".into(), Some(r#"{"instance": {"name": 5}}"#.into()), 400),
        ("POST", "/v1.0/alpha/instances".into(), Some(r#"{"instance": {"name": "x", "volume": {"size": -1}}}"#.into()), 400),
        ("POST", "/v1.0/alpha/instances".into(), Some(r#"{"instance": {"name": "x", "flavorRef": {}}}"#.into()), 400),
        ("POST", "/v1.0/alpha/instances".into(), Some(r#"{"instance": {"name": "x", "locality": "nearby"}}"#.into()), 400),
        ("POST", "/v1.0/alpha/instances".into(), Some(big), 413),
        ("GET", "/v1.0/alpha/instances/not-a-uuid".into(), None, 404),
        ("GET", "/v1.0/alpha/instances/00000000-0000-0000-0000-000000000000".into(), None, 404),
        ("PUT", "/v1.0/alpha/instances/00000000-0000-0000-0000-000000000000".into(), Some(r#"{"instance": {"flavor": "2"}}"#.into()), 400),
        ("POST", "/v1.0/alpha/instances/00000000-0000-0000-0000-000000000000/action".into(), Some(r#"{"explode": {}}"#.into()), 400),
        ("POST", "/v1.0/alpha/instances/00000000-0000-0000-0000-000000000000/action".into(), Some(r#"{"restart": {}, "resize": {}}"#.into()), 400),
        ("GET", "/v1.0/alpha/instances?limit=abc".into(), None, 400),
        ("GET", "/v1.0/alpha/instances?marker=nope".into(), None, 400),
        ("GET", "/v1.0/alpha/no-such-collection".into(), None, 404),
        ("DELETE", "/v1.0/alpha/flavors".into(), None, 405),
        ("POST", "/v1.0/alpha/configurations".into(), Some(r#"{"configuration": {"name": "c", "values": {"max_connections": 10}, "colour": 1}}"#.into()), 400),
        ("POST", "/v1.0/alpha/backups".into(), Some(r#"{"backup": {"name": "b", "instance": "not-a-uuid"}}"#.into()), 400),
        ("GET", "/v1.0/alpha/backups/not-a-uuid".into(), None, 404),
        ("GET", "/v1.0/alpha/configurations/not-a-uuid".into(), None, 404),
    ];
    for (m, path, body, want) in cases {
        let (s, b, _) = c.request(m, &path, "tok-a", body.as_deref()).await;
        assert_eq!(
            s,
            want,
            "{m} {path} {:?}: {b}",
            body.as_deref().map(|b| &b[..b.len().min(80)])
        );
        let fault = b
            .as_object()
            .and_then(|o| o.values().next())
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(fault["code"], want, "fault body of {m} {path}: {b}");
        assert!(
            fault["message"].as_str().is_some_and(|m| !m.is_empty()),
            "message of {m} {path}: {b}"
        );
    }
    // a user name that would reach the engine is refused before it does
    let (s, b, _) = c
        .request("POST", "/v1.0/alpha/instances", "tok-a", Some(CREATE))
        .await;
    assert_eq!(s, 200, "{b}");
    let id = b["instance"]["id"].as_str().expect("id").to_string();
    wait_active(&c, "alpha", "tok-a", &id).await;
    let (s, b, _) = c
        .request(
            "POST",
            &format!("/v1.0/alpha/instances/{id}/databases"),
            "tok-a",
            Some(r#"{"databases": [{"name": "x`; DROP"}]}"#),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_413_with_retry_after() {
    let (cp, c) = setup(HttpConfig {
        rate_limits: Some(RateLimits {
            get: 3,
            ..RateLimits::default()
        }),
        ..HttpConfig::default()
    })
    .await;
    for _ in 0..3 {
        let (s, _, _) = c.request("GET", "/v1.0/alpha/flavors", "tok-a", None).await;
        assert_eq!(s, 200);
    }
    let (s, b, h) = c.request("GET", "/v1.0/alpha/flavors", "tok-a", None).await;
    assert_eq!(s, 413, "{b}");
    assert_eq!(b["overLimit"]["code"], 413);
    assert_eq!(b["overLimit"]["message"], "This request was rate-limited.");
    let retry: u64 = h
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(b["overLimit"]["retryAfter"], retry.to_string());
    // another tenant is not limited
    let (s, _, _) = c.request("GET", "/v1.0/beta/flavors", "tok-b", None).await;
    assert_eq!(s, 200);
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_versions_and_openapi() {
    let (cp, c) = setup(HttpConfig::default()).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (s, b, _) = c
            .request("POST", "/v1.0/alpha/instances", "tok-a", Some(CREATE))
            .await;
        assert_eq!(s, 200, "{b}");
        ids.push(b["instance"]["id"].as_str().expect("id").to_string());
        tokio::time::sleep(Duration::from_millis(1100)).await; // distinct `created` seconds
    }
    let (s, p1, _) = c
        .request("GET", "/v1.0/alpha/instances?limit=2", "tok-a", None)
        .await;
    assert_eq!(s, 200);
    let first: Vec<&str> = p1["instances"]
        .as_array()
        .expect("page")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(
        first,
        vec![ids[2].as_str(), ids[1].as_str()],
        "newest first: {p1}"
    );
    let next = p1["links"][0]["href"].as_str().expect("next link");
    assert_eq!(p1["links"][0]["rel"], "next");
    assert!(
        next.contains(&format!("marker={}", ids[1])) && next.contains("limit=2"),
        "{next}"
    );
    let path = next.strip_prefix(&c.base).expect("same base");
    let (_, p2, _) = c.request("GET", path, "tok-a", None).await;
    let second: Vec<&str> = p2["instances"]
        .as_array()
        .expect("page")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(second, vec![ids[0].as_str()]);
    assert!(
        p2.get("links").is_none(),
        "last page has no next link: {p2}"
    );

    let (s, v, _) = c.request("GET", "/", "", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["versions"][0]["id"], "v1.0");
    assert_eq!(
        v["versions"][0]["links"][0]["href"],
        format!("{}/v1.0/", c.base)
    );
    let (s, v, _) = c.request("GET", "/v1.0/", "", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["version"]["status"], "CURRENT");

    let (s, doc, _) = c.request("GET", "/openapi.json", "", None).await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    let operations: usize = paths
        .values()
        .filter_map(Value::as_object)
        .map(|m| m.len())
        .sum();
    assert!(
        paths.len() >= 45 && operations >= 80,
        "every route is documented: {} paths, {operations} operations",
        paths.len()
    );
    assert_eq!(
        doc["paths"]["/v1.0/{tenant_id}/instances"]["post"]["responses"]["200"]["description"],
        "Success"
    );
    assert!(doc["paths"]["/v1.0/{tenant_id}/instances/{instance_id}/action"]["post"].is_object());
    assert!(doc["paths"]["/v1.0/{tenant_id}/mgmt/quotas/{project_id}"]["put"].is_object());
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_strategies_are_per_tenant_and_validated() {
    let (_cp, c) = setup(HttpConfig::default()).await;
    let (s, b, _) = c
        .request("POST", "/v1.0/alpha/instances", "tok-a", Some(CREATE))
        .await;
    assert_eq!(s, 200, "create: {b}");
    let id = b["instance"]["id"].as_str().expect("id").to_string();

    // tenant-wide, then one for the instance; a second create for the same target replaces the first
    for (body, want_instance) in [
        (
            r#"{"backup_strategy": {"swift_container": "old"}}"#.to_string(),
            "",
        ),
        (
            r#"{"backup_strategy": {"swift_container": "wide"}}"#.to_string(),
            "",
        ),
        (
            format!(
                r#"{{"backup_strategy": {{"instance_id": "{id}", "swift_container": "mine"}}}}"#
            ),
            id.as_str(),
        ),
    ] {
        let (s, b, _) = c
            .request(
                "POST",
                "/v1.0/alpha/backup_strategies",
                "tok-a",
                Some(&body),
            )
            .await;
        assert_eq!(s, 202, "{body}: {b}");
        assert_eq!(b["backup_strategy"]["project_id"], "alpha", "{b}");
        assert_eq!(b["backup_strategy"]["instance_id"], want_instance, "{b}");
        assert_eq!(b["backup_strategy"]["backend"], "swift", "{b}");
    }
    let (s, b, _) = c
        .request("GET", "/v1.0/alpha/backup_strategies", "tok-a", None)
        .await;
    assert_eq!(s, 200, "{b}");
    let containers: Vec<&str> = b["backup_strategies"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["swift_container"].as_str())
        .collect();
    assert_eq!(
        containers,
        ["wide", "mine"],
        "tenant-wide first, replaced once: {b}"
    );
    let (_, b, _) = c
        .request(
            "GET",
            &format!("/v1.0/alpha/backup_strategies?instance_id={id}"),
            "tok-a",
            None,
        )
        .await;
    assert_eq!(
        b["backup_strategies"].as_array().map(Vec::len),
        Some(1),
        "{b}"
    );

    // another tenant sees none of it and cannot target alpha's instance or project
    let (s, b, _) = c
        .request("GET", "/v1.0/beta/backup_strategies", "tok-b", None)
        .await;
    assert_eq!((s, &b["backup_strategies"]), (200, &json!([])), "{b}");
    let theirs =
        format!(r#"{{"backup_strategy": {{"instance_id": "{id}", "swift_container": "x"}}}}"#);
    let (s, b, _) = c
        .request(
            "POST",
            "/v1.0/beta/backup_strategies",
            "tok-b",
            Some(&theirs),
        )
        .await;
    assert_eq!(s, 404, "another tenant's instance: {b}");
    for (m, q) in [
        ("GET", "?project_id=alpha"),
        ("DELETE", "?project_id=alpha"),
    ] {
        let (s, b, _) = c
            .request(
                m,
                &format!("/v1.0/beta/backup_strategies{q}"),
                "tok-b",
                None,
            )
            .await;
        assert_eq!(s, 403, "{m} {q}: {b}");
    }
    let (s, b, _) = c
        .request(
            "GET",
            "/v1.0/ops/backup_strategies?project_id=alpha",
            "tok-ops",
            None,
        )
        .await;
    assert_eq!(s, 200, "admin: {b}");
    assert_eq!(
        b["backup_strategies"].as_array().map(Vec::len),
        Some(2),
        "{b}"
    );

    // bad input: 400/404 faults, nothing stored
    for (body, status) in [
        (r#"{"backup_strategy": {}}"#, 400),
        (r#"{"backup_strategy": {"swift_container": ""}}"#, 400),
        (r#"{"backup_strategy": {"swift_container": "a/b"}}"#, 400),
        (
            r#"{"backup_strategy": {"swift_container": "c", "colour": 1}}"#,
            400,
        ),
        (r#"{"backup_strategy": {"swift_container": 7}}"#, 400),
        (
            r#"{"backup_strategy": {"instance_id": "not-a-uuid", "swift_container": "c"}}"#,
            404,
        ),
        (r#"{"backup_strategy": "#, 400),
    ] {
        let (s, b, _) = c
            .request("POST", "/v1.0/beta/backup_strategies", "tok-b", Some(body))
            .await;
        assert_eq!(s, status, "{body}: {b}");
    }
    let (_, b, _) = c
        .request("GET", "/v1.0/beta/backup_strategies", "tok-b", None)
        .await;
    assert_eq!(b["backup_strategies"], json!([]), "nothing stored: {b}");

    // delete: exact target; deleting again is still 202
    for _ in 0..2 {
        let (s, b, _) = c
            .request(
                "DELETE",
                &format!("/v1.0/alpha/backup_strategies?instance_id={id}"),
                "tok-a",
                None,
            )
            .await;
        assert_eq!(s, 202, "{b}");
    }
    let (_, b, _) = c
        .request("GET", "/v1.0/alpha/backup_strategies", "tok-a", None)
        .await;
    assert_eq!(b["backup_strategies"][0]["swift_container"], "wide", "{b}");
    assert_eq!(
        b["backup_strategies"].as_array().map(Vec::len),
        Some(1),
        "{b}"
    );
    let (s, _, _) = c
        .request("DELETE", "/v1.0/alpha/backup_strategies", "tok-a", None)
        .await;
    assert_eq!(s, 202);
    let (_, b, _) = c
        .request("GET", "/v1.0/alpha/backup_strategies", "tok-a", None)
        .await;
    assert_eq!(b["backup_strategies"], json!([]), "{b}");
}

/// The backup-schedule extension over HTTP: create (202 with the next run), its bad bodies (400 with what to do),
/// another project's 404, list, delete; and its routes in `/openapi.json` with their bodies described.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_schedules_over_http() {
    let (_cp, c) = setup(HttpConfig::default()).await;
    let (s, b, _) = c
        .request("POST", "/v1.0/alpha/instances", "tok-a", Some(CREATE))
        .await;
    assert_eq!(s, 200, "create: {b}");
    let id = b["instance"]["id"].as_str().expect("id").to_string();
    wait_active(&c, "alpha", "tok-a", &id).await;
    let path = format!("/v1.0/alpha/instances/{id}/backup_schedules");
    let body = json!({"backup_schedule": {"name": "nightly", "cron": "30 2 * * *", "incremental": true, "keep_last": 7}});
    let (s, made, _) = c
        .request("POST", &path, "tok-a", Some(&body.to_string()))
        .await;
    assert_eq!(s, 202, "{made}");
    let sch = &made["backup_schedule"];
    assert_eq!(sch["cron"], "30 2 * * *");
    assert_eq!(sch["keep_last"], 7);
    assert!(
        sch["next_run"]
            .as_str()
            .is_some_and(|t| t.ends_with("02:30:00")),
        "{sch}"
    );
    for (bad, why) in [
        (
            json!({"backup_schedule": {"name": "x", "cron": "30 2 * * *", "interval": 3600}}),
            "exactly one",
        ),
        (
            json!({"backup_schedule": {"name": "x", "cron": "61 * * * *"}}),
            "outside 0-59",
        ),
        (
            json!({"backup_schedule": {"name": "x", "interval": 5}}),
            "at least 60",
        ),
        (
            json!({"backup_schedule": {"name": "x", "interval": 3600, "keep_last": 0}}),
            "at least 1",
        ),
    ] {
        let (s, b, _) = c
            .request("POST", &path, "tok-a", Some(&bad.to_string()))
            .await;
        assert_eq!(s, 400, "{bad}: {b}");
        assert!(b.to_string().contains(why), "{bad}: {b}");
    }
    let (s, _, _) = c
        .request(
            "GET",
            &format!("/v1.0/beta/instances/{id}/backup_schedules"),
            "tok-b",
            None,
        )
        .await;
    assert_eq!(s, 404, "another project");
    let (s, list, _) = c.request("GET", &path, "tok-a", None).await;
    assert_eq!(s, 200);
    let rows = list["backup_schedules"].as_array().expect("list");
    assert_eq!(rows.len(), 1, "{list}");
    let sid = rows[0]["id"].as_str().expect("id");
    let (s, _, _) = c
        .request("DELETE", &format!("{path}/{sid}"), "tok-a", None)
        .await;
    assert_eq!(s, 202);
    let (_, list, _) = c.request("GET", &path, "tok-a", None).await;
    assert_eq!(list["backup_schedules"], json!([]));
    let (s, doc, _) = c.request("GET", "/openapi.json", "", None).await;
    assert_eq!(s, 200);
    let op = &doc["paths"]["/v1.0/{tenant_id}/instances/{instance_id}/backup_schedules"]["post"];
    assert_eq!(op["operationId"], "createBackupSchedule");
    assert!(
        op["description"]
            .as_str()
            .is_some_and(|d| d.contains("keep_last")),
        "{op}"
    );
}
