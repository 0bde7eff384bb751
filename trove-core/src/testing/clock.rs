//! Conformance suite for [`crate::ports::Clock`].
//!
//! The suite takes an `advance` hook: a manual clock moves forward when it is called, a real clock ignores it
//! (pass `&|_| {}`) and lets time pass by itself.

use std::time::Duration;

use crate::ports::DynClock;

/// How long a check waits, in real time, for a sleep that should end.
pub const REAL_LIMIT: Duration = Duration::from_secs(10);

/// `now` never goes backwards.
pub async fn now_is_monotonic(clock: &DynClock, advance: &(dyn Fn(Duration) + Sync)) {
    let mut last = clock.now();
    for i in 0..1000 {
        if i % 100 == 0 {
            advance(Duration::from_millis(1));
        }
        let now = clock.now();
        assert!(now >= last, "clock went backwards: {last} then {now}");
        last = now;
    }
}

/// `sleep(d)` returns, and only after `now` has advanced by at least `d`.
pub async fn sleep_returns_after_the_duration(
    clock: &DynClock,
    advance: &(dyn Fn(Duration) + Sync),
) {
    let d = Duration::from_millis(50);
    let before = clock.now();
    let sleeper = {
        let clock = clock.clone();
        tokio::spawn(async move { clock.sleep(d).await })
    };
    let start = std::time::Instant::now();
    while !sleeper.is_finished() {
        assert!(
            start.elapsed() < REAL_LIMIT,
            "sleep({d:?}) did not return within {REAL_LIMIT:?}"
        );
        advance(Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sleeper.await.expect("sleeper task");
    let elapsed = clock.now() - before;
    assert!(
        elapsed >= chrono::Duration::from_std(d).expect("small duration"),
        "sleep({d:?}) returned after only {elapsed} of clock time"
    );
}

/// A sleep whose time has not come does not return.
pub async fn long_sleep_does_not_return_early(
    clock: &DynClock,
    advance: &(dyn Fn(Duration) + Sync),
) {
    let sleeper = {
        let clock = clock.clone();
        tokio::spawn(async move { clock.sleep(Duration::from_secs(3600)).await })
    };
    advance(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!sleeper.is_finished(), "sleep(1h) returned after 1 minute");
    sleeper.abort();
}

/// `sleep(0)` returns at once.
pub async fn zero_sleep_returns(clock: &DynClock) {
    tokio::time::timeout(REAL_LIMIT, clock.sleep(Duration::ZERO))
        .await
        .expect("sleep(0) returns");
}

/// Runs every check of the Clock contract.
pub async fn run_all(clock: DynClock, advance: &(dyn Fn(Duration) + Sync)) {
    now_is_monotonic(&clock, advance).await;
    sleep_returns_after_the_duration(&clock, advance).await;
    long_sleep_does_not_return_early(&clock, advance).await;
    zero_sleep_returns(&clock).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::ManualClock;
    use crate::ports::SystemClock;
    use std::sync::Arc;

    #[tokio::test]
    async fn manual_clock_passes_the_suite() {
        let clock = ManualClock::new();
        let hook = clock.clone();
        run_all(Arc::new(clock), &move |d| hook.advance(d)).await;
    }

    #[tokio::test]
    async fn system_clock_passes_the_suite() {
        run_all(Arc::new(SystemClock), &|_| {}).await;
    }
}
