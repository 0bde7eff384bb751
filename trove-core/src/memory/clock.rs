//! A [`Clock`] that only moves when a test moves it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::ports::Clock;

/// The furthest a manual clock goes from where it started (about a thousand years): both readings stay
/// representable.
const FURTHEST: Duration = Duration::from_secs(1000 * 365 * 24 * 3600);

/// A manual clock for tests: it starts at a given time and moves only through [`ManualClock::advance`],
/// [`ManualClock::advance_to`] or [`ManualClock::set`]; `now` and `instant` move together, and a sleep returns
/// once the clock has been moved to its deadline.
///
/// A test sees who waits on the clock ([`ManualClock::sleepers`], [`ManualClock::deadlines`],
/// [`ManualClock::wait_for_sleepers`], [`ManualClock::wait_for_deadline`]), so it can move the clock knowing what
/// the move wakes instead of sleeping and hoping. Clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `now` when the clock was made.
    start: DateTime<Utc>,
    /// `instant` when the clock was made.
    origin: Instant,
    /// How far the clock has moved since.
    offset: watch::Sender<Duration>,
    /// Pending sleeps: id → deadline.
    sleeping: Mutex<BTreeMap<u64, Instant>>,
    next_sleeper: AtomicU64,
    /// Bumped whenever a sleep starts, so tests can wait for one.
    sleeps_started: watch::Sender<u64>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::starting_at(Utc::now())
    }
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn starting_at(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            inner: Arc::new(Inner {
                start,
                origin: Instant::now(),
                offset: watch::channel(Duration::ZERO).0,
                sleeping: Mutex::new(BTreeMap::new()),
                next_sleeper: AtomicU64::new(0),
                sleeps_started: watch::channel(0).0,
            }),
        }
    }

    /// A clock reading the current wall-clock time.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `d` and wakes every sleeper whose deadline has passed.
    pub fn advance(&self, d: Duration) {
        self.inner
            .offset
            .send_modify(|o| *o = o.saturating_add(d).min(FURTHEST));
    }

    /// Moves the clock forward to the monotonic reading `t` (nothing happens when `t` has passed).
    pub fn advance_to(&self, t: Instant) {
        let ahead = t.saturating_duration_since(self.instant());
        if !ahead.is_zero() {
            self.advance(ahead);
        }
    }

    /// Sets the clock to `t`; a time before the current one is ignored (the clock never goes backwards).
    pub fn set(&self, t: DateTime<Utc>) {
        if let Ok(ahead) = (t - self.now()).to_std() {
            if !ahead.is_zero() {
                self.advance(ahead);
            }
        }
    }

    fn now_at(&self, offset: Duration) -> DateTime<Utc> {
        chrono::Duration::from_std(offset)
            .ok()
            .and_then(|o| self.inner.start.checked_add_signed(o))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn instant_at(&self, offset: Duration) -> Instant {
        // `FURTHEST` keeps this in range on every supported platform.
        self.inner.origin + offset
    }

    fn sleeping(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Instant>> {
        self.inner
            .sleeping
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Tasks currently inside a sleep on this clock.
    pub fn sleepers(&self) -> usize {
        self.sleeping().len()
    }

    /// The deadlines of the pending sleeps, earliest first (one entry per sleeper).
    pub fn deadlines(&self) -> Vec<Instant> {
        let mut d: Vec<Instant> = self.sleeping().values().copied().collect();
        d.sort();
        d
    }

    /// Waits (in real time, yielding to other tasks) until `ready` holds for the pending sleeps' deadlines
    /// (earliest first), re-checking whenever a sleep starts. Gives up after `limit`; answers whether it held.
    pub async fn wait_for_sleeps(
        &self,
        limit: Duration,
        ready: impl Fn(&[Instant]) -> bool,
    ) -> bool {
        let mut started = self.inner.sleeps_started.subscribe();
        let check = async {
            loop {
                started.borrow_and_update();
                if ready(&self.deadlines()) {
                    return;
                }
                // A sleeper that leaves (its sleep dropped) may make `ready` hold too: re-check now and then.
                let _ = tokio::time::timeout(Duration::from_millis(5), started.changed()).await;
            }
        };
        tokio::time::timeout(limit, check).await.is_ok()
    }

    /// Waits until at least `n` tasks sleep on this clock, so a test can advance the clock knowing the sleepers
    /// are registered. Gives up after `limit` (real time); answers whether they came.
    pub async fn wait_for_sleepers(&self, n: usize, limit: Duration) -> bool {
        self.wait_for_sleeps(limit, |d| d.len() >= n).await
    }

    /// Waits until a task sleeps until exactly `deadline` (a monotonic reading of this clock). Gives up after
    /// `limit` (real time); answers whether one did.
    pub async fn wait_for_deadline(&self, deadline: Instant, limit: Duration) -> bool {
        self.wait_for_sleeps(limit, |d| d.contains(&deadline)).await
    }

    /// Moves the clock by `step` after every `step` of real time, until the answer is dropped: for tests that
    /// drive some deadlines by hand but need short waits (a guest's report, a batch) to pass on their own. The
    /// task runs on the current tokio runtime.
    pub fn ticking(&self, step: Duration) -> Ticker {
        let clock = self.clone();
        Ticker(tokio::spawn(async move {
            loop {
                tokio::time::sleep(step).await;
                clock.advance(step);
            }
        }))
    }
}

/// Moves a [`ManualClock`] along with real time until dropped (see [`ManualClock::ticking`]).
#[derive(Debug)]
pub struct Ticker(tokio::task::JoinHandle<()>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Unregisters a sleeper when its sleep ends or is dropped.
struct Sleeper<'a>(&'a ManualClock, u64);

impl Drop for Sleeper<'_> {
    fn drop(&mut self) {
        self.0.sleeping().remove(&self.1);
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.now_at(*self.inner.offset.borrow())
    }

    fn instant(&self) -> Instant {
        self.instant_at(*self.inner.offset.borrow())
    }

    async fn sleep_until(&self, deadline: Instant) {
        let mut rx = self.inner.offset.subscribe();
        if self.instant_at(*rx.borrow_and_update()) >= deadline {
            return;
        }
        let id = self.inner.next_sleeper.fetch_add(1, Ordering::SeqCst);
        self.sleeping().insert(id, deadline);
        let _sleeper = Sleeper(self, id);
        self.inner.sleeps_started.send_modify(|n| *n += 1);
        loop {
            if self.instant_at(*rx.borrow_and_update()) >= deadline {
                return;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as any clone of this clock, which includes `self`.
                return;
            }
        }
    }

    async fn sleep(&self, d: Duration) {
        // A deadline past the furthest point the clock can reach never comes.
        let end = self
            .inner
            .offset
            .borrow()
            .saturating_add(d)
            .min(FURTHEST + Duration::from_secs(1));
        self.sleep_until(self.inner.origin + end).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn advance_wakes_only_expired_sleepers() {
        let start = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap();
        let clock = ManualClock::starting_at(start);
        assert_eq!(clock.now(), start);
        let t0 = clock.instant();
        let c1 = clock.clone();
        let short = tokio::spawn(async move { c1.sleep(Duration::from_secs(10)).await });
        let c2 = clock.clone();
        let long = tokio::spawn(async move { c2.sleep(Duration::from_secs(60)).await });
        assert!(clock.wait_for_sleepers(2, LIMIT).await);
        assert_eq!(
            clock.deadlines(),
            vec![t0 + Duration::from_secs(10), t0 + Duration::from_secs(60)]
        );
        clock.advance(Duration::from_secs(10));
        short.await.unwrap();
        // The long sleeper was woken by the move, looked at the clock and went back to sleep: still registered,
        // with the same deadline, and its task not finished.
        assert_eq!(clock.deadlines(), vec![t0 + Duration::from_secs(60)]);
        assert!(!long.is_finished());
        clock.advance(Duration::from_secs(50));
        long.await.unwrap();
        assert_eq!(clock.sleepers(), 0);
        assert_eq!(clock.now(), start + chrono::Duration::seconds(60));
        assert_eq!(clock.instant() - t0, Duration::from_secs(60));
        clock.set(start);
        assert_eq!(
            clock.now(),
            start + chrono::Duration::seconds(60),
            "never backwards"
        );
        clock.set(start + chrono::Duration::seconds(90));
        assert_eq!(
            clock.instant() - t0,
            Duration::from_secs(90),
            "set moves both readings"
        );
    }

    #[tokio::test]
    async fn zero_sleep_returns_immediately() {
        let clock = ManualClock::new();
        clock.sleep(Duration::ZERO).await;
        clock.sleep_until(clock.instant()).await;
        assert_eq!(clock.sleepers(), 0);
    }

    #[tokio::test]
    async fn a_dropped_sleep_unregisters_and_advance_to_reaches_a_deadline() {
        let clock = ManualClock::new();
        let deadline = clock.instant() + Duration::from_millis(7);
        let c = clock.clone();
        let sleeper = tokio::spawn(async move { c.sleep_until(deadline).await });
        assert!(clock.wait_for_deadline(deadline, LIMIT).await);
        clock.advance_to(deadline - Duration::from_millis(1));
        assert_eq!(clock.deadlines(), vec![deadline]);
        clock.advance_to(deadline);
        sleeper.await.unwrap();
        assert_eq!(clock.instant(), deadline);

        let c = clock.clone();
        let forever = tokio::spawn(async move { c.sleep(Duration::MAX).await });
        let c = clock.clone();
        let hour = tokio::spawn(async move { c.sleep(Duration::from_secs(3600)).await });
        assert!(clock.wait_for_sleepers(2, LIMIT).await);
        hour.abort();
        assert!(hour.await.unwrap_err().is_cancelled());
        assert_eq!(clock.sleepers(), 1, "an aborted sleep leaves no sleeper");
        clock.advance(Duration::MAX);
        assert!(clock.wait_for_sleepers(1, LIMIT).await);
        assert!(!forever.is_finished(), "sleep(MAX) never ends");
        forever.abort();
    }

    #[tokio::test]
    async fn a_ticking_clock_moves_on_its_own_until_dropped() {
        let clock = ManualClock::new();
        let t0 = clock.instant();
        let ticker = clock.ticking(Duration::from_millis(1));
        tokio::time::timeout(LIMIT, clock.sleep(Duration::from_millis(20)))
            .await
            .expect("the ticker moves the clock");
        assert!(clock.instant() - t0 >= Duration::from_millis(20));
        drop(ticker);
        tokio::task::yield_now().await;
        let stopped = clock.instant();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(clock.instant(), stopped, "a dropped ticker stops");
    }
}
