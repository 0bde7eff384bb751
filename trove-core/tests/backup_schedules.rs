//! Scheduled backups on a manual clock with simulated engines: two task managers run each due run once, the
//! schedule's retention deletes its expired backups (and their objects), an incremental chain is never broken,
//! and a run on a busy instance takes no backup and says why.

use std::time::Duration;

use trove_core::api::CreateBackupSchedule;
use trove_core::model::{BackupFilter, ScheduleTimes};
use trove_core::ports::InfraStore;
use trove_core::state::BackupState;
use trove_core::taskmanager::Registry;
use trove_core::testing::crash::CrashWorld;

const HOUR: Duration = Duration::from_secs(3600);

async fn backups_of(w: &CrashWorld, id: uuid::Uuid) -> Vec<trove_core::model::Backup> {
    let mut all = w
        .store
        .list_backups(&BackupFilter {
            instance_id: Some(id),
            include_deleted: true,
            ..Default::default()
        })
        .await
        .expect("list");
    all.sort_by_key(|b| b.created);
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_task_managers_run_each_scheduled_backup_once_and_retention_expires_the_oldest() {
    let w = CrashWorld::new().await.expect("world");
    let id = w.active_instance("db").await.expect("instance");
    let s = w
        .api
        .create_backup_schedule(
            &w.tenant(),
            id,
            CreateBackupSchedule {
                name: "hourly".into(),
                times: ScheduleTimes::Interval(3600),
                incremental: false,
                keep_last: Some(2),
                keep_days: None,
            },
        )
        .await
        .expect("schedule");
    let (tm1, tm2) = (
        w.task_manager("tm1", w.store.clone(), &Registry::standard()),
        w.task_manager("tm2", w.store.clone(), &Registry::standard()),
    );
    // Not due yet.
    assert!(tm1.run_due_schedules().await.expect("scan").is_empty());
    for round in 1..=4 {
        w.clock.advance(HOUR);
        let (a, b) = tokio::join!(tm1.run_due_schedules(), tm2.run_due_schedules());
        let started = a.expect("scan 1").len() + b.expect("scan 2").len();
        assert_eq!(started, 1, "round {round}: one backup per due run");
        w.settle().await.expect("settle");
        let live: Vec<_> = backups_of(&w, id)
            .await
            .into_iter()
            .filter(|b| !b.deleted)
            .collect();
        assert!(
            live.iter()
                .all(|b| b.state == BackupState::Completed && b.schedule_id == Some(s.id)),
            "round {round}: {live:?}"
        );
    }
    // The run of round 4 expired round 1's backup (keep 2 completed when it ran: rounds 2 and 3), and the purge
    // removed its object.
    let all = backups_of(&w, id).await;
    assert_eq!(all.len(), 4);
    let live: Vec<_> = all.iter().filter(|b| !b.deleted).collect();
    assert_eq!(live.len(), 3, "rounds 2-4 remain: {all:?}");
    assert!(all[0].deleted, "the oldest went first");
    assert_eq!(w.backups.len(), 3, "the expired backup's object was purged");
    let listed = w
        .api
        .list_backup_schedules(&w.tenant(), id)
        .await
        .expect("list");
    assert_eq!(listed[0].last_backup_id, Some(all[3].id));
    assert!(listed[0].next_run > trove_core::ports::Clock::now(w.clock.as_ref()));
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_never_breaks_an_incremental_chain_and_a_busy_instance_skips_a_run() {
    let w = CrashWorld::new().await.expect("world");
    let id = w.active_instance("db").await.expect("instance");
    let s = w
        .api
        .create_backup_schedule(
            &w.tenant(),
            id,
            CreateBackupSchedule {
                name: "nightly".into(),
                times: ScheduleTimes::Cron("30 2 * * *".into()),
                incremental: false,
                keep_last: Some(1),
                keep_days: None,
            },
        )
        .await
        .expect("schedule");
    // PostgreSQL (the world's datastore) takes incrementals too: an incremental schedule is accepted (and removed
    // again; Redis' refusal is in the API's tests).
    let inc = w
        .api
        .create_backup_schedule(
            &w.tenant(),
            id,
            CreateBackupSchedule {
                name: "inc".into(),
                times: ScheduleTimes::Interval(3600),
                incremental: true,
                keep_last: None,
                keep_days: None,
            },
        )
        .await
        .expect("incrementals on postgresql");
    w.api
        .delete_backup_schedule(&w.tenant(), id, inc.id)
        .await
        .expect("delete the incremental schedule");
    // The schedule's backups as records: an old full one, and a newer full one with two incrementals on it.
    let tm = w.task_manager("tm", w.store.clone(), &Registry::standard());
    let now = trove_core::ports::Clock::now(w.clock.as_ref());
    let inst = w.instance(id).await.expect("instance");
    let mut made: Vec<trove_core::model::Backup> = Vec::new();
    for (i, parent) in [(0usize, None), (1, None), (2, Some(1usize)), (3, Some(2))] {
        let (mut b, _) = trove_core::taskmanager::workflows::backup::plan(
            &inst,
            format!("b{i}"),
            None,
            parent.map(|p| &made[p]),
            "c".into(),
            Some(s.id),
            now + chrono::Duration::minutes(i as i64),
        )
        .expect("plan");
        b.state = BackupState::Completed;
        w.store
            .commit(
                trove_core::ports::ChangeSet::new()
                    .with(trove_core::ports::Write::Backup(b.clone())),
            )
            .await
            .expect("record");
        made.push(b);
    }
    // keep_last 1 keeps the newest incremental, hence its whole chain; only the old full one goes.
    assert_eq!(tm.apply_retention(&s).await.expect("retention"), 1);
    let all = backups_of(&w, id).await;
    let deleted: Vec<&str> = all
        .iter()
        .filter(|b| b.deleted)
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(deleted, vec!["b0"], "{all:?}");

    // A run while the instance is not running takes no backup and says why.
    w.engines.engine(id).crash("test");
    trove_core::testing::fixtures::eventually(
        "the crash reported",
        Duration::from_secs(10),
        || async {
            match w.service_status(id).await {
                Ok(Some(trove_core::state::ServiceStatus::Healthy)) => {
                    Err("still healthy".to_string())
                }
                _ => Ok(()),
            }
        },
    )
    .await;
    w.clock.advance(Duration::from_secs(24 * 3600));
    assert!(tm.run_due_schedules().await.expect("scan").is_empty());
    let sch = &w
        .api
        .list_backup_schedules(&w.tenant(), id)
        .await
        .expect("list")[0];
    assert_eq!(sch.id, s.id);
    assert!(
        sch.last_error
            .as_deref()
            .is_some_and(|e| e.contains("no backup taken")),
        "{sch:?}"
    );
    assert_eq!(backups_of(&w, id).await.len(), 4);
    w.shutdown().await;
}
