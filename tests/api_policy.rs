//! Policy rules through the HTTP API with the token-file authenticator (roles reach the policy from the token
//! file), an operator's policy file read by the loader the binaries use, and a broken policy file refusing
//! start-up (the loader and the all-in-one binary).

mod api_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::json;
use trove::backends::auth::load_token_file;
use trove::core::policy::Policy;
use trove::http::HttpConfig;
use trove::{load_policy_file, ControlPlane, InMemoryParts};

use api_support::{all_in_one_binary, seed_tiny_mysql, serve_in_process, HttpClient};

const TOKENS: &str = "\
# token     project  user   roles
tok-member  p1       alice  member
tok-admin   p1       boss   admin,member
tok-other   p2       carol  member
tok-support p3       dave   support
";

const CREATE: &str = r#"{"instance": {"name": "db1", "flavorRef": "1", "volume": {"size": 1}, "datastore": {"type": "mysql", "version": "5.7"}}}"#;
const RESET: &str = r#"{"reset_status": {}}"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

/// An in-memory control plane under `policy` served over HTTP with the token file [`TOKENS`]; project p1 has
/// one instance (its id is answered).
async fn serve(policy: Policy, dir: &Path) -> (ControlPlane, HttpClient, String) {
    let cp = InMemoryParts::new(
        trove::core::CoreConfig::default(),
        Arc::new(trove::core::ports::SystemClock),
    )
    .builder()
    .policy(Arc::new(policy))
    .start()
    .await
    .expect("control plane");
    seed_tiny_mysql(&cp.api()).await;
    let tokens = load_token_file(&write(dir, "tokens", TOKENS)).expect("token file");
    let base = serve_in_process(cp.api(), Arc::new(tokens), HttpConfig::default()).await;
    let c = HttpClient::new(base, "");
    let (s, b, _) = c
        .request("POST", "/v1.0/p1/instances", "tok-member", Some(CREATE))
        .await;
    assert_eq!(s, 200, "create: {b}");
    let id = b["instance"]["id"].as_str().expect("id").to_string();
    (cp, c, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_status_is_admin_only_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cp, c, id) = serve(Policy::default(), dir.path()).await;
    let action = format!("/v1.0/p1/instances/{id}/action");
    let (s, b, _) = c.request("POST", &action, "tok-member", Some(RESET)).await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(
        b,
        json!({"forbidden": {"code": 403, "message": "Policy doesn't allow instance:reset_status to be performed."}})
    );
    let (s, b, _) = c.request("POST", &action, "tok-admin", Some(RESET)).await;
    assert_eq!(s, 202, "the admin resets: {b}");
    // Another project's member still does not see the instance at all.
    let (s, b, _) = c
        .request(
            "POST",
            &format!("/v1.0/p2/instances/{id}/action"),
            "tok-other",
            Some(RESET),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    // Upstream guards the force-delete variant with its own owner rule: a member may use it.
    let (s, b, _) = c
        .request(
            "POST",
            &action,
            "tok-member",
            Some(r#"{"reset_status": {"force_delete": true}}"#),
        )
        .await;
    assert_eq!(s, 202, "force delete by the owner: {b}");
    // The listing routes answer under their own rules; mgmt stays for admins, quotas for their owner.
    for (path, token, want) in [
        ("/v1.0/p1/instances", "tok-member", 200),
        ("/v1.0/p1/instances/detail", "tok-member", 200),
        ("/v1.0/p1/mgmt/instances", "tok-member", 403),
        ("/v1.0/p1/mgmt/instances", "tok-admin", 200),
        ("/v1.0/p1/mgmt/quotas/p1", "tok-member", 200),
        ("/v1.0/p1/mgmt/quotas/p2", "tok-member", 403),
        ("/v1.0/p1/mgmt/quotas/p2", "tok-admin", 200),
    ] {
        let (s, b, _) = c.request("GET", path, token, None).await;
        assert_eq!(s, want, "GET {path} with {token}: {b}");
    }
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_file_opens_reset_status_to_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "policy.yaml",
        "# Members may reset their own instances; a support role may list every instance.\n\
         \"instance:reset_status\": \"rule:admin_or_owner\"\n\
         mgmt:instance:index: rule:admin or role:support\n\
         \"instance:detail\": \"!\"\n",
    );
    let policy = load_policy_file(&file).expect("policy file");
    let (cp, c, id) = serve(policy, dir.path()).await;
    let (s, b, _) = c
        .request(
            "POST",
            &format!("/v1.0/p1/instances/{id}/action"),
            "tok-member",
            Some(RESET),
        )
        .await;
    assert_eq!(s, 202, "opened to the owner's members: {b}");
    let (s, b, _) = c
        .request(
            "POST",
            &format!("/v1.0/p2/instances/{id}/action"),
            "tok-other",
            Some(RESET),
        )
        .await;
    assert_eq!(s, 404, "still not to another project: {b}");
    let (s, b, _) = c
        .request("GET", "/v1.0/p3/mgmt/instances", "tok-support", None)
        .await;
    assert_eq!(s, 200, "the support role lists instances: {b}");
    assert_eq!(b["instances"][0]["id"], json!(id), "{b}");
    let (s, b, _) = c
        .request("GET", "/v1.0/p1/instances/detail", "tok-member", None)
        .await;
    assert_eq!(s, 403, "closed by the file: {b}");
    assert_eq!(
        b["forbidden"]["message"],
        "Policy doesn't allow instance:detail to be performed."
    );
    let (s, _, _) = c
        .request("GET", "/v1.0/p1/instances", "tok-member", None)
        .await;
    assert_eq!(s, 200, "the plain listing has its own rule");
    cp.shutdown().await;
}

#[test]
fn a_broken_policy_file_is_refused_with_the_file_the_line_and_the_fault() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, want) in [
        (
            "instance:delete: rule:admin\ninstance:create: rule:admn\n",
            "line 2: rule 'instance:create' refers to rule 'admn', which is not defined",
        ),
        (
            "# ok\n\"instance:show\": \"role:admin or\"\n",
            "line 2: rule 'instance:show': bad check string",
        ),
        (
            "instance:show:\n  - role:admin\n",
            "line 1: rule 'instance:show' has no check string",
        ),
        (
            "\"trove:instance:reset_status\": \"rule:admin_or_owner\"\n",
            "did you mean 'instance:reset_status'?",
        ),
    ] {
        let path = write(dir.path(), "policy.yaml", text);
        let e = load_policy_file(&path).expect_err(text).to_string();
        assert!(
            e.contains(&format!("policy file {}: ", path.display())) && e.contains(want),
            "{text:?}: {e}"
        );
    }
    let missing = dir.path().join("nope.yaml");
    let e = load_policy_file(&missing).expect_err("missing").to_string();
    assert!(
        e.contains(&missing.display().to_string()) && e.contains("cannot read it"),
        "{e}"
    );
}

#[test]
fn the_all_in_one_refuses_to_start_with_a_broken_policy_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(
        dir.path(),
        "policy.yaml",
        "instance:create: rule:admin_or_owner\ninstance:delete: [rule:admin]\n",
    );
    let out = Command::new(all_in_one_binary())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--no-seed")
        .arg("--policy-file")
        .arg(&policy)
        .env_remove("TROVE_DATABASE_URL")
        .output()
        .expect("run all-in-one");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains(&format!(
            "policy file {}: line 2: '[' cannot start a plain value",
            policy.display()
        )),
        "{stderr}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "nothing was set up before the policy was read"
    );
}
