//! The engine under bad input and failure: each case ends in a specific error that
//! names the state and task, resources are torn down, nothing hangs.

use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cano_core::{
    CancellationToken, CanoError, Interest, MemoryStore, Node, Resource, Resources, RetryMode,
    RunContext, RunId, RunObserver, RunOptions, Task, TaskConfig, TaskResult, Workflow,
};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum S {
    A,
    B,
    C,
    Done,
}

/// Moves to a fixed next state.
struct Go(S);
#[async_trait]
impl Task<S> for Go {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        Ok(TaskResult::Single(self.0.clone()))
    }
}

/// Fails the first `failures` attempts, then moves to `Done`.
struct Flaky {
    failures: usize,
    calls: Arc<AtomicUsize>,
    config: TaskConfig,
}
#[async_trait]
impl Task<S> for Flaky {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.failures {
            Err(CanoError::task(std::io::Error::other(format!(
                "flake #{n}"
            ))))
        } else {
            Ok(TaskResult::Single(S::Done))
        }
    }
    fn config(&self) -> TaskConfig {
        self.config.clone()
    }
}

/// Records lifecycle calls of resources in a shared log.
struct Tracked {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    fail_setup: bool,
}
#[async_trait]
impl Resource for Tracked {
    async fn setup(&self) -> Result<(), CanoError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("setup {}", self.name));
        if self.fail_setup {
            Err(CanoError::resource("no connection"))
        } else {
            Ok(())
        }
    }
    async fn teardown(&self) -> Result<(), CanoError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("teardown {}", self.name));
        Ok(())
    }
}

fn tracked(log: &Arc<Mutex<Vec<String>>>, fail_second: bool) -> Resources {
    Resources::new()
        .insert(
            "first",
            Tracked {
                name: "first",
                log: log.clone(),
                fail_setup: false,
            },
        )
        .insert(
            "second",
            Tracked {
                name: "second",
                log: log.clone(),
                fail_setup: fail_second,
            },
        )
        .insert(
            "third",
            Tracked {
                name: "third",
                log: log.clone(),
                fail_setup: false,
            },
        )
}

#[tokio::test]
async fn reaching_an_unregistered_state_names_it_and_where_it_came_from() {
    let wf = Workflow::bare()
        .register(S::A, Go(S::B))
        .add_exit_state(S::Done);
    let err = wf.orchestrate(S::A).await.unwrap_err();
    assert!(matches!(err, CanoError::Workflow(_)), "{err:?}");
    assert_eq!(err.state(), Some("B"));
    assert!(err.to_string().contains("reached from task `Go`"), "{err}");
}

#[tokio::test]
async fn an_initial_state_without_handler_fails_before_any_task() {
    let wf = Workflow::bare()
        .register(S::A, Go(S::Done))
        .add_exit_state(S::Done);
    let err = wf.orchestrate(S::C).await.unwrap_err();
    assert!(matches!(err, CanoError::Workflow(_)));
    assert!(err.to_string().contains("initial state"), "{err}");
}

#[tokio::test]
async fn a_workflow_without_exit_state_refuses_to_run() {
    let wf = Workflow::bare().register(S::A, Go(S::A));
    let err = wf.orchestrate(S::A).await.unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)));
    assert!(err.to_string().contains("no exit state"), "{err}");
}

#[tokio::test]
async fn registering_a_state_twice_is_reported() {
    let wf = Workflow::bare()
        .register(S::A, Go(S::Done))
        .register(S::A, Go(S::B))
        .add_exit_state(S::Done);
    let err = wf.orchestrate(S::A).await.unwrap_err();
    assert!(err.to_string().contains("registered twice"), "{err}");
    assert!(wf.validate().is_err());
}

#[tokio::test]
async fn an_exit_state_with_a_handler_is_reported_by_validate() {
    let wf = Workflow::bare()
        .register(S::A, Go(S::Done))
        .register(S::Done, Go(S::A))
        .add_exit_state(S::Done);
    let err = wf.validate().unwrap_err();
    assert!(
        err.to_string().contains("exit state and has a handler"),
        "{err}"
    );
}

struct SplitOut;
#[async_trait]
impl Task<S> for SplitOut {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        Ok(TaskResult::Split(vec![S::B, S::C]))
    }
}

#[tokio::test]
async fn a_single_task_returning_split_is_a_workflow_error() {
    let wf = Workflow::bare()
        .register(S::A, SplitOut)
        .add_exit_state(S::Done);
    let err = wf.orchestrate(S::A).await.unwrap_err();
    assert!(matches!(err, CanoError::Workflow(_)));
    assert_eq!(err.task_name(), Some("SplitOut"));
    assert!(err.to_string().contains("register_split"), "{err}");
}

struct Panics(Arc<AtomicUsize>);
#[async_trait]
impl Task<S> for Panics {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("ledger out of balance");
    }
}

#[tokio::test]
async fn a_panicking_task_fails_the_run_once_without_retry_and_tears_down() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let wf = Workflow::new(tracked(&log, false))
        .register(S::A, Panics(calls.clone()))
        .add_exit_state(S::Done);
    let err = wf.orchestrate(S::A).await.unwrap_err();
    assert!(matches!(err, CanoError::TaskExecution(_)));
    assert!(
        err.message().starts_with("panic: ledger out of balance"),
        "{err}"
    );
    assert_eq!(err.state(), Some("A"));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "panics are not retried");
    assert_eq!(log.lock().unwrap().last().unwrap(), "teardown first");
}

#[tokio::test]
async fn a_panic_in_a_spawned_run_under_a_timeout_is_the_run_error_naming_the_task() {
    // A spawned run has a token and this one a timeout: the loop is raced against both,
    // and the panic is still caught there, not left to unwind into tokio.
    let calls = Arc::new(AtomicUsize::new(0));
    let wf = Workflow::bare()
        .register(S::A, Panics(calls.clone()))
        .add_exit_state(S::Done)
        .with_timeout(Duration::from_secs(3600));
    let err = wf.spawn(S::A).await.unwrap_err();
    assert!(matches!(err, CanoError::TaskExecution(_)), "{err:?}");
    assert!(
        err.message().starts_with("panic: ledger out of balance"),
        "{err}"
    );
    assert_eq!(err.state(), Some("A"));
    assert_eq!(err.task_name(), Some("Panics"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

struct Sleeper(Duration, TaskConfig);
#[async_trait]
impl Task<S> for Sleeper {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        tokio::time::sleep(self.0).await;
        Ok(TaskResult::Single(S::Done))
    }
    fn config(&self) -> TaskConfig {
        self.1.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_hanging_past_its_attempt_timeout_is_a_timeout_error() {
    let config = TaskConfig::minimal().with_attempt_timeout(Duration::from_millis(50));
    let wf = Workflow::bare()
        .register(S::A, Sleeper(Duration::from_secs(3600), config))
        .add_exit_state(S::Done);
    let err = wf.orchestrate(S::A).await.unwrap_err();
    assert!(matches!(err, CanoError::Timeout(_)), "{err:?}");
    assert_eq!(err.task_name(), Some("Sleeper"));
    assert!(err.to_string().contains("50ms"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn timeouts_on_every_attempt_exhaust_the_retries() {
    let config = TaskConfig::minimal()
        .with_fixed_retry(2, Duration::from_millis(1))
        .with_attempt_timeout(Duration::from_millis(10));
    let wf = Workflow::bare()
        .register(S::A, Sleeper(Duration::from_secs(1), config))
        .add_exit_state(S::Done);
    let err = wf.orchestrate(S::A).await.unwrap_err();
    assert!(matches!(err, CanoError::RetryExhausted(_)), "{err:?}");
    assert!(err.to_string().contains("all 3 attempts failed"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_workflow_timeout_names_the_state_it_stopped_in() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let wf = Workflow::new(tracked(&log, false))
        .register(S::A, Go(S::B))
        .register(
            S::B,
            Sleeper(Duration::from_secs(60), TaskConfig::minimal()),
        )
        .add_exit_state(S::Done)
        .with_timeout(Duration::from_secs(1));
    let err = wf.orchestrate(S::A).await.unwrap_err();
    assert!(matches!(err, CanoError::Workflow(_)), "{err:?}");
    assert_eq!(err.state(), Some("B"));
    assert_eq!(err.task_name(), Some("Sleeper"));
    assert!(err.to_string().contains("timed out after 1s"), "{err}");
    assert_eq!(log.lock().unwrap().last().unwrap(), "teardown first");
}

#[tokio::test]
async fn retries_recover_from_transient_failures() {
    let calls = Arc::new(AtomicUsize::new(0));
    let task = Flaky {
        failures: 2,
        calls: calls.clone(),
        config: TaskConfig::minimal().with_fixed_retry(3, Duration::from_micros(10)),
    };
    let wf = Workflow::bare()
        .register(S::A, task)
        .add_exit_state(S::Done);
    assert_eq!(wf.orchestrate(S::A).await.unwrap(), S::Done);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn exhausted_retries_keep_the_users_error_reachable() {
    let calls = Arc::new(AtomicUsize::new(0));
    let task = Flaky {
        failures: 10,
        calls: calls.clone(),
        config: TaskConfig::minimal().with_fixed_retry(2, Duration::ZERO),
    };
    let wf = Workflow::bare()
        .register(S::A, task)
        .add_exit_state(S::Done);
    let err = wf.orchestrate(S::A).await.unwrap_err();
    assert!(matches!(err, CanoError::RetryExhausted(_)));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let io = err
        .downcast_ref::<std::io::Error>()
        .expect("the task's own error survives");
    assert_eq!(io.to_string(), "flake #2");
}

#[tokio::test]
async fn without_retries_the_users_error_is_returned_as_is() {
    let calls = Arc::new(AtomicUsize::new(0));
    let task = Flaky {
        failures: 1,
        calls,
        config: TaskConfig::minimal(),
    };
    let wf = Workflow::bare()
        .register(S::A, task)
        .add_exit_state(S::Done);
    let err = wf.orchestrate(S::A).await.unwrap_err();
    assert!(matches!(err, CanoError::TaskExecution(_)));
    assert_eq!(
        err.to_string(),
        "Task execution error: task `Flaky` in state A: flake #0"
    );
}

struct Invalid(Arc<AtomicUsize>);
#[async_trait]
impl Task<S> for Invalid {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(CanoError::task_execution("order has no lines").permanent())
    }
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal().with_fixed_retry(5, Duration::ZERO)
    }
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let wf = Workflow::bare()
        .register(S::A, Invalid(calls.clone()))
        .add_exit_state(S::Done);
    let err = wf.orchestrate(S::A).await.unwrap_err();
    assert!(matches!(err, CanoError::TaskExecution(_)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn resources_set_up_in_order_and_tear_down_in_reverse() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let wf = Workflow::new(tracked(&log, false))
        .register(S::A, Go(S::Done))
        .add_exit_state(S::Done);
    wf.orchestrate(S::A).await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [
            "setup first",
            "setup second",
            "setup third",
            "teardown third",
            "teardown second",
            "teardown first"
        ]
    );
}

#[tokio::test]
async fn a_failed_setup_tears_down_what_was_set_up_and_names_the_key() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let wf = Workflow::new(tracked(&log, true))
        .register(S::A, Go(S::Done))
        .add_exit_state(S::Done);
    let err = wf.orchestrate(S::A).await.unwrap_err();
    assert!(matches!(err, CanoError::Resource(_)));
    assert!(err.to_string().contains("\"second\""), "{err}");
    assert_eq!(
        *log.lock().unwrap(),
        ["setup first", "setup second", "teardown first"]
    );
}

/// Waits, through its run context, until the run is cancelled.
struct Cooperative;
#[async_trait]
impl Task<S> for Cooperative {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        let run = RunContext::current().expect("tasks run inside a run");
        run.cancelled().await;
        Ok(TaskResult::Single(S::Done))
    }
}

#[tokio::test]
async fn cancelling_a_spawned_run_mid_task_returns_cancelled_and_tears_down() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    struct Signal(Mutex<Option<tokio::sync::oneshot::Sender<()>>>);
    #[async_trait]
    impl Task<S> for Signal {
        async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
            if let Some(tx) = self.0.lock().unwrap().take() {
                let _ = tx.send(());
            }
            Ok(TaskResult::Single(S::B))
        }
    }
    let wf = Workflow::new(tracked(&log, false))
        .register(S::A, Signal(Mutex::new(Some(tx))))
        .register(S::B, Cooperative)
        .add_exit_state(S::Done);
    let handle = wf.spawn(S::A);
    rx.await.unwrap();
    handle.cancel();
    let err = handle.await.unwrap_err();
    assert!(matches!(err, CanoError::Cancelled(_)), "{err:?}");
    assert_eq!(log.lock().unwrap().last().unwrap(), "teardown first");
}

#[tokio::test]
async fn a_cyclic_workflow_of_instant_tasks_can_still_be_cancelled() {
    let wf = Workflow::bare()
        .register(S::A, Go(S::B))
        .register(S::B, Go(S::A))
        .add_exit_state(S::Done);
    let token = CancellationToken::new();
    let run = tokio::spawn({
        let wf = wf.clone();
        let token = token.clone();
        async move {
            wf.orchestrate_with(S::A, RunOptions::new().with_cancellation(token))
                .await
        }
    });
    tokio::task::yield_now().await;
    token.cancel();
    let err = run.await.unwrap().unwrap_err();
    assert!(matches!(err, CanoError::Cancelled(_)), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn a_cyclic_workflow_stops_at_the_workflow_timeout() {
    // A -> B -> Done -> A -> ... never reaches the exit state C.
    let wf = Workflow::bare()
        .register(S::A, Go(S::B))
        .register(
            S::B,
            Sleeper(Duration::from_millis(1), TaskConfig::minimal()),
        )
        .register(S::Done, Go(S::A))
        .add_exit_state(S::C)
        .with_timeout(Duration::from_millis(100));
    let err = wf.orchestrate(S::A).await.unwrap_err();
    assert!(matches!(err, CanoError::Workflow(_)), "{err:?}");
    assert!(err.to_string().contains("timed out after 100ms"), "{err}");
}

/// A node whose `post` fails once: the whole node runs again.
struct Tally {
    preps: Arc<AtomicUsize>,
    posts: Arc<AtomicUsize>,
}
#[async_trait]
impl Node<S> for Tally {
    type PrepResult = u32;
    type ExecResult = u32;
    async fn prep(&self, _res: &Resources) -> Result<u32, CanoError> {
        Ok(self.preps.fetch_add(1, Ordering::SeqCst) as u32)
    }
    async fn exec(&self, n: u32) -> u32 {
        n * 10
    }
    async fn post(&self, res: &Resources, value: u32) -> Result<S, CanoError> {
        if self.posts.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(CanoError::store("write conflict"));
        }
        res.get::<MemoryStore, _>("store")?.put("value", value)?;
        Ok(S::Done)
    }
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal().with_fixed_retry(1, Duration::ZERO)
    }
}

#[tokio::test]
async fn a_node_is_retried_as_a_unit() {
    let store = MemoryStore::new();
    let preps = Arc::new(AtomicUsize::new(0));
    let node = Tally {
        preps: preps.clone(),
        posts: Arc::new(AtomicUsize::new(0)),
    };
    let wf = Workflow::new(Resources::new().insert("store", store.clone()))
        .register(S::A, node)
        .add_exit_state(S::Done);
    assert_eq!(wf.orchestrate(S::A).await.unwrap(), S::Done);
    assert_eq!(
        preps.load(Ordering::SeqCst),
        2,
        "prep ran again with the retry"
    );
    assert_eq!(store.get::<u32>("value").unwrap(), 10);
}

/// Records every event it hears; wants everything unless given an interest.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>, Option<Interest>);
impl RunObserver for Recorder {
    fn interest(&self) -> Interest {
        self.1.unwrap_or(Interest::ALL)
    }
    fn run_started(&self, run: RunId, initial: &dyn Debug) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{run} start {initial:?}"));
    }
    fn state_entered(&self, run: RunId, state: &dyn Debug) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{run} enter {state:?}"));
    }
    fn task_started(&self, run: RunId, _: &dyn Debug, task: &str, attempt: usize) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{run} attempt {task} #{attempt}"));
    }
    fn task_retrying(
        &self,
        run: RunId,
        _: &dyn Debug,
        task: &str,
        attempt: usize,
        _: &CanoError,
        _: Duration,
    ) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{run} retry {task} after #{attempt}"));
    }
    fn task_succeeded(&self, run: RunId, _: &dyn Debug, task: &str) {
        self.0.lock().unwrap().push(format!("{run} ok {task}"));
    }
    fn task_failed(&self, run: RunId, _: &dyn Debug, task: &str, error: &CanoError) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{run} failed {task}: {}", error.message()));
    }
    fn run_ended(&self, run: RunId, outcome: Result<&dyn Debug, &CanoError>) {
        self.0.lock().unwrap().push(format!(
            "{run} end {:?}",
            outcome.map_err(|e| e.to_string())
        ));
    }
}

#[tokio::test]
async fn observers_see_every_event_tagged_with_the_run_id() {
    let recorder = Arc::new(Recorder::default());
    let task = Flaky {
        failures: 1,
        calls: Arc::new(AtomicUsize::new(0)),
        config: TaskConfig::minimal().with_retry(RetryMode::fixed(1, Duration::ZERO)),
    };
    let wf = Workflow::bare()
        .register(S::A, Go(S::B))
        .register(S::B, task)
        .add_exit_state(S::Done)
        .with_observer(recorder.clone());
    let id = RunId::from(42);
    wf.orchestrate_with(S::A, RunOptions::new().with_run_id(id))
        .await
        .unwrap();
    let events = recorder.0.lock().unwrap().clone();
    let p = id.to_string();
    let expected: Vec<String> = [
        "start A",
        "enter A",
        "attempt Go #1",
        "ok Go",
        "enter B",
        "attempt Flaky #1",
        "retry Flaky after #1",
        "attempt Flaky #2",
        "ok Flaky",
        "end Ok(Done)",
    ]
    .iter()
    .map(|e| format!("{p} {e}"))
    .collect();
    assert_eq!(events, expected);
}

#[tokio::test]
async fn a_spawned_run_tells_its_observers_what_an_awaited_run_does() {
    // A spawned run has a token, so it checks for cancellation between states and
    // does not take the lean path; its observers must hear the same events.
    let two_states = Workflow::bare()
        .register(S::A, Go(S::B))
        .register(S::B, Go(S::Done))
        .add_exit_state(S::Done);
    let awaited = Arc::new(Recorder::default());
    let wf = two_states.clone().with_observer(awaited.clone());
    wf.orchestrate(S::A).await.unwrap();
    let (first, second) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let wf = two_states
        .with_observer(first.clone())
        .with_observer(second.clone());
    assert_eq!(wf.spawn(S::A).await.unwrap(), S::Done);
    assert_eq!(heard(&first), heard(&awaited));
    assert_eq!(heard(&second), heard(&awaited));
    assert_eq!(heard(&awaited).len(), 8, "{:?}", heard(&awaited));
}

/// The events of `recorder`, without the run id in front.
fn heard(recorder: &Recorder) -> Vec<String> {
    let events = recorder.0.lock().unwrap();
    let strip = |e: &String| e.split_once(' ').map(|(_, rest)| rest.to_owned());
    events.iter().filter_map(strip).collect()
}

#[tokio::test]
async fn a_run_leaves_out_the_frequent_events_no_observer_wants() {
    let two_states = || {
        Workflow::bare()
            .register(S::A, Go(S::B))
            .register(S::B, Go(S::Done))
            .add_exit_state(S::Done)
    };
    let nothing = Arc::new(Recorder(Mutex::default(), Some(Interest::NONE)));
    let wf = two_states().with_observer(nothing.clone());
    assert_eq!(wf.orchestrate(S::A).await.unwrap(), S::Done);
    assert_eq!(heard(&nothing), Vec::<String>::new());

    let runs_only = Arc::new(Recorder(Mutex::default(), Some(Interest::RUNS)));
    let wf = two_states().with_observer(runs_only.clone());
    wf.orchestrate(S::A).await.unwrap();
    assert_eq!(heard(&runs_only), ["start A", "end Ok(Done)"]);

    // What one observer wants, every observer of the run may hear: a hint, not a filter.
    let everything = Arc::new(Recorder::default());
    let wf = wf.with_observer(everything.clone());
    wf.orchestrate(S::A).await.unwrap();
    let all = [
        "start A",
        "enter A",
        "attempt Go #1",
        "ok Go",
        "enter B",
        "attempt Go #1",
        "ok Go",
        "end Ok(Done)",
    ];
    assert_eq!(heard(&everything), all);
}

#[tokio::test]
async fn failures_and_retries_reach_observers_whatever_their_interest() {
    let runs_only = Arc::new(Recorder(Mutex::default(), Some(Interest::RUNS)));
    let flaky = Flaky {
        failures: 1,
        calls: Arc::new(AtomicUsize::new(0)),
        config: TaskConfig::minimal().with_retry(RetryMode::fixed(1, Duration::ZERO)),
    };
    let wf = Workflow::bare()
        .register(S::A, flaky)
        .add_exit_state(S::Done)
        .with_observer(runs_only.clone());
    wf.orchestrate(S::A).await.unwrap();
    let events = heard(&runs_only);
    assert!(
        events.contains(&"retry Flaky after #1".to_owned()),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e.starts_with("enter")), "{events:?}");

    let runs_only = Arc::new(Recorder(Mutex::default(), Some(Interest::RUNS)));
    let wf = Workflow::bare()
        .register(S::A, Panics(Arc::new(AtomicUsize::new(0))))
        .add_exit_state(S::Done)
        .with_observer(runs_only.clone());
    wf.orchestrate(S::A).await.unwrap_err();
    let events = heard(&runs_only);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0], "start A");
    assert!(events[1].starts_with("failed Panics: panic:"), "{events:?}");
    assert!(events[2].starts_with("end Err("), "{events:?}");
}

#[tokio::test]
async fn observers_hear_of_a_panicking_task_as_a_failed_task() {
    let recorder = Arc::new(Recorder::default());
    let wf = Workflow::bare()
        .register(S::A, Panics(Arc::new(AtomicUsize::new(0))))
        .add_exit_state(S::Done)
        .with_observer(recorder.clone());
    let id = RunId::from(7);
    let err = wf
        .orchestrate_with(S::A, RunOptions::new().with_run_id(id))
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("panic: ledger out of balance"),
        "{err}"
    );
    let events = recorder.0.lock().unwrap().clone();
    let p = id.to_string();
    assert_eq!(
        events[..3],
        [
            format!("{p} start A"),
            format!("{p} enter A"),
            format!("{p} attempt Panics #1"),
        ]
    );
    assert!(
        events[3].starts_with(&format!("{p} failed Panics: panic: ledger out of balance")),
        "{events:?}"
    );
    assert!(
        events[4].starts_with(&format!("{p} end Err(")),
        "{events:?}"
    );
    assert_eq!(events.len(), 5, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_workflow_serves_many_concurrent_runs_with_distinct_ids() {
    struct Id;
    #[async_trait]
    impl Task<S> for Id {
        async fn run(&self, res: &Resources) -> Result<TaskResult<S>, CanoError> {
            let run = RunContext::current().unwrap();
            res.get::<MemoryStore, _>("ids")?
                .append("ids", run.run_id())?;
            tokio::task::yield_now().await;
            Ok(TaskResult::Single(S::Done))
        }
    }
    let ids = MemoryStore::new();
    let wf = Workflow::new(Resources::new().insert("ids", ids.clone()))
        .register(S::A, Id)
        .add_exit_state(S::Done);
    let runs: Vec<_> = (0..200).map(|_| wf.spawn(S::A)).collect();
    let mut expected: Vec<RunId> = runs.iter().map(|r| r.run_id()).collect();
    for run in runs {
        assert_eq!(run.await.unwrap(), S::Done);
    }
    let mut seen: Vec<RunId> = ids.get("ids").unwrap();
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected);
}

/// A custom kind of state: runs its tasks one after another and moves on with the last
/// task's choice, the way split/saga/stepped handlers plug in from their crates.
struct Sequence(Vec<Arc<dyn Task<S>>>);

impl cano_core::StateHandler<S> for Sequence {
    fn handle<'a>(&'a self, cx: cano_core::StateContext<'a, S>) -> cano_core::HandlerFuture<'a, S> {
        Box::pin(async move {
            let mut next = None;
            for task in &self.0 {
                match cx.run_task(task.as_ref(), &TaskConfig::minimal()).await? {
                    TaskResult::Single(s) => next = Some(s),
                    TaskResult::Split(_) => {
                        return Err(CanoError::workflow("no splits in a sequence"));
                    }
                }
            }
            next.ok_or_else(|| CanoError::configuration("an empty sequence has no next state"))
        })
    }

    fn info(&self) -> cano_core::HandlerInfo {
        cano_core::HandlerInfo {
            kind: "sequence",
            tasks: self.0.iter().map(|t| t.name()).collect(),
        }
    }
}

#[tokio::test]
async fn custom_state_handlers_plug_in_and_their_errors_name_the_state() {
    let recorder = Arc::new(Recorder::default());
    let ok = Workflow::bare()
        .register_handler(
            S::A,
            Sequence(vec![Arc::new(Go(S::C)), Arc::new(Go(S::Done))]),
        )
        .add_exit_state(S::Done)
        .with_observer(recorder.clone());
    assert_eq!(
        ok.orchestrate_with(S::A, RunOptions::new().with_run_id(RunId::from(1)))
            .await
            .unwrap(),
        S::Done
    );
    let events = recorder.0.lock().unwrap().clone();
    assert!(
        events.contains(&"0000000000000001 ok Go".to_string()),
        "{events:?}"
    );
    assert_eq!(ok.states()[0].1.kind, "sequence");

    let empty = Workflow::bare()
        .register_handler(S::B, Sequence(vec![]))
        .add_exit_state(S::Done);
    let err = empty.orchestrate(S::B).await.unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)));
    assert_eq!(err.state(), Some("B"));
    assert_eq!(err.task_name(), Some("sequence []"));
}

/// Reports what its run shares: whether the workflow's resources hold `"store"`.
struct Peek(Arc<Mutex<Option<bool>>>);
#[async_trait]
impl Task<S> for Peek {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        let run = RunContext::current().expect("inside a run");
        let shared = run.resources::<cano_core::DefaultKey>();
        *self.0.lock().unwrap() =
            Some(shared.is_some_and(|r| r.get::<MemoryStore, _>("store").is_ok()));
        Ok(TaskResult::Single(S::Done))
    }
}

#[tokio::test]
async fn a_run_shares_its_workflows_resources_when_there_are_any() {
    let seen = Arc::new(Mutex::new(None));
    let wf = Workflow::new(Resources::new().insert("store", MemoryStore::new()))
        .register(S::A, Peek(seen.clone()))
        .add_exit_state(S::Done);
    wf.orchestrate(S::A).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(true));

    let wf = Workflow::bare()
        .register(S::A, Peek(seen.clone()))
        .add_exit_state(S::Done);
    wf.orchestrate(S::A).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        Some(false),
        "a bare workflow shares none"
    );
}
