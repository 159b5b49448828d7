//! The breaker's behaviour as a caller sees it: opening, half-open probing, closing,
//! the failure-rate rule, sharing between threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cano_circuit::{BreakerPolicy, CircuitBreaker, CircuitState};
use cano_error::CanoError;

const RESET: Duration = Duration::from_secs(10);

fn trip(breaker: &CircuitBreaker, failures: u32) {
    for _ in 0..failures {
        let permit = breaker.try_acquire().expect("closed");
        breaker.record_failure(permit);
    }
    assert!(breaker.state().is_open());
}

#[tokio::test(start_paused = true)]
async fn refuses_until_the_reset_timeout_then_lets_a_bounded_number_of_probes_through() {
    let breaker = CircuitBreaker::try_named(
        "search",
        BreakerPolicy::consecutive(2, RESET)
            .with_half_open_probes(2)
            .with_successes_to_close(2),
    )
    .unwrap();
    trip(&breaker, 2);

    tokio::time::advance(RESET - Duration::from_millis(1)).await;
    let early = breaker.try_acquire().unwrap_err();
    assert!(
        early
            .to_string()
            .contains("`search` is open: calls are refused for another 1ms"),
        "{early}"
    );

    tokio::time::advance(Duration::from_millis(1)).await;
    let first = breaker.try_acquire().expect("first probe");
    assert!(first.is_probe());
    assert_eq!(first.transition(), Some(CircuitState::HalfOpen));
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    let second = breaker.try_acquire().expect("second probe");
    assert_eq!(second.transition(), None);
    // Both probe slots are taken.
    let busy = breaker.try_acquire().unwrap_err();
    assert!(matches!(busy, CanoError::CircuitOpen(_)));
    assert!(busy.to_string().contains("half-open"), "{busy}");

    assert_eq!(breaker.record_success(first), None);
    // A finished probe frees its slot; one more success closes the breaker.
    let third = breaker.try_acquire().expect("a slot is free again");
    assert_eq!(breaker.record_success(second), Some(CircuitState::Closed));
    assert_eq!(breaker.state(), CircuitState::Closed);
    // The probe issued before closing is stale now: its failure changes nothing.
    assert_eq!(breaker.record_failure(third), None);
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_a_fresh_reset_timeout() {
    let breaker = CircuitBreaker::try_new(BreakerPolicy::consecutive(1, RESET)).unwrap();
    trip(&breaker, 1);
    tokio::time::advance(RESET).await;
    let probe = breaker.try_acquire().unwrap();
    tokio::time::advance(Duration::from_secs(3)).await;
    assert!(matches!(
        breaker.record_failure(probe),
        Some(CircuitState::Open { .. })
    ));
    // The new timeout runs from the failed probe, not from the first opening.
    tokio::time::advance(RESET - Duration::from_secs(1)).await;
    assert!(breaker.try_acquire().is_err());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(breaker.try_acquire().unwrap().is_probe());
}

#[tokio::test(start_paused = true)]
async fn a_probe_released_without_verdict_frees_its_slot() {
    let breaker = CircuitBreaker::try_new(BreakerPolicy::consecutive(1, RESET)).unwrap();
    trip(&breaker, 1);
    tokio::time::advance(RESET).await;
    let probe = breaker.try_acquire().unwrap();
    assert!(breaker.try_acquire().is_err());
    breaker.record_error(probe, &CanoError::configuration("bad request built by us"));
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    let next = breaker.try_acquire().expect("the slot came back");
    assert_eq!(breaker.record_success(next), Some(CircuitState::Closed));
}

#[tokio::test(start_paused = true)]
async fn the_failure_rate_rule_waits_for_enough_calls_and_forgets_old_ones() {
    let policy = BreakerPolicy::failure_rate(0.5, 4, Duration::from_secs(10), RESET);
    let breaker = CircuitBreaker::try_new(policy).unwrap();
    let call = |ok: bool| {
        let permit = breaker.try_acquire().unwrap();
        if ok {
            breaker.record_success(permit)
        } else {
            breaker.record_failure(permit)
        }
    };
    // Three failures are 100 %, but fewer than min_calls: still closed.
    for _ in 0..3 {
        assert_eq!(call(false), None);
    }
    // Those failures age out of the 10 s window.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(call(true), None);
    assert_eq!(call(true), None);
    assert_eq!(call(false), None); // 1 of 3
    assert!(matches!(call(false), Some(CircuitState::Open { .. }))); // 2 of 4 = 50 %
}

#[tokio::test]
async fn call_runs_under_a_permit_and_records_through_the_classifier() {
    let breaker = CircuitBreaker::try_new(
        BreakerPolicy::consecutive(1, RESET)
            .with_classifier(|e| !e.message().starts_with("invalid")),
    )
    .unwrap();
    let rejected: Result<(), _> = breaker
        .call(|| async { Err(CanoError::task_execution("invalid customer id")) })
        .await;
    assert!(rejected.is_err());
    assert_eq!(breaker.state(), CircuitState::Closed);
    let down: Result<(), _> = breaker
        .call(|| async { Err(CanoError::task_execution("connection refused")) })
        .await;
    assert!(down.is_err());
    assert!(breaker.state().is_open());
    let ran = AtomicUsize::new(0);
    let refused = breaker
        .call(|| async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await;
    assert!(matches!(refused, Err(CanoError::CircuitOpen(_))));
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "an open breaker never runs the call"
    );
}

#[tokio::test]
async fn an_abandoned_call_counts_as_a_failure() {
    let breaker = CircuitBreaker::try_new(BreakerPolicy::consecutive(1, RESET)).unwrap();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let hung = breaker.call(|| async move {
        started_tx.send(()).unwrap();
        std::future::pending::<Result<(), CanoError>>().await
    });
    tokio::select! {
        _ = hung => unreachable!("the call never ends"),
        _ = started_rx => {}
    }
    // The call's future, and its permit, were dropped unrecorded.
    assert!(breaker.state().is_open());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_breaker_shared_by_many_threads_opens_once_and_probes_stay_bounded() {
    let breaker = Arc::new(
        CircuitBreaker::try_new(
            BreakerPolicy::consecutive(50, Duration::ZERO).with_half_open_probes(3),
        )
        .unwrap(),
    );
    let opened = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (breaker, opened) = (breaker.clone(), opened.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..200 {
                if let Ok(permit) = breaker.try_acquire()
                    && breaker.record_failure(permit).is_some_and(|s| s.is_open())
                {
                    opened.fetch_add(1, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Every opening is reported to exactly one caller, and the breaker ends open
    // (every call failed, including each probe).
    assert!(opened.load(Ordering::SeqCst) >= 1);
    assert!(breaker.state().is_open());

    // With a zero reset timeout it is half-open at the next call; at most 3 probes.
    let probes: Vec<_> = (0..10).filter_map(|_| breaker.try_acquire().ok()).collect();
    assert_eq!(probes.len(), 3);
    assert!(probes.iter().all(|p| p.is_probe()));
    for probe in probes {
        breaker.record_success(probe);
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
}
