//! Shared set-up of the API tests: Python virtual environments (the real OpenStack client, a real Keystone),
//! free ports, and an in-process API server.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trove::http::{router, HttpConfig};
use trove_core::ports::Authenticator;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cached virtual environments live (under `target/`, so repeated runs are fast).
pub fn venv_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("trove-test-venvs")
}

/// Returns a virtual environment named `name` with `packages` installed, creating it on first use.
/// Creation happens under a lock directory and ends with a marker file, so concurrent tests never use half a venv.
pub fn venv(name: &str, packages: &[&str]) -> PathBuf {
    let dir = venv_dir();
    let path = dir.join(name);
    let ready = path.join(".trove-ready");
    if ready.exists() {
        return path;
    }
    std::fs::create_dir_all(&dir).expect("create the venv cache directory");
    let lock = dir.join(format!("{name}.lock"));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match std::fs::create_dir(&lock) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if ready.exists() {
                    return path;
                }
                // A lock left by a killed run is stale after ten minutes.
                let stale = std::fs::metadata(&lock)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(600));
                if stale {
                    let _ = std::fs::remove_dir(&lock);
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {}",
                    lock.display()
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("cannot create {}: {e}", lock.display()),
        }
    }
    if !ready.exists() {
        let _ = std::fs::remove_dir_all(&path);
        let ok = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&path)
            .status()
            .expect("python3 runs");
        assert!(
            ok.success(),
            "python3 -m venv failed (is python3-venv installed?)"
        );
        let out = Command::new(path.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(packages)
            .output()
            .expect("pip runs");
        let _ = std::fs::remove_dir(&lock);
        assert!(
            out.status.success(),
            "pip install {packages:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&ready, packages.join("\n")).expect("write the ready marker");
    }
    let _ = std::fs::remove_dir(&lock);
    path
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Serves the API router in-process on an ephemeral port; returns `http://127.0.0.1:PORT`.
pub async fn serve_in_process(
    api: Arc<trove_core::api::ApiService>,
    auth: Arc<dyn Authenticator>,
    config: HttpConfig,
) -> String {
    let app = router(api, auth, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// Waits until `url` answers with a success status.
pub fn wait_http(url: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(out) = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", url])
            .status()
        {
            if out.success() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A real Keystone (from PyPI) served by uwsgi on a free port, with its state in a temporary directory.
pub struct Keystone {
    /// `http://127.0.0.1:PORT/v3`
    pub url: String,
    /// Admin password (user `admin`, project `admin`).
    pub admin_password: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Keystone {
    /// Installs (once) and starts Keystone.
    pub fn start() -> Keystone {
        let venv = venv("keystone", &["keystone", "uwsgi"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for sub in ["fernet", "receipts", "cred"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let conf = d.join("keystone.conf");
        std::fs::write(
            &conf,
            format!(
                "[database]\nconnection = sqlite:///{db}\n[token]\nprovider = fernet\n[fernet_tokens]\nkey_repository = {f}\n\
                 [fernet_receipts]\nkey_repository = {r}\n[credential]\nkey_repository = {c}\n",
                db = d.join("keystone.db").display(),
                f = d.join("fernet").display(),
                r = d.join("receipts").display(),
                c = d.join("cred").display(),
            ),
        )
        .expect("write keystone.conf");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}/v3");
        let manage = venv.join("bin/keystone-manage");
        let (user, group) = current_user_group();
        let run = |args: &[&str]| {
            let out = Command::new(&manage)
                .arg("--config-file")
                .arg(&conf)
                .args(args)
                .output()
                .expect("keystone-manage");
            assert!(
                out.status.success(),
                "keystone-manage {args:?} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["db_sync"]);
        run(&[
            "fernet_setup",
            "--keystone-user",
            &user,
            "--keystone-group",
            &group,
        ]);
        run(&[
            "credential_setup",
            "--keystone-user",
            &user,
            "--keystone-group",
            &group,
        ]);
        let admin_password = "keystone-admin-pw".to_string();
        let endpoint = format!("{url}/");
        run(&[
            "bootstrap",
            "--bootstrap-password",
            &admin_password,
            "--bootstrap-admin-url",
            &endpoint,
            "--bootstrap-public-url",
            &endpoint,
            "--bootstrap-internal-url",
            &endpoint,
            "--bootstrap-region-id",
            "RegionOne",
        ]);
        let log = std::fs::File::create(d.join("uwsgi.log")).expect("log file");
        let child = Command::new(venv.join("bin/uwsgi"))
            .env("OS_KEYSTONE_CONFIG_FILES", &conf)
            .args(["--http11-socket", &format!("127.0.0.1:{port}")])
            .args([
                "--module",
                "keystone.wsgi.api:application",
                "--master",
                "--processes",
                "1",
                "--threads",
                "4",
            ])
            .arg("--die-on-term")
            .arg("--virtualenv")
            .arg(&venv)
            .stdout(Stdio::from(log.try_clone().expect("dup")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start uwsgi");
        let k = Keystone {
            url,
            admin_password,
            child,
            _dir: dir,
        };
        wait_http(&k.url, Duration::from_secs(60));
        k
    }
}

impl Drop for Keystone {
    fn drop(&mut self) {
        // uwsgi's master stops its workers on SIGTERM (--die-on-term).
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn current_user_group() -> (String, String) {
    let id = |flag: &str| {
        Command::new("id")
            .arg(flag)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "root".into())
    };
    (id("-un"), id("-gn"))
}

/// Whether this run is in CI (where missing services are failures, never skips).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Reads a file of the shared reference directory beside the repository.
pub fn reference_dir() -> PathBuf {
    let candidates = [
        repo_root().join("../shared/reference"),
        PathBuf::from("/work/shared/reference"),
    ];
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}

/// Whether a path exists (helper for readable asserts).
pub fn exists(p: &Path) -> bool {
    p.exists()
}
