//! MessageBus over RabbitMQ (to be written).
