//! `CircuitPolicy` as a struct of public fields and `CircuitBreaker::new(policy)`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Call,
    Done,
}

struct Call {
    breaker: Arc<CircuitBreaker>,
    calls: Arc<AtomicU32>,
}

#[task(state = Step)]
impl Call {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal().with_circuit_breaker(self.breaker.clone())
    }

    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(CanoError::task_execution("503"))
    }
}

#[tokio::test]
async fn a_breaker_opens_after_the_threshold_and_refuses_without_calling() {
    let breaker = Arc::new(CircuitBreaker::new(CircuitPolicy {
        failure_threshold: 2,
        reset_timeout: Duration::from_secs(60),
        half_open_max_calls: 1,
    }));
    assert_eq!(breaker.policy().failure_threshold, 2);
    let calls = Arc::new(AtomicU32::new(0));
    let workflow = Workflow::bare()
        .register(
            Step::Call,
            Call {
                breaker: breaker.clone(),
                calls: calls.clone(),
            },
        )
        .add_exit_state(Step::Done);
    for _ in 0..2 {
        assert!(matches!(
            workflow.orchestrate(Step::Call).await,
            Err(CanoError::TaskExecution(_))
        ));
    }
    // 0.13 programs read when the breaker will let calls through again.
    let before = std::time::Instant::now();
    match breaker.state() {
        CircuitState::Open { until } => {
            assert!(until > before && until <= before + Duration::from_secs(60));
        }
        other => panic!("two failures open it: {other:?}"),
    }
    assert!(matches!(
        workflow.orchestrate(Step::Call).await,
        Err(CanoError::CircuitOpen(_))
    ));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the open breaker refused the third call"
    );
}

#[test]
fn permits_are_taken_and_reported_by_hand() {
    let breaker = CircuitBreaker::new(CircuitPolicy {
        failure_threshold: 1,
        ..Default::default()
    });
    let permit: CircuitPermit = breaker.try_acquire().unwrap();
    breaker.record_failure(permit);
    assert!(
        matches!(breaker.state(), CircuitState::Open { until } if until > std::time::Instant::now())
    );
    assert!(breaker.try_acquire().is_err());
}

#[tokio::test]
async fn a_bad_policy_fails_the_run_with_a_configuration_error_not_a_panic() {
    let breaker = Arc::new(CircuitBreaker::new(CircuitPolicy {
        failure_threshold: 0,
        ..Default::default()
    }));
    let calls = Arc::new(AtomicU32::new(0));
    let workflow = Workflow::bare()
        .register(
            Step::Call,
            Call {
                breaker,
                calls: calls.clone(),
            },
        )
        .add_exit_state(Step::Done);
    let err = workflow.orchestrate(Step::Call).await.unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)), "{err}");
    assert!(err.to_string().contains("failure threshold is 0"), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}
