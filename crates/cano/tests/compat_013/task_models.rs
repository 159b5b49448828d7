//! The task models in 0.13's spelling: `PollOutcome::Pending { delay_ms }` and
//! `PollErrorPolicy::RetryOnError`, a router returning a `TaskResult`, a batch with
//! `process_item(&self, item)`, `concurrency()` and inferred item types, and a stepped
//! task.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Route,
    Wait,
    Batch,
    Scan,
    Done,
}

struct Router;

#[task::router(state = Step)]
impl Router {
    async fn route(&self, res: &Resources) -> Result<TaskResult<Step>, CanoError> {
        let store = res.get::<MemoryStore, _>("store")?;
        let big: bool = store.get("big")?;
        Ok(TaskResult::Single(if big {
            Step::Wait
        } else {
            Step::Done
        }))
    }
}

/// Answers: error, error, pending, error, error, ready. With `max_errors: 2` the run
/// of two errors in a row is survived twice (the pending answer resets it).
struct Waiter {
    answers: Mutex<Vec<Result<bool, CanoError>>>,
    polls: AtomicU32,
}

#[task::poll(state = Step)]
impl Waiter {
    fn on_poll_error(&self) -> PollErrorPolicy {
        PollErrorPolicy::RetryOnError { max_errors: 2 }
    }

    async fn poll(&self, _res: &Resources) -> Result<PollOutcome<Step>, CanoError> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        match self.answers.lock().unwrap().remove(0)? {
            true => Ok(PollOutcome::Ready(TaskResult::Single(Step::Batch))),
            false => Ok(PollOutcome::Pending { delay_ms: 1 }),
        }
    }
}

/// Not serde, not Clone: 0.13 needed neither.
#[derive(Debug, PartialEq)]
struct Doubled(u32);

struct Doubler {
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

#[task::batch(state = Step)]
impl Doubler {
    async fn load(&self, _res: &Resources) -> Result<Vec<u32>, CanoError> {
        Ok(vec![1, 2, 3, 4])
    }

    async fn process_item(&self, item: &u32) -> Result<Doubled, CanoError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::task::yield_now().await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if *item == 3 {
            return Err(CanoError::task_execution("three is unlucky"));
        }
        Ok(Doubled(item * 2))
    }

    async fn finish(
        &self,
        res: &Resources,
        outputs: Vec<Result<Doubled, CanoError>>,
    ) -> Result<TaskResult<Step>, CanoError> {
        let good: Vec<u32> = outputs
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .map(|d| d.0)
            .collect();
        res.get::<MemoryStore, _>("store")?.put("doubled", good)?;
        Ok(TaskResult::Single(Step::Scan))
    }
}

struct Scanner;

#[task::stepped(state = Step)]
impl Scanner {
    async fn step(
        &self,
        res: &Resources,
        cursor: Option<u32>,
    ) -> Result<StepOutcome<u32, Step>, CanoError> {
        let page = cursor.unwrap_or(0);
        res.get::<MemoryStore, _>("store")?.append("pages", page)?;
        if page == 2 {
            Ok(StepOutcome::Done(TaskResult::Single(Step::Done)))
        } else {
            Ok(StepOutcome::More(page + 1))
        }
    }
}

fn answers() -> Vec<Result<bool, CanoError>> {
    let boom = || Err(CanoError::task_execution("busy"));
    vec![boom(), boom(), Ok(false), boom(), boom(), Ok(true)]
}

#[tokio::test]
async fn router_poll_batch_and_stepped_run_as_0_13_did() {
    let store = MemoryStore::new();
    store.put("big", true).unwrap();
    let doubler = Doubler {
        in_flight: AtomicUsize::new(0),
        most_in_flight: AtomicUsize::new(0),
    };
    let workflow = Workflow::new(Resources::new().insert("store", store.clone()))
        .register_router(Step::Route, Router)
        .register(
            Step::Wait,
            Waiter {
                answers: Mutex::new(answers()),
                polls: AtomicU32::new(0),
            },
        )
        .register(Step::Batch, doubler)
        .register(Step::Scan, Scanner)
        .add_exit_state(Step::Done);
    assert_eq!(workflow.orchestrate(Step::Route).await.unwrap(), Step::Done);
    assert_eq!(store.get::<Vec<u32>>("doubled").unwrap(), [2, 4, 8]);
    assert_eq!(store.get::<Vec<u32>>("pages").unwrap(), [0, 1, 2]);
}

#[tokio::test]
async fn a_0_13_batch_runs_one_item_at_a_time_by_default() {
    let doubler = Doubler {
        in_flight: AtomicUsize::new(0),
        most_in_flight: AtomicUsize::new(0),
    };
    assert_eq!(BatchTask::<Step>::concurrency(&doubler), 1);
    let res: Resources = Resources::new().insert("store", MemoryStore::new());
    assert_eq!(
        Task::run(&doubler, &res).await.unwrap(),
        TaskResult::Single(Step::Scan)
    );
    assert_eq!(doubler.most_in_flight.load(Ordering::SeqCst), 1);
    // And the whole batch is retried as TaskConfig::default() says.
    assert_eq!(Task::<Step>::config(&doubler).retry_mode.max_attempts(), 4);
}

#[tokio::test]
async fn a_third_error_in_a_row_fails_the_poll_with_that_error() {
    let boom = || Err(CanoError::task_execution("busy"));
    let waiter = Waiter {
        answers: Mutex::new(vec![boom(), boom(), boom(), Ok(true)]),
        polls: AtomicU32::new(0),
    };
    let res: Resources = Resources::new();
    let err = Task::<Step>::run(&waiter, &res).await.unwrap_err();
    assert!(
        matches!(&err, CanoError::TaskExecution(m) if m == "busy"),
        "{err}"
    );
    assert_eq!(waiter.polls.load(Ordering::SeqCst), 3);
}

/// The trait-impl form, with concurrency, per-item retries and a per-item output.
struct Flaky {
    tries: Arc<AtomicU32>,
}

#[task::batch]
impl BatchTask<Step> for Flaky {
    type Item = u32;
    type ItemOutput = u32;

    fn concurrency(&self) -> usize {
        0 // 0.13 took this as 1
    }

    fn item_retry(&self) -> RetryMode {
        RetryMode::fixed(2, Duration::from_millis(1))
    }

    async fn load(&self, _res: &Resources) -> Result<Vec<u32>, CanoError> {
        Ok(vec![7])
    }

    async fn process_item(&self, item: &u32) -> Result<u32, CanoError> {
        if self.tries.fetch_add(1, Ordering::SeqCst) < 2 {
            return Err(CanoError::task_execution("not yet"));
        }
        Ok(*item)
    }

    async fn finish(
        &self,
        _res: &Resources,
        outputs: Vec<Result<u32, CanoError>>,
    ) -> Result<TaskResult<Step>, CanoError> {
        assert_eq!(outputs.len(), 1);
        assert_eq!(*outputs[0].as_ref().unwrap(), 7);
        Ok(TaskResult::Single(Step::Done))
    }
}

#[tokio::test]
async fn per_item_retries_and_a_zero_concurrency_work_as_in_0_13() {
    let tries = Arc::new(AtomicU32::new(0));
    let workflow = Workflow::bare()
        .register(
            Step::Batch,
            Flaky {
                tries: tries.clone(),
            },
        )
        .add_exit_state(Step::Done);
    assert_eq!(workflow.orchestrate(Step::Batch).await.unwrap(), Step::Done);
    assert_eq!(tries.load(Ordering::SeqCst), 3);
}
