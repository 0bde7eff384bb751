//! Heartbeat throughput end to end: simulated guests → message bus → [`Conductor`] → infrastructure store, next
//! to the ceilings of the parts measured in the same run:
//!
//! - **store ceiling**: `put_service_statuses` batches of the conductor's largest batch, written one after another
//!   (a conductor writes serially) straight into the same store;
//! - **bus ceiling**: the same publisher pool casting pre-encoded heartbeat-sized messages through the same bus
//!   configuration to one subscriber that takes whatever has arrived (up to a batch) and acks it, like the
//!   conductor without decoding, verifying or storing (what the conductor's consumer could receive at most).
//!
//! Every pipeline variant has `BENCH_GUESTS` instances (rows in the store) heartbeating through `ConductorClient`s
//! (one per guest, signed with the guest's own key when the conductor verifies), driven by `BENCH_PUBLISHERS`
//! publisher tasks as fast as they can (each guest's heartbeats are sent by one publisher, in order). The figure is
//! the number of heartbeats *acknowledged by the conductor* (it acks only after the batch is in the store) per
//! second over a `BENCH_SECS` window after a warm-up; publishers pause while more than `BENCH_BACKLOG` heartbeats
//! are unacknowledged, so the queue stays bounded and the rate is the sustained one. Afterwards the publishers stop,
//! the backlog drains, and every instance's stored status is checked to be its last heartbeat (its sequence number
//! travels in the volume usage; the conductor stamps `updated_at` on receipt, so it must not be older than the
//! moment that last heartbeat was sent).
//!
//! ```text
//! cargo bench --bench heartbeats --features postgres,amqp
//! ```
//! Needs RabbitMQ on 127.0.0.1:5672 (guest/guest) and PostgreSQL (`TROVE_TEST_PG_URL`, default the local server
//! with trust authentication). The run uses its own exchange and queue prefix and a fresh database, and removes
//! them afterwards. Without `--bench` (`cargo test --benches`) it runs a seconds-long smoke version.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use sqlx::Connection;
use tokio::sync::watch;
use trove::backends::sql::{PostgresStore, SqliteStore};
use trove::core::conductor::{guest_sender, Conductor, GuestKeys};
use trove::core::memory::MemoryBus;
use trove::core::model::{Secret, ServiceStatusRecord, VolumeUsage};
use trove::core::ports::{
    AckHandle, ChangeSet, Delivery, DynBus, DynStore, Expect, InfraStore, MessageBus, Subscription,
    SystemClock, Write,
};
use trove::core::rpc::{ConductorClient, ConductorRequest, Envelope, CONDUCTOR_TOPIC};
use trove::core::state::ServiceStatus;
use trove::core::testing::store::fixtures;
use trove_amqp::{AmqpBus, AmqpConfig};
use uuid::Uuid;

const TENANT: &str = "bench";
/// The conductor's largest batch (its default `batch_max`).
const STORE_BATCH: usize = 512;
/// Topic of the bus-ceiling runs.
const CEILING_TOPIC: &str = "bench-heartbeat-ceiling";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy)]
struct Params {
    guests: usize,
    publishers: usize,
    window: Duration,
    warmup: Duration,
    backlog: u64,
}

// ---------------------------------------------------------------------------------------------------------------
// A bus wrapper that counts acknowledgements (what the consumer, e.g. the conductor, settled as done).

struct CountingBus {
    inner: DynBus,
    acked: Arc<AtomicU64>,
    batches: Arc<BatchStats>,
}

/// How the consumer's deliveries group into batches. The conductor settles a batch (acks every delivery of it)
/// before it takes the next delivery, so a delivery that follows an ack starts a new batch.
#[derive(Default)]
struct BatchStats(std::sync::Mutex<BatchTally>);

#[derive(Default)]
struct BatchTally {
    ack_seen: bool,
    current: std::collections::HashSet<Vec<u8>>,
    current_messages: u64,
    batches: u64,
    messages: u64,
    rows: u64,
}

impl BatchTally {
    fn close(&mut self) {
        if self.current_messages > 0 {
            self.batches += 1;
            self.messages += self.current_messages;
            self.rows += self.current.len() as u64;
        }
        self.current.clear();
        self.current_messages = 0;
    }
}

impl BatchStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, BatchTally> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn delivered(&self, body: &[u8]) {
        const KEY: &[u8] = b"\"instance_id\":\"";
        let id = body
            .windows(KEY.len())
            .position(|w| w == KEY)
            .and_then(|at| body.get(at + KEY.len()..at + KEY.len() + 36))
            .unwrap_or_default()
            .to_vec();
        let mut t = self.lock();
        if t.ack_seen {
            t.close();
            t.ack_seen = false;
        }
        t.current.insert(id);
        t.current_messages += 1;
    }

    fn acked(&self) {
        self.lock().ack_seen = true;
    }

    /// (store writes, mean heartbeats per write, mean distinct instances per write).
    fn summary(&self) -> (u64, f64, f64) {
        let mut t = self.lock();
        t.close();
        let n = t.batches.max(1) as f64;
        (t.batches, t.messages as f64 / n, t.rows as f64 / n)
    }
}

#[async_trait]
impl MessageBus for CountingBus {
    async fn cast(&self, topic: &str, body: Vec<u8>) -> trove::core::Result<()> {
        self.inner.cast(topic, body).await
    }
    async fn call(
        &self,
        topic: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> trove::core::Result<Vec<u8>> {
        self.inner.call(topic, body, timeout).await
    }
    async fn subscribe(&self, topic: &str) -> trove::core::Result<Box<dyn Subscription>> {
        Ok(Box::new(CountingSubscription {
            inner: self.inner.subscribe(topic).await?,
            acked: self.acked.clone(),
            batches: self.batches.clone(),
        }))
    }
    async fn delete_topic(&self, topic: &str) -> trove::core::Result<()> {
        self.inner.delete_topic(topic).await
    }
}

struct CountingSubscription {
    inner: Box<dyn Subscription>,
    acked: Arc<AtomicU64>,
    batches: Arc<BatchStats>,
}

#[async_trait]
impl Subscription for CountingSubscription {
    async fn next(&mut self) -> trove::core::Result<Option<Delivery>> {
        // Casts only: a call's reply handle is not carried over (nothing here replies).
        Ok(self.inner.next().await?.map(|mut d| {
            let inner = d.take_ack();
            self.batches.delivered(&d.body);
            Delivery::new(
                std::mem::take(&mut d.body),
                d.redelivered,
                None,
                Box::new(CountingAck {
                    inner,
                    acked: self.acked.clone(),
                    batches: self.batches.clone(),
                }),
            )
        }))
    }
}

struct CountingAck {
    inner: Option<Box<dyn AckHandle>>,
    acked: Arc<AtomicU64>,
    batches: Arc<BatchStats>,
}

#[async_trait]
impl AckHandle for CountingAck {
    async fn ack(mut self: Box<Self>) -> trove::core::Result<()> {
        if let Some(a) = self.inner.take() {
            a.ack().await?;
        }
        self.batches.acked();
        self.acked.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn nack(mut self: Box<Self>, requeue: bool) -> trove::core::Result<()> {
        match self.inner.take() {
            Some(a) => a.nack(requeue).await,
            None => Ok(()),
        }
    }
}

/// Per-guest keys, as a deployment's conductor has them.
struct Keys(HashMap<Uuid, Secret>);

impl GuestKeys for Keys {
    fn key(&self, instance_id: Uuid) -> Option<Secret> {
        self.0.get(&instance_id).cloned()
    }
}

fn guest_key(id: Uuid) -> Secret {
    Secret::new(format!("bench-key-{}", id.simple()))
}

// ---------------------------------------------------------------------------------------------------------------
// Load generation.

/// What one publisher sends.
enum Target {
    /// A guest's heartbeats through its conductor client.
    Guest { id: Uuid, client: ConductorClient },
    /// A pre-encoded message cast straight on the bus.
    Raw {
        bus: DynBus,
        topic: &'static str,
        body: Arc<Vec<u8>>,
    },
}

fn heartbeat(id: Uuid, seq: u64) -> ConductorRequest {
    ConductorRequest::Heartbeat {
        instance_id: id,
        status: ServiceStatus::Healthy,
        reason: None,
        fs: Some(trove::core::ports::FsStats {
            used_bytes: seq,
            total_bytes: 1 << 30,
        }),
        load: None,
    }
}

/// The last heartbeat sent by each guest: its sequence number and a time no later than its `sent` stamp.
type LastSent = HashMap<Uuid, (u64, DateTime<Utc>)>;

struct Load {
    /// Acknowledged messages per second over the measuring window.
    rate: f64,
    sent: u64,
    drain: Duration,
    last: LastSent,
}

/// Runs `targets` (one list per publisher) until the window is over, then waits until every message sent was
/// acknowledged.
async fn drive(targets: Vec<Vec<Target>>, acked: Arc<AtomicU64>, p: Params) -> Load {
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let base = acked.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for list in targets {
        let (sent, stop, acked) = (sent.clone(), stop.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut last = LastSent::new();
            let mut seq = 0u64;
            'outer: while !stop.load(Ordering::SeqCst) {
                for t in &list {
                    while sent.load(Ordering::SeqCst) + base
                        > acked.load(Ordering::SeqCst) + p.backlog
                    {
                        if stop.load(Ordering::SeqCst) {
                            break 'outer;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    if stop.load(Ordering::SeqCst) {
                        break 'outer;
                    }
                    seq += 1;
                    match t {
                        Target::Guest { id, client } => {
                            let before = Utc::now();
                            client.send(heartbeat(*id, seq)).await.expect("heartbeat");
                            last.insert(*id, (seq, before));
                        }
                        Target::Raw { bus, topic, body } => {
                            bus.cast(topic, body.to_vec()).await.expect("cast");
                        }
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    // The memory bus never waits: let the other publishers (guests) take turns.
                    tokio::task::yield_now().await;
                }
            }
            last
        }));
    }
    tokio::time::sleep(p.warmup).await;
    let (a0, t0) = (acked.load(Ordering::SeqCst), Instant::now());
    tokio::time::sleep(p.window).await;
    let (a1, t1) = (acked.load(Ordering::SeqCst), Instant::now());
    stop.store(true, Ordering::SeqCst);
    let mut last = LastSent::new();
    for t in tasks {
        last.extend(t.await.expect("publisher"));
    }
    let sent = sent.load(Ordering::SeqCst);
    let drain_start = Instant::now();
    while acked.load(Ordering::SeqCst) < base + sent {
        assert!(
            drain_start.elapsed() < Duration::from_secs(120),
            "only {} of {sent} messages were acknowledged",
            acked.load(Ordering::SeqCst) - base
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Load {
        rate: (a1 - a0) as f64 / (t1 - t0).as_secs_f64(),
        sent,
        drain: drain_start.elapsed(),
        last,
    }
}

fn spread<T>(items: Vec<T>, publishers: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..publishers.max(1)).map(|_| Vec::new()).collect();
    let n = out.len();
    for (i, t) in items.into_iter().enumerate() {
        out[i % n].push(t);
    }
    out.retain(|l| !l.is_empty());
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Variants.

/// Creates `n` instances with a status row each (volume usage 0: no heartbeat yet); returns their ids.
async fn populate(store: &dyn InfraStore, n: usize) -> Vec<Uuid> {
    let mut cs = ChangeSet::new();
    let mut ids = Vec::with_capacity(n);
    for k in 0..n {
        let i = fixtures::instance(TENANT, 512, Some(1), fixtures::at(k as i64));
        ids.push(i.id);
        let mut st = fixtures::status(i.id, ServiceStatus::Healthy, fixtures::at(k as i64));
        st.volume = Some(VolumeUsage {
            used_bytes: 0,
            total_bytes: 1 << 30,
        });
        cs.push(Write::Instance {
            instance: i,
            expect: Expect::Absent,
        });
        cs.push(Write::ServiceStatus(st));
    }
    store.commit(cs).await.expect("insert instances");
    ids
}

/// Serial `put_service_statuses` batches of `batch` distinct instances; rows per second.
async fn store_ceiling(store: &dyn InfraStore, ids: &[Uuid], batch: usize, p: Params) -> f64 {
    let mut cursor = 0usize;
    let mut next_batch = || {
        let now = Utc::now();
        let b: Vec<ServiceStatusRecord> = (0..batch.min(ids.len()))
            .map(|k| {
                let id = ids[(cursor + k) % ids.len()];
                let mut r = fixtures::status(id, ServiceStatus::Healthy, now);
                r.volume = Some(VolumeUsage {
                    used_bytes: 0,
                    total_bytes: 1 << 30,
                });
                r
            })
            .collect();
        cursor = (cursor + b.len()) % ids.len();
        b
    };
    let warm_until = Instant::now() + p.warmup;
    while Instant::now() < warm_until {
        let b = next_batch();
        store
            .put_service_statuses(&b)
            .await
            .expect("warm-up upsert");
    }
    let start = Instant::now();
    let mut rows = 0usize;
    while start.elapsed() < p.window {
        let b = next_batch();
        store.put_service_statuses(&b).await.expect("upsert");
        rows += b.len();
    }
    rows as f64 / start.elapsed().as_secs_f64()
}

/// A representative heartbeat body (signed envelope) for the bus ceiling.
fn sample_body() -> Vec<u8> {
    let id = Uuid::new_v4();
    Envelope::new(guest_sender(id), heartbeat(id, 123_456))
        .signed(&guest_key(id))
        .and_then(|e| e.encode())
        .expect("encode")
}

/// Publishers casting pre-encoded heartbeats on `pub_bus`, one subscriber of `sub_bus` acking each.
async fn bus_ceiling(pub_bus: DynBus, sub_bus: DynBus, p: Params) -> f64 {
    let acked = Arc::new(AtomicU64::new(0));
    let counting = CountingBus {
        inner: sub_bus,
        acked: acked.clone(),
        batches: Arc::default(),
    };
    let mut sub = counting.subscribe(CEILING_TOPIC).await.expect("subscribe");
    // Like the conductor minus the store: take what has arrived (up to a batch), then ack it.
    let consumer = tokio::spawn(async move {
        while let Ok(Some(d)) = sub.next().await {
            let mut batch = vec![d];
            while batch.len() < STORE_BATCH {
                match sub.next().now_or_never() {
                    Some(Ok(Some(d))) => batch.push(d),
                    _ => break,
                }
            }
            for d in batch {
                d.ack().await.expect("ack");
            }
        }
    });
    let body = Arc::new(sample_body());
    let targets = (0..p.publishers)
        .map(|_| Target::Raw {
            bus: pub_bus.clone(),
            topic: CEILING_TOPIC,
            body: body.clone(),
        })
        .collect();
    let load = drive(spread(targets, p.publishers), acked, p).await;
    consumer.abort();
    load.rate
}

/// Guests → `guest_bus` → conductor on `conductor_bus` → `store`; checks the store afterwards.
async fn pipeline(
    guest_bus: DynBus,
    conductor_bus: DynBus,
    store: DynStore,
    ids: &[Uuid],
    signed: bool,
    p: Params,
) -> f64 {
    let acked = Arc::new(AtomicU64::new(0));
    let batches = Arc::new(BatchStats::default());
    let keys: Option<Arc<dyn GuestKeys>> =
        signed.then(|| Arc::new(Keys(ids.iter().map(|id| (*id, guest_key(*id))).collect())) as _);
    let conductor = Conductor::new(
        store.clone(),
        Arc::new(CountingBus {
            inner: conductor_bus,
            acked: acked.clone(),
            batches: batches.clone(),
        }),
        Arc::new(SystemClock),
        keys,
    );
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move { conductor.run(rx).await });
    let targets = ids
        .iter()
        .map(|id| Target::Guest {
            id: *id,
            client: ConductorClient::new(
                guest_bus.clone(),
                guest_sender(*id),
                signed.then(|| guest_key(*id)),
            ),
        })
        .collect();
    let load = drive(spread(targets, p.publishers), acked, p).await;
    let _ = stop.send(true);
    task.await.expect("conductor task").expect("conductor");

    // Honesty check: every instance shows its last heartbeat.
    assert_eq!(load.last.len(), ids.len(), "every guest sent heartbeats");
    let stored = store.get_service_statuses(ids).await.expect("read back");
    assert_eq!(stored.len(), ids.len());
    for s in &stored {
        let (seq, before) = load.last[&s.instance_id];
        let got = s.volume.map(|v| v.used_bytes);
        assert_eq!(
            got,
            Some(seq),
            "instance {} shows heartbeat {got:?}, its last was {seq}",
            s.instance_id
        );
        assert!(
            s.updated_at >= before,
            "instance {} was updated at {}, before its last heartbeat was sent ({before})",
            s.instance_id,
            s.updated_at
        );
    }
    let (writes, per_write, rows_per_write) = batches.summary();
    println!(
        "    {} heartbeats sent, all acknowledged {:.2} s after the publishers stopped; {} instances show their \
         last heartbeat; {writes} store writes of {per_write:.1} heartbeats ({rows_per_write:.1} instances) on average",
        load.sent,
        load.drain.as_secs_f64(),
        stored.len()
    );
    load.rate
}

// ---------------------------------------------------------------------------------------------------------------
// Report.

struct Row {
    name: String,
    rate: f64,
    store_ceiling: Option<f64>,
    bus_ceiling: Option<f64>,
}

fn ratio(rate: f64, ceiling: Option<f64>) -> String {
    ceiling.map_or_else(|| "-".into(), |c| format!("{:.2}", rate / c))
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<58} {:>13} {:>15} {:>13}",
        "variant", "heartbeats/s", "/store ceiling", "/bus ceiling"
    );
    println!("{}", "-".repeat(58 + 1 + 13 + 1 + 15 + 1 + 13));
    for r in rows {
        println!(
            "{:<58} {:>13.0} {:>15} {:>13}",
            r.name,
            r.rate,
            ratio(r.rate, r.store_ceiling),
            ratio(r.rate, r.bus_ceiling)
        );
    }
    println!(
        "(ratios are to the ceilings of the same adapters: RabbitMQ + PostgreSQL rows to the PostgreSQL store ceiling \
         and the AMQP ceiling at the same prefetch; memory bus + SQLite rows to the SQLite and memory-bus ceilings)"
    );
}

fn admin_url() -> String {
    std::env::var("TROVE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn amqp_config(run: &str, prefetch: u16) -> AmqpConfig {
    AmqpConfig {
        exchange: format!("trove-bench-{run}"),
        queue_prefix: format!("hb{}p{prefetch}.", &run[..12]),
        prefetch,
        ..AmqpConfig::default()
    }
}

async fn connect(cfg: AmqpConfig) -> AmqpBus {
    match AmqpBus::connect(cfg.clone()).await {
        Ok(b) => b,
        Err(e) => panic!(
            "RabbitMQ on {}:{} is needed for this benchmark: {e}",
            cfg.host, cfg.port
        ),
    }
}

/// Everything on PostgreSQL and RabbitMQ, then on SQLite and the memory bus.
async fn run_all(pg_url: String, sqlite_dir: &Path, p: Params) -> Vec<Row> {
    let mut rows = Vec::new();

    // --- PostgreSQL + RabbitMQ ---
    let pg = PostgresStore::connect(&pg_url).await.expect("connect");
    pg.sync().await.expect("migrate");
    let pg: DynStore = Arc::new(pg);
    let ids = populate(pg.as_ref(), p.guests).await;

    let pg_ceiling = store_ceiling(pg.as_ref(), &ids, STORE_BATCH, p).await;
    println!("store ceiling (PostgreSQL, batches of {STORE_BATCH}): {pg_ceiling:.0}/s");
    let pg_small = store_ceiling(pg.as_ref(), &ids, 32, p).await;
    println!("store (PostgreSQL, batches of 32): {pg_small:.0}/s");

    rows.push(Row {
        name: format!("store ceiling: PostgreSQL put_service_statuses x{STORE_BATCH}"),
        rate: pg_ceiling,
        store_ceiling: Some(pg_ceiling),
        bus_ceiling: None,
    });
    rows.push(Row {
        name: "store: PostgreSQL put_service_statuses x32".into(),
        rate: pg_small,
        store_ceiling: Some(pg_ceiling),
        bus_ceiling: None,
    });
    let run = Uuid::new_v4().simple().to_string();
    // The default prefetch, then one that lets the conductor's subscription hold a whole batch.
    let mut buses = Vec::new();
    for prefetch in [AmqpConfig::default().prefetch, STORE_BATCH as u16] {
        let cfg = amqp_config(&run, prefetch);
        let guests_bus = connect(cfg.clone()).await;
        let conductor_bus = connect(cfg.clone()).await;
        buses.push((guests_bus.clone(), conductor_bus.clone()));
        let ceiling = bus_ceiling(
            Arc::new(guests_bus.clone()),
            Arc::new(conductor_bus.clone()),
            p,
        )
        .await;
        println!("bus ceiling (AmqpBus, prefetch {prefetch}): {ceiling:.0}/s");
        rows.push(Row {
            name: format!("bus ceiling: AmqpBus cast -> consume -> ack, prefetch {prefetch}"),
            rate: ceiling,
            store_ceiling: None,
            bus_ceiling: Some(ceiling),
        });
        for signed in [false, true] {
            let label = if signed { "signed" } else { "unsigned" };
            println!("conductor: RabbitMQ + PostgreSQL, {label}, prefetch {prefetch} ...");
            let rate = pipeline(
                Arc::new(guests_bus.clone()),
                Arc::new(conductor_bus.clone()),
                pg.clone(),
                &ids,
                signed,
                p,
            )
            .await;
            rows.push(Row {
                name: format!("conductor: RabbitMQ + PostgreSQL, {label}, prefetch {prefetch}"),
                rate,
                store_ceiling: Some(pg_ceiling),
                bus_ceiling: Some(ceiling),
            });
        }
    }
    for (g, c) in &buses {
        for t in [CEILING_TOPIC, CONDUCTOR_TOPIC] {
            g.delete_topic(t).await.expect("delete topic");
        }
        c.close().await;
    }
    buses[0]
        .0
        .delete_infrastructure()
        .await
        .expect("delete exchanges");
    for (g, _) in &buses {
        g.close().await;
    }

    // --- SQLite + memory bus ---
    let lite = SqliteStore::open(&sqlite_dir.join("trove.sqlite"))
        .await
        .expect("open sqlite");
    lite.sync().await.expect("migrate");
    let lite: DynStore = Arc::new(lite);
    let ids = populate(lite.as_ref(), p.guests).await;
    let lite_ceiling = store_ceiling(lite.as_ref(), &ids, STORE_BATCH, p).await;
    println!("store ceiling (SQLite, batches of {STORE_BATCH}): {lite_ceiling:.0}/s");
    let mem: DynBus = Arc::new(MemoryBus::new());
    let mem_ceiling = bus_ceiling(mem.clone(), mem, p).await;
    println!("bus ceiling (memory bus): {mem_ceiling:.0}/s");
    rows.push(Row {
        name: format!("store ceiling: SQLite put_service_statuses x{STORE_BATCH}"),
        rate: lite_ceiling,
        store_ceiling: Some(lite_ceiling),
        bus_ceiling: None,
    });
    rows.push(Row {
        name: "bus ceiling: memory bus cast -> consume -> ack".into(),
        rate: mem_ceiling,
        store_ceiling: None,
        bus_ceiling: Some(mem_ceiling),
    });
    for signed in [false, true] {
        let label = if signed { "signed" } else { "unsigned" };
        println!("conductor: memory bus + SQLite, {label} ...");
        let mem: DynBus = Arc::new(MemoryBus::new());
        let rate = pipeline(mem.clone(), mem, lite.clone(), &ids, signed, p).await;
        rows.push(Row {
            name: format!("conductor: memory bus + SQLite, {label}"),
            rate,
            store_ceiling: Some(lite_ceiling),
            bus_ceiling: Some(mem_ceiling),
        });
    }
    rows
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: run a short smoke version then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let p = if smoke {
        Params {
            guests: 50,
            publishers: 4,
            window: Duration::from_millis(300),
            warmup: Duration::from_millis(100),
            backlog: 500,
        }
    } else {
        Params {
            guests: env_usize("BENCH_GUESTS", 1000),
            publishers: env_usize("BENCH_PUBLISHERS", 64),
            window: Duration::from_secs_f64(
                std::env::var("BENCH_SECS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(3.0),
            ),
            warmup: Duration::from_millis(500),
            backlog: env_usize("BENCH_BACKLOG", 4096) as u64,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "heartbeat throughput: {} guests, {} publishers, {:.1} s windows after {:.1} s warm-up, backlog <= {}",
        p.guests,
        p.publishers,
        p.window.as_secs_f64(),
        p.warmup.as_secs_f64(),
        p.backlog
    );
    let rows = rt.block_on(async move {
        let mut admin = sqlx::PgConnection::connect(&admin_url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is needed for this benchmark and is not reachable at {} ({e}); set TROVE_TEST_PG_URL",
                    trove::backends::sql::redact_url(&admin_url())
                )
            });
        let db = format!("trove_bench_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE \"{db}\""))
            .execute(&mut admin)
            .await
            .expect("create database");
        let base = admin_url()
            .rsplit_once('/')
            .map_or_else(admin_url, |(b, _)| b.to_string());
        let dir = tempfile::tempdir().expect("tempdir");
        let outcome = AssertUnwindSafe(run_all(format!("{base}/{db}"), dir.path(), p))
            .catch_unwind()
            .await;
        let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await;
        let rows = match outcome {
            Ok(rows) => rows,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        dropped.expect("drop database");
        rows
    });
    print_table(&rows);
}
