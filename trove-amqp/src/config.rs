//! Configuration of [`crate::AmqpBus`].

use serde::{Deserialize, Serialize};
use std::time::Duration;
use trove_core::model::Secret;

/// Which kind of queue backs a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Replicated quorum queues (RabbitMQ 3.8+): the broker counts deliveries, so a message redelivered more than
    /// [`AmqpConfig::max_redeliveries`] times goes to the dead-letter queue.
    #[default]
    Quorum,
    /// Classic durable queues: only a nack without requeue dead-letters a message.
    Classic,
}

/// Where the broker is and how the bus uses it.
///
/// Every field has a default (a local broker with `guest`/`guest`); the password never appears in `Debug`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AmqpConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
    /// Virtual host.
    pub vhost: String,
    /// Topic exchange every topic is bound to. The dead-letter exchange and queue are named after it
    /// (`<exchange>.dlx`, `<exchange>.dead-letter`).
    pub exchange: String,
    /// Prefix of every queue name and routing key; lets several deployments (or test runs) share a broker.
    pub queue_prefix: String,
    /// Queue kind for topics.
    pub queue_type: QueueType,
    /// Deliveries a subscriber may hold unacknowledged.
    pub prefetch: u16,
    /// Deliveries of one message before it is dead-lettered as poison ([`QueueType::Quorum`] only).
    pub max_redeliveries: u32,
    /// AMQP heartbeat in seconds (how fast a dead connection is noticed).
    pub heartbeat_secs: u16,
    /// Timeout of one connection attempt in milliseconds.
    pub connect_timeout_ms: u64,
    /// First reconnect delay in milliseconds; doubles after each failed attempt.
    pub reconnect_initial_ms: u64,
    /// Longest reconnect delay in milliseconds.
    pub reconnect_max_ms: u64,
    /// How long `cast` keeps trying (across reconnects) before it fails, in milliseconds.
    pub publish_timeout_ms: u64,
    /// Whether the bus declares the exchanges and the topics' queues it uses. A restricted user (a guest with
    /// credentials of its own, see [`crate::access`]) has no configure permission: it runs with `false` and uses
    /// what the control plane declared for it.
    pub declare_topology: bool,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            host: "127.0.0.1".into(),
            port: 5672,
            username: "guest".into(),
            password: Secret::new("guest"),
            vhost: "/".into(),
            exchange: "trove".into(),
            queue_prefix: String::new(),
            queue_type: QueueType::Quorum,
            prefetch: 32,
            max_redeliveries: 5,
            heartbeat_secs: 10,
            connect_timeout_ms: 5_000,
            reconnect_initial_ms: 100,
            reconnect_max_ms: 5_000,
            publish_timeout_ms: 30_000,
            declare_topology: true,
        }
    }
}

impl AmqpConfig {
    pub(crate) fn reconnect_initial(&self) -> Duration {
        Duration::from_millis(self.reconnect_initial_ms.max(1))
    }
    pub(crate) fn reconnect_max(&self) -> Duration {
        Duration::from_millis(self.reconnect_max_ms.max(self.reconnect_initial_ms).max(1))
    }
    pub(crate) fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }
    pub(crate) fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.exchange)
    }
    /// Name of the queue that receives dead-lettered (poison) messages.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letter", self.exchange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hidden_and_defaults_deserialise() {
        let c: AmqpConfig = serde_json::from_str(r#"{"password":"s3cret","port":5673}"#).unwrap();
        assert_eq!(c.port, 5673);
        assert_eq!(c.username, "guest");
        assert_eq!(c.password.expose(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
