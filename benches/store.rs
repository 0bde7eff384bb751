//! Infrastructure-store benchmarks: heartbeat (service status) upserts per second, batched and single, and the
//! latency of listing 1,000 instances, on the in-memory store, SQLite and PostgreSQL, each next to a baseline
//! measured in the same run: the same rows written or read with raw sqlx statements (no JSON encoding or
//! decoding, no store logic).
//!
//! ```text
//! cargo bench --bench store                        # memory + SQLite
//! cargo bench --bench store --features postgres    # + PostgreSQL (TROVE_TEST_PG_URL, default the local server)
//! ```
//! PostgreSQL runs on a fresh database created for the run and dropped afterwards.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tokio::runtime::Runtime;
use trove::backends::sql::SqliteStore;
use trove::core::memory::MemoryStore;
use trove::core::model::{InstanceFilter, ServiceStatusRecord};
use trove::core::ports::{ChangeSet, Expect, InfraStore, Write};
use trove::core::state::ServiceStatus;
use trove::core::testing::store::fixtures;
use uuid::Uuid;

const BATCH: usize = 500;
const INSTANCES: usize = 1000;
const TENANT: &str = "bench";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn heartbeats(ids: &[Uuid]) -> Vec<ServiceStatusRecord> {
    let now = Utc::now();
    ids.iter()
        .map(|id| fixtures::status(*id, ServiceStatus::Running, now))
        .collect()
}

/// Fills a store with `INSTANCES` instances of `TENANT` and a status row for each of `ids`.
async fn populate(store: &dyn InfraStore, ids: &[Uuid]) {
    let mut cs = ChangeSet::new();
    for n in 0..INSTANCES {
        let i = fixtures::instance(TENANT, 512, Some(1), fixtures::at(n as i64));
        cs.push(Write::Instance {
            instance: i,
            expect: Expect::Absent,
        });
    }
    store.commit(cs).await.expect("insert instances");
    store
        .put_service_statuses(&heartbeats(ids))
        .await
        .expect("statuses");
}

/// Raw-sqlx baseline of a batched upsert of `(instance_id, json)` rows.
type RawUpsert = Box<dyn Fn(&Runtime, &[(String, String)]) + Send + Sync>;
/// Raw-sqlx baseline of the list query; returns the row count.
type RawList = Box<dyn Fn(&Runtime) -> usize + Send + Sync>;

/// One backend: the store, plus the raw-sqlx baseline operations.
struct Subject {
    name: &'static str,
    store: Arc<dyn InfraStore>,
    raw_upsert: Option<RawUpsert>,
    raw_list: Option<RawList>,
}

fn bench_subject(c: &mut Criterion, rt: &Runtime, s: &Subject) {
    let ids: Vec<Uuid> = (0..BATCH).map(|_| Uuid::new_v4()).collect();
    rt.block_on(populate(s.store.as_ref(), &ids));

    let mut g = c.benchmark_group("heartbeat_upsert");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(format!("{}/batch_{BATCH}", s.name), |b| {
        b.iter_batched(
            || heartbeats(&ids),
            |batch| {
                rt.block_on(s.store.put_service_statuses(&batch))
                    .expect("upsert")
            },
            BatchSize::SmallInput,
        )
    });
    if let Some(raw) = &s.raw_upsert {
        g.bench_function(format!("{}/raw_sqlx_batch_{BATCH}", s.name), |b| {
            b.iter_batched(
                || {
                    heartbeats(&ids)
                        .iter()
                        .map(|h| {
                            (
                                h.instance_id.to_string(),
                                serde_json::to_string(h).expect("json"),
                            )
                        })
                        .collect::<Vec<_>>()
                },
                |rows| raw(rt, &rows),
                BatchSize::SmallInput,
            )
        });
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("{}/single", s.name), |b| {
        let one = heartbeats(&ids[..1]);
        b.iter(|| {
            rt.block_on(s.store.put_service_statuses(&one))
                .expect("upsert")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("list_1000_instances");
    let filter = InstanceFilter::tenant(TENANT);
    g.bench_function(s.name, |b| {
        b.iter(|| {
            let v = rt.block_on(s.store.list_instances(&filter)).expect("list");
            assert_eq!(v.len(), INSTANCES);
        })
    });
    if let Some(raw) = &s.raw_list {
        g.bench_function(format!("{}/raw_sqlx_select", s.name), |b| {
            b.iter(|| assert_eq!(raw(rt), INSTANCES))
        });
    }
    g.finish();
}

fn sqlite_subject(rt: &Runtime, dir: &std::path::Path) -> Subject {
    let store = rt.block_on(async {
        let s = SqliteStore::open(&dir.join("trove.sqlite"))
            .await
            .expect("open sqlite");
        s.sync().await.expect("migrate");
        sqlx::query("CREATE TABLE raw_statuses (instance_id TEXT PRIMARY KEY, body TEXT NOT NULL)")
            .execute(s.pool())
            .await
            .expect("raw table");
        s
    });
    let pool = store.pool().clone();
    let pool2 = store.pool().clone();
    Subject {
        name: "sqlite",
        store: Arc::new(store),
        raw_upsert: Some(Box::new(move |rt, rows| {
            rt.block_on(async {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
                for chunk in rows.chunks(400) {
                    let mut qb =
                        sqlx::QueryBuilder::new("INSERT INTO raw_statuses (instance_id, body) ");
                    qb.push_values(chunk, |mut b, (id, body)| {
                        b.push_bind(id.as_str()).push_bind(body.as_str());
                    });
                    qb.push(" ON CONFLICT (instance_id) DO UPDATE SET body = excluded.body");
                    qb.build().execute(&mut *tx).await.expect("raw upsert");
                }
                tx.commit().await.expect("commit");
            })
        })),
        raw_list: Some(Box::new(move |rt| {
            rt.block_on(async {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT body FROM instances WHERE tenant_id = $1 AND NOT deleted ORDER BY created DESC, id",
                )
                .bind(TENANT)
                .fetch_all(&pool2)
                .await
                .expect("raw select");
                rows.len()
            })
        })),
    }
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use sqlx::Connection;
    use trove::backends::sql::PostgresStore;

    pub fn admin_url() -> String {
        std::env::var("TROVE_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// Creates a fresh database; returns its name and URL.
    pub fn create(rt: &Runtime) -> Option<(String, String)> {
        rt.block_on(async {
            let mut conn = match sqlx::PgConnection::connect(&admin_url()).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("PostgreSQL unreachable ({e}); skipping the PostgreSQL benchmarks");
                    return None;
                }
            };
            let db = format!("trove_bench_{}", Uuid::new_v4().simple());
            sqlx::query(&format!("CREATE DATABASE \"{db}\""))
                .execute(&mut conn)
                .await
                .expect("create db");
            let admin = admin_url();
            let base = admin
                .rsplit_once('/')
                .map_or(admin.as_str(), |(b, _)| b)
                .to_string();
            Some((db.clone(), format!("{base}/{db}")))
        })
    }

    pub fn drop_db(rt: &Runtime, db: &str) {
        rt.block_on(async {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        })
    }

    pub fn subject(rt: &Runtime, url: &str) -> Subject {
        let store = rt.block_on(async {
            let s = PostgresStore::connect(url).await.expect("connect");
            s.sync().await.expect("migrate");
            sqlx::query(
                "CREATE TABLE raw_statuses (instance_id TEXT PRIMARY KEY, body TEXT NOT NULL)",
            )
            .execute(s.pool())
            .await
            .expect("raw table");
            s
        });
        let pool = store.pool().clone();
        let pool2 = store.pool().clone();
        Subject {
            name: "postgres",
            store: Arc::new(store),
            raw_upsert: Some(Box::new(move |rt, rows| {
                rt.block_on(async {
                    let mut tx = pool.begin().await.expect("begin");
                    for chunk in rows.chunks(400) {
                        let mut qb = sqlx::QueryBuilder::new(
                            "INSERT INTO raw_statuses (instance_id, body) ",
                        );
                        qb.push_values(chunk, |mut b, (id, body)| {
                            b.push_bind(id.as_str()).push_bind(body.as_str());
                        });
                        qb.push(" ON CONFLICT (instance_id) DO UPDATE SET body = excluded.body");
                        qb.build().execute(&mut *tx).await.expect("raw upsert");
                    }
                    tx.commit().await.expect("commit");
                })
            })),
            raw_list: Some(Box::new(move |rt| {
                rt.block_on(async {
                    let rows: Vec<(String,)> = sqlx::query_as(
                        "SELECT body FROM instances WHERE tenant_id = $1 AND NOT deleted ORDER BY created DESC, id",
                    )
                    .bind(TENANT)
                    .fetch_all(&pool2)
                    .await
                    .expect("raw select");
                    rows.len()
                })
            })),
        }
    }
}

fn store_benches(c: &mut Criterion) {
    let rt = runtime();
    let memory = Subject {
        name: "memory",
        store: Arc::new(MemoryStore::new()),
        raw_upsert: None,
        raw_list: None,
    };
    bench_subject(c, &rt, &memory);

    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = sqlite_subject(&rt, dir.path());
    bench_subject(c, &rt, &sqlite);

    #[cfg(feature = "postgres")]
    if let Some((db, url)) = pg::create(&rt) {
        let subject = pg::subject(&rt, &url);
        bench_subject(c, &rt, &subject);
        drop(subject);
        pg::drop_db(&rt, &db);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = store_benches
}
criterion_main!(benches);
