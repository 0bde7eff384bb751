//! What sealing costs: a guest request (a prepare with three users) encoded, sealed for its guest, opened and
//! decoded, next to the same request only encoded and decoded (the baseline, measured in the same run); and the
//! create workflow's secrets sealed and opened next to the parameters only serialised and parsed.
//!
//! ```text
//! cargo bench --bench seal
//! ```
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::Map;
use uuid::Uuid;

use trove::core::model::{DatabaseSpec, DatastoreVersion, Flavor, Manager, Secret, UserSpec};
use trove::core::ports::PrepareRequest;
use trove::core::rpc::{Envelope, GuestRequest};
use trove::core::seal::{guest_request_context, SealKey, Sealer};
use trove::core::taskmanager::workflows::CreateParams;

fn prepare() -> GuestRequest {
    GuestRequest::Prepare(PrepareRequest {
        memory_mb: 2048,
        volume_size_gb: Some(10),
        databases: vec![DatabaseSpec {
            name: "shop".into(),
            character_set: None,
            collate: None,
        }],
        users: (0..3)
            .map(|i| UserSpec {
                name: format!("user{i}"),
                password: Secret::generate(24),
                host: None,
                databases: vec!["shop".into()],
            })
            .collect(),
        root_password: Some(Secret::generate(24)),
        overrides: Map::new(),
        restore: None,
    })
}

fn guest_requests(c: &mut Criterion) {
    let id = Uuid::new_v4();
    let sealer = Sealer::for_guest(&Secret::generate(32));
    let context = guest_request_context(id);
    let req = prepare();
    let mut g = c.benchmark_group("guest request (prepare, 3 users)");
    g.bench_function("baseline: encode + decode", |b| {
        b.iter(|| {
            let bytes = Envelope::new("taskmanager", req.clone())
                .encode()
                .expect("encode");
            Envelope::<GuestRequest>::decode(&bytes).expect("decode")
        })
    });
    g.bench_function("encode + seal + open + decode", |b| {
        b.iter(|| {
            let bytes = Envelope::new("taskmanager", req.clone())
                .encode()
                .expect("encode");
            let sealed = sealer.seal(&bytes, &context);
            let opened = sealer.open(&sealed, &context).expect("open");
            Envelope::<GuestRequest>::decode(&opened).expect("decode")
        })
    });
    g.finish();
}

fn create_params(c: &mut Criterion) {
    let id = Uuid::new_v4();
    let sealer = Sealer::new(SealKey::generate(), Vec::new());
    let GuestRequest::Prepare(p) = prepare() else {
        unreachable!("a prepare")
    };
    let params = CreateParams {
        flavor: Flavor {
            id: "1".into(),
            name: "small".into(),
            ram_mb: 2048,
            vcpus: 1,
            disk_gb: 10,
            ephemeral_gb: 0,
        },
        datastore_version: DatastoreVersion {
            id: Uuid::new_v4(),
            datastore_id: Uuid::new_v4(),
            name: "10.11".into(),
            manager: Manager::Mariadb,
            image: String::new(),
            packages: String::new(),
            active: true,
            version: "10.11".into(),
            flavor_ids: Vec::new(),
        },
        databases: p.databases,
        users: p.users,
        root_password: p.root_password,
        overrides: Map::new(),
        group: None,
        scrubbed: false,
        sealed: None,
        replica_of: None,
        seed_backup: None,
        restore_point: None,
        restore_time: None,
    };
    let mut g = c.benchmark_group("create workflow parameters (3 users)");
    g.bench_function("baseline: serialise + parse", |b| {
        b.iter(|| {
            let text = serde_json::to_vec(&params).expect("serialise");
            serde_json::from_slice::<CreateParams>(&text).expect("parse")
        })
    });
    g.bench_function("seal + serialise + parse + open", |b| {
        b.iter(|| {
            let mut p = params.clone();
            p.seal_secrets(&sealer, id).expect("seal");
            let text = serde_json::to_vec(&p).expect("serialise");
            let back: CreateParams = serde_json::from_slice(&text).expect("parse");
            back.open_secrets(&sealer, id).expect("open")
        })
    });
    g.finish();
}

criterion_group!(benches, guest_requests, create_params);
criterion_main!(benches);
