//! Every manager x facet through the API: what an instance supports is what its strategy's facets say.
//!
//! For each manager (simulated strategies, which offer exactly what the real engines offer; the real engines pass
//! each offered facet's conformance part in `trove-guest/tests/conformance.rs`), an instance is built, then:
//! - every facet the strategy offers is used through the API and works;
//! - with the guest stopped, every request for a facet the strategy lacks is refused at once (well before any
//!   guest call could time out) with upstream's answer: 422 "Operation not supported" for users, databases and
//!   root, 501 for TLS and backups, 400 for replicas and clusters, an empty list and a 404 for logs, 422 for configuration
//!   groups (no parameter rules for such a manager). Nothing is recorded for a refused backup or replica.

mod api_support;

use std::time::{Duration, Instant};

use serde_json::{json, Map};
use trove::core::api::{
    ClusterMemberRequest, CreateBackup, CreateCluster, CreateConfiguration, CreateInstance,
};
use trove::core::model::{
    DatabaseSpec, Facet, LogActionRequest, Manager, Secret, SslActionBody, UserSpec,
};
use trove::core::ports::{FacetCatalog, GuestLauncher};
use trove::core::taskmanager::{TaskManager, TaskManagerConfig};
use trove::core::Error;
use uuid::Uuid;

use api_support::{add_versions, load_rules, mem_config, t1, version, World};

fn status<T>(r: Result<T, Error>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(e) => e.fault().status,
    }
}

/// A request for `facet` on instance `id`; answers its status. (Replication creates a replica of `id`.)
async fn ask(w: &World, id: Uuid, m: Manager, facet: Facet) -> u16 {
    let api = &w.api;
    let t = t1();
    match facet {
        Facet::Users => status(api.list_users(&t, id).await),
        Facet::Databases => status(api.list_databases(&t, id).await),
        Facet::Root => status(api.root_enable(&t, id, None).await),
        Facet::Configuration => {
            let mut values = Map::new();
            values.insert(
                match m {
                    Manager::Redis => "maxmemory-policy".to_string(),
                    Manager::Postgresql => "work_mem".to_string(),
                    _ => "max_connections".to_string(),
                },
                match m {
                    Manager::Redis => json!("allkeys-lru"),
                    _ => json!(1000),
                },
            );
            status(
                api.create_configuration(
                    &t,
                    CreateConfiguration {
                        name: format!("cfg-{m}"),
                        description: None,
                        values,
                        datastore: Some(m.as_str().into()),
                        datastore_version: Some("1".into()),
                        datastore_version_number: None,
                    },
                )
                .await,
            )
        }
        Facet::Tls => status(api.ssl_show(&t, id, false).await),
        Facet::Logs => match api.list_guest_logs(&t, id).await {
            // An engine without logs lists none; any name is then unknown.
            Ok(logs) if logs.is_empty() => {
                let req = LogActionRequest {
                    name: "general".into(),
                    ..Default::default()
                };
                status(api.guest_log_action(&t, id, req).await)
            }
            other => status(other),
        },
        Facet::Backup => status(
            api.create_backup(
                &t,
                CreateBackup {
                    name: "b".into(),
                    instance: Some(id),
                    ..Default::default()
                },
            )
            .await,
        ),
        Facet::Replication => status(
            api.create_instance(
                &t,
                CreateInstance {
                    name: "replica".into(),
                    replica_of: Some(id),
                    ..Default::default()
                },
            )
            .await,
        ),
        Facet::Cluster => {
            // A cluster of the instance's datastore version.
            let v = api.show_instance(&t, id).await.expect("the instance");
            status(
                api.create_cluster(
                    &t,
                    CreateCluster {
                        name: "cluster".into(),
                        datastore: v.datastore.name.clone(),
                        datastore_version: v.datastore_version.name.clone(),
                        instances: vec![
                            ClusterMemberRequest {
                                flavor_ref: Some(v.instance.flavor_id.clone()),
                                volume_size: v.instance.volume_size,
                                ..Default::default()
                            };
                            3
                        ],
                        ..Default::default()
                    },
                )
                .await,
            )
        }
    }
}

/// Upstream's answer to a request for a facet the strategy lacks.
fn refusal(facet: Facet) -> u16 {
    match facet {
        Facet::Users | Facet::Databases | Facet::Root | Facet::Configuration => 422,
        Facet::Tls | Facet::Backup => 501,
        Facet::Replication | Facet::Cluster => 400,
        // The list is empty; an action on any log name is a 404.
        Facet::Logs => 404,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_manager_and_facet_is_offered_or_refused_at_once() {
    let w = World::start(mem_config(), &[]).await;
    let catalog: FacetCatalog = w.parts.facets.clone();
    let tm = TaskManager::new(
        w.parts.store.clone(),
        w.parts.bus.clone(),
        w.parts.compute.clone(),
        w.parts.block_storage.clone(),
        w.parts.clock.clone(),
        mem_config(),
        TaskManagerConfig {
            worker_id: "facets".into(),
            poll_interval: Duration::from_millis(5),
            ..TaskManagerConfig::default()
        },
    );
    // Each cluster-capable manager builds a cluster of three besides its instance.
    w.api
        .update_quota(
            &trove::core::ports::RequestContext::admin("admin"),
            "t1",
            [("instances", -1), ("ram", -1), ("volumes", -1)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
        .await
        .expect("quota");
    let mut checked = 0;
    for m in Manager::ALL {
        let offered = catalog
            .get(m)
            .expect("the simulated factory has every manager");
        add_versions(&w.api, [version(m.as_str(), "1", true)]).await;
        if matches!(
            m,
            Manager::Mysql | Manager::Mariadb | Manager::Postgresql | Manager::Redis
        ) {
            load_rules(&w.parts, m.as_str(), "1", m).await;
        }
        let id = w
            .api
            .create_instance(
                &t1(),
                CreateInstance {
                    name: format!("db-{m}"),
                    flavor_ref: Some("1".into()),
                    volume_size: Some(1),
                    datastore: Some(m.as_str().into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{m}: create: {e}"))
            .instance
            .id;
        assert_eq!(tm.run_pending().await.unwrap(), 1, "{m}: the build runs");
        let v = w.api.show_instance(&t1(), id).await.unwrap();
        assert_eq!(v.status, "ACTIVE", "{m}: {:?}", v.instance.fault);

        // Offered facets work.
        for f in offered.iter() {
            let s = match f {
                Facet::Users => status(
                    w.api
                        .create_users(
                            &t1(),
                            id,
                            vec![UserSpec {
                                name: "app".into(),
                                password: Secret::new("app-Pw-12345"),
                                host: None,
                                databases: vec![],
                            }],
                        )
                        .await,
                ),
                Facet::Databases => status(
                    w.api
                        .create_databases(
                            &t1(),
                            id,
                            vec![DatabaseSpec {
                                name: "shop".into(),
                                character_set: None,
                                collate: None,
                            }],
                        )
                        .await,
                ),
                Facet::Tls => status(
                    w.api
                        .ssl_action(
                            &t1(),
                            id,
                            SslActionBody {
                                enable: Some(true),
                                ..Default::default()
                            },
                        )
                        .await,
                ),
                Facet::Replication => {
                    // The replica's seed waits for the backup taken above; the source is busy (BACKUP) until then.
                    tm.run_pending().await.unwrap();
                    ask(&w, id, m, f).await
                }
                other => ask(&w, id, m, other).await,
            };
            assert!(
                (200..300).contains(&s),
                "{m}: offered facet {f} answered {s}"
            );
            checked += 1;
        }

        // A backup taken above completes.
        tm.run_pending().await.unwrap();
        if offered.contains(Facet::Backup) {
            let backups = w.api.instance_backups(&t1(), id).await.unwrap();
            assert!(
                !backups.is_empty()
                    && backups
                        .iter()
                        .all(|b| b.backup.state == trove::core::state::BackupState::Completed),
                "{m}: backups {:?}",
                backups
                    .iter()
                    .map(|b| (b.backup.state, b.backup.fault.clone()))
                    .collect::<Vec<_>>()
            );
        }

        // Refused facets: with the guest gone, only an answer of the API itself can come back in time.
        w.parts.launcher.stop(id).await.unwrap();
        for f in Facet::ALL {
            if offered.contains(f) {
                continue;
            }
            let usage = w.api.limits(&t1()).await.unwrap().usage;
            let t = Instant::now();
            let s = ask(&w, id, m, f).await;
            assert_eq!(s, refusal(f), "{m}: missing facet {f}");
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "{m}: the refusal of {f} took {:?} (it asked the guest?)",
                t.elapsed()
            );
            let after = w.api.limits(&t1()).await.unwrap().usage;
            assert_eq!(
                after, usage,
                "{m}: a refused {f} request recorded something"
            );
            checked += 1;
        }
    }
    eprintln!("{checked} manager x facet pairs checked");
    w.end().await;
}
