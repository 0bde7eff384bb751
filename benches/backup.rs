//! Backup and restore throughput of MariaDB and PostgreSQL (`BACKUP_BENCH_ENGINES`, default both) next to the raw
//! tools writing the same kind of file in the same run.
//!
//! PostgreSQL: the same shape with `pg_basebackup -Ft | zstd -3 -T0 > file` as the raw backup, `zstd -dc | tar -x`
//! and `postgres` started until it answers as the raw restore, and the incremental (the WAL since the full).
//!
//! A MariaDB instance is prepared through the real strategy and filled with `BACKUP_BENCH_MB` MB of rows (default
//! 256; the figure uses 1024): 256 random hex characters and 512 repeated ones each, so zstd has work. Then, `BACKUP_BENCH_RUNS` times each (default 3), alternating:
//! - ours: the guest's backup facet streaming into the filesystem backup store (`FsBackupStore`, SHA-256 while it
//!   writes); raw: `mariadb-backup --backup --stream=xbstream | zstd -3 -T0 > file` with the same login;
//! - ours: a restoring prepare of a new instance from that backup, to a running engine (unpack while verifying,
//!   `--prepare`, move, first start with the admin reset); raw: `zstd -dc file | mbstream -x`,
//!   `mariadb-backup --prepare` and `mariadbd` started on the result until it answers;
//! - an incremental backup after 1 % of the rows changed, next to the full one.
//!
//! Prints medians, MB/s of the data directory, the ratios (raw time / ours: ≥ 1 means ours is as fast), and the
//! guest's peak memory growth during our backups (streaming: it stays flat however large the data).
//!
//! Run: `cargo bench --bench backup` (as root or as a user that may run MariaDB; `mariadb-backup` and `zstd`
//! installed).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{ConnectOptions, Executor};
use trove::backends::local::FsBackupStore;
use trove_core::model::{DatastoreVersion, Flavor, Manager};
use trove_core::ports::{
    BackupJob, BackupOutcome, BackupPiece, BackupProgress, DynBackupStore, PrepareRequest,
    RestoreSpec, StrategyContext, StrategyFactory,
};
use trove_guest::{EngineConfig, EngineStrategyFactory, RunAs};
use uuid::Uuid;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("bb")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn ctx(dir: &Path, manager: Manager) -> StrategyContext {
    StrategyContext {
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
            flavor_ids: Vec::new(),
        },
        flavor: Flavor {
            id: "b".into(),
            name: "b".into(),
            ram_mb: 1024,
            vcpus: 1,
            disk_gb: 0,
            ephemeral_gb: 0,
        },
        server_dir: dir.join("srv"),
        volume_path: Some(dir.join("vol")),
        bind_address: "127.0.0.1".into(),
        port: free_port(),
    }
}

fn request() -> PrepareRequest {
    PrepareRequest {
        memory_mb: 1024,
        volume_size_gb: Some(50),
        databases: vec![],
        users: vec![],
        root_password: None,
        overrides: Default::default(),
        restore: None,
    }
}

fn du(p: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-sb"])
        .arg(p)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `script` with `sh -c` as the engine user; panics when it fails.
fn sh_as(who: RunAs, script: &str) {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    if trove_guest::current_uid() != who.uid {
        c.uid(who.uid).gid(who.gid);
    }
    let st = c.status().expect("sh");
    assert!(st.success(), "{script} failed");
}

/// Starts `mariadbd` on a prepared data directory and waits until it answers a login (any answer, as the
/// strategy's readiness check), then kills it: the part of a restore to a running engine the raw tools leave out.
async fn raw_start(who: RunAs, data: &Path) {
    let sock = data.join("raw.sock");
    let mut c = Command::new("mariadbd");
    c.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", sock.display()))
        .arg("--skip-networking")
        .arg("--skip-name-resolve")
        .arg(format!("--pid-file={}", data.join("raw.pid").display()))
        .arg(format!("--log-error={}", data.join("raw.err").display()));
    if trove_guest::current_uid() != who.uid {
        c.uid(who.uid).gid(who.gid);
    }
    let mut child = c.spawn().expect("mariadbd");
    let t = Instant::now();
    loop {
        let r = sqlx::mysql::MySqlConnectOptions::new()
            .socket(&sock)
            .username("nobody-here")
            .connect()
            .await;
        match r {
            Ok(_) | Err(sqlx::Error::Database(_)) => break,
            Err(_) => {
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "mariadbd did not answer"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

struct Source {
    dir: tempfile::TempDir,
    ctx: StrategyContext,
    strategy: Arc<dyn trove_core::ports::DatastoreStrategy>,
}

impl Source {
    fn secret(&self) -> String {
        std::fs::read_to_string(self.ctx.server_dir.join("guest/os_admin.secret"))
            .expect("admin secret")
            .trim()
            .to_string()
    }

    fn socket(&self) -> std::path::PathBuf {
        // The strategy's socket: the one named in its rendered my.cnf.
        let cnf =
            std::fs::read_to_string(self.ctx.server_dir.join("engine/my.cnf")).expect("my.cnf");
        cnf.lines()
            .find_map(|l| l.trim().strip_prefix("socket = "))
            .expect("socket in my.cnf")
            .into()
    }

    async fn exec(&self, statements: &[&str]) {
        let mut c = sqlx::mysql::MySqlConnectOptions::new()
            .socket(self.socket())
            .username("os_admin")
            .password(&self.secret())
            // The sequence engine's seq_1_to_N tables need a database selected.
            .database("mysql")
            .connect()
            .await
            .expect("connect");
        for s in statements {
            c.execute(*s).await.expect("statement");
        }
    }
}

async fn our_backup(
    s: &Arc<dyn trove_core::ports::DatastoreStrategy>,
    key: &str,
    parent: Option<BackupPiece>,
) -> (Duration, BackupOutcome) {
    let facet = s.backup().expect("backups offered");
    let job = BackupJob {
        backup_id: Uuid::new_v4(),
        key: key.into(),
        parent,
        retain_from: None,
    };
    let t = Instant::now();
    let o = facet
        .backup(&job, &BackupProgress::default())
        .await
        .expect("backup");
    (t.elapsed(), o)
}

/// `p` made again, empty, owned by the engine user (where a raw restore unpacks).
fn fresh_dir(who: RunAs, p: &Path) {
    let _ = std::fs::remove_dir_all(p);
    std::fs::create_dir_all(p).expect("mkdir");
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    if trove_guest::current_uid() != who.uid {
        std::os::unix::fs::chown(p, Some(who.uid), Some(who.gid)).expect("chown");
    }
}

/// One restoring prepare of a new `manager` instance from `full`, to a running engine; its time.
async fn our_restore(
    factory: &EngineStrategyFactory,
    manager: Manager,
    full: &BackupOutcome,
) -> Duration {
    let dir = tempdir();
    let c = ctx(dir.path(), manager);
    let s = factory.strategy(&c).expect("strategy");
    let mut req = request();
    req.restore = Some(RestoreSpec {
        chain: vec![piece(full, false)],
        restore_time: None,
        replica: false,
    });
    let t = Instant::now();
    s.prepare(&req).await.expect("restore");
    let took = t.elapsed();
    s.stop().await.expect("stop");
    took
}

fn piece(o: &BackupOutcome, incremental: bool) -> BackupPiece {
    BackupPiece {
        backup_id: Uuid::new_v4(),
        key: o.object.key.clone(),
        checksum: o.object.checksum.clone(),
        size: o.object.size,
        position: o.position.clone(),
        incremental,
    }
}

#[tokio::main]
async fn main() {
    // `RUST_LOG=info` shows the restore's phases (unpack, prepare, engine start).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mb = env_num("BACKUP_BENCH_MB", 256);
    let runs = env_num("BACKUP_BENCH_RUNS", 3).max(1) as usize;
    let engines =
        std::env::var("BACKUP_BENCH_ENGINES").unwrap_or_else(|_| "mariadb,postgresql".into());
    for e in engines.split(',').map(str::trim) {
        match e {
            "mariadb" => mariadb(mb, runs).await,
            "postgresql" => postgresql(mb, runs).await,
            other => panic!("BACKUP_BENCH_ENGINES: unknown engine {other} (mariadb, postgresql)"),
        }
    }
}

/// MariaDB: `mariadb-backup` streams next to the raw tool.
async fn mariadb(mb: u64, runs: usize) {
    println!("== MariaDB");
    let who = RunAs::resolve(None).expect("engine user");
    let work = tempdir();
    let store_dir = work.path().join("store");
    let store: DynBackupStore = Arc::new(FsBackupStore::open(&store_dir).expect("store"));
    let factory =
        EngineStrategyFactory::new(EngineConfig::default()).with_backup_store(store.clone());

    // The source, filled with `mb` MB of rows of about 1 KB (a quarter random hex, the rest repeated).
    let dir = tempdir();
    let c = ctx(dir.path(), Manager::Mariadb);
    let strategy = factory.strategy(&c).expect("MariaDB installed");
    strategy.prepare(&request()).await.expect("prepare");
    let src = Source {
        dir,
        ctx: c,
        strategy,
    };
    src.exec(&[
        "CREATE DATABASE bench",
        "CREATE TABLE bench.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, pad VARCHAR(1100)) ENGINE=InnoDB",
        "INSERT INTO bench.t (pad) SELECT CONCAT(MD5(RAND()), MD5(RAND()), MD5(RAND()), MD5(RAND()), MD5(RAND()), MD5(RAND()), MD5(RAND()), MD5(RAND()), REPEAT('x', 512)) FROM seq_1_to_1024",
    ])
    .await;
    let rows_wanted = mb * 1024;
    let mut rows = 1024u64;
    while rows < rows_wanted {
        let n = rows.min(rows_wanted - rows);
        src.exec(&[&format!(
            "INSERT INTO bench.t (pad) SELECT CONCAT(MD5(RAND()), MD5(RAND()), MD5(RAND()), MD5(RAND()), MD5(RAND()), MD5(RAND()), MD5(RAND()), MD5(RAND()), REPEAT('x', 512)) FROM seq_1_to_{n}"
        )])
        .await;
        rows += n;
    }
    let data_bytes = du(&src.ctx.volume_path.clone().expect("volume").join("data"));
    let data_mb = data_bytes as f64 / 1e6;
    println!("data directory: {data_mb:.0} MB ({rows} rows)");

    // Backups, alternating.
    let raw_file = work.path().join("raw.xb.zst");
    let cnf = src.ctx.server_dir.join("engine/my.cnf");
    let raw_tmp = work.path().join("raw-tmp");
    std::fs::create_dir_all(&raw_tmp).expect("mkdir");
    for p in [&raw_tmp, work.path()] {
        if trove_guest::current_uid() != who.uid {
            std::os::unix::fs::chown(p, Some(who.uid), Some(who.gid)).expect("chown");
        }
    }
    let raw_backup = format!(
        "mariadb-backup --defaults-file={cnf} --user=os_admin --password='{pw}' --socket={sock} --backup \
         --stream=xbstream --target-dir={tmp} 2>/dev/null | zstd -3 -T0 -q -c > {out}",
        cnf = cnf.display(),
        pw = src.secret(),
        sock = src.socket().display(),
        tmp = raw_tmp.display(),
        out = raw_file.display(),
    );
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let rss_before = peak_rss_kb();
    let mut full = None;
    for i in 0..runs {
        let t = Instant::now();
        sh_as(who, &raw_backup);
        raw.push(t.elapsed());
        let (d, o) = our_backup(&src.strategy, &format!("bench/full-{i}"), None).await;
        ours.push(d);
        full = Some(o);
    }
    let rss_growth_mb = (peak_rss_kb().saturating_sub(rss_before)) as f64 / 1024.0;
    let full = full.expect("a backup");
    let (o, r) = (median(ours), median(raw));
    println!(
        "backup:  ours {:.2} s ({:.0} MB/s), raw mariadb-backup | zstd > file {:.2} s ({:.0} MB/s); raw/ours = {:.2}; \
         object {:.0} MB (raw file {:.0} MB); guest peak memory growth {:.1} MB",
        o.as_secs_f64(),
        data_mb / o.as_secs_f64(),
        r.as_secs_f64(),
        data_mb / r.as_secs_f64(),
        r.as_secs_f64() / o.as_secs_f64(),
        full.object.size as f64 / 1e6,
        std::fs::metadata(&raw_file).map(|m| m.len()).unwrap_or(0) as f64 / 1e6,
        rss_growth_mb,
    );

    // Incremental after 1 % of the rows changed.
    let changed = (rows / 100).max(1);
    src.exec(&[&format!(
        "UPDATE bench.t SET pad = CONCAT(REPEAT(MD5(RAND()), 8), REPEAT('y', 512)) WHERE id <= {changed}"
    )])
    .await;
    let (inc_t, inc) = our_backup(&src.strategy, "bench/inc", Some(piece(&full, false))).await;
    println!(
        "incremental after 1 % of the rows changed: {:.2} s, {:.1} MB; the full: {:.2} s, {:.0} MB",
        inc_t.as_secs_f64(),
        inc.object.size as f64 / 1e6,
        o.as_secs_f64(),
        full.object.size as f64 / 1e6
    );

    // Restores, alternating.
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let out = work.path().join("raw-restore");
        fresh_dir(who, &out);
        let t = Instant::now();
        sh_as(
            who,
            &format!(
                "zstd -dc -q {f} | mbstream -x -C {d} && mariadb-backup --prepare --target-dir={d} >/dev/null 2>&1",
                f = raw_file.display(),
                d = out.display()
            ),
        );
        raw_start(who, &out).await;
        raw.push(t.elapsed());
        ours.push(our_restore(&factory, Manager::Mariadb, &full).await);
    }
    let (o, r) = (median(ours), median(raw));
    println!(
        "restore: ours (to a running engine) {:.2} s ({:.0} MB/s), raw zstd -dc | mbstream -x, --prepare, mariadbd \
         until it answers {:.2} s ({:.0} MB/s); raw/ours = {:.2}",
        o.as_secs_f64(),
        data_mb / o.as_secs_f64(),
        r.as_secs_f64(),
        data_mb / r.as_secs_f64(),
        r.as_secs_f64() / o.as_secs_f64()
    );
    src.strategy.stop().await.expect("stop");
    drop(src.dir);
}

/// The PostgreSQL server binaries' directory (Debian's newest).
fn pg_bin() -> std::path::PathBuf {
    let mut v: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL installed")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists())
        .collect();
    v.sort();
    v.pop().expect("a PostgreSQL server")
}

/// Starts `postgres` on a restored data directory (its own port and socket, no archiving) and waits until it
/// answers a login (any answer), then stops it: the part of a restore to a running engine the raw tools leave out.
async fn raw_pg_start(who: RunAs, data: &Path) {
    let port = free_port();
    let mut c = Command::new(pg_bin().join("postgres"));
    c.arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(data)
        .args(["-c", "listen_addresses=", "-c", "archive_mode=off"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if trove_guest::current_uid() != who.uid {
        c.uid(who.uid).gid(who.gid);
    }
    let mut child = c.spawn().expect("postgres");
    let t = Instant::now();
    loop {
        let r = sqlx::postgres::PgConnectOptions::new()
            .socket(data)
            .port(port)
            .username("nobody-here")
            .connect()
            .await;
        match r {
            Ok(_) | Err(sqlx::Error::Database(_)) => break,
            Err(_) => {
                assert!(
                    t.elapsed() < Duration::from_secs(120),
                    "postgres did not answer"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// PostgreSQL: `pg_basebackup` streamed through zstd next to the same tool writing a file; the WAL incremental.
async fn postgresql(mb: u64, runs: usize) {
    println!("== PostgreSQL");
    let who = RunAs::resolve(None).expect("engine user");
    let work = tempdir();
    let store: DynBackupStore =
        Arc::new(FsBackupStore::open(work.path().join("store")).expect("store"));
    let factory =
        EngineStrategyFactory::new(EngineConfig::default()).with_backup_store(store.clone());
    let dir = tempdir();
    let c = ctx(dir.path(), Manager::Postgresql);
    let strategy = factory.strategy(&c).expect("PostgreSQL installed");
    strategy.prepare(&request()).await.expect("prepare");
    let secret = std::fs::read_to_string(c.server_dir.join("guest/os_admin.secret"))
        .expect("admin secret")
        .trim()
        .to_string();
    // The strategy's socket directory: the one named in its rendered trove.conf.
    let conf = std::fs::read_to_string(
        c.volume_path
            .clone()
            .expect("volume")
            .join("data/trove.conf"),
    )
    .expect("trove.conf");
    let sock: std::path::PathBuf = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("unix_socket_directories = "))
        .expect("socket dir")
        .trim_matches('\'')
        .into();
    let mut conn = sqlx::postgres::PgConnectOptions::new()
        .socket(&sock)
        .port(c.port)
        .username("os_admin")
        .password(&secret)
        .database("postgres")
        .connect()
        .await
        .expect("connect");
    conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, pad text)")
        .await
        .expect("create");
    let rows = mb * 1100;
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(100_000);
        conn.execute(
            format!(
                "INSERT INTO t (pad) SELECT md5(random()::text) || md5(random()::text) || md5(random()::text) || \
                 md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) || \
                 md5(random()::text) || repeat('x', 512) FROM generate_series(1, {n})"
            )
            .as_str(),
        )
        .await
        .expect("insert");
        done += n;
    }
    conn.execute("CHECKPOINT").await.expect("checkpoint");
    let data_mb = du(&c.volume_path.clone().expect("volume").join("data")) as f64 / 1e6;
    println!("data directory: {data_mb:.0} MB ({rows} rows)");

    let raw_file = work.path().join("raw.tar.zst");
    if trove_guest::current_uid() != who.uid {
        std::os::unix::fs::chown(work.path(), Some(who.uid), Some(who.gid)).expect("chown");
    }
    let raw_backup = format!(
        "PGPASSWORD='{secret}' {bin}/pg_basebackup --no-password --pgdata=- --format=tar --wal-method=fetch \
         --checkpoint=fast --no-manifest --dbname='host={sock} port={port} user=os_admin dbname=postgres' \
         | zstd -3 -T0 -q -c > {out}",
        bin = pg_bin().display(),
        sock = sock.display(),
        port = c.port,
        out = raw_file.display(),
    );
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let rss_before = peak_rss_kb();
    let mut full = None;
    for i in 0..runs {
        let t = Instant::now();
        sh_as(who, &raw_backup);
        raw.push(t.elapsed());
        let (d, o) = our_backup(&strategy, &format!("bench/pg-full-{i}"), None).await;
        ours.push(d);
        full = Some(o);
    }
    let rss_growth_mb = (peak_rss_kb().saturating_sub(rss_before)) as f64 / 1024.0;
    let full = full.expect("a backup");
    let (o, r) = (median(ours), median(raw));
    println!(
        "backup:  ours {:.2} s ({:.0} MB/s), raw pg_basebackup -Ft | zstd > file {:.2} s ({:.0} MB/s); raw/ours = \
         {:.2}; object {:.0} MB (raw file {:.0} MB); guest peak memory growth {:.1} MB",
        o.as_secs_f64(),
        data_mb / o.as_secs_f64(),
        r.as_secs_f64(),
        data_mb / r.as_secs_f64(),
        r.as_secs_f64() / o.as_secs_f64(),
        full.object.size as f64 / 1e6,
        std::fs::metadata(&raw_file).map(|m| m.len()).unwrap_or(0) as f64 / 1e6,
        rss_growth_mb,
    );

    // Incremental (the WAL since the full) after 1 % of the rows changed.
    let changed = (rows / 100).max(1);
    conn.execute(
        format!(
            "UPDATE t SET pad = repeat(md5(random()::text), 8) || repeat('y', 512) WHERE id <= {changed}"
        )
        .as_str(),
    )
    .await
    .expect("update");
    let (inc_t, inc) = our_backup(&strategy, "bench/pg-inc", Some(piece(&full, false))).await;
    println!(
        "incremental after 1 % of the rows changed: {:.2} s, {:.1} MB; the full: {:.2} s, {:.0} MB",
        inc_t.as_secs_f64(),
        inc.object.size as f64 / 1e6,
        o.as_secs_f64(),
        full.object.size as f64 / 1e6
    );
    let _ = sqlx::Connection::close(conn).await;

    // Restores, alternating.
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let out = work.path().join("raw-restore");
        fresh_dir(who, &out);
        let t = Instant::now();
        sh_as(
            who,
            &format!(
                "zstd -dc -q {f} | tar -x -f - -C {d}",
                f = raw_file.display(),
                d = out.display()
            ),
        );
        raw_pg_start(who, &out).await;
        raw.push(t.elapsed());
        ours.push(our_restore(&factory, Manager::Postgresql, &full).await);
    }
    let (o, r) = (median(ours), median(raw));
    println!(
        "restore: ours (to a running engine) {:.2} s ({:.0} MB/s), raw zstd -dc | tar -x, postgres until it \
         answers {:.2} s ({:.0} MB/s); raw/ours = {:.2}",
        o.as_secs_f64(),
        data_mb / o.as_secs_f64(),
        r.as_secs_f64(),
        data_mb / r.as_secs_f64(),
        r.as_secs_f64() / o.as_secs_f64()
    );
    strategy.stop().await.expect("stop");
    drop(dir);
}
