//! Conformance suite for [`crate::ports::Clock`].
//!
//! The suite takes an `advance` hook: a manual clock moves forward when it is called, a real clock ignores it
//! (pass `&|_| {}`) and lets time pass by itself.

use std::time::Duration;

use crate::ports::DynClock;

/// How long a check waits, in real time, for a sleep that should end.
pub const REAL_LIMIT: Duration = Duration::from_secs(10);

/// Moves the clock in small steps until `sleeper` ends (at most [`REAL_LIMIT`] of real time).
async fn until_finished(
    sleeper: tokio::task::JoinHandle<()>,
    advance: &(dyn Fn(Duration) + Sync),
    what: &str,
) {
    let start = std::time::Instant::now();
    while !sleeper.is_finished() {
        assert!(
            start.elapsed() < REAL_LIMIT,
            "{what} did not return within {REAL_LIMIT:?}"
        );
        advance(Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sleeper.await.expect("sleeper task");
}

/// `now` never goes backwards.
pub async fn now_is_monotonic(clock: &DynClock, advance: &(dyn Fn(Duration) + Sync)) {
    never_backwards(advance, || clock.now(), "now");
}

/// `instant` never goes backwards.
pub async fn instant_is_monotonic(clock: &DynClock, advance: &(dyn Fn(Duration) + Sync)) {
    never_backwards(advance, || clock.instant(), "instant");
}

/// Reads `read` a thousand times, advancing the clock now and then; each reading is at least the last.
fn never_backwards<T: PartialOrd + std::fmt::Debug>(
    advance: &(dyn Fn(Duration) + Sync),
    read: impl Fn() -> T,
    what: &str,
) {
    let mut last = read();
    for i in 0..1000 {
        if i % 100 == 0 {
            advance(Duration::from_millis(1));
        }
        let now = read();
        assert!(now >= last, "{what} went backwards: {last:?} then {now:?}");
        last = now;
    }
}

/// `sleep(d)` returns, and only after `now` and `instant` have advanced by at least `d`.
pub async fn sleep_returns_after_the_duration(
    clock: &DynClock,
    advance: &(dyn Fn(Duration) + Sync),
) {
    let d = Duration::from_millis(50);
    let before = clock.now();
    let before_instant = clock.instant();
    let sleeper = {
        let clock = clock.clone();
        tokio::spawn(async move { clock.sleep(d).await })
    };
    until_finished(sleeper, advance, &format!("sleep({d:?})")).await;
    let elapsed = clock.now() - before;
    assert!(
        elapsed >= chrono::Duration::from_std(d).expect("small duration"),
        "sleep({d:?}) returned after only {elapsed} of clock time"
    );
    let elapsed = clock.instant() - before_instant;
    assert!(
        elapsed >= d,
        "sleep({d:?}) returned after only {elapsed:?} of monotonic time"
    );
}

/// `sleep_until(t)` returns, and only once `instant` has reached `t`.
pub async fn sleep_until_returns_at_the_deadline(
    clock: &DynClock,
    advance: &(dyn Fn(Duration) + Sync),
) {
    let deadline = clock.instant() + Duration::from_millis(50);
    let sleeper = {
        let clock = clock.clone();
        tokio::spawn(async move { clock.sleep_until(deadline).await })
    };
    until_finished(sleeper, advance, "sleep_until(+50ms)").await;
    let now = clock.instant();
    assert!(
        now >= deadline,
        "sleep_until returned {:?} before its deadline",
        deadline - now
    );
}

/// `sleep_until` a reading that has passed returns at once.
pub async fn sleep_until_the_past_returns(clock: &DynClock, advance: &(dyn Fn(Duration) + Sync)) {
    let past = clock.instant();
    advance(Duration::from_millis(5));
    tokio::time::timeout(REAL_LIMIT, clock.sleep_until(past))
        .await
        .expect("sleep_until(a past instant) returns");
}

/// A sleep whose time has not come does not return, by duration or by deadline.
pub async fn long_sleep_does_not_return_early(
    clock: &DynClock,
    advance: &(dyn Fn(Duration) + Sync),
) {
    let sleeper = {
        let clock = clock.clone();
        tokio::spawn(async move { clock.sleep(Duration::from_secs(3600)).await })
    };
    let until = {
        let clock = clock.clone();
        let deadline = clock.instant() + Duration::from_secs(3600);
        tokio::spawn(async move { clock.sleep_until(deadline).await })
    };
    advance(Duration::from_secs(60));
    // Nothing to wait for: the check is that nothing happens, given the sleepers time to run.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!sleeper.is_finished(), "sleep(1h) returned after 1 minute");
    assert!(
        !until.is_finished(),
        "sleep_until(+1h) returned after 1 minute"
    );
    sleeper.abort();
    until.abort();
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
    instant_is_monotonic(&clock, advance).await;
    sleep_returns_after_the_duration(&clock, advance).await;
    sleep_until_returns_at_the_deadline(&clock, advance).await;
    sleep_until_the_past_returns(&clock, advance).await;
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
