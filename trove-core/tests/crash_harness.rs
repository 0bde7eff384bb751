//! The generic crash harness over every workflow kind the task manager ships: each workflow's scenarios run with
//! the worker killed before its 1st, 2nd, 3rd... journal write, a second worker takes over after the lease, and
//! the end state and the absence of leaks are checked (`trove_core::testing::crash`). A kind registered without a
//! scenario fails this test.
#![cfg(feature = "testing")]

use trove_core::taskmanager::Registry;
use trove_core::testing::crash::sweep;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_registered_workflow_survives_a_crash_before_each_journal_write() {
    let registry = Registry::standard();
    let reports = match sweep(&registry).await {
        Ok(r) => r,
        Err(broken) => panic!("{broken}"),
    };
    let mut kinds: Vec<_> = reports.iter().map(|r| r.kind.clone()).collect();
    kinds.dedup();
    assert_eq!(kinds, registry.kinds(), "every kind was swept");
    for r in &reports {
        eprintln!(
            "{} / {}: {} crash points",
            r.kind, r.scenario, r.crash_points
        );
        // Every workflow journals something before it ends (a step, or the failure it compensates).
        assert!(
            r.crash_points >= 1,
            "{} / {}: only {} crash points",
            r.kind,
            r.scenario,
            r.crash_points
        );
    }
}
