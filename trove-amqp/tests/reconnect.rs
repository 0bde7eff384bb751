//! Broker restarts: the bus reconnects, subscriptions resume, casts made while the broker is down are delivered.
//! Uses a private RabbitMQ node (never the shared one on 5672).

mod common;

use std::time::Duration;
use tokio::sync::mpsc;
use trove_core::ports::MessageBus;

async fn recv(rx: &mut mpsc::UnboundedReceiver<Vec<u8>>, what: &str) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing received within 30 s"))
        .unwrap_or_else(|| panic!("{what}: consumer task ended"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_survives_a_broker_restart() {
    let mut broker = tokio::task::spawn_blocking(common::PrivateBroker::start)
        .await
        .expect("start broker");
    let bus = trove_amqp::AmqpBus::connect(common::unique_config(broker.port))
        .await
        .expect("connect");

    // A worker that acknowledges what it handles, and an RPC responder.
    let mut work = bus.subscribe("work").await.expect("subscribe work");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = tokio::spawn(async move {
        while let Ok(Some(d)) = work.next().await {
            let _ = tx.send(d.body.clone());
            d.ack().await.ok();
        }
    });
    let mut rpc = bus.subscribe("rpc").await.expect("subscribe rpc");
    let responder = tokio::spawn(async move {
        while let Ok(Some(mut d)) = rpc.next().await {
            let body = d.body.clone();
            d.reply(body).await.ok();
            d.ack().await.ok();
        }
    });

    bus.cast("work", b"before".to_vec())
        .await
        .expect("cast before");
    assert_eq!(recv(&mut rx, "before restart").await, b"before");
    assert_eq!(
        bus.call("rpc", b"ping1".to_vec(), Duration::from_secs(10))
            .await
            .expect("call"),
        b"ping1"
    );

    // Broker goes down; a cast made meanwhile waits for it and is delivered once it is back.
    let mut broker = tokio::task::spawn_blocking(move || {
        broker.stop_server();
        broker
    })
    .await
    .expect("stop broker");
    let casting = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.cast("work", b"during".to_vec()).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !casting.is_finished(),
        "a cast cannot be confirmed while the broker is down"
    );
    let broker = tokio::task::spawn_blocking(move || {
        broker.start_server();
        broker
    })
    .await
    .expect("restart broker");
    casting
        .await
        .expect("cast task")
        .expect("cast made while the broker was down");
    assert_eq!(
        recv(&mut rx, "cast made during the outage").await,
        b"during"
    );
    bus.cast("work", b"after".to_vec())
        .await
        .expect("cast after");
    assert_eq!(recv(&mut rx, "after restart").await, b"after");

    // Calls work again once the responder has resumed.
    let mut answered = false;
    for _ in 0..30 {
        match bus
            .call("rpc", b"ping2".to_vec(), Duration::from_secs(2))
            .await
        {
            Ok(r) => {
                assert_eq!(r, b"ping2");
                answered = true;
                break;
            }
            Err(trove_core::Error::Timeout { .. }) => continue,
            Err(e) => panic!("call after restart: {e}"),
        }
    }
    assert!(answered, "no call answered after the broker restart");
    assert!(bus.reconnects() >= 1, "the bus reconnected");
    assert_eq!(bus.pending_calls(), 0);

    // The broker drops every client connection (as after a network blip): the bus reconnects again.
    let before = bus.reconnects();
    let broker = tokio::task::spawn_blocking(move || {
        broker.ctl(&["close_all_connections", "test: dropped connection"]);
        broker
    })
    .await
    .expect("close connections");
    bus.cast("work", b"after drop".to_vec())
        .await
        .expect("cast after a dropped connection");
    assert_eq!(
        recv(&mut rx, "after a dropped connection").await,
        b"after drop"
    );
    assert!(
        bus.reconnects() > before,
        "the bus reconnected after the dropped connection"
    );

    bus.close().await;
    worker.abort();
    responder.abort();
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .expect("stop broker");
}
