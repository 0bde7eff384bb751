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

fn status_of(e: &crate::Error) -> u16 {
    e.fault().status
}

/// `migrate_server` moves a server to another host (named, or picked), keeps its id and port, relaunches its
/// guest there, and refuses an unknown host, the server's own host, and (with one host) any migration with a 400.
pub async fn migrate_moves_to_another_host(compute: &DynCompute, launcher: &RecordingLauncher) {
    let hosts = compute.hosts().await.expect("hosts");
    let spec = sample_server_spec(Manager::Mariadb);
    let id = spec.instance_id;
    let first = compute.create_server(&spec).await.expect("create_server");
    let stops_before = launcher.stops().iter().filter(|x| **x == id).count();
    let e = compute
        .migrate_server(id, Some("no-such-host"))
        .await
        .expect_err("an unknown host is refused");
    assert_eq!(status_of(&e), 400, "unknown host: {e}");
    let e = compute
        .migrate_server(id, Some(first.host.as_str()))
        .await
        .expect_err("the server's own host is refused");
    assert_eq!(status_of(&e), 400, "same host: {e}");
    let e = compute
        .migrate_server(Uuid::new_v4(), None)
        .await
        .expect_err("a missing server cannot move");
    assert_eq!(status_of(&e), 404, "missing server: {e}");
    if hosts.len() < 2 {
        let e = compute
            .migrate_server(id, None)
            .await
            .expect_err("one host: nowhere to go");
        assert_eq!(status_of(&e), 400, "no other host: {e}");
        assert!(
            e.to_string().contains("no other host"),
            "the refusal says why: {e}"
        );
        let after = compute.get_server(id).await.expect("get").expect("server");
        assert_eq!(
            after.host, first.host,
            "a refused migration changes nothing"
        );
        delete_all(compute, &[id]).await;
        return;
    }
    let moved = compute.migrate_server(id, None).await.expect("migrate");
    assert_ne!(
        moved.host, first.host,
        "migrate without a host picks another one"
    );
    assert!(hosts.contains(&moved.host), "moved to a known host");
    assert_eq!(moved.id, first.id, "a migrated server keeps its id");
    assert_eq!(moved.port, first.port, "a migrated server keeps its port");
    assert_eq!(moved.status, ServerStatus::Active);
    assert_eq!(
        compute.get_server(id).await.expect("get"),
        Some(moved.clone()),
        "get_server reports the new host"
    );
    assert!(
        launcher.stops().iter().filter(|x| **x == id).count() > stops_before,
        "the guest was stopped on the old host"
    );
    assert!(
        launcher.is_running(id),
        "the guest runs again after the move"
    );
    let back = compute
        .migrate_server(id, Some(first.host.as_str()))
        .await
        .expect("migrate back to the named host");
    assert_eq!(back.host, first.host, "migrate to a named host lands there");
    delete_all(compute, &[id]).await;
}

/// `rebuild_server` keeps the server (id, host, port), relaunches its guest, and switches the datastore version
/// the guest runs when one is given.
pub async fn rebuild_keeps_server_and_switches_version(
    compute: &DynCompute,
    launcher: &RecordingLauncher,
) {
    let spec = sample_server_spec(Manager::Postgresql);
    let id = spec.instance_id;
    let first = compute.create_server(&spec).await.expect("create_server");
    let rebuilt = compute
        .rebuild_server(id, "3e50414a-8532-4646-982c-a66fe8f0411b", None)
        .await
        .expect("rebuild_server");
    assert_eq!(
        (
            rebuilt.id.as_str(),
            rebuilt.host.as_str(),
            rebuilt.port,
            rebuilt.status
        ),
        (
            first.id.as_str(),
            first.host.as_str(),
            first.port,
            ServerStatus::Active
        ),
        "a rebuilt server keeps its identity"
    );
    assert!(launcher.is_running(id), "the guest runs after a rebuild");
    assert_eq!(
        launcher.spec(id).expect("guest spec").datastore_version,
        spec.datastore_version,
        "a rebuild without a version keeps the version"
    );
    let mut newer = spec.datastore_version.clone();
    newer.id = Uuid::new_v4();
    newer.name = "newer".into();
    compute
        .rebuild_server(id, "another-image", Some(&newer))
        .await
        .expect("rebuild_server for another version");
    assert_eq!(
        launcher.spec(id).expect("guest spec").datastore_version,
        newer,
        "the relaunched guest runs the new version"
    );
    let e = compute
        .rebuild_server(Uuid::new_v4(), "img", None)
        .await
        .expect_err("a missing server cannot be rebuilt");
    assert_eq!(status_of(&e), 404, "missing server: {e}");
    delete_all(compute, &[id]).await;
}

/// Runs every check of the Compute contract.
pub async fn run_all(compute: DynCompute, launcher: &RecordingLauncher) {
    create_is_idempotent_and_launches_guest(&compute, launcher).await;
    delete_is_idempotent_and_stops_guest(&compute, launcher).await;
    reboot_and_resize_keep_server(&compute).await;
    affinity_shares_a_host(&compute).await;
    anti_affinity_spreads_or_refuses(&compute).await;
    migrate_moves_to_another_host(&compute, launcher).await;
    rebuild_keeps_server_and_switches_version(&compute, launcher).await;
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
