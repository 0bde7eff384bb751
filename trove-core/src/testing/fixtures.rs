//! Small fixtures shared by the integration tests of every crate: request contexts, catalogue entries (flavors,
//! datastore versions) registered through the API, and a bounded wait for an observed condition (instead of
//! sleeping and then asserting).

use std::future::Future;
use std::time::{Duration, Instant};

use crate::api::{ApiService, DatastoreVersionSpec, InstanceView};
use crate::model::Flavor;
use crate::ports::RequestContext;
use crate::state::TaskStatus;

/// The operator (admin role) that registers the catalogue.
pub fn admin() -> RequestContext {
    RequestContext::admin("admin")
}

/// A member of project `project`.
pub fn tenant(project: &str) -> RequestContext {
    RequestContext::tenant(project)
}

/// A flavor with one vCPU and no ephemeral disk.
pub fn flavor(id: &str, name: &str, ram_mb: u32, disk_gb: u32) -> Flavor {
    Flavor {
        id: id.into(),
        name: name.into(),
        ram_mb,
        vcpus: 1,
        disk_gb,
        ephemeral_gb: 0,
    }
}

/// An active version `name` of `datastore`, managed by the manager of the same name (`mysql`, `mariadb`,
/// `postgresql`, `redis`), with an empty image (the engine is looked up) and the name as version number.
pub fn version(datastore: &str, name: &str, default: bool) -> DatastoreVersionSpec {
    DatastoreVersionSpec {
        datastore_name: datastore.into(),
        name: name.into(),
        manager: datastore.into(),
        active: true,
        default,
        ..Default::default()
    }
}

/// Registers `flavors` (as [`admin`]); panics when one is refused.
pub async fn add_flavors(api: &ApiService, flavors: impl IntoIterator<Item = Flavor>) {
    for f in flavors {
        let id = f.id.clone();
        api.mgmt_put_flavor(&admin(), f)
            .await
            .unwrap_or_else(|e| panic!("flavor {id}: {e}"));
    }
}

/// Registers `versions` (as [`admin`]); panics when one is refused.
pub async fn add_versions(
    api: &ApiService,
    versions: impl IntoIterator<Item = DatastoreVersionSpec>,
) {
    for v in versions {
        let what = format!("{} {}", v.datastore_name, v.name);
        api.mgmt_create_datastore_version(&admin(), v)
            .await
            .unwrap_or_else(|e| panic!("datastore version {what}: {e}"));
    }
}

/// Polls `check` (real time, every few milliseconds, backing off to 50 ms) until it answers `Some`, and answers
/// that; panics naming `what` and the last `Err` explanation after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        let last = match check().await {
            Ok(t) => return t,
            Err(why) => why,
        };
        assert!(
            start.elapsed() < within,
            "{what}: not within {within:?}; last seen: {last}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Polls instance `id` through the API (as `ctx`) until `pred` holds for its view, and answers that view; panics
/// (naming `what`) when the instance turns ERROR or after `within`.
pub async fn wait_view(
    api: &ApiService,
    ctx: &RequestContext,
    id: uuid::Uuid,
    what: &str,
    within: Duration,
    pred: impl Fn(&InstanceView) -> bool,
) -> InstanceView {
    eventually(what, within, || async {
        let v = api
            .show_instance(ctx, id)
            .await
            .unwrap_or_else(|e| panic!("{what}: show failed: {e}"));
        if pred(&v) {
            return Ok(v);
        }
        assert!(
            v.status != "ERROR",
            "{what}: the instance went to ERROR: {:?} {:?}",
            v.instance.fault,
            v.service
        );
        Err(format!(
            "status {} operating_status {} task {:?} service {:?}",
            v.status, v.operating_status, v.instance.task, v.service
        ))
    })
    .await
}

/// No task running and the engine HEALTHY.
pub fn idle_healthy(v: &InstanceView) -> bool {
    v.instance.task == TaskStatus::None && v.operating_status == "HEALTHY"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_answers_once_the_check_holds_and_fails_after_the_limit() {
        let mut calls = 0;
        let n = eventually("the third call", Duration::from_secs(5), || {
            calls += 1;
            let c = calls;
            async move {
                if c >= 3 {
                    Ok(c)
                } else {
                    Err(format!("call {c}"))
                }
            }
        })
        .await;
        assert_eq!(n, 3);
        let failed = tokio::spawn(eventually("never", Duration::from_millis(20), || async {
            Err::<(), _>("still no".to_string())
        }))
        .await
        .unwrap_err();
        let msg = failed.into_panic();
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("never") && msg.contains("still no"), "{msg}");
    }
}
