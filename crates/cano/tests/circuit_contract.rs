//! The facade's admission API as a user writes it: everything from `cano::prelude::*`.

use std::sync::Arc;
use std::time::Duration;

use cano::RateLimiter;
use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Flow {
    Call,
    Done,
}

struct Call {
    breaker: Arc<CircuitBreaker>,
    limiter: Arc<RateLimiter>,
}

#[task(state = Flow)]
impl Call {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
            .with_circuit_breaker(self.breaker.clone())
            .with_rate_limiter(self.limiter.clone())
            .with_max_throttle_wait(Duration::ZERO)
    }
    async fn run_bare(&self) -> Result<TaskResult<Flow>, CanoError> {
        Ok(TaskResult::Single(Flow::Done))
    }
}

#[test]
fn permits_are_the_prelude_circuit_permit() {
    let breaker = CircuitBreaker::try_new(CircuitPolicy::default()).unwrap();
    let permit: CircuitPermit<'_> = breaker.try_acquire().unwrap();
    assert!(!permit.is_probe());
    assert_eq!(breaker.record_success(permit), None);
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_task_behind_a_breaker_and_a_limiter_runs_then_is_refused_by_the_limiter() {
    let breaker = Arc::new(CircuitBreaker::try_new(CircuitPolicy::default()).unwrap());
    let limiter = Arc::new(RateLimiter::windowed(1, Duration::from_secs(1)).unwrap());
    let workflow = Workflow::bare()
        .register(
            Flow::Call,
            Call {
                breaker: breaker.clone(),
                limiter,
            },
        )
        .add_exit_state(Flow::Done);
    assert_eq!(workflow.orchestrate(Flow::Call).await.unwrap(), Flow::Done);
    match workflow.orchestrate(Flow::Call).await {
        Err(CanoError::RateLimited { retry_after, .. }) => {
            assert_eq!(retry_after, Duration::from_secs(1))
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // A refusal by the limiter says nothing about the dependency.
    assert_eq!(breaker.state(), CircuitState::Closed);
}
