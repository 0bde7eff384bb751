//! Set-up shared by the API benchmarks.

use trove::core::api::{ApiService, CreateInstance};
use trove::core::ports::RequestContext;
use uuid::Uuid;

/// Lifts `tenant`'s quotas (as an admin) and creates `count` instances of flavor `flavor` on mysql `version`
/// through `ApiService`; answers the id of the last one.
pub async fn create_instances(
    api: &ApiService,
    tenant: &str,
    count: usize,
    flavor: &str,
    version: &str,
) -> Uuid {
    let admin = RequestContext::admin("ops");
    let unlimited = [("instances", -1), ("volumes", -1), ("ram", -1)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    api.update_quota(&admin, tenant, unlimited)
        .await
        .expect("quota");
    let ctx = RequestContext::tenant(tenant);
    let mut last = None;
    for i in 0..count {
        let v = api
            .create_instance(
                &ctx,
                CreateInstance {
                    name: format!("db{i}"),
                    flavor_ref: Some(flavor.into()),
                    volume_size: Some(1),
                    datastore: Some("mysql".into()),
                    datastore_version: Some(version.into()),
                    ..Default::default()
                },
            )
            .await
            .expect("create");
        last = Some(v.instance.id);
    }
    last.expect("an instance")
}
