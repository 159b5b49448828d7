//! Circuit breakers and rate limiters attached to a task's config: admission before every
//! attempt, the retry loop's respect for an open breaker, observer events, and paced
//! attempts on tokio's paused clock.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cano_circuit::{BreakerPolicy, CircuitBreaker, CircuitState, RateLimiter};
use cano_core::{
    CanoError, HealthStatus, Resources, RetryMode, RunId, RunObserver, Task, TaskConfig,
    TaskResult, Workflow,
};
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum S {
    Call,
    Next,
    Last,
    Done,
}

#[derive(Debug, thiserror::Error)]
#[error("the order id is malformed")]
struct Invalid;

/// Calls a "dependency": fails while `failing` is set (with `error`), counts its calls.
struct Dependency {
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    invalid_input: bool,
    next: S,
    config: TaskConfig,
}

impl Dependency {
    fn new(config: TaskConfig) -> Self {
        Self {
            failing: Arc::new(AtomicBool::new(true)),
            calls: Arc::new(AtomicUsize::new(0)),
            invalid_input: false,
            next: S::Done,
            config,
        }
    }
}

#[async_trait]
impl Task<S> for Dependency {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.invalid_input {
            return Err(CanoError::task(Invalid));
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(CanoError::task(std::io::Error::other("503 from upstream")));
        }
        Ok(TaskResult::Single(self.next.clone()))
    }
    fn config(&self) -> TaskConfig {
        self.config.clone()
    }
}

/// Writes every admission event as a line.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

impl RunObserver for Log {
    fn circuit_opened(&self, _: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        self.push(format!("open {breaker} by {task} in {state:?}"));
    }
    fn circuit_half_opened(&self, _: RunId, _: &dyn Debug, task: &str, breaker: &str) {
        self.push(format!("half-open {breaker} by {task}"));
    }
    fn circuit_closed(&self, _: RunId, _: &dyn Debug, task: &str, breaker: &str) {
        self.push(format!("close {breaker} by {task}"));
    }
    fn circuit_rejected(&self, _: RunId, _: &dyn Debug, task: &str, breaker: &str) {
        self.push(format!("rejected {task} by {breaker}"));
    }
    fn throttled(
        &self,
        _: RunId,
        state: &dyn Debug,
        _: &str,
        limiter: &str,
        waited: Duration,
        admitted: bool,
    ) {
        self.push(format!(
            "throttled {state:?} by {limiter} {waited:?} admitted={admitted}"
        ));
    }
}

fn breaker(threshold: u32) -> Arc<CircuitBreaker> {
    Arc::new(
        CircuitBreaker::try_named(
            "upstream",
            BreakerPolicy::consecutive(threshold, Duration::from_secs(10)),
        )
        .unwrap(),
    )
}

fn one_state(task: Dependency) -> Workflow<S> {
    Workflow::bare()
        .register(S::Call, task)
        .add_exit_state(S::Done)
}

#[tokio::test]
async fn an_open_breaker_stops_the_retry_loop_before_the_task_body_runs() {
    let breaker = breaker(2);
    let task = Dependency::new(
        TaskConfig::new()
            .with_retry(RetryMode::fixed(5, Duration::ZERO))
            .with_circuit_breaker(breaker.clone()),
    );
    let calls = task.calls.clone();
    let workflow = one_state(task);

    let err = workflow.orchestrate(S::Call).await.unwrap_err();
    // Two attempts failed and opened the breaker; the third was refused, and the
    // remaining retries were not spent against an open breaker.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(matches!(err, CanoError::CircuitOpen(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("task `Dependency` in state Call"), "{text}");
    assert!(text.contains("`upstream` is open"), "{text}");

    // The next run fails fast: the body never runs.
    let again = workflow.orchestrate(S::Call).await.unwrap_err();
    assert!(matches!(again, CanoError::CircuitOpen(_)));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn one_breaker_guards_tasks_of_different_workflows() {
    let shared = breaker(1);
    let tripping = Dependency::new(TaskConfig::minimal().with_circuit_breaker(shared.clone()));
    let healthy = Dependency::new(TaskConfig::minimal().with_circuit_breaker(shared.clone()));
    healthy.failing.store(false, Ordering::SeqCst);
    let healthy_calls = healthy.calls.clone();
    let first = one_state(tripping);
    let second = one_state(healthy);

    assert!(first.orchestrate(S::Call).await.is_err());
    assert!(shared.state().is_open());
    let err = second.orchestrate(S::Call).await.unwrap_err();
    assert!(matches!(err, CanoError::CircuitOpen(_)));
    assert_eq!(healthy_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn errors_the_classifier_ignores_do_not_trip_the_breaker() {
    let picky = Arc::new(
        CircuitBreaker::try_new(
            BreakerPolicy::consecutive(1, Duration::from_secs(10))
                .with_classifier(|e| e.downcast_ref::<Invalid>().is_none()),
        )
        .unwrap(),
    );
    let mut task = Dependency::new(TaskConfig::minimal().with_circuit_breaker(picky.clone()));
    task.invalid_input = true;
    let workflow = one_state(task);
    for _ in 0..5 {
        let err = workflow.orchestrate(S::Call).await.unwrap_err();
        assert!(err.downcast_ref::<Invalid>().is_some());
    }
    assert_eq!(picky.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn observers_see_the_breaker_open_refuse_probe_and_close() {
    let breaker = breaker(1);
    let task = Dependency::new(TaskConfig::minimal().with_circuit_breaker(breaker.clone()));
    let failing = task.failing.clone();
    let log = Arc::new(Log::default());
    let workflow = one_state(task).with_observer(log.clone());

    assert!(workflow.orchestrate(S::Call).await.is_err());
    assert!(workflow.orchestrate(S::Call).await.is_err());
    tokio::time::advance(Duration::from_secs(10)).await;
    failing.store(false, Ordering::SeqCst);
    assert_eq!(workflow.orchestrate(S::Call).await.unwrap(), S::Done);
    assert_eq!(
        log.lines(),
        [
            "open upstream by Dependency in Call",
            "rejected Dependency by upstream",
            "half-open upstream by Dependency",
            "close upstream by Dependency",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_attempt_that_times_out_counts_against_the_breaker() {
    struct Hangs(TaskConfig);
    #[async_trait]
    impl Task<S> for Hangs {
        async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
            std::future::pending().await
        }
        fn config(&self) -> TaskConfig {
            self.0.clone()
        }
    }
    let breaker = breaker(1);
    let workflow = Workflow::bare()
        .register(
            S::Call,
            Hangs(
                TaskConfig::minimal()
                    .with_attempt_timeout(Duration::from_secs(2))
                    .with_circuit_breaker(breaker.clone()),
            ),
        )
        .add_exit_state(S::Done);
    let err = workflow.orchestrate(S::Call).await.unwrap_err();
    assert!(matches!(err, CanoError::Timeout(_)), "{err:?}");
    assert!(breaker.state().is_open());
}

/// A workflow of three states whose tasks share `config` (and so its limiter).
fn three_paced_states(config: TaskConfig) -> Workflow<S> {
    let step = |next: S| {
        let mut task = Dependency::new(config.clone());
        task.failing.store(false, Ordering::SeqCst);
        task.next = next;
        task
    };
    Workflow::bare()
        .register(S::Call, step(S::Next))
        .register(S::Next, step(S::Last))
        .register(S::Last, step(S::Done))
        .add_exit_state(S::Done)
}

#[tokio::test(start_paused = true)]
async fn a_shared_rate_limiter_paces_attempts_without_code_in_the_task() {
    let limiter = Arc::new(
        RateLimiter::token_bucket(1, Duration::from_secs(1), 1)
            .unwrap()
            .with_name("geo"),
    );
    let log = Arc::new(Log::default());
    let workflow = three_paced_states(TaskConfig::minimal().with_rate_limiter(limiter))
        .with_observer(log.clone());
    let start = Instant::now();
    assert_eq!(workflow.orchestrate(S::Call).await.unwrap(), S::Done);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(
        log.lines(),
        [
            "throttled Next by geo 1s admitted=true",
            "throttled Last by geo 1s admitted=true",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn without_waiting_an_attempt_is_refused_with_rate_limited_and_retried_by_policy() {
    let limiter = Arc::new(RateLimiter::token_bucket(1, Duration::from_secs(2), 1).unwrap());
    let no_wait = TaskConfig::minimal()
        .with_rate_limiter(limiter.clone())
        .with_max_throttle_wait(Duration::ZERO);

    // Without retries the refusal is the run's error, naming the state and task.
    let log = Arc::new(Log::default());
    let strict = three_paced_states(no_wait.clone()).with_observer(log.clone());
    let err = strict.orchestrate(S::Call).await.unwrap_err();
    match &err {
        CanoError::RateLimited { retry_after, .. } => {
            assert_eq!(*retry_after, Duration::from_secs(2));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(
        err.to_string().contains("task `Dependency` in state Next"),
        "{err}"
    );
    assert_eq!(
        log.lines(),
        ["throttled Next by rate limiter 0ns admitted=false"]
    );

    // With a retry policy the refused attempt is tried again after its delay.
    tokio::time::advance(Duration::from_secs(2)).await;
    let patient =
        three_paced_states(no_wait.with_retry(RetryMode::fixed(10, Duration::from_secs(1))));
    let start = Instant::now();
    assert_eq!(patient.orchestrate(S::Call).await.unwrap(), S::Done);
    assert_eq!(start.elapsed(), Duration::from_secs(4));
}

#[tokio::test(start_paused = true)]
async fn a_bounded_wait_gives_up_with_rate_limited() {
    let limiter = Arc::new(RateLimiter::windowed(1, Duration::from_secs(60)).unwrap());
    let workflow = three_paced_states(
        TaskConfig::minimal()
            .with_rate_limiter(limiter)
            .with_max_throttle_wait(Duration::from_secs(5)),
    );
    let start = Instant::now();
    let err = workflow.orchestrate(S::Call).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(55)));
    assert!(
        err.to_string()
            .contains("did not admit the attempt within 5s"),
        "{err}"
    );
}

#[tokio::test]
async fn breakers_and_limiters_are_resources_with_health() {
    let breaker = breaker(1);
    let limiter = Arc::new(RateLimiter::windowed(10, Duration::from_secs(1)).unwrap());
    let resources: Resources = Resources::new()
        .insert_shared("breaker", breaker.clone())
        .insert_shared("limiter", limiter);
    assert_eq!(resources.overall_health().await, HealthStatus::Healthy);
    drop(breaker.try_acquire().unwrap());
    let from_resources = resources.get::<CircuitBreaker, _>("breaker").unwrap();
    assert!(from_resources.state().is_open());
    assert!(
        matches!(resources.overall_health().await, HealthStatus::Unhealthy(reason) if reason.contains("`upstream` is open"))
    );
}

/// Signals when its attempt starts, then never finishes.
struct Waits {
    started: Arc<tokio::sync::Semaphore>,
    config: TaskConfig,
}

#[async_trait]
impl Task<S> for Waits {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        self.started.add_permits(1);
        std::future::pending().await
    }
    fn config(&self) -> TaskConfig {
        self.config.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn an_attempt_abandoned_by_cancellation_is_no_verdict_on_the_dependency() {
    let breaker = breaker(1);
    // Open it, then let the reset timeout pass so the next attempt is the only probe.
    drop(breaker.try_acquire().unwrap());
    tokio::time::advance(Duration::from_secs(10)).await;

    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let workflow = Workflow::bare()
        .register(
            S::Call,
            Waits {
                started: started.clone(),
                config: TaskConfig::minimal().with_circuit_breaker(breaker.clone()),
            },
        )
        .add_exit_state(S::Done);
    let run = workflow.spawn(S::Call);
    started.acquire().await.unwrap().forget();
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    run.cancel();
    assert!(matches!(run.await, Err(CanoError::Cancelled(_))));

    // The cancelled probe neither reopened the breaker nor kept its probe slot.
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    let next = breaker
        .try_acquire()
        .expect("the probe slot was handed back");
    assert_eq!(breaker.record_success(next), Some(CircuitState::Closed));
}
