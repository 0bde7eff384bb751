//! Conformance suite for [`crate::ports::MessageBus`].
//!
//! Every check uses fresh, unique topic names (a random suffix) and deletes its topics at the end, so suites
//! running at the same time against one broker do not see each other's messages.
//!
//! ```no_run
//! # async fn demo() {
//! use std::sync::Arc;
//! use trove_core::memory::MemoryBus;
//! let bus = MemoryBus::new();
//! let probe = bus.clone();
//! trove_core::testing::bus::run_all(Arc::new(bus), &move || probe.pending_calls()).await;
//! # }
//! ```

use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

use crate::error::Error;
use crate::ports::{Delivery, DynBus, Subscription};

/// How long a check waits for something that should arrive.
pub const ARRIVAL: Duration = Duration::from_secs(10);
/// How long a check waits to be sure something does not arrive.
pub const QUIET: Duration = Duration::from_millis(300);

/// A topic name unique to this run.
pub fn unique_topic(what: &str) -> String {
    format!("conformance.{what}.{}", Uuid::new_v4().simple())
}

/// The next delivery, failing the check if none comes within [`ARRIVAL`].
pub async fn expect_delivery(sub: &mut Box<dyn Subscription>, what: &str) -> Delivery {
    match tokio::time::timeout(ARRIVAL, sub.next()).await {
        Ok(Ok(Some(d))) => d,
        Ok(Ok(None)) => panic!("{what}: subscription closed instead of delivering"),
        Ok(Err(e)) => panic!("{what}: subscription failed: {e}"),
        Err(_) => panic!("{what}: nothing delivered within {ARRIVAL:?}"),
    }
}

/// Fails the check if a delivery arrives within [`QUIET`].
pub async fn expect_nothing(sub: &mut Box<dyn Subscription>, what: &str) {
    match tokio::time::timeout(QUIET, sub.next()).await {
        Err(_) | Ok(Ok(None)) => {}
        Ok(Ok(Some(d))) => panic!("{what}: unexpected delivery of {} bytes", d.body.len()),
        Ok(Err(e)) => panic!("{what}: subscription failed: {e}"),
    }
}

async fn cleanup(bus: &DynBus, topics: &[&str]) {
    for t in topics {
        bus.delete_topic(t).await.expect("delete_topic");
    }
}

/// A message cast before anyone subscribes is kept and delivered to the first subscriber.
pub async fn cast_before_subscribe_is_kept(bus: &DynBus) {
    let t = unique_topic("early");
    bus.cast(&t, b"early bird".to_vec()).await.expect("cast");
    let mut sub = bus.subscribe(&t).await.expect("subscribe");
    let d = expect_delivery(&mut sub, "cast before subscribe").await;
    assert_eq!(d.body, b"early bird");
    assert!(!d.redelivered, "a first delivery is not a redelivery");
    assert!(!d.expects_reply(), "a cast expects no reply");
    d.ack().await.expect("ack");
    expect_nothing(&mut sub, "after ack").await;
    drop(sub);
    cleanup(bus, &[&t]).await;
}

/// Bodies are opaque bytes: binary and large bodies arrive unchanged.
pub async fn bodies_are_opaque_bytes(bus: &DynBus) {
    let t = unique_topic("bytes");
    let binary: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let large: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut sub = bus.subscribe(&t).await.expect("subscribe");
    bus.cast(&t, binary.clone()).await.expect("cast binary");
    bus.cast(&t, large.clone()).await.expect("cast large");
    bus.cast(&t, Vec::new()).await.expect("cast empty");
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = expect_delivery(&mut sub, "opaque bodies").await;
        got.push(d.body.clone());
        d.ack().await.expect("ack");
    }
    got.sort();
    let mut want = vec![binary, large, Vec::new()];
    want.sort();
    assert!(got == want, "bodies changed in transit");
    drop(sub);
    cleanup(bus, &[&t]).await;
}

/// Topics are isolated: a message goes only to subscribers of its own topic.
pub async fn topics_are_isolated(bus: &DynBus) {
    let a = unique_topic("iso-a");
    let b = unique_topic("iso-b");
    let mut sa = bus.subscribe(&a).await.expect("subscribe a");
    let mut sb = bus.subscribe(&b).await.expect("subscribe b");
    bus.cast(&a, b"for a".to_vec()).await.expect("cast");
    let d = expect_delivery(&mut sa, "own topic").await;
    assert_eq!(d.body, b"for a");
    d.ack().await.expect("ack");
    expect_nothing(&mut sb, "other topic").await;
    drop((sa, sb));
    cleanup(bus, &[&a, &b]).await;
}

/// Competing consumers: each message goes to exactly one of the subscribers of a topic, none is lost.
pub async fn competing_consumers_get_each_message_once(bus: &DynBus) {
    let t = unique_topic("compete");
    const N: usize = 60;
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(bus.subscribe(&t).await.expect("subscribe"));
    }
    for i in 0..N {
        bus.cast(&t, format!("m{i}").into_bytes())
            .await
            .expect("cast");
    }
    let total = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    let mut tasks = Vec::new();
    for mut sub in subs {
        let total = total.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            // Each consumer takes what comes until all messages were received (by anyone) or time is up; then
            // it lingers a little so that a duplicate would show.
            let mut linger = None;
            loop {
                let now = tokio::time::Instant::now();
                if now >= deadline || linger.is_some_and(|l| now >= l) {
                    break;
                }
                match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
                    Ok(Ok(Some(d))) => {
                        got.push(String::from_utf8_lossy(&d.body).into_owned());
                        d.ack().await.expect("ack");
                        total.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(Ok(None)) => break,
                    Ok(Err(e)) => panic!("competing consumer failed: {e}"),
                    Err(_) => {}
                }
                if linger.is_none() && total.load(std::sync::atomic::Ordering::SeqCst) >= N {
                    linger = Some(tokio::time::Instant::now() + QUIET);
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("consumer task"));
    }
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        all.len(),
        N,
        "every message delivered exactly once (got {} deliveries)",
        all.len()
    );
    assert_eq!(unique.len(), N, "no message delivered twice");
    cleanup(bus, &[&t]).await;
}

/// A delivery dropped without ack comes back, marked redelivered, to the same or another subscriber.
pub async fn dropped_delivery_is_redelivered(bus: &DynBus) {
    let t = unique_topic("drop");
    let mut first = bus.subscribe(&t).await.expect("subscribe");
    bus.cast(&t, b"again".to_vec()).await.expect("cast");
    let d = expect_delivery(&mut first, "first delivery").await;
    assert!(!d.redelivered);
    drop(d);
    // Another consumer may get it; a consumer that stops must not keep it either.
    drop(first);
    let mut second = bus.subscribe(&t).await.expect("subscribe");
    let d = expect_delivery(&mut second, "redelivery after drop").await;
    assert_eq!(d.body, b"again");
    assert!(d.redelivered, "a redelivery is marked redelivered");
    d.ack().await.expect("ack");
    expect_nothing(&mut second, "after ack of the redelivery").await;
    drop(second);
    cleanup(bus, &[&t]).await;
}

/// A subscriber that goes away with a delivery in hand leaves it for another subscriber.
pub async fn dead_consumer_leaves_message_for_another(bus: &DynBus) {
    let t = unique_topic("dead-worker");
    let mut worker = bus.subscribe(&t).await.expect("subscribe");
    let mut standby = bus.subscribe(&t).await.expect("subscribe");
    bus.cast(&t, b"job".to_vec()).await.expect("cast");
    // Whichever consumer got it "dies" (drops delivery and subscription).
    let (d, worker_won) = tokio::select! {
        r = worker.next() => (r, true),
        r = standby.next() => (r, false),
    };
    let (dead, mut survivor) = if worker_won {
        (worker, standby)
    } else {
        (standby, worker)
    };
    let d = d.expect("next").expect("a delivery");
    drop(d);
    drop(dead);
    let d = expect_delivery(&mut survivor, "job left by a dead worker").await;
    assert_eq!(d.body, b"job");
    assert!(d.redelivered);
    d.ack().await.expect("ack");
    drop(survivor);
    cleanup(bus, &[&t]).await;
}

/// `nack(requeue = true)` redelivers; `nack(requeue = false)` does not.
pub async fn nack_requeues_or_drops(bus: &DynBus) {
    let t = unique_topic("nack");
    let mut sub = bus.subscribe(&t).await.expect("subscribe");
    bus.cast(&t, b"retry me".to_vec()).await.expect("cast");
    let d = expect_delivery(&mut sub, "first").await;
    d.nack(true).await.expect("nack requeue");
    let d = expect_delivery(&mut sub, "requeued").await;
    assert_eq!(d.body, b"retry me");
    assert!(d.redelivered);
    d.nack(false).await.expect("nack drop");
    expect_nothing(&mut sub, "after nack without requeue").await;
    drop(sub);
    cleanup(bus, &[&t]).await;
}

/// `call` delivers a request that expects a reply and returns the reply.
pub async fn call_round_trip(bus: &DynBus) {
    let t = unique_topic("rpc");
    let mut sub = bus.subscribe(&t).await.expect("subscribe");
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let mut d = expect_delivery(&mut sub, "request").await;
            assert!(d.expects_reply(), "a call expects a reply");
            let mut answer = b"re:".to_vec();
            answer.extend_from_slice(&d.body);
            d.reply(answer).await.expect("reply");
            d.ack().await.expect("ack");
        }
    });
    let r = bus.call(&t, b"ping".to_vec(), ARRIVAL).await.expect("call");
    assert_eq!(r, b"re:ping");
    let r = bus
        .call(&t, b"pong".to_vec(), ARRIVAL)
        .await
        .expect("second call");
    assert_eq!(r, b"re:pong");
    server.await.expect("server task");
    cleanup(bus, &[&t]).await;
}

/// Concurrent calls each get their own reply.
pub async fn concurrent_calls_get_their_own_replies(bus: &DynBus) {
    let t = unique_topic("rpc-many");
    let mut sub = bus.subscribe(&t).await.expect("subscribe");
    const N: usize = 20;
    let server = tokio::spawn(async move {
        for _ in 0..N {
            let mut d = expect_delivery(&mut sub, "request").await;
            let body = d.body.clone();
            d.reply(body).await.expect("reply");
            d.ack().await.expect("ack");
        }
    });
    let calls = (0..N).map(|i| {
        let bus = bus.clone();
        let t = t.clone();
        async move {
            let r = bus
                .call(&t, format!("q{i}").into_bytes(), ARRIVAL)
                .await
                .expect("call");
            assert_eq!(
                r,
                format!("q{i}").into_bytes(),
                "reply of call {i} went elsewhere"
            );
        }
    });
    futures::future::join_all(calls).await;
    server.await.expect("server task");
    cleanup(bus, &[&t]).await;
}

/// A call nobody answers ends in [`Error::Timeout`] near its deadline and leaves no reply consumer behind
/// (`pending_calls` is the implementation's count of calls still waiting for a reply); a late reply is
/// discarded and does not reach a later call.
pub async fn call_timeout_leaves_no_consumer(
    bus: &DynBus,
    pending_calls: &(dyn Fn() -> usize + Sync),
) {
    let t = unique_topic("rpc-timeout");
    // The topic exists (nobody consumes it) so the request is sent well within the deadline even on a busy
    // machine; the check is about what happens after that.
    drop(bus.subscribe(&t).await.expect("subscribe"));
    let before = pending_calls();
    let start = std::time::Instant::now();
    let e = bus
        .call(&t, b"anyone?".to_vec(), Duration::from_millis(1000))
        .await
        .expect_err("must time out");
    let took = start.elapsed();
    assert!(
        matches!(e, Error::Timeout { .. }),
        "a call deadline is Error::Timeout, got {e:?}"
    );
    assert!(
        took >= Duration::from_millis(990),
        "returned before the deadline ({took:?})"
    );
    assert!(
        took < Duration::from_secs(5),
        "returned long after the deadline ({took:?})"
    );
    assert_eq!(
        pending_calls(),
        before,
        "a timed out call leaves no reply consumer"
    );

    // The request is still there; answering it now must not fail and must not leak into the next call.
    let mut sub = bus.subscribe(&t).await.expect("subscribe");
    let mut stale = expect_delivery(&mut sub, "stale request").await;
    assert_eq!(stale.body, b"anyone?");
    stale
        .reply(b"too late".to_vec())
        .await
        .expect("a late reply is discarded, not an error");
    stale.ack().await.expect("ack");
    let server = tokio::spawn(async move {
        let mut d = expect_delivery(&mut sub, "fresh request").await;
        d.reply(b"fresh".to_vec()).await.expect("reply");
        d.ack().await.expect("ack");
    });
    let r = bus
        .call(&t, b"again".to_vec(), ARRIVAL)
        .await
        .expect("call");
    assert_eq!(
        r, b"fresh",
        "a later call gets its own reply, never a stale one"
    );
    server.await.expect("server task");
    assert_eq!(
        pending_calls(),
        before,
        "a completed call leaves no reply consumer"
    );
    cleanup(bus, &[&t]).await;
}

/// `delete_topic` removes the topic's messages; deleting a missing topic succeeds.
pub async fn delete_topic_removes_messages(bus: &DynBus) {
    let t = unique_topic("delete");
    bus.cast(&t, b"doomed".to_vec()).await.expect("cast");
    bus.delete_topic(&t).await.expect("delete_topic");
    bus.delete_topic(&t).await.expect("delete_topic twice");
    bus.delete_topic(&unique_topic("never-existed"))
        .await
        .expect("delete a missing topic");
    let mut sub = bus.subscribe(&t).await.expect("subscribe after delete");
    expect_nothing(&mut sub, "deleted topic").await;
    bus.cast(&t, b"new life".to_vec())
        .await
        .expect("cast after delete");
    let d = expect_delivery(&mut sub, "topic used again").await;
    assert_eq!(d.body, b"new life");
    d.ack().await.expect("ack");
    drop(sub);
    cleanup(bus, &[&t]).await;
}

/// Runs every check of the MessageBus contract.
pub async fn run_all(bus: DynBus, pending_calls: &(dyn Fn() -> usize + Sync)) {
    cast_before_subscribe_is_kept(&bus).await;
    bodies_are_opaque_bytes(&bus).await;
    topics_are_isolated(&bus).await;
    competing_consumers_get_each_message_once(&bus).await;
    dropped_delivery_is_redelivered(&bus).await;
    dead_consumer_leaves_message_for_another(&bus).await;
    nack_requeues_or_drops(&bus).await;
    call_round_trip(&bus).await;
    concurrent_calls_get_their_own_replies(&bus).await;
    call_timeout_leaves_no_consumer(&bus, pending_calls).await;
    delete_topic_removes_messages(&bus).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBus;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_bus_passes_the_suite() {
        let bus = MemoryBus::new();
        let probe = bus.clone();
        run_all(Arc::new(bus.clone()), &move || probe.pending_calls()).await;
        assert!(
            bus.topics().is_empty(),
            "the suite cleans up: {:?}",
            bus.topics()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_bus_with_a_redelivery_limit_passes_the_suite() {
        let bus = MemoryBus::with_max_redeliveries(5);
        let probe = bus.clone();
        run_all(Arc::new(bus.clone()), &move || probe.pending_calls()).await;
        assert_eq!(
            bus.dead_letters().len(),
            1,
            "only the nack(false) was dead-lettered"
        );
    }
}
