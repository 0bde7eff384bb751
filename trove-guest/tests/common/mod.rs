//! Shared fixtures of the real-engine tests: a private directory and port per test, and a guard that kills every
//! engine the test started, even when it fails.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trove_core::model::{DatastoreVersion, Flavor, Manager};
use trove_core::ports::{
    BackupJob, BackupPiece, BackupProgress, DatastoreStrategy, DynBackupStore, PrepareRequest,
    RestoreSpec, StrategyContext, StrategyFactory,
};
use trove_core::state::ServiceStatus;
use trove_guest::{EngineConfig, EngineStrategyFactory};
use uuid::Uuid;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A port nobody listens on right now, with the `extra` ports after it free too (engines that derive ports from
/// their own: Galera's group, IST and SST ports are the engine port + 1 to + 3). Taken below the ephemeral range, so
/// that no outgoing connection takes one of them while the test runs (a member restarted minutes later needs them).
pub fn free_port_run(extra: u16) -> u16 {
    for _ in 0..1000 {
        let r = u16::from_le_bytes(Uuid::new_v4().as_bytes()[..2].try_into().expect("2 bytes"));
        let p = 20000 + r % 9000;
        if (0..=extra).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            return p;
        }
    }
    panic!("no run of {} free ports found", extra + 1);
}

/// A free port whose neighbour `port + 10000` (a Redis Cluster bus) is free too; both below the ephemeral range,
/// so that no connection takes them meanwhile.
pub fn cluster_port() -> u16 {
    for _ in 0..1000 {
        let r = u16::from_le_bytes(Uuid::new_v4().as_bytes()[..2].try_into().expect("2 bytes"));
        let port = 20000 + r % 2700;
        let ok = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if ok(port) && ok(port + 10000) {
            return port;
        }
    }
    panic!("no free pair of ports")
}

pub fn flavor(ram_mb: u32) -> Flavor {
    Flavor {
        id: format!("f{ram_mb}"),
        name: format!("m{ram_mb}"),
        ram_mb,
        vcpus: 1,
        disk_gb: 0,
        ephemeral_gb: 0,
    }
}

pub fn version(manager: Manager) -> DatastoreVersion {
    DatastoreVersion {
        id: Uuid::new_v4(),
        datastore_id: Uuid::new_v4(),
        name: "test".into(),
        manager,
        image: String::new(),
        packages: String::new(),
        active: true,
        version: "test".into(),
        flavor_ids: Vec::new(),
    }
}

/// One engine instance under test.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ctx: StrategyContext,
    pub factory: EngineStrategyFactory,
    pub strategy: Arc<dyn DatastoreStrategy>,
}

impl Fixture {
    pub fn new(manager: Manager, ram_mb: u32) -> Fixture {
        Fixture::with_factory(
            manager,
            ram_mb,
            EngineStrategyFactory::new(EngineConfig::default()),
        )
    }

    /// An instance whose strategies back up into (and restore from) `store`.
    pub fn with_backups(manager: Manager, ram_mb: u32, store: DynBackupStore) -> Fixture {
        Fixture::with_factory(
            manager,
            ram_mb,
            EngineStrategyFactory::new(EngineConfig::default()).with_backup_store(store),
        )
    }

    /// An instance on `port` (e.g. one of [`cluster_port`]).
    pub fn on_port(manager: Manager, ram_mb: u32, port: u16) -> Fixture {
        Fixture::with_factory_on(
            manager,
            ram_mb,
            EngineStrategyFactory::new(EngineConfig::default()),
            port,
        )
    }

    fn with_factory(manager: Manager, ram_mb: u32, factory: EngineStrategyFactory) -> Fixture {
        Fixture::with_factory_on(manager, ram_mb, factory, free_port())
    }

    /// An instance listening on `port` whose strategies `factory` builds.
    pub fn with_factory_on(
        manager: Manager,
        ram_mb: u32,
        factory: EngineStrategyFactory,
        port: u16,
    ) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("tg")
            .tempdir()
            .expect("temp dir");
        // The engine runs as an unprivileged user, which must be able to reach its directories.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let ctx = StrategyContext {
            instance_id: Uuid::new_v4(),
            datastore_version: version(manager),
            flavor: flavor(ram_mb),
            server_dir: dir.path().join("srv"),
            volume_path: Some(dir.path().join("vol")),
            bind_address: "127.0.0.1".into(),
            port,
        };
        let strategy = factory
            .strategy(&ctx)
            .expect("the engine is installed on this machine");
        Fixture {
            dir,
            ctx,
            factory,
            strategy,
        }
    }

    pub fn port(&self) -> u16 {
        self.ctx.port
    }

    pub fn prepare_request(&self, volume_gb: u32) -> PrepareRequest {
        PrepareRequest {
            memory_mb: self.ctx.flavor.ram_mb,
            volume_size_gb: Some(volume_gb),
            databases: Vec::new(),
            users: Vec::new(),
            root_password: None,
            overrides: Default::default(),
            restore: None,
        }
    }

    /// A prepare request making database `db` (when given) and user `user` with `password` on it.
    pub fn app_request(&self, db: Option<&str>, user: &str, password: &str) -> PrepareRequest {
        let mut req = self.prepare_request(1);
        req.databases = db
            .map(|d| trove_core::model::DatabaseSpec {
                name: d.into(),
                character_set: None,
                collate: None,
            })
            .into_iter()
            .collect();
        req.users = vec![trove_core::model::UserSpec {
            name: user.into(),
            password: trove_core::model::Secret::new(password),
            host: None,
            databases: db.into_iter().map(String::from).collect(),
        }];
        req
    }

    /// The instance's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.ctx
            .volume_path
            .clone()
            .unwrap_or_else(|| self.ctx.server_dir.join("volume"))
            .join("data")
    }

    /// The guest's admin password of this instance.
    pub fn admin_secret(&self) -> String {
        std::fs::read_to_string(self.ctx.server_dir.join("guest/os_admin.secret"))
            .expect("admin secret")
            .trim()
            .to_string()
    }

    /// A fresh strategy for the same instance, as a restarted control plane would build.
    pub fn reopen(&self) -> Arc<dyn DatastoreStrategy> {
        self.factory.strategy(&self.ctx).expect("strategy")
    }

    /// Pid files this instance's engine may have written.
    fn pid_files(&self) -> Vec<PathBuf> {
        let srv = &self.ctx.server_dir;
        let vol = self
            .ctx
            .volume_path
            .clone()
            .unwrap_or_else(|| srv.join("volume"));
        vec![
            srv.join("engine/mysqld.pid"),
            srv.join("engine/redis.pid"),
            vol.join("data/postmaster.pid"),
        ]
    }

    /// The running engine's pid.
    pub fn engine_pid(&self) -> Option<u32> {
        self.pid_files()
            .iter()
            .find_map(|p| read_pid(p))
            .filter(|p| alive(*p))
    }

    /// Kills the engine the hard way (what a crash looks like).
    pub fn kill_engine(&self) -> u32 {
        let pid = self.engine_pid().expect("a running engine");
        let st = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
        let start = Instant::now();
        while alive(pid) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "engine {pid} survived kill -9"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        pid
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for p in self.pid_files() {
            if let Some(pid) = read_pid(&p).filter(|p| alive(*p)) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
    }
}

pub use trove_os::{pid_alive as alive, read_pid};

/// Waits (briefly) for the strategy to report `want`.
pub async fn wait_status(
    s: &Arc<dyn DatastoreStrategy>,
    want: ServiceStatus,
) -> trove_core::ports::EngineStatus {
    let start = Instant::now();
    loop {
        let st = s.status().await;
        if st.status == want || start.elapsed() > Duration::from_secs(10) {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Takes a full backup through the strategy's backup facet under `key`; answers the piece a restore needs.
pub async fn take_backup(s: &Arc<dyn DatastoreStrategy>, key: &str) -> BackupPiece {
    take_backup_on(s, key, None, None).await
}

/// Takes a backup under `key`, incremental on `parent` when given, keeping the engine's archive from the position
/// of `retain` when given (the task manager names the instance's oldest live backup).
pub async fn take_backup_on(
    s: &Arc<dyn DatastoreStrategy>,
    key: &str,
    parent: Option<&BackupPiece>,
    retain: Option<&BackupPiece>,
) -> BackupPiece {
    let facet = s.backup().expect("the backup facet");
    let job = BackupJob {
        backup_id: Uuid::new_v4(),
        key: key.to_string(),
        parent: parent.cloned(),
        retain_from: retain.and_then(|r| r.position.clone()),
    };
    let progress = BackupProgress::default();
    let t = Instant::now();
    let out = facet.backup(&job, &progress).await.expect("backup");
    eprintln!(
        "backup {key}: {} bytes in {:?}",
        out.object.size,
        t.elapsed()
    );
    assert_eq!(
        progress.bytes(),
        out.object.size,
        "progress counts every byte"
    );
    assert!(out.object.size > 0);
    BackupPiece {
        backup_id: job.backup_id,
        key: out.object.key,
        checksum: out.object.checksum,
        size: out.object.size,
        position: out.position,
        incremental: parent.is_some(),
    }
}

/// The object of `piece` stored again under another key with one byte flipped; the piece keeps the recorded
/// checksum and size (what a damaged object in the store looks like to a restore).
pub async fn damaged_copy(store: &DynBackupStore, piece: &BackupPiece) -> BackupPiece {
    use futures::StreamExt;
    let mut s = store.get(&piece.key).await.expect("object");
    let mut bytes = Vec::new();
    while let Some(c) = s.next().await {
        bytes.extend_from_slice(&c.expect("chunk"));
    }
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let key = format!("{}.damaged", piece.key);
    store
        .put(&key, futures::stream::iter([Ok(bytes)]).boxed())
        .await
        .expect("put");
    BackupPiece {
        key,
        ..piece.clone()
    }
}

/// A prepare of `fx` restoring `piece`.
pub fn restore_request(fx: &Fixture, piece: &BackupPiece) -> PrepareRequest {
    PrepareRequest {
        restore: Some(RestoreSpec {
            chain: vec![piece.clone()],
            restore_time: None,
            replica: false,
        }),
        ..fx.prepare_request(1)
    }
}

/// Waits (30 s at most) until `follower` covers where `leader` is now.
pub async fn caught_up(
    leader: &dyn trove_core::ports::ReplicationFacet,
    follower: &dyn trove_core::ports::ReplicationFacet,
) {
    let p = leader.position().await.expect("position");
    follower
        .wait_for(&p, Duration::from_secs(30))
        .await
        .expect("caught up");
}

/// Whether a directory is missing or empty.
pub fn empty_dir(p: &std::path::Path) -> bool {
    std::fs::read_dir(p).map_or(true, |mut rd| rd.next().is_none())
}
