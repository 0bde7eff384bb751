//! Replication on real engines through the embedded deployment's API (MariaDB serving `mysql`, PostgreSQL and
//! Redis; `REPL_BENCH_ENGINES`, default all three), in one run per engine:
//! - replica creation with `REPL_BENCH_MB` MB of data (default 64): the API request until the replica is ACTIVE and
//!   follows its source, next to (a) a restore of a backup of the same data through the API (backup taken, then a
//!   new instance restored from it until ACTIVE): a replica is that plus attaching, so the ratio says what following
//!   costs; and (b) the engine's bare copy tool run by hand against the source as its root (`mariadb-backup
//!   --backup`, `pg_basebackup -X stream`, `redis-cli --rdb`): the floor of any copy, without starting anything.
//! - replication lag under a steady write load (`REPL_BENCH_RATE` writes/s, default 200, for 10 s): each write's
//!   time from its acknowledgement on the source until a reader polling the replica every 2 ms sees it; p50 and p99;
//! - switchover: promote until both members are ACTIVE with the roles swapped;
//! - failover: the source's engine frozen (SIGSTOP) until the replica takes a write.
//!
//! Run: `cargo bench --bench replication` (as root or a user that may run the engines).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{ConnectOptions, Executor};
use trove::core::api::{CreateBackup, CreateInstance, InstanceView};
use trove::core::memory::NoAuth;
use trove::core::model::{DatabaseSpec, Secret, UserSpec};
use trove::core::ports::RequestContext;
use trove::core::CoreConfig;
use trove::embedded::{Embedded, EmbeddedOptions};
use uuid::Uuid;

const USER: &str = "bench";
const PASSWORD: &str = "bench-Pw-12345";
const DB: &str = "bench";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn t1() -> RequestContext {
    RequestContext::tenant("bench")
}

fn endpoint(v: &InstanceView) -> SocketAddr {
    let ip = v
        .instance
        .addresses
        .first()
        .map(|a| a.address.clone())
        .unwrap_or_else(|| "127.0.0.1".into());
    format!("{ip}:{}", v.instance.port.expect("a port"))
        .parse()
        .expect("an address")
}

async fn wait(
    emb: &Embedded,
    id: Uuid,
    what: &str,
    pred: impl Fn(&InstanceView) -> bool,
) -> InstanceView {
    let api = emb.control_plane().api();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let v = api.show_instance(&t1(), id).await.expect("show");
        if pred(&v) {
            return v;
        }
        assert!(v.status != "ERROR", "{what}: {:?}", v.instance.fault);
        assert!(Instant::now() < deadline, "{what}: {}", v.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn active(v: &InstanceView) -> bool {
    v.status == "ACTIVE" && v.instance.task == trove::core::state::TaskStatus::None
}

/// A connection to an instance as the bench user.
enum Conn {
    Sql(sqlx::MySqlConnection),
    Pg(sqlx::PgConnection),
    Redis(redis::aio::MultiplexedConnection),
}

impl Conn {
    async fn open(ds: &str, at: SocketAddr) -> Result<Conn, String> {
        if ds == "postgresql" {
            return sqlx::postgres::PgConnectOptions::new()
                .host(&at.ip().to_string())
                .port(at.port())
                .username(USER)
                .password(PASSWORD)
                .database(DB)
                .connect()
                .await
                .map(Conn::Pg)
                .map_err(|e| e.to_string());
        }
        if ds == "redis" {
            let url = format!("redis://{USER}:{PASSWORD}@{at}/");
            let c = redis::Client::open(url).map_err(|e| e.to_string())?;
            c.get_multiplexed_async_connection()
                .await
                .map(Conn::Redis)
                .map_err(|e| e.to_string())
        } else {
            sqlx::mysql::MySqlConnectOptions::new()
                .host(&at.ip().to_string())
                .port(at.port())
                .username(USER)
                .password(PASSWORD)
                .database(DB)
                .connect()
                .await
                .map(Conn::Sql)
                .map_err(|e| e.to_string())
        }
    }

    /// Writes item `n` (a `pad`-byte payload).
    async fn write(&mut self, n: u64, pad: usize) -> Result<(), String> {
        let payload = "x".repeat(pad);
        let insert = format!("INSERT INTO items VALUES ({n}, '{payload}')");
        match self {
            Conn::Sql(c) => c
                .execute(insert.as_str())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Conn::Pg(c) => c
                .execute(insert.as_str())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Conn::Redis(c) => redis::cmd("SET")
                .arg(format!("item:{n}"))
                .arg(payload)
                .query_async::<()>(c)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Whether item `n` is there.
    async fn has(&mut self, n: u64) -> bool {
        let q = format!("SELECT COUNT(*) FROM items WHERE n = {n}");
        match self {
            Conn::Sql(c) => sqlx::query_scalar::<_, i64>(&q)
                .fetch_one(c)
                .await
                .is_ok_and(|x| x == 1),
            Conn::Pg(c) => sqlx::query_scalar::<_, i64>(&q)
                .fetch_one(c)
                .await
                .is_ok_and(|x| x == 1),
            Conn::Redis(c) => redis::cmd("EXISTS")
                .arg(format!("item:{n}"))
                .query_async::<i64>(c)
                .await
                .is_ok_and(|x| x == 1),
        }
    }

    /// Fills with `mb` MB in `n` items from `from`.
    async fn fill(&mut self, mb: u64, from: u64) -> u64 {
        let count = mb * 1024 * 1024 / 1024;
        let batches = (from..from + count).step_by(500).map(|n| {
            let rows: Vec<String> = (n..(n + 500).min(from + count))
                .map(|i| format!("({i}, REPEAT('y', 1000))"))
                .collect();
            format!("INSERT INTO items VALUES {}", rows.join(","))
        });
        match self {
            Conn::Sql(c) => {
                for b in batches {
                    c.execute(b.as_str()).await.expect("fill");
                }
            }
            Conn::Pg(c) => {
                for b in batches {
                    c.execute(b.as_str()).await.expect("fill");
                }
            }
            Conn::Redis(c) => {
                let mut p = redis::pipe();
                for i in from..from + count {
                    p.cmd("SET")
                        .arg(format!("item:{i}"))
                        .arg("y".repeat(1000))
                        .ignore();
                }
                p.query_async::<()>(c).await.expect("fill");
            }
        }
        from + count
    }
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn create(emb: &Embedded, name: &str, ds: &str) -> Uuid {
    let sql = ds != "redis";
    let api = emb.control_plane().api();
    let v = api
        .create_instance(
            &t1(),
            CreateInstance {
                name: name.into(),
                flavor_ref: Some("2".into()),
                volume_size: Some(5),
                datastore: Some(ds.into()),
                databases: if sql {
                    vec![DatabaseSpec {
                        name: DB.into(),
                        character_set: None,
                        collate: None,
                    }]
                } else {
                    vec![]
                },
                users: vec![UserSpec {
                    name: USER.into(),
                    password: Secret::new(PASSWORD),
                    host: None,
                    databases: if sql { vec![DB.into()] } else { vec![] },
                }],
                ..Default::default()
            },
        )
        .await
        .expect("create");
    wait(emb, v.instance.id, name, active).await;
    v.instance.id
}

async fn bench(emb: &Embedded, ds: &str) {
    let api = emb.control_plane().api();
    let mb = env_num("REPL_BENCH_MB", 64);
    let src = create(emb, &format!("src-{ds}"), ds).await;
    let src_at = endpoint(&api.show_instance(&t1(), src).await.expect("show"));
    let mut c = Conn::open(ds, src_at).await.expect("connect");
    let table = "CREATE TABLE items (n BIGINT PRIMARY KEY, pad TEXT)";
    match &mut c {
        Conn::Sql(s) => drop(s.execute(table).await.expect("table")),
        Conn::Pg(s) => drop(s.execute(table).await.expect("table")),
        Conn::Redis(_) => {}
    }
    let mut next = c.fill(mb, 0).await;

    // Replica creation, next to a backup + restore of the same data.
    let t = Instant::now();
    let rep = api
        .create_instance(
            &t1(),
            CreateInstance {
                name: format!("rep-{ds}"),
                replica_of: Some(src),
                ..Default::default()
            },
        )
        .await
        .expect("replica")
        .instance
        .id;
    let rep_view = wait(emb, rep, "replica", active).await;
    let replica_took = t.elapsed();
    let t = Instant::now();
    let b = api
        .create_backup(
            &t1(),
            CreateBackup {
                name: "b".into(),
                instance: Some(src),
                ..Default::default()
            },
        )
        .await
        .expect("backup");
    loop {
        let v = api
            .show_backup(&t1(), b.backup.id)
            .await
            .expect("backup show");
        if v.backup.state == trove::core::state::BackupState::Completed {
            break;
        }
        assert!(
            !matches!(v.backup.state, trove::core::state::BackupState::Failed),
            "{:?}",
            v.backup.fault
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait(emb, src, "source after its backup", active).await;
    let copy = api
        .create_instance(
            &t1(),
            CreateInstance {
                name: format!("copy-{ds}"),
                flavor_ref: Some("2".into()),
                volume_size: Some(5),
                datastore: Some(ds.into()),
                restore_point: Some(b.backup.id),
                ..Default::default()
            },
        )
        .await
        .expect("restore")
        .instance
        .id;
    wait(emb, copy, "restored copy", active).await;
    let restore_took = t.elapsed();
    let bare_took = bare_copy(emb, ds, src, src_at).await;
    println!(
        "{ds}: replica of {mb} MB ACTIVE and following in {:.2} s; backup + restore of the same data {:.2} s \
         (ratio restore / replica {:.2}x); bare copy by hand {:.2} s (ratio bare / replica {:.2}x)",
        replica_took.as_secs_f64(),
        restore_took.as_secs_f64(),
        restore_took.as_secs_f64() / replica_took.as_secs_f64(),
        bare_took.as_secs_f64(),
        bare_took.as_secs_f64() / replica_took.as_secs_f64()
    );

    // Lag under a steady write load.
    let rep_at = endpoint(&rep_view);
    let rate = env_num("REPL_BENCH_RATE", 200).max(1);
    let mut reader = Conn::open(ds, rep_at).await.expect("replica connect");
    let mut lags = Vec::new();
    let every = Duration::from_micros(1_000_000 / rate);
    let end = Instant::now() + Duration::from_secs(10);
    let mut pending: std::collections::VecDeque<(u64, Instant)> = Default::default();
    let mut next_write = Instant::now();
    while Instant::now() < end || !pending.is_empty() {
        if Instant::now() >= next_write && Instant::now() < end {
            c.write(next, 100).await.expect("write");
            pending.push_back((next, Instant::now()));
            next += 1;
            next_write += every;
        }
        while let Some(&(n, at)) = pending.front() {
            if reader.has(n).await {
                lags.push(at.elapsed());
                pending.pop_front();
            } else {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!(
        "{ds}: lag at {rate} writes/s: p50 {:.1} ms, p99 {:.1} ms ({} writes; the reader polls every 2 ms)",
        ms(percentile(&mut lags, 0.5)),
        ms(percentile(&mut lags, 0.99)),
        lags.len()
    );

    // Switchover, then failover of the new source back to the old one.
    let t = Instant::now();
    api.promote_to_replica_source(&t1(), rep)
        .await
        .expect("promote");
    wait(emb, rep, "promoted", |v| {
        active(v) && v.instance.replica_of.is_none()
    })
    .await;
    wait(emb, src, "old source", |v| {
        active(v) && v.instance.replica_of == Some(rep)
    })
    .await;
    println!("{ds}: switchover in {:.0} ms", ms(t.elapsed()));
    let pid = listening_pid(rep_at).expect("the new source's engine");
    let t = Instant::now();
    std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("kill");
    let mut n = 0;
    loop {
        if let Ok(mut w) = Conn::open(ds, src_at).await {
            if w.write(next + n, 10).await.is_ok() {
                break;
            }
        }
        n += 1;
        assert!(t.elapsed() < Duration::from_secs(60), "no failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{ds}: failover: the replica took a write {:.2} s after the source's engine froze",
        t.elapsed().as_secs_f64()
    );
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status();
    wait(emb, src, "new source", active).await;
    for id in [rep, copy, src] {
        let _ = api.delete_instance(&t1(), id).await;
        wait_gone(emb, id).await;
    }
}

/// The engine's own copy tool run by hand against the source as its root (enabled through the API): the
/// time of the copy alone.
async fn bare_copy(emb: &Embedded, ds: &str, src: Uuid, at: SocketAddr) -> Duration {
    let root = emb
        .control_plane()
        .api()
        .root_enable(&t1(), src, None)
        .await
        .expect("root on the source")
        .password;
    let dir = tempfile::tempdir().expect("copy dir");
    let (host, port) = (at.ip().to_string(), at.port().to_string());
    let target = dir.path().join("copy");
    let mut cmd = match ds {
        "postgresql" => {
            let mut c = std::process::Command::new("pg_basebackup");
            c.args([
                "-h", &host, "-p", &port, "-U", "root", "-X", "stream", "-c", "fast",
            ])
            .arg("-D")
            .arg(&target)
            .env("PGPASSWORD", root.expose());
            c
        }
        "redis" => {
            // Redis's root is its `default` user.
            let mut c = std::process::Command::new("redis-cli");
            c.args([
                "-h",
                &host,
                "-p",
                &port,
                "--user",
                "default",
                "--no-auth-warning",
            ])
            .args(["--pass", root.expose(), "--rdb"])
            .arg(&target);
            c
        }
        _ => {
            let mut c = std::process::Command::new("mariadb-backup");
            c.args([
                "--backup", "--host", &host, "--port", &port, "--user", "root",
            ])
            .arg(format!("--password={}", root.expose()))
            .arg(format!("--target-dir={}", target.display()));
            c
        }
    };
    let t = Instant::now();
    let out = cmd.output().expect("run the copy tool");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{ds}: bare copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

async fn wait_gone(emb: &Embedded, id: Uuid) {
    let api = emb.control_plane().api();
    let deadline = Instant::now() + Duration::from_secs(120);
    while api.show_instance(&t1(), id).await.is_ok() {
        assert!(Instant::now() < deadline, "instance {id} not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pid of the process listening on `at` (from /proc/net/tcp and the processes' sockets).
fn listening_pid(at: SocketAddr) -> Option<u32> {
    // The exact local address (the engines share port numbers on addresses of their own, and the machine's own
    // servers listen on the standard ports too).
    let std::net::IpAddr::V4(ip) = at.ip() else {
        return None;
    };
    let o = ip.octets();
    let local = format!(
        "{:02X}{:02X}{:02X}{:02X}:{:04X}",
        o[3],
        o[2],
        o[1],
        o[0],
        at.port()
    );
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inodes: Vec<String> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| f[9].to_string())
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(l) = std::fs::read_link(fd.path()) {
                let l = l.to_string_lossy();
                if inodes.iter().any(|i| l == format!("socket:[{i}]")) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let state = tempfile::Builder::new()
            .prefix("rb")
            .tempdir()
            .expect("state dir");
        std::fs::set_permissions(
            state.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let mut opts = EmbeddedOptions::new(state.path());
        opts.config = CoreConfig {
            agent_call_high_timeout: Duration::from_secs(300),
            ..CoreConfig::default()
        };
        let emb = Embedded::start(opts, Arc::new(NoAuth::new()))
            .await
            .expect("the embedded deployment starts");
        let engines =
            std::env::var("REPL_BENCH_ENGINES").unwrap_or_else(|_| "mysql,postgresql,redis".into());
        for ds in engines.split(',') {
            bench(&emb, ds.trim()).await;
        }
        emb.shutdown().await;
    });
}
