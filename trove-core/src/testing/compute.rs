//! Conformance suite for [`crate::ports::Compute`].
//!
//! The compute under test must have been built with the [`RecordingLauncher`] passed to the checks, so the suite
//! can see guests start and stop. Locality checks adapt to the number of hosts the compute reports: with one
//! host, strict anti-affinity must refuse the second member; with several, members must land on distinct hosts.

use uuid::Uuid;

use super::{sample_flavor, sample_server_spec};
use crate::memory::RecordingLauncher;
use crate::model::{Flavor, Locality, Manager};
use crate::ports::{DynCompute, ServerSpec};
use crate::state::ServerStatus;

fn member_of(group: Uuid, locality: Locality) -> ServerSpec {
    let mut spec = sample_server_spec(Manager::Mariadb);
    spec.group = Some((group, locality));
    spec
}

async fn delete_all(compute: &DynCompute, ids: &[Uuid]) {
    for id in ids {
        compute.delete_server(*id).await.expect("delete_server");
    }
}

/// `create_server` is idempotent per instance, leaves the server ACTIVE, and starts its guest.
pub async fn create_is_idempotent_and_launches_guest(
    compute: &DynCompute,
    launcher: &RecordingLauncher,
) {
    let spec = sample_server_spec(Manager::Mariadb);
    let id = spec.instance_id;
    let first = compute.create_server(&spec).await.expect("create_server");
    assert_eq!(first.instance_id, id);
    assert_eq!(
        first.status,
        ServerStatus::Active,
        "a created server is ACTIVE"
    );
    assert!(!first.addresses.is_empty(), "a server has an address");
    assert!(
        compute.hosts().await.expect("hosts").contains(&first.host),
        "placed on a known host"
    );
    let again = compute
        .create_server(&spec)
        .await
        .expect("create_server again");
    assert_eq!(
        again.id, first.id,
        "create_server is idempotent per instance"
    );
    assert_eq!(
        compute.get_server(id).await.expect("get_server"),
        Some(again)
    );
    assert!(
        launcher.is_running(id),
        "creating a server starts its guest"
    );
    let guest = launcher.spec(id).expect("guest spec");
    assert_eq!(guest.instance_id, id);
    assert_eq!(guest.datastore_version.manager, Manager::Mariadb);
    assert!(guest.port > 0, "the guest knows the engine port");
    delete_all(compute, &[id]).await;
}

/// `delete_server` stops the guest, is idempotent, and succeeds for a server that never existed.
pub async fn delete_is_idempotent_and_stops_guest(
    compute: &DynCompute,
    launcher: &RecordingLauncher,
) {
    let spec = sample_server_spec(Manager::Postgresql);
    let id = spec.instance_id;
    compute.create_server(&spec).await.expect("create_server");
    compute.delete_server(id).await.expect("delete_server");
    assert_eq!(
        compute.get_server(id).await.expect("get_server"),
        None,
        "gone after delete"
    );
    assert!(
        !launcher.is_running(id),
        "deleting a server stops its guest"
    );
    compute
        .delete_server(id)
        .await
        .expect("delete_server twice");
    compute
        .delete_server(Uuid::new_v4())
        .await
        .expect("delete a server that never existed");
}

/// `reboot_server` and `resize_server` leave the server ACTIVE and keep its identity.
pub async fn reboot_and_resize_keep_server(compute: &DynCompute) {
    let spec = sample_server_spec(Manager::Mariadb);
    let id = spec.instance_id;
    let server = compute.create_server(&spec).await.expect("create_server");
    compute.reboot_server(id).await.expect("reboot_server");
    let after = compute
        .get_server(id)
        .await
        .expect("get_server")
        .expect("server exists");
    assert_eq!(
        (after.id.as_str(), after.status),
        (server.id.as_str(), ServerStatus::Active)
    );
    let bigger = Flavor {
        id: "2".into(),
        name: "conformance.medium".into(),
        ram_mb: 1024,
        ..sample_flavor()
    };
    compute
        .resize_server(id, &bigger)
        .await
        .expect("resize_server");
    let after = compute
        .get_server(id)
        .await
        .expect("get_server")
        .expect("server exists");
    assert_eq!(
        (after.id.as_str(), after.status),
        (server.id.as_str(), ServerStatus::Active)
    );
    delete_all(compute, &[id]).await;
}

/// Affinity (strict and soft) puts the members of a group on the source's host.
pub async fn affinity_shares_a_host(compute: &DynCompute) {
    for locality in [Locality::Affinity, Locality::SoftAffinity] {
        let source = sample_server_spec(Manager::Mariadb);
        let src = compute.create_server(&source).await.expect("create source");
        let mut ids = vec![source.instance_id];
        for _ in 0..2 {
            let m = member_of(source.instance_id, locality);
            let s = compute.create_server(&m).await.expect("create member");
            assert_eq!(
                s.host,
                src.host,
                "{} places members on the source's host",
                locality.as_str()
            );
            ids.push(m.instance_id);
        }
        delete_all(compute, &ids).await;
    }
}

/// Strict anti-affinity puts members on distinct hosts and fails with a 400-class error when it cannot; soft
/// anti-affinity never fails.
pub async fn anti_affinity_spreads_or_refuses(compute: &DynCompute) {
    let hosts = compute.hosts().await.expect("hosts");
    assert!(!hosts.is_empty(), "a compute has at least one host");
    let source = sample_server_spec(Manager::Mariadb);
    let src = compute.create_server(&source).await.expect("create source");
    let mut ids = vec![source.instance_id];
    let mut used = vec![src.host.clone()];
    for _ in 1..hosts.len() {
        let m = member_of(source.instance_id, Locality::AntiAffinity);
        let s = compute
            .create_server(&m)
            .await
            .expect("create member while a free host exists");
        assert!(
            !used.contains(&s.host),
            "anti-affinity member placed on a used host {}",
            s.host
        );
        used.push(s.host);
        ids.push(m.instance_id);
    }
    let extra = member_of(source.instance_id, Locality::AntiAffinity);
    let e = compute
        .create_server(&extra)
        .await
        .expect_err("no host left for strict anti-affinity");
    let status = e.fault().status;
    assert!(
        (400..500).contains(&status),
        "refusal is a client error, got {status}: {e}"
    );
    assert_eq!(
        compute
            .get_server(extra.instance_id)
            .await
            .expect("get_server"),
        None,
        "refused: nothing left"
    );
    let soft = member_of(source.instance_id, Locality::SoftAntiAffinity);
    compute
        .create_server(&soft)
        .await
        .expect("soft anti-affinity never fails");
    ids.push(soft.instance_id);
    delete_all(compute, &ids).await;
}

/// Runs every check of the Compute contract.
pub async fn run_all(compute: DynCompute, launcher: &RecordingLauncher) {
    create_is_idempotent_and_launches_guest(&compute, launcher).await;
    delete_is_idempotent_and_stops_guest(&compute, launcher).await;
    reboot_and_resize_keep_server(&compute).await;
    affinity_shares_a_host(&compute).await;
    anti_affinity_spreads_or_refuses(&compute).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryCompute;
    use std::sync::Arc;

    #[tokio::test]
    async fn memory_compute_passes_the_suite_on_three_hosts() {
        let launcher = RecordingLauncher::new();
        let hosts = vec!["h1".to_string(), "h2".to_string(), "h3".to_string()];
        let compute = Arc::new(MemoryCompute::with_hosts(hosts, Arc::new(launcher.clone())));
        run_all(compute.clone(), &launcher).await;
        assert!(compute.servers().is_empty(), "the suite cleans up");
        assert!(launcher.running().is_empty(), "every guest stopped");
    }

    #[tokio::test]
    async fn memory_compute_passes_the_suite_on_one_host() {
        let launcher = RecordingLauncher::new();
        let compute = Arc::new(MemoryCompute::new(Arc::new(launcher.clone())));
        run_all(compute, &launcher).await;
    }
}
