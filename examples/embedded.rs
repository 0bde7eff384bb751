//! Embeds a whole trove control plane in one process (in-memory ports, simulated guests), creates a datastore,
//! a version and a flavor, creates an instance and prints its status until it is ACTIVE, then deletes it.
//!
//! Run: `cargo run --example embedded`

use std::time::Duration;

use trove::core::api::{CreateInstance, DatastoreVersionSpec};
use trove::core::model::Flavor;
use trove::core::ports::RequestContext;
use trove::core::CoreConfig;
use trove::ControlPlane;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let cp = ControlPlane::in_memory_with(CoreConfig {
        report_interval: Duration::from_millis(200),
        ..CoreConfig::default()
    })
    .await?;
    let api = cp.api();
    let admin = RequestContext::admin("admin");
    let tenant = RequestContext::tenant("demo");

    let version = api
        .mgmt_create_datastore_version(
            &admin,
            DatastoreVersionSpec {
                datastore_name: "mysql".into(),
                name: "8.0".into(),
                manager: "mysql".into(),
                active: true,
                default: true,
                ..Default::default()
            },
        )
        .await?;
    api.mgmt_put_flavor(
        &admin,
        Flavor {
            id: "1".into(),
            name: "small".into(),
            ram_mb: 1024,
            vcpus: 1,
            disk_gb: 5,
            ephemeral_gb: 0,
        },
    )
    .await?;
    println!(
        "datastore {} version {} ({})",
        version.datastore.name, version.version.name, version.version.id
    );

    let created = api
        .create_instance(
            &tenant,
            CreateInstance {
                name: "db1".into(),
                flavor_ref: Some("1".into()),
                volume_size: Some(1),
                datastore: Some("mysql".into()),
                datastore_version: Some("8.0".into()),
                ..Default::default()
            },
        )
        .await?;
    let id = created.instance.id;
    println!("created instance {id}: status {}", created.status);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = api.show_instance(&tenant, id).await?;
        println!(
            "instance {id}: status {} operating_status {}",
            v.status, v.operating_status
        );
        if v.status == "ACTIVE" {
            break;
        }
        if v.status == "ERROR" || tokio::time::Instant::now() > deadline {
            return Err(format!("instance ended in {} ({:?})", v.status, v.instance.fault).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    api.delete_instance(&tenant, id).await?;
    loop {
        match api.show_instance(&tenant, id).await {
            Ok(v) => println!("instance {id}: status {}", v.status),
            Err(e) if e.fault().status == 404 => break,
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("instance {id} deleted");
    cp.shutdown().await;
    Ok(())
}
