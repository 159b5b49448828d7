//! Rate limiters as callers see them, on tokio's paused clock: waiting, pacing two
//! workers from one bucket, refusing what could never pass.

use std::sync::Arc;
use std::time::Duration;

use cano_circuit::RateLimiter;
use cano_error::CanoError;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn acquire_waits_exactly_until_a_token_is_there() {
    let limiter = RateLimiter::token_bucket(4, Duration::from_secs(1), 1).unwrap();
    let start = Instant::now();
    for _ in 0..5 {
        limiter.acquire().await.unwrap();
    }
    // One at once, then one every 250 ms.
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn two_workers_sharing_a_bucket_together_stay_within_its_rate() {
    let limiter = Arc::new(RateLimiter::token_bucket(10, Duration::from_secs(1), 2).unwrap());
    let start = Instant::now();
    let worker = |limiter: Arc<RateLimiter>| async move {
        let mut stamps = Vec::new();
        for _ in 0..10 {
            limiter.acquire().await.unwrap();
            stamps.push(start.elapsed());
        }
        stamps
    };
    let (a, b) = tokio::join!(
        tokio::spawn(worker(limiter.clone())),
        tokio::spawn(worker(limiter.clone()))
    );
    let mut all: Vec<Duration> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    all.sort();
    // 20 calls at 10/s with a burst of 2: the last one at 1.8 s, never earlier.
    assert_eq!(all.len(), 20);
    assert_eq!(*all.last().unwrap(), Duration::from_millis(1800));
    for (i, at) in all.iter().enumerate() {
        let allowed = 2 + at.as_millis() as usize / 100;
        assert!(
            i < allowed,
            "call {i} at {at:?} exceeds rate x elapsed + burst"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_cost_that_can_never_pass_fails_at_once_instead_of_waiting_forever() {
    let limiter = RateLimiter::windowed(5, Duration::from_secs(60)).unwrap();
    let start = Instant::now();
    let err = limiter.acquire_n(6).await.unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(limiter.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_leaves_the_queue() {
    let limiter = Arc::new(RateLimiter::token_bucket(1, Duration::from_secs(10), 1).unwrap());
    limiter.try_acquire().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(1), limiter.acquire()).await;
    assert!(result.is_err(), "no token for 10 s");
    assert_eq!(limiter.waiting(), 0);
    tokio::time::advance(Duration::from_secs(9)).await;
    limiter
        .try_acquire()
        .expect("nobody is queued ahead any more");
}

#[tokio::test(start_paused = true)]
async fn a_tiered_limiter_waits_for_its_slowest_tier() {
    let per_second = Arc::new(RateLimiter::token_bucket(5, Duration::from_secs(1), 5).unwrap());
    let per_minute = Arc::new(RateLimiter::windowed(6, Duration::from_secs(60)).unwrap());
    let both = RateLimiter::tiered([per_second, per_minute]).unwrap();
    let start = Instant::now();
    for _ in 0..6 {
        both.acquire().await.unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(1));
    // The seventh call must wait for the next minute's window.
    both.acquire().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(60));
}

#[test]
fn bad_settings_are_configuration_errors() {
    let cases = [
        RateLimiter::token_bucket(0, Duration::from_secs(1), 1).unwrap_err(),
        RateLimiter::token_bucket(1, Duration::ZERO, 1).unwrap_err(),
        RateLimiter::token_bucket(1, Duration::from_secs(1), 0).unwrap_err(),
        RateLimiter::windowed(0, Duration::from_secs(1)).unwrap_err(),
        RateLimiter::windowed(1, Duration::ZERO).unwrap_err(),
        RateLimiter::tiered([]).unwrap_err(),
    ];
    let texts = [
        "rate is 0",
        "period is 0",
        "burst is 0",
        "limit is 0",
        "window is empty",
        "no tiers",
    ];
    for (err, text) in cases.iter().zip(texts) {
        assert!(matches!(err, CanoError::Configuration(_)));
        assert!(err.to_string().contains(text), "{err}");
    }
}
