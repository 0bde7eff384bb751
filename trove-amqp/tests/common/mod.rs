//! Shared helpers of the trove-amqp integration tests.
#![allow(dead_code)]

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use trove_amqp::{AmqpBus, AmqpConfig};
use uuid::Uuid;

/// A configuration with an exchange and queue prefix unique to this run, for the broker at `port`.
pub fn unique_config(port: u16) -> AmqpConfig {
    let run = Uuid::new_v4().simple().to_string();
    AmqpConfig {
        port,
        exchange: format!("trove-test-{run}"),
        queue_prefix: format!("t{}.", &run[..12]),
        reconnect_initial_ms: 50,
        reconnect_max_ms: 500,
        ..AmqpConfig::default()
    }
}

/// Connects to the shared broker on 5672; fails the test (never skips) when it is not there.
pub async fn shared_bus() -> AmqpBus {
    AmqpBus::connect(unique_config(5672))
        .await
        .unwrap_or_else(|e| {
            panic!("RabbitMQ must run on 127.0.0.1:5672 (guest/guest) for this test: {e}")
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A private RabbitMQ node this test may stop and start (never the shared one).
pub struct PrivateBroker {
    pub port: u16,
    dist_port: u16,
    epmd_port: u16,
    dir: tempfile::TempDir,
    node: String,
    epmd: Option<Child>,
    server: Option<Child>,
}

impl PrivateBroker {
    /// Starts a fresh node and waits until it accepts AMQP connections.
    pub fn start() -> PrivateBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = PrivateBroker {
            port: free_port(),
            dist_port: free_port(),
            epmd_port: free_port(),
            node: format!(
                "trovetest{}@localhost",
                &Uuid::new_v4().simple().to_string()[..10]
            ),
            dir,
            epmd: None,
            server: None,
        };
        std::fs::write(
            b.dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{}\n", b.port),
        )
        .expect("write rabbitmq.conf");
        std::fs::write(b.dir.path().join("enabled_plugins"), "[].\n")
            .expect("write enabled_plugins");
        std::fs::write(b.dir.path().join("rabbitmq-env.conf"), "")
            .expect("write rabbitmq-env.conf");
        // Our own epmd, in the foreground, so that we can stop exactly the process we started.
        b.epmd = Some(
            Command::new("epmd")
                .args(["-port", &b.epmd_port.to_string(), "-address", "127.0.0.1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start epmd (erlang must be installed)"),
        );
        b.start_server();
        b
    }

    /// The node's own directory (data, logs, configuration).
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Starts the node (again) on the same port and data directory.
    pub fn start_server(&mut self) {
        assert!(self.server.is_none(), "already running");
        let child = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .env("HOME", self.dir.path())
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.path("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.path("log"))
            .env("RABBITMQ_CONFIG_FILE", self.path("rabbitmq"))
            .env("RABBITMQ_CONF_ENV_FILE", self.path("rabbitmq-env.conf"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.path("enabled_plugins"),
            )
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                self.path("advanced.config"),
            )
            .stdin(Stdio::null())
            .stdout(
                std::fs::File::create(self.path("stdout.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start rabbitmq-server");
        self.server = Some(child);
        self.wait_accepting(Duration::from_secs(60));
    }

    fn wait_accepting(&mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.server.as_mut().map(|c| c.try_wait()) {
                let log = std::fs::read_to_string(self.path("stdout.log")).unwrap_or_default();
                panic!("private rabbitmq exited early ({status}):\n{log}");
            }
            assert!(
                start.elapsed() < limit,
                "private rabbitmq did not listen on {} within {limit:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A `rabbitmqctl` runner for this node.
    pub fn rabbitctl(&self) -> trove_amqp::access::RabbitCtl {
        trove_amqp::access::RabbitCtl::new()
            .with_program("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .with_env("HOME", self.dir.path().to_string_lossy())
            .with_env("RABBITMQ_NODENAME", &self.node)
            .with_env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .with_env(
                "RABBITMQ_CONF_ENV_FILE",
                self.path("rabbitmq-env.conf").to_string_lossy(),
            )
    }

    /// The environment `rabbitmqctl` needs for this node, as `NAME=VALUE`.
    pub fn ctl_env(&self) -> Vec<String> {
        vec![
            format!("HOME={}", self.dir.path().display()),
            format!("RABBITMQ_NODENAME={}", self.node),
            format!("ERL_EPMD_PORT={}", self.epmd_port),
            format!(
                "RABBITMQ_CONF_ENV_FILE={}",
                self.path("rabbitmq-env.conf").display()
            ),
        ]
    }

    /// Runs `rabbitmqctl` against this node; panics when it fails.
    pub fn ctl(&self, args: &[&str]) {
        let out = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .env("HOME", self.dir.path())
            .env("RABBITMQ_NODENAME", &self.node)
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("RABBITMQ_CONF_ENV_FILE", self.path("rabbitmq-env.conf"))
            .args(["-n", &self.node])
            .args(args)
            .output()
            .expect("run rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the node (SIGTERM to its process group, then waits) and checks the port is closed.
    pub fn stop_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            let pgid = child.id().to_string();
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{pgid}")])
                .status();
            let start = Instant::now();
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = Command::new("kill")
                        .args(["-KILL", "--", &format!("-{pgid}")])
                        .status();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "port {} still open after stop",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop_server();
        if let Some(mut epmd) = self.epmd.take() {
            let _ = epmd.kill();
            let _ = epmd.wait();
        }
    }
}
