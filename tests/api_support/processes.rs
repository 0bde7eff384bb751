//! Processes the tests start: cached Python virtual environments (the real OpenStack client, a real Keystone),
//! the all-in-one server and the other example binaries, free ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::engines::{engine_state_dir, kill_engines_under};

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

/// The upstream API sample `name` (from `trove-api-samples` in the reference directory), as JSON.
pub fn api_sample(name: &str) -> serde_json::Value {
    let p = reference_dir().join("trove-api-samples").join(name);
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Whether a path exists (helper for readable asserts).
pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// The real `openstack` CLI (python-openstackclient + python-troveclient from PyPI, in a cached venv), driven
/// through its own entry point `openstackclient.shell.main(argv)`; commands run one after another in one Python
/// process, so the ~1 s interpreter start is paid once.
pub struct OpenStackCli {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    base_args: Vec<String>,
    _dir: tempfile::TempDir,
}

/// The outcome of one CLI command.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit status.
    pub code: i64,
    /// What it printed.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl CliOutput {
    /// stdout as JSON (for `-f json`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

const CLI_DRIVER: &str = r#"
import sys, json, io, contextlib
from openstackclient import shell
for line in sys.stdin:
    argv = json.loads(line)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = shell.main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    sys.__stdout__.write(json.dumps({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}) + "\n")
    sys.__stdout__.flush()
"#;

impl OpenStackCli {
    /// Starts the driver for `endpoint` (`http://HOST:PORT/v1.0/TENANT`) with `--os-auth-type none`.
    pub fn start(endpoint: &str) -> OpenStackCli {
        OpenStackCli::start_with(endpoint, &[])
    }

    /// [`OpenStackCli::start`] with `extra` global options on every command (e.g. `--os-cacert CA.pem`).
    pub fn start_with(endpoint: &str, extra: &[&str]) -> OpenStackCli {
        let venv = venv(
            "openstack",
            &["python-openstackclient", "python-troveclient"],
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("driver.py");
        std::fs::write(&script, CLI_DRIVER).expect("write driver");
        let mut child = Command::new(venv.join("bin/python"))
            .arg(&script)
            .env_remove("OS_CLOUD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let base_args = ["--os-auth-type", "none", "--os-endpoint", endpoint]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        OpenStackCli {
            child,
            stdin,
            stdout,
            base_args,
            _dir: dir,
        }
    }

    /// Runs `openstack <args>`.
    pub fn run(&mut self, args: &[&str]) -> CliOutput {
        use std::io::{BufRead, Write};
        let mut argv = self.base_args.clone();
        argv.extend(args.iter().map(|s| s.to_string()));
        let line = serde_json::to_string(&argv).expect("json");
        writeln!(self.stdin, "{line}").expect("write to the driver");
        self.stdin.flush().expect("flush");
        let mut answer = String::new();
        self.stdout
            .read_line(&mut answer)
            .expect("read from the driver");
        let v: serde_json::Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("driver answer {answer:?}: {e}"));
        CliOutput {
            code: v["code"].as_i64().unwrap_or(-1),
            stdout: v["stdout"].as_str().unwrap_or_default().to_string(),
            stderr: v["stderr"].as_str().unwrap_or_default().to_string(),
        }
    }

    /// Runs `openstack <args>` and asserts it exits 0.
    pub fn ok(&mut self, args: &[&str]) -> CliOutput {
        let out = self.run(args);
        assert_eq!(
            out.code,
            0,
            "openstack {} failed:\n{}\n{}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        out
    }
}

impl Drop for OpenStackCli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The all-in-one server started as a process (the example binary built next to the test binaries).
pub struct AllInOne {
    /// `http://127.0.0.1:PORT` (`https://127.0.0.1:PORT` when started with `--tls-cert`/`--tls-key`)
    pub base: String,
    child: Child,
    /// State directory.
    pub state: tempfile::TempDir,
}

/// `target/<profile>` of this build (test binaries live in its `deps/`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Path of example binary `name` of this build (`cargo test` and nextest build the examples with the tests); an
/// environment variable `<NAME>_BIN` (`TROVE_MANAGE_BIN` for `trove-manage`) may point at another build.
pub fn example_binary(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    let bin = profile_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --all-features --example {name}` (cargo test and nextest build \
         examples with the tests)",
        bin.display()
    );
    bin
}

/// Runs `trove-manage --state-dir STATE ARGS` (never against a database named in the environment).
pub fn trove_manage(state: &Path, args: &[&str]) -> Output {
    Command::new(example_binary("trove-manage"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("TROVE_DATABASE_URL")
        .output()
        .expect("run trove-manage")
}

/// Runs `trove-manage` and asserts it succeeded; answers what it printed.
pub fn trove_manage_ok(state: &Path, args: &[&str]) -> String {
    let out = trove_manage(state, args);
    assert!(
        out.status.success(),
        "trove-manage {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Path of the all-in-one example binary of this build ([`example_binary`]).
pub fn all_in_one_binary() -> PathBuf {
    example_binary("all-in-one")
}

impl AllInOne {
    /// Starts the server on an ephemeral port (unless `extra` has `--listen`) with a fresh state directory and
    /// `extra` arguments.
    pub fn start(extra: &[&str]) -> AllInOne {
        AllInOne::start_in(engine_state_dir(), extra)
    }

    /// Starts the server on `state` (to test restarts).
    pub fn start_in(state: tempfile::TempDir, extra: &[&str]) -> AllInOne {
        AllInOne::start_env(state, extra, &[])
    }

    /// Starts the server on `state` with `env` added to its environment (kill points of crash tests).
    pub fn start_env(state: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> AllInOne {
        AllInOne::start_with(state, extra, env, Stdio::inherit())
    }

    /// Starts the server on `state` with `env`, its log (stderr) appended to the file `log`.
    pub fn start_logged(
        state: tempfile::TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> AllInOne {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the log file");
        AllInOne::start_with(state, extra, env, Stdio::from(f))
    }

    fn start_with(
        state: tempfile::TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> AllInOne {
        use std::io::BufRead;
        // An ephemeral port unless `extra` names one (a restart that keeps its address).
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(all_in_one_binary())
            .args(listen)
            .arg("--state-dir")
            .arg(state.path())
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start all-in-one");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server prints 'listening on ADDR' (or 'listening on https://ADDR')");
        // Plain HTTP prints the bare address, HTTPS the URL.
        let base = if addr.starts_with("https://") {
            addr
        } else {
            format!("http://{addr}")
        };
        AllInOne { base, child, state }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the server exits by itself (a kill point), at most `within`; answers its exit status and state
    /// directory, or the server itself when it still runs.
    pub fn wait_exit(
        mut self,
        within: Duration,
    ) -> Result<(std::process::ExitStatus, tempfile::TempDir), AllInOne> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                let state =
                    std::mem::replace(&mut self.state, tempfile::tempdir().expect("tempdir"));
                return Ok((s, state));
            }
            if Instant::now() >= deadline {
                return Err(self);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server with SIGTERM and returns its exit status and state directory.
    pub fn stop(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let state = std::mem::replace(&mut self.state, tempfile::tempdir().expect("tempdir"));
        (status, state)
    }
}

impl Drop for AllInOne {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_engines_under(self.state.path());
    }
}
