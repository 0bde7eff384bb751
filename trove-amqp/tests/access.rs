//! Per-guest broker users on a private RabbitMQ node: a guest reads only its own queue and reports only to the
//! conductor; its user is gone after revoke.

mod common;

use std::time::Duration;
use trove_amqp::access::GuestAccess;
use trove_amqp::AmqpBus;
use trove_core::model::Secret;
use trove_core::ports::MessageBus;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_reads_only_its_own_queue() {
    let broker = tokio::task::spawn_blocking(common::PrivateBroker::start)
        .await
        .expect("start broker");
    let cp_cfg = common::unique_config(broker.port);
    let control = AmqpBus::connect(cp_cfg.clone())
        .await
        .expect("connect control plane");
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (topic_a, topic_b) = (format!("guestagent.{a}"), format!("guestagent.{b}"));
    // The control plane declares the queues (as it does when it provisions); the conductor listens.
    let mut conductor = control
        .subscribe("trove-conductor")
        .await
        .expect("conductor");
    drop(control.subscribe(&topic_a).await.expect("declare a"));
    drop(control.subscribe(&topic_b).await.expect("declare b"));
    control
        .cast(&topic_b, b"secret for b".to_vec())
        .await
        .expect("cast to b");

    let access = GuestAccess::new(broker.rabbitctl(), cp_cfg.clone());
    let password = Secret::generate(24);
    let mut guest_cfg = access.grant(a, &password).await.expect("grant");
    access
        .grant(a, &password)
        .await
        .expect("grant is idempotent");
    assert!(!guest_cfg.declare_topology);
    assert!(
        !format!("{guest_cfg:?}").contains(password.expose()),
        "the password never shows in Debug"
    );
    guest_cfg.publish_timeout_ms = 3_000;
    let guest = AmqpBus::connect(guest_cfg.clone())
        .await
        .expect("the guest connects with its own user");

    // Its own queue: it serves calls from the control plane.
    let mut own = guest
        .subscribe(&topic_a)
        .await
        .expect("the guest consumes its own queue");
    let server = tokio::spawn(async move {
        let mut d = own.next().await.expect("next").expect("request");
        d.reply(b"pong".to_vec()).await.expect("reply");
        d.ack().await.expect("ack");
    });
    let r = control
        .call(&topic_a, b"ping".to_vec(), Duration::from_secs(10))
        .await
        .expect("call the guest");
    assert_eq!(r, b"pong");
    server.await.expect("guest server");

    // Reports to the conductor arrive.
    guest
        .cast("trove-conductor", b"heartbeat".to_vec())
        .await
        .expect("the guest reports");
    let d = tokio::time::timeout(Duration::from_secs(10), conductor.next())
        .await
        .expect("report arrives")
        .expect("ok")
        .expect("some");
    assert_eq!(d.body, b"heartbeat");
    d.ack().await.expect("ack");

    // Another guest's queue: neither readable nor writable.
    let e = guest
        .subscribe(&topic_b)
        .await
        .err()
        .expect("reading another guest's queue is refused");
    assert!(e.to_string().contains("ACCESS_REFUSED"), "{e}");
    assert!(!e.is_transient(), "an access refusal is permanent: {e}");
    let e = guest
        .cast(&topic_b, b"forged".to_vec())
        .await
        .expect_err("writing to another guest's queue is refused");
    assert!(
        e.to_string().contains("ACCESS_REFUSED") || e.to_string().contains("access"),
        "{e}"
    );
    // b's message is still there, untouched, and no forged message was added.
    let mut sub_b = control.subscribe(&topic_b).await.expect("subscribe b");
    let d = tokio::time::timeout(Duration::from_secs(10), sub_b.next())
        .await
        .expect("b's message")
        .expect("ok");
    let d = d.expect("some");
    assert_eq!(d.body, b"secret for b");
    d.ack().await.expect("ack");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), sub_b.next())
            .await
            .is_err(),
        "no forged message reached b"
    );

    // Revoked: the guest's credentials no longer open a connection.
    guest.close().await;
    access.revoke(a).await.expect("revoke");
    access.revoke(a).await.expect("revoke is idempotent");
    assert!(
        AmqpBus::connect(guest_cfg).await.is_err(),
        "a revoked guest cannot connect"
    );

    drop((sub_b, conductor));
    control.close().await;
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .expect("stop broker");
}
