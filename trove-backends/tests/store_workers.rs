//! Several workers sharing one PostgreSQL store never run a workflow step twice: workflow claims are exclusive,
//! and a workflow abandoned by a crashed worker is taken over once its lease expires.

mod store_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use trove_backends::sql::{self, PostgresStore, StoreLocation};
use trove_core::model::{JournalEntry, JournalPhase, WorkflowKind, WorkflowState};
use trove_core::ports::{ChangeSet, Expect, InfraStore, Write};
use trove_core::testing::store::fixtures;
use uuid::Uuid;

const WORKFLOWS: usize = 30;
const STEPS: [&str; 3] = ["create_volume", "create_server", "wait_for_guest"];

/// Side effects performed, per (workflow, step), and which worker ran each workflow.
#[derive(Default)]
struct Ledger {
    effects: HashMap<(Uuid, &'static str), u32>,
    runs: HashMap<String, usize>,
}

/// One worker: claims open workflows of `ours`, runs the steps not yet completed (journaling before and after
/// each side effect) and closes the workflow with a versioned write.
async fn worker(
    store: Arc<dyn InfraStore>,
    name: String,
    ours: Arc<Vec<Uuid>>,
    ledger: Arc<Mutex<Ledger>>,
) {
    loop {
        let open: Vec<_> = store
            .list_open_workflows()
            .await
            .expect("list open")
            .into_iter()
            .filter(|w| ours.contains(&w.id))
            .collect();
        if open.is_empty() {
            return;
        }
        for w in open {
            let now = Utc::now();
            let Some(claimed) = store
                .claim_workflow(w.id, &name, now, now + chrono::Duration::seconds(30))
                .await
                .expect("claim")
            else {
                continue;
            };
            let done: Vec<String> = store
                .journal(w.id)
                .await
                .expect("journal")
                .into_iter()
                .filter(|e| e.phase == JournalPhase::Completed)
                .map(|e| e.step)
                .collect();
            for step in STEPS.iter().filter(|s| !done.iter().any(|d| d == *s)) {
                let entry = |phase| JournalEntry {
                    workflow_id: w.id,
                    step: step.to_string(),
                    phase,
                    data: json!({"worker": name}),
                    at: Utc::now(),
                };
                store
                    .append_journal(&entry(JournalPhase::Started))
                    .await
                    .expect("journal start");
                *ledger
                    .lock()
                    .expect("ledger")
                    .effects
                    .entry((w.id, step))
                    .or_default() += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
                store
                    .append_journal(&entry(JournalPhase::Completed))
                    .await
                    .expect("journal done");
            }
            let mut fin = claimed.clone();
            fin.state = WorkflowState::Done;
            fin.owner = None;
            fin.lease_until = None;
            store
                .commit(ChangeSet::new().with(Write::Workflow {
                    workflow: fin,
                    expect: Expect::Version(claimed.version),
                }))
                .await
                .expect("the owner of a claim finishes its workflow");
            *ledger
                .lock()
                .expect("ledger")
                .runs
                .entry(name.clone())
                .or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_never_run_a_step_twice() {
    store_support::with_fresh_pg(|url| async move {
        let loc = StoreLocation::Url(url.clone());
        sql::db_sync(&loc).await.expect("db_sync");
        // Two separate pools, as two processes would have.
        let a: Arc<dyn InfraStore> = Arc::new(
            PostgresStore::connect_with(&url, 4)
                .await
                .expect("worker a"),
        );
        let b: Arc<dyn InfraStore> = Arc::new(
            PostgresStore::connect_with(&url, 4)
                .await
                .expect("worker b"),
        );

        let mut ids = Vec::new();
        let mut cs = ChangeSet::new();
        for n in 0..WORKFLOWS {
            let w = fixtures::workflow(
                WorkflowKind::new("create"),
                Uuid::new_v4(),
                fixtures::at(n as i64),
            );
            ids.push(w.id);
            cs.push(Write::Workflow {
                workflow: w,
                expect: Expect::Absent,
            });
        }
        a.commit(cs).await.expect("insert workflows");

        // A third worker claims two workflows and "crashes" (never runs or renews them): its lease is short.
        let crashed: Vec<Uuid> = ids[..2].to_vec();
        let now = Utc::now();
        for id in &crashed {
            let c = a
                .claim_workflow(*id, "crashed", now, now + chrono::Duration::seconds(2))
                .await
                .expect("claim");
            assert!(c.is_some(), "the crashed worker's claim");
        }

        let ours = Arc::new(ids.clone());
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let wa = tokio::spawn(worker(
            a.clone(),
            "worker-a".into(),
            ours.clone(),
            ledger.clone(),
        ));
        let wb = tokio::spawn(worker(
            b.clone(),
            "worker-b".into(),
            ours.clone(),
            ledger.clone(),
        ));
        tokio::time::timeout(Duration::from_secs(60), async {
            wa.await.expect("worker a panicked");
            wb.await.expect("worker b panicked");
        })
        .await
        .expect("the workers finish within a minute");

        let ledger = {
            let guard = ledger.lock().expect("ledger");
            Ledger {
                effects: guard.effects.clone(),
                runs: guard.runs.clone(),
            }
        };
        for id in &ids {
            for step in STEPS {
                assert_eq!(
                    ledger.effects.get(&(*id, step)).copied(),
                    Some(1),
                    "step {step} of {id} ran exactly once"
                );
            }
            let w = a.get_workflow(*id).await.expect("get").expect("row");
            assert_eq!(w.state, WorkflowState::Done, "workflow {id} finished");
            let journal = b.journal(*id).await.expect("journal");
            assert_eq!(
                journal.len(),
                2 * STEPS.len(),
                "one start and one completion per step of {id}"
            );
            let workers: std::collections::BTreeSet<_> = journal
                .iter()
                .filter_map(|e| e.data["worker"].as_str().map(str::to_string))
                .collect();
            assert_eq!(
                workers.len(),
                1,
                "a single worker ran workflow {id}: {workers:?}"
            );
        }
        for id in &crashed {
            let w = a.get_workflow(*id).await.expect("get").expect("row");
            assert_eq!(
                w.attempts, 2,
                "the abandoned workflow {id} was taken over once"
            );
        }
        let total: usize = ledger.runs.values().sum();
        assert_eq!(
            total, WORKFLOWS,
            "every workflow was finished exactly once: {:?}",
            ledger.runs
        );
        assert!(
            ledger.runs.get("worker-a").copied().unwrap_or(0) > 0
                && ledger.runs.get("worker-b").copied().unwrap_or(0) > 0,
            "both workers took part: {:?}",
            ledger.runs
        );
    })
    .await;
}
