//! Property tests over random event sequences.
//!
//! - Pure: for every combination of task, server, service status and backup flag, the derived API status and
//!   operating status are defined (one of the upstream values), and the instance can always be cleared: delete
//!   is allowed, or it is after `reset_status`.
//! - Whole control plane on the in-memory ports (API service, task manager with random crashes, conductor,
//!   simulated guests, manual clock): after every random event the derived status of every instance is defined and
//!   quota usage equals the sum of the live instances; at the end, reset_status + delete clear every instance and
//!   leave no server, volume or quota behind.

#![cfg(feature = "testing")]

use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

use trove_core::api::{ApiService, CreateInstance, DatastoreVersionSpec};
use trove_core::conductor::Conductor;
use trove_core::guest_agent::InProcessLauncher;
use trove_core::memory::{
    ManualClock, MemoryBlockStorage, MemoryBus, MemoryCompute, MemoryStore,
    SimulatedStrategyFactory,
};
use trove_core::model::{Flavor, InstanceFilter, QuotaUsage};
use trove_core::ports::{BlockStorage, Compute, DynStore, InfraStore, RequestContext};
use trove_core::state::{
    api_status, check_operation, operating_status, InstanceState, Operation, ServerStatus,
    ServiceStatus, TaskStatus,
};
use trove_core::taskmanager::{TaskManager, TaskManagerConfig};
use trove_core::testing::crash::CrashingStore;
use trove_core::CoreConfig;

const API_STATUSES: &[&str] = &[
    "ACTIVE",
    "BUILD",
    "ERROR",
    "REBOOT",
    "RESIZE",
    "UPGRADE",
    "RESTART_REQUIRED",
    "PROMOTE",
    "EJECT",
    "DETACH",
    "SHUTDOWN",
    "BACKUP",
    "UNKNOWN",
    "VERIFY_RESIZE",
    "DELETED",
];

const SERVERS: &[ServerStatus] = &[
    ServerStatus::Build,
    ServerStatus::Active,
    ServerStatus::Reboot,
    ServerStatus::Resize,
    ServerStatus::VerifyResize,
    ServerStatus::Shutdown,
    ServerStatus::Error,
    ServerStatus::Deleted,
];

fn state_strategy() -> impl Strategy<Value = InstanceState> {
    (
        prop::sample::select(TaskStatus::ALL.to_vec()),
        prop::option::of(prop::sample::select(SERVERS.to_vec())),
        prop::sample::select(ServiceStatus::ALL.to_vec()),
        any::<bool>(),
    )
        .prop_map(|(task, server, service, backup_running)| InstanceState {
            task,
            server,
            service,
            backup_running,
        })
}

proptest! {
    #[test]
    fn derived_status_is_always_defined_and_every_state_can_be_cleared(s in state_strategy()) {
        let status = api_status(&s);
        prop_assert!(API_STATUSES.contains(&status), "undefined status {status} for {s:?}");
        let op = operating_status(&s);
        prop_assert!(op.is_empty() || ServiceStatus::ALL.iter().any(|x| x.api_status() == op));
        // reset_status: task NONE, service UNKNOWN, running backups failed, an unfinished server build ERROR.
        let server = match s.server { Some(ServerStatus::Build) => Some(ServerStatus::Error), other => other };
        let reset = InstanceState { task: TaskStatus::None, service: ServiceStatus::Unknown, backup_running: false, server };
        prop_assert!(
            check_operation("i", Operation::Delete, &s).is_ok() || check_operation("i", Operation::Delete, &reset).is_ok(),
            "{s:?} can be neither deleted nor reset and deleted"
        );
    }
}

#[derive(Debug, Clone)]
enum Event {
    Create {
        tenant: u8,
        size: u32,
        flavor: u8,
    },
    Delete(usize),
    ForceDelete(usize),
    Restart(usize),
    ResizeVolume(usize, u32),
    ResizeFlavor(usize, u8),
    ResetStatus(usize),
    /// Run the claimable workflows on a worker that crashes before its N-th journal write (0: never).
    RunTaskManager {
        crash: usize,
    },
    CrashEngine(usize),
    Advance(u64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (0u8..2, 1u32..4, 0u8..2).prop_map(|(tenant, size, flavor)| Event::Create { tenant, size, flavor }),
        1 => (0usize..4).prop_map(Event::Delete),
        1 => (0usize..4).prop_map(Event::ForceDelete),
        1 => (0usize..4).prop_map(Event::Restart),
        1 => (0usize..4, 1u32..12).prop_map(|(i, s)| Event::ResizeVolume(i, s)),
        1 => (0usize..4, 0u8..2).prop_map(|(i, f)| Event::ResizeFlavor(i, f)),
        1 => (0usize..4).prop_map(Event::ResetStatus),
        3 => Just(Event::RunTaskManager { crash: 0 }),
        2 => (1usize..10).prop_map(|crash| Event::RunTaskManager { crash }),
        1 => (0usize..4).prop_map(Event::CrashEngine),
        1 => (0u64..120).prop_map(Event::Advance),
    ]
}

struct World {
    store: Arc<MemoryStore>,
    bus: Arc<MemoryBus>,
    compute: Arc<MemoryCompute>,
    storage: Arc<MemoryBlockStorage>,
    clock: Arc<ManualClock>,
    engines: Arc<SimulatedStrategyFactory>,
    api: ApiService,
    config: CoreConfig,
    ids: Vec<(Uuid, u8)>,
    workers: usize,
}

impl World {
    async fn new() -> (World, watch::Sender<bool>) {
        let config = CoreConfig {
            report_interval: Duration::from_secs(5),
            agent_call_low_timeout: Duration::from_millis(300),
            agent_call_high_timeout: Duration::from_secs(2),
            ..CoreConfig::default()
        };
        let store = Arc::new(MemoryStore::new());
        let bus = Arc::new(MemoryBus::new());
        let clock = Arc::new(ManualClock::new());
        let engines = Arc::new(SimulatedStrategyFactory::new());
        let launcher = Arc::new(InProcessLauncher::new(
            bus.clone(),
            clock.clone(),
            engines.clone(),
            config.report_interval,
        ));
        let compute = Arc::new(MemoryCompute::new(launcher));
        let storage = Arc::new(MemoryBlockStorage::new());
        let (tx, rx) = watch::channel(false);
        let conductor = Conductor::new(store.clone(), bus.clone(), clock.clone(), None);
        tokio::spawn(async move {
            let _ = conductor.run(rx).await;
        });
        let api = ApiService::new(store.clone(), bus.clone(), clock.clone(), config.clone());
        let admin = RequestContext::admin("admin");
        api.mgmt_create_datastore_version(
            &admin,
            DatastoreVersionSpec {
                datastore_name: "mariadb".into(),
                name: "11".into(),
                manager: "mariadb".into(),
                active: true,
                default: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        for (id, ram) in [("0", 256), ("1", 768)] {
            api.mgmt_put_flavor(
                &admin,
                Flavor {
                    id: id.into(),
                    name: id.into(),
                    ram_mb: ram,
                    vcpus: 1,
                    disk_gb: 1,
                    ephemeral_gb: 0,
                },
            )
            .await
            .unwrap();
        }
        (
            World {
                store,
                bus,
                compute,
                storage,
                clock,
                engines,
                api,
                config,
                ids: vec![],
                workers: 0,
            },
            tx,
        )
    }

    fn ctx(tenant: u8) -> RequestContext {
        RequestContext::tenant(format!("t{tenant}"))
    }

    fn pick(&self, i: usize) -> Option<(Uuid, RequestContext)> {
        if self.ids.is_empty() {
            return None;
        }
        let (id, t) = self.ids[i % self.ids.len()];
        Some((id, World::ctx(t)))
    }

    /// A worker; with `crash` > 0 it dies before its `crash`-th journal write (a crash-injecting store layer,
    /// answered too so the caller can tell the death from a failure).
    fn taskmanager(&mut self, crash: usize) -> (TaskManager, Option<Arc<CrashingStore>>) {
        self.workers += 1;
        let dying = (crash > 0).then(|| CrashingStore::new(self.store.clone(), crash));
        let store: DynStore = match &dying {
            Some(d) => d.clone(),
            None => self.store.clone(),
        };
        let tm = TaskManager::new(
            store,
            self.bus.clone(),
            self.compute.clone(),
            self.storage.clone(),
            self.clock.clone(),
            self.config.clone(),
            TaskManagerConfig {
                worker_id: format!("w{}", self.workers),
                poll_interval: Duration::from_millis(2),
                ..TaskManagerConfig::default()
            },
        );
        (tm, dying)
    }

    /// Runs `f` while the manual clock keeps moving (half a second every few milliseconds), as time would while
    /// a task manager waits for guests: deadlines pass, guests heartbeat.
    async fn with_time_passing<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        let clock = self.clock.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                clock.advance(Duration::from_millis(500));
            }
        });
        let r = f.await;
        ticker.abort();
        r
    }

    /// Runs every open workflow to its end (expiring leases of crashed workers first).
    async fn settle(&mut self) {
        for _ in 0..20 {
            if self.store.list_open_workflows().await.unwrap().is_empty() {
                return;
            }
            self.clock
                .advance(self.config.workflow_lease + Duration::from_secs(1));
            let (tm, _) = self.taskmanager(0);
            self.with_time_passing(tm.run_pending()).await.unwrap();
        }
        panic!(
            "workflows never settled: {:?}",
            self.store.list_open_workflows().await.unwrap()
        );
    }

    async fn apply(&mut self, e: &Event) {
        // Refusals (422, 400, 413...) are expected; what matters is the invariants afterwards.
        let r = match e {
            Event::Create {
                tenant,
                size,
                flavor,
            } => {
                let req = CreateInstance {
                    name: "p".into(),
                    flavor_ref: Some(flavor.to_string()),
                    volume_size: Some(*size),
                    datastore: Some("mariadb".into()),
                    ..Default::default()
                };
                match self.api.create_instance(&World::ctx(*tenant), req).await {
                    Ok(v) => {
                        self.ids.push((v.instance.id, *tenant));
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Event::Delete(i) => match self.pick(*i) {
                Some((id, c)) => self.api.delete_instance(&c, id).await,
                None => Ok(()),
            },
            Event::ForceDelete(i) => match self.pick(*i) {
                Some((id, c)) => self.api.force_delete_instance(&c, id).await,
                None => Ok(()),
            },
            Event::Restart(i) => match self.pick(*i) {
                Some((id, c)) => self.api.restart_instance(&c, id).await,
                None => Ok(()),
            },
            Event::ResizeVolume(i, s) => match self.pick(*i) {
                Some((id, c)) => self.api.resize_volume(&c, id, *s).await,
                None => Ok(()),
            },
            Event::ResizeFlavor(i, f) => match self.pick(*i) {
                Some((id, c)) => self.api.resize_flavor(&c, id, &f.to_string()).await,
                None => Ok(()),
            },
            Event::ResetStatus(i) => match self.pick(*i) {
                // An admin of the instance's project: upstream `instance:reset_status` is `rule:admin`.
                Some((id, c)) => {
                    let admin = RequestContext::admin(c.tenant_id.clone());
                    self.api.reset_status(&admin, id).await
                }
                None => Ok(()),
            },
            Event::RunTaskManager { crash } => {
                // Time passes between workers: leases of crashed ones expire.
                self.clock
                    .advance(self.config.workflow_lease + Duration::from_secs(1));
                let (tm, dying) = self.taskmanager(*crash);
                match self.with_time_passing(tm.run_pending()).await {
                    // The worker died as injected: its error is its death, not an answer.
                    Err(_) if dying.is_some_and(|d| d.crashed()) => Ok(()),
                    other => other.map(|_| ()),
                }
            }
            Event::CrashEngine(i) => {
                if let Some((id, _)) = self.pick(*i) {
                    if self.engines.has_engine(id) {
                        self.engines.engine(id).crash("injected");
                    }
                }
                Ok(())
            }
            Event::Advance(s) => {
                self.clock.advance(Duration::from_secs(*s));
                Ok(())
            }
        };
        if let Err(e) = r {
            let status = e.fault().status;
            assert!(
                status != 500 && status != 503,
                "event {e:?} answered {status}: {e}"
            );
        }
    }

    async fn check_invariants(&self) {
        for tenant in 0..2u8 {
            let ctx = World::ctx(tenant);
            let views = self.api.list_instances(&ctx, true).await.unwrap();
            let mut sum = QuotaUsage::default();
            for v in &views {
                assert!(
                    API_STATUSES.contains(&v.status.as_str()),
                    "undefined status {}",
                    v.status
                );
                sum.instances += 1;
                sum.ram += i64::from(v.instance.ram_mb);
                sum.volumes += i64::from(v.instance.volume_size.unwrap_or(0));
            }
            let usage = self.store.quota_usage(&format!("t{tenant}")).await.unwrap();
            assert_eq!(
                usage, sum,
                "quota usage of t{tenant} differs from its live instances"
            );
        }
    }

    async fn clear_everything(&mut self) {
        self.settle().await;
        for (id, t) in self.ids.clone() {
            let ctx = World::ctx(t);
            if self.api.show_instance(&ctx, id).await.is_err() {
                continue;
            }
            self.api
                .reset_status(&RequestContext::admin(ctx.tenant_id.clone()), id)
                .await
                .unwrap();
            self.api.delete_instance(&ctx, id).await.unwrap();
        }
        self.settle().await;
        let live = self
            .store
            .list_instances(&InstanceFilter::default())
            .await
            .unwrap();
        assert!(live.is_empty(), "instances survived reset+delete: {live:?}");
        assert!(self.compute.servers().is_empty(), "servers leaked");
        for (id, _) in &self.ids {
            assert!(
                self.storage.get_volume(*id).await.unwrap().is_none(),
                "volume of {id} leaked"
            );
            assert!(self.compute.get_server(*id).await.unwrap().is_none());
        }
        for t in 0..2u8 {
            assert_eq!(
                self.store.quota_usage(&format!("t{t}")).await.unwrap(),
                QuotaUsage::default()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn random_event_sequences_keep_the_invariants(events in prop::collection::vec(event(), 1..20)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let (mut w, stop) = World::new().await;
            for e in &events {
                // A workflow waiting for a guest that can never answer would hang here: that is a failure too.
                tokio::time::timeout(Duration::from_secs(60), w.apply(e))
                    .await
                    .unwrap_or_else(|_| panic!("event {e:?} never finished"));
                w.check_invariants().await;
            }
            tokio::time::timeout(Duration::from_secs(120), w.clear_everything())
                .await
                .expect("clearing every instance never finished");
            let _ = stop.send(true);
        });
    }
}
