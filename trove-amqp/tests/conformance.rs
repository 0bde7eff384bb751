//! The core's MessageBus conformance suite against RabbitMQ on 127.0.0.1:5672 (guest/guest).

mod common;

use std::sync::Arc;
use std::time::Duration;
use trove_core::ports::MessageBus;

/// Drains the dead-letter queue, waiting (dead-lettering is asynchronous) until `want` messages came or 10 s
/// passed; then checks that no more arrive.
async fn dead_letters(bus: &trove_amqp::AmqpBus, want: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.len() < want && std::time::Instant::now() < deadline {
        got.extend(bus.drain_dead_letters().await.expect("drain"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    got.extend(bus.drain_dead_letters().await.expect("drain"));
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_bus_passes_the_message_bus_suite() {
    let bus = common::shared_bus().await;
    let probe = bus.clone();
    trove_core::testing::bus::run_all(Arc::new(bus.clone()), &move || probe.pending_calls()).await;
    assert_eq!(
        dead_letters(&bus, 1).await.len(),
        1,
        "the one nack(false) was dead-lettered"
    );
    bus.delete_infrastructure().await.expect("cleanup");
    bus.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_dead_lettered_after_too_many_deliveries() {
    let mut cfg = common::unique_config(5672);
    cfg.max_redeliveries = 2;
    let bus = trove_amqp::AmqpBus::connect(cfg)
        .await
        .expect("RabbitMQ must run on 127.0.0.1:5672");
    let topic = "poison";
    bus.cast(topic, b"kills workers".to_vec())
        .await
        .expect("cast");
    let mut sub = bus.subscribe(topic).await.expect("subscribe");
    let mut deliveries = 0;
    // A worker that never manages to handle the message: each delivery is dropped unsettled.
    while let Ok(Ok(Some(d))) = tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
        deliveries += 1;
        drop(d);
        assert!(deliveries < 20, "the poison message keeps looping");
    }
    assert!(
        deliveries >= 2,
        "redelivered before giving up ({deliveries})"
    );
    let dead = dead_letters(&bus, 1).await;
    assert_eq!(
        dead,
        vec![b"kills workers".to_vec()],
        "the poison message went to the dead-letter queue"
    );
    drop(sub);
    bus.delete_topic(topic).await.expect("delete_topic");
    bus.delete_infrastructure().await.expect("cleanup");
    bus.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_call_leaves_no_queue_or_consumer_on_the_broker() {
    use trove_amqp::lapin::options::QueueDeclareOptions;
    use trove_amqp::lapin::types::FieldTable;

    let bus = common::shared_bus().await;
    // Declare the topic, then leave it without consumers.
    drop(bus.subscribe("nobody-home").await.expect("subscribe"));
    let raw = trove_amqp::raw_connection(bus.config())
        .await
        .expect("raw connection");
    let ch = raw.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let queue = bus.queue_name("nobody-home");
    let counts = || async {
        let q = ch
            .queue_declare(&queue, passive, FieldTable::default())
            .await
            .expect("passive declare");
        (q.message_count(), q.consumer_count())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while counts().await.1 != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped subscription's consumer stays"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        let e = bus
            .call("nobody-home", b"?".to_vec(), Duration::from_millis(300))
            .await
            .expect_err("timeout");
        assert!(matches!(e, trove_core::Error::Timeout { .. }), "{e:?}");
    }
    assert_eq!(bus.pending_calls(), 0, "no call waits any more");
    // On the broker: the 5 requests wait in the topic's queue and nobody consumes it; no per-call reply queue
    // exists to leak (replies use direct reply-to).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (messages, consumers) = counts().await;
        assert_eq!(
            consumers, 0,
            "a timed-out call leaves no consumer on the topic"
        );
        if messages == 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected 5 queued requests, found {messages}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = raw.close(200, "done").await;
    bus.delete_topic("nobody-home").await.expect("delete_topic");
    bus.delete_infrastructure().await.expect("cleanup");
    bus.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_to_a_caller_that_went_away_is_harmless() {
    let cfg = common::unique_config(5672);
    let server = trove_amqp::AmqpBus::connect(cfg.clone())
        .await
        .expect("RabbitMQ must run on 127.0.0.1:5672");
    let caller = trove_amqp::AmqpBus::connect(cfg).await.expect("connect");
    let e = caller
        .call("svc", b"q1".to_vec(), Duration::from_millis(200))
        .await
        .expect_err("nobody answers yet");
    assert!(matches!(e, trove_core::Error::Timeout { .. }), "{e:?}");
    caller.close().await;
    // The server answers a request whose caller (and its connection) is gone.
    let mut sub = server.subscribe("svc").await.expect("subscribe");
    let mut d = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("request")
        .expect("ok")
        .expect("some");
    d.reply(b"nobody listens".to_vec())
        .await
        .expect("replying to a vanished caller is not an error");
    d.ack().await.expect("ack");
    // The server's connection is unharmed: a fresh call on it is answered.
    let responder = tokio::spawn(async move {
        let mut d = sub.next().await.expect("next").expect("some");
        d.reply(b"a1".to_vec()).await.expect("reply");
        d.ack().await.expect("ack");
    });
    assert_eq!(
        server
            .call("svc", b"q2".to_vec(), Duration::from_secs(5))
            .await
            .expect("call"),
        b"a1"
    );
    responder.await.expect("responder");
    assert_eq!(server.reconnects(), 0, "no reconnect was needed");
    server.delete_topic("svc").await.expect("delete_topic");
    server.delete_infrastructure().await.expect("cleanup");
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_deadline_never_cuts_its_request_half_sent() {
    let bus = common::shared_bus().await;
    // 1 ms is far less than creating the topic's quorum queue takes: the deadline passes while the request is
    // still being sent. The call times out, and the request is on the broker all the same.
    let e = bus
        .call("fresh-topic", b"q".to_vec(), Duration::from_millis(1))
        .await
        .expect_err("nobody answers");
    assert!(matches!(e, trove_core::Error::Timeout { .. }), "{e:?}");
    assert_eq!(bus.pending_calls(), 0, "no call waits any more");
    let mut sub = bus.subscribe("fresh-topic").await.expect("subscribe");
    let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the timed-out call's request is in the queue")
        .expect("ok")
        .expect("some");
    assert_eq!(d.body, b"q");
    assert!(d.expects_reply());
    d.ack().await.expect("ack");
    drop(sub);
    bus.delete_topic("fresh-topic").await.expect("delete_topic");
    bus.delete_infrastructure().await.expect("cleanup");
    bus.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_right_after_dropping_its_subscription_keeps_the_connection() {
    let bus = common::shared_bus().await;
    for i in 0..20 {
        let topic = format!("drop-then-delete-{i}");
        let sub = bus.subscribe(&topic).await.expect("subscribe");
        drop(sub);
        bus.delete_topic(&topic).await.expect("delete_topic");
    }
    assert_eq!(
        bus.reconnects(),
        0,
        "the connection survived every subscription drop racing its topic's deletion"
    );
    bus.delete_infrastructure().await.expect("cleanup");
    bus.close().await;
}
