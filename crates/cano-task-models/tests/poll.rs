//! Poll tasks on tokio's paused clock: pauses as asked, the error policy, the maximum
//! wait, panics.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use cano_core::{CanoError, Resources, TaskConfig, Workflow};
use cano_task_models::{PollErrorPolicy, PollOutcome, PollTask, run_poll};
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum S {
    Wait,
    Done,
}

/// Answers from a script, one per poll (`None`: an error); pending forever once empty.
struct Scripted {
    script: Mutex<Vec<Option<PollOutcome<S>>>>,
    polls: Mutex<Vec<Duration>>,
    started: Instant,
    policy: PollErrorPolicy,
    max_wait: Option<Duration>,
    config: TaskConfig,
}

impl Scripted {
    fn new(mut script: Vec<Option<PollOutcome<S>>>) -> Self {
        script.reverse();
        Self {
            script: Mutex::new(script),
            polls: Mutex::new(Vec::new()),
            started: Instant::now(),
            policy: PollErrorPolicy::FailFast,
            max_wait: None,
            config: TaskConfig::minimal(),
        }
    }

    fn polled_at(&self) -> Vec<u64> {
        self.polls
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_secs())
            .collect()
    }
}

#[async_trait::async_trait]
impl PollTask<S> for Scripted {
    async fn poll(&self, _res: &Resources) -> Result<PollOutcome<S>, CanoError> {
        self.polls.lock().unwrap().push(self.started.elapsed());
        let next = self.script.lock().unwrap().pop();
        match next {
            Some(Some(outcome)) => Ok(outcome),
            Some(None) => Err(CanoError::task_execution(
                "the status endpoint returned 503",
            )),
            None => Ok(PollOutcome::pending(Duration::from_secs(10))),
        }
    }
    fn on_error(&self) -> PollErrorPolicy {
        self.policy
    }
    fn max_wait(&self) -> Option<Duration> {
        self.max_wait
    }
    fn config(&self) -> TaskConfig {
        self.config.clone()
    }
}
as_task!(Scripted, PollTask, run_poll, S);

fn pending(secs: u64) -> Option<PollOutcome<S>> {
    Some(PollOutcome::pending(Duration::from_secs(secs)))
}

fn ready() -> Option<PollOutcome<S>> {
    Some(PollOutcome::ready(S::Done))
}

async fn run(task: Scripted) -> (Result<S, CanoError>, Vec<u64>) {
    let task = std::sync::Arc::new(task);
    let workflow = Workflow::bare()
        .register(S::Wait, Shared(task.clone()))
        .add_exit_state(S::Done);
    let result = workflow.orchestrate(S::Wait).await;
    (result, task.polled_at())
}

/// The workflow owns its task; the test keeps a handle to read what it saw.
struct Shared(std::sync::Arc<Scripted>);

impl cano_core::Task<S> for Shared {
    fn run<'a, 'b, 'c>(&'a self, res: &'b Resources) -> cano_core::TaskFuture<'c, S>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(run_poll(&*self.0, res))
    }
    fn config(&self) -> TaskConfig {
        self.0.config.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn polls_until_ready_pausing_as_asked() {
    let (result, polls) = run(Scripted::new(vec![pending(2), pending(5), ready()])).await;
    assert_eq!(result.unwrap(), S::Done);
    assert_eq!(polls, [0, 2, 7]);
}

#[tokio::test(start_paused = true)]
async fn a_poll_that_never_becomes_ready_stops_at_its_maximum_wait() {
    let mut task = Scripted::new(vec![]);
    task.max_wait = Some(Duration::from_secs(25));
    let (result, polls) = run(task).await;
    let err = result.unwrap_err();
    assert!(matches!(err, CanoError::Timeout(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("maximum wait of 25s") && text.contains("4 polls"),
        "{text}"
    );
    assert!(text.contains("Scripted") && text.contains("Wait"), "{text}");
    // Every 10 s, and a last look at the deadline itself.
    assert_eq!(polls, [0, 10, 20, 25]);
}

#[tokio::test(start_paused = true)]
async fn ready_at_the_deadline_is_still_ready() {
    let mut task = Scripted::new(vec![pending(10), pending(10), ready()]);
    task.max_wait = Some(Duration::from_secs(15));
    let (result, polls) = run(task).await;
    assert_eq!(result.unwrap(), S::Done);
    assert_eq!(polls, [0, 10, 15]);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_stops_at_the_first_error() {
    let (result, polls) = run(Scripted::new(vec![pending(1), None, ready()])).await;
    assert!(result.unwrap_err().to_string().contains("503"));
    assert_eq!(polls, [0, 1]);
}

#[tokio::test(start_paused = true)]
async fn errors_within_the_budget_are_ridden_out_with_a_pause() {
    let mut task = Scripted::new(vec![None, pending(1), None, ready()]);
    task.policy = PollErrorPolicy::Retry {
        max_errors: 2,
        delay: Duration::from_secs(30),
    };
    let (result, polls) = run(task).await;
    assert_eq!(result.unwrap(), S::Done);
    assert_eq!(polls, [0, 30, 31, 61]);
}

#[tokio::test(start_paused = true)]
async fn one_error_past_the_budget_fails_with_the_last_error() {
    let mut task = Scripted::new(vec![None, None, None, ready()]);
    task.policy = PollErrorPolicy::Retry {
        max_errors: 2,
        delay: Duration::from_secs(1),
    };
    let (result, polls) = run(task).await;
    let err = result.unwrap_err();
    assert!(matches!(err, CanoError::RetryExhausted(_)), "{err}");
    assert!(
        err.to_string().contains("budget of 2") && err.to_string().contains("503"),
        "{err}"
    );
    assert_eq!(polls, [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_retry_without_a_pause_is_refused_rather_than_spun() {
    let mut task = Scripted::new(vec![None, ready()]);
    task.policy = PollErrorPolicy::Retry {
        max_errors: 5,
        delay: Duration::ZERO,
    };
    let (result, polls) = run(task).await;
    let err = result.unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)), "{err}");
    assert!(err.to_string().contains("tight loop"), "{err}");
    assert_eq!(polls, [0]);
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_also_bounds_the_wait() {
    let mut task = Scripted::new(vec![]);
    task.config = TaskConfig::minimal().with_attempt_timeout(Duration::from_secs(35));
    let (result, polls) = run(task).await;
    assert!(matches!(result.unwrap_err(), CanoError::Timeout(_)));
    assert_eq!(polls, [0, 10, 20, 30]);
}

struct Panics;

#[async_trait::async_trait]
impl PollTask<S> for Panics {
    async fn poll(&self, _res: &Resources) -> Result<PollOutcome<S>, CanoError> {
        panic!("status parser hit an unexpected field")
    }
    fn on_error(&self) -> PollErrorPolicy {
        PollErrorPolicy::Retry {
            max_errors: 3,
            delay: Duration::from_secs(1),
        }
    }
}
as_task!(Panics, PollTask, run_poll, S);

#[tokio::test(start_paused = true)]
async fn a_panicking_poll_is_an_error_not_a_crash() {
    let workflow = Workflow::bare()
        .register(S::Wait, Panics)
        .add_exit_state(S::Done);
    let err = workflow.orchestrate(S::Wait).await.unwrap_err();
    assert!(err.to_string().contains("unexpected field"), "{err}");
}
