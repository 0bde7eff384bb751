use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

/// Time, so that tests can simulate it: a calendar reading ([`Clock::now`], for timestamps that are stored or
/// shown) and a monotonic one ([`Clock::instant`], for measuring intervals and waiting), both moved by the same
/// clock. Code that waits or measures goes through these, never through the runtime's timer directly, so a
/// simulated clock drives it.
///
/// # Contract
/// - `now` never goes backwards between two calls on the same clock.
/// - `instant` never goes backwards between two calls on the same clock.
/// - `sleep_until(t)` returns once `instant` has reached `t` (at once when it already has), never earlier.
/// - `sleep(d)` returns once `now` and `instant` have advanced by at least `d`.
/// - Dropping a sleep that has not returned cancels it.
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    /// Current UTC time.
    fn now(&self) -> DateTime<Utc>;

    /// The monotonic reading: only its differences mean something (an instant of one clock is meaningless to
    /// another).
    fn instant(&self) -> Instant;

    /// Waits until [`Clock::instant`] reads `deadline` or later.
    async fn sleep_until(&self, deadline: Instant);

    /// Waits for `d`.
    async fn sleep(&self, d: Duration) {
        match self.instant().checked_add(d) {
            Some(deadline) => self.sleep_until(deadline).await,
            // Beyond what an instant can hold: that time never comes.
            None => std::future::pending().await,
        }
    }
}

/// The wall clock and tokio's timer. `instant` and the sleeps follow tokio's time, so a test that pauses it
/// (`start_paused`) drives them; `now` stays the host's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn instant(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
    async fn sleep_until(&self, deadline: Instant) {
        tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await
    }
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }
}
