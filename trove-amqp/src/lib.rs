//! [`MessageBus`] on RabbitMQ (AMQP 0-9-1, through lapin on the tokio runtime).
//!
//! # Topology
//! - One durable **topic exchange** ([`AmqpConfig::exchange`]). Every topic is a durable queue named
//!   `<queue_prefix><topic>`, bound to the exchange with that same name as routing key.
//! - `cast` declares the topic's queue before publishing (so a message cast before anyone subscribes is kept),
//!   publishes persistently and waits for the broker's **publisher confirm**.
//! - `call` declares the topic's queue like `cast`, publishes the request with `reply_to` set to RabbitMQ's
//!   direct reply-to pseudo queue and a fresh correlation id, and waits for the matching reply until its
//!   deadline. One reply consumer per connection serves every call; a call that times out removes its entry, so
//!   nothing is left behind and a late reply is dropped.
//! - **What a call's timeout bounds.** It bounds waiting for a connection (nothing has been sent then) and
//!   waiting for the reply, never a request half sent: once sending has begun, the topic's queue is declared and
//!   the request written to the connection (within [`AmqpConfig::publish_timeout_ms`]) even past the deadline;
//!   creating a topic's quorum queue can take the broker most of a second under load. So a call that ends in
//!   [`Error::Timeout`] has handed its request to the broker (unless the connection broke meanwhile), and the
//!   request stays in the topic's queue, where a subscriber may still handle it (its reply is then dropped).
//!   While the broker is slow a call can return somewhat after its timeout. A request to a queue deleted behind
//!   the bus's back is dropped by the broker (requests are not confirmed): that call times out.
//! - Subscriptions consume with **manual acks** on a channel of their own (prefetch [`AmqpConfig::prefetch`]).
//!   A delivery dropped without being settled is nacked with requeue; a subscriber that dies leaves its
//!   unacknowledged messages to the others. A dropped subscription closes its channel (which cancels its
//!   consumer on the broker) and never sends a `basic.cancel` of its own.
//! - **Poison messages** go to a dead-letter exchange (`<exchange>.dlx`) and its queue (`<exchange>.dead-letter`)
//!   when they are nacked without requeue, or, with quorum queues (the default), when they have been delivered
//!   more than [`AmqpConfig::max_redeliveries`] times.
//! - **Reconnects**: the connection is re-established with exponential backoff whenever it is found closed; casts
//!   retry until [`AmqpConfig::publish_timeout_ms`], subscriptions re-consume and resume by themselves.
//!
//! ```no_run
//! # async fn demo() -> trove_core::Result<()> {
//! use trove_amqp::{AmqpBus, AmqpConfig};
//! use trove_core::ports::MessageBus;
//! let bus = AmqpBus::connect(AmqpConfig::default()).await?;
//! bus.cast("trove-conductor", b"hello".to_vec()).await?;
//! # Ok(()) }
//! ```

pub mod access;
mod config;

pub use config::{AmqpConfig, QueueType};
/// The AMQP client this crate uses, for callers that need the broker directly (benchmarks, tools).
pub use lapin;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use trove_core::error::{Error, Result};
use trove_core::ports::{AckHandle, Delivery, MessageBus, ReplyHandle, Subscription};
use uuid::Uuid;

const BACKEND: &str = "amqp";
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Maps a client error. Refusals the broker will repeat (access refused, missing resource, inequivalent
/// declaration) are permanent; everything else (connection and channel trouble) is worth retrying.
fn backend(what: &str, e: lapin::Error) -> Error {
    let permanent = matches!(&e, lapin::Error::ProtocolError(p) if matches!(
        p.kind(),
        AMQPErrorKind::Soft(
            AMQPSoftError::ACCESSREFUSED | AMQPSoftError::NOTFOUND | AMQPSoftError::PRECONDITIONFAILED
        )
    ));
    Error::backend(BACKEND, format!("{what}: {e}"), !permanent)
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e, lapin::Error::ProtocolError(p) if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

/// Topic names become queue names and routing keys: keep them plain.
fn check_topic(topic: &str) -> Result<()> {
    if topic.is_empty()
        || topic.len() > 200
        || !topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
    {
        return Err(Error::bad_request(format!(
            "Invalid topic '{}': use 1 to 200 letters, digits, '.', '_', '-' or ':'.",
            topic.escape_default()
        )));
    }
    Ok(())
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

/// One live connection and the channels shared by every operation on it.
struct Conn {
    generation: u64,
    connection: Connection,
    /// Confirm-mode channel for casts.
    publish: Channel,
    /// Channel for call requests; it also consumes the direct reply-to pseudo queue.
    rpc: Channel,
    /// Channel for replies (no confirms; a reply to a caller that has gone is dropped by the broker).
    reply: Channel,
    /// Topics declared on this connection.
    declared: Mutex<HashSet<String>>,
}

impl Conn {
    fn is_open(&self) -> bool {
        self.connection.status().connected()
            && self.publish.status().connected()
            && self.rpc.status().connected()
            && self.reply.status().connected()
    }
}

struct Shared {
    cfg: AmqpConfig,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    pending: Pending,
    generation: AtomicU64,
    closed: AtomicBool,
    reconnects: AtomicU64,
}

/// Opens a plain lapin connection on the tokio runtime with the settings of `cfg` (benchmarks and tools that
/// need the broker without the bus).
pub async fn raw_connection(cfg: &AmqpConfig) -> std::result::Result<Connection, lapin::Error> {
    Connection::connect_uri(uri(cfg), connection_properties()).await
}

fn connection_properties() -> ConnectionProperties {
    ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
        .with_connection_name(LongString::from(format!("trove-rs {}", std::process::id())))
}

fn uri(cfg: &AmqpConfig) -> AMQPUri {
    AMQPUri {
        scheme: AMQPScheme::AMQP,
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: cfg.username.clone(),
                password: cfg.password.expose().to_string(),
            },
            host: cfg.host.clone(),
            port: cfg.port,
        },
        vhost: cfg.vhost.clone(),
        query: AMQPQueryString {
            heartbeat: Some(cfg.heartbeat_secs),
            connection_timeout: Some(cfg.connect_timeout_ms),
            ..AMQPQueryString::default()
        },
    }
}

impl Shared {
    fn queue(&self, topic: &str) -> String {
        format!("{}{topic}", self.cfg.queue_prefix)
    }

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(LongString::from(self.cfg.dead_letter_exchange())),
        );
        if self.cfg.queue_type == QueueType::Quorum {
            args.insert(
                ShortString::from("x-queue-type"),
                AMQPValue::LongString(LongString::from("quorum")),
            );
            args.insert(
                ShortString::from("x-delivery-limit"),
                AMQPValue::LongLongInt(i64::from(self.cfg.max_redeliveries)),
            );
        }
        args
    }

    /// Declares the topic exchange, the dead-letter exchange and the dead-letter queue.
    async fn declare_exchanges(&self, publish: &Channel) -> std::result::Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        publish
            .exchange_declare(
                &self.cfg.exchange,
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        let dlx = self.cfg.dead_letter_exchange();
        publish
            .exchange_declare(&dlx, ExchangeKind::Fanout, durable, FieldTable::default())
            .await?;
        let dlq = self.cfg.dead_letter_queue();
        let qopts = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        publish
            .queue_declare(&dlq, qopts, FieldTable::default())
            .await?;
        publish
            .queue_bind(
                &dlq,
                &dlx,
                "",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Opens a connection, declares the exchanges and the dead-letter queue (unless told not to), and starts the
    /// reply consumer.
    async fn open(&self) -> std::result::Result<Conn, lapin::Error> {
        let connection = raw_connection(&self.cfg).await?;
        let publish = connection.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        if self.cfg.declare_topology {
            self.declare_exchanges(&publish).await?;
        }
        let rpc = connection.create_channel().await?;
        let replies = rpc
            .basic_consume(
                DIRECT_REPLY_TO,
                &format!("trove-replies-{}", Uuid::new_v4().simple()),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        tokio::spawn(route_replies(replies, self.pending.clone()));
        let reply = connection.create_channel().await?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Conn {
            generation,
            connection,
            publish,
            rpc,
            reply,
            declared: Mutex::new(HashSet::new()),
        })
    }

    /// The live connection, reconnecting with exponential backoff while it is down. Gives up only when the bus is
    /// closed; callers bound the wait with their own deadline.
    async fn conn(&self) -> Result<Arc<Conn>> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.is_open() {
                return Ok(c.clone());
            }
            tracing::warn!(
                generation = c.generation,
                "amqp connection lost; reconnecting"
            );
            // Let the old connection go; anything still using it fails and comes back here.
            let old = c.clone();
            tokio::spawn(async move {
                let _ = old.connection.close(200, "reconnecting").await;
            });
            *slot = None;
        }
        let mut delay = self.cfg.reconnect_initial();
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::backend(BACKEND, "the bus is closed", false));
            }
            match self.open().await {
                Ok(c) => {
                    let c = Arc::new(c);
                    if c.generation > 1 {
                        self.reconnects.fetch_add(1, Ordering::SeqCst);
                        tracing::info!(generation = c.generation, "amqp connection re-established");
                    }
                    *slot = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => {
                    tracing::warn!(
                        host = %self.cfg.host,
                        port = self.cfg.port,
                        error = %e,
                        retry_in = ?delay,
                        "cannot connect to the amqp broker"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.cfg.reconnect_max());
                }
            }
        }
    }

    /// Declares a topic's queue and binding on `channel` (idempotent on the broker).
    async fn declare_topic(
        &self,
        channel: &Channel,
        topic: &str,
    ) -> std::result::Result<(), lapin::Error> {
        if !self.cfg.declare_topology {
            // Restricted users (guests) may not declare: the control plane created the queue for them.
            return Ok(());
        }
        let q = self.queue(topic);
        let opts = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel.queue_declare(&q, opts, self.queue_args()).await?;
        channel
            .queue_bind(
                &q,
                &self.cfg.exchange,
                &q,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    async fn ensure_topic(&self, conn: &Conn, topic: &str) -> Result<()> {
        if lock(&conn.declared).contains(topic) {
            return Ok(());
        }
        self.declare_topic(&conn.publish, topic)
            .await
            .map_err(|e| backend("declaring a topic", e))?;
        lock(&conn.declared).insert(topic.to_string());
        Ok(())
    }

    /// Runs `attempt` on the live connection until it succeeds or fails for good, retrying transient failures
    /// (a lost connection, a refused message) with backoff for up to the publish timeout. `what` names the
    /// operation in the timeout error.
    async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.cfg.publish_timeout();
        let mut delay = self.cfg.reconnect_initial();
        loop {
            let one = async { attempt(self.conn().await?).await };
            let left = deadline.saturating_duration_since(Instant::now());
            let err = match tokio::time::timeout(left, one).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if !e.is_transient() => return Err(e),
                Ok(Err(e)) => e,
                Err(_) => Error::Timeout {
                    what: what.to_string(),
                },
            };
            if Instant::now() + delay >= deadline {
                return Err(err);
            }
            tracing::warn!(what, error = %err, "amqp operation failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.cfg.reconnect_max());
        }
    }

    /// One attempt at a confirmed, persistent publish.
    async fn try_cast(&self, conn: &Conn, topic: &str, body: &[u8]) -> Result<()> {
        self.ensure_topic(conn, topic).await?;
        let q = self.queue(topic);
        let props = BasicProperties::default().with_delivery_mode(2);
        let confirm = conn
            .publish
            .basic_publish(
                &self.cfg.exchange,
                &q,
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                props,
            )
            .await
            .map_err(|e| backend("publishing", e))?
            .await
            .map_err(|e| backend("waiting for the publisher confirm", e))?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                // Unroutable: the queue was deleted behind our back. Declare it again on the next attempt.
                lock(&conn.declared).remove(topic);
                Err(Error::backend(
                    BACKEND,
                    format!("message to '{topic}' was returned as unroutable"),
                    true,
                ))
            }
            Confirmation::Nack(None) => Err(Error::backend(
                BACKEND,
                "the broker refused the message",
                true,
            )),
            Confirmation::NotRequested => Err(Error::backend(
                BACKEND,
                "publisher confirms are not enabled",
                false,
            )),
        }
    }

    /// Opens a consuming channel for a topic.
    async fn consume(&self, topic: &str) -> Result<(u64, Channel, Consumer)> {
        let conn = self.conn().await?;
        let channel = conn
            .connection
            .create_channel()
            .await
            .map_err(|e| backend("opening a channel", e))?;
        channel
            .basic_qos(self.cfg.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| backend("setting the prefetch", e))?;
        self.declare_topic(&channel, topic)
            .await
            .map_err(|e| backend("declaring a topic", e))?;
        lock(&conn.declared).insert(topic.to_string());
        let consumer = channel
            .basic_consume(
                &self.queue(topic),
                &format!("trove-{}", Uuid::new_v4().simple()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| backend("consuming", e))?;
        Ok((conn.generation, channel, consumer))
    }

    /// Whether a topic's queue exists (used to tell a deleted topic from a lost connection).
    async fn topic_exists(&self, topic: &str) -> Result<bool> {
        let conn = self.conn().await?;
        let channel = conn
            .connection
            .create_channel()
            .await
            .map_err(|e| backend("opening a channel", e))?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let r = channel
            .queue_declare(&self.queue(topic), passive, FieldTable::default())
            .await;
        match r {
            Ok(_) => {
                let _ = channel.close(200, "done").await;
                Ok(true)
            }
            // A failed passive declare closes the channel on the broker side.
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(backend("checking a topic", e)),
        }
    }
}

/// Routes replies from the direct reply-to consumer to the calls waiting for them.
async fn route_replies(mut replies: Consumer, pending: Pending) {
    while let Some(d) = replies.next().await {
        let Ok(d) = d else { break };
        let Some(id) = d
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.to_string())
        else {
            continue;
        };
        let waiter = lock(&pending).remove(&id);
        match waiter {
            // The caller may have given up between the lookup and the send: then the reply is dropped.
            Some(tx) => {
                let _ = tx.send(d.data);
            }
            None => tracing::debug!("discarding a reply nobody waits for (late or duplicate)"),
        }
    }
}

/// The RabbitMQ message bus. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct AmqpBus {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AmqpBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBus")
            .field("config", &self.shared.cfg)
            .finish()
    }
}

struct PendingGuard {
    pending: Pending,
    id: String,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        lock(&self.pending).remove(&self.id);
    }
}

impl AmqpBus {
    /// Connects to the broker (one attempt, bounded by the connect timeout) and declares the exchanges.
    /// Later connection losses are repaired by reconnecting.
    pub async fn connect(cfg: AmqpConfig) -> Result<AmqpBus> {
        let bus = AmqpBus::lazy(cfg);
        let first = bus.shared.open().await.map_err(|e| {
            Error::backend(
                BACKEND,
                format!(
                    "cannot connect to {}:{}: {e}",
                    bus.shared.cfg.host, bus.shared.cfg.port
                ),
                true,
            )
        })?;
        *bus.shared.conn.lock().await = Some(Arc::new(first));
        Ok(bus)
    }

    /// A bus that connects on first use (and keeps retrying until the broker is there).
    pub fn lazy(cfg: AmqpConfig) -> AmqpBus {
        AmqpBus {
            shared: Arc::new(Shared {
                cfg,
                conn: tokio::sync::Mutex::new(None),
                pending: Arc::new(Mutex::new(HashMap::new())),
                generation: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                reconnects: AtomicU64::new(0),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AmqpConfig {
        &self.shared.cfg
    }

    /// Calls waiting for a reply right now (0 when idle: timed-out calls leave nothing behind).
    pub fn pending_calls(&self) -> usize {
        lock(&self.shared.pending).len()
    }

    /// How many times the connection was re-established.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::SeqCst)
    }

    /// The broker queue name of a topic.
    pub fn queue_name(&self, topic: &str) -> String {
        self.shared.queue(topic)
    }

    /// Deletes the exchange, the dead-letter exchange and the dead-letter queue of this configuration (test
    /// cleanup; production deployments keep them).
    pub async fn delete_infrastructure(&self) -> Result<()> {
        let conn = self.shared.conn().await?;
        let ch = conn
            .connection
            .create_channel()
            .await
            .map_err(|e| backend("opening a channel", e))?;
        let cfg = &self.shared.cfg;
        ch.queue_delete(&cfg.dead_letter_queue(), QueueDeleteOptions::default())
            .await
            .map_err(|e| backend("deleting the dead-letter queue", e))?;
        for x in [cfg.dead_letter_exchange(), cfg.exchange.clone()] {
            ch.exchange_delete(&x, lapin::options::ExchangeDeleteOptions::default())
                .await
                .map_err(|e| backend("deleting an exchange", e))?;
        }
        let _ = ch.close(200, "done").await;
        Ok(())
    }

    /// Takes every message out of the dead-letter queue (oldest first).
    pub async fn drain_dead_letters(&self) -> Result<Vec<Vec<u8>>> {
        let conn = self.shared.conn().await?;
        let ch = conn
            .connection
            .create_channel()
            .await
            .map_err(|e| backend("opening a channel", e))?;
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(
                &self.shared.cfg.dead_letter_queue(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .map_err(|e| backend("reading the dead-letter queue", e))?
        {
            out.push(m.delivery.data);
        }
        let _ = ch.close(200, "done").await;
        Ok(out)
    }

    /// Closes the connection; later operations fail.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if let Some(c) = self.shared.conn.lock().await.take() {
            let _ = c.connection.close(200, "closing").await;
        }
    }
}

#[async_trait]
impl MessageBus for AmqpBus {
    async fn cast(&self, topic: &str, body: Vec<u8>) -> Result<()> {
        check_topic(topic)?;
        let shared = &self.shared;
        let body = &body;
        shared
            .retrying(&format!("publishing to '{topic}'"), |conn| async move {
                shared.try_cast(&conn, topic, body).await
            })
            .await
    }

    async fn call(&self, topic: &str, body: Vec<u8>, timeout: Duration) -> Result<Vec<u8>> {
        check_topic(topic)?;
        let shared = &self.shared;
        let deadline = tokio::time::Instant::now() + timeout;
        let expired = || Error::Timeout {
            what: format!("reply from '{topic}' after {timeout:?}"),
        };
        let id = Uuid::new_v4().simple().to_string();
        let (tx, rx) = oneshot::channel();
        lock(&shared.pending).insert(id.clone(), tx);
        let _guard = PendingGuard {
            pending: shared.pending.clone(),
            id: id.clone(),
        };
        // Without a connection nothing is sent: waiting for one counts against the deadline.
        let conn = tokio::time::timeout_at(deadline, shared.conn())
            .await
            .map_err(|_| expired())??;
        // A request being sent is sent to the end (queue declared, request written to the connection), even past
        // the deadline: cutting it there would leave it sent or not depending on how busy the broker is.
        let send = async {
            shared.ensure_topic(&conn, topic).await?;
            let props = BasicProperties::default()
                .with_reply_to(ShortString::from(DIRECT_REPLY_TO))
                .with_correlation_id(ShortString::from(id));
            conn.rpc
                .basic_publish(
                    &shared.cfg.exchange,
                    &shared.queue(topic),
                    BasicPublishOptions::default(),
                    &body,
                    props,
                )
                .await
                .map_err(|e| backend("publishing a request", e))
                .map(drop)
        };
        tokio::time::timeout(shared.cfg.publish_timeout(), send)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    what: format!("sending a request to '{topic}'"),
                })
            })?;
        let reply = async {
            match rx.await {
                Ok(reply) => reply,
                // Nothing can send the reply any more; wait out the deadline.
                Err(_) => futures::future::pending().await,
            }
        };
        tokio::time::timeout_at(deadline, reply)
            .await
            .map_err(|_| expired())
    }

    async fn subscribe(&self, topic: &str) -> Result<Box<dyn Subscription>> {
        check_topic(topic)?;
        let first = self
            .bounded("subscribing", self.shared.consume(topic))
            .await?;
        Ok(Box::new(AmqpSubscription {
            shared: self.shared.clone(),
            topic: topic.to_string(),
            current: Some(first),
        }))
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        check_topic(topic)?;
        // Deleting a queue is idempotent: a transient failure (a lost connection) is retried like a cast.
        self.shared
            .retrying(&format!("deleting topic '{topic}'"), |conn| async move {
                self.delete_queue(&conn, topic).await
            })
            .await
    }
}

impl AmqpBus {
    /// Runs `fut` within the publish timeout (the broker may be down and the connection retrying).
    async fn bounded<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let limit = self.shared.cfg.publish_timeout();
        tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
            Err(Error::Timeout {
                what: format!("{what} (broker unreachable for {limit:?})"),
            })
        })
    }

    async fn delete_queue(&self, conn: &Conn, topic: &str) -> Result<()> {
        lock(&conn.declared).remove(topic);
        let ch = conn
            .connection
            .create_channel()
            .await
            .map_err(|e| backend("opening a channel", e))?;
        match ch
            .queue_delete(&self.shared.queue(topic), QueueDeleteOptions::default())
            .await
        {
            Ok(_) => {
                let _ = ch.close(200, "done").await;
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(backend("deleting a topic", e)),
        }
    }
}

struct AmqpSubscription {
    shared: Arc<Shared>,
    topic: String,
    current: Option<(u64, Channel, Consumer)>,
}

impl Drop for AmqpSubscription {
    fn drop(&mut self) {
        if let Some((_, channel, consumer)) = self.current.take() {
            // Closing the channel cancels the consumer on the broker and hands every unacknowledged delivery
            // back. The lapin consumer is dropped only after the close: dropping a live one makes lapin send a
            // basic.cancel of its own, which races the close (lapin fails the whole connection when the channel
            // turns out to be closing) and a deletion of the queue (RabbitMQ answers a cancel that meets its
            // quorum queue's deletion with two cancel-oks, and lapin closes the connection on the second).
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = channel.close(200, "unsubscribed").await;
                    drop(consumer);
                });
            }
        }
    }
}

#[async_trait]
impl Subscription for AmqpSubscription {
    async fn next(&mut self) -> Result<Option<Delivery>> {
        let mut delay = self.shared.cfg.reconnect_initial();
        loop {
            if self.shared.closed.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let Some((generation, channel, consumer)) = self.current.as_mut() else {
                match self.shared.consume(&self.topic).await {
                    Ok(c) => {
                        tracing::info!(topic = %self.topic, "subscription resumed");
                        self.current = Some(c);
                        delay = self.shared.cfg.reconnect_initial();
                    }
                    Err(e) => {
                        tracing::warn!(topic = %self.topic, error = %e, retry_in = ?delay, "cannot resume subscription");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(self.shared.cfg.reconnect_max());
                    }
                }
                continue;
            };
            match consumer.next().await {
                Some(Ok(d)) => {
                    let reply = match (d.properties.reply_to(), d.properties.correlation_id()) {
                        (Some(to), Some(id)) => Some(Box::new(AmqpReply {
                            shared: self.shared.clone(),
                            reply_to: to.to_string(),
                            correlation_id: id.to_string(),
                        })
                            as Box<dyn ReplyHandle>),
                        _ => None,
                    };
                    let ack = AmqpAck {
                        acker: Some(d.acker),
                    };
                    return Ok(Some(Delivery::new(
                        d.data,
                        d.redelivered,
                        reply,
                        Box::new(ack),
                    )));
                }
                other => {
                    let generation = *generation;
                    let channel_open = channel.status().connected();
                    if let Some(Err(e)) = &other {
                        tracing::warn!(topic = %self.topic, generation, error = %e, "consumer failed");
                    }
                    self.current = None;
                    // The broker cancels consumers of a deleted queue while the connection stays up: that ends
                    // the subscription. Anything else is a lost connection or channel: resume.
                    if other.is_none() && channel_open {
                        match self.shared.topic_exists(&self.topic).await {
                            Ok(false) => return Ok(None),
                            Ok(true) => {}
                            Err(e) => {
                                tracing::warn!(topic = %self.topic, error = %e, "cannot check topic")
                            }
                        }
                    }
                }
            }
        }
    }
}

struct AmqpReply {
    shared: Arc<Shared>,
    reply_to: String,
    correlation_id: String,
}

#[async_trait]
impl ReplyHandle for AmqpReply {
    async fn reply(self: Box<Self>, body: Vec<u8>) -> Result<()> {
        let conn = self.shared.conn().await?;
        let props = BasicProperties::default()
            .with_correlation_id(ShortString::from(self.correlation_id.clone()));
        conn.reply
            .basic_publish(
                "",
                &self.reply_to,
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await
            .map_err(|e| backend("publishing a reply", e))?;
        Ok(())
    }
}

struct AmqpAck {
    acker: Option<lapin::acker::Acker>,
}

impl Drop for AmqpAck {
    fn drop(&mut self) {
        if let Some(acker) = self.acker.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    // If the channel is gone the broker requeues the message by itself.
                    let _ = acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            multiple: false,
                        })
                        .await;
                });
            }
        }
    }
}

#[async_trait]
impl AckHandle for AmqpAck {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        match self.acker.take() {
            Some(a) => a
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| backend("acknowledging", e)),
            None => Ok(()),
        }
    }
    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<()> {
        match self.acker.take() {
            Some(a) => a
                .nack(BasicNackOptions {
                    requeue,
                    multiple: false,
                })
                .await
                .map_err(|e| backend("rejecting", e)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_checked() {
        assert!(check_topic("guestagent.0f0e2d3c-1111-2222-3333-444455556666").is_ok());
        assert!(check_topic("trove-conductor").is_ok());
        for bad in ["", "a#", "a*b", "a b", "x/y"] {
            assert_eq!(check_topic(bad).unwrap_err().fault().status, 400, "{bad:?}");
        }
    }
}
