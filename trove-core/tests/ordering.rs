//! Operations on one instance are ordered: an operation that starts a workflow is refused with upstream's 422
//! while another workflow of the instance runs (a configuration apply keeps the instance's task, so its state
//! alone does not show it), and is accepted once it ended; a restart after an apply that needs one clears
//! RESTART_REQUIRED.
#![cfg(feature = "testing")]

use serde_json::json;
use trove_core::testing::crash::CrashWorld;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_waits_for_the_configuration_apply() {
    let w = CrashWorld::new().await.expect("world");
    let id = w.active_instance("db").await.expect("active instance");
    let cid = w
        .configuration(&[("shared_buffers", json!(4096))])
        .await
        .expect("group");
    w.attach_configuration(id, cid).await.expect("attach");

    // The apply's workflow is open (no worker ran it yet): a restart is refused at once, with upstream's 422.
    let refused = w
        .api
        .restart_instance(&w.tenant(), id)
        .await
        .expect_err("a restart while the apply runs");
    assert_eq!(refused.fault().status, 422, "{refused}");
    assert!(
        refused.to_string().contains("apply_configuration"),
        "the fault names what runs: {refused}"
    );
    // Work on the data is not held up.
    w.api
        .list_databases(&w.tenant(), id)
        .await
        .expect("databases while the apply runs");

    // Once the apply ended (it needs a restart: RESTART_REQUIRED), the restart is accepted and clears it.
    w.settle().await.expect("apply");
    let shown = w.api.show_instance(&w.tenant(), id).await.expect("show");
    assert_eq!(shown.operating_status, "RESTART_REQUIRED", "{shown:?}");
    w.api
        .restart_instance(&w.tenant(), id)
        .await
        .expect("restart after the apply");
    let during = w.api.show_instance(&w.tenant(), id).await.expect("show");
    assert_eq!(during.status, "REBOOT", "{during:?}");
    w.settle().await.expect("restart");
    w.expect_active(id).await.expect("active after the restart");
    let after = w.api.show_instance(&w.tenant(), id).await.expect("show");
    assert_ne!(after.operating_status, "RESTART_REQUIRED", "{after:?}");
}
