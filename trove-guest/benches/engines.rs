//! Time from `prepare` start to HEALTHY, next to the engine's bare init + start (engines.md commands) measured in
//! the same run, for MariaDB and PostgreSQL. Run: `cargo bench -p trove-guest --bench engines` (as root or as a
//! user that may run the engines). `ENGINE_BENCH_RUNS` sets the number of runs per engine (default 5).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::ConnectOptions;
use trove_core::model::{DatabaseSpec, DatastoreVersion, Flavor, Manager, Secret, UserSpec};
use trove_core::ports::{PrepareRequest, StrategyContext, StrategyFactory};
use trove_core::state::ServiceStatus;
use trove_guest::{EngineConfig, EngineStrategyFactory, RunAs};
use uuid::Uuid;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("tb")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

fn as_engine_user(cmd: &mut Command, who: RunAs) -> &mut Command {
    if trove_guest::current_uid() != who.uid {
        cmd.uid(who.uid).gid(who.gid);
    }
    cmd
}

fn chown(p: &Path, who: RunAs) {
    if trove_guest::current_uid() != who.uid {
        std::os::unix::fs::chown(p, Some(who.uid), Some(who.gid)).expect("chown");
    }
}

fn kill(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

async fn wait_until<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "engine did not answer"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// engines.md: `mariadb-install-db --no-defaults ...` then `mariadbd --no-defaults ...`, ready when it accepts a login.
async fn bare_mariadb(who: RunAs) -> Duration {
    let dir = tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    chown(&data, who);
    chown(dir.path(), who);
    let port = free_port();
    let t = Instant::now();
    let st = as_engine_user(&mut Command::new("mariadb-install-db"), who)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        // --skip-name-resolve as the strategy does: without it the bare baseline pays for host name lookups.
        .args([
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mariadb-install-db");
    assert!(st.success());
    let sock = dir.path().join("s.sock");
    let mut child = as_engine_user(&mut Command::new("mariadbd"), who)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        // As the strategy does: no reverse DNS lookups of clients (they can stall on hosts without DNS).
        .arg("--skip-name-resolve")
        .arg(format!("--socket={}", sock.display()))
        .arg(format!("--pid-file={}", dir.path().join("p.pid").display()))
        .arg(format!(
            "--log-error={}",
            dir.path().join("e.log").display()
        ))
        .spawn()
        .expect("mariadbd");
    wait_until(|| async {
        sqlx::mysql::MySqlConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .username("root")
            .connect()
            .await
            .is_ok()
    })
    .await;
    let el = t.elapsed();
    kill(child.id());
    let _ = child.wait();
    el
}

/// engines.md: `initdb -D D -U postgres --auth=trust -E UTF8 --locale=C.UTF-8` then `pg_ctl ... -w start`-equivalent
/// (`postgres -D D -p P -k D -c listen_addresses=127.0.0.1`), ready when it accepts a login.
async fn bare_postgres(who: RunAs) -> Duration {
    let dir = tempdir();
    chown(dir.path(), who);
    let data = dir.path().join("data");
    let port = free_port();
    let bin = Path::new("/usr/lib/postgresql/15/bin");
    let t = Instant::now();
    let st = as_engine_user(&mut Command::new(bin.join("initdb")), who)
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("initdb");
    assert!(st.success());
    let mut child = as_engine_user(&mut Command::new(bin.join("postgres")), who)
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir.path())
        .args(["-c", "listen_addresses=127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("postgres");
    wait_until(|| async {
        sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .username("postgres")
            .database("postgres")
            .connect()
            .await
            .is_ok()
    })
    .await;
    let el = t.elapsed();
    kill(child.id());
    let _ = child.wait();
    el
}

/// The strategy: prepare (with one database and one user, as a typical create) until HEALTHY.
async fn strategy_prepare(manager: Manager) -> Duration {
    let dir = tempdir();
    let ctx = StrategyContext {
        instance_id: Uuid::new_v4(),
        datastore_version: DatastoreVersion {
            id: Uuid::new_v4(),
            datastore_id: Uuid::new_v4(),
            name: "bench".into(),
            manager,
            image: String::new(),
            packages: String::new(),
            active: true,
            version: "bench".into(),
            flavor_ids: vec![],
        },
        flavor: Flavor {
            id: "1".into(),
            name: "m".into(),
            ram_mb: 512,
            vcpus: 1,
            disk_gb: 0,
            ephemeral_gb: 0,
        },
        server_dir: dir.path().join("srv"),
        volume_path: Some(dir.path().join("vol")),
        bind_address: "127.0.0.1".into(),
        port: free_port(),
    };
    let s = EngineStrategyFactory::new(EngineConfig::default())
        .strategy(&ctx)
        .expect("strategy");
    let req = PrepareRequest {
        memory_mb: 512,
        volume_size_gb: Some(1),
        databases: vec![DatabaseSpec {
            name: "bench_db".into(),
            character_set: None,
            collate: None,
        }],
        users: vec![UserSpec {
            name: "bench_user".into(),
            password: Secret::new("bench-pw"),
            host: None,
            databases: vec!["bench_db".into()],
        }],
        root_password: None,
        overrides: Default::default(),
        restore: None,
    };
    let t = Instant::now();
    s.prepare(&req).await.expect("prepare");
    while s.status().await.status != ServiceStatus::Healthy {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let el = t.elapsed();
    s.stop().await.expect("stop");
    el
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, quickly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs: usize = if quick {
        1
    } else {
        std::env::var("ENGINE_BENCH_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5)
    };
    let who = RunAs::resolve(None).expect("engine user");
    println!(
        "| engine | bare init + start (median of {runs}) | prepare → HEALTHY (median) | ratio |"
    );
    println!("|---|---|---|---|");
    for manager in [Manager::Mariadb, Manager::Postgresql] {
        let mut bare = Vec::new();
        let mut ours = Vec::new();
        for _ in 0..runs {
            // Interleaved, so both see the same machine load.
            bare.push(match manager {
                Manager::Mariadb => bare_mariadb(who).await,
                _ => bare_postgres(who).await,
            });
            ours.push(strategy_prepare(manager).await);
        }
        let (b, o) = (median(bare), median(ours));
        println!(
            "| {manager} | {:.0} ms | {:.0} ms | {:.2} |",
            b.as_secs_f64() * 1000.0,
            o.as_secs_f64() * 1000.0,
            o.as_secs_f64() / b.as_secs_f64()
        );
    }
}
