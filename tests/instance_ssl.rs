//! Instance TLS (`GET`/`POST /instances/{id}/ssl`, upstream API 1.3) on the REAL engines (MariaDB, PostgreSQL,
//! Redis) through the embedded deployment, checked with the engines' own command-line clients:
//! off → enable `basic` (TLS works, plain works) → `enforced` (plain refused, TLS works) → restart keeps it →
//! disable (plain works, TLS refused) → rollback (back to `enforced` with the same certificate) → `mtls` from a
//! `file://` bundle (PostgreSQL, Redis: a client certificate is required) or refused (MariaDB). Bad input and a
//! not-ready instance get their faults. A last test walks the upstream samples over HTTP on the in-memory
//! control plane (simulated guests).
//!
//! Ports: like `engines_api.rs`, the tests take the cross-process engine lock and run one at a time.

mod api_support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use api_support::{
    add_flavors, add_versions, api_sample, endpoint, engine_instance, flavor, idle_healthy,
    pid_listening_on, t1, version, wait_engine_view as wait_view, Engine, EngineEnv, HttpClient,
    ENGINE_WAIT,
};
use trove::backends::auth::NoAuth;
use trove::core::api::{ApiService, DatastoreVersionSpec};
use trove::core::model::{SslActionBody, SslChangeResult, SslMode, SslStatus, SslView};

// ------------------------------------------------------------------ clients

/// How a client connects.
#[derive(Clone, Debug)]
enum Transport {
    /// No TLS at all.
    Plain,
    /// TLS, trusting `ca`; with a client certificate and key when given.
    Tls {
        ca: PathBuf,
        client: Option<(PathBuf, PathBuf)>,
    },
}

/// Runs the engine's own client against `at` as the root user, for at most `secs` seconds; Ok(stdout) or
/// Err(stderr).
fn client(k: Engine, at: SocketAddr, pw: &str, t: &Transport, secs: u32) -> Result<String, String> {
    let mut cmd = Command::new("timeout");
    cmd.arg(secs.to_string());
    match k {
        Engine::Mysql => {
            cmd.args(["mariadb", "--no-defaults", "-u", "root"])
                .arg(format!("-h{}", at.ip()))
                .arg(format!("-P{}", at.port()))
                .args(["-N", "-B", "-e"])
                .arg("SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'")
                .env("MYSQL_PWD", pw);
            match t {
                Transport::Plain => {
                    cmd.arg("--skip-ssl");
                }
                Transport::Tls { ca, client } => {
                    cmd.arg("--ssl")
                        .arg(format!("--ssl-ca={}", ca.display()))
                        .arg("--ssl-verify-server-cert");
                    if let Some((c, key)) = client {
                        cmd.arg(format!("--ssl-cert={}", c.display()))
                            .arg(format!("--ssl-key={}", key.display()));
                    }
                }
            }
        }
        Engine::Postgres => {
            let mut conn = format!(
                "host={} port={} user=root dbname=postgres connect_timeout=10",
                at.ip(),
                at.port()
            );
            match t {
                Transport::Plain => conn.push_str(" sslmode=disable"),
                Transport::Tls { ca, client } => {
                    conn.push_str(&format!(
                        " sslmode=verify-full sslrootcert={}",
                        ca.display()
                    ));
                    match client {
                        Some((c, key)) => conn.push_str(&format!(
                            " sslcert={} sslkey={}",
                            c.display(),
                            key.display()
                        )),
                        // No client certificate, not even the default ~/.postgresql one.
                        None => conn.push_str(" sslcert=/nonexistent sslkey=/nonexistent"),
                    }
                }
            }
            cmd.args(["psql", "-X", "-tA", "-c"])
                .arg("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .arg(conn)
                .env("PGPASSWORD", pw);
        }
        Engine::Redis => {
            cmd.args(["redis-cli", "-h"])
                .arg(at.ip().to_string())
                .arg("-p")
                .arg(at.port().to_string())
                .env("REDISCLI_AUTH", pw);
            if let Transport::Tls { ca, client } = t {
                cmd.arg("--tls").arg("--cacert").arg(ca);
                if let Some((c, key)) = client {
                    cmd.arg("--cert").arg(c).arg("--key").arg(key);
                }
            }
            cmd.arg("PING");
        }
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run the client: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    // redis-cli exits 0 even when the connection failed; its answer tells.
    let ok = out.status.success() && (k != Engine::Redis || stdout == "PONG");
    if ok {
        Ok(stdout)
    } else {
        Err(format!("{} {stdout} {stderr}", out.status))
    }
}

/// The client connects with TLS, and the engine says the session is encrypted.
fn assert_tls_works(k: Engine, at: SocketAddr, pw: &str, t: &Transport, step: &str) {
    let out = client(k, at, pw, t, 20)
        .unwrap_or_else(|e| panic!("{step}: a TLS connection to {k:?} on {at} failed: {e}"));
    match k {
        Engine::Mysql => assert!(
            out.starts_with("TLS"),
            "{step}: the session is not encrypted (Ssl_cipher '{out}')"
        ),
        Engine::Postgres => assert_eq!(out, "t", "{step}: pg_stat_ssl says the session is not TLS"),
        Engine::Redis => assert_eq!(out, "PONG"),
    }
}

fn assert_plain_works(k: Engine, at: SocketAddr, pw: &str, step: &str) {
    let out = client(k, at, pw, &Transport::Plain, 20)
        .unwrap_or_else(|e| panic!("{step}: a plain connection to {k:?} on {at} failed: {e}"));
    match k {
        Engine::Mysql => assert!(out.is_empty(), "{step}: plain session has a cipher '{out}'"),
        Engine::Postgres => assert_eq!(out, "f", "{step}"),
        Engine::Redis => assert_eq!(out, "PONG"),
    }
}

/// The connection fails (a TLS client facing a plain Redis waits for a handshake that never comes: 5 s is the
/// limit).
fn assert_refused(k: Engine, at: SocketAddr, pw: &str, t: &Transport, step: &str) {
    if let Ok(out) = client(k, at, pw, t, 5) {
        panic!("{step}: {k:?} on {at} accepted a {t:?} connection ({out})");
    }
}

// ------------------------------------------------------------------ helpers over the API

fn enable(mode: &str) -> SslActionBody {
    SslActionBody {
        enable: Some(true),
        mode: Some(mode.into()),
        ..Default::default()
    }
}

fn status<T: std::fmt::Debug>(r: Result<T, trove::core::Error>) -> u16 {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.fault().status,
    }
}

/// Sends an action; when the engine needs a restart, checks the instance says so and restarts it.
async fn act(
    api: &ApiService,
    id: Uuid,
    body: SslActionBody,
    want_restart: bool,
    step: &str,
) -> SslChangeResult {
    let r = api
        .ssl_action(&t1(), id, body)
        .await
        .unwrap_or_else(|e| panic!("{step}: {e}"));
    assert_eq!(r.restart_required, want_restart, "{step}: {r:?}");
    if r.restart_required {
        let v = api.show_instance(&t1(), id).await.expect("show");
        assert_eq!(
            v.operating_status, "RESTART_REQUIRED",
            "{step}: the instance must say it needs a restart"
        );
        // The guest's own heartbeats say so too (several report intervals later).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let v = api.show_instance(&t1(), id).await.expect("show");
        assert_eq!(
            v.operating_status, "RESTART_REQUIRED",
            "{step}: heartbeats must keep RESTART_REQUIRED until the restart"
        );
        restart(api, id, step).await;
    }
    r
}

async fn restart(api: &ApiService, id: Uuid, step: &str) {
    api.restart_instance(&t1(), id)
        .await
        .unwrap_or_else(|e| panic!("{step}: restart: {e}"));
    wait_view(api, id, &format!("{step}: restart"), idle_healthy).await;
}

/// Shows with the certificate and writes its payload to `dir/<name>` (the CA a client trusts).
async fn show_and_save_ca(
    api: &ApiService,
    id: Uuid,
    dir: &Path,
    name: &str,
) -> (SslView, PathBuf) {
    let v = api.ssl_show(&t1(), id, true).await.expect("ssl show");
    let cert = v.certificate.as_ref().expect("a certificate when on");
    let pem = cert
        .payload
        .as_ref()
        .expect("payload with include_certificate");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert!(
        !pem.contains("PRIVATE KEY"),
        "the private key must never be shown"
    );
    let p = dir.join(name);
    std::fs::write(&p, pem).expect("write ca");
    (v, p)
}

/// A CA, a server certificate for the instance's address `ip` signed by it, and a client certificate signed by
/// it; returns the bundle (server cert, CA, server key) and the client's (cert, key).
fn mtls_material(dir: &Path, ip: IpAddr) -> (PathBuf, PathBuf, (PathBuf, PathBuf)) {
    let run = |args: &[&str]| api_support::openssl(dir, args);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "30",
        "-subj",
        "/CN=Test CA",
    ]);
    run(&a);
    let (server_cn, server_san) = (ip.to_string(), format!("subjectAltName=IP:{ip}"));
    for (name, cn, ext) in [
        ("server", server_cn.as_str(), server_san.as_str()),
        ("client", "root", "extendedKeyUsage=clientAuth"),
    ] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let subj = format!("/CN={cn}");
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        run(&a);
        let extfile = format!("{name}.ext");
        std::fs::write(dir.join(&extfile), format!("{ext}\n")).expect("ext");
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "30",
            "-extfile",
            &extfile,
        ]);
    }
    // The bundle's key is encrypted; its passphrase is in pass.txt (the password_ref).
    std::fs::write(dir.join("pass.txt"), "s3cret-passphrase\n").expect("pass");
    run(&[
        "pkey",
        "-in",
        "server.key",
        "-aes256",
        "-passout",
        "file:pass.txt",
        "-out",
        "server.enc.key",
    ]);
    let bundle = dir.join("bundle.pem");
    let text = [
        std::fs::read_to_string(dir.join("server.pem")).expect("server.pem"),
        std::fs::read_to_string(dir.join("ca.pem")).expect("ca.pem"),
        std::fs::read_to_string(dir.join("server.enc.key")).expect("server.enc.key"),
    ]
    .concat();
    std::fs::write(&bundle, text).expect("bundle");
    (
        bundle,
        dir.join("ca.pem"),
        (dir.join("client.pem"), dir.join("client.key")),
    )
}

// ------------------------------------------------------------------ the journey

async fn ssl_journey(ds: &str) {
    let k = Engine::of(ds);
    // MariaDB starts and stops serving TLS only at a restart; the others apply everything live.
    let onoff_restart = k == Engine::Mysql;
    let env = EngineEnv::start().await;
    let api = env.api.clone();
    let files = tempfile::tempdir().expect("tempdir");

    let created = api
        .create_instance(&t1(), engine_instance(&format!("{ds}-ssl"), ds, false))
        .await
        .expect("create");
    let id = created.instance.id;
    // Not ready yet: the action gate answers 422.
    assert_eq!(
        status(api.ssl_action(&t1(), id, enable("basic")).await),
        422,
        "an SSL action on a building instance"
    );
    let v = wait_view(&api, id, "HEALTHY after create", idle_healthy).await;
    let at = endpoint(&v.instance);
    let root = api.root_enable(&t1(), id, None).await.expect("root enable");
    let pw = root.password.expose().to_string();

    // Off at first; plain works.
    let s = api.ssl_show(&t1(), id, false).await.expect("show");
    assert_eq!(s, SslView::off());
    assert_plain_works(k, at, &pw, "off");

    // Bad input.
    let two = SslActionBody {
        enable: Some(true),
        disable: Some(true),
        ..Default::default()
    };
    assert_eq!(status(api.ssl_action(&t1(), id, two).await), 400);
    assert_eq!(
        status(api.ssl_action(&t1(), id, enable("paranoid")).await),
        400
    );
    let barbican = SslActionBody {
        container_ref: Some("https://barbican.example/v1/containers/x".into()),
        ..enable("basic")
    };
    assert_eq!(status(api.ssl_action(&t1(), id, barbican).await), 400);
    let missing = SslActionBody {
        container_ref: Some("file:///nonexistent/bundle.pem".into()),
        ..enable("basic")
    };
    assert_eq!(status(api.ssl_action(&t1(), id, missing).await), 400);
    // mtls: MariaDB refuses the mode; the others refuse a self-signed certificate (it cannot sign clients).
    assert_eq!(status(api.ssl_action(&t1(), id, enable("mtls")).await), 400);
    assert_eq!(
        status(
            api.ssl_action(
                &t1(),
                id,
                SslActionBody {
                    rollback: Some(true),
                    ..Default::default()
                }
            )
            .await
        ),
        400,
        "nothing to roll back yet"
    );
    assert_eq!(
        api.ssl_show(&t1(), id, false).await.expect("show"),
        SslView::off(),
        "refused actions change nothing"
    );

    // basic: TLS offered, plain still accepted.
    let r = act(&api, id, enable("basic"), onoff_restart, "enable basic").await;
    assert_eq!((r.status, r.mode), (SslStatus::On, Some(SslMode::Basic)));
    let (s, ca) = show_and_save_ca(&api, id, files.path(), "basic.pem").await;
    assert_eq!((s.status, s.mode), (SslStatus::On, Some(SslMode::Basic)));
    let cert = s.certificate.clone().expect("certificate");
    // The certificate names the instance's own address.
    assert_eq!(cert.cn, at.ip().to_string());
    let san = cert.san.clone().expect("SANs");
    assert!(san.contains(&format!("IP:{}", at.ip())), "{san:?}");
    let days = (cert.expire_at - chrono::Utc::now()).num_days();
    assert!(
        (363..=366).contains(&days),
        "one year of validity, got {days} days"
    );
    let shown = serde_json::to_value(&s).expect("json");
    let expire = shown["certificate"]["expire_at"]
        .as_str()
        .expect("expire_at");
    assert_eq!(expire.len(), "2027-02-10T09:06:25.000000".len(), "{expire}");
    assert!(
        api.ssl_show(&t1(), id, false)
            .await
            .expect("show")
            .certificate
            .expect("cert")
            .payload
            .is_none(),
        "no payload unless asked"
    );
    // Redis serves TLS on a second port in basic mode; the others on the instance's port.
    let tls_at = match k {
        Engine::Redis => {
            let p = s.port.expect("Redis basic shows its TLS port");
            assert_ne!(p, at.port());
            SocketAddr::new(at.ip(), p)
        }
        _ => {
            assert_eq!(s.port, None);
            at
        }
    };
    let tls = Transport::Tls {
        ca: ca.clone(),
        client: None,
    };
    assert_tls_works(k, tls_at, &pw, &tls, "basic");
    assert_plain_works(k, at, &pw, "basic");
    if k == Engine::Redis {
        // The engine dies and its TLS port is taken meanwhile: the restarted engine serves TLS on another port,
        // which the view shows.
        let pid = pid_listening_on(at).expect("the Redis engine's process");
        assert!(Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill")
            .success());
        let deadline = Instant::now() + ENGINE_WAIT;
        let squatter = loop {
            if let Ok(l) = std::net::TcpListener::bind(tls_at) {
                break l;
            }
            assert!(
                Instant::now() < deadline,
                "the TLS port {tls_at} stays taken"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        wait_view(&api, id, "crashed", |v| v.operating_status != "HEALTHY").await;
        wait_view(&api, id, "healthy after the crash", idle_healthy).await;
        let s = api.ssl_show(&t1(), id, false).await.expect("show");
        let moved = s.port.expect("TLS port");
        assert_ne!(moved, tls_at.port(), "TLS moved off the taken port");
        let moved = SocketAddr::new(at.ip(), moved);
        assert_tls_works(k, moved, &pw, &tls, "basic on the new TLS port");
        assert_plain_works(k, at, &pw, "basic after the crash");
        drop(squatter);
    }

    // enforced: a new certificate, plain refused, TLS works (live everywhere: the engine already serves TLS).
    let r = act(&api, id, enable("enforced"), false, "enable enforced").await;
    assert_eq!((r.status, r.mode), (SslStatus::On, Some(SslMode::Enforced)));
    let (enforced_view, ca) = show_and_save_ca(&api, id, files.path(), "enforced.pem").await;
    assert_eq!(enforced_view.port, None);
    let tls = Transport::Tls {
        ca: ca.clone(),
        client: None,
    };
    assert_tls_works(k, at, &pw, &tls, "enforced");
    assert_refused(k, at, &pw, &Transport::Plain, "enforced");
    // The basic certificate is no longer served.
    assert_refused(
        k,
        at,
        &pw,
        &Transport::Tls {
            ca: files.path().join("basic.pem"),
            client: None,
        },
        "enforced, old certificate",
    );

    // A restart keeps the TLS state.
    restart(&api, id, "restart while enforced").await;
    assert_eq!(
        api.ssl_show(&t1(), id, true).await.expect("show"),
        enforced_view,
        "the TLS state survives a restart"
    );
    assert_tls_works(k, at, &pw, &tls, "enforced after restart");
    assert_refused(k, at, &pw, &Transport::Plain, "enforced after restart");

    // disable: plain works, TLS is refused.
    let r = act(
        &api,
        id,
        SslActionBody {
            disable: Some(true),
            ..Default::default()
        },
        onoff_restart,
        "disable",
    )
    .await;
    assert_eq!((r.status, r.mode), (SslStatus::Off, None));
    assert_eq!(
        api.ssl_show(&t1(), id, false).await.expect("show"),
        SslView::off()
    );
    assert_plain_works(k, at, &pw, "disabled");
    assert_refused(k, at, &pw, &tls, "disabled");

    // rollback: back to enforced with the same certificate.
    let r = act(
        &api,
        id,
        SslActionBody {
            rollback: Some(true),
            ..Default::default()
        },
        onoff_restart,
        "rollback",
    )
    .await;
    assert_eq!((r.status, r.mode), (SslStatus::On, Some(SslMode::Enforced)));
    assert_eq!(
        api.ssl_show(&t1(), id, true).await.expect("show"),
        enforced_view,
        "rollback restores the previous certificate and mode"
    );
    assert_tls_works(k, at, &pw, &tls, "rolled back");
    assert_refused(k, at, &pw, &Transport::Plain, "rolled back");

    // mtls from a file:// bundle (server certificate, CA, encrypted key + password_ref).
    let (bundle, ca_pem, client_pair) = mtls_material(files.path(), at.ip());
    let container_ref = Some(format!("file://{}", bundle.display()));
    let password_ref = Some(format!(
        "file://{}",
        files.path().join("pass.txt").display()
    ));
    let no_password = SslActionBody {
        container_ref: container_ref.clone(),
        ..enable("enforced")
    };
    assert_eq!(
        status(api.ssl_action(&t1(), id, no_password).await),
        400,
        "an encrypted key without its password_ref"
    );
    let mtls = SslActionBody {
        container_ref: container_ref.clone(),
        password_ref: password_ref.clone(),
        ..enable("mtls")
    };
    if k == Engine::Mysql {
        assert_eq!(status(api.ssl_action(&t1(), id, mtls).await), 400);
        // The bundle serves enforced TLS (live: the engine already serves TLS).
        let from_bundle = SslActionBody {
            container_ref,
            password_ref,
            ..enable("enforced")
        };
        let r = act(&api, id, from_bundle, false, "enforced from a bundle").await;
        assert_eq!((r.status, r.mode), (SslStatus::On, Some(SslMode::Enforced)));
        let s = api.ssl_show(&t1(), id, false).await.expect("show");
        assert_eq!(s.certificate.expect("cert").cn, at.ip().to_string());
        let ca_tls = Transport::Tls {
            ca: ca_pem,
            client: None,
        };
        assert_tls_works(k, at, &pw, &ca_tls, "enforced, certificate from the bundle");
        assert_refused(
            k,
            at,
            &pw,
            &tls,
            "enforced, the self-signed certificate is gone",
        );
        assert_refused(
            k,
            at,
            &pw,
            &Transport::Plain,
            "enforced from a bundle, plain",
        );
    } else {
        let r = act(&api, id, mtls, false, "enable mtls").await;
        assert_eq!((r.status, r.mode), (SslStatus::On, Some(SslMode::Mtls)));
        let s = api.ssl_show(&t1(), id, false).await.expect("show");
        assert_eq!(s.certificate.expect("cert").cn, at.ip().to_string());
        let with_cert = Transport::Tls {
            ca: ca_pem.clone(),
            client: Some(client_pair),
        };
        let without_cert = Transport::Tls {
            ca: ca_pem,
            client: None,
        };
        assert_tls_works(k, at, &pw, &with_cert, "mtls with a client certificate");
        assert_refused(
            k,
            at,
            &pw,
            &without_cert,
            "mtls without a client certificate",
        );
        assert_refused(k, at, &pw, &Transport::Plain, "mtls, plain");
    }

    api.delete_instance(&t1(), id).await.expect("delete");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_ssl_basic_enforced_restart_disable_rollback() {
    ssl_journey("mariadb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgresql_ssl_basic_enforced_restart_disable_rollback_mtls() {
    ssl_journey("postgresql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_ssl_basic_enforced_restart_disable_rollback_mtls() {
    ssl_journey("redis").await;
}

// ------------------------------------------------------------------ HTTP and the upstream samples (simulated)

/// The SSL routes over HTTP on the in-memory control plane (simulated guests): the upstream request samples,
/// faults for bad bodies, and the view shapes of the response samples.
#[tokio::test]
async fn ssl_routes_over_http_with_the_upstream_samples() {
    use trove::control_plane::ControlPlane;
    use trove::http::HttpConfig;

    let cp = ControlPlane::in_memory().await.expect("control plane");
    let api = cp.api();
    add_flavors(&api, [flavor("1", "m1.tiny", 512, 10)]).await;
    add_versions(
        &api,
        ["mysql", "postgresql"].map(|ds| DatastoreVersionSpec {
            version: Some("1".into()),
            ..version(ds, "1", true)
        }),
    )
    .await;
    let base =
        api_support::serve_in_process(api.clone(), Arc::new(NoAuth::new()), HttpConfig::default())
            .await;
    let http = HttpClient::new(format!("{base}/v1.0/t1"), "any");
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let http = http.clone();
        async move { http.send(method.as_str(), &path, body.as_ref()).await }
    };
    let sample = api_sample;

    let mut ids = Vec::new();
    for ds in ["mysql", "postgresql"] {
        let (st, created) = call(
            reqwest::Method::POST,
            "/instances".into(),
            Some(json!({"instance": {"name": ds, "flavorRef": "1", "volume": {"size": 1}, "datastore": {"type": ds}}})),
        )
        .await;
        assert_eq!(st, 200, "{created}");
        let id = created["instance"]["id"].as_str().expect("id").to_string();
        ids.push(id);
    }
    for id in &ids {
        http.wait_instance(
            &format!("/instances/{id}"),
            &["HEALTHY", "ACTIVE"],
            Duration::from_secs(30),
        )
        .await;
    }
    let (my, pg) = (ids[0].clone(), ids[1].clone());

    // GET: off.
    let (st, v) = call(reqwest::Method::GET, format!("/instances/{my}/ssl"), None).await;
    assert_eq!(
        (st, v.clone()),
        (200, json!({"ssl": {"status": "off"}})),
        "{v}"
    );

    // Bad bodies.
    for (body, want) in [
        (json!({"ssl": {"enable": true, "disable": true}}), 400),
        (json!({"ssl": {"enable": true, "mode": "paranoid"}}), 400),
        (json!({"ssl": {}}), 400),
        (json!({"nossl": {}}), 400),
        (json!({"ssl": {"enable": true, "bogus": 1}}), 400),
        (json!({"ssl": {"rollback": true}}), 400),
    ] {
        let (st, v) = call(
            reqwest::Method::POST,
            format!("/instances/{my}/ssl"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(st, want, "{body} → {v}");
    }
    // An unknown instance: 404.
    let (st, _) = call(
        reqwest::Method::GET,
        format!("/instances/{}/ssl", Uuid::new_v4()),
        None,
    )
    .await;
    assert_eq!(st, 404);

    // The upstream request samples, in order, on the MySQL instance (MariaDB semantics: on/off at a restart).
    let (st, v) = call(
        reqwest::Method::POST,
        format!("/instances/{my}/ssl"),
        Some(sample("instance-ssl-action-request.json")),
    )
    .await;
    assert_eq!(
        st, 400,
        "a Barbican container_ref cannot be resolved here: {v}"
    );
    assert!(
        v["badRequest"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("file://"),
        "{v}"
    );
    let (st, v) = call(
        reqwest::Method::POST,
        format!("/instances/{my}/ssl"),
        Some(json!({"ssl": {"enable": true, "mode": "basic"}})),
    )
    .await;
    assert_eq!(
        (st, v.clone()),
        (
            200,
            json!({"ssl": {"status": "on", "mode": "basic", "restart_required": true}})
        ),
        "{v}"
    );
    let (_, inst) = call(reqwest::Method::GET, format!("/instances/{my}"), None).await;
    assert_eq!(
        inst["instance"]["operating_status"], "RESTART_REQUIRED",
        "{inst}"
    );
    let (st, v) = call(reqwest::Method::GET, format!("/instances/{my}/ssl"), None).await;
    assert_eq!(st, 200);
    let shown = &v["ssl"];
    assert_eq!(
        (shown["status"].clone(), shown["mode"].clone()),
        (json!("on"), json!("basic"))
    );
    assert!(
        shown["certificate"]["cn"].is_string() && shown["certificate"]["payload"].is_null(),
        "{v}"
    );
    let want_shape = sample("instance-ssl-show-response.json");
    for key in ["cn", "expire_at", "san"] {
        assert!(
            shown["certificate"].get(key).is_some()
                && want_shape["ssl"]["certificate"].get(key).is_some(),
            "{key}: {v}"
        );
    }
    let (_, v) = call(
        reqwest::Method::GET,
        format!("/instances/{my}/ssl?include_certificate=true"),
        None,
    )
    .await;
    assert!(
        v["ssl"]["certificate"]["payload"]
            .as_str()
            .unwrap_or("")
            .contains("BEGIN CERTIFICATE"),
        "{v}"
    );
    let (st, v) = call(
        reqwest::Method::POST,
        format!("/instances/{my}/ssl"),
        Some(sample("instance-ssl-action-request-disable.json")),
    )
    .await;
    // The engine was never restarted with TLS: turning it off needs no restart.
    assert_eq!(
        (st, v.clone()),
        (
            200,
            json!({"ssl": {"status": "off", "restart_required": false}})
        ),
        "{v}"
    );
    let (st, v) = call(
        reqwest::Method::POST,
        format!("/instances/{my}/ssl"),
        Some(sample("instance-ssl-action-request-rollback.json")),
    )
    .await;
    assert_eq!(
        (st, v.clone()),
        (
            200,
            json!({"ssl": {"status": "on", "mode": "basic", "restart_required": true}})
        ),
        "{v}"
    );
    // mtls: refused for the MySQL family; on PostgreSQL it needs a bundle.
    let (st, _) = call(
        reqwest::Method::POST,
        format!("/instances/{my}/ssl"),
        Some(json!({"ssl": {"enable": true, "mode": "mtls", "container_ref": "file:///b.pem"}})),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = call(
        reqwest::Method::POST,
        format!("/instances/{pg}/ssl"),
        Some(json!({"ssl": {"enable": true, "mode": "mtls"}})),
    )
    .await;
    assert_eq!(st, 400);
    // PostgreSQL applies everything live.
    let (st, v) = call(
        reqwest::Method::POST,
        format!("/instances/{pg}/ssl"),
        Some(json!({"ssl": {"enable": true, "mode": "enforced"}})),
    )
    .await;
    assert_eq!(
        (st, v.clone()),
        (
            200,
            json!({"ssl": {"status": "on", "mode": "enforced", "restart_required": false}})
        ),
        "{v}"
    );
    // A replica refuses SSL changes, except rollback (replica creation is not built yet: the PostgreSQL
    // instance is marked as a replica in the store).
    {
        use trove::core::ports::{ChangeSet, Expect, Write};
        let pg_id: Uuid = pg.parse().expect("uuid");
        let mut inst = cp
            .store()
            .get_instance(pg_id)
            .await
            .expect("get")
            .expect("instance");
        inst.replica_of = Some(my.parse().expect("uuid"));
        cp.store()
            .commit(ChangeSet::new().with(Write::Instance {
                instance: inst,
                expect: Expect::Any,
            }))
            .await
            .expect("mark as replica");
    }
    let (st, r) = call(
        reqwest::Method::POST,
        format!("/instances/{pg}/ssl"),
        Some(json!({"ssl": {"disable": true}})),
    )
    .await;
    assert_eq!(st, 400, "{r}");
    assert!(
        r["badRequest"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("replica"),
        "{r}"
    );
    let (st, r) = call(
        reqwest::Method::POST,
        format!("/instances/{pg}/ssl"),
        Some(json!({"ssl": {"rollback": true}})),
    )
    .await;
    assert_eq!(
        (st, r.clone()),
        (
            200,
            json!({"ssl": {"status": "off", "restart_required": false}})
        ),
        "rollback is allowed on a replica: {r}"
    );
    for f in [
        "instance-ssl-action-response.json",
        "instance-ssl-action-response-disable.json",
        "instance-ssl-action-response-rollback.json",
    ] {
        let want = sample(f);
        for key in want["ssl"].as_object().expect("ssl object").keys() {
            if key == "mode" && want["ssl"]["status"] == "off" {
                continue;
            }
            assert!(
                v["ssl"].get(key).is_some() || key == "mode",
                "{f}: {key} missing in {v}"
            );
        }
    }
}
