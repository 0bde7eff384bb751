//! A [`Clock`] that only moves when a test moves it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::ports::Clock;

/// A manual clock for tests: `now` starts at a given time and moves only through [`ManualClock::advance`] or
/// [`ManualClock::set`]; `sleep` returns once the clock has been moved past the sleeper's deadline.
///
/// Clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<watch::Sender<DateTime<Utc>>>,
    sleepers: Arc<AtomicUsize>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::starting_at(Utc::now())
    }
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn starting_at(start: DateTime<Utc>) -> ManualClock {
        let (tx, _) = watch::channel(start);
        ManualClock {
            now: Arc::new(tx),
            sleepers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A clock reading the current wall-clock time.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `d` and wakes every sleeper whose deadline has passed.
    pub fn advance(&self, d: Duration) {
        let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        self.now
            .send_modify(|t| *t = t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC));
    }

    /// Sets the clock to `t`; a time before the current one is ignored (the clock never goes backwards).
    pub fn set(&self, t: DateTime<Utc>) {
        self.now.send_if_modified(|cur| {
            if t > *cur {
                *cur = t;
                true
            } else {
                false
            }
        });
    }

    /// Tasks currently inside [`Clock::sleep`].
    pub fn sleepers(&self) -> usize {
        self.sleepers.load(Ordering::SeqCst)
    }

    /// Waits (yielding to other tasks, in real time) until at least `n` tasks sleep on this clock, so a test can
    /// advance the clock knowing the sleepers are registered. Gives up after `limit`; returns whether they came.
    pub async fn wait_for_sleepers(&self, n: usize, limit: Duration) -> bool {
        let start = std::time::Instant::now();
        while self.sleepers() < n {
            if start.elapsed() > limit {
                return false;
            }
            tokio::task::yield_now().await;
            if self.sleepers() < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        true
    }
}

/// Keeps a [`ManualClock`] moving until dropped (see [`ManualClock::fast_forward`]).
#[derive(Debug)]
pub struct FastForward(tokio::task::JoinHandle<()>);

impl Drop for FastForward {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ManualClock {
    /// Moves the clock forward by `step` every `every` of real time until the returned guard is dropped: time
    /// passes on its own (and fast, when `step` > `every`) for tests whose workers wait on the clock, while the
    /// test can still jump it with [`ManualClock::advance`].
    pub fn fast_forward(&self, step: Duration, every: Duration) -> FastForward {
        let clock = self.clone();
        FastForward(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                clock.advance(step);
            }
        }))
    }
}

struct SleepGuard<'a>(&'a AtomicUsize);
impl Drop for SleepGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    async fn sleep(&self, d: Duration) {
        let mut rx = self.now.subscribe();
        let deadline = {
            let now = *rx.borrow_and_update();
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        };
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let _guard = SleepGuard(&self.sleepers);
        loop {
            if *rx.borrow_and_update() >= deadline {
                return;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as any clone of this clock, which includes `self`.
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn advance_wakes_only_expired_sleepers() {
        let start = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap();
        let clock = ManualClock::starting_at(start);
        assert_eq!(clock.now(), start);
        let c1 = clock.clone();
        let short = tokio::spawn(async move { c1.sleep(Duration::from_secs(10)).await });
        let c2 = clock.clone();
        let long = tokio::spawn(async move { c2.sleep(Duration::from_secs(60)).await });
        assert!(clock.wait_for_sleepers(2, Duration::from_secs(5)).await);
        clock.advance(Duration::from_secs(10));
        short.await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!long.is_finished());
        assert_eq!(clock.sleepers(), 1);
        clock.advance(Duration::from_secs(50));
        long.await.unwrap();
        assert_eq!(clock.now(), start + chrono::Duration::seconds(60));
        clock.set(start);
        assert_eq!(
            clock.now(),
            start + chrono::Duration::seconds(60),
            "never backwards"
        );
    }

    #[tokio::test]
    async fn zero_sleep_returns_immediately() {
        ManualClock::new().sleep(Duration::ZERO).await;
    }
}
