//! Durability: a `kill -9` of a process writing to the SQLite store loses nothing it acknowledged.
//!
//! The test re-runs its own binary as the writer (the ignored test `kill9_writer_process`, selected with
//! `--exact --ignored` and told where to write by an environment variable), reads its acknowledgements, kills it
//! with SIGKILL mid-stream, reopens the database and checks every acknowledged write.

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use trove_backends::sql::{self, StoreLocation};
use trove_core::model::{JournalEntry, JournalPhase, WorkflowKind};
use trove_core::ports::{ChangeSet, Expect, Write};
use trove_core::testing::store::fixtures;
use uuid::Uuid;

const DIR_VAR: &str = "TROVE_KILL9_STATE_DIR";
const ACKS_BEFORE_KILL: usize = 150;

/// The writer process. Runs only when started by `kill9_loses_no_acknowledged_write`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process of kill9_loses_no_acknowledged_write"]
async fn kill9_writer_process() {
    let dir = std::env::var(DIR_VAR)
        .expect("run by kill9_loses_no_acknowledged_write, which sets the state dir");
    let store = sql::open(&StoreLocation::StateDir(dir.into()))
        .await
        .expect("open");
    let mut out = std::io::stdout().lock();
    for n in 0.. {
        // A small workflow's worth of writes: instance + workflow, journal entries, a heartbeat.
        let inst = fixtures::instance("kill9", 512, Some(1), fixtures::at(n));
        let wf = fixtures::workflow(WorkflowKind::new("create"), inst.id, fixtures::at(n));
        store
            .commit(
                ChangeSet::new()
                    .with(Write::Instance {
                        instance: inst.clone(),
                        expect: Expect::Absent,
                    })
                    .with(Write::Workflow {
                        workflow: wf.clone(),
                        expect: Expect::Absent,
                    }),
            )
            .await
            .expect("commit");
        writeln!(out, "ACK instance {} workflow {}", inst.id, wf.id).expect("stdout");
        out.flush().expect("flush");
        let entry = JournalEntry {
            workflow_id: wf.id,
            step: "create_server".into(),
            phase: JournalPhase::Started,
            data: json!({"n": n}),
            at: Utc::now(),
        };
        store.append_journal(&entry).await.expect("journal");
        writeln!(out, "ACK journal {}", wf.id).expect("stdout");
        out.flush().expect("flush");
        store
            .put_service_statuses(&[fixtures::status(
                inst.id,
                trove_core::state::ServiceStatus::Running,
                fixtures::at(n),
            )])
            .await
            .expect("status");
        writeln!(out, "ACK status {}", inst.id).expect("stdout");
        out.flush().expect("flush");
    }
}

/// Kills the writer if the test fails before killing it on purpose.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    sql::db_sync(&StoreLocation::StateDir(dir.path().to_path_buf()))
        .await
        .expect("db_sync");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = KillOnDrop(
        Command::new(exe)
            .args([
                "kill9_writer_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the writer"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acks: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acks.len() < ACKS_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "the writer acknowledged only {} writes in a minute",
            acks.len()
        );
        match lines.next() {
            Some(Ok(l)) if l.starts_with("ACK ") => acks.push(l),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("reading the writer's output: {e}"),
            None => panic!(
                "the writer exited early after {} acks: {:?}",
                acks.len(),
                child.0.wait()
            ),
        }
    }
    // SIGKILL while it is writing; then collect every acknowledgement it printed before dying.
    child.0.kill().expect("kill -9");
    let status = child.0.wait().expect("wait");
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the writer died of SIGKILL: {status:?}"
        );
    }
    for l in lines {
        match l {
            Ok(l) if l.starts_with("ACK ") => acks.push(l),
            Ok(_) => {}
            Err(_) => break, // a line cut by the kill
        }
    }

    let store = sql::open(&StoreLocation::StateDir(dir.path().to_path_buf()))
        .await
        .expect("reopen after kill -9");
    let mut checked = 0;
    for ack in &acks {
        let words: Vec<&str> = ack.split_whitespace().collect();
        let id = |i: usize| {
            Uuid::parse_str(words.get(i).copied().unwrap_or("")).expect("ack names an id")
        };
        match words.get(1).copied() {
            Some("instance") => {
                let inst = store
                    .get_instance(id(2))
                    .await
                    .expect("get")
                    .expect("acknowledged instance survives");
                assert_eq!(inst.tenant_id, "kill9");
                assert!(
                    store.get_workflow(id(4)).await.expect("get").is_some(),
                    "acknowledged workflow survives"
                );
            }
            Some("journal") => {
                assert_eq!(
                    store.journal(id(2)).await.expect("journal").len(),
                    1,
                    "acknowledged journal entry survives"
                );
            }
            Some("status") => {
                assert!(
                    store
                        .get_service_status(id(2))
                        .await
                        .expect("get")
                        .is_some(),
                    "acknowledged heartbeat survives"
                );
            }
            other => panic!("unexpected ack {other:?}"),
        }
        checked += 1;
    }
    assert!(
        checked >= ACKS_BEFORE_KILL,
        "checked {checked} acknowledged writes"
    );
}
