//! The replication part of the strategy conformance suite: a source and a replica (two fresh strategies of one
//! manager that back up into, and restore from, one store), checked through the facets only, in the order the
//! workflows use them: seed (a backup of the source restored as a replica's seed), attach, catch up, switchover
//! (read only, catch up, promote, the old source follows), fence and rejoin, detach. Databases made through the
//! guest mark the data where the strategy offers them.

use std::time::Duration;

use uuid::Uuid;

use super::{db, offers, DynStrategy};
use crate::model::Facet;
use crate::ports::{BackupJob, BackupPiece, BackupProgress, PrepareRequest, RestoreSpec};

/// How long a follower may take to apply what its source has.
const CATCH_UP: Duration = Duration::from_secs(60);

/// A full backup of `s` (through its backup facet).
async fn backup(s: &DynStrategy) -> BackupPiece {
    let job = BackupJob {
        backup_id: Uuid::new_v4(),
        key: format!("conformance/replication-seed-{}", Uuid::new_v4()),
        parent: None,
        retain_from: None,
    };
    let out = s
        .backup()
        .expect("replication is offered with backups")
        .backup(&job, &BackupProgress::default())
        .await
        .expect("the seed backup");
    BackupPiece {
        backup_id: job.backup_id,
        key: out.object.key,
        checksum: out.object.checksum,
        size: out.object.size,
        position: out.position,
        incremental: false,
    }
}

/// Waits until `follower` covers where `leader` is now.
async fn caught_up(leader: &DynStrategy, follower: &DynStrategy, what: &str) {
    let at = leader
        .replication()
        .expect("replication")
        .position()
        .await
        .unwrap_or_else(|e| panic!("{what}: the leader's position: {e}"));
    follower
        .replication()
        .expect("replication")
        .wait_for(&at, CATCH_UP)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// Whether `s` lists database `name` (`true` where the strategy has no databases facet).
async fn has_db(s: &DynStrategy, name: &str) -> bool {
    match s.databases() {
        Some(f) => f
            .list_databases()
            .await
            .expect("list databases")
            .iter()
            .any(|d| d.name == name),
        None => true,
    }
}

/// Makes database `name` on `s` through its guest, where the strategy offers databases.
async fn make_db(s: &DynStrategy, name: &str) {
    if let Some(f) = s.databases() {
        f.create_databases(&[db(name)])
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
    }
}

/// Runs the replication checks on `source` and `replica` (fresh, never prepared; `replica` restores from the
/// store `source` backs up into). Both engines are left running, `replica` standalone.
pub async fn run(source: DynStrategy, replica: DynStrategy) {
    let m = source.manager();
    assert!(offers(&source, Facet::Replication), "{m}: no replication");
    source
        .prepare(&super::prepare_request(&source))
        .await
        .expect("prepare the source");
    make_db(&source, "repl_before").await;

    // The seed: a backup of the source, restored as a replica's seed, then following the source.
    let seed = backup(&source).await;
    make_db(&source, "repl_after_seed").await;
    replica
        .prepare(&PrepareRequest {
            memory_mb: 512,
            volume_size_gb: Some(1),
            databases: vec![],
            users: vec![],
            root_password: None,
            overrides: Default::default(),
            restore: Some(RestoreSpec {
                chain: vec![seed],
                restore_time: None,
                replica: true,
            }),
        })
        .await
        .expect("prepare the replica from the seed");
    let (sf, rf) = (
        source.replication().expect("replication"),
        replica.replication().expect("replication"),
    );
    let info = sf.source_info().await.expect("source info");
    assert!(!info.user.is_empty(), "{m}: a replication account");
    assert_eq!(
        sf.source_info().await.expect("source info again").user,
        info.user,
        "{m}: the same account each time"
    );
    rf.attach(&info).await.expect("attach");
    make_db(&source, "repl_attached").await;
    caught_up(&source, &replica, "the replica catches up").await;
    for name in ["repl_before", "repl_after_seed", "repl_attached"] {
        assert!(has_db(&replica, name).await, "{m}: {name} on the replica");
    }
    // A replica never holds more than its source (read the replica first: the source may write on its own).
    let rp = rf.position().await.expect("position");
    let sp = sf.position().await.expect("position");
    assert_eq!(sp.covers(&rp), Some(true), "{m}: {sp:?} covers {rp:?}");
    rf.attach(&info).await.expect("attaching again is harmless");
    caught_up(&source, &replica, "after attaching again").await;

    // Switchover: the source hands over, the replica takes writes, the old source follows it.
    sf.set_read_only(true).await.expect("source read only");
    caught_up(&source, &replica, "the candidate catches up").await;
    rf.promote().await.expect("promote");
    make_db(&replica, "repl_promoted").await;
    sf.attach(&rf.source_info().await.expect("new source info"))
        .await
        .expect("the old source follows the new one");
    caught_up(&replica, &source, "the old source catches up").await;
    assert!(has_db(&source, "repl_promoted").await, "{m}");

    // Fence and rejoin: the new source is fenced (stopped, kept from writing); the other member takes over; the
    // fenced one comes back as its replica when attached.
    replica.fence().await.expect("fence");
    assert!(
        !super::is_running(replica.status().await.status),
        "{m}: a fenced engine does not run"
    );
    sf.promote().await.expect("promote the other member");
    make_db(&source, "repl_failed_over").await;
    rf.attach(&sf.source_info().await.expect("source info"))
        .await
        .expect("the fenced member rejoins");
    caught_up(&source, &replica, "the rejoined member catches up").await;
    assert!(has_db(&replica, "repl_failed_over").await, "{m}");

    // Detach: standalone, taking writes of its own that the other member never sees.
    rf.detach().await.expect("detach");
    make_db(&replica, "repl_detached").await;
    make_db(&source, "repl_source_only").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    if replica.databases().is_some() {
        assert!(!has_db(&source, "repl_detached").await, "{m}");
        assert!(!has_db(&replica, "repl_source_only").await, "{m}");
    }
}
