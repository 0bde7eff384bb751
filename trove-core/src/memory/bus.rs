//! In-process [`MessageBus`]: one FIFO queue per topic with competing consumers.

use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

use crate::error::{Error, Result};
use crate::ports::{AckHandle, Delivery, MessageBus, ReplyHandle, Subscription};

const BACKEND: &str = "memory-bus";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; the queues stay consistent
    // because every critical section is a single push/pop.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the reply of a call goes. Shared so that a requeued call can still be answered.
type ReplySlot = Arc<Mutex<Option<oneshot::Sender<Vec<u8>>>>>;

#[derive(Clone)]
struct Message {
    body: Vec<u8>,
    redelivered: bool,
    /// How many times the message was handed back (dropped or nacked with requeue).
    returns: u32,
    reply: Option<ReplySlot>,
}

#[derive(Default)]
struct TopicState {
    queue: Mutex<VecDeque<Message>>,
    notify: Notify,
    closed: AtomicBool,
    consumers: AtomicUsize,
}

impl TopicState {
    fn push_back(&self, m: Message) {
        lock(&self.queue).push_back(m);
        self.notify.notify_one();
    }
    fn push_front(&self, m: Message) {
        lock(&self.queue).push_front(m);
        self.notify.notify_one();
    }
}

#[derive(Default)]
struct Faults {
    fail_casts: usize,
    drop_casts: usize,
    /// Topic-specific losses: (topic, how many more).
    drop_on: Vec<(String, usize)>,
}

#[derive(Default)]
struct Inner {
    topics: Mutex<HashMap<String, Arc<TopicState>>>,
    dead: Mutex<Vec<(String, Vec<u8>)>>,
    faults: Mutex<Faults>,
    pending_calls: AtomicUsize,
    max_returns: Option<u32>,
}

impl Inner {
    fn topic(&self, name: &str) -> Arc<TopicState> {
        lock(&self.topics)
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Applies fault injection to one outgoing message: `Err` to fail it, `Ok(false)` to drop it silently.
    fn admit(&self, topic: &str) -> Result<bool> {
        let mut f = lock(&self.faults);
        if let Some((_, n)) = f.drop_on.iter_mut().find(|(t, n)| t == topic && *n > 0) {
            *n -= 1;
            return Ok(false);
        }
        if f.fail_casts > 0 {
            f.fail_casts -= 1;
            return Err(Error::backend(BACKEND, "injected failure", true));
        }
        if f.drop_casts > 0 {
            f.drop_casts -= 1;
            return Ok(false);
        }
        Ok(true)
    }
}

/// The in-memory message bus.
///
/// Cheap to clone; clones share the same queues. Messages cast to a topic nobody consumes yet are kept until a
/// subscriber comes. A [`Delivery`] dropped without being settled is put back at the head of its queue and marked
/// redelivered. A nack without requeue moves the message to a dead-letter list ([`MemoryBus::dead_letters`]).
///
/// Fault injection for tests: [`MemoryBus::fail_next`] makes the next sends fail with a transient backend error,
/// [`MemoryBus::drop_next`] makes them vanish while reporting success (a lost message).
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus")
            .field("topics", &lock(&self.inner.topics).len())
            .finish()
    }
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> MemoryBus {
        MemoryBus::default()
    }

    /// A bus that treats a message handed back more than `limit` times (dropped unsettled or nacked with requeue)
    /// as poison and moves it to the dead letters, as the RabbitMQ bus does with quorum queues.
    pub fn with_max_redeliveries(limit: u32) -> MemoryBus {
        MemoryBus {
            inner: Arc::new(Inner {
                max_returns: Some(limit),
                ..Inner::default()
            }),
        }
    }

    /// Makes the next `n` casts or calls fail with a transient [`Error::Backend`].
    pub fn fail_next(&self, n: usize) {
        lock(&self.inner.faults).fail_casts = n;
    }

    /// Makes the next `n` casts or calls be lost: the sender sees success, nobody receives them.
    pub fn drop_next(&self, n: usize) {
        lock(&self.inner.faults).drop_casts = n;
    }

    /// Makes the next `n` casts or calls to `topic` be lost (a message that died with a crashed process).
    pub fn drop_next_on(&self, topic: &str, n: usize) {
        lock(&self.inner.faults)
            .drop_on
            .push((topic.to_string(), n));
    }

    /// Messages waiting in a topic (not counting deliveries in flight).
    pub fn queued(&self, topic: &str) -> usize {
        lock(&self.inner.topics)
            .get(topic)
            .map(|t| lock(&t.queue).len())
            .unwrap_or(0)
    }

    /// Live subscriptions of a topic.
    pub fn consumers(&self, topic: &str) -> usize {
        lock(&self.inner.topics)
            .get(topic)
            .map(|t| t.consumers.load(Ordering::SeqCst))
            .unwrap_or(0)
    }

    /// Calls currently waiting for a reply (0 once every call has returned: no reply consumer leaks).
    pub fn pending_calls(&self) -> usize {
        self.inner.pending_calls.load(Ordering::SeqCst)
    }

    /// Messages rejected without requeue, with their topic, oldest first.
    pub fn dead_letters(&self) -> Vec<(String, Vec<u8>)> {
        lock(&self.inner.dead).clone()
    }

    /// Names of the topics that currently exist.
    pub fn topics(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.inner.topics).keys().cloned().collect();
        v.sort();
        v
    }
}

struct PendingGuard<'a>(&'a AtomicUsize);
impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl MessageBus for MemoryBus {
    async fn cast(&self, topic: &str, body: Vec<u8>) -> Result<()> {
        if self.inner.admit(topic)? {
            self.inner.topic(topic).push_back(Message {
                body,
                redelivered: false,
                returns: 0,
                reply: None,
            });
        }
        Ok(())
    }

    async fn call(&self, topic: &str, body: Vec<u8>, timeout: Duration) -> Result<Vec<u8>> {
        let (tx, rx) = oneshot::channel();
        self.inner.pending_calls.fetch_add(1, Ordering::SeqCst);
        let _guard = PendingGuard(&self.inner.pending_calls);
        // A lost request keeps its sender here, so the wait below runs into the deadline like a real one.
        let mut _lost = None;
        if self.inner.admit(topic)? {
            let slot: ReplySlot = Arc::new(Mutex::new(Some(tx)));
            self.inner.topic(topic).push_back(Message {
                body,
                redelivered: false,
                returns: 0,
                reply: Some(slot),
            });
        } else {
            _lost = Some(tx);
        }
        let wait = async {
            match rx.await {
                Ok(reply) => reply,
                // Handled without a reply (or the topic was deleted): nothing will come; wait out the deadline
                // as a remote caller would.
                Err(_) => futures::future::pending().await,
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("reply from '{topic}' after {timeout:?}"),
            })
    }

    async fn subscribe(&self, topic: &str) -> Result<Box<dyn Subscription>> {
        let state = self.inner.topic(topic);
        state.consumers.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(MemorySubscription {
            topic: topic.to_string(),
            state,
            inner: self.inner.clone(),
        }))
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        let removed = lock(&self.inner.topics).remove(topic);
        if let Some(state) = removed {
            state.closed.store(true, Ordering::SeqCst);
            lock(&state.queue).clear();
            state.notify.notify_waiters();
        }
        Ok(())
    }
}

struct MemorySubscription {
    topic: String,
    state: Arc<TopicState>,
    inner: Arc<Inner>,
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        self.state.consumers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Option<Delivery>> {
        loop {
            let notified = self.state.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state.closed.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let (msg, more) = {
                let mut q = lock(&self.state.queue);
                let msg = q.pop_front();
                (msg, !q.is_empty())
            };
            if more {
                // Pass the wake-up on so another idle consumer picks up the rest.
                self.state.notify.notify_one();
            }
            if let Some(msg) = msg {
                let reply = msg
                    .reply
                    .clone()
                    .map(|slot| Box::new(MemoryReply { slot }) as Box<dyn ReplyHandle>);
                let ack = MemoryAck {
                    topic: self.topic.clone(),
                    state: self.state.clone(),
                    inner: self.inner.clone(),
                    msg: Some(msg.clone()),
                };
                return Ok(Some(Delivery::new(
                    msg.body,
                    msg.redelivered,
                    reply,
                    Box::new(ack),
                )));
            }
            notified.await;
        }
    }
}

struct MemoryReply {
    slot: ReplySlot,
}

#[async_trait]
impl ReplyHandle for MemoryReply {
    async fn reply(self: Box<Self>, body: Vec<u8>) -> Result<()> {
        if let Some(tx) = lock(&self.slot).take() {
            // The caller may have given up already: a late reply is discarded.
            let _ = tx.send(body);
        }
        Ok(())
    }
}

struct MemoryAck {
    topic: String,
    state: Arc<TopicState>,
    inner: Arc<Inner>,
    msg: Option<Message>,
}

impl MemoryAck {
    fn requeue(&mut self) {
        if let Some(mut m) = self.msg.take() {
            if self.state.closed.load(Ordering::SeqCst) {
                return;
            }
            m.returns = m.returns.saturating_add(1);
            if self
                .inner
                .max_returns
                .is_some_and(|limit| m.returns > limit)
            {
                lock(&self.inner.dead).push((self.topic.clone(), m.body));
                return;
            }
            m.redelivered = true;
            self.state.push_front(m);
        }
    }
}

impl Drop for MemoryAck {
    fn drop(&mut self) {
        self.requeue();
    }
}

#[async_trait]
impl AckHandle for MemoryAck {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.msg = None;
        Ok(())
    }
    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<()> {
        if requeue {
            self.requeue();
        } else if let Some(m) = self.msg.take() {
            lock(&self.inner.dead).push((self.topic.clone(), m.body));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cast_before_subscribe_is_kept() {
        let bus = MemoryBus::new();
        bus.cast("t", b"a".to_vec()).await.unwrap();
        let mut s = bus.subscribe("t").await.unwrap();
        let d = s.next().await.unwrap().unwrap();
        assert_eq!(d.body, b"a");
        assert!(!d.redelivered);
        d.ack().await.unwrap();
        assert_eq!(bus.queued("t"), 0);
    }

    #[tokio::test]
    async fn dropped_delivery_is_redelivered() {
        let bus = MemoryBus::new();
        bus.cast("t", b"a".to_vec()).await.unwrap();
        let mut s = bus.subscribe("t").await.unwrap();
        drop(s.next().await.unwrap().unwrap());
        let d = s.next().await.unwrap().unwrap();
        assert_eq!(d.body, b"a");
        assert!(d.redelivered);
        d.ack().await.unwrap();
        assert_eq!(bus.queued("t"), 0);
    }

    #[tokio::test]
    async fn nack_without_requeue_dead_letters() {
        let bus = MemoryBus::new();
        bus.cast("t", b"poison".to_vec()).await.unwrap();
        let mut s = bus.subscribe("t").await.unwrap();
        s.next().await.unwrap().unwrap().nack(false).await.unwrap();
        assert_eq!(bus.queued("t"), 0);
        assert_eq!(
            bus.dead_letters(),
            vec![("t".to_string(), b"poison".to_vec())]
        );
    }

    #[tokio::test]
    async fn call_gets_reply_and_times_out_cleanly() {
        let bus = MemoryBus::new();
        let mut s = bus.subscribe("svc").await.unwrap();
        let server = tokio::spawn(async move {
            let mut d = s.next().await.unwrap().unwrap();
            assert!(d.expects_reply());
            let mut body = d.body.clone();
            body.extend_from_slice(b"!");
            d.reply(body).await.unwrap();
            d.ack().await.unwrap();
        });
        let r = bus
            .call("svc", b"hi".to_vec(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r, b"hi!");
        server.await.unwrap();
        let e = bus
            .call("nobody", b"x".to_vec(), Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert_eq!(bus.pending_calls(), 0);
    }

    #[tokio::test]
    async fn delete_topic_closes_subscriptions_and_drops_messages() {
        let bus = MemoryBus::new();
        bus.cast("g", b"1".to_vec()).await.unwrap();
        let mut s = bus.subscribe("g").await.unwrap();
        let waiter = tokio::spawn(async move {
            s.next().await.unwrap().unwrap().ack().await.unwrap();
            s.next().await.unwrap().is_none()
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        bus.delete_topic("g").await.unwrap();
        assert!(waiter.await.unwrap());
        assert_eq!(bus.queued("g"), 0);
        assert!(bus.topics().is_empty());
    }

    #[tokio::test]
    async fn poison_is_dead_lettered_after_the_redelivery_limit() {
        let bus = MemoryBus::with_max_redeliveries(2);
        bus.cast("t", b"poison".to_vec()).await.unwrap();
        let mut s = bus.subscribe("t").await.unwrap();
        for _ in 0..3 {
            drop(s.next().await.unwrap().unwrap());
        }
        assert_eq!(bus.queued("t"), 0);
        assert_eq!(
            bus.dead_letters(),
            vec![("t".to_string(), b"poison".to_vec())]
        );
        // Without a limit a message keeps coming back.
        let unlimited = MemoryBus::new();
        unlimited.cast("t", vec![1]).await.unwrap();
        let mut s = unlimited.subscribe("t").await.unwrap();
        for _ in 0..10 {
            drop(s.next().await.unwrap().unwrap());
        }
        assert_eq!(unlimited.queued("t"), 1);
    }

    #[tokio::test]
    async fn fault_injection() {
        let bus = MemoryBus::new();
        bus.fail_next(1);
        assert!(bus.cast("t", vec![1]).await.unwrap_err().is_transient());
        bus.drop_next(1);
        bus.cast("t", vec![2]).await.unwrap();
        assert_eq!(bus.queued("t"), 0);
        bus.cast("t", vec![3]).await.unwrap();
        assert_eq!(bus.queued("t"), 1);
    }
}
