//! The rest of 0.13's root and prelude names: task objects, state entry kinds, split
//! results, join settings as public fields, erased compensatable tasks, and the
//! object aliases of the task models.

use std::sync::Arc;
use std::time::Duration;

use cano::prelude::*;
use cano::{DefaultKey, ErasedCompensatable, PollTaskObject, RouterTaskObject};

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Step {
    Start,
    Fan,
    Route,
    Pay,
    Done,
}

#[derive(Clone)]
struct Hop(Step);

#[task(state = Step)]
impl Hop {
    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        Ok(TaskResult::Single(self.0.clone()))
    }
}

struct Pick;

#[task::router(state = Step)]
impl Pick {
    async fn route(&self, _res: &Resources) -> Result<TaskResult<Step>, CanoError> {
        Ok(TaskResult::Single(Step::Pay))
    }
}

/// Reads the split's branches in 0.13's shape, then routes on.
struct Check;

#[task::router(state = Step)]
impl Check {
    async fn route(&self, _res: &Resources) -> Result<TaskResult<Step>, CanoError> {
        let split = SplitResult::<Step>::of(&Step::Fan)?;
        let results: Vec<SplitTaskResult<Step>> = split.task_results();
        if split.completed_count() != 2 || split.total_count() != 3 || results.len() != 2 {
            return Err(CanoError::Workflow(
                format!("a quorum of 2 of 3 joins after two: {results:?}").into(),
            ));
        }
        for result in &results {
            if !matches!(result.result, Ok(TaskResult::Single(Step::Done))) || result.task_index > 2
            {
                return Err(CanoError::Workflow(format!("{result:?}").into()));
            }
        }
        Ok(TaskResult::Single(Step::Pay))
    }
}

struct Charge;

#[saga::task(state = Step)]
impl Charge {
    type Output = u64;
    async fn run(&self, _res: &Resources) -> Result<(TaskResult<Step>, u64), CanoError> {
        Ok((TaskResult::Single(Step::Done), 4_200))
    }
    async fn compensate(&self, _res: &Resources, cents: u64) -> Result<(), CanoError> {
        assert_eq!(cents, 4_200);
        Ok(())
    }
}

struct Ready;

#[task::poll(state = Step)]
impl Ready {
    async fn poll(&self, _res: &Resources) -> Result<PollOutcome<Step>, CanoError> {
        Ok(PollOutcome::Ready(TaskResult::Single(Step::Done)))
    }
}

#[tokio::test]
async fn task_objects_entries_and_split_results() -> CanoResult<()> {
    // Collections of tasks of different types.
    let tasks: Vec<TaskObject<Step>> = vec![Arc::new(Hop(Step::Fan)), Arc::new(Pick)];
    assert_eq!(tasks.len(), 2);
    assert!(matches!(
        tasks[0].run_bare().await?,
        TaskResult::Single(Step::Fan)
    ));
    let router: RouterTaskObject<Step> = Arc::new(Pick);
    assert!(matches!(
        router.route(&Resources::new()).await?,
        TaskResult::Single(Step::Pay)
    ));
    let poll: PollTaskObject<Step> = Arc::new(Ready);
    assert!(matches!(
        poll.poll(&Resources::new()).await?,
        PollOutcome::Ready(_)
    ));

    // Join settings as public fields.
    let mut join = JoinConfig::new(JoinStrategy::Quorum(2), Step::Done)
        .with_timeout(Duration::from_secs(5))
        .with_join_state(Step::Route);
    assert_eq!(join.strategy, JoinStrategy::Quorum(2));
    assert_eq!(join.join_state, Step::Route);
    assert_eq!(join.timeout, Some(Duration::from_secs(5)));
    join.bulkhead = Some(2);
    assert!(JoinStrategy::Percentage(0.5).is_satisfied(2, 3));
    assert!(!JoinStrategy::All.is_satisfied(2, 3));

    let workflow = Workflow::bare()
        .register(Step::Start, Hop(Step::Fan))
        .register_split(
            Step::Fan,
            vec![Hop(Step::Done), Hop(Step::Done), Hop(Step::Done)],
            join,
        )
        .register_router(Step::Route, Check)
        .register_with_compensation(Step::Pay, Charge)
        .add_exit_state(Step::Done);
    assert_eq!(workflow.state_entry(&Step::Start), Some(StateEntry::Single));
    assert_eq!(workflow.state_entry(&Step::Fan), Some(StateEntry::Split));
    assert_eq!(workflow.state_entry(&Step::Route), Some(StateEntry::Router));
    assert_eq!(
        workflow.state_entry(&Step::Pay),
        Some(StateEntry::CompensatableSingle)
    );
    assert_eq!(workflow.state_entry(&Step::Done), None);
    assert_eq!(workflow.orchestrate(Step::Start).await?, Step::Done);

    Ok(())
}

#[tokio::test]
async fn an_erased_compensatable_task_round_trips_its_output() -> CanoResult<()> {
    let tasks: Vec<Box<dyn ErasedCompensatable<Step, DefaultKey>>> = vec![Box::new(Charge)];
    let res = Resources::new();
    let (next, output) = tasks[0].run(&res).await?;
    assert!(matches!(next, TaskResult::Single(Step::Done)));
    tasks[0].compensate(&res, &output).await?;
    assert_eq!(tasks[0].name(), "Charge");
    Ok(())
}

#[tokio::test]
async fn the_standalone_retry_loop_and_retry_modes_read_as_in_0_13() -> CanoResult<()> {
    use cano::task::run_with_retries;
    use std::sync::atomic::{AtomicU32, Ordering};

    let mode = RetryMode::exponential_custom(
        4,
        Duration::from_millis(10),
        3.0,
        Duration::from_millis(50),
        0.0,
    );
    assert_eq!(mode.max_attempts(), 5);
    assert_eq!(mode.delay_for_attempt(0), Some(Duration::from_millis(10)));
    assert_eq!(mode.delay_for_attempt(1), Some(Duration::from_millis(30)));
    assert_eq!(mode.delay_for_attempt(2), Some(Duration::from_millis(50)));
    assert_eq!(mode.delay_for_attempt(4), None);
    let literal = RetryMode::ExponentialBackoff {
        max_retries: 2,
        base_delay: Duration::ZERO,
        multiplier: 2.0,
        max_delay: Duration::ZERO,
        jitter: 0.0,
    };
    let config = TaskConfig::new().with_retry(literal);
    assert_eq!(config.retry_mode.max_attempts(), 3);

    let calls = AtomicU32::new(0);
    let answer = run_with_retries(&config, || async {
        match calls.fetch_add(1, Ordering::SeqCst) {
            0 => Err(CanoError::TaskExecution("flaky".into())),
            _ => Ok("done"),
        }
    })
    .await?;
    assert_eq!((answer, calls.load(Ordering::SeqCst)), ("done", 2));
    let exhausted = run_with_retries(&config, || async {
        Err::<(), _>(CanoError::TaskExecution("down".into()))
    })
    .await;
    assert!(matches!(exhausted, Err(CanoError::RetryExhausted(_))));
    Ok(())
}

#[test]
fn names_resolve_at_0_13_module_paths() {
    use cano::store::error::StoreError;
    use cano::store::memory::MemoryStore as Store;
    use cano::workflow::{JoinConfig as Join, JoinStrategy as Strategy, StateEntry as Entry};

    let store = Store::new();
    assert!(matches!(
        store.get::<u32>("missing"),
        Err(StoreError::KeyNotFound(_))
    ));
    let join = Join::new(Strategy::Any, Step::Done);
    assert_eq!(join.strategy, Strategy::Any);
    assert_ne!(Entry::Single, Entry::Split);
    let mode: cano::task::RetryMode = cano::task::RetryMode::fixed(1, Duration::ZERO);
    assert_eq!(mode.max_attempts(), 2);
}

struct Branch {
    fail: bool,
    sleep: Duration,
}

#[task(state = Step)]
impl Branch {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        tokio::time::sleep(self.sleep).await;
        if self.fail {
            return Err(CanoError::TaskExecution("branch failed".into()));
        }
        Ok(TaskResult::Single(Step::Done))
    }
}

fn branches(fails: &[bool], sleep: Duration) -> Vec<Branch> {
    fails.iter().map(|&fail| Branch { fail, sleep }).collect()
}

#[tokio::test(start_paused = true)]
async fn a_split_that_cannot_join_fails_with_a_workflow_error_as_in_0_13() {
    let split = |fails: &[bool], join: JoinConfig<Step>, sleep: Duration| {
        Workflow::bare()
            .register_split(Step::Fan, branches(fails, sleep), join)
            .add_exit_state(Step::Done)
    };
    let workflow_error = |result: Result<Step, CanoError>| match result {
        Err(CanoError::Workflow(msg)) => msg.to_string(),
        other => panic!("a split that cannot join is a Workflow error: {other:?}"),
    };
    let all = split(
        &[false, true, false],
        JoinConfig::new(JoinStrategy::All, Step::Done),
        Duration::ZERO,
    );
    let msg = workflow_error(all.orchestrate(Step::Fan).await);
    assert!(msg.contains("branch failed"), "{msg}");
    let quorum = split(
        &[true, true, false],
        JoinConfig::new(JoinStrategy::Quorum(2), Step::Done),
        Duration::ZERO,
    );
    workflow_error(quorum.orchestrate(Step::Fan).await);
    // PartialResults counts successes: one success of three is not two.
    let partial = split(
        &[true, false, true],
        JoinConfig::new(JoinStrategy::PartialResults(2), Step::Done),
        Duration::ZERO,
    );
    workflow_error(partial.orchestrate(Step::Fan).await);
    let slow = split(
        &[false, false],
        JoinConfig::new(JoinStrategy::All, Step::Done).with_timeout(Duration::from_secs(1)),
        Duration::from_secs(5),
    );
    let msg = workflow_error(slow.orchestrate(Step::Fan).await);
    assert!(msg.contains("timeout"), "{msg}");
    // PartialTimeout needs one branch to have finished by the deadline.
    let nothing = split(
        &[false],
        JoinConfig::new(JoinStrategy::PartialTimeout, Step::Done)
            .with_timeout(Duration::from_secs(1)),
        Duration::from_secs(5),
    );
    workflow_error(nothing.orchestrate(Step::Fan).await);
    let something = split(
        &[true, false],
        JoinConfig::new(JoinStrategy::PartialTimeout, Step::Done)
            .with_timeout(Duration::from_secs(1)),
        Duration::ZERO,
    );
    assert_eq!(something.orchestrate(Step::Fan).await.unwrap(), Step::Done);
}
