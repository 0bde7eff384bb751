use async_trait::async_trait;
use std::time::Duration;

use crate::error::Result;

/// Messaging between the control-plane roles and the guests.
///
/// Topics are queues with competing consumers: `taskmanager`, `trove-conductor`, `guestagent.<instance_id>`.
///
/// # Contract
/// - `cast` returns once the message is durably accepted; a message cast before anyone subscribes is kept and
///   delivered to the first subscriber.
/// - Each message is delivered to exactly one subscriber of its topic at a time. A delivery that is dropped or
///   nacked with `requeue` without [`Delivery::ack`] is delivered again (to the same or another subscriber).
/// - `call` sends a message with a reply address and waits for the first reply until `timeout`; on expiry it
///   answers [`crate::Error::Timeout`] and leaves no consumer behind. A late reply is discarded.
/// - Bodies are opaque bytes; encoding and signing are the typed RPC layer's job ([`crate::rpc`]).
#[async_trait]
pub trait MessageBus: Send + Sync + 'static {
    /// Fire and forget (durably).
    async fn cast(&self, topic: &str, body: Vec<u8>) -> Result<()>;
    /// Request and wait for a reply.
    async fn call(&self, topic: &str, body: Vec<u8>, timeout: Duration) -> Result<Vec<u8>>;
    /// Starts consuming a topic.
    async fn subscribe(&self, topic: &str) -> Result<Box<dyn Subscription>>;
    /// Removes a topic and every message in it (instance deleted).
    async fn delete_topic(&self, topic: &str) -> Result<()>;
}

/// A stream of deliveries from one topic.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `Ok(None)` once the subscription is closed.
    async fn next(&mut self) -> Result<Option<Delivery>>;
}

/// Sends the reply of a `call`.
#[async_trait]
pub trait ReplyHandle: Send {
    /// Sends the reply.
    async fn reply(self: Box<Self>, body: Vec<u8>) -> Result<()>;
}

/// Settles a delivery.
#[async_trait]
pub trait AckHandle: Send {
    /// The message was handled: remove it.
    async fn ack(self: Box<Self>) -> Result<()>;
    /// The message was not handled: requeue it, or drop it (dead-letter where supported).
    async fn nack(self: Box<Self>, requeue: bool) -> Result<()>;
}

/// One received message.
pub struct Delivery {
    /// Message body.
    pub body: Vec<u8>,
    /// Whether the broker says this is a redelivery.
    pub redelivered: bool,
    reply: Option<Box<dyn ReplyHandle>>,
    ack: Option<Box<dyn AckHandle>>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("len", &self.body.len())
            .field("redelivered", &self.redelivered)
            .field("is_call", &self.reply.is_some())
            .finish()
    }
}

impl Delivery {
    /// Builds a delivery (bus implementations).
    pub fn new(
        body: Vec<u8>,
        redelivered: bool,
        reply: Option<Box<dyn ReplyHandle>>,
        ack: Box<dyn AckHandle>,
    ) -> Delivery {
        Delivery {
            body,
            redelivered,
            reply,
            ack: Some(ack),
        }
    }

    /// Whether the sender waits for a reply.
    pub fn expects_reply(&self) -> bool {
        self.reply.is_some()
    }

    /// Replies to a call (no-op for casts).
    pub async fn reply(&mut self, body: Vec<u8>) -> Result<()> {
        match self.reply.take() {
            Some(r) => r.reply(body).await,
            None => Ok(()),
        }
    }

    /// Acknowledges the delivery.
    pub async fn ack(mut self) -> Result<()> {
        match self.ack.take() {
            Some(a) => a.ack().await,
            None => Ok(()),
        }
    }

    /// Rejects the delivery.
    pub async fn nack(mut self, requeue: bool) -> Result<()> {
        match self.ack.take() {
            Some(a) => a.nack(requeue).await,
            None => Ok(()),
        }
    }

    /// Takes the ack handle out (for implementations that settle on drop).
    pub fn take_ack(&mut self) -> Option<Box<dyn AckHandle>> {
        self.ack.take()
    }
}
