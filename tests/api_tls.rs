//! The all-in-one server serving HTTPS (`--tls-cert`/`--tls-key`): a client that trusts the CA gets the API (the
//! server's certificate file carries its intermediate), the real `openstack` CLI works with `--os-cacert`, plain
//! HTTP on the port gets no answer, and bad certificate or key files refuse to start with a message naming the file.

mod api_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use api_support::{all_in_one_binary, https_addr, https_get, tls_material, AllInOne, OpenStackCli};
use serde_json::Value;

fn names(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r[key].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn serves_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = tls_material(dir.path());
    let cert = m.chain.to_str().expect("utf-8");
    let key = m.key.to_str().expect("utf-8");
    let server = AllInOne::start(&["--tls-cert", cert, "--tls-key", key]);
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "the server prints 'listening on https://ADDR': {}",
        server.base
    );
    let addr = https_addr(&server.base);

    // (a) A client that trusts only the root CA gets the API: the server sent its intermediate along.
    let (s, body) = https_get(addr, &m.ca, "/").expect("HTTPS GET /");
    assert_eq!(s, 200, "{body}");
    let versions: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        versions["versions"][0]["links"][0]["href"],
        format!("{}/v1.0/", server.base),
        "links carry the https scheme: {versions}"
    );
    let (s, body) = https_get(addr, &m.ca, "/v1.0/demo/flavors").expect("HTTPS GET flavors");
    assert_eq!(s, 200, "{body}");
    let flavors: Value = serde_json::from_str(&body).expect("json");
    assert!(
        names(&flavors["flavors"], "name").contains(&"m1.small".to_string()),
        "{flavors}"
    );
    // A client that does not trust that CA refuses the certificate.
    let e = https_get(addr, &m.stranger, "/").expect_err("another CA's client refuses");
    assert!(e.to_lowercase().contains("certificate"), "{e}");

    // (c) Plain HTTP on the HTTPS port gets no HTTP answer.
    let mut plain = TcpStream::connect(addr).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1."),
        "plain HTTP was answered: {:?}",
        String::from_utf8_lossy(&got)
    );
    // A client that connects and never starts its handshake holds up nobody.
    let _silent = TcpStream::connect(addr).expect("connect");
    let (s, _) = https_get(addr, &m.ca, "/").expect("HTTPS GET / beside a silent client");
    assert_eq!(s, 200);

    // (b) The real openstack CLI with --os-cacert; without it, the certificate is not trusted.
    let endpoint = format!("{}/v1.0/demo", server.base);
    let ca = m.ca.to_str().expect("utf-8");
    let mut cli = OpenStackCli::start_with(&endpoint, &["--os-cacert", ca]);
    let fl = cli.ok(&["database", "flavor", "list", "-f", "json"]).json();
    assert!(
        names(&fl, "Name").contains(&"m1.small".to_string()),
        "flavor list: {fl}"
    );
    let ds = cli.ok(&["datastore", "list", "-f", "json"]).json();
    assert!(ds.as_array().is_some(), "datastore list: {ds}");
    drop(cli);
    // A driver of its own: one Python process keeps the first command's TLS settings for the next ones.
    let mut untrusting = OpenStackCli::start(&endpoint);
    let refused = untrusting.run(&["datastore", "list", "-f", "json"]);
    assert_ne!(
        refused.code, 0,
        "an untrusted certificate must fail the CLI: {}",
        refused.stdout
    );
    assert!(
        refused.stderr.contains("CERTIFICATE_VERIFY_FAILED"),
        "{}",
        refused.stderr
    );
    drop(untrusting);
    let (exit, _state) = server.stop();
    assert!(
        exit.success(),
        "SIGTERM is a clean stop over HTTPS too: {exit:?}"
    );
}

/// Starts the all-in-one with `args` and waits (bounded) for it to exit: its status and stderr.
fn failed_start(args: &[&str]) -> (std::process::ExitStatus, String) {
    let state = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(all_in_one_binary())
        .args(["--listen", "127.0.0.1:0", "--no-seed", "--state-dir"])
        .arg(state.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start all-in-one");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the all-in-one started with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    (status, err)
}

#[test]
fn bad_certificate_or_key_files_refuse_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = tls_material(dir.path());
    let cert = m.chain.to_str().expect("utf-8");

    // A key that is not the certificate's.
    let other = m.other_key.to_str().expect("utf-8");
    let (status, err) = failed_start(&["--tls-cert", cert, "--tls-key", other]);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "TLS key {other} does not match the certificate {cert}"
        )),
        "{err}"
    );
    let key_text = std::fs::read_to_string(&m.other_key).expect("key");
    let key_body = key_text.lines().nth(1).expect("a base64 line");
    assert!(!err.contains(key_body), "the key's content leaked: {err}");

    // Missing files.
    let missing = dir.path().join("missing.key");
    let missing = missing.to_str().expect("utf-8");
    let (status, err) = failed_start(&["--tls-cert", cert, "--tls-key", missing]);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!("TLS key {missing}: cannot read it")),
        "{err}"
    );
    let key = m.key.to_str().expect("utf-8");
    let missing_cert = dir.path().join("missing.pem");
    let missing_cert = missing_cert.to_str().expect("utf-8");
    let (status, err) = failed_start(&["--tls-cert", missing_cert, "--tls-key", key]);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!("TLS certificate {missing_cert}: cannot read it")),
        "{err}"
    );

    // The certificate given as the key, and a key file whose PEM is broken: named, content never shown.
    let (status, err) = failed_start(&["--tls-cert", cert, "--tls-key", cert]);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!("TLS key {cert}: holds no unencrypted private key")),
        "{err}"
    );
    let broken = dir.path().join("broken.key");
    let mut text = std::fs::read_to_string(&m.key).expect("key");
    text.truncate(text.len() / 2);
    std::fs::write(&broken, &text).expect("write");
    let broken = broken.to_str().expect("utf-8");
    let (status, err) = failed_start(&["--tls-cert", cert, "--tls-key", broken]);
    assert!(!status.success(), "{err}");
    assert!(err.contains(&format!("TLS key {broken}")), "{err}");
    let body = text.lines().nth(1).expect("a base64 line");
    assert!(!err.contains(body), "the key's content leaked: {err}");

    // One without the other.
    let (status, err) = failed_start(&["--tls-cert", cert]);
    assert!(!status.success(), "{err}");
    assert!(err.contains("--tls-key"), "{err}");
}
