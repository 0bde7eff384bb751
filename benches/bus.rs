//! Message bus benchmark: RPC round trip (p50/p99) and cast throughput on the in-memory bus and on RabbitMQ,
//! next to the broker's own publish/consume rate through plain lapin for the same message size, in one run.
//!
//! Run: `cargo bench --bench bus --features amqp` (RabbitMQ on 127.0.0.1:5672, guest/guest).
//! Environment: `BENCH_MSG_SIZE` (bytes, default 512), `BENCH_CALLS` (default 2000), `BENCH_MESSAGES`
//! (default 20000).

use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use trove_amqp::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use trove_amqp::lapin::types::FieldTable;
use trove_amqp::lapin::BasicProperties;
use trove_amqp::{AmqpBus, AmqpConfig, QueueType};
use trove_core::memory::MemoryBus;
use trove_core::ports::DynBus;
use uuid::Uuid;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sequential calls against an echo responder: returns sorted latencies.
async fn rpc_round_trips(bus: DynBus, topic: &str, size: usize, calls: usize) -> Vec<Duration> {
    let mut sub = bus.subscribe(topic).await.expect("subscribe");
    let responder = tokio::spawn(async move {
        while let Ok(Some(mut d)) = sub.next().await {
            let body = std::mem::take(&mut d.body);
            if d.reply(body).await.is_err() {
                break;
            }
            if d.ack().await.is_err() {
                break;
            }
        }
    });
    let body = vec![7u8; size];
    for _ in 0..calls.min(200) {
        bus.call(topic, body.clone(), Duration::from_secs(10))
            .await
            .expect("warm-up call");
    }
    let mut lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let r = bus
            .call(topic, body.clone(), Duration::from_secs(10))
            .await
            .expect("call");
        lat.push(t.elapsed());
        assert_eq!(r.len(), size);
    }
    responder.abort();
    lat.sort();
    lat
}

/// Casts `n` messages with up to `in_flight` outstanding, while one subscriber acks them; messages per second
/// end to end (until the last one is consumed).
async fn cast_throughput(bus: DynBus, topic: &str, size: usize, n: usize, in_flight: usize) -> f64 {
    let mut sub = bus.subscribe(topic).await.expect("subscribe");
    let consumer = tokio::spawn(async move {
        for _ in 0..n {
            let d = sub.next().await.expect("next").expect("delivery");
            d.ack().await.expect("ack");
        }
    });
    let body = vec![7u8; size];
    let start = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(in_flight, |_| {
            let bus = bus.clone();
            let body = body.clone();
            let topic = topic.to_string();
            async move { bus.cast(&topic, body).await.expect("cast") }
        })
        .await;
    consumer.await.expect("consumer");
    n as f64 / start.elapsed().as_secs_f64()
}

/// Plain lapin on a classic durable queue: confirmed persistent publishes (pipelined), then consumption with
/// manual acks. Returns (publish msg/s, consume msg/s, direct reply-to round trip latencies).
async fn raw_lapin(
    cfg: &AmqpConfig,
    size: usize,
    n: usize,
    calls: usize,
) -> (f64, f64, Vec<Duration>) {
    let conn = trove_amqp::raw_connection(cfg)
        .await
        .expect("raw connection");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let q = format!("bench-raw-{}", Uuid::new_v4().simple());
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(&q, durable, FieldTable::default())
        .await
        .expect("declare");
    let body = vec![7u8; size];
    let props = BasicProperties::default().with_delivery_mode(2);
    let start = Instant::now();
    let mut confirms = Vec::with_capacity(n);
    for _ in 0..n {
        confirms.push(
            ch.basic_publish("", &q, BasicPublishOptions::default(), &body, props.clone())
                .await
                .expect("publish"),
        );
    }
    for c in confirms {
        c.await.expect("confirm");
    }
    let publish_rate = n as f64 / start.elapsed().as_secs_f64();

    let cch = conn.create_channel().await.expect("channel");
    cch.basic_qos(256, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = cch
        .basic_consume(
            &q,
            "bench",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let start = Instant::now();
    for _ in 0..n {
        let d = consumer.next().await.expect("delivery").expect("ok");
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let consume_rate = n as f64 / start.elapsed().as_secs_f64();
    ch.queue_delete(&q, QueueDeleteOptions::default())
        .await
        .expect("delete");

    // Raw RPC: request to a queue, echo by a consumer, reply through direct reply-to.
    let rq = format!("bench-raw-rpc-{}", Uuid::new_v4().simple());
    ch.queue_declare(&rq, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare");
    let server_ch = conn.create_channel().await.expect("channel");
    let mut server = server_ch
        .basic_consume(
            &rq,
            "bench-server",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let reply_ch = conn.create_channel().await.expect("channel");
    let echo = tokio::spawn(async move {
        while let Some(Ok(d)) = server.next().await {
            let to = d.properties.reply_to().clone().expect("reply_to");
            let props = BasicProperties::default().with_correlation_id(
                d.properties
                    .correlation_id()
                    .clone()
                    .unwrap_or_else(|| "x".into()),
            );
            let _ = reply_ch
                .basic_publish(
                    "",
                    to.as_str(),
                    BasicPublishOptions::default(),
                    &d.data,
                    props,
                )
                .await;
            let _ = d.acker.ack(BasicAckOptions::default()).await;
        }
    });
    let client = conn.create_channel().await.expect("channel");
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut replies = client
        .basic_consume(
            "amq.rabbitmq.reply-to",
            "bench-client",
            no_ack,
            FieldTable::default(),
        )
        .await
        .expect("consume replies");
    let mut lat = Vec::with_capacity(calls);
    for i in 0..calls + calls.min(200) {
        let t = Instant::now();
        let props = BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id(i.to_string().into());
        client
            .basic_publish("", &rq, BasicPublishOptions::default(), &body, props)
            .await
            .expect("request");
        replies.next().await.expect("reply").expect("ok");
        if i >= calls.min(200) {
            lat.push(t.elapsed());
        }
    }
    echo.abort();
    ch.queue_delete(&rq, QueueDeleteOptions::default())
        .await
        .expect("delete");
    let _ = conn.close(200, "bench done").await;
    lat.sort();
    (publish_rate, consume_rate, lat)
}

fn report_latency(name: &str, lat: &[Duration]) {
    println!(
        "{name:<44} p50 {:>8.3} ms   p99 {:>8.3} ms   ({} calls)",
        ms(percentile(lat, 0.50)),
        ms(percentile(lat, 0.99)),
        lat.len()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing special: run a tiny smoke version then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let size = env_usize("BENCH_MSG_SIZE", 512);
    let calls = if smoke {
        20
    } else {
        env_usize("BENCH_CALLS", 2000)
    };
    let messages = if smoke {
        100
    } else {
        env_usize("BENCH_MESSAGES", 20_000)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        println!("message bus benchmark: {size}-byte messages, {calls} calls, {messages} messages");

        let mem: DynBus = Arc::new(MemoryBus::new());
        report_latency(
            "memory bus: call round trip",
            &rpc_round_trips(mem.clone(), "rpc", size, calls).await,
        );
        let rate = cast_throughput(mem, "casts", size, messages, 64).await;
        println!(
            "{:<44} {rate:>12.0} msg/s",
            "memory bus: cast -> consume -> ack"
        );

        let run = Uuid::new_v4().simple().to_string();
        let cfg = AmqpConfig {
            exchange: format!("trove-bench-{run}"),
            queue_prefix: format!("b{}.", &run[..12]),
            ..AmqpConfig::default()
        };
        let bus = match AmqpBus::connect(cfg.clone()).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!(
                    "RabbitMQ on {}:{} is needed for the AMQP part: {e}",
                    cfg.host, cfg.port
                );
                std::process::exit(1);
            }
        };
        let dynbus: DynBus = Arc::new(bus.clone());
        report_latency(
            "amqp bus: call round trip",
            &rpc_round_trips(dynbus.clone(), "rpc", size, calls).await,
        );
        let rate = cast_throughput(dynbus.clone(), "casts", size, messages, 64).await;
        println!(
            "{:<44} {rate:>12.0} msg/s",
            "amqp bus: confirmed cast -> consume -> ack"
        );
        // The same with classic queues (no per-message replication or delivery counting).
        let classic_cfg = AmqpConfig {
            queue_prefix: format!("c{}.", &run[..12]),
            queue_type: QueueType::Classic,
            ..cfg.clone()
        };
        let classic = AmqpBus::connect(classic_cfg).await.expect("connect");
        let classic_dyn: DynBus = Arc::new(classic.clone());
        report_latency(
            "amqp bus (classic queues): call round trip",
            &rpc_round_trips(classic_dyn.clone(), "rpc", size, calls).await,
        );
        let rate = cast_throughput(classic_dyn.clone(), "casts", size, messages, 64).await;
        println!(
            "{:<44} {rate:>12.0} msg/s",
            "amqp bus (classic): confirmed cast -> consume"
        );
        for t in ["rpc", "casts"] {
            classic_dyn.delete_topic(t).await.expect("delete topic");
        }
        classic.close().await;

        let (publish, consume, raw_lat) = raw_lapin(&cfg, size, messages, calls).await;
        report_latency("raw lapin: direct reply-to round trip", &raw_lat);
        println!(
            "{:<44} {publish:>12.0} msg/s",
            "raw lapin: confirmed persistent publish"
        );
        println!("{:<44} {consume:>12.0} msg/s", "raw lapin: consume + ack");
        for t in ["rpc", "casts"] {
            dynbus.delete_topic(t).await.expect("delete topic");
        }
        bus.delete_infrastructure().await.expect("cleanup");
        bus.close().await;
    });
}
