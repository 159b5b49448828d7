//! `Duration::MAX` is "no limit" wherever a limit is taken, and never a panic: each
//! setting a user can pass is set to it, and a run that stays well inside it must
//! simply finish. (The PostgreSQL settings are checked in cano-postgres's tests.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cano::prelude::*;
use cano::{
    BatchConfig, BreakerPolicy, Deadline, FlowPolicy, ItemStream, RateLimiter, StreamConfig,
    StreamSummary, WindowOutcome,
};
use futures::stream;

const MAX: Duration = Duration::MAX;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum S {
    Go,
    Split,
    Poll,
    Batch,
    Timer,
    Stream,
    Done,
}

/// Fails its first attempt, then goes to `next`.
struct Flaky {
    next: S,
    tries: AtomicU32,
    config: TaskConfig,
}

#[task]
impl Task<S> for Flaky {
    fn config(&self) -> TaskConfig {
        self.config.clone()
    }
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        if self.tries.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(CanoError::task_execution("first try fails"));
        }
        Ok(TaskResult::Single(self.next.clone()))
    }
}

fn flaky(next: S, config: TaskConfig) -> Flaky {
    Flaky {
        next,
        tries: AtomicU32::new(0),
        config,
    }
}

struct Ready(AtomicU32);

#[task::poll(state = S)]
impl Ready {
    async fn poll(&self, _res: &Resources) -> Result<PollOutcome<S>, CanoError> {
        Ok(if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            PollOutcome::pending(Duration::from_millis(1))
        } else {
            PollOutcome::ready(S::Batch)
        })
    }
    fn max_wait(&self) -> Option<Duration> {
        Some(MAX)
    }
    fn on_error(&self) -> PollErrorPolicy {
        PollErrorPolicy::Retry {
            max_errors: 3,
            delay: Duration::from_millis(1),
        }
    }
}

#[derive(Clone)]
struct Double;

#[task::batch]
impl BatchTask<S> for Double {
    type Item = u32;
    type ItemOutput = u32;
    async fn load(&self, _res: &Resources) -> Result<Vec<u32>, CanoError> {
        Ok(vec![1, 2, 3])
    }
    async fn process_item(&self, _res: &Resources, item: &u32) -> Result<u32, CanoError> {
        Ok(item * 2)
    }
    async fn finish(
        &self,
        _res: &Resources,
        results: Vec<ItemResult<u32>>,
    ) -> Result<TaskResult<S>, CanoError> {
        assert_eq!(
            results.into_iter().collect::<Result<Vec<_>, _>>()?,
            [2, 4, 6]
        );
        Ok(TaskResult::Single(S::Timer))
    }
    fn batch_config(&self) -> BatchConfig {
        BatchConfig::new()
            .with_item_timeout(MAX)
            .with_item_retry(RetryMode::exponential(2).with_max_delay(MAX))
    }
}

struct AtOnce;

#[task::timer(state = S)]
impl AtOnce {
    async fn deadline(&self, _res: &Resources) -> Result<Deadline, CanoError> {
        Ok(Deadline::After(Duration::ZERO))
    }
    async fn fire(&self, _res: &Resources) -> Result<TaskResult<S>, CanoError> {
        Ok(TaskResult::Single(S::Stream))
    }
}

struct Count;

#[task::stream(state = S)]
impl Count {
    type Item = u32;
    type Cursor = u32;
    async fn open(
        &self,
        _res: &Resources,
        _cursor: Option<u32>,
    ) -> Result<ItemStream<u32>, CanoError> {
        Ok(Box::pin(stream::iter((0..5).map(Ok))))
    }
    async fn flush(
        &self,
        _res: &Resources,
        window: Vec<u32>,
    ) -> Result<WindowOutcome<u32, S>, CanoError> {
        Ok(WindowOutcome::Continue(window.len() as u32))
    }
    async fn finish(
        &self,
        _res: &Resources,
        _summary: StreamSummary<u32>,
    ) -> Result<TaskResult<S>, CanoError> {
        Ok(TaskResult::Single(S::Done))
    }
    fn stream_config(&self) -> StreamConfig {
        StreamConfig::new().with_max_items(2).with_max_age(MAX)
    }
}

struct Reserve;

#[saga::task]
impl CompensatableTask<S> for Reserve {
    type Output = ();
    async fn run(&self, _res: &Resources) -> Result<(TaskResult<S>, ()), CanoError> {
        Ok((TaskResult::Single(S::Split), ()))
    }
    async fn compensate(&self, _res: &Resources, _output: ()) -> Result<(), CanoError> {
        Ok(())
    }
}

#[tokio::test]
async fn every_in_process_limit_takes_duration_max() {
    let breaker = CircuitBreaker::try_new(BreakerPolicy::consecutive(3, MAX)).unwrap();
    let bucket = RateLimiter::token_bucket(1_000, MAX, 1_000).unwrap();
    let window = RateLimiter::windowed(1_000, MAX).unwrap();
    let retrying = TaskConfig::new()
        .with_retry(
            RetryMode::exponential(3)
                .with_base_delay(Duration::from_millis(1))
                .with_max_delay(MAX),
        )
        .with_attempt_timeout(MAX)
        .with_circuit_breaker(Arc::new(breaker))
        .with_rate_limiter(Arc::new(bucket))
        .with_max_throttle_wait(MAX);
    let limited = TaskConfig::new()
        .with_fixed_retry(2, Duration::from_millis(1))
        .with_rate_limiter(Arc::new(window))
        .with_max_throttle_wait(MAX);
    let workflow = Workflow::bare()
        .register(S::Go, flaky(S::Split, retrying))
        .register_split(
            S::Split,
            vec![
                flaky(S::Poll, TaskConfig::minimal()),
                flaky(S::Poll, limited),
            ],
            JoinConfig::new(JoinStrategy::Any, S::Poll).with_timeout(MAX),
        )
        .register(S::Poll, Ready(AtomicU32::new(0)))
        .register(S::Batch, Double)
        .register(S::Timer, AtOnce)
        .register(S::Stream, Count)
        .add_exit_state(S::Done)
        .with_timeout(MAX)
        .with_compensation_timeout(MAX);
    assert_eq!(workflow.orchestrate(S::Go).await.unwrap(), S::Done);
}

/// Fails for good: the run rolls back under an unbounded compensation timeout.
struct Refuse;
#[task]
impl Task<S> for Refuse {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal().with_attempt_timeout(MAX)
    }
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        Err(CanoError::task_execution("refused"))
    }
}

#[tokio::test]
async fn a_rollback_and_a_timed_run_take_duration_max() {
    let workflow = Workflow::bare()
        .register_with_compensation(S::Go, Reserve)
        .register(S::Split, Refuse)
        .add_exit_state(S::Done)
        .with_timeout(MAX)
        .with_compensation_timeout(MAX);
    let err = workflow.orchestrate(S::Go).await.unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
}

#[tokio::test]
async fn a_circuit_breaker_open_for_ever_stays_open_without_panicking() {
    let breaker = Arc::new(CircuitBreaker::try_new(BreakerPolicy::consecutive(1, MAX)).unwrap());
    let workflow = Workflow::bare()
        .register(S::Go, Refuse)
        .add_exit_state(S::Done);
    let _ = workflow.orchestrate(S::Go).await;
    let guarded = Workflow::bare()
        .register(
            S::Go,
            flaky(
                S::Done,
                TaskConfig::minimal().with_circuit_breaker(breaker.clone()),
            ),
        )
        .add_exit_state(S::Done);
    // The first attempt fails and opens the breaker; with no reset timeout it stays
    // open, and the next run is refused at once.
    guarded.orchestrate(S::Go).await.unwrap_err();
    let err = guarded.orchestrate(S::Go).await.unwrap_err();
    assert!(matches!(err, CanoError::CircuitOpen(_)), "{err}");
}

/// Fails every run.
struct Broken;
#[task]
impl Task<S> for Broken {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        Err(CanoError::task_execution("broken"))
    }
}

struct Quick;
#[task]
impl Task<S> for Quick {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        Ok(TaskResult::Single(S::Done))
    }
}

#[tokio::test]
async fn scheduler_intervals_backoff_and_grace_take_duration_max() {
    let quick = Workflow::bare()
        .register(S::Go, Quick)
        .add_exit_state(S::Done);
    let broken = Workflow::bare()
        .register(S::Go, Broken)
        .add_exit_state(S::Done);
    let backoff = FlowPolicy::new().with_backoff(
        BackoffPolicy::new(Duration::from_secs(1))
            .with_multiplier(1e300)
            .with_max(MAX),
    );
    let mut scheduler = Scheduler::new();
    scheduler
        .flow(
            "never",
            quick.clone(),
            S::Go,
            Schedule::every(MAX).unwrap(),
            FlowPolicy::new(),
        )
        .unwrap();
    scheduler
        .flow(
            "grid",
            quick.clone(),
            S::Go,
            Schedule::every_fixed_rate(MAX).unwrap(),
            FlowPolicy::new(),
        )
        .unwrap();
    scheduler
        .flow("failing", broken, S::Go, Schedule::manual(), backoff)
        .unwrap();
    // Minutes and hours past what u64 seconds hold: never, like Duration::MAX.
    scheduler
        .every_hours("hourly", quick.clone(), S::Go, u64::MAX)
        .unwrap();
    let scheduler: RunningScheduler<S> = scheduler.start().await.unwrap();
    // An interval of Duration::MAX never ticks; a manual trigger still runs the flow.
    assert_eq!(scheduler.status("never").await.unwrap().next_run, None);
    assert_eq!(scheduler.status("hourly").await.unwrap().next_run, None);
    scheduler.trigger("never").await.unwrap();
    scheduler.trigger("grid").await.unwrap();
    // Failures back off by a delay past what a Duration holds (no cap): the longest.
    for streak in 1..=2 {
        scheduler.trigger("failing").await.unwrap();
        while scheduler.status("failing").await.unwrap().failure_streak < streak {
            tokio::task::yield_now().await;
        }
    }
    let failing = scheduler.status("failing").await.unwrap();
    assert!(
        matches!(failing.status, Status::Backoff { streak: 2, .. }),
        "{failing:?}"
    );
    scheduler.stop_with_grace(MAX).await.unwrap();
    assert_eq!(scheduler.status("never").await.unwrap().run_count, 1);
}

struct Slow;
#[task]
impl Task<S> for Slow {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal().with_attempt_timeout(Duration::ZERO)
    }
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        Ok(TaskResult::Single(S::Done))
    }
}

#[tokio::test]
async fn limits_too_small_to_work_are_configuration_errors_naming_the_setting() {
    let zero = Duration::ZERO;
    let err = Workflow::bare()
        .register(S::Go, Quick)
        .add_exit_state(S::Done)
        .with_timeout(zero)
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("Workflow::with_timeout"), "{err}");
    let err = Workflow::bare()
        .register_with_compensation(S::Go, Reserve)
        .register(S::Split, Quick)
        .add_exit_state(S::Done)
        .with_compensation_timeout(zero)
        .orchestrate(S::Go)
        .await
        .unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)), "{err}");
    assert!(
        err.to_string().contains("with_compensation_timeout"),
        "{err}"
    );
    let err = Workflow::bare()
        .register(S::Go, Slow)
        .add_exit_state(S::Done)
        .validate()
        .unwrap_err();
    assert!(
        err.to_string().contains("with_attempt_timeout") && err.to_string().contains("`Slow`"),
        "{err}"
    );
    let err = Workflow::bare()
        .register_split(
            S::Go,
            vec![Quick],
            JoinConfig::new(JoinStrategy::All, S::Done).with_timeout(zero),
        )
        .add_exit_state(S::Done)
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("join timeout of zero"), "{err}");
    let err = Schedule::every(zero).unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)), "{err}");
}
