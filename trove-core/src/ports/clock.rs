use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Time, so that tests can simulate it.
///
/// # Contract
/// - `now` never goes backwards between two calls on the same clock.
/// - `sleep(d)` returns once `now` has advanced by at least `d`.
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    /// Current UTC time.
    fn now(&self) -> DateTime<Utc>;
    /// Waits for `d`.
    async fn sleep(&self, d: Duration);
}

/// The wall clock and tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }
}
